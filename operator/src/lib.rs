//! shoal's Kubernetes operator: the `BatchJob` resource, the objects it
//! owns, and how many workers it runs.
//!
//! Layout (the reconciler's core has no API calls, so it is tested without
//! an API server):
//! - [`crd`]: the resource types, the single source of the CRD schema.
//! - [`workload`]: the worker Deployment built from a BatchJob.
//! - [`scaling`]: replicas from the queue backlog.
//! - [`scale_in`]: which workers go first when there are fewer.
//! - [`plan`]: defaults, queue names, progress, phase and conditions.
//! - [`split`]: cutting a listing into chunks.
//! - [`pipeline`]: when a `batchJob` source may start and what it reads.
//! - [`manifest`]: the results manifest written when a job finishes.
//! - [`report`]: the failure report (sharded item results) it points at.
//! - [`health`]: why worker pods cannot run, from their status.
//! - [`controller`]: the reconciler (the only part that calls the API
//!   server, with [`sqs`] and [`amqp`] for the queues), through the
//!   client of [`api_client`].

pub mod amqp;
pub mod api_client;
pub mod aws;
pub mod backend;
pub mod cadence;
pub mod cli;
pub mod conditions;
pub mod controller;
pub mod crd;
pub mod decide;
pub mod drift;
pub mod error;
pub mod events;
pub mod fanout;
pub mod health;
pub mod http;
pub mod inventory;
pub mod item_list;
pub mod leader;
pub mod manifest;
pub mod metrics;
pub mod ownership;
pub mod pipeline;
pub mod plan;
pub mod redrive;
pub mod report;
pub mod s3;
pub mod scale_in;
pub mod scaling;
pub mod split;
pub mod sqs;
pub mod usage;
pub mod workload;
