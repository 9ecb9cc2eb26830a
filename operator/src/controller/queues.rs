//! The work queue of a job, on SQS or on RabbitMQ: created (or declared)
//! when the job starts, fed by the fan-out, counted for scaling and
//! progress, and deleted by the finalizer when the operator created it.

use std::time::Duration;

use kube::ResourceExt;

use super::{Context, write_status};
use crate::amqp::{Broker, Counts};
use crate::crd::{AmqpConnection, BatchJob, BatchJobStatus};
use crate::error::{Error, Result};
use crate::plan;
use crate::sqs::Backlog;

use crate::workload::WorkerQueue;

/// The queue a job's chunks go through.
pub(super) enum WorkQueue {
    /// An SQS queue and, when the operator created it, its dead-letter
    /// queue.
    Sqs {
        url: String,
        dead_letter_url: Option<String>,
    },
    /// A RabbitMQ queue (its dead-letter queue is `<queue>.dlq`).
    Amqp {
        broker: Broker,
        connection: AmqpConnection,
        queue: String,
    },
}

/// The work queue, or why the job cannot start yet.
pub(super) enum Resolved {
    Ready(WorkQueue),
    Blocked(&'static str, String),
}

/// The job's RabbitMQ connection, if its queue is on RabbitMQ.
fn amqp_connection(job: &BatchJob) -> Option<&AmqpConnection> {
    job.spec
        .source
        .amqp
        .as_ref()
        .map(|s| &s.connection)
        .or_else(|| job.spec.queue.as_ref().and_then(|q| q.amqp.as_ref()))
}

/// The broker named by `connection`'s Secret, or why it cannot be used
/// (reason and message for the `Ready` condition).
async fn broker(
    ctx: &Context,
    namespace: &str,
    connection: &AmqpConnection,
) -> Result<std::result::Result<Broker, (&'static str, String)>> {
    crate::amqp::from_secret(&ctx.client, namespace, connection).await
}

/// The queues step: creates the SQS queues or declares the RabbitMQ ones
/// the first time (recording their URLs in `status`), afterwards uses the
/// URLs recorded. Idempotent.
pub(super) async fn ensure(
    job: &BatchJob,
    ctx: &Context,
    namespace: &str,
    previous: &BatchJobStatus,
    status: &mut BatchJobStatus,
) -> Result<Resolved> {
    if let Some(connection) = amqp_connection(job) {
        let broker = match broker(ctx, namespace, connection).await? {
            Ok(broker) => broker,
            Err((reason, message)) => return Ok(Resolved::Blocked(reason, message)),
        };
        let queue = plan::amqp_queue(job, namespace);
        let fanning_out = (job.spec.source.s3.is_some() || job.spec.source.batch_job.is_some())
            && !previous.split.as_ref().is_some_and(|s| s.done);
        if let Some(owner) = amqp_owner(job)
            && previous.queue_url.is_some()
            && fanning_out
        {
            // Status is writable by more people than the spec: before
            // publishing, the queue must still be the one declared for
            // this job.
            if let Err(unusable) = ctx.amqp.owned(&broker, &queue, owner).await? {
                return Ok(Resolved::Blocked(unusable.reason(), unusable.to_string()));
            }
        }
        if previous.queue_url.is_none() {
            let owner = amqp_owner(job);
            if let Err(unusable) = ctx
                .amqp
                .ensure_queues(&broker, &queue, plan::max_attempts(job), owner)
                .await?
            {
                return Ok(Resolved::Blocked(unusable.reason(), unusable.to_string()));
            }
            let dead_letter = shoal_protocol::topology::dead_letter_queue(&queue);
            status.queue_url = Some(broker.queue_url(&queue));
            status.dead_letter_queue_url = Some(broker.queue_url(&dead_letter));
            write_status(job, ctx, namespace, status).await?;
            ctx.event(
                job,
                false,
                "QueuesDeclared",
                format!(
                    "work queue {}, dead-letter queue {} on {}",
                    queue,
                    dead_letter,
                    broker.public()
                ),
            )
            .await;
        }
        return Ok(Resolved::Ready(WorkQueue::Amqp {
            broker,
            connection: connection.clone(),
            queue,
        }));
    }
    if let Some(sqs) = &job.spec.source.sqs {
        return Ok(Resolved::Ready(WorkQueue::Sqs {
            url: sqs.queue_url.clone(),
            dead_letter_url: None,
        }));
    }
    let settings = plan::queue_settings(job, namespace);
    // Status is writable by more people than the spec: its URLs are used
    // only when they name the queues the spec implies.
    if let (Some(url), Some(dlq)) = (&previous.queue_url, &previous.dead_letter_queue_url)
        && names_queue(url, &settings.name)
        && names_queue(dlq, &settings.dead_letter_name)
    {
        return Ok(Resolved::Ready(WorkQueue::Sqs {
            url: url.clone(),
            dead_letter_url: Some(dlq.clone()),
        }));
    }
    let queues = match ctx.sqs.ensure_queues(&settings).await? {
        Ok(queues) => queues,
        Err(unusable) => {
            return Ok(Resolved::Blocked(unusable.reason(), unusable.to_string()));
        }
    };
    status.queue_url = Some(queues.url.clone());
    status.dead_letter_queue_url = Some(queues.dead_letter_url.clone());
    write_status(job, ctx, namespace, status).await?;
    ctx.event(
        job,
        false,
        "QueuesCreated",
        format!(
            "work queue {}, dead-letter queue {}",
            queues.url, queues.dead_letter_url
        ),
    )
    .await;
    Ok(Resolved::Ready(WorkQueue::Sqs {
        url: queues.url,
        dead_letter_url: Some(queues.dead_letter_url),
    }))
}

impl WorkQueue {
    /// The queue's URL as status and events show it (no credentials).
    pub(super) fn url(&self) -> String {
        match self {
            Self::Sqs { url, .. } => url.clone(),
            Self::Amqp { broker, queue, .. } => broker.queue_url(queue),
        }
    }

    /// Sends one batch of chunks (`(chunk id, body)`, at most 10).
    pub(super) async fn send(&self, ctx: &Context, bodies: Vec<(String, String)>) -> Result<()> {
        match self {
            Self::Sqs { url, .. } => ctx.sqs.send_batch(url, &bodies).await,
            Self::Amqp { broker, queue, .. } => ctx.amqp.publish(broker, queue, &bodies).await,
        }
    }

    /// The work queue's backlog and the dead-letter queue's; `None` while
    /// they are unknown: the broker has no counts yet, or the queue is gone
    /// (then it is declared again, with a warning Event).
    pub(super) async fn backlogs(
        &self,
        ctx: &Context,
        job: &BatchJob,
    ) -> Result<Option<(Backlog, Backlog)>> {
        match self {
            Self::Sqs {
                url,
                dead_letter_url,
            } => {
                let work = ctx.sqs.backlog(url).await?;
                let dead = match dead_letter_url {
                    Some(dlq) => ctx.sqs.backlog(dlq).await?,
                    None => Some(Backlog::default()),
                };
                if let (Some(work), Some(dead)) = (work, dead) {
                    return Ok(Some((work, dead)));
                }
                if dead_letter_url.is_none() {
                    // A queue the job was given: not the operator's to make.
                    return Err(Error::Queue {
                        queue: url.clone(),
                        what: "reading the backlog",
                        reason: "the queue does not exist".into(),
                    });
                }
                // Deleted behind the operator: made again (chunks that were
                // in it are gone; the workers' outputs so far are kept).
                let namespace = job.namespace().unwrap_or_default();
                match ctx
                    .sqs
                    .ensure_queues(&plan::queue_settings(job, &namespace))
                    .await?
                {
                    Ok(_) => {
                        ctx.event(
                            job,
                            true,
                            "QueueRecreated",
                            format!(
                                "queue {url} or its dead-letter queue was missing: created it again"
                            ),
                        )
                        .await;
                    }
                    Err(unusable) => {
                        ctx.event(job, true, unusable.reason(), unusable.to_string())
                            .await;
                    }
                }
                Ok(None)
            }
            Self::Amqp { broker, queue, .. } => match ctx.amqp.backlog(broker, queue).await? {
                Counts::Known(work, dead) => Ok(Some((work, dead))),
                Counts::NotYet => Ok(None),
                Counts::Missing => {
                    match ctx
                        .amqp
                        .ensure_queues(broker, queue, plan::max_attempts(job), amqp_owner(job))
                        .await?
                    {
                        Ok(()) => {
                            ctx.event(
                                job,
                                true,
                                "QueueRedeclared",
                                format!(
                                    "queue {queue} was missing on {}: declared it again",
                                    broker.public()
                                ),
                            )
                            .await;
                        }
                        Err(unusable) => {
                            ctx.event(job, true, unusable.reason(), unusable.to_string())
                                .await;
                        }
                    }
                    Ok(None)
                }
            },
        }
    }

    /// Moves one page of dead letters back to the work queue for redrive
    /// `round` (see [`crate::redrive`]); returns how many moved and whether
    /// the dead-letter queue is empty. On SQS only from the dead-letter
    /// queue the operator made for this job: one it was given (with
    /// `source.sqs` or `queue.deadLetterQueue`) may hold other queues'
    /// messages, so nothing moves (with a warning Event).
    pub(super) async fn redrive(
        &self,
        job: &BatchJob,
        ctx: &Context,
        round: i64,
    ) -> Result<(usize, bool)> {
        match self {
            Self::Sqs {
                url,
                dead_letter_url,
            } => {
                let given = job
                    .spec
                    .queue
                    .as_ref()
                    .is_some_and(|q| q.dead_letter_queue.is_some());
                match dead_letter_url.as_ref().filter(|_| !given) {
                    Some(dlq) => ctx.sqs.redrive(dlq, url, round, crate::redrive::PAGE).await,
                    None => {
                        ctx.event(
                            job,
                            true,
                            "RedriveUnsupported",
                            "the dead-letter queue was given, not made for this job, and may hold other queues' messages: nothing moved".to_owned(),
                        )
                        .await;
                        Ok((0, true))
                    }
                }
            }
            Self::Amqp { broker, queue, .. } => {
                ctx.amqp.redrive(broker, queue, crate::redrive::PAGE).await
            }
        }
    }

    /// How old the counts can be (see [`plan::settle`]).
    pub(super) fn lag(&self, ctx: &Context) -> Duration {
        match self {
            Self::Sqs { .. } => Duration::ZERO,
            Self::Amqp { .. } => ctx.amqp.stats_interval(),
        }
    }

    /// How the worker pods find the queue.
    pub(super) fn worker_queue(&self, job: &BatchJob) -> WorkerQueue {
        match self {
            Self::Sqs { url, .. } => WorkerQueue::Url(url.clone()),
            Self::Amqp {
                connection, queue, ..
            } => WorkerQueue::Amqp {
                secret: connection.secret_name.clone(),
                key: connection.key().to_owned(),
                queue: queue.clone(),
                max_attempts: plan::max_attempts(job),
            },
        }
    }
}

/// Deletes the queues the operator created for `job`: the queues whose
/// names it derived from the spec and that carry the job's uid (an owner
/// tag on SQS, a queue argument on RabbitMQ); never a queue the spec names
/// or status mentions.
/// Returns whether it deleted any.
/// A RabbitMQ broker whose Secret is gone cannot be reached: its queues
/// are left, with a warning Event, rather than blocking the deletion.
pub(super) async fn delete_created(job: &BatchJob, ctx: &Context) -> Result<bool> {
    if job.spec.source.sqs.is_some() || job.spec.source.amqp.is_some() {
        return Ok(false);
    }
    let namespace = job.namespace().unwrap_or_default();
    if let Some(connection) = job.spec.queue.as_ref().and_then(|q| q.amqp.as_ref()) {
        let named = job.spec.queue.as_ref().is_some_and(|q| q.name.is_some());
        let declared = job.status.as_ref().is_some_and(|s| s.queue_url.is_some());
        if named || !declared {
            return Ok(false);
        }
        return match broker(ctx, &namespace, connection).await? {
            Ok(broker) => {
                let queue = plan::amqp_queue(job, &namespace);
                let owner = job.metadata.uid.as_deref().unwrap_or_default();
                let deleted = ctx.amqp.delete_owned(&broker, &queue, owner).await?;
                if deleted == Some(false) {
                    ctx.event(
                        job,
                        true,
                        "QueuesNotDeleted",
                        format!(
                            "queue {queue} on {} was not declared for this BatchJob (no {} argument with its uid): left in place",
                            broker.public(),
                            shoal_protocol::topology::OWNER_ARGUMENT
                        ),
                    )
                    .await;
                }
                Ok(deleted == Some(true))
            }
            Err((_, message)) => {
                ctx.event(
                    job,
                    true,
                    "QueuesNotDeleted",
                    format!("cannot reach the broker to delete the queues: {message}"),
                )
                .await;
                Ok(false)
            }
        };
    }
    // What to delete comes from the spec and the queues' owner tags, never
    // from status (anyone allowed to write status could name any queue).
    // Status only saves the lookups for a job that never got as far as
    // creating a queue: one that recorded its queues, or stopped between
    // creating the dead-letter queue and the work queue (QueueRefused,
    // QueueNotOwned), is looked up.
    let created_some = job.status.as_ref().is_some_and(|s| {
        s.queue_url.is_some()
            || s.conditions.iter().any(|c| {
                c.type_ == "Ready" && matches!(c.reason.as_str(), "QueueRefused" | "QueueNotOwned")
            })
    });
    if !created_some {
        return Ok(false);
    }
    let settings = plan::queue_settings(job, &namespace);
    let mut deleted = false;
    for (name, given) in [
        (&settings.name, settings.name_given),
        (&settings.dead_letter_name, settings.dead_letter_name_given),
    ] {
        if given {
            continue;
        }
        if let Some(url) = ctx.sqs.owned_queue(name, &settings.owner).await? {
            ctx.sqs.delete_queue(&url).await?;
            deleted = true;
        }
    }
    Ok(deleted)
}

/// The uid a RabbitMQ queue the operator declares for `job` carries, when
/// it derived the name (`None`: the spec names the queue, whoever made it).
fn amqp_owner(job: &BatchJob) -> Option<&str> {
    let named =
        job.spec.source.amqp.is_some() || job.spec.queue.as_ref().is_some_and(|q| q.name.is_some());
    (!named).then(|| job.metadata.uid.as_deref().unwrap_or_default())
}

/// Whether the queue URL `url` names the queue `name` (its last segment).
fn names_queue(url: &str, name: &str) -> bool {
    url.rsplit('/').next() == Some(name)
}
