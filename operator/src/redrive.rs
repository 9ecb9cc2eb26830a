//! Redrive: a job's dead letters moved back to its work queue after a fix,
//! once per new `spec.redrive` value (recorded in `status.redrive`).
//!
//! Contract:
//! - At least once, never lost: each message is sent to the work queue
//!   (and confirmed) before it is deleted from the dead-letter queue. A
//!   crash in between leaves a copy in both; the copy moved again gets the
//!   same FIFO deduplication id (`<message id>-redrive-<round>`), so a FIFO
//!   work queue drops it within SQS's five minutes.
//! - What moves: the body, `shoal.pending` (items that succeeded are not
//!   redone) and attributes that are not shoal's; what only a dead letter
//!   carries (`shoal.attempts`, the reason, the cause...) and the broker's
//!   own bookkeeping (`x-death`, `x-delivery-count`) are dropped, so each
//!   item gets its full attempts again.
//! - SQS moves with ReceiveMessage, SendMessageBatch and DeleteMessageBatch
//!   on every server (AWS, ElasticMQ, moto): SQS's own
//!   `StartMessageMoveTask` keeps every attribute, so a redriven item would
//!   count the attempts of its dead letter, and it runs asynchronously with
//!   no way to say which messages it moved. RabbitMQ moves with `basic.get`,
//!   a confirmed publish to the default exchange and `basic.ack`.
//! - One page ([`PAGE`] messages at most) per reconcile; the redrive is done
//!   when the dead-letter queue answers empty (a long poll on SQS, so an
//!   empty answer is not a sampled one).

use std::collections::HashMap;

use aws_sdk_sqs::types::{
    DeleteMessageBatchRequestEntry, MessageSystemAttributeName, SendMessageBatchRequestEntry,
};
use shoal_worker::queue::headers::DEAD_LETTER_ONLY;

use crate::crd::{BatchJob, BatchJobStatus};
use crate::error::{Error, Result};
use crate::sqs::Sqs;

/// Most messages moved in one reconcile.
pub const PAGE: usize = 1000;

/// The `spec.redrive` round `job` asks for that `status` has not finished.
pub fn pending(job: &BatchJob, status: &BatchJobStatus) -> Option<i64> {
    let asked = job.spec.redrive?;
    match &status.redrive {
        Some(done) if done.round == asked && done.done => None,
        _ => Some(asked),
    }
}

/// Whether a message attribute or header named `name` moves with a
/// redriven message.
pub fn keeps(name: &str) -> bool {
    !DEAD_LETTER_ONLY.contains(&name)
        && !name.starts_with("x-death")
        && !name.starts_with("x-first-death")
        && !name.starts_with("x-last-death")
        && name != "x-delivery-count"
}

/// The FIFO deduplication id of a message moved in `round`: the same when
/// the same dead letter is moved again after a crash.
pub fn dedup_id(message_id: &str, round: i64) -> String {
    let suffix = format!("-redrive-{round}");
    let room = 128usize.saturating_sub(suffix.len());
    let mut id: String = message_id
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(room)
        .collect();
    id.push_str(&suffix);
    id
}

impl Sqs {
    /// Moves up to `limit` messages from the dead-letter queue `from` to
    /// the work queue `to` for redrive `round`; returns how many moved and
    /// whether `from` is now empty.
    pub async fn redrive(
        &self,
        from: &str,
        to: &str,
        round: i64,
        limit: usize,
    ) -> Result<(usize, bool)> {
        let fail = |what: &'static str, queue: &str| {
            let queue = queue.to_owned();
            move |e: String| Error::Queue {
                queue,
                what,
                reason: e,
            }
        };
        let fifo = to.ends_with(".fifo");
        let mut moved = 0;
        while moved < limit {
            let got = self
                .client
                .receive_message()
                .queue_url(from)
                .max_number_of_messages(10)
                .wait_time_seconds(1)
                .visibility_timeout(60)
                .message_attribute_names("All")
                .message_system_attribute_names(MessageSystemAttributeName::MessageGroupId)
                .send()
                .await
                .map_err(|e| aws_sdk_sqs::error::DisplayErrorContext(e).to_string())
                .map_err(fail("receiving dead letters to redrive", from))?;
            let messages = got.messages();
            if messages.is_empty() {
                return Ok((moved, true));
            }
            let mut sends = Vec::with_capacity(messages.len());
            let mut deletes = Vec::with_capacity(messages.len());
            for (i, message) in messages.iter().enumerate() {
                let id = message.message_id().unwrap_or_default();
                let attributes: HashMap<_, _> = message
                    .message_attributes()
                    .into_iter()
                    .flatten()
                    .filter(|(name, _)| keeps(name))
                    .map(|(name, value)| (name.clone(), value.clone()))
                    .collect();
                let mut entry = SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(message.body().unwrap_or_default())
                    .set_message_attributes((!attributes.is_empty()).then_some(attributes));
                if fifo {
                    let group = message
                        .attributes()
                        .and_then(|a| a.get(&MessageSystemAttributeName::MessageGroupId))
                        .cloned()
                        .unwrap_or_else(|| id.to_owned());
                    entry = entry
                        .message_group_id(group)
                        .message_deduplication_id(dedup_id(id, round));
                }
                sends.push(
                    entry
                        .build()
                        .map_err(|e| e.to_string())
                        .map_err(fail("redriving", to))?,
                );
                deletes.push(
                    DeleteMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(message.receipt_handle().unwrap_or_default())
                        .build()
                        .map_err(|e| e.to_string())
                        .map_err(fail("redriving", from))?,
                );
            }
            let sent = self
                .client
                .send_message_batch()
                .queue_url(to)
                .set_entries(Some(sends))
                .send()
                .await
                .map_err(|e| aws_sdk_sqs::error::DisplayErrorContext(e).to_string())
                .map_err(fail("redriving dead letters", to))?;
            if let Some(refused) = sent.failed().first() {
                // Nothing of this batch is deleted: the dead letters come
                // back after their visibility timeout and move next time.
                return Err(Error::Queue {
                    queue: to.to_owned(),
                    what: "redriving dead letters",
                    reason: format!(
                        "{} ({})",
                        refused.message().unwrap_or_default(),
                        refused.code()
                    ),
                });
            }
            let count = deletes.len();
            let deleted = self
                .client
                .delete_message_batch()
                .queue_url(from)
                .set_entries(Some(deletes))
                .send()
                .await
                .map_err(|e| aws_sdk_sqs::error::DisplayErrorContext(e).to_string())
                .map_err(fail("deleting redriven dead letters", from))?;
            if let Some(refused) = deleted.failed().first() {
                return Err(Error::Queue {
                    queue: from.to_owned(),
                    what: "deleting redriven dead letters",
                    reason: format!(
                        "{} ({}); the message is on the work queue and may run twice",
                        refused.message().unwrap_or_default(),
                        refused.code()
                    ),
                });
            }
            moved += count;
        }
        Ok((moved, false))
    }

    /// The dead-letter queue of the queue at `url`, from its redrive
    /// policy; `None` when it has none.
    pub async fn dead_letter_of(&self, url: &str) -> Result<Option<String>> {
        let fail = |what: &'static str| {
            let queue = url.to_owned();
            move |e: String| Error::Queue {
                queue,
                what,
                reason: e,
            }
        };
        let answer = self
            .client
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::RedrivePolicy)
            .send()
            .await
            .map_err(|e| aws_sdk_sqs::error::DisplayErrorContext(e).to_string())
            .map_err(fail("reading the redrive policy"))?;
        let Some(policy) = answer
            .attributes()
            .and_then(|a| a.get(&aws_sdk_sqs::types::QueueAttributeName::RedrivePolicy))
        else {
            return Ok(None);
        };
        let Some(name) = dead_letter_name(policy) else {
            return Err(fail("reading the redrive policy")(format!(
                "no deadLetterTargetArn in {policy}"
            )));
        };
        let found = self
            .client
            .get_queue_url()
            .queue_name(&name)
            .send()
            .await
            .map_err(|e| aws_sdk_sqs::error::DisplayErrorContext(e).to_string())
            .map_err(fail("finding the dead-letter queue"))?;
        Ok(found.queue_url().map(str::to_owned))
    }
}

/// Asks for a new redrive of BatchJob `namespace/name`: sets
/// `spec.redrive` one above anything it or `status.redrive` holds, with
/// the job's resourceVersion as a precondition (two requests at once do not
/// merge into one). Returns the round asked for.
pub async fn request(client: kube::Client, namespace: &str, name: &str) -> Result<i64> {
    use kube::api::{Api, Patch, PatchParams};
    let api: Api<BatchJob> = Api::namespaced(client, namespace);
    let job = api
        .get(name)
        .await
        .map_err(Error::kube(format!("reading batchjob {namespace}/{name}")))?;
    let last = job
        .status
        .as_ref()
        .and_then(|s| s.redrive.as_ref())
        .map(|r| r.round);
    let round = job.spec.redrive.max(last).unwrap_or(0).saturating_add(1);
    let patch = serde_json::json!({
        "metadata": {"resourceVersion": job.metadata.resource_version},
        "spec": {"redrive": round},
    });
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(Error::kube(format!(
            "asking batchjob {namespace}/{name} for redrive {round}"
        )))?;
    Ok(round)
}

/// Waits until BatchJob `namespace/name` has finished redrive `round`;
/// returns how many dead letters it moved.
pub async fn wait(
    client: kube::Client,
    namespace: &str,
    name: &str,
    round: i64,
    limit: std::time::Duration,
) -> Result<i64> {
    let api: kube::Api<BatchJob> = kube::Api::namespaced(client, namespace);
    let started = std::time::Instant::now();
    loop {
        let job = api
            .get(name)
            .await
            .map_err(Error::kube(format!("reading batchjob {namespace}/{name}")))?;
        if let Some(done) = job
            .status
            .and_then(|s| s.redrive)
            .filter(|r| r.round == round && r.done)
        {
            return Ok(done.moved);
        }
        if started.elapsed() >= limit {
            return Err(Error::Invalid(format!(
                "batchjob {namespace}/{name} has not finished redrive {round} within {limit:?} (is the operator running?)"
            )));
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

/// The queue name in a redrive policy's `deadLetterTargetArn`.
fn dead_letter_name(policy: &str) -> Option<String> {
    let policy: serde_json::Value = serde_json::from_str(policy).ok()?;
    let arn = policy.get("deadLetterTargetArn")?.as_str()?;
    arn.rsplit(':')
        .next()
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::panic,
        reason = "test code: a panic is how a test reports failure"
    )]

    use super::*;
    use crate::crd::RedriveStatus;

    fn job(redrive: Option<i64>) -> BatchJob {
        let mut job: BatchJob = serde_json::from_value(serde_json::json!({
            "apiVersion": "shoal.dev/v1alpha1",
            "kind": "BatchJob",
            "metadata": {"name": "j"},
            "spec": {"handler": {"image": "i"}, "source": {"sqs": {"queueUrl": "http://q"}}},
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        job.spec.redrive = redrive;
        job
    }

    fn status(round: i64, done: bool) -> BatchJobStatus {
        BatchJobStatus {
            redrive: Some(RedriveStatus {
                round,
                moved: 3,
                done,
            }),
            ..BatchJobStatus::default()
        }
    }

    #[test]
    fn each_new_value_redrives_once() {
        assert_eq!(pending(&job(None), &BatchJobStatus::default()), None);
        assert_eq!(pending(&job(Some(1)), &BatchJobStatus::default()), Some(1));
        assert_eq!(
            pending(&job(Some(1)), &status(1, false)),
            Some(1),
            "going on"
        );
        assert_eq!(pending(&job(Some(1)), &status(1, true)), None, "done once");
        assert_eq!(pending(&job(Some(2)), &status(1, true)), Some(2));
        // Any other value is a new request, even a smaller one.
        assert_eq!(pending(&job(Some(0)), &status(1, true)), Some(0));
    }

    #[test]
    fn dead_letter_bookkeeping_is_dropped_and_the_rest_kept() {
        for dropped in [
            "shoal.attempts",
            "shoal.reason",
            "shoal.cause",
            "shoal.category",
            "shoal.source-queue",
            "shoal.source-message-id",
            "x-death",
            "x-first-death-reason",
            "x-last-death-queue",
            "x-delivery-count",
        ] {
            assert!(!keeps(dropped), "{dropped}");
        }
        for kept in ["shoal.pending", "tenant", "traceparent"] {
            assert!(keeps(kept), "{kept}");
        }
    }

    #[test]
    fn dedup_ids_are_stable_per_round_and_within_sqs_limits() {
        let id = "0b3f5f4e-1c1d-4a1e-9c59-1d2f5e0c9a11";
        assert_eq!(dedup_id(id, 2), dedup_id(id, 2));
        assert_ne!(dedup_id(id, 2), dedup_id(id, 3));
        let long = "x".repeat(300);
        assert_eq!(dedup_id(&long, 7).len(), 128);
        assert_eq!(dedup_id("a b\u{e9}", 1), "ab-redrive-1");
    }

    #[test]
    fn the_dead_letter_queue_name_comes_from_the_redrive_policy() {
        let policy =
            r#"{"deadLetterTargetArn":"arn:aws:sqs:eu-west-1:1:jobs-dlq","maxReceiveCount":"5"}"#;
        assert_eq!(dead_letter_name(policy).as_deref(), Some("jobs-dlq"));
        assert_eq!(dead_letter_name("{}"), None);
        assert_eq!(dead_letter_name("not json"), None);
    }
}
