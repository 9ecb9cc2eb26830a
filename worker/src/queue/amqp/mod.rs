//! RabbitMQ (AMQP 0-9-1, with lapin) as a [`Transport`].
//!
//! `--queue amqp://user:password@host:port/vhost/queue` (`amqps://` for
//! TLS; the vhost percent-encoded, `%2f` for `/`; without a vhost segment
//! the default vhost).
//!
//! Contract:
//! - **Topology, declared when missing** (so a fresh broker just works):
//!   the durable quorum queue `Q` with `x-dead-letter-exchange: Q.dlx` and
//!   `x-delivery-limit` = the attempt limit (the broker's own backstop for
//!   messages whose worker keeps dying); the fanout exchange `Q.dlx` and
//!   the quorum queue `Q.dlq` bound to it; retry queues `Q.retry.<n>s`
//!   (below). A queue that already exists with other arguments is used as
//!   it is.
//! - **Consuming**: prefetch = the worker's concurrency, manual acks; a
//!   message is acked only once every item in it is done. Acks that are
//!   ready together and cover every unacked delivery up to a tag go as
//!   one `basic.ack` with `multiple` set ([`acks`]).
//! - **Attempts**: the quorum queue's `x-delivery-count` header counts
//!   earlier deliveries of the same message; copies shoal sends carry
//!   `shoal.attempts`.
//! - **Retry with backoff**: AMQP has no per-message delay, so a message
//!   retried after a delay is published, with confirms, to the retry queue
//!   whose TTL is the delay rounded up to a power of two seconds (1 s to
//!   1,024 s; one TTL per queue, so a long delay never holds up a short
//!   one), which dead-letters it back to `Q` when it expires; then the
//!   original is acked. A retry without delay is a `basic.nack` with
//!   requeue.
//! - **Dead letters** are published with confirms to `Q.dlx` with the same
//!   `shoal.*` headers as on SQS (reason, cause, category, attempts, source
//!   queue and message id, pending items); then the original is acked.
//! - **Leases**: an unacked delivery stays with this consumer until its
//!   channel closes (or the broker's `consumer_timeout`, 30 minutes by
//!   default, runs out); there is nothing to extend.
//! - **Reconnect**: when the connection drops (broker restart, network),
//!   deliveries not yet acked go back to the queue (the broker does that):
//!   each of them is revoked ([`Delivery::revoked`]), so the runner stops
//!   its items and no longer holds it, and any call still waiting on it
//!   fails at once. The worker connects again with backoff (100 ms
//!   doubling, at most 1 s between tries).
//! - **Bounded calls**: every ack, nack, declare and confirmed publish
//!   fails after [`CALL_TIMEOUT`] or as soon as its connection is lost;
//!   none waits on a dead connection.

use std::collections::HashSet;
use std::sync::{Arc, Mutex as SyncMutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use lapin::Acker;
use lapin::options::{BasicNackOptions, BasicPublishOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Confirmation};
use tokio::sync::{Mutex, RwLock, mpsc, oneshot};
use tracing::{error, info, warn};

use super::headers::{
    ATTEMPTS, CATEGORY, CAUSE, PENDING, REASON, SOURCE_MESSAGE_ID, SOURCE_QUEUE, encode_indices,
    fitted_letter,
};
use super::transport::{DeadLetter, Delivery, Transport, TransportError};
use crate::error::{Error, Result};

mod acks;
mod session;
use acks::{AckRequest, Unacked, ack_batcher, parse_receipt};
use session::{Live, Shared, amqp_error, bounded, session_start, supervise};
use shoal_clients::amqp::{long_string, table};
use shoal_protocol::topology::{self, parse_target, retry_bucket};

/// What the broker says when a delivery's channel is gone.
/// Room for a dead letter's reason and index list in its headers.
const MAX_LETTER_HEADER_BYTES: usize = 64 * 1024;
const LOST: &str = "its connection was lost; the broker delivers the message again";
/// Lease reported to the runner: RabbitMQ's default `consumer_timeout`.
const LEASE: Duration = Duration::from_secs(30 * 60);
/// Longest wait for the broker's answer to one call (ack, declare,
/// publish confirm) on a connection that still looks alive.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(20);

/// How to consume an AMQP queue.
#[derive(Debug, Clone)]
pub struct AmqpOptions {
    /// `amqp://user:password@host:port/vhost/queue`.
    pub url: String,
    /// Unacked deliveries at most (the worker's concurrency).
    pub prefetch: u16,
    /// How long `receive` waits for a first message.
    pub wait_time: Duration,
    /// Attempts per message before it is dead-lettered.
    pub max_attempts: u32,
}

/// An AMQP queue, its dead-letter exchange and retry queues, consumed
/// over a connection that is re-established when it drops.
pub struct AmqpQueue {
    shared: Arc<Shared>,
    inbox: Mutex<mpsc::Receiver<Delivery>>,
    acks: mpsc::UnboundedSender<AckRequest>,
    supervisor: tokio::task::JoinHandle<()>,
    batcher: tokio::task::JoinHandle<()>,
}

impl Drop for AmqpQueue {
    fn drop(&mut self) {
        self.supervisor.abort();
        self.batcher.abort();
    }
}

impl AmqpQueue {
    /// Connects, declares the topology and starts consuming; the first
    /// connection must succeed (a wrong URL fails here, clearly), later
    /// ones are retried for ever.
    pub async fn connect(options: AmqpOptions) -> Result<Self> {
        let target = parse_target(&options.url).map_err(|reason| Error::Queue {
            queue: crate::redact::url(&options.url),
            reason,
        })?;
        let shared = Arc::new(Shared {
            target,
            options,
            live: RwLock::new(None),
            unacked: SyncMutex::new(Unacked::default()),
            retry_queues: Mutex::new(HashSet::new()),
            dead_letters_on_reject: std::sync::atomic::AtomicBool::new(true),
        });
        let (tx, inbox) = mpsc::channel(usize::from(shared.options.prefetch.max(1)));
        let first = session_start(&shared, 1).await.map_err(|e| Error::Queue {
            queue: shared.target.queue.clone(),
            reason: format!("cannot connect and consume: {e}"),
        })?;
        info!(queue = %shared.target.queue, prefetch = shared.options.prefetch, "queue connected");
        let supervisor = tokio::spawn(supervise(shared.clone(), tx, first));
        let (acks, requests) = mpsc::unbounded_channel();
        let batcher = tokio::spawn(ack_batcher(shared.clone(), requests));
        Ok(Self {
            shared,
            inbox: Mutex::new(inbox),
            acks,
            supervisor,
            batcher,
        })
    }
}

impl AmqpQueue {
    /// The generation, tag and acker of an unacked delivery, once.
    fn take_acker(
        &self,
        delivery: &Delivery,
        operation: &'static str,
    ) -> Result<(u64, u64, Acker), TransportError> {
        let lost = || amqp_error(operation, &self.shared.target.queue, LOST);
        if delivery.revoked.is_cancelled() {
            return Err(lost());
        }
        let (generation, tag) = parse_receipt(&delivery.receipt).ok_or_else(lost)?;
        let acker = self
            .shared
            .unacked
            .lock()
            .ok()
            .and_then(|mut unacked| unacked.take(generation, tag))
            .ok_or_else(lost)?;
        Ok((generation, tag, acker))
    }

    /// Sends a nack (`requeue`: back to the queue, or else to the
    /// dead-letter exchange) for `delivery`.
    async fn nack(
        &self,
        operation: &'static str,
        delivery: &Delivery,
        requeue: bool,
    ) -> Result<(), TransportError> {
        let queue = &self.shared.target.queue;
        let (generation, tag, acker) = self.take_acker(delivery, operation)?;
        let nack = acker.nack(BasicNackOptions {
            requeue,
            ..BasicNackOptions::default()
        });
        let sent = bounded(operation, queue, &delivery.revoked, nack).await;
        // A nack that timed out may not have left: its delivery stays
        // unacked (taken), so no multiple ack can ever cover it.
        if sent.is_ok()
            && let Ok(mut unacked) = self.shared.unacked.lock()
        {
            unacked.settled(generation, [tag]);
        }
        if sent? {
            Ok(())
        } else {
            Err(amqp_error(operation, queue, LOST))
        }
    }

    /// The connection in use, copied out so that no lock is held while a
    /// call waits on the broker. A publishing channel the broker closed (a
    /// refused publish closes its channel, not the connection) is replaced
    /// first: one refusal must not fail every later dead letter and retry.
    async fn live(&self, operation: &'static str) -> Result<Live, TransportError> {
        let queue = &self.shared.target.queue;
        let not_connected = || amqp_error(operation, queue, "not connected");
        let live = self
            .shared
            .live
            .read()
            .await
            .clone()
            .ok_or_else(not_connected)?;
        if live.publisher.status().connected() {
            return Ok(live);
        }
        let mut slot = self.shared.live.write().await;
        let current = slot.as_mut().ok_or_else(not_connected)?;
        if !current.publisher.status().connected() {
            let reopen = session::publishing_channel(&current.connection);
            current.publisher = bounded(operation, queue, &current.lost, reopen).await?;
            info!(queue = %queue, "publishing channel reopened");
        }
        Ok(current.clone())
    }

    /// Publishes `delivery`'s body with `headers` to `exchange`/`routing_key`
    /// and waits for the broker's confirm.
    async fn publish(
        &self,
        operation: &'static str,
        exchange: &str,
        routing_key: &str,
        delivery: &Delivery,
        headers: FieldTable,
    ) -> Result<(), TransportError> {
        let queue = &self.shared.target.queue;
        let live = self.live(operation).await?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_message_id(delivery.message_id.as_str().into())
            .with_timestamp(now)
            .with_headers(headers);
        let confirm = bounded(operation, queue, &live.lost, async {
            live.publisher
                .basic_publish(
                    exchange.into(),
                    routing_key.into(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..BasicPublishOptions::default()
                    },
                    &delivery.body,
                    properties,
                )
                .await?
                .await
        })
        .await?;
        match confirm {
            Confirmation::Ack(None) => Ok(()),
            Confirmation::Ack(Some(_)) => Err(amqp_error(
                operation,
                queue,
                format!("no queue is bound to {exchange:?} / {routing_key:?}"),
            )),
            other => Err(amqp_error(
                operation,
                queue,
                format!("the broker refused the message: {other:?}"),
            )),
        }
    }

    /// Publishes a copy of `delivery` back to the queue, after `delay`
    /// through a retry queue.
    async fn send_copy(
        &self,
        operation: &'static str,
        delivery: &Delivery,
        pending: Option<&[usize]>,
        attempts: u32,
        delay: Duration,
    ) -> Result<(), TransportError> {
        let queue = self.shared.target.queue.clone();
        let mut entries = vec![(ATTEMPTS, long_string(&attempts.to_string()))];
        if let Some(pending) = pending {
            let text = encode_indices(pending);
            entries.push((PENDING, long_string(&text)));
        }
        let headers = table(&entries);
        if delay.is_zero() {
            return self.publish(operation, "", &queue, delivery, headers).await;
        }
        let bucket = retry_bucket(delay);
        let retry = topology::retry_queue(&queue, bucket);
        self.ensure_retry_queue(operation, bucket, &retry).await?;
        self.publish(operation, "", &retry, delivery, headers).await
    }

    async fn ensure_retry_queue(
        &self,
        operation: &'static str,
        bucket: u64,
        name: &str,
    ) -> Result<(), TransportError> {
        let queue = &self.shared.target.queue;
        let mut declared = self.shared.retry_queues.lock().await;
        if declared.contains(&bucket) {
            return Ok(());
        }
        let live = self.live(operation).await?;
        let declaring = live.publisher.queue_declare(
            name.into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            table(&[
                (
                    "x-message-ttl",
                    AMQPValue::LongLongInt(i64::try_from(bucket * 1000).unwrap_or(i64::MAX)),
                ),
                ("x-dead-letter-exchange", long_string("")),
                ("x-dead-letter-routing-key", long_string(queue)),
            ]),
        );
        bounded(operation, queue, &live.lost, declaring).await?;
        declared.insert(bucket);
        Ok(())
    }
}

#[async_trait]
impl Transport for AmqpQueue {
    fn queue(&self) -> &str {
        &self.shared.target.queue
    }

    fn receive_can_be_abandoned(&self) -> bool {
        // Deliveries wait in this consumer's inbox; what is left there
        // goes back to the queue when the channel closes.
        true
    }

    fn visibility(&self) -> Duration {
        LEASE
    }

    fn max_attempts(&self) -> u32 {
        self.shared.options.max_attempts.max(1)
    }

    async fn receive(&self, max: usize) -> Result<Vec<Delivery>, TransportError> {
        let mut inbox = self.inbox.lock().await;
        let first = match tokio::time::timeout(self.shared.options.wait_time, inbox.recv()).await {
            Err(_) => return Ok(Vec::new()),
            Ok(None) => {
                return Err(amqp_error(
                    "receive",
                    &self.shared.target.queue,
                    "the connection supervisor has stopped",
                ));
            }
            Ok(Some(first)) => first,
        };
        let mut out = vec![first];
        while out.len() < max.max(1) {
            match inbox.try_recv() {
                Ok(next) => out.push(next),
                Err(_) => break,
            }
        }
        Ok(out)
    }

    async fn delete(&self, delivery: &Delivery) -> Result<(), TransportError> {
        let queue = &self.shared.target.queue;
        let (generation, tag, acker) = self.take_acker(delivery, "delete")?;
        let stopped = || amqp_error("delete", queue, "the ack batcher has stopped");
        let (reply, answer) = oneshot::channel();
        self.acks
            .send(AckRequest {
                generation,
                tag,
                acker,
                lost: delivery.revoked.clone(),
                reply,
            })
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    async fn extend(&self, _delivery: &Delivery) -> Result<(), TransportError> {
        Ok(())
    }

    async fn release(&self, delivery: &Delivery, delay: Duration) -> Result<(), TransportError> {
        if !delay.is_zero() {
            let copy = self
                .send_copy(
                    "release",
                    delivery,
                    delivery.pending.as_deref(),
                    delivery.attempt(),
                    delay,
                )
                .await;
            match copy {
                Ok(()) => return self.delete(delivery).await,
                Err(e) => {
                    warn!(message_id = %delivery.message_id, error = %e, "cannot delay the retry; requeueing at once")
                }
            }
        }
        self.nack("release", delivery, true).await
    }

    async fn requeue(
        &self,
        delivery: &Delivery,
        pending: &[usize],
        attempts: u32,
        delay: Duration,
    ) -> Result<(), TransportError> {
        self.send_copy("requeue", delivery, Some(pending), attempts, delay)
            .await
    }

    async fn surrender(&self, delivery: &Delivery) -> Result<(), TransportError> {
        let queue = &self.shared.target.queue;
        if !self
            .shared
            .dead_letters_on_reject
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            // A queue someone else declared may have no dead-letter
            // exchange: rejecting would drop the message. Keep it.
            error!(queue = %queue, message_id = %delivery.message_id, "this queue was not declared by shoal and may not dead-letter: the message is requeued, not handed over");
            return self.release(delivery, Duration::ZERO).await;
        }
        self.nack("surrender", delivery, false).await
    }

    async fn dead_letter(
        &self,
        delivery: &Delivery,
        letter: &DeadLetter,
    ) -> Result<(), TransportError> {
        let queue = self.shared.target.queue.clone();
        // Headers travel in one frame (RabbitMQ's frame_max: 128 KiB by
        // default); the reason and the index list get at most half of it.
        let Some((reason, pending)) = fitted_letter(
            &letter.reason,
            letter.items.as_deref(),
            MAX_LETTER_HEADER_BYTES,
        ) else {
            return Err(amqp_error("dead_letter", &queue, "no room for the reason"));
        };
        let mut entries = vec![
            (REASON, long_string(&reason)),
            (CAUSE, long_string(letter.cause.as_str())),
            (CATEGORY, long_string(letter.category.as_str())),
            (ATTEMPTS, long_string(&letter.attempts.to_string())),
            (SOURCE_QUEUE, long_string(&queue)),
            (SOURCE_MESSAGE_ID, long_string(&delivery.message_id)),
        ];
        if let Some(pending) = pending {
            entries.push((PENDING, long_string(&pending)));
        }
        let dlx = topology::dead_letter_exchange(&queue);
        self.publish("dead_letter", &dlx, "", delivery, table(&entries))
            .await
    }
}
