//! The RabbitMQ backend: a queue the job was given (`source.amqp`), or the
//! queue family the operator declares for a fan-out (`queue.amqp`), on the
//! broker the job's Secret names.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use kube::ResourceExt;

use super::{Blocked, Created, Deleted, Reading, Redriven, Resolved, Servers, Warning, WorkQueue};
use crate::amqp::{Amqp, Broker, Counts};
use crate::crd::{AmqpConnection, BatchJob, BatchJobStatus};
use crate::error::Result;
use crate::plan;
use crate::workload::WorkerQueue;

/// A RabbitMQ work queue (its dead-letter queue is `<queue>.dlq`).
pub struct AmqpQueue {
    amqp: Arc<Amqp>,
    broker: Broker,
    connection: AmqpConnection,
    queue: String,
    max_attempts: u32,
    /// The job's uid, when the operator derived the queue's name.
    owner: Option<String>,
}

/// The job's RabbitMQ connection, if its queue is on RabbitMQ.
pub(super) fn connection(job: &BatchJob) -> Option<&AmqpConnection> {
    job.spec
        .source
        .amqp
        .as_ref()
        .map(|s| &s.connection)
        .or_else(|| job.spec.queue.as_ref().and_then(|q| q.amqp.as_ref()))
}

/// The uid a RabbitMQ queue the operator declares for `job` carries, when
/// it derived the name (`None`: the spec names the queue, whoever made it).
fn owner(job: &BatchJob) -> Option<&str> {
    let named =
        job.spec.source.amqp.is_some() || job.spec.queue.as_ref().is_some_and(|q| q.name.is_some());
    (!named).then(|| job.metadata.uid.as_deref().unwrap_or_default())
}

/// The job's queue on the broker its Secret names: declared the first
/// time; before a fan-out publishes again, checked to be still the one
/// declared for this job.
pub(super) async fn resolve(
    servers: &Servers,
    job: &BatchJob,
    namespace: &str,
    previous: &BatchJobStatus,
    connection: &AmqpConnection,
) -> Result<Resolved> {
    let broker = match crate::amqp::from_secret(&servers.client, namespace, connection).await? {
        Ok(broker) => broker,
        Err((reason, message)) => return Ok(Resolved::Blocked(Blocked::wait(reason, message))),
    };
    let amqp = &servers.amqp;
    let queue = plan::amqp_queue(job, namespace);
    let fanning_out = (job.spec.source.s3.is_some() || job.spec.source.batch_job.is_some())
        && !previous.split.as_ref().is_some_and(|s| s.done);
    let owner = owner(job);
    if let Some(owner) = owner
        && previous.queue_url.is_some()
        && fanning_out
    {
        // Status is writable by more people than the spec: before
        // publishing, the queue must still be the one declared for this
        // job.
        if let Err(unusable) = amqp.owned(&broker, &queue, owner).await? {
            return Ok(Resolved::Blocked(unusable.into()));
        }
    }
    let mut created = None;
    if previous.queue_url.is_none() {
        if let Err(unusable) = amqp
            .ensure_queues(&broker, &queue, plan::max_attempts(job), owner)
            .await?
        {
            return Ok(Resolved::Blocked(unusable.into()));
        }
        let dead_letter = shoal_protocol::topology::dead_letter_queue(&queue);
        created = Some(Created {
            dead_letter_url: broker.queue_url(&dead_letter),
            reason: "QueuesDeclared",
            note: format!(
                "work queue {}, dead-letter queue {} on {}",
                queue,
                dead_letter,
                broker.public()
            ),
        });
    }
    let work = AmqpQueue {
        amqp: amqp.clone(),
        broker,
        connection: connection.clone(),
        queue,
        max_attempts: plan::max_attempts(job),
        owner: owner.map(str::to_owned),
    };
    Ok(Resolved::Ready(Arc::new(work), created))
}

#[async_trait]
impl WorkQueue for AmqpQueue {
    fn url(&self) -> String {
        self.broker.queue_url(&self.queue)
    }

    fn key(&self) -> String {
        format!("amqp {} {}", self.broker.identity(), self.queue)
    }

    fn lag(&self) -> Duration {
        self.amqp.stats_interval()
    }

    fn worker_queue(&self) -> WorkerQueue {
        WorkerQueue::Amqp {
            secret: self.connection.secret_name.clone(),
            key: self.connection.key().to_owned(),
            queue: self.queue.clone(),
            max_attempts: self.max_attempts,
        }
    }

    async fn send(&self, bodies: Vec<(String, String)>) -> Result<()> {
        self.amqp.publish(&self.broker, &self.queue, &bodies).await
    }

    async fn poll(&self) -> Result<Reading> {
        Ok(match self.amqp.backlog(&self.broker, &self.queue).await? {
            Counts::Known(work, dead) => Reading::Known(work, dead),
            Counts::NotYet => Reading::NotYet,
            Counts::Missing => Reading::Missing,
        })
    }

    async fn remake(&self) -> Result<Warning> {
        Ok(
            match self
                .amqp
                .ensure_queues(
                    &self.broker,
                    &self.queue,
                    self.max_attempts,
                    self.owner.as_deref(),
                )
                .await?
            {
                Ok(()) => (
                    "QueueRedeclared",
                    format!(
                        "queue {} was missing on {}: declared it again",
                        self.queue,
                        self.broker.public()
                    ),
                ),
                Err(unusable) => (unusable.reason(), unusable.to_string()),
            },
        )
    }

    async fn redrive(&self, _round: i64) -> Result<Redriven> {
        let (moved, done) = self
            .amqp
            .redrive(&self.broker, &self.queue, crate::redrive::PAGE)
            .await?;
        Ok(Redriven::Moved { moved, done })
    }
}

/// Deletes the queues the operator declared for `job`: only when it
/// derived their name and declared them, and only those that carry the
/// job's uid. A broker whose Secret is gone cannot be reached: its queues
/// are left, with a warning, rather than blocking the deletion.
pub(super) async fn delete_created(
    servers: &Servers,
    job: &BatchJob,
    connection: &AmqpConnection,
) -> Result<Deleted> {
    let named = job.spec.queue.as_ref().is_some_and(|q| q.name.is_some());
    let declared = job.status.as_ref().is_some_and(|s| s.queue_url.is_some());
    if named || !declared {
        return Ok(Deleted::default());
    }
    let namespace = job.namespace().unwrap_or_default();
    match crate::amqp::from_secret(&servers.client, &namespace, connection).await? {
        Ok(broker) => {
            let queue = plan::amqp_queue(job, &namespace);
            let owner = job.metadata.uid.as_deref().unwrap_or_default();
            let deleted = servers.amqp.delete_owned(&broker, &queue, owner).await?;
            let warning = (deleted == Some(false)).then(|| {
                (
                    "QueuesNotDeleted",
                    format!(
                        "queue {queue} on {} was not declared for this BatchJob (no {} argument with its uid): left in place",
                        broker.public(),
                        shoal_protocol::topology::OWNER_ARGUMENT
                    ),
                )
            });
            Ok(Deleted {
                any: deleted == Some(true),
                warning,
            })
        }
        Err((_, message)) => Ok(Deleted {
            any: false,
            warning: Some((
                "QueuesNotDeleted",
                format!("cannot reach the broker to delete the queues: {message}"),
            )),
        }),
    }
}
