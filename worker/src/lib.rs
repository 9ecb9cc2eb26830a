//! # shoal-worker
//!
//! Write one batch handler; run it over a local folder (`run`), as a queue
//! worker in Kubernetes (`worker`), or as an AWS Lambda function, unchanged.
//!
//! The handler contract is in [`handler`]; what it receives and returns in
//! [`payload`]; the shared runtime rules (timeouts, retries, concurrency,
//! panics, log lines, metrics) in [`engine`]. A binary's `main` is one line:
//! [`main`] or [`main_with`].

pub mod app;
pub mod cli;
pub mod engine;
pub mod error;
#[cfg(test)]
mod fuzzing;
pub mod handler;
pub mod http;
pub mod lambda;
pub mod local;
pub mod message;
pub mod metrics;
pub mod payload;
pub mod platform;
pub mod queue;
pub mod redact;
pub mod results;
pub mod retry;
pub mod signals;
pub mod store;
pub mod telemetry;

pub use app::{main, main_parsed, main_with};
pub use error::{Error, Result};
pub use handler::{Batching, Context, ErrorKind, Handler, HandlerError, Item, Record, handler_fn};
pub use payload::{Blob, Json, Object};
