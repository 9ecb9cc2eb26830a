//! How a delivery is settled once its items have run: a pure decision,
//! tested without a broker.
//!
//! Rules, per item of the delivery:
//! - succeeded: done;
//! - permanent failure, or retryable failure on the last allowed attempt:
//!   dead-lettered with its reason;
//! - retryable failure before the last attempt: tried again after a backoff;
//! - not started (shutdown came first): tried again at once, and this
//!   delivery does not count as an attempt for it.
//!
//! Then the message itself: deleted when nothing is left to do; released
//! (made visible again) when no item made progress, so the broker's receive
//! count and redrive policy keep counting; otherwise re-sent with only the
//! items left to do and deleted, so finished items are not redone.

use std::collections::BTreeMap;
use std::time::Duration;

use super::headers::{MAX_REASON_BYTES, truncate};
use crate::engine::Failure;
use crate::handler::ErrorKind;
use crate::metrics::DeadLetterCause;
use crate::results::{ItemRecord, Status, bounded_reason};

/// What one item's run came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemResult {
    /// The handler succeeded and its output is stored.
    Succeeded,
    /// The attempt failed.
    Failed(Failure),
    /// The attempt never started (shutdown).
    NotStarted,
}

/// One item to dead-letter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadItem {
    /// Index of the item in the message.
    pub index: usize,
    /// Its id.
    pub id: String,
    /// Permanent or exhausted.
    pub cause: DeadLetterCause,
    /// The failure.
    pub failure: Failure,
}

/// What happens to the message once dead items are dead-lettered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Then {
    /// Nothing is left: acknowledge it.
    Delete,
    /// No progress: visible again after `delay`.
    Release {
        /// Backoff before the next delivery.
        delay: Duration,
    },
    /// Progress on some items: send a copy with the rest, delete this one.
    Requeue {
        /// Indices still to do.
        pending: Vec<usize>,
        /// Attempts the copy carries.
        attempts: u32,
        /// Backoff before the copy is visible.
        delay: Duration,
    },
}

/// The settlement of one delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Items for the dead-letter queue.
    pub dead: Vec<DeadItem>,
    /// The message's fate.
    pub then: Then,
}

/// Decides the settlement of a delivery that was `attempt` (1-based) out
/// of `max_attempts`, whose items (index, id, result) ran as given.
/// `retry_delay` is the backoff to use if an item failed retryably.
pub fn decide(
    results: &[(usize, String, ItemResult)],
    attempt: u32,
    max_attempts: u32,
    retry_delay: Duration,
) -> Plan {
    let mut dead = Vec::new();
    let mut retry = Vec::new();
    let mut not_started = Vec::new();
    let mut succeeded = 0usize;
    for (index, id, result) in results {
        match result {
            ItemResult::Succeeded => succeeded += 1,
            ItemResult::NotStarted => not_started.push(*index),
            ItemResult::Failed(failure) => {
                let cause = if failure.kind == ErrorKind::Permanent {
                    Some(DeadLetterCause::Permanent)
                } else if attempt >= max_attempts {
                    Some(DeadLetterCause::Exhausted)
                } else {
                    None
                };
                match cause {
                    Some(cause) => dead.push(DeadItem {
                        index: *index,
                        id: id.clone(),
                        cause,
                        failure: failure.clone(),
                    }),
                    None => retry.push(*index),
                }
            }
        }
    }
    let delay = if retry.is_empty() {
        Duration::ZERO
    } else {
        retry_delay
    };
    let mut pending: Vec<usize> = retry.iter().chain(&not_started).copied().collect();
    pending.sort_unstable();
    let then = if pending.is_empty() {
        Then::Delete
    } else if succeeded == 0 && dead.is_empty() {
        Then::Release { delay }
    } else {
        Then::Requeue {
            pending,
            // A copy of items that never started must not lose an attempt.
            attempts: if retry.is_empty() {
                attempt.saturating_sub(1)
            } else {
                attempt
            },
            delay,
        }
    };
    Plan { dead, then }
}

/// The records of the items a delivery of chunk `chunk` settles under
/// `plan`: one per item that succeeded (with its output key, from
/// `outputs` by index) or is dead-lettered. `attempt` is the delivery's.
pub fn records(
    chunk: &str,
    results: &[(usize, String, ItemResult)],
    outputs: &BTreeMap<usize, String>,
    plan: &Plan,
    attempt: u32,
) -> Vec<ItemRecord> {
    let dead: BTreeMap<usize, &DeadItem> = plan.dead.iter().map(|d| (d.index, d)).collect();
    results
        .iter()
        .filter_map(|(index, id, result)| {
            let base = ItemRecord {
                item: id.clone(),
                chunk: chunk.to_owned(),
                status: Status::Succeeded,
                attempts: attempt,
                output: None,
                cause: None,
                category: None,
                reason: None,
            };
            match (result, dead.get(index)) {
                (ItemResult::Succeeded, _) => Some(ItemRecord {
                    output: outputs.get(index).cloned(),
                    ..base
                }),
                (ItemResult::Failed(_), Some(d)) => Some(ItemRecord {
                    status: Status::Failed,
                    cause: Some(d.cause.as_str().to_owned()),
                    category: Some(d.failure.category.as_str().to_owned()),
                    reason: Some(bounded_reason(&d.failure.reason)),
                    ..base
                }),
                _ => None,
            }
        })
        .collect()
}

/// The dead-letter reason of `dead` items: one line per item.
///
/// At most [`MAX_REASON_BYTES`] of it: a message of many items, or items
/// with long errors, must not make a reason no broker accepts (nor hold
/// megabytes in memory); the rest is counted.
pub fn reason(dead: &[DeadItem]) -> String {
    let mut text = String::new();
    for (shown, d) in dead.iter().enumerate() {
        let line = format!("{}: {}", d.id, d.failure.reason);
        let more = dead.len() - shown;
        let tail = format!("\n... and {more} more");
        if text.len() + line.len() + 1 + tail.len() > MAX_REASON_BYTES && shown > 0 {
            text.push_str(&tail);
            return text;
        }
        if shown > 0 {
            text.push('\n');
        }
        text.push_str(truncate(&line, MAX_REASON_BYTES - tail.len()));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::ErrorCategory;

    fn failed(kind: ErrorKind) -> ItemResult {
        ItemResult::Failed(Failure {
            category: ErrorCategory::Handler,
            kind,
            reason: "boom".into(),
        })
    }

    fn results(list: Vec<ItemResult>) -> Vec<(usize, String, ItemResult)> {
        list.into_iter()
            .enumerate()
            .map(|(i, r)| (i, format!("item-{i}"), r))
            .collect()
    }

    const BACKOFF: Duration = Duration::from_secs(4);

    #[test]
    fn the_reason_of_many_dead_items_is_bounded_and_counts_the_rest() {
        let dead: Vec<DeadItem> = (0..5000)
            .map(|i| DeadItem {
                index: i,
                id: format!("c-1/{i}"),
                cause: DeadLetterCause::Permanent,
                failure: Failure {
                    category: ErrorCategory::Input,
                    kind: ErrorKind::Permanent,
                    reason: "x".repeat(100),
                },
            })
            .collect();
        let text = reason(&dead);
        assert!(text.len() <= MAX_REASON_BYTES, "{}", text.len());
        assert!(text.starts_with("c-1/0: xxx"));
        assert!(text.ends_with(" more"), "{}", &text[text.len() - 40..]);
        assert_eq!(reason(&dead[..2]).lines().count(), 2);
    }

    #[test]
    fn all_succeeded_deletes() {
        let plan = decide(
            &results(vec![ItemResult::Succeeded, ItemResult::Succeeded]),
            1,
            3,
            BACKOFF,
        );
        assert_eq!(plan.then, Then::Delete);
        assert!(plan.dead.is_empty());
    }

    #[test]
    fn permanent_failure_is_dead_lettered_at_once_and_spares_its_neighbours() {
        let plan = decide(
            &results(vec![
                ItemResult::Succeeded,
                failed(ErrorKind::Permanent),
                ItemResult::Succeeded,
            ]),
            1,
            5,
            BACKOFF,
        );
        assert_eq!(plan.then, Then::Delete);
        assert_eq!(plan.dead.len(), 1);
        assert_eq!(plan.dead[0].index, 1);
        assert_eq!(plan.dead[0].cause, DeadLetterCause::Permanent);
        assert_eq!(reason(&plan.dead), "item-1: boom");
    }

    #[test]
    fn retryable_failure_alone_releases_with_backoff() {
        let plan = decide(&results(vec![failed(ErrorKind::Retryable)]), 1, 3, BACKOFF);
        assert_eq!(plan.then, Then::Release { delay: BACKOFF });
        assert!(plan.dead.is_empty());
    }

    #[test]
    fn retryable_failure_on_last_attempt_is_exhausted() {
        let plan = decide(&results(vec![failed(ErrorKind::Retryable)]), 3, 3, BACKOFF);
        assert_eq!(plan.then, Then::Delete);
        assert_eq!(plan.dead[0].cause, DeadLetterCause::Exhausted);
    }

    #[test]
    fn partial_progress_requeues_only_the_failed_items() {
        let plan = decide(
            &results(vec![
                ItemResult::Succeeded,
                failed(ErrorKind::Retryable),
                ItemResult::Succeeded,
                failed(ErrorKind::Retryable),
            ]),
            2,
            5,
            BACKOFF,
        );
        assert_eq!(
            plan.then,
            Then::Requeue {
                pending: vec![1, 3],
                attempts: 2,
                delay: BACKOFF
            }
        );
    }

    #[test]
    fn shutdown_requeues_unstarted_items_without_spending_an_attempt() {
        let plan = decide(
            &results(vec![
                ItemResult::Succeeded,
                ItemResult::NotStarted,
                ItemResult::NotStarted,
            ]),
            2,
            5,
            BACKOFF,
        );
        assert_eq!(
            plan.then,
            Then::Requeue {
                pending: vec![1, 2],
                attempts: 1,
                delay: Duration::ZERO
            }
        );
        let untouched = decide(&results(vec![ItemResult::NotStarted]), 1, 5, BACKOFF);
        assert_eq!(
            untouched.then,
            Then::Release {
                delay: Duration::ZERO
            }
        );
    }

    #[test]
    fn dead_item_counts_as_progress() {
        let plan = decide(
            &results(vec![failed(ErrorKind::Permanent), ItemResult::NotStarted]),
            1,
            5,
            BACKOFF,
        );
        assert_eq!(plan.dead.len(), 1);
        assert_eq!(
            plan.then,
            Then::Requeue {
                pending: vec![1],
                attempts: 0,
                delay: Duration::ZERO
            }
        );
    }

    #[test]
    fn records_name_what_settles_now_and_nothing_that_comes_back() {
        let list = results(vec![
            ItemResult::Succeeded,
            failed(ErrorKind::Permanent),
            failed(ErrorKind::Retryable),
            ItemResult::NotStarted,
            ItemResult::Succeeded,
        ]);
        let plan = decide(&list, 2, 3, BACKOFF);
        let outputs = BTreeMap::from([(0, "out/item-0.jpg".to_owned())]);
        let written = records("c-9", &list, &outputs, &plan, 2);
        let short: Vec<(&str, Status, Option<&str>)> = written
            .iter()
            .map(|r| (r.item.as_str(), r.status, r.output.as_deref()))
            .collect();
        assert_eq!(
            short,
            [
                ("item-0", Status::Succeeded, Some("out/item-0.jpg")),
                ("item-1", Status::Failed, None),
                ("item-4", Status::Succeeded, None),
            ]
        );
        let dead = &written[1];
        assert_eq!(dead.chunk, "c-9");
        assert_eq!(dead.attempts, 2);
        assert_eq!(dead.cause.as_deref(), Some("permanent"));
        assert_eq!(dead.category.as_deref(), Some("handler"));
        assert_eq!(dead.reason.as_deref(), Some("boom"));
        // On the last attempt the retryable failure settles too.
        let last = decide(&list, 3, 3, BACKOFF);
        let written = records("c-9", &list, &outputs, &last, 3);
        assert_eq!(written.len(), 4);
        assert_eq!(written[2].cause.as_deref(), Some("exhausted"));
    }
}
