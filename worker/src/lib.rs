//! # shoal-worker
//!
//! Write one batch handler; run it over a local folder (`run`), as a queue
//! worker in Kubernetes (`worker`), or as an AWS Lambda function, unchanged.
//!
//! The handler contract is in [`handler`]; what it receives and returns in
//! [`payload`]; the shared runtime rules (timeouts, retries, concurrency,
//! panics, log lines, metrics) in [`engine`]. A binary's `main` is one line:
//! [`main`] or [`main_with`].
//!
//! ## Cargo features
//!
//! All on by default; a binary that runs in one place leaves the others
//! out (a Lambda function: `default-features = false, features =
//! ["lambda", "s3"]`, no RabbitMQ or SQS client, metrics server or progress
//! bar):
//!
//! - `local`: `run` and `invoke` over a folder, with a progress bar;
//! - `sqs`, `amqp`: `worker` on SQS or RabbitMQ queues;
//! - `lambda`: Lambda mode, chosen when `AWS_LAMBDA_RUNTIME_API` is set;
//! - `s3`: `s3://` inputs and outputs;
//! - `http`: the `/metrics`, `/healthz`, `/readyz` server.

#[cfg(not(any(
    feature = "local",
    feature = "sqs",
    feature = "amqp",
    feature = "lambda"
)))]
compile_error!(
    "shoal-worker needs at least one mode: enable a cargo feature among local, sqs, amqp and lambda"
);

pub mod app;
pub mod cli;
pub mod engine;
pub mod error;
pub mod failure;
pub mod handler;
pub mod http;
#[cfg(feature = "lambda")]
pub mod lambda;
#[cfg(feature = "local")]
pub mod local;
pub mod metrics;
pub mod payload;
pub mod platform;
#[cfg(any(feature = "sqs", feature = "amqp"))]
pub mod queue;
pub mod redact;
pub mod retry;
mod setup;
pub mod signals;
pub mod store;
pub mod telemetry;

pub use shoal_protocol::{message, results};

pub use app::{main, main_parsed, main_with};
pub use error::{Error, Result};
pub use handler::{Batching, Context, ErrorKind, Handler, HandlerError, Item, Record, handler_fn};
pub use payload::{Blob, Json, Object};
