//! Lambda mode: when `AWS_LAMBDA_RUNTIME_API` is set, the same binary serves
//! the Lambda Runtime API (lambda_runtime) instead of its command line.
//!
//! - SQS batches are answered with a partial batch response: each record
//!   whose message is malformed or has a failed item is listed in
//!   `batchItemFailures` by its message id; the others succeed. SQS retries
//!   the listed ones and its redrive policy dead-letters them.
//! - Anything else (a chunk, an S3 event, SNS-wrapped S3 events, a bare
//!   object reference) is a direct invoke: every item runs; if one fails,
//!   the invocation fails with every failed item's reason, so Lambda's own
//!   retries and on-failure destination apply.
//! - Each item runs once per invocation (retries belong to the event
//!   source), bounded by the invocation's deadline as well as
//!   `SHOAL_TIMEOUT`. A deadline that cannot be a wall-clock time (cargo
//!   lambda's emulator sends the function timeout, `600000`, instead of
//!   epoch milliseconds) is ignored, with one warning: `SHOAL_TIMEOUT`
//!   (900 s when unset) bounds each item alone.
//!
//! Lambda writes the START/END/REPORT lines of each invocation itself, so
//! the engine's per-item lines are off in this mode.

mod entry;
mod event;
mod push;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::{Value, json};

pub(crate) use entry::lambda_mode;
pub use event::{Invocation, SqsRecord, batch_response, classify};
pub use push::{Pushgateway, push_url};

use crate::engine::{Engine, Failure};
use crate::error::{Error, Result};
use crate::handler::Handler;
use crate::message::{self, RawItem};

/// The variable the Lambda service (or an emulator) sets.
pub const RUNTIME_API: &str = "AWS_LAMBDA_RUNTIME_API";

/// Whether this process runs as a Lambda function.
pub fn detected() -> bool {
    std::env::var_os(RUNTIME_API).is_some_and(|v| !v.is_empty())
}

/// The earliest `Lambda-Runtime-Deadline-Ms` taken as a wall-clock time
/// (2020-01-01). Lambda sends epoch milliseconds; an emulator that sends a
/// duration instead (cargo-lambda: `600000`) lands in January 1970.
const EARLIEST_DEADLINE_MS: u64 = 1_577_836_800_000;

/// Time left at `now` before `deadline_ms` (milliseconds since the epoch),
/// or `None` when the value cannot be an epoch time.
fn remaining(deadline_ms: u64, now: SystemTime) -> Option<Duration> {
    if deadline_ms < EARLIEST_DEADLINE_MS {
        return None;
    }
    let deadline = UNIX_EPOCH + Duration::from_millis(deadline_ms);
    Some(deadline.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Variables the Lambda service always sets and `lambda_runtime` requires
/// (it panics without them); checked first for a clear error instead.
const REQUIRED: [&str; 3] = [
    "AWS_LAMBDA_FUNCTION_NAME",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
    "AWS_LAMBDA_FUNCTION_VERSION",
];

/// Refuses to start the runtime when a variable it needs is missing or
/// malformed, naming them all.
pub fn check_environment() -> Result<()> {
    let mut missing: Vec<&str> = REQUIRED
        .iter()
        .copied()
        .filter(|name| std::env::var(name).map_or(true, |v| v.is_empty()))
        .collect();
    let memory = std::env::var("AWS_LAMBDA_FUNCTION_MEMORY_SIZE").unwrap_or_default();
    if !memory.is_empty() && memory.parse::<i32>().is_err() {
        missing.push("AWS_LAMBDA_FUNCTION_MEMORY_SIZE (not a number)");
    }
    if missing.is_empty() {
        return Ok(());
    }
    Err(Error::Config(format!(
        "{RUNTIME_API} is set, so this is a Lambda function, but the Lambda service's {} {} missing: run it under Lambda or its emulator, or unset {RUNTIME_API} to use the command line",
        missing.join(", "),
        if missing.len() == 1 { "is" } else { "are" }
    )))
}

/// Names this execution environment for the Pushgateway grouping key: its
/// log stream (one per environment), else a fresh id.
pub fn instance_id() -> String {
    std::env::var("AWS_LAMBDA_LOG_STREAM_NAME")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

/// Serves invocations until the runtime stops; with `push`, each invocation
/// ends by pushing the metrics (before the response, see [`Pushgateway`]).
pub async fn run<H: Handler>(engine: Engine<H>, push: Option<Pushgateway>) -> Result<()> {
    check_environment()?;
    let engine = &engine;
    let push = &push;
    let warned = &AtomicBool::new(false);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        let deadline_ms = event.context.deadline;
        let limit = remaining(deadline_ms, SystemTime::now()).unwrap_or_else(|| {
            if !warned.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    deadline_ms,
                    timeout_s = engine.config().timeout.as_secs_f64(),
                    "the Runtime API sent a deadline that is not a wall-clock time (an emulator's); items are bounded by the configured timeout instead"
                );
            }
            engine.config().timeout
        });
        let response = invoke(engine, event.payload, limit).await;
        if let Some(push) = push
            && let Err(e) = push.push(engine.metrics()).await
        {
            tracing::warn!(error = %e, "metrics push failed");
        }
        response
    }))
    .await
    .map_err(|e| Error::Lambda(e.to_string()))
}

/// One item's failure, for the error message of a direct invoke.
fn describe(id: &str, failure: &Failure) -> String {
    format!("{id}: {} ({})", failure.reason, failure.category.as_str())
}

/// Runs `items` once each, side by side; returns the failures.
async fn run_items<H: Handler>(
    engine: &Engine<H>,
    items: Vec<RawItem>,
    attempt: u32,
    limit: Duration,
) -> Vec<(String, Failure)> {
    let mut running: FuturesUnordered<_> = items
        .into_iter()
        .map(|item| async move {
            let record = engine.attempt_within(&item, attempt, limit).await;
            (item.id, record.result)
        })
        .collect();
    let mut failed = Vec::new();
    while let Some((id, result)) = running.next().await {
        if let Err(failure) = result {
            failed.push((id, failure));
        }
    }
    failed
}

/// Handles one invocation's payload.
pub async fn invoke<H: Handler>(
    engine: &Engine<H>,
    payload: Value,
    limit: Duration,
) -> std::result::Result<Value, lambda_runtime::Error> {
    match classify(payload) {
        Invocation::Sqs(records) => {
            let mut batch: FuturesUnordered<_> = records
                .into_iter()
                .map(|record| async move {
                    let failed = match message::parse(record.body.as_bytes(), &record.message_id)
                    {
                        Err(e) => {
                            tracing::warn!(message_id = %record.message_id, reason = %e, "malformed message");
                            true
                        }
                        Ok(items) => {
                            let failures =
                                run_items(engine, items, record.receive_count, limit).await;
                            for (id, failure) in &failures {
                                tracing::warn!(message_id = %record.message_id, item = %id, reason = %failure.reason, "item failed");
                            }
                            !failures.is_empty()
                        }
                    };
                    failed.then_some(record.message_id)
                })
                .collect();
            let mut failed = Vec::new();
            while let Some(outcome) = batch.next().await {
                failed.extend(outcome);
            }
            Ok(serde_json::to_value(batch_response(failed))?)
        }
        Invocation::Direct(value) => {
            let body = serde_json::to_vec(&value)?;
            let request = crate::engine::request_id();
            let items = message::parse_direct(&body, &request)?;
            let ids: Vec<String> = items.iter().map(|i| i.id.clone()).collect();
            let failures = run_items(engine, items, 1, limit).await;
            if failures.is_empty() {
                return Ok(json!({ "succeeded": ids }));
            }
            let reasons: Vec<String> = failures.iter().map(|(id, f)| describe(id, f)).collect();
            Err(format!(
                "{} of {} items failed: {}",
                failures.len(),
                ids.len(),
                reasons.join("; ")
            )
            .into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_epoch_deadline_gives_the_time_left_and_a_passed_one_none_left() {
        let now = UNIX_EPOCH + Duration::from_millis(1_800_000_000_000);
        assert_eq!(
            remaining(1_800_000_002_500, now),
            Some(Duration::from_millis(2_500))
        );
        assert_eq!(remaining(1_799_999_999_000, now), Some(Duration::ZERO));
    }

    #[test]
    fn a_deadline_that_cannot_be_an_epoch_time_is_not_used() {
        let now = UNIX_EPOCH + Duration::from_millis(1_800_000_000_000);
        // cargo-lambda's emulator: the function timeout, in milliseconds.
        assert_eq!(remaining(600_000, now), None);
        assert_eq!(remaining(0, now), None);
        assert_eq!(remaining(EARLIEST_DEADLINE_MS - 1, now), None);
    }
}
