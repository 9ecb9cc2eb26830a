//! Where a job's chunks wait: the queue backend behind one trait, as the
//! worker has its `Transport`. SQS ([`sqs`]) and RabbitMQ ([`amqp`]) are
//! the two; the reconciler's tests drive it with an in-memory one.
//!
//! A backend knows nothing of the reconciler: it answers what it did or
//! found, and the reconciler writes status and publishes Events from that.
//!
//! Contract of every backend:
//! - [`Backends::resolve`] is idempotent: the first call for a job whose
//!   queues it makes creates (or declares) them and says so in
//!   [`Resolved::Ready`]'s `created`; later calls use what status recorded,
//!   and only when it names the queues the spec implies (status is writable
//!   by more people than the spec).
//! - [`WorkQueue::poll`] has no side effect; [`WorkQueue::remake`] is the
//!   only call that makes a missing queue again.
//! - [`Backends::delete_created`] deletes only queues the operator made for
//!   this job (derived names carrying the job's uid), never one the spec
//!   names or status mentions.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::crd::{BatchJob, BatchJobStatus};
use crate::error::Result;
pub use crate::ownership::Unusable;
pub use crate::sqs::Backlog;
use crate::workload::WorkerQueue;

pub mod amqp;
#[cfg(test)]
pub mod memory;
pub mod sqs;

/// What one read of a queue found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reading {
    /// The work queue's backlog and the dead-letter queue's.
    Known(Backlog, Backlog),
    /// The queue exists but has no counts yet (a RabbitMQ queue declared
    /// moments ago).
    NotYet,
    /// The work queue or its dead-letter queue does not exist.
    Missing,
}

/// Why a job cannot go on, as its `Ready` condition says: waiting
/// (looked at again) or, with `fail`, Failed for good.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocked {
    /// The job fails: nothing it waits for can come.
    pub fail: bool,
    /// The condition's reason.
    pub reason: &'static str,
    /// The condition's message.
    pub message: String,
}

impl Blocked {
    /// Waiting for `reason`.
    pub fn wait(reason: &'static str, message: String) -> Self {
        Self {
            fail: false,
            reason,
            message,
        }
    }

    /// Failed for `reason`.
    pub fn fail(reason: &'static str, message: String) -> Self {
        Self {
            fail: true,
            reason,
            message,
        }
    }
}

impl From<Unusable> for Blocked {
    fn from(unusable: Unusable) -> Self {
        Self::wait(unusable.reason(), unusable.to_string())
    }
}

/// A warning to publish as an Event on the job: reason and note.
pub type Warning = (&'static str, String);

/// What a redrive page did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redriven {
    /// `moved` dead letters went back; `done`: the dead-letter queue is
    /// empty.
    Moved {
        /// How many.
        moved: usize,
        /// Nothing left to move.
        done: bool,
    },
    /// Nothing can be moved from this queue (the note says why).
    Unsupported(String),
}

/// A job's work queue.
#[async_trait]
pub trait WorkQueue: Send + Sync {
    /// The queue's URL as status and Events show it (no credentials).
    fn url(&self) -> String;

    /// What tells this queue, and how it is reached, apart from every
    /// other: jobs with the same key share one reading of the counts.
    fn key(&self) -> String;

    /// How old the counts can be (see [`crate::plan::settle`]).
    fn lag(&self) -> Duration;

    /// How the worker pods find the queue.
    fn worker_queue(&self) -> WorkerQueue;

    /// Sends one batch of chunks (`(chunk id, body)`, at most 10).
    async fn send(&self, bodies: Vec<(String, String)>) -> Result<()>;

    /// Reads the counts, with no side effect.
    async fn poll(&self) -> Result<Reading>;

    /// Makes the queues again after [`WorkQueue::poll`] found them
    /// missing (chunks that were in them are gone; the outputs so far are
    /// kept); returns the warning to publish. An error when the queue is
    /// not the operator's to make (one the job was given).
    async fn remake(&self) -> Result<Warning>;

    /// Moves one page of dead letters back to the work queue, for redrive
    /// `round` (see [`crate::redrive`]).
    async fn redrive(&self, round: i64) -> Result<Redriven>;
}

/// Queues a job was given or the operator made for it, on first use.
pub struct Created {
    /// The dead-letter queue's URL, for status.
    pub dead_letter_url: String,
    /// The Event's reason (`QueuesCreated`, `QueuesDeclared`).
    pub reason: &'static str,
    /// The Event's note.
    pub note: String,
}

/// The job's work queue, or why it cannot have one yet.
pub enum Resolved {
    /// The queue, and what was made for it by this call, if anything (the
    /// reconciler records the URLs in status at once: a crash-safety
    /// checkpoint).
    Ready(Arc<dyn WorkQueue>, Option<Created>),
    /// Why not (the Secret, ownership, the server's refusal).
    Blocked(Blocked),
}

/// What [`Backends::delete_created`] did.
#[derive(Debug, Default)]
pub struct Deleted {
    /// Some queue was deleted.
    pub any: bool,
    /// Something that should be gone was left, and why.
    pub warning: Option<Warning>,
}

/// The queue servers, as the reconciler sees them.
#[async_trait]
pub trait Backends: Send + Sync {
    /// The work queue of `job` in `namespace`, made on first use.
    async fn resolve(
        &self,
        job: &BatchJob,
        namespace: &str,
        previous: &BatchJobStatus,
    ) -> Result<Resolved>;

    /// Deletes the queues the operator made for `job` (the finalizer's
    /// cleanup).
    async fn delete_created(&self, job: &BatchJob) -> Result<Deleted>;
}

/// The real servers: SQS, and the RabbitMQ brokers the jobs' Secrets name.
pub struct Servers {
    /// Reads the brokers' Secrets.
    pub client: kube::Client,
    /// The SQS client.
    pub sqs: crate::sqs::Sqs,
    /// The RabbitMQ clients.
    pub amqp: Arc<crate::amqp::Amqp>,
}

#[async_trait]
impl Backends for Servers {
    async fn resolve(
        &self,
        job: &BatchJob,
        namespace: &str,
        previous: &BatchJobStatus,
    ) -> Result<Resolved> {
        if let Some(connection) = amqp::connection(job) {
            return amqp::resolve(self, job, namespace, previous, connection).await;
        }
        sqs::resolve(&self.sqs, job, namespace, previous).await
    }

    async fn delete_created(&self, job: &BatchJob) -> Result<Deleted> {
        if job.spec.source.sqs.is_some() || job.spec.source.amqp.is_some() {
            return Ok(Deleted::default());
        }
        if let Some(connection) = job.spec.queue.as_ref().and_then(|q| q.amqp.as_ref()) {
            return amqp::delete_created(self, job, connection).await;
        }
        sqs::delete_created(&self.sqs, job).await
    }
}
