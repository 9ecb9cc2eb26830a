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

/// What only a dead letter carries: a redrive drops these (the item gets
/// its full attempts again) and keeps [`PENDING`] (finished items are not
/// redone) and any attribute that is not shoal's.
pub const DEAD_LETTER_ONLY: [&str; 6] = [
    ATTEMPTS,
    REASON,
    CAUSE,
    CATEGORY,
    SOURCE_QUEUE,
    SOURCE_MESSAGE_ID,
];

/// Longest dead-letter reason carried, in bytes.
pub const MAX_REASON_BYTES: usize = 16 * 1024;
/// Longest `shoal.pending` a dead letter carries; a longer list is left out
/// and the whole message is dead (a redrive redoes every item of it).
pub const MAX_PENDING_BYTES: usize = 32 * 1024;
/// Shortest reason worth sending: below this the letter does not fit.
const MIN_REASON_BYTES: usize = 64;

/// `text` cut to at most `max` bytes, on a character boundary.
pub fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// The reason and `shoal.pending` a dead letter carries, within `room`
/// bytes for the two together: the index list when it fits (else left out,
/// and the reason says how many items failed), the reason cut to what
/// remains. `None` when not even a short reason fits: the letter cannot be
/// sent, and the original message must stay where the broker's own
/// dead-lettering finds it.
pub fn fitted_letter(
    reason: &str,
    items: Option<&[usize]>,
    room: usize,
) -> Option<(String, Option<String>)> {
    let mut pending = items.map(encode_indices);
    let mut note = String::new();
    if let (Some(text), Some(items)) = (&pending, items)
        && (text.len() > MAX_PENDING_BYTES || text.len() + MIN_REASON_BYTES * 4 > room)
    {
        note = format!(
            " [{} items failed; their indices did not fit in the dead letter]",
            items.len()
        );
        pending = None;
    }
    let used = pending.as_ref().map_or(0, String::len);
    let reason_room = room.saturating_sub(used).min(MAX_REASON_BYTES);
    if reason_room < MIN_REASON_BYTES + note.len() {
        return None;
    }
    let text = format!("{}{note}", truncate(reason, reason_room - note.len()));
    Some((text, pending))
}

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
    fn a_dead_letter_always_fits_its_room_or_says_it_cannot() {
        let long = "é".repeat(40_000);
        let (reason, pending) = fitted_letter(&long, Some(&[1, 2]), 1 << 20).unwrap();
        assert!(reason.len() <= MAX_REASON_BYTES && reason.starts_with('é'));
        assert_eq!(pending.as_deref(), Some("1,2"));
        let many: Vec<usize> = (0..20_000).collect();
        let (reason, pending) = fitted_letter("bad", Some(&many), 1 << 20).unwrap();
        assert_eq!(pending, None);
        assert_eq!(
            reason,
            "bad [20000 items failed; their indices did not fit in the dead letter]"
        );
        let (reason, pending) = fitted_letter(&long, Some(&[3]), 300).unwrap();
        assert!(reason.len() + pending.map_or(0, |p| p.len()) <= 300);
        assert_eq!(fitted_letter("bad", None, 10), None);
    }

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

    proptest::proptest! {
        #[test]
        fn fuzz_index_lists_round_trip_and_any_text_decodes_or_not(
            indices in proptest::collection::vec(proptest::prelude::any::<usize>(), 1..200),
            text in "[0-9, x-]{0,64}|\\PC{0,64}",
            total in 0usize..300,
        ) {
            proptest::prop_assert_eq!(decode_indices(&encode_indices(&indices)), Some(indices));
            if let Some(decoded) = decode_indices(&text) {
                // Valid for a message of `total` items: every index names a
                // distinct item of it, so none can make an item vanish.
                if invalid_indices(&decoded, total).is_none() {
                    let distinct: std::collections::BTreeSet<_> = decoded.iter().collect();
                    proptest::prop_assert!(!decoded.is_empty());
                    proptest::prop_assert_eq!(distinct.len(), decoded.len());
                    proptest::prop_assert!(decoded.iter().all(|&i| i < total));
                }
            }
        }

        #[test]
        fn fuzz_dead_letters_fit_their_room_whatever_the_reason_and_items(
            reason in "\\PC{0,400}",
            repeat in 1usize..200,
            items in proptest::option::of(proptest::collection::vec(0usize..1_000_000, 0..12_000)),
            room in 0usize..300_000,
        ) {
            let reason = reason.repeat(repeat);
            match fitted_letter(&reason, items.as_deref(), room) {
                Some((text, pending)) => {
                    let pending_len = pending.as_ref().map_or(0, String::len);
                    proptest::prop_assert!(text.len() + pending_len <= room);
                    proptest::prop_assert!(pending_len <= MAX_PENDING_BYTES);
                    proptest::prop_assert!(text.len() <= MAX_REASON_BYTES);
                    let kept = text.split(" [").next().unwrap_or_default();
                    proptest::prop_assert!(reason.starts_with(kept));
                    if let Some(pending) = pending {
                        proptest::prop_assert_eq!(
                            decode_indices(&pending),
                            items.filter(|i| !i.is_empty())
                        );
                    }
                }
                // Only a room too small for a short reason and the note.
                None => proptest::prop_assert!(room < MIN_REASON_BYTES + 80, "room {}", room),
            }
        }
    }
}
