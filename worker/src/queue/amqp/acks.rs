//! Acknowledgements of the consuming channel, coalesced.
//!
//! Every delivery of the current connection is *unacked* from the moment
//! it arrives until its ack, nack or reject has been sent. Acks go through
//! one task: the acks waiting when it wakes that cover every unacked
//! delivery up to a tag leave as one `basic.ack` with `multiple` set; the
//! others (a delivery still running, or being nacked, sits between them)
//! leave as single acks, sent at the same time. Nothing waits for a slow
//! delivery: an ack is sent as soon as the task is free, coalesced or not.
//!
//! Why: with a quorum queue every `basic.ack` is a command in the queue's
//! Raft log; one command for a whole run of deliveries costs the broker a
//! fraction of one per delivery, and the broker is what limits a fast
//! consumer.
//!
//! Safety: a multiple ack for tag T settles every unacked delivery up to
//! T on the channel, so it is only sent when each of them asked for an
//! ack. A delivery being nacked stays unacked until its nack is sent, so no
//! multiple ack covers it; tags are per channel and increase in delivery
//! order, and the consumer hands deliveries over in that order.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures_util::future::join_all;
use lapin::Acker;
use lapin::options::BasicAckOptions;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::LOST;
use super::session::{Shared, amqp_error, bounded};
use crate::queue::transport::TransportError;

/// Acks settled in one pass at most.
const MAX_BATCH: usize = 1024;

/// The unacked deliveries of the current connection, by delivery tag; an
/// entry's acker is `None` once it is taken for settling.
#[derive(Default)]
pub(super) struct Unacked {
    generation: u64,
    tags: BTreeMap<u64, Option<Acker>>,
}

impl Unacked {
    /// A new connection: the deliveries of the last one are gone (the
    /// broker requeued them).
    pub(super) fn reset(&mut self, generation: u64) {
        self.generation = generation;
        self.tags.clear();
    }

    pub(super) fn insert(&mut self, generation: u64, tag: u64, acker: Acker) {
        if generation == self.generation {
            self.tags.insert(tag, Some(acker));
        }
    }

    /// The acker of an unacked delivery of this connection, once.
    pub(super) fn take(&mut self, generation: u64, tag: u64) -> Option<Acker> {
        if generation != self.generation {
            return None;
        }
        self.tags.get_mut(&tag)?.take()
    }

    /// Deliveries whose ack or nack has been sent (or failed: their acker
    /// is spent either way).
    pub(super) fn settled(&mut self, generation: u64, tags: impl IntoIterator<Item = u64>) {
        if generation == self.generation {
            for tag in tags {
                self.tags.remove(&tag);
            }
        }
    }

    /// How many of `acked` (ascending tags, each unacked and taken) are
    /// every unacked delivery up to the last of them: those can go as one
    /// multiple ack.
    fn covered(&self, acked: &[u64]) -> usize {
        self.tags
            .keys()
            .zip(acked)
            .take_while(|(unacked, acked)| unacked == acked)
            .count()
    }
}

/// `generation-tag`, the receipt of a delivery.
pub(super) fn receipt(generation: u64, tag: u64) -> String {
    format!("{generation}-{tag}")
}

/// The generation and tag of a receipt made by [`receipt`].
pub(super) fn parse_receipt(receipt: &str) -> Option<(u64, u64)> {
    let (generation, tag) = receipt.split_once('-')?;
    Some((generation.parse().ok()?, tag.parse().ok()?))
}

/// One ack to send.
pub(super) struct AckRequest {
    pub(super) generation: u64,
    pub(super) tag: u64,
    pub(super) acker: Acker,
    /// Cancelled when the delivery's connection is lost.
    pub(super) lost: CancellationToken,
    pub(super) reply: oneshot::Sender<Result<(), TransportError>>,
}

/// Sends the acks it is given, coalesced, until every sender is gone.
pub(super) async fn ack_batcher(
    shared: Arc<Shared>,
    mut requests: mpsc::UnboundedReceiver<AckRequest>,
) {
    let mut batch = Vec::with_capacity(64);
    while requests.recv_many(&mut batch, MAX_BATCH).await > 0 {
        settle(&shared, &mut batch).await;
    }
}

async fn settle(shared: &Shared, batch: &mut Vec<AckRequest>) {
    let queue = shared.target.queue.as_str();
    batch.sort_unstable_by_key(|r| (r.generation, r.tag));
    let (generation, covered) = match shared.unacked.lock() {
        Ok(unacked) => {
            let current: Vec<u64> = batch
                .iter()
                .filter(|r| r.generation == unacked.generation)
                .map(|r| r.tag)
                .collect();
            (unacked.generation, unacked.covered(&current))
        }
        Err(_) => (0, 0),
    };
    // Acks of a connection already lost fail: the broker has requeued
    // their deliveries.
    let (current, stale): (Vec<_>, Vec<_>) =
        batch.drain(..).partition(|r| r.generation == generation);
    for request in stale {
        let _ = request.reply.send(Err(amqp_error("delete", queue, LOST)));
    }
    // One multiple ack for the covered run, one ack for each of the others,
    // all sent at once: their tags do not overlap (the others are above
    // the run), and none waits for another's frame.
    let mut current = current.into_iter();
    let mut groups: Vec<Vec<AckRequest>> = vec![current.by_ref().take(covered).collect()];
    groups.extend(current.map(|single| vec![single]));
    groups.retain(|group| !group.is_empty());
    let outcomes = join_all(groups.iter().map(|group| async move {
        let Some(last) = group.last() else {
            return Ok(false);
        };
        let options = BasicAckOptions {
            multiple: group.len() > 1,
        };
        bounded("delete", queue, &last.lost, last.acker.ack(options)).await
    }))
    .await;
    for (group, outcome) in groups.into_iter().zip(outcomes) {
        finish(shared, queue, generation, group, &outcome);
    }
}

/// Marks `requests` settled and answers each with `outcome`.
fn finish(
    shared: &Shared,
    queue: &str,
    generation: u64,
    requests: Vec<AckRequest>,
    outcome: &Result<bool, TransportError>,
) {
    if let Ok(mut unacked) = shared.unacked.lock() {
        unacked.settled(generation, requests.iter().map(|r| r.tag));
    }
    for request in requests {
        let answer = match outcome {
            Ok(true) => Ok(()),
            Ok(false) => Err(amqp_error("delete", queue, LOST)),
            Err(e) => Err(amqp_error("delete", queue, e)),
        };
        let _ = request.reply.send(answer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unacked(generation: u64, tags: &[u64]) -> Unacked {
        Unacked {
            generation,
            tags: tags.iter().map(|t| (*t, None)).collect(),
        }
    }

    #[test]
    fn acks_of_every_delivery_up_to_a_tag_go_as_one() {
        let all = unacked(1, &[3, 4, 5, 6]);
        assert_eq!(all.covered(&[3, 4, 5, 6]), 4);
        assert_eq!(all.covered(&[3, 4]), 2);
        // Delivery 3 still runs (or is being nacked): nothing is covered,
        // each ack goes alone.
        assert_eq!(all.covered(&[4, 5, 6]), 0);
        // A gap at 5: 3 and 4 together, 6 alone.
        assert_eq!(all.covered(&[3, 4, 6]), 2);
        assert_eq!(all.covered(&[]), 0);
    }

    #[test]
    fn a_settled_delivery_no_longer_holds_back_the_ones_after_it() {
        let mut some = unacked(2, &[10, 11, 12]);
        assert_eq!(some.covered(&[11, 12]), 0);
        some.settled(2, [10]);
        assert_eq!(some.covered(&[11, 12]), 2);
        // Settlements of an older connection change nothing.
        some.settled(1, [11]);
        assert_eq!(some.covered(&[11, 12]), 2);
    }

    #[test]
    fn receipts_round_trip_and_reject_anything_else() {
        assert_eq!(parse_receipt(&receipt(3, 42)), Some((3, 42)));
        assert_eq!(parse_receipt("3"), None);
        assert_eq!(parse_receipt("x-1"), None);
        assert_eq!(parse_receipt("1-2-3"), None);
    }
}
