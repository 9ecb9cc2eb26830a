//! # shoal-clients
//!
//! The calls to a broker or a store that more than one of shoal's parts
//! makes, written once: the worker, the operator, the kubectl plugin and
//! the test harness declare a RabbitMQ queue's topology and publish with
//! confirms the same way ([`amqp`], feature `amqp`), and build their S3
//! client the same way ([`s3`], feature `s3`) from the same AWS
//! configuration ([`aws`], feature `aws`). Names and formats are in
//! `shoal-protocol`; this crate only talks.

#[cfg(feature = "amqp")]
pub mod amqp;
#[cfg(feature = "aws")]
pub mod aws;
#[cfg(feature = "s3")]
pub mod s3;
