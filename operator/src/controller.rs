//! The BatchJob reconciler, in named steps: validate, observe, decide,
//! apply, update status. Only `observe`, `apply` and the status write talk
//! to the API server or the queue; the objects come from [`workload`] and
//! the replica count from [`scaling`], both pure.
//!
//! Contract:
//! - Idempotent: every reconcile recomputes the Deployment from the
//!   BatchJob and the observed backlog and server-side applies it (field
//!   manager `shoal-operator`) unless the Deployment in the cluster carries
//!   the hash of that same content (`shoal.dev/applied-hash`) and the same
//!   replicas; applying twice changes nothing.
//! - While a job is active it is reconciled every second, so replicas follow
//!   a backlog change within about a second plus one `GetQueueAttributes`
//!   round trip.
//! - Built so far: `source.sqs` (an existing queue, runs until deleted)
//!   and `source.s3` (queues created, prefix fanned out with checkpoints,
//!   Succeeded or Failed from the queue counts). `source.batchJob` is not
//!   built yet; such jobs get a `Ready=False` condition saying so.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde_json::json;

use crate::crd::{BatchJob, BatchJobStatus, ChunkCounts, Phase, SplitCheckpoint};
use crate::error::{Error, Result};
use crate::fanout;
use crate::metrics::{JobFigures, Metrics};
use crate::s3::S3;
use crate::scaling::{self, Policy};
use crate::sqs::{Backlog, QueueSettings, Sqs};
use crate::workload::{self, Wiring};

/// Field manager of everything the operator writes.
pub const MANAGER: &str = "shoal-operator";

/// Finalizer that deletes the queues the operator created.
pub const FINALIZER: &str = "shoal.dev/cleanup";

/// How often an active job is looked at.
pub const ACTIVE_INTERVAL: Duration = Duration::from_secs(1);

/// What every reconcile shares.
pub struct Context {
    /// Kubernetes client.
    pub client: Client,
    /// SQS client.
    pub sqs: Sqs,
    /// S3 client (fan-out listings).
    pub s3: S3,
    /// Publishes Kubernetes Events about BatchJobs.
    pub recorder: Recorder,
    /// The operator's metrics.
    pub metrics: Arc<Metrics>,
}

impl Context {
    /// Publishes an Event on `job`; a failure is logged, never fatal.
    async fn event(&self, job: &BatchJob, warning: bool, reason: &str, note: String) {
        let event = KubeEvent {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.to_owned(),
            note: Some(note),
            action: "Reconcile".to_owned(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, &job.object_ref(&())).await {
            tracing::warn!(batchjob = %job.name_any(), reason, error = %e, "cannot publish event");
        }
    }
}

/// Scaling policy of `job`, with the CRD's defaults.
pub fn policy(job: &BatchJob) -> Policy {
    let scaling = job.spec.scaling.clone().unwrap_or_default();
    let concurrency = job
        .spec
        .handler
        .concurrency
        .unwrap_or(workload::DEFAULT_CONCURRENCY);
    let min = scaling.min_workers.unwrap_or(0).max(0);
    Policy {
        min,
        // The CRD checks min <= max only when both are set.
        max: scaling.max_workers.unwrap_or(10).max(min),
        target_per_worker: scaling
            .target_backlog_per_worker
            .map_or(10 * i64::from(concurrency), i64::from),
        scale_down_delay: Duration::from_secs(
            u64::try_from(scaling.scale_down_delay_seconds.unwrap_or(30)).unwrap_or(0),
        ),
        max_step: scaling.max_step.unwrap_or(10),
    }
}

/// The queue the workers consume, when this kind of source is built.
pub fn queue_url(job: &BatchJob) -> Option<String> {
    job.spec.source.sqs.as_ref().map(|s| s.queue_url.clone())
}

/// `s3://bucket/prefix` of the job's outputs.
pub fn output_location(job: &BatchJob) -> Option<String> {
    job.spec
        .output
        .as_ref()
        .map(|o| format!("s3://{}/{}", o.bucket, o.prefix))
}

/// `condition` with its transition time kept from `previous` when its
/// status did not change.
fn condition(
    previous: &[Condition],
    type_: &str,
    ok: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    let status = if ok { "True" } else { "False" };
    let since = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map_or(Time(now), |c| c.last_transition_time.clone());
    Condition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message,
        observed_generation: generation,
        last_transition_time: since,
    }
}

/// Name of the work queue the operator creates for `job`: `queue.name`, or
/// `shoal-<namespace>-<name>` in SQS's alphabet, at most 76 characters (room
/// for `-dlq`).
pub fn queue_settings(job: &BatchJob, namespace: &str) -> QueueSettings {
    let spec = job.spec.queue.clone().unwrap_or_default();
    let name = spec.name.unwrap_or_else(|| {
        let raw = format!("shoal-{namespace}-{}", job.name_any());
        raw.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '-'
                }
            })
            .take(76)
            .collect()
    });
    let timeout = job
        .spec
        .handler
        .timeout_seconds
        .unwrap_or(workload::DEFAULT_TIMEOUT_SECONDS);
    QueueSettings {
        dead_letter_name: spec
            .dead_letter_queue
            .unwrap_or_else(|| format!("{name}-dlq")),
        name,
        max_receive_count: spec.max_receive_count.unwrap_or(5),
        visibility_timeout: spec
            .visibility_timeout_seconds
            .unwrap_or_else(|| (timeout.saturating_mul(6)).clamp(30, 43_200)),
    }
}

/// Whether `dead_lettered` of `total` chunks is more than the failure
/// policy tolerates (nothing, when it is unset).
pub fn tolerance_exceeded(job: &BatchJob, dead_lettered: i64, total: i64) -> bool {
    let policy = job.spec.failure_policy.clone().unwrap_or_default();
    if policy.max_failed_chunks.is_none() && policy.max_failed_percent.is_none() {
        return dead_lettered > 0;
    }
    let over_count = policy
        .max_failed_chunks
        .is_some_and(|max| dead_lettered > max);
    let over_percent = policy.max_failed_percent.is_some_and(|pct| {
        dead_lettered.saturating_mul(100) > i64::from(pct).saturating_mul(total)
    });
    over_count || over_percent
}

/// Chunk counts and phase of a fan-out job from its queues: `backlog` of
/// the work queue, `dead` of the dead-letter queue.
pub fn fanout_progress(
    job: &BatchJob,
    split: &SplitCheckpoint,
    backlog: Backlog,
    dead: Backlog,
) -> (ChunkCounts, Phase) {
    let total = split.chunks;
    let dead_lettered = dead.total();
    let pending = backlog.total();
    let counts = ChunkCounts {
        total,
        succeeded: total
            .saturating_sub(pending)
            .saturating_sub(dead_lettered)
            .max(0),
        dead_lettered,
        in_flight: backlog.in_flight,
        visible: backlog.visible,
    };
    let phase = if tolerance_exceeded(job, dead_lettered, total) {
        Phase::Failed
    } else if !split.done {
        Phase::Splitting
    } else if pending == 0 {
        Phase::Succeeded
    } else {
        Phase::Running
    };
    (counts, phase)
}

/// The deployment's replicas and ready replicas, if it exists.
/// What the operator last applied to the Deployment, as a hash in this
/// annotation: an unchanged Deployment is not applied again.
pub const APPLIED_HASH: &str = "shoal.dev/applied-hash";

/// The Deployment as observed: replicas, ready replicas, applied hash.
struct ObservedDeployment {
    replicas: Option<i32>,
    ready: i32,
    applied_hash: Option<String>,
}

async fn observe_deployment(
    job: &BatchJob,
    ctx: &Context,
    namespace: &str,
) -> Result<ObservedDeployment> {
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), namespace);
    let name = workload::deployment_name(job);
    let existing = deployments
        .get_opt(&name)
        .await
        .map_err(Error::kube(format!(
            "reading deployment {namespace}/{name}"
        )))?;
    Ok(ObservedDeployment {
        replicas: existing
            .as_ref()
            .and_then(|d| d.spec.as_ref())
            .and_then(|s| s.replicas),
        ready: existing
            .as_ref()
            .and_then(|d| d.status.as_ref())
            .and_then(|s| s.ready_replicas)
            .unwrap_or(0),
        applied_hash: existing
            .as_ref()
            .and_then(|d| d.metadata.annotations.as_ref())
            .and_then(|a| a.get(APPLIED_HASH))
            .cloned(),
    })
}

async fn write_status(
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

/// Server-side applies the Deployment unless the one in the cluster was
/// applied from the same content (and still has the replicas asked for).
async fn apply_deployment(
    job: &BatchJob,
    ctx: &Context,
    namespace: &str,
    wiring: &Wiring,
    observed: &ObservedDeployment,
) -> Result<()> {
    let mut deployment = workload::deployment(job, wiring);
    let hash = {
        use sha2::{Digest, Sha256};
        let bytes = serde_json::to_vec(&deployment).unwrap_or_default();
        let digest = Sha256::digest(&bytes);
        digest
            .iter()
            .take(12)
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    if observed.applied_hash.as_deref() == Some(hash.as_str())
        && observed.replicas == Some(wiring.replicas)
    {
        return Ok(());
    }
    deployment
        .metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(APPLIED_HASH.to_owned(), hash);
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), namespace);
    let name = workload::deployment_name(job);
    deployments
        .patch(
            &name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&deployment),
        )
        .await
        .map_err(Error::kube(format!(
            "applying deployment {namespace}/{name}"
        )))?;
    Ok(())
}

/// `namespace/name`, the key of a job in the metrics' bookkeeping.
fn job_key(job: &BatchJob) -> String {
    format!("{}/{}", job.namespace().unwrap_or_default(), job.name_any())
}

/// A finished job: deleted once `ttlSecondsAfterFinished` has passed since
/// its completion, else looked at again then.
async fn expire(
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
    ctx.metrics.set_job(&job_key(job), None);
    let created =
        job.spec.source.s3.is_some() && job.spec.queue.as_ref().is_none_or(|q| q.name.is_none());
    if created && let Some(status) = &job.status {
        for url in [&status.queue_url, &status.dead_letter_queue_url]
            .into_iter()
            .flatten()
        {
            ctx.sqs.delete_queue(url).await?;
        }
        ctx.event(
            job,
            false,
            "QueuesDeleted",
            "deleted the work and dead-letter queues".into(),
        )
        .await;
    }
    Ok(Action::await_change())
}

/// One reconcile of `job`, timed and counted.
pub async fn reconcile(job: Arc<BatchJob>, ctx: Arc<Context>) -> Result<Action> {
    let timer = ctx.metrics.duration.start_timer();
    let result = reconcile_inner(job, ctx.clone()).await;
    timer.observe_duration();
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
            Finalizer::Apply(job) => apply(job, ctx.clone()).await,
            Finalizer::Cleanup(job) => cleanup(&job, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(e.to_string()))
}

/// Reconciles a live (not deleted) `job`.
async fn apply(job: Arc<BatchJob>, ctx: Arc<Context>) -> Result<Action> {
    // Validate.
    let namespace = job
        .namespace()
        .ok_or_else(|| Error::Invalid(format!("batchjob {} has no namespace", job.name_any())))?;
    let previous = job.status.clone().unwrap_or_default();
    let now = Timestamp::now();
    if previous.phase.is_finished() {
        return expire(&job, &ctx, &namespace, &previous, now).await;
    }
    let generation = job.metadata.generation;
    let mut status = previous.clone();
    status.observed_generation = generation;
    status.start_time = previous.start_time.clone().or(Some(Time(now)));

    // Queues.
    let spec = &job.spec;
    let (url, dead_letter_url) = if let Some(sqs) = &spec.source.sqs {
        (sqs.queue_url.clone(), None)
    } else if spec.source.s3.is_some() {
        match (&previous.queue_url, &previous.dead_letter_queue_url) {
            (Some(url), Some(dlq)) => (url.clone(), Some(dlq.clone())),
            _ => {
                let queues = ctx
                    .sqs
                    .ensure_queues(&queue_settings(&job, &namespace))
                    .await?;
                status.queue_url = Some(queues.url.clone());
                status.dead_letter_queue_url = Some(queues.dead_letter_url.clone());
                write_status(&job, &ctx, &namespace, &status).await?;
                ctx.event(
                    &job,
                    false,
                    "QueuesCreated",
                    format!(
                        "work queue {}, dead-letter queue {}",
                        queues.url, queues.dead_letter_url
                    ),
                )
                .await;
                (queues.url, Some(queues.dead_letter_url))
            }
        }
    } else {
        status.conditions = vec![condition(
            &previous.conditions,
            "Ready",
            false,
            "NotImplemented",
            "fan-out of batchJob sources is not built yet".into(),
            generation,
            now,
        )];
        write_status(&job, &ctx, &namespace, &status).await?;
        return Ok(Action::await_change());
    };
    status.queue_url = Some(url.clone());

    // Fan out (one listing page per reconcile, checkpointed per batch).
    if let Some(source) = &spec.source.s3 {
        let from = previous.split.clone().unwrap_or_default();
        if !from.done {
            status.phase = Phase::Splitting;
            let progress = fanout::step(&ctx.s3, &ctx.sqs, &url, source, from, |progress| {
                let mut checkpoint = status.clone();
                checkpoint.split = Some(progress);
                checkpoint.chunks.total = checkpoint.split.as_ref().map_or(0, |s| s.chunks);
                let job = job.clone();
                let ctx = ctx.clone();
                let namespace = namespace.clone();
                async move { write_status(&job, &ctx, &namespace, &checkpoint).await }
            })
            .await?;
            status.split = Some(progress);
        }
    }

    // Observe.
    let backlog = ctx.sqs.backlog(&url).await?;
    let dead = match &dead_letter_url {
        Some(dlq) => ctx.sqs.backlog(dlq).await?,
        None => Backlog::default(),
    };
    let observed = observe_deployment(&job, &ctx, &namespace).await?;
    let (replicas, ready) = (observed.replicas, observed.ready);

    // Decide.
    let (chunks, phase) = match &status.split {
        Some(split) => fanout_progress(&job, split, backlog, dead),
        None => (
            ChunkCounts {
                visible: backlog.visible,
                in_flight: backlog.in_flight,
                ..previous.chunks.clone()
            },
            Phase::Running,
        ),
    };
    let policy = policy(&job);
    let current = replicas.unwrap_or(policy.min);
    let below_for = previous
        .scale_down_since
        .as_ref()
        .map(|since| Duration::try_from(now.duration_since(since.0)).unwrap_or(Duration::ZERO));
    let decision = if phase.is_finished() {
        scaling::Decision {
            replicas: 0,
            wanted: 0,
            below_for: None,
        }
    } else {
        scaling::decide(&policy, backlog.total(), current, below_for)
    };

    // Apply.
    let wiring = Wiring {
        queue_url: url.clone(),
        output: output_location(&job),
        replicas: decision.replicas,
    };
    apply_deployment(&job, &ctx, &namespace, &wiring, &observed).await?;
    if replicas != Some(decision.replicas) {
        tracing::info!(
            batchjob = %job.name_any(),
            namespace = %namespace,
            backlog = backlog.total(),
            from = replicas.unwrap_or(0),
            to = decision.replicas,
            "scaled workers"
        );
        ctx.event(
            &job,
            false,
            "Scaled",
            format!(
                "workers {} -> {} (backlog {})",
                replicas.unwrap_or(0),
                decision.replicas,
                backlog.total()
            ),
        )
        .await;
    }

    // Update status.
    if phase != previous.phase {
        tracing::info!(batchjob = %job.name_any(), namespace = %namespace, phase = ?phase, "phase changed");
        let note = format!(
            "{:?}: {} of {} chunks done, {} dead-lettered",
            phase, chunks.succeeded, chunks.total, chunks.dead_lettered
        );
        ctx.event(&job, phase == Phase::Failed, &format!("{phase:?}"), note)
            .await;
    }
    status.phase = phase;
    status.chunks = chunks;
    status.desired_workers = decision.replicas;
    status.ready_workers = ready;
    status.scale_down_since = decision
        .below_for
        .map(|_| previous.scale_down_since.clone().unwrap_or(Time(now)));
    status.completion_time = phase.is_finished().then_some(Time(now));
    let (ok, reason, message) = match phase {
        Phase::Succeeded => (
            true,
            "Succeeded",
            format!("all {} chunks done", status.chunks.total),
        ),
        Phase::Failed => (
            false,
            "FailureToleranceExceeded",
            format!(
                "{} of {} chunks dead-lettered",
                status.chunks.dead_lettered, status.chunks.total
            ),
        ),
        _ => (true, "Consuming", format!("workers consume {url}")),
    };
    status.conditions = vec![condition(
        &previous.conditions,
        "Ready",
        ok,
        reason,
        message,
        generation,
        now,
    )];
    if status != previous {
        write_status(&job, &ctx, &namespace, &status).await?;
    }
    ctx.metrics.set_job(
        &job_key(&job),
        Some(JobFigures {
            backlog: backlog.total(),
            desired: i64::from(decision.replicas),
            phase,
        }),
    );
    Ok(if phase == Phase::Splitting {
        Action::requeue(Duration::from_millis(50))
    } else if phase.is_finished() {
        expire(&job, &ctx, &namespace, &status, now).await?
    } else {
        Action::requeue(ACTIVE_INTERVAL)
    })
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

/// Runs the controller until SIGTERM or Ctrl-C.
pub async fn run(client: Client, sqs: Sqs, s3: S3, metrics: Arc<Metrics>) {
    let jobs: Api<BatchJob> = Api::all(client.clone());
    let deployments: Api<Deployment> = Api::all(client.clone());
    let recorder = Recorder::new(client.clone(), MANAGER.into());
    let ctx = Arc::new(Context {
        client,
        sqs,
        s3,
        recorder,
        metrics,
    });
    Controller::new(jobs, watcher::Config::default())
        .owns(deployments, watcher::Config::default())
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "reconcile outcome");
            }
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{BatchJobSpec, HandlerSpec, ScalingSpec, SourceSpec, SqsSource};

    fn job(scaling: Option<ScalingSpec>, concurrency: Option<u32>) -> BatchJob {
        BatchJob::new(
            "j",
            BatchJobSpec {
                handler: HandlerSpec {
                    image: "i".into(),
                    command: vec![],
                    args: vec![],
                    env: vec![],
                    memory_mib: None,
                    timeout_seconds: None,
                    concurrency,
                    service_account_name: None,
                },
                source: SourceSpec {
                    sqs: Some(SqsSource {
                        queue_url: "http://q".into(),
                    }),
                    ..SourceSpec::default()
                },
                queue: None,
                scaling,
                failure_policy: None,
                output: None,
                ttl_seconds_after_finished: None,
            },
        )
    }

    #[test]
    fn defaults_follow_the_crd_documentation() {
        let p = policy(&job(None, Some(4)));
        assert_eq!(
            p,
            Policy {
                min: 0,
                max: 10,
                target_per_worker: 40,
                scale_down_delay: Duration::from_secs(30),
                max_step: 10,
            }
        );
    }

    fn done(chunks: i64) -> SplitCheckpoint {
        SplitCheckpoint {
            after_key: Some("k".into()),
            chunks,
            items: chunks * 4,
            done: true,
        }
    }

    fn backlog(visible: i64, in_flight: i64) -> Backlog {
        Backlog { visible, in_flight }
    }

    #[test]
    fn succeeded_only_when_split_and_every_chunk_is_accounted_for() {
        let j = job(None, None);
        let (counts, phase) = fanout_progress(&j, &done(8), backlog(0, 0), backlog(0, 0));
        assert_eq!(phase, Phase::Succeeded);
        assert_eq!((counts.total, counts.succeeded), (8, 8));
        let (counts, phase) = fanout_progress(&j, &done(8), backlog(2, 1), backlog(0, 0));
        assert_eq!((phase, counts.succeeded), (Phase::Running, 5));
        let splitting = SplitCheckpoint {
            done: false,
            ..done(3)
        };
        let (_, phase) = fanout_progress(&j, &splitting, backlog(0, 0), backlog(0, 0));
        assert_eq!(
            phase,
            Phase::Splitting,
            "an empty queue mid-split is not the end"
        );
    }

    #[test]
    fn dead_letters_beyond_the_tolerance_fail_the_job() {
        let strict = job(None, None);
        let (counts, phase) = fanout_progress(&strict, &done(10), backlog(3, 0), backlog(1, 0));
        assert_eq!(
            (phase, counts.dead_lettered, counts.succeeded),
            (Phase::Failed, 1, 6)
        );
        let mut tolerant = job(None, None);
        tolerant.spec.failure_policy = Some(crate::crd::FailurePolicy {
            max_failed_chunks: None,
            max_failed_percent: Some(10),
        });
        assert!(!tolerance_exceeded(&tolerant, 1, 10));
        assert!(tolerance_exceeded(&tolerant, 2, 10));
        let (_, phase) = fanout_progress(&tolerant, &done(10), backlog(0, 0), backlog(1, 0));
        assert_eq!(phase, Phase::Succeeded, "within tolerance");
        tolerant.spec.failure_policy = Some(crate::crd::FailurePolicy {
            max_failed_chunks: Some(0),
            max_failed_percent: Some(50),
        });
        assert!(
            tolerance_exceeded(&tolerant, 1, 10),
            "either limit fails the job"
        );
    }

    #[test]
    fn created_queues_are_named_after_the_job_within_sqs_limits() {
        let mut j = job(None, Some(1));
        j.metadata.name = Some("thumbs.v2".into());
        let q = queue_settings(&j, "media");
        assert_eq!(q.name, "shoal-media-thumbs-v2");
        assert_eq!(q.dead_letter_name, "shoal-media-thumbs-v2-dlq");
        assert_eq!((q.max_receive_count, q.visibility_timeout), (5, 360));
        j.metadata.name = Some("x".repeat(200));
        let q = queue_settings(&j, "media");
        assert_eq!(q.name.len(), 76);
        assert!(q.dead_letter_name.len() <= 80);
    }

    #[test]
    fn a_min_above_the_default_max_raises_the_max() {
        let scaling = ScalingSpec {
            min_workers: Some(50),
            ..ScalingSpec::default()
        };
        let p = policy(&job(Some(scaling), None));
        assert_eq!((p.min, p.max), (50, 50));
        // And deciding with it never panics on inverted bounds.
        assert_eq!(scaling::decide(&p, 0, 0, None).replicas, 50);
    }
}
