//! Errors of the operator, each with what failed and on which object.

/// An operator failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("kubernetes API: {what}: {source}")]
    Kube {
        /// What was being done, to which object.
        what: String,
        /// The underlying error.
        #[source]
        source: kube::Error,
    },
    /// A queue operation failed.
    #[error("queue {queue}: {what}: {reason}")]
    Queue {
        /// The queue's URL or name.
        queue: String,
        /// What was being done.
        what: &'static str,
        /// What went wrong.
        reason: String,
    },
    /// The fan-out source cannot be listed.
    #[error("source {source_name}: {reason}")]
    Source {
        /// `s3://bucket/prefix`.
        source_name: String,
        /// What went wrong.
        reason: String,
    },
    /// An item list (`source.s3.list`) says something that is not an item:
    /// the job fails, as the same list read again says it again.
    #[error("item list {list}: {reason}")]
    BadList {
        /// `s3://bucket/key`.
        list: String,
        /// Where and what.
        reason: String,
    },
    /// Writing to the output location (the results manifest) failed.
    #[error("output {location}: {reason}")]
    Output {
        /// `s3://bucket/key`.
        location: String,
        /// What went wrong.
        reason: String,
    },
    /// The BatchJob cannot run as specified (beyond what the CRD checks).
    #[error("{0}")]
    Invalid(String),
    /// Adding or running the cleanup finalizer failed.
    #[error("finalizer: {0}")]
    Finalizer(String),
    /// The operator's own configuration is unusable.
    #[error("configuration: {0}")]
    Config(String),
}

impl Error {
    /// Every value [`Error::category`] returns.
    pub const CATEGORIES: [&'static str; 7] = [
        "kubernetes",
        "queue",
        "source",
        "output",
        "invalid",
        "finalizer",
        "config",
    ];

    /// A fixed category for the `category` metric label.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Kube { .. } => "kubernetes",
            Self::Queue { .. } => "queue",
            Self::Source { .. } | Self::BadList { .. } => "source",
            Self::Output { .. } => "output",
            Self::Invalid(_) => "invalid",
            Self::Finalizer(_) => "finalizer",
            Self::Config(_) => "config",
        }
    }

    /// An [`Error::Kube`] for `what`.
    pub fn kube(what: impl Into<String>) -> impl FnOnce(kube::Error) -> Self {
        let what = what.into();
        move |source| Self::Kube { what, source }
    }
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
