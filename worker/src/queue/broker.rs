//! Carrying out a settlement on the broker: recording the items' results,
//! dead-lettering, deleting, releasing, re-sending. The decision itself is
//! [`super::settle`]'s; these calls never fail the runner: broker errors are
//! counted and logged, and a message left unsettled comes back when its
//! lease ends.

use std::time::Duration;

use tracing::{debug, error, info, warn};

use super::settle::{self, Plan, Then};
use super::{DeadLetter, Delivery, Ran, Shared, Transport};
use crate::handler::Handler;

/// Writes the part recording the items this delivery settles and what its
/// attempts used (see [`crate::results`]); false if it could not be
/// written. Messages that are not shoal chunks, and deliveries that
/// neither settle an item nor ran one, write nothing.
pub(super) async fn record_results<H: Handler, T: Transport>(
    shared: &Shared<H, T>,
    delivery: &Delivery,
    ran: &Ran,
    plan: &Plan,
    attempt: u32,
) -> bool {
    let (Some(run), Some(store), Some(chunk)) = (
        shared.record_results.as_deref(),
        shared.engine.output_store(),
        crate::results::chunk_id(&delivery.body),
    ) else {
        return true;
    };
    let records = settle::records(&chunk, &ran.results, &ran.outputs, plan, attempt);
    if records.is_empty() && ran.usage.invocations == 0 {
        return true;
    }
    let key = crate::results::part_key(run, &chunk);
    let body = bytes::Bytes::from(crate::results::encode(&records, &ran.usage));
    match store.put(&key, body, "application/x-ndjson").await {
        Ok(()) => true,
        Err(e) => {
            shared.metrics.failed("record_results");
            warn!(message_id = %delivery.message_id, chunk = %chunk, error = %e, "cannot record the items' results; releasing the message to run it again");
            false
        }
    }
}

pub(super) async fn settle<H: Handler, T: Transport>(
    shared: &Shared<H, T>,
    delivery: &Delivery,
    plan: Plan,
    total: usize,
    attempt: u32,
) {
    if let Some(first) = plan.dead.first() {
        let whole = delivery.pending.is_none() && plan.dead.len() == total;
        let letter = DeadLetter {
            items: (!whole).then(|| plan.dead.iter().map(|d| d.index).collect()),
            cause: first.cause,
            category: first.failure.category,
            reason: settle::reason(&plan.dead),
            attempts: attempt,
        };
        if !dead_letter(shared, delivery, &letter, plan.dead.len()).await {
            return;
        }
        for dead in &plan.dead {
            shared
                .engine
                .metrics()
                .dead_letters
                .with_label_values(&[dead.cause.as_str()])
                .inc();
            warn!(
                item = %dead.id,
                message_id = %delivery.message_id,
                cause = dead.cause.as_str(),
                category = dead.failure.category.as_str(),
                reason = %dead.failure.reason,
                "item dead-lettered"
            );
        }
    }
    match plan.then {
        Then::Delete => delete(shared, delivery).await,
        Then::Release { delay } => release(shared, delivery, delay).await,
        Then::Requeue {
            pending,
            attempts,
            delay,
        } => {
            match shared
                .transport
                .requeue(delivery, &pending, attempts, delay)
                .await
            {
                Ok(()) => {
                    shared.metrics.requeued.inc();
                    debug!(message_id = %delivery.message_id, pending = pending.len(), "unfinished items re-sent");
                    delete(shared, delivery).await;
                }
                Err(e) => {
                    shared.metrics.failed("requeue");
                    warn!(message_id = %delivery.message_id, error = %e, "cannot re-send unfinished items; releasing the whole message");
                    release(shared, delivery, delay).await;
                }
            }
        }
    }
}

/// Forgets a delivery the broker took back: nothing can settle it, and the
/// broker delivers it again.
pub(super) fn let_go<H: Handler, T: Transport>(shared: &Shared<H, T>, delivery: &Delivery) {
    shared.metrics.revoked.inc();
    info!(
        message_id = %delivery.message_id,
        "the queue took the message back (connection lost); it will be delivered again"
    );
}

/// Sends `letter` to the dead-letter queue; on failure releases the
/// message for a later attempt and returns false.
/// Deliveries past the last attempt during which dead-lettering may keep
/// failing before the message goes to the broker's own dead-lettering.
const SURRENDER_AFTER: u32 = 3;

pub(super) async fn dead_letter<H: Handler, T: Transport>(
    shared: &Shared<H, T>,
    delivery: &Delivery,
    letter: &DeadLetter,
    items: usize,
) -> bool {
    match shared.transport.dead_letter(delivery, letter).await {
        Ok(()) => {
            shared.metrics.dead_lettered.inc();
            true
        }
        Err(e) => {
            shared.engine.metrics().dead_letter_errors.inc();
            shared.metrics.failed("dead_letter");
            let attempt = delivery.attempt();
            if attempt
                > shared
                    .transport
                    .max_attempts()
                    .saturating_add(SURRENDER_AFTER)
            {
                // Dead-lettering has failed delivery after delivery: stop
                // the loop, and let the broker's own dead-lettering take
                // the original. The reason survives in this log line.
                error!(
                    message_id = %delivery.message_id,
                    items,
                    attempt,
                    error = %e,
                    reason = %letter.reason,
                    "cannot dead-letter, again; handing the message to the queue's own dead-lettering"
                );
                if let Err(e) = shared.transport.surrender(delivery).await {
                    shared.metrics.failed("surrender");
                    warn!(message_id = %delivery.message_id, error = %e, "cannot hand the message over; it returns when its lease ends");
                }
                return false;
            }
            error!(
                message_id = %delivery.message_id,
                items,
                error = %e,
                "cannot dead-letter; releasing the message to try again"
            );
            let delay = shared.engine.config().retry.backoff(attempt);
            release(shared, delivery, delay).await;
            false
        }
    }
}

pub(super) async fn delete<H: Handler, T: Transport>(shared: &Shared<H, T>, delivery: &Delivery) {
    let metrics = &shared.metrics;
    match shared.transport.delete(delivery).await {
        Ok(()) => metrics.deleted.inc(),
        Err(e) => {
            metrics.failed("delete");
            warn!(message_id = %delivery.message_id, error = %e, "cannot delete a finished message; it will be delivered again");
        }
    }
}

pub(super) async fn release<H: Handler, T: Transport>(
    shared: &Shared<H, T>,
    delivery: &Delivery,
    delay: Duration,
) {
    let metrics = &shared.metrics;
    match shared.transport.release(delivery, delay).await {
        Ok(()) => metrics.released.inc(),
        Err(e) => {
            metrics.failed("release");
            warn!(message_id = %delivery.message_id, error = %e, "cannot release a message; it returns when its lease ends");
        }
    }
}
