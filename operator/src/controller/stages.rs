//! Steps of a reconcile that depend on where the work comes from:
//! resolving the source (a pipeline stage waits for its upstream, see
//! [`crate::pipeline`]) and writing the results manifest when a fanned-out
//! job finishes (see [`crate::manifest`]).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;

use super::{Context, UPSTREAM_INTERVAL, expire, write_status};
use crate::backend::{Blocked, WorkQueue};
use crate::crd::{
    BatchJob, BatchJobStatus, FailedItem, OutputSpec, Phase, RedriveStatus, S3Source,
};
use crate::error::{Error, Result};
use crate::metrics::JobFigures;
use crate::pipeline::{self, Upstream};
use crate::plan;
use crate::{manifest, report};
use shoal_protocol::results::Usage;

/// Where a job's work comes from, as of this reconcile.
pub(super) enum Source {
    /// An existing queue: nothing to fan out.
    Queue,
    /// Objects to fan out.
    FanOut(S3Source),
    /// A pipeline stage that cannot start (yet, or ever).
    Blocked(Blocked),
}

/// Resolves the job's source; for a `batchJob` source, from the input
/// recorded in status or else from the upstream job.
pub(super) async fn source(
    job: &BatchJob,
    ctx: &Context,
    namespace: &str,
    previous: &BatchJobStatus,
) -> Result<Source> {
    let spec = &job.spec.source;
    if spec.sqs.is_some() || spec.amqp.is_some() {
        return Ok(Source::Queue);
    }
    if let Some(s3) = &spec.s3 {
        return Ok(Source::FanOut(s3.clone()));
    }
    let Some(stage) = &spec.batch_job else {
        return Err(Error::Invalid(format!(
            "batchjob {namespace}/{} names no source",
            job.name_any()
        )));
    };
    if let Some(input) = &previous.input {
        return Ok(Source::FanOut(pipeline::as_s3(stage, input)));
    }
    let upstream = ctx
        .caches
        .jobs
        .get(&ObjectRef::new(&stage.name).within(namespace));
    Ok(match pipeline::resolve(stage, upstream.as_deref()) {
        Upstream::Ready(s3) => Source::FanOut(s3),
        Upstream::Wait(reason, message) => Source::Blocked(Blocked::wait(reason, message)),
        Upstream::Fail(reason, message) => Source::Blocked(Blocked::fail(reason, message)),
    })
}

/// A job that cannot go on: a pipeline stage that cannot start, or a
/// broker Secret that cannot be used. Pending (a job that has started
/// keeps its phase and its workers, with `Ready=False`) and looked at
/// again after [`recheck_after`], or Failed for good.
pub(super) async fn blocked(
    job: &BatchJob,
    ctx: &Context,
    namespace: &str,
    mut status: BatchJobStatus,
    Blocked {
        fail,
        reason,
        message,
    }: Blocked,
    now: Timestamp,
) -> Result<Action> {
    let previous = job.status.clone().unwrap_or_default();
    status.phase = if fail {
        Phase::Failed
    } else if previous.start_time.is_some() {
        previous.phase
    } else {
        Phase::Pending
    };
    // The workers' condition stays as last seen: a blocked job's pods are
    // not looked at, and dropping it would announce them again later.
    let ready = plan::condition(
        &previous.conditions,
        "Ready",
        false,
        reason,
        message.clone(),
        job.metadata.generation,
        now,
    );
    let lifecycle = plan::lifecycle_conditions(
        &previous.conditions,
        (status.phase, job.spec.suspend == Some(true)),
        &ready,
        job.metadata.generation,
        now,
    );
    status.conditions = std::iter::once(ready)
        .chain(crate::health::kept(&previous.conditions))
        .chain(lifecycle)
        .collect();
    if fail {
        status.completion_time = Some(Time(now));
        status.usage =
            crate::usage::count_workers(status.usage.as_ref(), status.ready_workers, true, now);
    }
    let first = !previous
        .conditions
        .iter()
        .any(|c| c.type_ == "Ready" && c.reason == reason);
    if first {
        ctx.event(job, fail, reason, message);
    }
    if fail && !previous.phase.is_finished() {
        ctx.metrics.finished(Phase::Failed);
    }
    if status != previous {
        write_status(job, ctx, namespace, &status).await?;
    }
    ctx.metrics.set_job(
        namespace,
        &job.name_any(),
        Some(JobFigures {
            waiting: status.chunks.visible,
            in_flight: status.chunks.in_flight,
            desired: i64::from(status.desired_workers),
            ready: i64::from(status.ready_workers),
            dead_lettered: status.chunks.dead_lettered,
            phase: status.phase,
        }),
    );
    if fail {
        expire(job, ctx, namespace, &status, now).await
    } else {
        Ok(Action::requeue(recheck_after(reason)))
    }
}

/// How soon a job blocked for `reason` is looked at again. A spec change
/// starts a reconcile at once whatever this says; the interval is for
/// what changes outside the spec: an upstream job (soon), a queue or a
/// Secret someone fixes by hand (10 s), an admission policy (a minute:
/// each look at a refused spec is a dry-run request to the API server).
pub(super) fn recheck_after(reason: &str) -> std::time::Duration {
    match reason {
        "SpecInvalid" => std::time::Duration::from_secs(60),
        r if r.starts_with("Queue") || r.starts_with("Broker") => {
            std::time::Duration::from_secs(10)
        }
        _ => UPSTREAM_INTERVAL,
    }
}

/// Moves one page of dead letters back for redrive `round`; returns the
/// redrive's status, also written at once (moved messages are not counted
/// twice if the reconcile fails later).
pub(super) async fn redrive_page(
    job: &BatchJob,
    ctx: &Context,
    namespace: &str,
    queue: &dyn WorkQueue,
    round: i64,
    status: &BatchJobStatus,
    now: Timestamp,
) -> Result<RedriveStatus> {
    let previous = job.status.clone().unwrap_or_default();
    let (moved, done) = super::queues::redrive(queue, ctx, job, round).await?;
    let redrive = crate::redrive::advance(previous.redrive.as_ref(), round, moved, done, now);
    let mut checkpoint = status.clone();
    checkpoint.redrive = Some(redrive.clone());
    write_status(job, ctx, namespace, &checkpoint).await?;
    if done {
        let moved = redrive.moved;
        let url = queue.url();
        tracing::info!(batchjob = %job.name_any(), namespace, round, moved, "redrive done");
        ctx.event(
            job,
            false,
            "Redriven",
            format!("moved {moved} dead letters back to {url} (redrive {round})"),
        );
    }
    Ok(redrive)
}

/// Writes the results manifest of a job that has just finished; returns
/// its `s3://` URL, the first failed items and what the workers'
/// attempts used.
pub(super) async fn write_manifest(
    job: &BatchJob,
    ctx: &Context,
    status: &BatchJobStatus,
    input: &S3Source,
    output: &OutputSpec,
) -> Result<(String, Vec<FailedItem>, Usage)> {
    let run = job.metadata.uid.clone().unwrap_or_else(|| job.name_any());
    let mut results = report::write(&ctx.s3, output, &run).await?;
    let failures = std::mem::take(&mut results.sample)
        .into_iter()
        .map(|record| FailedItem {
            item: record.item,
            attempts: i64::from(record.attempts),
            cause: record.cause,
            category: record.category,
            reason: record.reason.map(|r| plan::cut(&r, 256)),
        })
        .collect();
    let document = manifest::build(job, status, input, output, results);
    let key = manifest::key(&output.prefix);
    let body = serde_json::to_vec_pretty(&document).map_err(|e| Error::Output {
        location: format!("s3://{}/{key}", output.bucket),
        reason: format!("cannot encode the manifest: {e}"),
    })?;
    ctx.s3.put_json(&output.bucket, &key, body).await?;
    tracing::info!(
        batchjob = %job.name_any(),
        manifest = %key,
        succeeded = document.results.succeeded.items,
        failed = document.results.failed.items,
        unreadable = document.results.unreadable,
        "results manifest and failure report written"
    );
    Ok((
        format!("s3://{}/{key}", output.bucket),
        failures,
        document.results.usage,
    ))
}
