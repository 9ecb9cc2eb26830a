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

/// Why `pending` (parsed `shoal.pending`) cannot select items of a message
/// of `total` items: empty, an index past the end, or one named twice.
/// `None` when it is valid.
pub fn invalid_indices(pending: &[usize], total: usize) -> Option<String> {
    let complaint = if pending.is_empty() {
        "names no item".to_owned()
    } else if let Some(index) = pending.iter().find(|&&i| i >= total) {
        format!("names item {index}, but the message has {total} items")
    } else {
        let mut seen = std::collections::BTreeSet::new();
        match pending.iter().find(|&&i| !seen.insert(i)) {
            Some(index) => format!("names item {index} twice"),
            None => return None,
        }
    };
    Some(format!(
        "invalid control attribute {PENDING}: it {complaint}"
    ))
}

/// Parses `shoal.pending`; `None` (do every item) if it is not a list of
/// indices, so a damaged attribute redoes work rather than losing it.
pub fn decode_indices(value: &str) -> Option<Vec<usize>> {
    value
        .split(',')
        .map(|part| part.trim().parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_indices_must_name_distinct_items_of_the_message() {
        assert_eq!(invalid_indices(&[0, 2], 3), None);
        let past = invalid_indices(&[1, 7], 3).unwrap_or_default();
        assert_eq!(
            past,
            "invalid control attribute shoal.pending: it names item 7, but the message has 3 items"
        );
        assert!(
            invalid_indices(&[], 3)
                .unwrap_or_default()
                .ends_with("names no item")
        );
        assert!(
            invalid_indices(&[1, 1], 3)
                .unwrap_or_default()
                .ends_with("names item 1 twice")
        );
    }
}
