//! The SQS backend: a queue the job was given (`source.sqs`), or the FIFO
//! work and dead-letter queues the operator creates for a fan-out.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use kube::ResourceExt;

use super::{Backlog, Created, Deleted, Reading, Redriven, Resolved, Warning, WorkQueue};
use crate::crd::{BatchJob, BatchJobStatus};
use crate::error::{Error, Result};
use crate::plan;
use crate::sqs::{QueueSettings, Sqs};
use crate::workload::WorkerQueue;

/// An SQS work queue.
pub struct SqsQueue {
    sqs: Sqs,
    url: String,
    /// The dead-letter queue and the settings both were made from, when
    /// the operator made them (`None`: a queue the job was given).
    made: Option<(String, QueueSettings)>,
    /// The dead-letter queue was given (`queue.deadLetterQueue`): it may
    /// hold other queues' messages.
    dead_letter_given: bool,
}

/// The job's SQS queue: the one it names, else the ones status recorded
/// (when they are the ones the spec implies), else made now.
pub(super) async fn resolve(
    sqs: &Sqs,
    job: &BatchJob,
    namespace: &str,
    previous: &BatchJobStatus,
) -> Result<Resolved> {
    if let Some(given) = &job.spec.source.sqs {
        let queue = SqsQueue {
            sqs: sqs.clone(),
            url: given.queue_url.clone(),
            made: None,
            dead_letter_given: true,
        };
        return Ok(Resolved::Ready(Arc::new(queue), None));
    }
    let settings = plan::queue_settings(job, namespace);
    let dead_letter_given = job
        .spec
        .queue
        .as_ref()
        .is_some_and(|q| q.dead_letter_queue.is_some());
    // Status is writable by more people than the spec: its URLs are used
    // only when they name the queues the spec implies.
    if let (Some(url), Some(dlq)) = (&previous.queue_url, &previous.dead_letter_queue_url)
        && names_queue(url, &settings.name)
        && names_queue(dlq, &settings.dead_letter_name)
    {
        let queue = SqsQueue {
            sqs: sqs.clone(),
            url: url.clone(),
            made: Some((dlq.clone(), settings)),
            dead_letter_given,
        };
        return Ok(Resolved::Ready(Arc::new(queue), None));
    }
    let queues = match sqs.ensure_queues(&settings).await? {
        Ok(queues) => queues,
        Err(unusable) => return Ok(Resolved::Blocked(unusable.into())),
    };
    let created = Created {
        dead_letter_url: queues.dead_letter_url.clone(),
        reason: "QueuesCreated",
        note: format!(
            "work queue {}, dead-letter queue {}",
            queues.url, queues.dead_letter_url
        ),
    };
    let queue = SqsQueue {
        sqs: sqs.clone(),
        url: queues.url,
        made: Some((queues.dead_letter_url, settings)),
        dead_letter_given,
    };
    Ok(Resolved::Ready(Arc::new(queue), Some(created)))
}

#[async_trait]
impl WorkQueue for SqsQueue {
    fn url(&self) -> String {
        self.url.clone()
    }

    fn key(&self) -> String {
        let dead_letter = self.made.as_ref().map_or("", |(dlq, _)| dlq.as_str());
        format!("sqs {} {dead_letter}", self.url)
    }

    fn lag(&self) -> Duration {
        Duration::ZERO
    }

    fn worker_queue(&self) -> WorkerQueue {
        WorkerQueue::Url(self.url.clone())
    }

    async fn send(&self, bodies: Vec<(String, String)>) -> Result<()> {
        self.sqs.send_batch(&self.url, &bodies).await
    }

    async fn poll(&self) -> Result<Reading> {
        let work = self.sqs.backlog(&self.url).await?;
        let dead = match &self.made {
            Some((dlq, _)) => self.sqs.backlog(dlq).await?,
            None => Some(Backlog::default()),
        };
        Ok(match (work, dead) {
            (Some(work), Some(dead)) => Reading::Known(work, dead),
            _ => Reading::Missing,
        })
    }

    async fn remake(&self) -> Result<Warning> {
        let Some((_, settings)) = &self.made else {
            // A queue the job was given: not the operator's to make.
            return Err(Error::Queue {
                queue: self.url.clone(),
                what: "reading the backlog",
                reason: "the queue does not exist".into(),
            });
        };
        Ok(match self.sqs.ensure_queues(settings).await? {
            Ok(_) => (
                "QueueRecreated",
                format!(
                    "queue {} or its dead-letter queue was missing: created it again",
                    self.url
                ),
            ),
            Err(unusable) => (unusable.reason(), unusable.to_string()),
        })
    }

    /// Only from the dead-letter queue the operator made for this job: one
    /// it was given (with `source.sqs` or `queue.deadLetterQueue`) may hold
    /// other queues' messages, so nothing moves.
    async fn redrive(&self, round: i64) -> Result<Redriven> {
        match self.made.as_ref().filter(|_| !self.dead_letter_given) {
            Some((dlq, _)) => {
                let (moved, done) = self
                    .sqs
                    .redrive(dlq, &self.url, round, crate::redrive::PAGE)
                    .await?;
                Ok(Redriven::Moved { moved, done })
            }
            None => Ok(Redriven::Unsupported(
                "the dead-letter queue was given, not made for this job, and may hold other queues' messages: nothing moved".to_owned(),
            )),
        }
    }
}

/// Deletes the queues the operator created for `job`: what to delete
/// comes from the spec and the queues' owner tags, never from status
/// (anyone allowed to write status could name any queue). Status only
/// saves the lookups for a job that never got as far as creating a queue:
/// one that recorded its queues, or stopped between creating the
/// dead-letter queue and the work queue (QueueRefused, QueueNotOwned), is
/// looked up.
pub(super) async fn delete_created(sqs: &Sqs, job: &BatchJob) -> Result<Deleted> {
    let created_some = job.status.as_ref().is_some_and(|s| {
        s.queue_url.is_some()
            || s.conditions.iter().any(|c| {
                c.type_ == "Ready" && matches!(c.reason.as_str(), "QueueRefused" | "QueueNotOwned")
            })
    });
    if !created_some {
        return Ok(Deleted::default());
    }
    let namespace = job.namespace().unwrap_or_default();
    let settings = plan::queue_settings(job, &namespace);
    let mut deleted = Deleted::default();
    for (name, given) in [
        (&settings.name, settings.name_given),
        (&settings.dead_letter_name, settings.dead_letter_name_given),
    ] {
        if given {
            continue;
        }
        if let Some(url) = sqs.owned_queue(name, &settings.owner).await? {
            sqs.delete_queue(&url).await?;
            deleted.any = true;
        }
    }
    Ok(deleted)
}

/// Whether the queue URL `url` names the queue `name` (its last segment).
fn names_queue(url: &str, name: &str) -> bool {
    url.rsplit('/').next() == Some(name)
}
