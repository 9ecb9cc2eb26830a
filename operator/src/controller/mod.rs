//! The BatchJob reconciler, in named steps: validate, observe, decide,
//! apply, update status. Only `observe`, `apply` and the status write talk
//! to the API server or the queue; the objects come from [`workload`], the
//! replica count from [`scaling`] and every other decision from [`plan`],
//! all pure.
//!
//! Contract:
//! - Idempotent: every reconcile recomputes the Deployment from the
//!   BatchJob and the observed backlog and server-side applies it (field
//!   manager `shoal-operator`) unless the Deployment in the cluster carries
//!   the hash of that same content (`shoal.dev/applied-hash`) and the same
//!   replicas; applying twice changes nothing.
//! - Cost grows with change, not with the number of jobs: each distinct
//!   queue is read once per [`POLL_INTERVAL`] in one place and only the
//!   jobs whose counts changed are woken ([`backlogs`]); Deployments and
//!   upstream jobs are read from caches without `managedFields`
//!   ([`caches`]); a job is otherwise looked at again only for what
//!   changes with time ([`crate::cadence`]); at most
//!   [`Options::concurrency`] reconciles run at once. Replicas follow a
//!   backlog change within about one poll interval plus one apply.
//! - Sources: `source.sqs` and `source.amqp` (an existing queue, runs
//!   until deleted); `source.s3` (FIFO queues created, or RabbitMQ queues
//!   declared with `queue.amqp`, prefix fanned out with checkpoints,
//!   Succeeded or Failed from the queue counts, results manifest written
//!   at the end); `source.batchJob` (waits for the upstream to succeed,
//!   polled every [`UPSTREAM_INTERVAL`], then as `source.s3` over its
//!   output; see [`crate::pipeline`]).

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::reflector::ObjectRef;
use serde_json::json;

use crate::backend::Blocked;
use crate::crd::{BatchJob, BatchJobStatus, InputLocation, Phase};
use crate::error::{Error, Result};
use crate::events::Note;
use crate::fanout;
use crate::metrics::JobFigures;
use crate::plan;
use crate::redrive;
use crate::{cadence, decide};

mod backlogs;
mod caches;
mod context;
mod queues;
mod run;
mod scale_in;
mod stages;
mod workers;

use crate::usage;
use crate::workload::Wiring;
pub use backlogs::Backlogs;
pub use caches::Caches;
pub use context::Context;
pub use run::{DEFAULT_CONCURRENCY, DEFAULT_QUEUE_POLLS_PER_SECOND, Options, run};
pub use scale_in::Prober;
use scale_in::rank_idle_first;
use stages::{Source, blocked, redrive_page, source, write_manifest};
use workers::{
    apply_deployment, observe_deployment, observe_stuck_pods, refused_deployment, workers_condition,
};

/// Field manager of everything the operator writes.
pub const MANAGER: &str = "shoal-operator";

/// Finalizer that deletes the queues the operator created.
pub const FINALIZER: &str = "shoal.dev/cleanup";

/// How often each queue's counts are read unless told otherwise.
pub const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// How often a pipeline stage looks at the upstream job it waits for.
pub const UPSTREAM_INTERVAL: Duration = Duration::from_secs(2);

pub(crate) async fn write_status(
    job: &BatchJob,
    ctx: &Context,
    namespace: &str,
    status: &BatchJobStatus,
) -> Result<()> {
    let api: Api<BatchJob> = Api::namespaced(ctx.client.clone(), namespace);
    let name = job.name_any();
    let body = json!({
        "apiVersion": "shoal.dev/v1alpha1",
        "kind": "BatchJob",
        "status": status,
    });
    api.patch_status(
        &name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await
    .map_err(Error::kube(format!(
        "writing status of batchjob {namespace}/{name}"
    )))?;
    Ok(())
}

/// `namespace/name`, the key of a job in the metrics' bookkeeping.
pub(crate) fn job_key(job: &BatchJob) -> String {
    format!("{}/{}", job.namespace().unwrap_or_default(), job.name_any())
}

/// A finished job: deleted once `ttlSecondsAfterFinished` has passed since
/// its completion, else looked at again then.
pub(crate) async fn expire(
    job: &BatchJob,
    ctx: &Context,
    namespace: &str,
    status: &BatchJobStatus,
    now: Timestamp,
) -> Result<Action> {
    let (Some(ttl), Some(done)) = (job.spec.ttl_seconds_after_finished, &status.completion_time)
    else {
        return Ok(Action::await_change());
    };
    let age = Duration::try_from(now.duration_since(done.0)).unwrap_or(Duration::ZERO);
    let ttl = Duration::from_secs(u64::try_from(ttl).unwrap_or(0));
    if age < ttl {
        return Ok(Action::requeue(ttl - age));
    }
    let api: Api<BatchJob> = Api::namespaced(ctx.client.clone(), namespace);
    let name = job.name_any();
    tracing::info!(batchjob = %name, namespace, "deleting finished batchjob (ttlSecondsAfterFinished)");
    api.delete(&name, &Default::default())
        .await
        .map_err(Error::kube(format!(
            "deleting expired batchjob {namespace}/{name}"
        )))?;
    Ok(Action::await_change())
}

/// Deletes the queues the operator created for `job` (not a queue it was
/// given): the finalizer's cleanup.
async fn cleanup(job: &BatchJob, ctx: &Context) -> Result<Action> {
    let namespace = job.namespace().unwrap_or_default();
    ctx.metrics.set_job(&namespace, &job.name_any(), None);
    ctx.backlogs.forget(&ObjectRef::from_obj(job));
    ctx.caches
        .forget(&namespace, &crate::workload::deployment_name(job));
    if queues::delete_created(job, ctx).await? {
        ctx.event(
            job,
            false,
            "QueuesDeleted",
            "deleted the work and dead-letter queues".into(),
        );
    }
    Ok(Action::await_change())
}

/// Log target of the per-reconcile timing lines.
const TIMING: &str = "shoal_operator::reconcile_timing";

/// One reconcile of `job`, timed and counted.
pub async fn reconcile(job: Arc<BatchJob>, ctx: Arc<Context>) -> Result<Action> {
    let started = std::time::Instant::now();
    let name = tracing::enabled!(target: TIMING, tracing::Level::DEBUG).then(|| job_key(&job));
    let result = reconcile_inner(job, ctx.clone()).await;
    let took = started.elapsed();
    ctx.metrics.duration.observe(took.as_secs_f64());
    if let Some(name) = name {
        // One line per reconcile, for percentiles from raw samples
        // (`RUST_LOG=shoal_operator::reconcile_timing=debug`).
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        tracing::debug!(target: TIMING, batchjob = %name, micros, "reconciled");
    }
    let outcome = if result.is_ok() { "success" } else { "error" };
    ctx.metrics.reconciles.with_label_values(&[outcome]).inc();
    if let Err(e) = &result {
        ctx.metrics.errors.with_label_values(&[e.category()]).inc();
    }
    result
}

/// One reconcile of `job`, inside the cleanup finalizer.
async fn reconcile_inner(job: Arc<BatchJob>, ctx: Arc<Context>) -> Result<Action> {
    let namespace = job
        .namespace()
        .ok_or_else(|| Error::Invalid(format!("batchjob {} has no namespace", job.name_any())))?;
    let api: Api<BatchJob> = Api::namespaced(ctx.client.clone(), &namespace);
    finalizer(&api, FINALIZER, job, |event| async {
        match event {
            Finalizer::Apply(job) => apply(job, ctx.clone(), namespace.clone()).await,
            Finalizer::Cleanup(job) => cleanup(&job, &ctx).await,
        }
    })
    .await
    .map_err(|e| match e {
        // Keep the step's own error (and its metric category).
        kube::runtime::finalizer::Error::ApplyFailed(e)
        | kube::runtime::finalizer::Error::CleanupFailed(e) => e,
        other => Error::Finalizer(other.to_string()),
    })
}

/// Reconciles a live (not deleted) `job`.
async fn apply(job: Arc<BatchJob>, ctx: Arc<Context>, namespace: String) -> Result<Action> {
    // Decisions read the Deployment from the cache: never from one not
    // yet filled (a job at 10 workers would look like one at none).
    ctx.caches
        .deployments
        .wait_until_ready()
        .await
        .map_err(|_| Error::Config("the Deployment watch stopped".into()))?;
    let previous = job.status.clone().unwrap_or_default();
    let now = Timestamp::now();
    // A finished job runs again only for a redrive of the queues it had.
    let redrive_round = redrive::pending(&job, &previous);
    if previous.phase.is_finished() {
        match redrive_round {
            Some(round) if previous.queue_url.is_none() => {
                // Failed before it had queues: nothing to move, said once.
                let mut status = previous.clone();
                status.redrive = Some(redrive::advance(None, round, 0, true, now));
                write_status(&job, &ctx, &namespace, &status).await?;
                ctx.event(
                    &job,
                    true,
                    "RedriveUnsupported",
                    "the job has no queues: nothing moved".to_owned(),
                );
                return expire(&job, &ctx, &namespace, &status, now).await;
            }
            Some(_) => {}
            None => return expire(&job, &ctx, &namespace, &previous, now).await,
        }
    }
    let generation = job.metadata.generation;
    let mut status = previous.clone();
    status.observed_generation = generation;

    // Source.
    let spec = &job.spec;
    let fan_out = match source(&job, &ctx, &namespace, &previous).await? {
        Source::Queue => None,
        Source::FanOut(s3) => Some(plan::within_lease(&job, s3)),
        Source::Blocked(why) => return blocked(&job, &ctx, &namespace, status, why, now).await,
    };
    if spec.source.batch_job.is_some() {
        status.input = fan_out.as_ref().map(|s3| InputLocation {
            bucket: s3.bucket.clone(),
            prefix: s3.prefix.clone(),
        });
    }
    status.start_time = previous.start_time.clone().or(Some(Time(now)));

    // Validate what CEL cannot: the API server's own word on the workers,
    // before any queue exists (and again whenever the spec changes).
    if (previous.queue_url.is_none() || previous.observed_generation != generation)
        && let Some(message) = refused_deployment(&job, &ctx, &namespace).await?
    {
        return blocked(
            &job,
            &ctx,
            &namespace,
            status,
            Blocked::wait("SpecInvalid", message),
            now,
        )
        .await;
    }

    // Queues.
    let queue = match queues::ensure(&job, &ctx, &namespace, &previous, &mut status).await? {
        Ok(queue) => queue,
        Err(why) => return blocked(&job, &ctx, &namespace, status, why, now).await,
    };
    let url = queue.url();
    status.queue_url = Some(url.clone());

    // Redrive (one page of dead letters per reconcile). Counts that lag
    // (RabbitMQ's) must look drained for a while again from here: the
    // moved messages may not show in them yet.
    let mut drained_since = previous.drained_since.clone();
    if let Some(round) = redrive_round {
        drained_since = None;
        status.redrive =
            Some(redrive_page(&job, &ctx, &namespace, queue.as_ref(), round, &status, now).await?);
    }
    // Moving, or just moved: counts may not show the moved messages yet,
    // so the job is not finished from them (and keeps a worker).
    let moving = status.redrive.as_ref().is_some_and(|r| !r.done);
    let redriving = moving || redrive::settling(status.redrive.as_ref(), now, queue.lag());

    // Fan out (one listing page per reconcile, checkpointed per batch);
    // a suspended job keeps its checkpoint and enqueues nothing.
    let suspended = spec.suspend == Some(true);
    let mut bad_list: Option<String> = None;
    if let Some(source) = &fan_out {
        let from = previous.split.clone().unwrap_or_default();
        if !from.done && suspended {
            status.split = Some(from);
        } else if !from.done {
            status.phase = Phase::Splitting;
            let send = |bodies| queue.send(bodies);
            let checkpoint = |progress| {
                let mut checkpoint = status.clone();
                checkpoint.split = Some(progress);
                checkpoint.chunks.total = checkpoint.split.as_ref().map_or(0, |s| s.chunks);
                let job = job.clone();
                let ctx = ctx.clone();
                let namespace = namespace.clone();
                async move { write_status(&job, &ctx, &namespace, &checkpoint).await }
            };
            match fanout::step(&ctx.s3, source, from.clone(), send, checkpoint).await {
                Ok(progress) => status.split = Some(progress),
                // The job fails below (workers scaled to zero); what was
                // enqueued before stays counted.
                Err(Error::BadList { list, reason }) => {
                    bad_list = Some(format!("item list {list}: {reason}"));
                    status.split = Some(from);
                }
                Err(e) => return Err(e),
            }
        }
    }

    // Observe. Counts read before this reconcile sent chunks or moved dead
    // letters do not show them: read again (a drained-looking queue would
    // end the job with its last chunks still waiting).
    if status.split != previous.split || status.redrive != previous.redrive {
        ctx.backlogs.invalidate(queue.as_ref());
    }
    let Some((backlog, dead)) = queues::backlogs(&queue, &ctx, &job).await? else {
        // Counts not known yet (a queue declared moments ago): decide
        // nothing from an unknown backlog, look again soon.
        tracing::debug!(batchjob = %job.name_any(), queue = %url, "no queue counts yet");
        if status != previous {
            write_status(&job, &ctx, &namespace, &status).await?;
        }
        return Ok(Action::requeue(cadence::ACTIVE));
    };
    let observed = observe_deployment(&job, &ctx, &namespace);
    let (replicas, ready) = (observed.replicas, observed.ready);
    let looked = observe_stuck_pods(&job, &ctx, &namespace, &observed, now).await;

    // Decide.
    let workers = workers_condition(&job, &ctx, looked, &previous.conditions, now).await;
    let decision = decide::decide(decide::Observed {
        job: &job,
        previous: &previous,
        status,
        backlog,
        dead,
        replicas,
        ready,
        bad_list: bad_list.clone(),
        moving,
        redriving,
        drained_since,
        lag: queue.lag(),
        url: &url,
        workers,
        now,
    });
    let mut status = decision.status;
    let phase = status.phase;

    // The results manifest, before the status records the finish.
    if let (true, Some(input), Some(output)) = (phase.is_finished(), &fan_out, &spec.output) {
        let (manifest, failures, lambda) =
            write_manifest(&job, &ctx, &status, input, output).await?;
        status.manifest = Some(manifest);
        status.failures = failures;
        status.usage = Some(usage::with_lambda(status.usage.take(), &lambda));
    }

    // Apply.
    let wiring = Wiring {
        queue: queue.worker_queue(),
        output: plan::output_location(&job),
        input_bucket: fan_out.as_ref().map(|s3| s3.bucket.clone()),
        replicas: decision.replicas,
        host_image: ctx.host_image.clone(),
    };
    if let Some((from, to)) = decision.scaled
        && to < from
        && to > 0
    {
        rank_idle_first(&job, &ctx, &namespace, from).await;
    }
    // A phase or suspension change: the status says it only once the
    // Deployment follows (a finished job is never applied again, and its
    // Events are announced from this change alone).
    let milestone = decision.phase_changed || decision.suspension.is_some();
    // What to announce once the Deployment is applied (written beside the
    // reconcile, never waited for).
    let mut events: Vec<Note> = Vec::new();
    if let Some((from, to)) = decision.scaled {
        tracing::info!(
            batchjob = %job.name_any(),
            namespace = %namespace,
            backlog = backlog.total(),
            from,
            to,
            "scaled workers"
        );
        let note = format!("workers {from} -> {to} (backlog {})", backlog.total());
        events.push(Note::normal("Scaled", note));
    }
    if let Some(message) = &bad_list {
        events.push(Note::new(true, "ListInvalid", message.clone()));
    }
    if let Some((reason, note)) = decision.suspension {
        tracing::info!(batchjob = %job.name_any(), namespace = %namespace, reason, "suspension changed");
        events.push(Note::normal(reason, note));
    }
    if decision.phase_changed {
        tracing::info!(batchjob = %job.name_any(), namespace = %namespace, phase = ?phase, "phase changed");
        let note = format!(
            "{:?}: {} of {} chunks done, {} dead-lettered",
            phase, status.chunks.succeeded, status.chunks.total, status.chunks.dead_lettered
        );
        events.push(Note::new(
            phase == Phase::Failed,
            format!("{phase:?}"),
            note,
        ));
    }
    // Otherwise the Deployment and the status are written at once: neither
    // waits for the other. Replicas are decided from the Deployment (the
    // cache), never from the status, so a status written beside an apply
    // that failed misleads nothing: the reconcile is tried again and
    // applies the same decision.
    let apply = apply_deployment(&job, &ctx, &namespace, &wiring, &observed);
    let update = async {
        if status == previous {
            return Ok(());
        }
        write_status(&job, &ctx, &namespace, &status).await
    };
    let updated = if milestone {
        apply.await?;
        update.await
    } else {
        let (applied, updated) = tokio::join!(apply, update);
        applied?;
        updated
    };
    if decision.phase_changed {
        ctx.metrics.finished(phase);
    }
    ctx.announce(&job, events);
    updated?;
    ctx.metrics.set_job(
        &namespace,
        &job.name_any(),
        Some(JobFigures {
            waiting: backlog.visible,
            in_flight: backlog.in_flight,
            desired: i64::from(decision.replicas),
            ready: i64::from(status.ready_workers),
            dead_lettered: status.chunks.dead_lettered,
            phase,
        }),
    );
    if phase.is_finished() {
        ctx.backlogs.forget(&ObjectRef::from_obj(job.as_ref()));
        return expire(&job, &ctx, &namespace, &status, now).await;
    }
    Ok(Action::requeue(cadence::next_look(&decision.pending)))
}

/// Retry a failed reconcile after a short pause.
pub fn error_policy(job: Arc<BatchJob>, error: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(
        batchjob = %job.name_any(),
        category = error.category(),
        error = %error,
        "reconcile failed"
    );
    Action::requeue(Duration::from_secs(5))
}

#[cfg(test)]
mod tests;
