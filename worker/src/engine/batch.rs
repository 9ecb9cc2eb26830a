//! One invocation over several items ([`Batching::Records`]): the same
//! rules as a single attempt (own task, deadline, concurrency slot, one
//! START/END/REPORT, metrics), with a result per item.
//!
//! [`Batching::Records`]: crate::handler::Batching::Records

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::{Engine, Failure, Success, cancelled, join_within, request_id};
use crate::handler::{ErrorKind, Handler, Item, Record};
use crate::message::{ItemBody, RawItem};
use crate::metrics::ErrorCategory;
use crate::payload::{Blob, Output, Payload};
use crate::platform;

/// One item of a batch, with what its message says about it.
#[derive(Debug, Clone, Copy)]
pub struct BatchItem<'a> {
    /// The item.
    pub item: &'a RawItem,
    /// Its attempt number.
    pub attempt: u32,
    /// When its message was sent, if known.
    pub sent_at: Option<SystemTime>,
}

/// The record of one batch invocation.
#[derive(Debug, Clone)]
pub struct BatchAttempt {
    /// The invocation's request id.
    pub request_id: String,
    /// Wall time of the invocation, slot wait excluded.
    pub duration: Duration,
    /// Whether the handler was called (false when no item decoded: no
    /// invocation happened, and none was logged or counted).
    pub invoked: bool,
    /// One result per item, in the batch's order.
    pub results: Vec<Result<Success, Failure>>,
}

type Results = Vec<Option<Result<Option<Blob>, Failure>>>;

impl<H: Handler> Engine<H> {
    /// Runs `batch` as one invocation of [`Handler::call_batch`], unless
    /// the engine drains, or `cancel` is cancelled, before a concurrency
    /// slot frees up (`None`: nothing started). Items whose payload does
    /// not decode fail on their own (category `input`) and are left out of
    /// the call, which is not made (nor logged) when none is left; a
    /// timeout, a panic or `cancel` fails every item of the call. The
    /// context's attempt number is the batch's highest.
    pub async fn attempt_batch(
        &self,
        batch: &[BatchItem<'_>],
        cancel: Option<&CancellationToken>,
    ) -> Option<BatchAttempt> {
        let running = tokio::select! {
            biased;
            () = self.draining.cancelled() => return None,
            () = cancelled(cancel) => return None,
            running = self.acquire() => running,
        };
        let attempt = batch.iter().map(|b| b.attempt).max().unwrap_or(1);
        let timeout = self.config.timeout;
        let request_id = request_id();
        let ctx = self.context(&request_id, attempt, timeout, running.permit.clone());
        let measured = ctx.measured();
        let deadline = ctx.deadline_handle();
        let token = ctx.cancellation().clone();
        let started = Instant::now();
        let invoked = Arc::new(AtomicBool::new(false));
        let inputs: Vec<(String, ItemBody, u32, Option<SystemTime>)> = batch
            .iter()
            .map(|b| (b.item.id.clone(), b.item.body.clone(), b.attempt, b.sent_at))
            .collect();
        let handler = self.handler.clone();
        let input = self.input.clone();
        let called = invoked.clone();
        let start_line = self
            .config
            .invocation_logs
            .start_and_end()
            .then(|| platform::start_line(&request_id));
        let task = tokio::spawn(async move {
            let mut results: Results = vec![None; inputs.len()];
            let mut indices = Vec::with_capacity(inputs.len());
            let mut records = Vec::with_capacity(inputs.len());
            for (index, (id, body, attempt, sent_at)) in inputs.into_iter().enumerate() {
                match H::Input::decode(body, input.as_ref()).await {
                    Ok(payload) => {
                        indices.push(index);
                        records.push(Record {
                            item: Item { id, payload },
                            attempt,
                            sent_at,
                        });
                    }
                    Err(e) => {
                        results[index] = Some(Err(Failure::from_handler(ErrorCategory::Input, e)));
                    }
                }
            }
            if records.is_empty() {
                return results;
            }
            called.store(true, Ordering::Relaxed);
            if let Some(line) = start_line {
                info!(target: platform::TARGET, "{line}");
            }
            let mut answers = handler.call_batch(records, ctx).await.into_iter();
            for index in indices {
                results[index] = Some(match answers.next() {
                    Some(Ok(output)) => output
                        .into_blob()
                        .map_err(|e| Failure::from_handler(ErrorCategory::Handler, e)),
                    Some(Err(e)) => Err(Failure::from_handler(ErrorCategory::Handler, e)),
                    None => Err(Failure {
                        category: ErrorCategory::Handler,
                        kind: ErrorKind::Retryable,
                        reason: "the batch handler gave no result for this item".into(),
                    }),
                });
            }
            results
        });
        let joined = join_within(task, &deadline, timeout, &token, cancel).await;
        let deadline = deadline.at().0;
        let mut results = Vec::with_capacity(batch.len());
        match joined {
            Err(failure) => results.resize(batch.len(), Err(failure)),
            Ok(answers) => {
                for (b, answer) in batch.iter().zip(answers) {
                    results.push(match answer {
                        Some(Ok(blob)) => self.store(&b.item.id, blob, deadline, timeout).await,
                        Some(Err(failure)) => Err(failure),
                        // Every index is filled unless the task ended early,
                        // which `join_within` reports instead.
                        None => Err(Failure {
                            category: ErrorCategory::Handler,
                            kind: ErrorKind::Retryable,
                            reason: "the invocation ended before this item".into(),
                        }),
                    });
                }
            }
        }
        // A hosted function's init phase is reported apart, as Lambda does.
        let duration = started
            .elapsed()
            .saturating_sub(measured.init_duration().unwrap_or_default());
        let invoked = invoked.load(Ordering::Relaxed);
        if invoked {
            self.log_end(&request_id, duration, &measured);
            // Lambda counts an invocation whose function answered (a
            // partial batch response included) as a success, one with no
            // answer for any item as an error.
            if results.iter().any(Result::is_ok) {
                self.metrics.invocations_succeeded.inc();
            } else {
                self.metrics.invocations_failed.inc();
            }
        }
        for (b, result) in batch.iter().zip(&results) {
            match result {
                Ok(_) => {
                    debug!(item = %b.item.id, attempt = b.attempt, request_id, "item succeeded")
                }
                Err(failure) => self.count_failure(&b.item.id, b.attempt, &request_id, failure),
            }
        }
        Some(BatchAttempt {
            request_id,
            duration,
            invoked,
            results,
        })
    }
}
