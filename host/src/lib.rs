//! Lambda execution environments for functions shoal did not build.
//!
//! A Lambda function, in any runtime, is a process that asks the Lambda
//! Runtime API for its next event and posts back a response or an error.
//! This crate is the other side of that conversation: it starts the
//! function's command with `AWS_LAMBDA_RUNTIME_API` pointing at a loopback
//! server of its own, hands it events, and collects what it answers, so the
//! function runs unchanged (Python's `awslambdaric`, Node.js's
//! `aws-lambda-ric`, a custom runtime's `bootstrap`).
//!
//! - [`api`]: the Runtime API of one environment (`/runtime/invocation/next`,
//!   `/response`, `/error`, `/init/error`), with Lambda's headers.
//! - [`environment`]: one execution environment: the function's process,
//!   its init phase, one invocation at a time.
//! - [`Environments`]: up to `concurrency` environments, reused while warm.
//! - [`events`]: events as AWS triggers send them (S3 notifications, SQS
//!   batches, partial batch responses).
//! - [`function`]: a hosted function as the handler of shoal's queue
//!   worker (the `shoal-host worker` command).
//! - [`invoke`]: Lambda's Invoke API in front of them (the `shoal-host
//!   serve` command), where the Runtime Interface Emulator's clients can
//!   use it.
//!
//! Contract, as Lambda keeps it:
//! - An environment runs one invocation at a time and is reused for the
//!   next one while it lives (warm start); its init phase (process start to
//!   its first request for an event) is timed and reported with the first
//!   invocation only, and bounded by [`FunctionConfig::init_timeout`].
//! - A timeout, a process that exits, or a response over
//!   [`FunctionConfig::max_response_bytes`] ends the environment: its whole
//!   process group is killed and the next invocation starts a fresh one.
//! - The function gets the environment variables Lambda sets
//!   ([`environment::lambda_variables`]) over the host's own environment
//!   (less shoal's `SHOAL_*` settings) and [`FunctionConfig::env`].
//! - What the function prints goes where the host's output goes.

pub mod api;
pub mod cli;
pub mod environment;
pub mod events;
pub mod function;
pub mod invoke;
mod pool;

use std::path::PathBuf;
use std::time::Duration;

pub use pool::{Environments, InitFailed, Lease};

/// Lambda's limit on a synchronous response: 6 MB.
pub const MAX_RESPONSE_BYTES: usize = 6 * 1024 * 1024;

/// Lambda's limit on the init phase of an on-demand function.
pub const INIT_TIMEOUT: Duration = Duration::from_secs(10);

/// How to run a function.
#[derive(Debug, Clone)]
pub struct FunctionConfig {
    /// The program and its arguments: an image's entrypoint with its
    /// handler, a `bootstrap`, `python3 -m awslambdaric app.handler`...
    pub command: Vec<String>,
    /// Working directory of the process (`LAMBDA_TASK_ROOT`) [default: the
    /// host's].
    pub task_root: Option<PathBuf>,
    /// `_HANDLER`, for runtimes that read it (the image's `CMD`).
    pub handler: Option<String>,
    /// The function's name (`AWS_LAMBDA_FUNCTION_NAME`, the ARN's last part).
    pub function_name: String,
    /// Memory size in MB (`AWS_LAMBDA_FUNCTION_MEMORY_SIZE`).
    pub memory_mb: u32,
    /// How long one invocation may take.
    pub timeout: Duration,
    /// How long the init phase may take.
    pub init_timeout: Duration,
    /// AWS region (`AWS_REGION`, the ARN's region).
    pub region: String,
    /// The largest response accepted.
    pub max_response_bytes: usize,
    /// More environment variables of the function (the job's own); they
    /// win over the host's, and Lambda's win over them.
    pub env: Vec<(String, String)>,
}

impl FunctionConfig {
    /// `command` as function `name`, everything else at Lambda's defaults
    /// (128 MB, 3 s timeout, 10 s init, us-east-1, 6 MB responses).
    pub fn new(name: impl Into<String>, command: Vec<String>) -> Self {
        Self {
            command,
            task_root: None,
            handler: None,
            function_name: name.into(),
            memory_mb: 128,
            timeout: Duration::from_secs(3),
            init_timeout: INIT_TIMEOUT,
            region: "us-east-1".to_owned(),
            max_response_bytes: MAX_RESPONSE_BYTES,
            env: Vec::new(),
        }
    }

    /// The ARN the function is invoked as (account `000000000000`).
    pub fn function_arn(&self) -> String {
        format!(
            "arn:aws:lambda:{}:000000000000:function:{}",
            self.region, self.function_name
        )
    }
}

/// An error the function reported: its type, message and stack trace, as
/// the runtime posted them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct FunctionError {
    /// `errorType` (e.g. `ValueError`, `Runtime.ImportModuleError`).
    #[serde(rename = "errorType", default)]
    pub error_type: String,
    /// `errorMessage`.
    #[serde(rename = "errorMessage", default)]
    pub message: String,
    /// `stackTrace`, one frame per entry.
    #[serde(
        rename = "stackTrace",
        default,
        deserialize_with = "api::lenient_trace"
    )]
    pub trace: Vec<String>,
}

/// Why an invocation produced no response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// The function answered with an error (handled or not). The
    /// environment lives on.
    #[error("{}: {}", .0.error_type, .0.message)]
    Function(FunctionError),
    /// The invocation ran out of time; the environment was ended.
    #[error("Task timed out after {:.2} seconds", .0.as_secs_f64())]
    Timeout(Duration),
    /// The function's process exited during the invocation.
    #[error("Runtime exited during the invocation: {0}")]
    Exited(String),
    /// The response was larger than the limit; the environment was ended.
    #[error("Response payload size exceeded maximum allowed payload size ({0} bytes)")]
    ResponseTooLarge(usize),
    /// No environment could be started: the command failed to start, the
    /// function reported an init error, exited or ran past the init
    /// timeout before asking for its first event.
    #[error("{}: {}", .0.error_type, .0.message)]
    Init(FunctionError),
}

impl Failure {
    /// Lambda's error type for it (what a dead letter's reason names).
    pub fn error_type(&self) -> &str {
        match self {
            Self::Function(e) | Self::Init(e) => &e.error_type,
            Self::Timeout(_) => "Sandbox.Timedout",
            Self::Exited(_) => "Runtime.ExitError",
            Self::ResponseTooLarge(_) => "Function.ResponseSizeTooLarge",
        }
    }
}

/// What one invocation measured, for its REPORT line.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The request id the function saw.
    pub request_id: String,
    /// From handing the event over to the answer (or the failure).
    pub duration: Duration,
    /// The init phase of a fresh environment, on its first invocation.
    pub init_duration: Option<Duration>,
    /// Peak resident memory of the function's process so far, in MB.
    pub max_memory_used_mb: Option<u64>,
    /// Which environment ran it (a counter; a new one after each end).
    pub environment: u64,
}

/// An invocation's result and its measurements.
pub type Invoked = (Result<bytes::Bytes, Failure>, Report);
