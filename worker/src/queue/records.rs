//! Messages as records ([`Batching::Records`]): the messages of one receive
//! go to the handler together, up to its batch size per invocation, as a
//! Lambda event source mapping hands a function a batch of SQS messages.
//!
//! Each message is still settled on its own by what became of its items
//! (a partial batch response fails only the records it names), once every
//! invocation covering its items has ended. Object references from shoal
//! chunks go one per invocation, and a chunk of them is settled as soon as
//! its own objects are done, whatever the other messages of its receive.
//!
//! [`Batching::Records`]: crate::handler::Batching::Records

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::{InFlight, ItemResult, Prepared, Ran, Shared, Transport, finish, prepare, receiving};
use crate::engine::BatchItem;
use crate::handler::Handler;
use crate::message::{self, ItemBody};
use crate::platform;
use crate::results::Usage;

/// A delivery being worked on, with what holds its place.
struct Held<'a> {
    delivery: super::Delivery,
    prepared: Prepared,
    _permit: Option<OwnedSemaphorePermit>,
    _in_flight: InFlight<'a>,
}

/// Runs and settles the deliveries of one receive, `max` items per
/// invocation at most. Never fails, as [`super::handle`].
pub(super) async fn handle<H: Handler, T: Transport>(
    shared: Arc<Shared<H, T>>,
    received: Vec<super::Delivery>,
    mut permits: OwnedSemaphorePermit,
    max: usize,
) {
    let mut held = Vec::with_capacity(received.len());
    for delivery in received {
        let in_flight = receiving(&shared, &delivery);
        let permit = permits.split(1);
        if let Some(prepared) = prepare(&shared, &delivery, message::parse_records).await {
            held.push(Held {
                delivery,
                prepared,
                _permit: permit,
                _in_flight: in_flight,
            });
        }
    }
    drop(permits);
    // A delivery of object references only (a chunk of the fan-out) goes
    // its own way: one invocation per object, settled as soon as its own
    // objects are done. Messages as records go together, as one event
    // source batch does.
    let (alone, together): (Vec<Held<'_>>, Vec<Held<'_>>) = held.into_iter().partition(|entry| {
        entry
            .prepared
            .chosen
            .iter()
            .all(|(_, item)| matches!(item.body, ItemBody::Object(_)))
    });
    let mut groups: Vec<Vec<Held<'_>>> = alone.into_iter().map(|entry| vec![entry]).collect();
    if !together.is_empty() {
        groups.push(together);
    }
    futures_util::future::join_all(
        groups
            .into_iter()
            .map(|group| run_and_settle(&shared, group, max.max(1))),
    )
    .await;
}

/// Runs the items of `held` and settles each delivery; their places free
/// up when this returns.
async fn run_and_settle<H: Handler, T: Transport>(
    shared: &Shared<H, T>,
    held: Vec<Held<'_>>,
    max: usize,
) {
    let batches = group(&held, max);
    let mut ran = run(shared, &held, &batches).await;
    for (position, entry) in held.iter().enumerate() {
        let mine = ran.remove(&position).unwrap_or_else(|| Ran {
            results: Vec::new(),
            outputs: BTreeMap::new(),
            usage: Usage::default(),
        });
        finish(
            shared,
            &entry.delivery,
            mine,
            entry.prepared.total,
            entry.prepared.attempt,
        )
        .await;
    }
}

/// Which items go together: `(delivery position, index in chosen)` lists,
/// in the order received; an object reference always alone.
fn group(held: &[Held<'_>], max: usize) -> Vec<Vec<(usize, usize)>> {
    let mut batches = Vec::new();
    let mut open: Vec<(usize, usize)> = Vec::new();
    for (position, entry) in held.iter().enumerate() {
        for (nth, (_, item)) in entry.prepared.chosen.iter().enumerate() {
            if matches!(item.body, ItemBody::Object(_)) {
                batches.push(vec![(position, nth)]);
                continue;
            }
            open.push((position, nth));
            if open.len() >= max {
                batches.push(std::mem::take(&mut open));
            }
        }
    }
    if !open.is_empty() {
        batches.push(open);
    }
    batches
}

/// Runs every batch, extending the deliveries' leases while they run, and
/// sorts the results back by delivery.
async fn run<H: Handler, T: Transport>(
    shared: &Shared<H, T>,
    held: &[Held<'_>],
    batches: &[Vec<(usize, usize)>],
) -> BTreeMap<usize, Ran> {
    let memory_mb = shared.engine.config().memory_mib;
    let mut ran: BTreeMap<usize, Ran> = held
        .iter()
        .enumerate()
        .map(|(position, entry)| {
            let results = entry
                .prepared
                .chosen
                .iter()
                .map(|(index, item)| (*index, item.id.clone(), ItemResult::NotStarted))
                .collect();
            let ran = Ran {
                results,
                outputs: BTreeMap::new(),
                usage: Usage::default(),
            };
            (position, ran)
        })
        .collect();
    // The deliveries of one receive come on one connection: the broker
    // takes them back together.
    let revoked = CancellationToken::new();
    let mut invocations: FuturesUnordered<_> = batches
        .iter()
        .map(|batch| {
            let items: Vec<BatchItem<'_>> = batch
                .iter()
                .map(|&(position, nth)| BatchItem {
                    item: &held[position].prepared.chosen[nth].1,
                    attempt: held[position].prepared.attempt,
                    sent_at: held[position].delivery.sent_at,
                })
                .collect();
            let engine = &shared.engine;
            let revoked = &revoked;
            async move { (batch, engine.attempt_batch(&items, Some(revoked)).await) }
        })
        .collect();
    let mut any_revoked = std::pin::pin!(async move {
        if held.is_empty() {
            return std::future::pending::<()>().await;
        }
        let revocations = held
            .iter()
            .map(|entry| Box::pin(entry.delivery.revoked.cancelled()));
        futures_util::future::select_all(revocations).await;
    });
    let half = (shared.transport.visibility() / 2).max(Duration::from_millis(500));
    let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + half, half);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            finished = invocations.next() => match finished {
                None => break,
                Some((_, None)) => {}
                Some((batch, Some(attempt))) => {
                    let billed = platform::billed_ms(attempt.duration);
                    for (nth_in_batch, (&(position, nth), result)) in
                        batch.iter().zip(attempt.results).enumerate()
                    {
                        let Some(entry) = ran.get_mut(&position) else { continue };
                        // One invocation, counted once: with its first item.
                        if nth_in_batch == 0 && attempt.invoked {
                            entry.usage.add_invocation(billed, memory_mb);
                        }
                        let index = held[position].prepared.chosen[nth].0;
                        let outcome = match result {
                            Ok(success) => {
                                if let Some(key) = success.output_key {
                                    entry.outputs.insert(index, key);
                                }
                                ItemResult::Succeeded
                            }
                            Err(failure) => ItemResult::Failed(failure),
                        };
                        if let Some(slot) = entry.results.get_mut(nth) {
                            slot.2 = outcome;
                        }
                    }
                }
            },
            _ = heartbeat.tick() => {
                let extended = held.iter().map(|entry| async move {
                    match shared.transport.extend(&entry.delivery).await {
                        Ok(()) => debug!(message_id = %entry.delivery.message_id, "lease extended"),
                        Err(e) => {
                            shared.metrics.failed("extend");
                            warn!(message_id = %entry.delivery.message_id, error = %e, "cannot extend the lease");
                        }
                    }
                });
                futures_util::future::join_all(extended).await;
            }
            () = &mut any_revoked, if !revoked.is_cancelled() => revoked.cancel(),
            // Items not finished stay `NotStarted` and are given back.
            () = shared.stop.cancelled() => break,
        }
    }
    for entry in ran.values_mut() {
        if entry.usage.invocations > 0 {
            entry.usage.max_memory_used_mb = platform::max_memory_used_mib();
        }
    }
    ran
}
