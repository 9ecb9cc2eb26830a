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
    ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry,
    MessageAttributeValue, MessageSystemAttributeName, SendMessageBatchRequestEntry,
};
use shoal_protocol::headers::DEAD_LETTER_ONLY;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::crd::{BatchJob, BatchJobStatus, RedriveStatus};
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

/// Shortest time a job whose redrive moved messages is kept from
/// finishing on its counts (see [`settling`]).
pub const SETTLE: std::time::Duration = std::time::Duration::from_secs(10);

/// The redrive status after a page of `moved` messages in `round`, the
/// queue found empty when `done`, from the `previous` one.
pub fn advance(
    previous: Option<&RedriveStatus>,
    round: i64,
    moved: usize,
    done: bool,
    now: Timestamp,
) -> RedriveStatus {
    let before = previous.filter(|r| r.round == round).map_or(0, |r| r.moved);
    RedriveStatus {
        round,
        moved: before.saturating_add(i64::try_from(moved).unwrap_or(i64::MAX)),
        done,
        completion_time: done.then_some(Time(now)),
    }
}

/// Whether a redrive that moved messages ended so recently that queue
/// counts (which lag by up to `lag`, and by more on AWS) may not show them:
/// for twice the lag and at least [`SETTLE`], the job is not finished from
/// its counts.
pub fn settling(redrive: Option<&RedriveStatus>, now: Timestamp, lag: std::time::Duration) -> bool {
    let Some(ended) = redrive
        .filter(|r| r.done && r.moved > 0)
        .and_then(|r| r.completion_time.as_ref())
    else {
        return false;
    };
    let since = std::time::Duration::try_from(now.duration_since(ended.0)).unwrap_or_default();
    since < lag.saturating_mul(2).max(SETTLE)
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
                .map_err(Self::error(from, "receiving dead letters to redrive"))?;
            let messages = got.messages();
            if messages.is_empty() {
                // Empty for receiving; done only when no dead letter is
                // held either (one a failed earlier move left invisible
                // comes back and moves next time).
                let held = self.backlog(from).await?.map_or(0, |b| b.in_flight);
                return Ok((moved, held == 0));
            }
            let mut sends = Vec::with_capacity(messages.len());
            let mut deletes = Vec::with_capacity(messages.len());
            for (i, message) in messages.iter().enumerate() {
                let id = message.message_id().unwrap_or_default();
                // Each value built afresh from its type and value: copied
                // whole, the empty list fields a receive returns are sent
                // too, and ElasticMQ then fails every receive that asks
                // for attributes of that message.
                let attributes: HashMap<_, _> = message
                    .message_attributes()
                    .into_iter()
                    .flatten()
                    .filter(|(name, _)| keeps(name))
                    .filter_map(|(name, value)| {
                        MessageAttributeValue::builder()
                            .data_type(value.data_type())
                            .set_string_value(value.string_value().map(str::to_owned))
                            .set_binary_value(value.binary_value().cloned())
                            .build()
                            .ok()
                            .map(|value| (name.clone(), value))
                    })
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
                        .map_err(Self::error(to, "redriving"))?,
                );
                deletes.push((i.to_string(), message.receipt_handle().unwrap_or_default()));
            }
            let sent = self
                .client
                .send_message_batch()
                .queue_url(to)
                .set_entries(Some(sends))
                .send()
                .await
                .map_err(|e| aws_sdk_sqs::error::DisplayErrorContext(e).to_string())
                .map_err(Self::error(to, "redriving dead letters"))?;
            // Only what the work queue took leaves the dead-letter queue; the
            // rest is made visible again and moves next time.
            let refused: Vec<&str> = sent.failed().iter().map(|f| f.id()).collect();
            let (kept, taken): (Vec<_>, Vec<_>) = deletes
                .into_iter()
                .partition(|(id, _)| refused.contains(&id.as_str()));
            let count = taken.len();
            if !kept.is_empty() {
                let release = kept
                    .iter()
                    .map(|(id, handle)| {
                        ChangeMessageVisibilityBatchRequestEntry::builder()
                            .id(id)
                            .receipt_handle(*handle)
                            .visibility_timeout(0)
                            .build()
                    })
                    .collect::<std::result::Result<Vec<_>, _>>()
                    .map_err(|e| e.to_string())
                    .map_err(Self::error(from, "releasing dead letters not redriven"))?;
                let _ = self
                    .client
                    .change_message_visibility_batch()
                    .queue_url(from)
                    .set_entries(Some(release))
                    .send()
                    .await;
            }
            let entries = taken
                .iter()
                .map(|(id, handle)| {
                    DeleteMessageBatchRequestEntry::builder()
                        .id(id)
                        .receipt_handle(*handle)
                        .build()
                })
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| e.to_string())
                .map_err(Self::error(from, "deleting redriven dead letters"))?;
            if entries.is_empty() {
                return Err(Self::error(to, "redriving dead letters")(refusal(&sent)));
            }
            let deleted = self
                .client
                .delete_message_batch()
                .queue_url(from)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| aws_sdk_sqs::error::DisplayErrorContext(e).to_string())
                .map_err(Self::error(from, "deleting redriven dead letters"))?;
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
            if !kept.is_empty() {
                return Err(Self::error(to, "redriving dead letters")(refusal(&sent)));
            }
        }
        Ok((moved, false))
    }
}

/// The first refusal of a send, in SQS's words.
fn refusal(sent: &aws_sdk_sqs::operation::send_message_batch::SendMessageBatchOutput) -> String {
    sent.failed().first().map_or_else(String::new, |f| {
        format!("{} ({})", f.message().unwrap_or_default(), f.code())
    })
}

/// Asks for a new redrive of BatchJob `namespace/name`: sets
/// `spec.redrive` one above anything it or `status.redrive` holds, with
/// the job's resourceVersion as a precondition (two requests at once do not
/// merge into one). Returns the round asked for.
pub async fn request(client: kube::Client, namespace: &str, name: &str) -> Result<i64> {
    use kube::api::{Api, Patch, PatchParams};
    let api: Api<BatchJob> = Api::namespaced(client, namespace);
    // The operator writes the job's status every second or so, and each
    // write moves its resourceVersion: a conflict is retried with a fresh
    // read, a few times.
    let mut conflicts = 0;
    loop {
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
        match api
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => return Ok(round),
            Err(kube::Error::Api(status)) if status.code == 409 && conflicts < 5 => {
                conflicts += 1;
            }
            Err(e) => {
                return Err(Error::Kube {
                    what: format!("asking batchjob {namespace}/{name} for redrive {round}"),
                    source: e,
                });
            }
        }
    }
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
            .filter(|r| r.round >= round && r.done)
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

#[cfg(test)]
mod tests {
    #![allow(
        clippy::panic,
        reason = "test code: a panic is how a test reports failure"
    )]

    use super::*;

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
                completion_time: None,
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
    fn a_job_that_just_got_its_dead_letters_back_does_not_finish_on_old_counts() {
        let t0 = Timestamp::UNIX_EPOCH;
        let at = |s: i64| t0 + k8s_openapi::jiff::SignedDuration::from_secs(s);
        let lag = std::time::Duration::from_secs(10);
        let first = advance(None, 1, 1000, false, t0);
        assert_eq!(
            (first.moved, first.done, first.completion_time.is_none()),
            (1000, false, true)
        );
        let done = advance(Some(&first), 1, 5, true, at(1));
        assert_eq!((done.moved, done.done), (1005, true));
        assert!(settling(Some(&done), at(1), lag));
        assert!(settling(Some(&done), at(20), lag), "twice the lag");
        assert!(!settling(Some(&done), at(21), lag));
        // SQS counts have no known lag: still a few seconds.
        assert!(settling(Some(&done), at(10), std::time::Duration::ZERO));
        assert!(!settling(Some(&done), at(12), std::time::Duration::ZERO));
        // Nothing moved: nothing to wait for.
        let none = advance(None, 2, 0, true, t0);
        assert!(!settling(Some(&none), t0, lag));
        // A new round starts its count afresh.
        assert_eq!(advance(Some(&done), 2, 3, false, t0).moved, 3);
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
}
