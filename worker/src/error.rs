//! Errors of the runtime itself (not of items: those are
//! [`crate::HandlerError`]s and never stop a batch).

use std::path::{Path, PathBuf};

/// A runtime failure, with what was being done and to which object.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A filesystem operation failed.
    #[error("cannot {operation} {path}: {source}")]
    Io {
        /// What was being done.
        operation: &'static str,
        /// To which path.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A record could not be encoded.
    #[error("cannot encode {what}: {source}")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// The underlying error.
        #[source]
        source: serde_json::Error,
    },
    /// An event or message could not be read.
    #[error("invalid event {path}: {reason}")]
    Event {
        /// Where it came from.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The input cannot be read at all (not one item of it).
    #[error("{0}")]
    Input(String),
    /// The handler's initialisation failed.
    #[error("handler initialisation failed: {0}")]
    Init(String),
    /// The queue cannot be consumed (missing, no dead-letter queue, ...).
    #[error("queue {queue}: {reason}")]
    Queue {
        /// The queue's URL.
        queue: String,
        /// What is wrong.
        reason: String,
    },
    /// The Lambda runtime stopped with an error.
    #[error("lambda runtime: {0}")]
    Lambda(String),
    /// The metrics registry or server failed.
    #[error("metrics: {0}")]
    Metrics(String),
    /// A setting makes no sense (named in the message).
    #[error("configuration: {0}")]
    Config(String),
    /// Pushing metrics to the Pushgateway failed.
    #[error("metrics push: {0}")]
    Push(String),
}

impl Error {
    /// A setting that needs a cargo feature this binary was built without:
    /// `what` asked for `kind`, which `feature` of shoal-worker brings.
    pub fn without_feature(what: &str, kind: &str, feature: &str) -> Self {
        Self::Config(format!(
            "{what}: this binary was built without {kind} support (cargo feature `{feature}` of shoal-worker)"
        ))
    }

    /// An [`Error::Io`] for `path`.
    pub fn io(operation: &'static str, path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            operation,
            path: path.to_owned(),
            source,
        }
    }
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
