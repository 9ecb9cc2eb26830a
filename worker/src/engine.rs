//! The transport-neutral invocation engine: runs one item through the
//! handler under the runtime rules every mode shares.
//!
//! Guarantees, per attempt: the handler runs on its own task (a panic fails
//! that item only); the attempt is bounded by the timeout (the context is
//! cancelled and the task aborted at the deadline); at most `concurrency`
//! attempts run at once; START/END/REPORT lines and metrics are emitted for
//! every attempt, whatever its outcome.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

mod attempt;
mod batch;

use attempt::{cancelled, join_within, timed_out};
pub(crate) use attempt::{panic_message, request_id};
pub use batch::{BatchAttempt, BatchItem};

use crate::handler::{Batching, Context, ErrorKind, Handler, HandlerError, Item, Measured};
use crate::message::RawItem;
use crate::metrics::{DeadLetterCause, ErrorCategory, Metrics};
use crate::payload::{Blob, Output, Payload, output_key};
use crate::platform;
use crate::retry::RetryPolicy;
use crate::store::ObjectStore;

/// Settings of the engine, from the command line or the environment.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Per-attempt deadline.
    pub timeout: Duration,
    /// Reported in the context and logs.
    pub function_name: String,
    /// Reported in the context and REPORT lines.
    pub memory_mib: u32,
    /// Attempts allowed to run at once.
    pub concurrency: usize,
    /// Used by [`Engine::process`].
    pub retry: RetryPolicy,
    /// Which of Lambda's START/END/REPORT lines each attempt writes.
    pub invocation_logs: platform::InvocationLogs,
}

/// A failed attempt, classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Fixed category (the metrics label).
    pub category: ErrorCategory,
    /// Whether trying again may help.
    pub kind: ErrorKind,
    /// Human-readable reason.
    pub reason: String,
}

impl Failure {
    fn from_handler(category: ErrorCategory, err: HandlerError) -> Self {
        Self {
            category,
            kind: err.kind(),
            reason: err.reason().to_owned(),
        }
    }
}

/// A successful attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Success {
    /// Where the output was stored, if it was.
    pub output_key: Option<String>,
    /// The output itself, if the handler produced one.
    pub output: Option<Blob>,
}

/// The record of one attempt.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// The attempt's request id (in its log lines).
    pub request_id: String,
    /// Wall time of the attempt, slot wait excluded.
    pub duration: Duration,
    /// What happened.
    pub result: Result<Success, Failure>,
}

/// Where an item ended after [`Engine::process`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The handler succeeded and the output (if any) is stored.
    Succeeded {
        /// Output key, if the handler produced an output.
        output_key: Option<String>,
    },
    /// The item must go to the dead-letter destination.
    DeadLettered {
        /// Permanent error or attempts exhausted.
        cause: DeadLetterCause,
        /// The last failure.
        failure: Failure,
    },
    /// Shutdown came before the item finished; it was not completed and
    /// must be delivered again.
    Abandoned,
}

/// What [`Engine::process`] reports for one item.
#[derive(Debug, Clone)]
pub struct ItemReport {
    /// The item id.
    pub id: String,
    /// Attempts made.
    pub attempts: u32,
    /// Duration of each attempt, in order.
    pub durations: Vec<Duration>,
    /// Final state.
    pub outcome: Outcome,
}

/// Runs items through a handler. Cheap to clone; clones share everything.
pub struct Engine<H: Handler> {
    handler: Arc<H>,
    input: Arc<dyn ObjectStore>,
    output: Option<Arc<dyn ObjectStore>>,
    config: Arc<EngineConfig>,
    metrics: Metrics,
    slots: Arc<Semaphore>,
    draining: CancellationToken,
    abort: CancellationToken,
}

impl<H: Handler> Clone for Engine<H> {
    fn clone(&self) -> Self {
        Self {
            handler: self.handler.clone(),
            input: self.input.clone(),
            output: self.output.clone(),
            config: self.config.clone(),
            metrics: self.metrics.clone(),
            slots: self.slots.clone(),
            draining: self.draining.clone(),
            abort: self.abort.clone(),
        }
    }
}

struct Running<'a> {
    gauge: &'a prometheus::IntGauge,
    /// Shared with the attempt's context, so blocking work the handler
    /// started keeps the slot after a timeout (see `Context::spawn_blocking`).
    permit: Option<Arc<OwnedSemaphorePermit>>,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

impl<H: Handler> Engine<H> {
    /// An engine reading from `input` and storing outputs in `output`
    /// (`None`: outputs are returned but not stored).
    pub fn new(
        handler: Arc<H>,
        input: Arc<dyn ObjectStore>,
        output: Option<Arc<dyn ObjectStore>>,
        config: EngineConfig,
        metrics: Metrics,
    ) -> Self {
        let slots = Arc::new(Semaphore::new(config.concurrency.max(1)));
        Self {
            handler,
            input,
            output,
            config: Arc::new(config),
            metrics,
            slots,
            draining: CancellationToken::new(),
            abort: CancellationToken::new(),
        }
    }

    /// The engine's settings.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// How the handler takes a queue worker's items.
    pub fn batching(&self) -> Batching {
        self.handler.batching()
    }

    /// The metrics the engine records into.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The input store.
    pub fn input_store(&self) -> &Arc<dyn ObjectStore> {
        &self.input
    }

    /// The output store, if any.
    pub fn output_store(&self) -> Option<&Arc<dyn ObjectStore>> {
        self.output.as_ref()
    }

    /// Stop scheduling retries; attempts in flight finish normally.
    pub fn drain(&self) {
        self.draining.cancel();
    }

    /// Whether [`Engine::drain`] was called.
    pub fn is_draining(&self) -> bool {
        self.draining.is_cancelled()
    }

    /// Cancel the contexts of attempts in flight (they should stop early).
    pub fn abort(&self) {
        self.draining.cancel();
        self.abort.cancel();
    }

    async fn acquire(&self) -> Running<'_> {
        let permit = match self.slots.clone().try_acquire_owned() {
            Ok(permit) => Some(permit),
            Err(_) => {
                self.metrics.throttles.inc();
                // Fails only if the semaphore is closed, which this engine
                // never does.
                self.slots.clone().acquire_owned().await.ok()
            }
        };
        self.metrics.concurrent.inc();
        Running {
            gauge: &self.metrics.concurrent,
            permit: permit.map(Arc::new),
        }
    }

    /// Runs one attempt of `item`, waiting for a free concurrency slot first.
    pub async fn attempt(&self, item: &RawItem, attempt: u32) -> Attempt {
        let running = self.acquire().await;
        self.attempt_in(running, item, attempt, self.config.timeout, None)
            .await
    }

    /// Like [`Engine::attempt`], bounded by `limit` as well as the
    /// configured timeout (Lambda mode: the invocation's remaining time).
    pub async fn attempt_within(&self, item: &RawItem, attempt: u32, limit: Duration) -> Attempt {
        let running = self.acquire().await;
        let timeout = self.config.timeout.min(limit);
        self.attempt_in(running, item, attempt, timeout, None).await
    }

    /// Runs one attempt of `item` unless [`Engine::drain`] is called, or
    /// `cancel` is cancelled, before a concurrency slot frees up; `None`
    /// means the attempt never started. Cancelling `cancel` later ends the
    /// attempt at once as a retryable failure (its context is cancelled
    /// and its task aborted), with its END and REPORT lines as always.
    pub async fn attempt_unless_draining(
        &self,
        item: &RawItem,
        attempt: u32,
        cancel: Option<&CancellationToken>,
    ) -> Option<Attempt> {
        let running = tokio::select! {
            biased;
            () = self.draining.cancelled() => return None,
            () = cancelled(cancel) => return None,
            running = self.acquire() => running,
        };
        Some(
            self.attempt_in(running, item, attempt, self.config.timeout, cancel)
                .await,
        )
    }

    /// The context of one attempt: `timeout` from now, holding `slot`.
    fn context(
        &self,
        request_id: &str,
        attempt: u32,
        timeout: Duration,
        slot: Option<Arc<OwnedSemaphorePermit>>,
    ) -> Context {
        let ctx = Context::new(
            request_id.to_owned(),
            attempt,
            self.config.function_name.clone(),
            self.config.memory_mib,
            timeout,
            self.abort.child_token(),
        )
        .with_concurrency(u32::try_from(self.config.concurrency).unwrap_or(u32::MAX));
        match slot {
            Some(slot) => ctx.holding(slot),
            None => ctx,
        }
    }

    /// The END and REPORT lines of an attempt, and its duration metric.
    fn log_end(&self, request_id: &str, duration: Duration, measured: &Measured) {
        let lines = self.config.invocation_logs;
        if lines.start_and_end() {
            info!(target: platform::TARGET, "{}", platform::end_line(request_id));
        }
        if lines.report() {
            info!(
                target: platform::TARGET,
                "{}",
                platform::report_line(
                    request_id,
                    duration,
                    self.config.memory_mib,
                    measured
                        .max_memory_mib()
                        .unwrap_or_else(platform::max_memory_used_mib),
                    measured.init_duration(),
                )
            );
        }
        self.metrics.duration.observe(duration.as_secs_f64());
    }

    /// The START line of an attempt, if written.
    fn log_start(&self, request_id: &str) {
        if self.config.invocation_logs.start_and_end() {
            info!(target: platform::TARGET, "{}", platform::start_line(request_id));
        }
    }

    /// Counts a failed item and says why.
    fn count_failure(&self, item: &str, attempt: u32, request_id: &str, failure: &Failure) {
        self.metrics
            .errors
            .with_label_values(&[failure.category.as_str()])
            .inc();
        warn!(
            item,
            attempt,
            request_id,
            category = failure.category.as_str(),
            retryable = failure.kind == ErrorKind::Retryable,
            reason = %failure.reason,
            "item failed"
        );
    }

    /// Runs one attempt in the slot `running` holds until it returns.
    async fn attempt_in(
        &self,
        running: Running<'_>,
        item: &RawItem,
        attempt: u32,
        timeout: Duration,
        stop: Option<&CancellationToken>,
    ) -> Attempt {
        let request_id = request_id();
        let ctx = self.context(&request_id, attempt, timeout, running.permit.clone());
        let measured = ctx.measured();
        self.log_start(&request_id);
        let started = Instant::now();
        let result = self.run_attempt(item, ctx, timeout, stop).await;
        // A hosted function's init phase is reported apart, as Lambda does.
        let duration = started
            .elapsed()
            .saturating_sub(measured.init_duration().unwrap_or_default());
        self.log_end(&request_id, duration, &measured);
        match &result {
            Ok(_) => {
                self.metrics.invocations_succeeded.inc();
                debug!(item = %item.id, attempt, request_id, "item succeeded");
            }
            Err(failure) => {
                self.metrics.invocations_failed.inc();
                self.count_failure(&item.id, attempt, &request_id, failure);
            }
        }
        Attempt {
            request_id,
            duration,
            result,
        }
    }

    async fn run_attempt(
        &self,
        item: &RawItem,
        ctx: Context,
        timeout: Duration,
        stop: Option<&CancellationToken>,
    ) -> Result<Success, Failure> {
        let deadline = ctx.deadline_handle();
        let cancel = ctx.cancellation().clone();
        let handler = self.handler.clone();
        let input = self.input.clone();
        let id = item.id.clone();
        let body = item.body.clone();
        let task = tokio::spawn(async move {
            let payload = H::Input::decode(body, input.as_ref())
                .await
                .map_err(|e| Failure::from_handler(ErrorCategory::Input, e))?;
            let output = handler
                .call(Item { id, payload }, ctx)
                .await
                .map_err(|e| Failure::from_handler(ErrorCategory::Handler, e))?;
            output
                .into_blob()
                .map_err(|e| Failure::from_handler(ErrorCategory::Handler, e))
        });
        let blob = join_within(task, &deadline, timeout, &cancel, stop).await??;
        self.store(&item.id, blob, deadline.at().0, timeout).await
    }

    /// Stores an item's output (if any) by the attempt's deadline.
    async fn store(
        &self,
        item: &str,
        blob: Option<Blob>,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<Success, Failure> {
        let Some(blob) = blob else {
            return Ok(Success {
                output_key: None,
                output: None,
            });
        };
        let Some(store) = &self.output else {
            return Ok(Success {
                output_key: None,
                output: Some(blob),
            });
        };
        let key = output_key(item, &blob.extension);
        let put = store.put(&key, blob.bytes.clone(), &blob.content_type);
        match tokio::time::timeout_at(deadline.into(), put).await {
            Err(_) => Err(timed_out(timeout)),
            Ok(Err(e)) => Err(Failure::from_handler(ErrorCategory::Output, e.into())),
            Ok(Ok(())) => Ok(Success {
                output_key: Some(key),
                output: Some(blob),
            }),
        }
    }

    /// Runs `item` to a final outcome: retryable failures are retried with
    /// backoff (no slot is held while waiting) until the policy's attempts
    /// run out; a permanent failure ends it at once. After [`Engine::drain`]
    /// no attempt starts (not even a first one still waiting for a slot) and
    /// the item is reported [`Outcome::Abandoned`].
    pub async fn process(&self, item: &RawItem) -> ItemReport {
        let policy = self.config.retry;
        let mut durations = Vec::with_capacity(1);
        let mut attempt = 1;
        loop {
            let Some(record) = self.attempt_unless_draining(item, attempt, None).await else {
                return ItemReport {
                    id: item.id.clone(),
                    attempts: attempt - 1,
                    durations,
                    outcome: Outcome::Abandoned,
                };
            };
            durations.push(record.duration);
            let outcome = match record.result {
                Ok(success) => Outcome::Succeeded {
                    output_key: success.output_key,
                },
                Err(failure) if failure.kind == ErrorKind::Permanent => Outcome::DeadLettered {
                    cause: DeadLetterCause::Permanent,
                    failure,
                },
                Err(failure) if !policy.allows_retry_after(attempt) => Outcome::DeadLettered {
                    cause: DeadLetterCause::Exhausted,
                    failure,
                },
                Err(_) => {
                    let delay = policy.backoff(attempt);
                    let waited = tokio::select! {
                        () = tokio::time::sleep(delay) => true,
                        () = self.draining.cancelled() => false,
                    };
                    if waited {
                        self.metrics.retries.inc();
                        attempt += 1;
                        continue;
                    }
                    Outcome::Abandoned
                }
            };
            return ItemReport {
                id: item.id.clone(),
                attempts: attempt,
                durations,
                outcome,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::request_id;

    #[test]
    fn request_ids_are_distinct_version_4_uuids() {
        let a = uuid::Uuid::parse_str(&request_id()).unwrap();
        let b = uuid::Uuid::parse_str(&request_id()).unwrap();
        assert_eq!(a.get_version_num(), 4);
        assert_eq!(a.get_variant(), uuid::Variant::RFC4122);
        assert_ne!(a, b);
    }
}
