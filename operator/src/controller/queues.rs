//! The reconciler's side of the work queue (see [`crate::backend`]):
//! records what a backend made in status and publishes what it found as
//! Events.

use std::sync::Arc;

use kube::runtime::reflector::ObjectRef;

use super::{Context, write_status};
use crate::backend::{Backlog, Blocked, Reading, Redriven, Resolved, WorkQueue};
use crate::crd::{BatchJob, BatchJobStatus};
use crate::error::Result;

/// The queues step: the job's work queue from the backend. Queues made by
/// this call are recorded in `status` and written at once (a crash-safety
/// checkpoint: a restarted operator finds them), with an Event.
pub(super) async fn ensure(
    job: &BatchJob,
    ctx: &Context,
    namespace: &str,
    previous: &BatchJobStatus,
    status: &mut BatchJobStatus,
) -> Result<std::result::Result<Arc<dyn WorkQueue>, Blocked>> {
    let (queue, created) = match ctx.queues.resolve(job, namespace, previous).await? {
        Resolved::Ready(queue, created) => (queue, created),
        Resolved::Blocked(blocked) => return Ok(Err(blocked)),
    };
    if let Some(created) = created {
        status.queue_url = Some(queue.url());
        status.dead_letter_queue_url = Some(created.dead_letter_url);
        write_status(job, ctx, namespace, status).await?;
        ctx.event(job, false, created.reason, created.note);
    }
    Ok(Ok(queue))
}

/// The work queue's backlog and the dead-letter queue's (shared with the
/// other jobs on the queue, see [`super::backlogs`]); `None` while they are
/// unknown: the broker has no counts yet, or the queue is gone (then it is
/// made or declared again, with a warning Event).
pub(super) async fn backlogs(
    queue: &Arc<dyn WorkQueue>,
    ctx: &Context,
    job: &BatchJob,
) -> Result<Option<(Backlog, Backlog)>> {
    match ctx.backlogs.read(queue, ObjectRef::from_obj(job)).await? {
        Reading::Known(work, dead) => Ok(Some((work, dead))),
        Reading::NotYet => Ok(None),
        Reading::Missing => {
            ctx.backlogs.invalidate(queue.as_ref());
            let (reason, note) = queue.remake().await?;
            ctx.event(job, true, reason, note);
            Ok(None)
        }
    }
}

/// Moves one page of dead letters back for redrive `round`; returns how
/// many moved and whether none are left. A queue nothing can be moved
/// from says why in a warning Event and counts as done.
pub(super) async fn redrive(
    queue: &dyn WorkQueue,
    ctx: &Context,
    job: &BatchJob,
    round: i64,
) -> Result<(usize, bool)> {
    match queue.redrive(round).await? {
        Redriven::Moved { moved, done } => Ok((moved, done)),
        Redriven::Unsupported(note) => {
            ctx.event(job, true, "RedriveUnsupported", note);
            Ok((0, true))
        }
    }
}

/// Deletes the queues the operator made for `job`; returns whether it
/// deleted any. What it had to leave is said in a warning Event.
pub(super) async fn delete_created(job: &BatchJob, ctx: &Context) -> Result<bool> {
    let deleted = ctx.queues.delete_created(job).await?;
    if let Some((reason, note)) = deleted.warning {
        ctx.event(job, true, reason, note);
    }
    Ok(deleted.any)
}
