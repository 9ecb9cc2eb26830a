//! shoal's own message attributes (SQS) and headers (AMQP): the same names
//! and formats on every broker, so a message or dead letter reads the same
//! wherever it travelled.

/// Attribute with the indices of the items still to do.
pub const PENDING: &str = "shoal.pending";
/// Attribute with the attempts spent on earlier copies.
pub const ATTEMPTS: &str = "shoal.attempts";
/// Attribute with the dead-letter reason.
pub const REASON: &str = "shoal.reason";
/// Attribute with the dead-letter cause (`permanent`, `exhausted`).
pub const CAUSE: &str = "shoal.cause";
/// Attribute with the error category of a dead letter.
pub const CATEGORY: &str = "shoal.category";
/// Attribute with the queue a dead letter came from.
pub const SOURCE_QUEUE: &str = "shoal.source-queue";
/// Attribute with the message id a dead letter came from.
pub const SOURCE_MESSAGE_ID: &str = "shoal.source-message-id";

/// `shoal.pending`'s format: item indices, comma-separated.
pub fn encode_indices(indices: &[usize]) -> String {
    indices
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// Parses `shoal.pending`; `None` (do every item) if it is not a list of
/// indices, so a damaged attribute redoes work rather than losing it.
pub fn decode_indices(value: &str) -> Option<Vec<usize>> {
    value
        .split(',')
        .map(|part| part.trim().parse().ok())
        .collect()
}
