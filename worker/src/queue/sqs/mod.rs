//! Amazon SQS (or any server speaking its protocol) as a [`Transport`].
//!
//! - Long polling, up to 10 messages per receive, with the receive count,
//!   send time and shoal's message attributes.
//! - Deletes are batched: concurrent deletes are gathered into
//!   `DeleteMessageBatch` calls of up to 10 entries.
//! - Leases are extended and released with `ChangeMessageVisibility`.
//! - The dead-letter queue is the one the queue's redrive policy names
//!   (or `--dead-letter-queue`); its `maxReceiveCount` is the attempt limit.
//!   Start-up reads the queue's attributes and nothing else before the
//!   first receive: the dead-letter queue's URL is looked up once that
//!   receive has its answer ([`dead_letter_queue`]), so the two never
//!   share the server.
//!
//! - FIFO queues (`.fifo`) work too: copies the runner sends keep the
//!   message's group and carry a deduplication id derived from the message
//!   id and its receive count, so a worker that crashes after sending a
//!   copy and is handed the message again sends no second copy. SQS FIFO
//!   queues take no per-message delay, so a partly finished message's
//!   remaining items are retried at once there; whole-message retries keep
//!   their backoff (they go through the visibility timeout).
//!
//! shoal's message attributes: `shoal.pending` (comma-separated item
//! indices still to do) and `shoal.attempts` on re-sent copies;
//! `shoal.reason`, `shoal.cause`, `shoal.category`, `shoal.attempts`,
//! `shoal.source-queue`, `shoal.source-message-id` (and `shoal.pending` for
//! part of a chunk) on dead letters.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, UNIX_EPOCH};

use async_trait::async_trait;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::{BuildError, DisplayErrorContext};
use aws_sdk_sqs::operation::receive_message::builders::ReceiveMessageFluentBuilder;
use aws_sdk_sqs::types::{MessageAttributeValue, MessageSystemAttributeName, QueueAttributeName};
use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::MAX_BATCH;
use super::headers::{
    ATTEMPTS, CATEGORY, CAUSE, PENDING, REASON, SOURCE_MESSAGE_ID, SOURCE_QUEUE, decode_indices,
    encode_indices, fitted_letter,
};
use super::transport::{DeadLetter, Delivery, Transport, TransportError};
use crate::error::{Error, Result};

mod dead_letter_queue;
mod deletes;
mod startup;
use dead_letter_queue::DeadLetterQueue;
use deletes::delete_batcher;
use startup::{QueueSettings, settings};

/// SQS's limits: a message (body and attributes), a delay, a visibility
/// timeout.
const MAX_MESSAGE_BYTES: usize = 256 * 1024;
const MAX_DELAY_S: u64 = 900;
const MAX_VISIBILITY_S: u64 = 12 * 60 * 60;

/// Longest a finished message waits for others to share its delete call.
pub const DELETE_LINGER: Duration = Duration::from_millis(5);

/// How to consume a queue.
#[derive(Debug, Clone)]
pub struct SqsOptions {
    /// The queue's URL.
    pub queue_url: String,
    /// Dead-letter queue URL [default: the redrive policy's target].
    pub dead_letter_queue: Option<String>,
    /// Lease per receive [default: the queue's visibility timeout].
    pub visibility: Option<Duration>,
    /// Long-poll wait per receive (0-20 s).
    pub wait_time: Duration,
    /// Attempt limit when the queue has no redrive policy.
    pub max_attempts: u32,
}

type DeleteRequest = (String, oneshot::Sender<Result<(), TransportError>>);

/// An SQS queue, its dead-letter queue and a delete batcher.
#[derive(Debug)]
pub struct SqsQueue {
    client: Client,
    url: String,
    name: String,
    fifo: bool,
    dead_letter: DeadLetterQueue,
    visibility: Duration,
    visibility_override: bool,
    wait_time_s: i32,
    max_attempts: u32,
    deletes: mpsc::UnboundedSender<DeleteRequest>,
    /// Shared by every delivery (see [`Delivery::revoked`]).
    never_revoked: CancellationToken,
    /// Whether the dead-letter queue's URL lookup has started (at the
    /// first receive's answer).
    dead_letter_lookup_started: AtomicBool,
}

fn sdk_error<E>(operation: &'static str, queue: &str, err: E) -> TransportError
where
    E: std::error::Error + Send + Sync + 'static,
{
    TransportError {
        operation,
        queue: queue.to_owned(),
        source: DisplayErrorContext(err).to_string().into(),
    }
}

fn seconds_up(d: Duration, max: u64) -> i32 {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    i32::try_from(secs.min(max)).unwrap_or(i32::MAX)
}

/// Message attributes from `(name, data type, value)` triples.
fn attributes(
    entries: &[(&str, &str, String)],
) -> std::result::Result<HashMap<String, MessageAttributeValue>, BuildError> {
    entries
        .iter()
        .map(|(name, data_type, value)| {
            let value = MessageAttributeValue::builder()
                .data_type(*data_type)
                .string_value(value.clone())
                .build()?;
            Ok(((*name).to_owned(), value))
        })
        .collect()
}

/// A receive of up to `max` messages asking for the attributes
/// [`SqsQueue::delivery`] reads and nothing else: the server sends, and
/// the client parses, no more.
fn receive_call(
    client: &Client,
    url: &str,
    max: usize,
    wait_s: i32,
    visibility_s: Option<i32>,
) -> ReceiveMessageFluentBuilder {
    client
        .receive_message()
        .queue_url(url)
        .max_number_of_messages(i32::try_from(max.clamp(1, MAX_BATCH)).unwrap_or(1))
        .wait_time_seconds(wait_s)
        .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
        .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
        .message_system_attribute_names(MessageSystemAttributeName::MessageGroupId)
        .message_attribute_names(PENDING)
        .message_attribute_names(ATTEMPTS)
        .set_visibility_timeout(visibility_s)
}

impl SqsQueue {
    /// Looks the queue up (visibility timeout, redrive policy) and starts
    /// the delete batcher. Fails with a clear message when the queue does
    /// not exist or has nowhere to dead-letter to.
    ///
    /// The dead-letter queue's URL is not waited for: it is looked up in
    /// the background ([`dead_letter_queue`]) once the first receive has
    /// its answer, so that receive follows the one call start-up needs and
    /// has the server to itself.
    pub async fn connect(client: Client, options: SqsOptions) -> Result<Self> {
        let url = options.queue_url.clone();
        let name = queue_name(&url).to_owned();
        let fail = |reason: String| Error::Queue {
            queue: url.clone(),
            reason,
        };
        let fifo = is_fifo(&url);
        // Nothing is received before the queue is accepted: a receive
        // counts against the redrive policy's maxReceiveCount even when
        // the message is given back, so a worker refused over and over
        // would push messages into the dead-letter queue unprocessed.
        let attributes = client
            .get_queue_attributes()
            .queue_url(&url)
            // The two start-up reads, not `All` (which has the server count
            // the queue's messages for nothing).
            .attribute_names(QueueAttributeName::VisibilityTimeout)
            .attribute_names(QueueAttributeName::RedrivePolicy)
            .send()
            .await
            .map_err(|e| {
                fail(format!(
                    "cannot read its attributes: {}",
                    DisplayErrorContext(e)
                ))
            })?;
        let QueueSettings {
            visibility,
            max_attempts,
            dead_letter,
        } = settings(
            &options,
            fifo,
            attributes.attributes().unwrap_or(&HashMap::new()),
        )
        .map_err(fail)?;
        let (deletes, requests) = mpsc::unbounded_channel();
        tokio::spawn(delete_batcher(client.clone(), url.clone(), requests));
        info!(
            queue = %url,
            dead_letter_queue = %dead_letter.name,
            visibility_s = visibility.as_secs_f64(),
            max_attempts,
            fifo,
            "queue connected"
        );
        Ok(Self {
            client,
            name,
            url,
            fifo,
            dead_letter,
            visibility,
            visibility_override: options.visibility.is_some(),
            wait_time_s: seconds_up(options.wait_time, 20),
            max_attempts,
            deletes,
            never_revoked: CancellationToken::new(),
            dead_letter_lookup_started: AtomicBool::new(false),
        })
    }

    fn delivery(&self, message: &aws_sdk_sqs::types::Message) -> Option<Delivery> {
        let (Some(message_id), Some(receipt)) = (message.message_id(), message.receipt_handle())
        else {
            warn!(queue = %self.name, "message without id or receipt handle ignored");
            return None;
        };
        let system = message.attributes();
        let system_value = |name: &MessageSystemAttributeName| {
            system.and_then(|attrs| attrs.get(name)).map(String::as_str)
        };
        let receive_count = system_value(&MessageSystemAttributeName::ApproximateReceiveCount)
            .and_then(|v| v.parse().ok())
            .unwrap_or(1);
        let sent_at = system_value(&MessageSystemAttributeName::SentTimestamp)
            .and_then(|v| v.parse::<u64>().ok())
            .map(|ms| UNIX_EPOCH + Duration::from_millis(ms));
        let user = |name: &str| {
            message
                .message_attributes()
                .and_then(|attrs| attrs.get(name))
                .and_then(|v| v.string_value())
        };
        let pending = user(PENDING).and_then(|v| {
            let decoded = decode_indices(v);
            if decoded.is_none() {
                warn!(
                    message_id,
                    value = v,
                    "ignoring a damaged {PENDING} attribute: every item runs"
                );
            }
            decoded
        });
        let carried_attempts = user(ATTEMPTS).and_then(|v| v.parse().ok()).unwrap_or(0);
        let group = system_value(&MessageSystemAttributeName::MessageGroupId).map(str::to_owned);
        Some(Delivery {
            message_id: message_id.to_owned(),
            body: Bytes::copy_from_slice(message.body().unwrap_or_default().as_bytes()),
            receipt: receipt.to_owned(),
            receive_count,
            sent_at,
            pending,
            carried_attempts,
            group,
            // SQS leases end only by time: never revoked.
            revoked: self.never_revoked.clone(),
        })
    }
}

fn queue_name(url: &str) -> &str {
    url.trim_end_matches('/').rsplit('/').next().unwrap_or(url)
}

/// Whether the queue at `url` is a FIFO queue (SQS names them `*.fifo`).
fn is_fifo(url: &str) -> bool {
    queue_name(url).ends_with(".fifo")
}

/// `(MessageGroupId, MessageDeduplicationId)` of a copy of `delivery` sent
/// to a FIFO queue: the message's own group (its id when it has none) and
/// an id unique to this delivery, `tag` telling copies apart.
fn fifo_ids(delivery: &Delivery, tag: &str) -> (String, String) {
    (
        delivery
            .group
            .clone()
            .unwrap_or_else(|| delivery.message_id.clone()),
        format!("{}-{}-{tag}", delivery.message_id, delivery.receive_count),
    )
}

#[async_trait]
impl Transport for SqsQueue {
    fn queue(&self) -> &str {
        &self.name
    }

    fn visibility(&self) -> Duration {
        self.visibility
    }

    fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    async fn receive(&self, max: usize) -> Result<Vec<Delivery>, TransportError> {
        let visibility_s = self
            .visibility_override
            .then(|| seconds_up(self.visibility, MAX_VISIBILITY_S));
        let output = receive_call(&self.client, &self.url, max, self.wait_time_s, visibility_s)
            .send()
            .await;
        if !self
            .dead_letter_lookup_started
            .swap(true, Ordering::Relaxed)
        {
            self.dead_letter
                .resolve_in_background(&self.client, &self.url);
        }
        let output = output.map_err(|e| sdk_error("receive", &self.name, e))?;
        Ok(output
            .messages()
            .iter()
            .filter_map(|m| self.delivery(m))
            .collect())
    }

    async fn delete(&self, delivery: &Delivery) -> Result<(), TransportError> {
        let (reply, response) = oneshot::channel();
        let gone = || TransportError {
            operation: "delete",
            queue: self.name.clone(),
            source: "the delete batcher has stopped".into(),
        };
        self.deletes
            .send((delivery.receipt.clone(), reply))
            .map_err(|_| gone())?;
        response.await.map_err(|_| gone())?
    }

    async fn extend(&self, delivery: &Delivery) -> Result<(), TransportError> {
        self.client
            .change_message_visibility()
            .queue_url(&self.url)
            .receipt_handle(&delivery.receipt)
            .visibility_timeout(seconds_up(self.visibility, MAX_VISIBILITY_S))
            .send()
            .await
            .map_err(|e| sdk_error("extend", &self.name, e))?;
        Ok(())
    }

    async fn release(&self, delivery: &Delivery, delay: Duration) -> Result<(), TransportError> {
        self.client
            .change_message_visibility()
            .queue_url(&self.url)
            .receipt_handle(&delivery.receipt)
            .visibility_timeout(seconds_up(delay, MAX_VISIBILITY_S))
            .send()
            .await
            .map_err(|e| sdk_error("release", &self.name, e))?;
        Ok(())
    }

    async fn surrender(&self, delivery: &Delivery) -> Result<(), TransportError> {
        self.release(delivery, Duration::ZERO).await
    }

    async fn requeue(
        &self,
        delivery: &Delivery,
        pending: &[usize],
        attempts: u32,
        delay: Duration,
    ) -> Result<(), TransportError> {
        let attrs = attributes(&[
            (PENDING, "String", encode_indices(pending)),
            (ATTEMPTS, "Number", attempts.to_string()),
        ])
        .map_err(|e| sdk_error("requeue", &self.name, e))?;
        let mut call = self
            .client
            .send_message()
            .queue_url(&self.url)
            .message_body(String::from_utf8_lossy(&delivery.body))
            .set_message_attributes(Some(attrs));
        call = if self.fifo {
            let (group, dedup) = fifo_ids(delivery, "requeue");
            call.message_group_id(group).message_deduplication_id(dedup)
        } else {
            call.delay_seconds(seconds_up(delay, MAX_DELAY_S))
        };
        call.send()
            .await
            .map_err(|e| sdk_error("requeue", &self.name, e))?;
        Ok(())
    }

    async fn dead_letter(
        &self,
        delivery: &Delivery,
        letter: &DeadLetter,
    ) -> Result<(), TransportError> {
        let dlq = self.dead_letter.name.as_str();
        let dlq_url =
            self.dead_letter
                .url(&self.client)
                .await
                .map_err(|reason| TransportError {
                    operation: "dead_letter",
                    queue: dlq.to_owned(),
                    source: reason.into(),
                })?;
        let mut entries = vec![
            (CAUSE, "String", letter.cause.as_str().to_owned()),
            (CATEGORY, "String", letter.category.as_str().to_owned()),
            (ATTEMPTS, "Number", letter.attempts.to_string()),
            (SOURCE_QUEUE, "String", self.url.clone()),
            (SOURCE_MESSAGE_ID, "String", delivery.message_id.clone()),
        ];
        // SQS counts the body and every attribute's name, type and value
        // against its message size limit.
        let fixed: usize = entries
            .iter()
            .map(|(name, kind, value)| name.len() + kind.len() + value.len())
            .sum::<usize>()
            + REASON.len()
            + PENDING.len()
            + 2 * "String".len();
        let room = MAX_MESSAGE_BYTES.saturating_sub(delivery.body.len() + fixed);
        let Some((reason, pending)) = fitted_letter(&letter.reason, letter.items.as_deref(), room)
        else {
            return Err(TransportError {
                operation: "dead_letter",
                queue: dlq.to_owned(),
                source: format!(
                    "a {}-byte body leaves no room for the reason within SQS's {MAX_MESSAGE_BYTES} bytes; \
                     the message stays for the queue's redrive policy",
                    delivery.body.len()
                )
                .into(),
            });
        };
        entries.push((REASON, "String", reason));
        if let Some(pending) = pending {
            entries.push((PENDING, "String", pending));
        }
        let attrs = attributes(&entries).map_err(|e| sdk_error("dead_letter", dlq, e))?;
        let mut call = self
            .client
            .send_message()
            .queue_url(&dlq_url)
            .message_body(String::from_utf8_lossy(&delivery.body))
            .set_message_attributes(Some(attrs));
        if self.dead_letter.fifo {
            let (group, dedup) = fifo_ids(delivery, "dead");
            call = call.message_group_id(group).message_deduplication_id(dedup);
        }
        call.send()
            .await
            .map_err(|e| sdk_error("dead_letter", dlq, e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_indices_round_trip_and_damage_means_everything() {
        assert_eq!(
            decode_indices(&encode_indices(&[0, 3, 17])),
            Some(vec![0, 3, 17])
        );
        assert_eq!(decode_indices("1,x"), None);
    }

    #[test]
    fn delays_round_up_to_whole_seconds_within_sqs_limits() {
        assert_eq!(seconds_up(Duration::from_millis(1), MAX_DELAY_S), 1);
        assert_eq!(seconds_up(Duration::ZERO, MAX_DELAY_S), 0);
        assert_eq!(seconds_up(Duration::from_secs(5000), MAX_DELAY_S), 900);
        assert_eq!(
            queue_name("http://127.0.0.1:9324/000000000000/jobs"),
            "jobs"
        );
        assert_eq!(super::super::headers::truncate("héllo", 2), "h");
    }

    #[test]
    fn fifo_copies_keep_the_group_and_are_deduplicated_per_delivery() {
        assert!(is_fifo("http://127.0.0.1:9324/000000000000/jobs.fifo"));
        assert!(!is_fifo("http://127.0.0.1:9324/000000000000/jobs"));
        let mut delivery = Delivery {
            message_id: "m-1".into(),
            body: Bytes::new(),
            receipt: "r".into(),
            receive_count: 2,
            sent_at: None,
            pending: None,
            carried_attempts: 0,
            group: Some("c-abc".into()),
            revoked: tokio_util::sync::CancellationToken::new(),
        };
        assert_eq!(
            fifo_ids(&delivery, "requeue"),
            ("c-abc".to_owned(), "m-1-2-requeue".to_owned())
        );
        // The same delivery sends the same id (a retried send is dropped);
        // the next delivery of the message sends a new one.
        assert_eq!(
            fifo_ids(&delivery, "requeue"),
            fifo_ids(&delivery, "requeue")
        );
        assert_ne!(fifo_ids(&delivery, "requeue"), fifo_ids(&delivery, "dead"));
        delivery.receive_count = 3;
        assert_eq!(fifo_ids(&delivery, "requeue").1, "m-1-3-requeue");
        delivery.group = None;
        assert_eq!(fifo_ids(&delivery, "dead").0, "m-1");
    }
}
