//! How a handler says an item failed: [`HandlerError`], retryable or
//! permanent. A leaf module: the handler contract, the payload decoders and
//! the stores all produce it, and it depends on none of them.

/// Whether a failure is worth retrying.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// Transient (network blip, throttling): retried with backoff until the
    /// attempts run out, then dead-lettered.
    Retryable,
    /// The item can never succeed (corrupt input, bad format): dead-lettered
    /// at once with its reason.
    Permanent,
}

/// A handler failure, classified for the runtime.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct HandlerError {
    kind: ErrorKind,
    reason: String,
}

impl HandlerError {
    /// A failure that may succeed if tried again.
    pub fn retryable(reason: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Retryable,
            reason: reason.into(),
        }
    }

    /// A failure that will never succeed for this item.
    pub fn permanent(reason: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Permanent,
            reason: reason.into(),
        }
    }

    /// Retryable or permanent.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The human-readable reason, recorded with dead letters.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// True for [`ErrorKind::Permanent`].
    pub fn is_permanent(&self) -> bool {
        self.kind == ErrorKind::Permanent
    }
}
