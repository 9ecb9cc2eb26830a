//! shoal's Kubernetes operator: the `BatchJob` resource, the objects it
//! owns, and how many workers it runs.
//!
//! Layout (the reconciler's core has no API calls, so it is tested without
//! an API server):
//! - [`crd`]: the resource types, the single source of the CRD schema.
//! - [`workload`]: the worker Deployment built from a BatchJob.
//! - [`scaling`]: replicas from the queue backlog.

pub mod crd;
pub mod scaling;
pub mod workload;
