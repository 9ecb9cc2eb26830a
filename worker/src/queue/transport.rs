//! What the queue runner needs from a message broker. SQS implements it
//! here; other brokers plug in the same way. No SDK type crosses it.

use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use crate::metrics::{DeadLetterCause, ErrorCategory};

/// One received message, leased to this worker until it is settled or its
/// lease (visibility timeout) runs out.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The broker's message id.
    pub message_id: String,
    /// The body, as sent.
    pub body: Bytes,
    /// Handle that settles this delivery (SQS receipt handle).
    pub receipt: String,
    /// How often the broker has delivered this message, this time included.
    pub receive_count: u32,
    /// When the message was first sent, if the broker says.
    pub sent_at: Option<SystemTime>,
    /// Indices of the message's items still to do; `None`: all of them.
    /// Set on messages the runner re-sent after finishing part of them.
    pub pending: Option<Vec<usize>>,
    /// Attempts spent on earlier copies of this message (see `pending`).
    pub carried_attempts: u32,
    /// Ordering group of the message (SQS FIFO `MessageGroupId`); copies
    /// the runner sends keep it.
    pub group: Option<String>,
    /// Cancelled when the broker has taken the delivery back before this
    /// worker settled it (AMQP: the connection it came on is gone, and the
    /// broker requeued it). Nothing can settle it any more and it will be
    /// delivered again, so the runner stops its items and lets it go.
    /// Brokers whose leases end only by time (SQS) never cancel it.
    pub revoked: CancellationToken,
}

impl Delivery {
    /// The attempt number this delivery stands for (1-based).
    pub fn attempt(&self) -> u32 {
        self.carried_attempts
            .saturating_add(self.receive_count)
            .max(1)
    }
}

/// Why (part of) a message goes to the dead-letter queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// Indices of the dead items; `None`: the whole message.
    pub items: Option<Vec<usize>>,
    /// Permanent error or attempts exhausted.
    pub cause: DeadLetterCause,
    /// Category of the (first) failure.
    pub category: ErrorCategory,
    /// Human-readable reason, one line per item.
    pub reason: String,
    /// Attempts made.
    pub attempts: u32,
}

/// A broker call that failed, naming the call and the queue.
#[derive(Debug, thiserror::Error)]
#[error("{operation} on {queue}: {source}")]
pub struct TransportError {
    /// What was being done.
    pub operation: &'static str,
    /// Which queue.
    pub queue: String,
    /// The underlying error.
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

/// A message broker seen by the runner.
///
/// Contract: a delivery stays invisible to other consumers until its lease
/// ends, it is settled, or the broker revokes it ([`Delivery::revoked`]);
/// `requeue` and `dead_letter` only add messages (the runner deletes the
/// original afterwards), so a crash between the two duplicates work instead
/// of losing it. Every call returns: a broker that does not answer, or a
/// delivery revoked while a call waits, is an error, never a hang.
#[async_trait]
pub trait Transport: Send + Sync + 'static {
    /// Printable queue name, for logs.
    fn queue(&self) -> &str;
    /// Lease of a delivery; the runner extends it at half-time.
    fn visibility(&self) -> Duration;
    /// Attempts per message before it is dead-lettered.
    fn max_attempts(&self) -> u32;
    /// Receives up to `max` messages, waiting for some (long poll).
    async fn receive(&self, max: usize) -> Result<Vec<Delivery>, TransportError>;
    /// Whether a [`Transport::receive`] under way may be dropped without
    /// leaving messages invisible for a lease (true where the broker only
    /// pushes to a live consumer and takes back what a closed channel
    /// held). Where false, a draining runner lets it finish.
    fn receive_can_be_abandoned(&self) -> bool {
        false
    }
    /// Acknowledges a delivery: the message is done.
    async fn delete(&self, delivery: &Delivery) -> Result<(), TransportError>;
    /// Extends the lease of a delivery by [`Transport::visibility`].
    async fn extend(&self, delivery: &Delivery) -> Result<(), TransportError>;
    /// Gives the delivery back, visible again after `delay`.
    async fn release(&self, delivery: &Delivery, delay: Duration) -> Result<(), TransportError>;
    /// Sends a copy of the message with only the `pending` items left to do,
    /// visible after `delay`.
    async fn requeue(
        &self,
        delivery: &Delivery,
        pending: &[usize],
        attempts: u32,
        delay: Duration,
    ) -> Result<(), TransportError>;
    /// Sends a copy of the message to the dead-letter queue with its reason.
    async fn dead_letter(
        &self,
        delivery: &Delivery,
        letter: &DeadLetter,
    ) -> Result<(), TransportError>;
    /// Hands the message to the broker's own dead-lettering, for a message
    /// whose dead letter could not be sent time after time: SQS moves it
    /// by the queue's redrive policy (it is made visible at once, its
    /// receive count past the limit), RabbitMQ by the queue's dead-letter
    /// exchange (rejected without requeue). The original body arrives
    /// there, without shoal's reason.
    async fn surrender(&self, delivery: &Delivery) -> Result<(), TransportError>;
}
