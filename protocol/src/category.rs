//! Why an invocation failed and why an item was dead-lettered: the bounded
//! label values of the runtime's metrics, the `shoal.category` and
//! `shoal.cause` headers of a dead letter, and the results records the
//! operator reads.

/// Fixed error categories used as the `category` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCategory {
    /// The handler returned an error.
    Handler,
    /// The item could not be fetched or decoded.
    Input,
    /// The output could not be stored.
    Output,
    /// The invocation ran past its deadline.
    Timeout,
    /// The handler panicked.
    Panic,
}

impl ErrorCategory {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Handler => "handler",
            Self::Input => "input",
            Self::Output => "output",
            Self::Timeout => "timeout",
            Self::Panic => "panic",
        }
    }

    /// Every category, for pre-registering label values.
    pub const ALL: [ErrorCategory; 5] = [
        Self::Handler,
        Self::Input,
        Self::Output,
        Self::Timeout,
        Self::Panic,
    ];
}

/// Why an item was dead-lettered (the `cause` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeadLetterCause {
    /// A permanent error: not retried.
    Permanent,
    /// Retryable errors until the attempts ran out.
    Exhausted,
}

impl DeadLetterCause {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Permanent => "permanent",
            Self::Exhausted => "exhausted",
        }
    }
}
