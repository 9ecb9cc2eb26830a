//! Queue worker mode (`worker`): a long-lived consumer feeding the engine.
//!
//! Receive loops long-poll the queue for up to 10 messages each, never more
//! than `max_in_flight` messages are held at once, and each message runs on
//! its own task: its items go through the engine (which bounds concurrent
//! invocations), its lease is extended at half-time while they run, and it
//! is settled by [`settle::decide`].
//!
//! Delivery is at least once: a message is deleted only after every item
//! in it is done (succeeded, or dead-lettered with its reason). Outputs
//! have deterministic keys, so a redelivered item overwrites its output.
//!
//! A delivery the broker takes back ([`Delivery::revoked`]: its AMQP
//! connection dropped) is no longer held: its invocations are cancelled
//! and it is not settled, since the broker delivers it again.
//!
//! Shutdown (first SIGTERM/Ctrl-C): stop receiving at once, let started
//! invocations finish within the grace period, give every other item back
//! (released or re-sent, at once); the runner returns as soon as nothing is
//! held. A second signal, or the end of the grace period, cuts the
//! invocations in flight short and gives their items back too, within
//! [`SETTLE_AFTER_STOP`]: the runner returns then whatever the broker does.

#[cfg(feature = "amqp")]
pub mod amqp;
mod broker;
mod entry;
mod records;
mod settle;
#[cfg(feature = "sqs")]
mod sqs;
mod transport;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

#[cfg(feature = "amqp")]
pub use amqp::{AmqpOptions, AmqpQueue};
pub(crate) use entry::worker_mode;
pub use settle::{DeadItem, ItemResult, Plan, Then, decide};
pub use shoal_protocol::headers;
#[cfg(feature = "sqs")]
pub use sqs::{SqsOptions, SqsQueue};
pub use transport::{DeadLetter, Delivery, Transport, TransportError};

use broker::{dead_letter, delete, let_go, record_results, release, settle};

use crate::engine::Engine;
use crate::handler::{Batching, Handler};
use crate::message::{self, RawItem};
use crate::metrics::{DeadLetterCause, ErrorCategory, QueueMetrics};
use crate::platform;
use crate::results::Usage;

/// Most messages one receive call returns (SQS's limit).
pub const MAX_BATCH: usize = 10;

/// How long, after the grace period (or a second signal), the runner gives
/// the messages it still holds back before it returns regardless. It fits
/// in the 10 s the operator adds to a pod's termination grace period on
/// top of `SHOAL_SHUTDOWN_GRACE`, so the kubelet never has to SIGKILL.
pub const SETTLE_AFTER_STOP: Duration = Duration::from_secs(5);

/// How the runner consumes.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Receive loops running at once.
    pub receivers: usize,
    /// Messages held (received, not settled) at most.
    pub max_in_flight: usize,
    /// How long started invocations may finish after a shutdown signal.
    pub grace: Duration,
    /// When the process started (for the start-to-first-receive log).
    pub started: Instant,
    /// Record what became of each chunk item in the output store before
    /// settling, as parts of this run (see [`crate::results`]).
    pub record_results: Option<String>,
    /// The consumer's metrics, in the engine's registry.
    pub metrics: QueueMetrics,
}

/// Signals the runner obeys.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    /// Stop receiving; finish or give back what is held.
    pub drain: CancellationToken,
    /// Stop now: cut invocations short and give everything back.
    pub stop: CancellationToken,
}

struct Shared<H: Handler, T: Transport> {
    engine: Engine<H>,
    transport: Arc<T>,
    stop: CancellationToken,
    started: Instant,
    first_receive: AtomicBool,
    record_results: Option<String>,
    metrics: QueueMetrics,
}

/// Consumes the queue until `shutdown` says stop, then returns once every
/// held message is settled.
pub async fn run<H: Handler, T: Transport>(
    engine: Engine<H>,
    transport: Arc<T>,
    settings: Settings,
    shutdown: Shutdown,
) {
    let shared = Arc::new(Shared {
        engine: engine.clone(),
        transport,
        stop: shutdown.stop.clone(),
        started: settings.started,
        first_receive: AtomicBool::new(false),
        record_results: settings.record_results,
        metrics: settings.metrics,
    });
    let permits = Arc::new(Semaphore::new(settings.max_in_flight.max(1)));
    let tracker = TaskTracker::new();
    let mut receivers = JoinSet::new();
    for _ in 0..settings.receivers.max(1) {
        receivers.spawn(receive_loop(
            shared.clone(),
            permits.clone(),
            tracker.clone(),
            shutdown.drain.clone(),
            settings.max_in_flight.max(1),
        ));
    }
    tokio::select! {
        () = shutdown.drain.cancelled() => {}
        () = shutdown.stop.cancelled() => shutdown.drain.cancel(),
    }
    engine.drain();
    // The grace period covers the receives still under way (each ends
    // within its poll's wait) and the invocations after them.
    let deadline = tokio::time::Instant::now() + settings.grace;
    let grace_over = || {
        warn!("grace period over: cutting the invocations in flight short");
        shutdown.stop.cancel();
    };
    tokio::select! {
        () = async { while receivers.join_next().await.is_some() {} } => {}
        () = tokio::time::sleep_until(deadline) => grace_over(),
    }
    // Stopped receivers return at once.
    while receivers.join_next().await.is_some() {}
    tracker.close();
    let held = shared.metrics.in_flight.get();
    info!(
        queue = shared.transport.queue(),
        held_messages = held,
        grace_s = settings.grace.as_secs_f64(),
        "draining: receiving stopped; finishing started invocations, giving the rest back"
    );
    tokio::select! {
        () = tracker.wait() => {}
        () = tokio::time::sleep_until(deadline) => grace_over(),
        () = shutdown.stop.cancelled() => {}
    }
    if shutdown.stop.is_cancelled() {
        engine.abort();
        // Settling is a few broker calls per message; do not hang on a
        // broker that is gone (its leases run out and it redelivers).
        if tokio::time::timeout(SETTLE_AFTER_STOP, tracker.wait())
            .await
            .is_err()
        {
            error!(
                held_messages = shared.metrics.in_flight.get(),
                "messages still unsettled {} s after stopping; the queue will deliver them again",
                SETTLE_AFTER_STOP.as_secs()
            );
        }
    }
    info!(queue = shared.transport.queue(), "worker stopped");
}

async fn receive_loop<H: Handler, T: Transport>(
    shared: Arc<Shared<H, T>>,
    permits: Arc<Semaphore>,
    tracker: TaskTracker,
    drain: CancellationToken,
    max_in_flight: usize,
) {
    let metrics = &shared.metrics;
    let mut failures: u32 = 0;
    loop {
        // Wait for room for a whole batch: many small receives cost far
        // more calls per message than a few full ones.
        let batch = MAX_BATCH.min(max_in_flight);
        let mut held = tokio::select! {
            biased;
            () = drain.cancelled() => return,
            permits = permits.clone().acquire_many_owned(batch as u32) => match permits {
                Ok(permits) => permits,
                Err(_) => return,
            },
        };
        // A receive under way is not abandoned when the drain starts: the
        // broker may hand it messages all the same (SQS and ElasticMQ do,
        // to a poll whose connection has closed), and those would stay
        // invisible for a whole lease. It ends within the poll's wait time;
        // what it brings after the drain began is given back at once. Only
        // the hard stop cuts it short.
        let abandon = shared.transport.receive_can_be_abandoned();
        let received = tokio::select! {
            biased;
            () = shared.stop.cancelled() => return,
            () = drain.cancelled(), if abandon => return,
            received = shared.transport.receive(batch) => received,
        };
        let received = match received {
            Ok(received) => received,
            Err(e) => {
                metrics.failed("receive");
                failures = failures.saturating_add(1);
                let wait = Duration::from_millis(100)
                    .saturating_mul(1 << failures.min(6))
                    .min(Duration::from_secs(5));
                warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "receive failed; retrying");
                drop(held);
                tokio::select! {
                    () = drain.cancelled() => return,
                    () = tokio::time::sleep(wait) => continue,
                }
            }
        };
        if failures > 0 {
            info!(queue = shared.transport.queue(), "queue reachable again");
            failures = 0;
        }
        if !shared.first_receive.swap(true, Ordering::Relaxed) {
            info!(
                queue = shared.transport.queue(),
                since_start_ms = shared.started.elapsed().as_secs_f64() * 1000.0,
                messages = received.len(),
                "first receive"
            );
        }
        if received.is_empty() {
            metrics.empty_receives.inc();
            continue;
        }
        if drain.is_cancelled() {
            for delivery in &received {
                if shared.stop.is_cancelled() {
                    break;
                }
                release(&shared, delivery, Duration::ZERO).await;
            }
            return;
        }
        // One task per receive: its messages run side by side and each is
        // settled (and its permit freed) as soon as it is done. Permits
        // left in `held` (fewer messages than asked) free up here; a broker
        // sending more than asked for gets its extras settled all the same.
        if let Batching::Records { max } = shared.engine.batching() {
            tracker.spawn(records::handle(shared.clone(), received, held, max));
            continue;
        }
        let messages: FuturesUnordered<_> = received
            .into_iter()
            .map(|delivery| handle(shared.clone(), delivery, held.split(1)))
            .collect();
        tracker.spawn(messages.collect::<()>());
    }
}

struct InFlight<'a>(&'a prometheus::IntGauge);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Counts a delivery received and held until the guard drops.
fn receiving<'a, H: Handler, T: Transport>(
    shared: &'a Shared<H, T>,
    delivery: &Delivery,
) -> InFlight<'a> {
    let metrics = &shared.metrics;
    metrics.received.inc();
    metrics.in_flight.inc();
    if let Some(age) = delivery
        .sent_at
        .and_then(|sent| SystemTime::now().duration_since(sent).ok())
    {
        metrics.age.observe(age.as_secs_f64());
    }
    InFlight(&metrics.in_flight)
}

/// Runs and settles one delivery. Never fails: broker errors are counted
/// and logged, and the message's lease running out redelivers it.
async fn handle<H: Handler, T: Transport>(
    shared: Arc<Shared<H, T>>,
    delivery: Delivery,
    _permit: Option<OwnedSemaphorePermit>,
) {
    let _in_flight = receiving(&shared, &delivery);
    let parse = |body: &bytes::Bytes, id: &str| message::parse(body, id);
    let Some(prepared) = prepare(&shared, &delivery, parse).await else {
        return;
    };
    let ran = run_items(&shared, &delivery, prepared.chosen, prepared.attempt).await;
    finish(&shared, &delivery, ran, prepared.total, prepared.attempt).await;
}

/// A delivery's items still to run.
struct Prepared {
    /// The chosen items, by index in the message.
    chosen: Vec<(usize, RawItem)>,
    /// Items in the message.
    total: usize,
    /// The delivery's attempt number.
    attempt: u32,
}

/// Reads a delivery's items with `parse`; `None` when there is nothing to
/// run: the delivery was revoked (let go) or could not be read (dead-
/// lettered with its reason).
async fn prepare<H: Handler, T: Transport>(
    shared: &Shared<H, T>,
    delivery: &Delivery,
    parse: impl FnOnce(&bytes::Bytes, &str) -> Result<Vec<RawItem>, message::MessageError>,
) -> Option<Prepared> {
    if delivery.revoked.is_cancelled() {
        let_go(shared, delivery);
        return None;
    }
    let attempt = delivery.attempt();
    let items = match parse(&delivery.body, &delivery.message_id) {
        Ok(items) => items,
        Err(e) => {
            let letter = DeadLetter {
                items: delivery.pending.clone(),
                cause: DeadLetterCause::Permanent,
                category: ErrorCategory::Input,
                reason: e.to_string(),
                attempts: attempt,
            };
            warn!(message_id = %delivery.message_id, reason = %letter.reason, "malformed message");
            if dead_letter(shared, delivery, &letter, 1).await {
                // The message is the unit that could not become items.
                shared
                    .engine
                    .metrics()
                    .dead_letters
                    .with_label_values(&[DeadLetterCause::Permanent.as_str()])
                    .inc();
                delete(shared, delivery).await;
            }
            return None;
        }
    };
    let total = items.len();
    if let Some(reason) = delivery
        .pending
        .as_deref()
        .and_then(|pending| headers::invalid_indices(pending, total))
    {
        // Whoever sent it controls the attribute: an index list that does
        // not fit the message must not make its items vanish.
        let letter = DeadLetter {
            items: None,
            cause: DeadLetterCause::Permanent,
            category: ErrorCategory::Input,
            reason,
            attempts: attempt,
        };
        warn!(message_id = %delivery.message_id, reason = %letter.reason, "invalid control attribute");
        if dead_letter(shared, delivery, &letter, total).await {
            shared
                .engine
                .metrics()
                .dead_letters
                .with_label_values(&[DeadLetterCause::Permanent.as_str()])
                .inc_by(total.max(1) as u64);
            delete(shared, delivery).await;
        }
        return None;
    }
    let selected: Option<BTreeSet<usize>> = delivery
        .pending
        .as_ref()
        .map(|p| p.iter().copied().collect());
    let chosen = items
        .into_iter()
        .enumerate()
        .filter(|(index, _)| selected.as_ref().is_none_or(|s| s.contains(index)))
        .collect();
    Some(Prepared {
        chosen,
        total,
        attempt,
    })
}

/// Settles a delivery by what its items did (see [`settle::decide`]),
/// recording their results first where asked.
async fn finish<H: Handler, T: Transport>(
    shared: &Shared<H, T>,
    delivery: &Delivery,
    ran: Ran,
    total: usize,
    attempt: u32,
) {
    if delivery.revoked.is_cancelled() {
        let_go(shared, delivery);
        return;
    }
    let retry_delay = shared.engine.config().retry.backoff(attempt);
    let plan = decide(
        &ran.results,
        attempt,
        shared.transport.max_attempts(),
        retry_delay,
    );
    if shared.record_results.is_some()
        && !record_results(shared, delivery, &ran, &plan, attempt).await
    {
        // Not settled until recorded: it comes back, and its items run again
        // (outputs are keyed by input, so that costs work, not correctness).
        release(shared, delivery, retry_delay).await;
        return;
    }
    settle(shared, delivery, plan, total, attempt).await;
}

/// What [`run_items`] gives back.
pub(super) struct Ran {
    /// Each chosen item's index, id and result.
    pub results: Vec<(usize, String, ItemResult)>,
    /// The output keys of the items that stored one, by index.
    pub outputs: BTreeMap<usize, String>,
    /// What the attempts used.
    pub usage: Usage,
}

/// Runs the chosen items of a delivery, extending its lease while they run.
async fn run_items<H: Handler, T: Transport>(
    shared: &Shared<H, T>,
    delivery: &Delivery,
    chosen: Vec<(usize, RawItem)>,
    attempt: u32,
) -> Ran {
    let mut outputs = BTreeMap::new();
    let mut usage = Usage::default();
    let memory_mb = shared.engine.config().memory_mib;
    let mut results: BTreeMap<usize, (String, ItemResult)> = chosen
        .iter()
        .map(|(index, item)| (*index, (item.id.clone(), ItemResult::NotStarted)))
        .collect();
    // Polled in place, not spawned: the engine already runs each handler
    // call on its own task.
    let mut attempts: FuturesUnordered<_> = chosen
        .into_iter()
        .map(|(index, item)| {
            let engine = &shared.engine;
            let revoked = &delivery.revoked;
            async move {
                let record = engine
                    .attempt_unless_draining(&item, attempt, Some(revoked))
                    .await;
                (index, record)
            }
        })
        .collect();
    let half = (shared.transport.visibility() / 2).max(Duration::from_millis(500));
    let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + half, half);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            finished = attempts.next() => match finished {
                None => break,
                Some((index, attempt)) => {
                    let result = match attempt {
                        None => ItemResult::NotStarted,
                        Some(record) => {
                            usage.add_invocation(platform::billed_ms(record.duration), memory_mb);
                            match record.result {
                            Ok(success) => {
                                if let Some(key) = success.output_key {
                                    outputs.insert(index, key);
                                }
                                ItemResult::Succeeded
                            }
                            Err(failure) => ItemResult::Failed(failure),
                        }},
                    };
                    if let Some(entry) = results.get_mut(&index) {
                        entry.1 = result;
                    }
                }
            },
            _ = heartbeat.tick() => {
                match shared.transport.extend(delivery).await {
                    Ok(()) => debug!(message_id = %delivery.message_id, "lease extended"),
                    Err(e) => {
                        shared.metrics.failed("extend");
                        warn!(message_id = %delivery.message_id, error = %e, "cannot extend the lease");
                    }
                }
            }
            // Items not finished stay `NotStarted` and are given back.
            () = shared.stop.cancelled() => break,
        }
    }
    let results = results
        .into_iter()
        .map(|(index, (id, result))| (index, id, result))
        .collect();
    if usage.invocations > 0 {
        usage.max_memory_used_mb = platform::max_memory_used_mib();
    }
    Ran {
        results,
        outputs,
        usage,
    }
}
