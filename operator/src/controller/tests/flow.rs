//! Whole reconciles against the mocked API server, an in-memory queue and
//! a scripted S3 listing: a fan-out from Splitting to Succeeded with its
//! scaling Events, a queue made again after it vanished, and an idle queue
//! job that waits for a change instead of polling.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_s3::primitives::SdkBody;
use http::{Method, StatusCode};
use kube::runtime::controller::Action;
use serde_json::{Value, json};

use super::{Call, Handle, JOBS, call, context_with, job, serve_until};
use k8s_openapi::api::apps::v1::Deployment;

use crate::backend::memory::MemoryQueue;
use crate::cadence;
use crate::controller::{Context, reconcile};
use crate::crd::{BatchJob, BatchJobStatus, Phase, SourceSpec};

const DEPLOYMENTS: &str = "/apis/apps/v1/namespaces/default/deployments";
const ACCOUNTS: &str = "/api/v1/namespaces/default/serviceaccounts";
const PODS: &str = "/api/v1/namespaces/default/pods";

/// ListObjectsV2 answers: `photo-00` … `photo-11` under `in/`, the first
/// ten in a page that says more follow, the last two after `start-after`.
fn listing() -> aws_sdk_s3::Client {
    let http = aws_smithy_http_client::test_util::infallible_client_fn(|request| {
        let query = request.uri().query().unwrap_or_default().to_owned();
        let (keys, truncated) = if query.contains("start-after") {
            (10..12, false)
        } else {
            (0..10, true)
        };
        let contents: String = keys
            .map(|n| {
                format!("<Contents><Key>in/photo-{n:02}.jpg</Key><Size>1000</Size></Contents>")
            })
            .collect();
        let body = format!(
            r#"<?xml version="1.0" encoding="UTF-8"?><ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>photos</Name><Prefix>in/</Prefix><IsTruncated>{truncated}</IsTruncated>{contents}</ListBucketResult>"#
        );
        http::Response::new(SdkBody::from(body))
    });
    let credentials = aws_sdk_s3::config::Credentials::new("test", "test", None, None, "test");
    let config = aws_sdk_s3::Config::builder()
        .behavior_version_latest()
        .region(aws_sdk_s3::config::Region::new("us-east-1"))
        .credentials_provider(credentials)
        .http_client(http)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

/// A minimal object of `kind` named `name`, as the API server answers an
/// apply.
fn object(api_version: &str, kind: &str, name: &str) -> Value {
    json!({
        "apiVersion": api_version,
        "kind": kind,
        "metadata": {"name": name, "namespace": "default", "resourceVersion": "7"}
    })
}

/// A scripted API call, by what the reconcile does with it.
#[derive(Clone, Copy)]
enum Expect {
    /// The server-side dry run of the workers' Deployment.
    DryRun,
    /// Applying the workers: their ServiceAccount, then their Deployment
    /// (the status follows, when the phase or the suspension changes).
    ApplyWorkers,
    /// Applying the workers' Deployment alone (new replicas, same content).
    ApplyDeployment,
    /// Applying the workers (their ServiceAccount, then their Deployment)
    /// beside the status write: the status goes out while the
    /// ServiceAccount's answer is awaited, so the API server sees the
    /// ServiceAccount, the status, then the Deployment.
    ApplyWorkersAndStatus,
    /// Applying the workers' Deployment alone (new replicas, same content)
    /// beside the status write: the Deployment, then the status.
    ApplyDeploymentAndStatus,
    /// A status write.
    Status,
    /// Listing the workers' pods.
    ListPods,
}
use Expect::{
    ApplyDeployment, ApplyDeploymentAndStatus, ApplyWorkers, ApplyWorkersAndStatus, DryRun,
    ListPods, Status,
};

/// The calls `steps` expect, in order.
fn script(steps: &[Expect]) -> Vec<Call> {
    let deployment = || {
        call(
            Method::PATCH,
            &format!("{DEPLOYMENTS}/thumbs-workers"),
            StatusCode::OK,
            object("apps/v1", "Deployment", "thumbs-workers"),
        )
    };
    let account = || {
        call(
            Method::PATCH,
            &format!("{ACCOUNTS}/thumbs-workers"),
            StatusCode::OK,
            object("v1", "ServiceAccount", "thumbs-workers"),
        )
    };
    steps
        .iter()
        .flat_map(|step| match step {
            DryRun => vec![deployment()],
            ApplyWorkersAndStatus => vec![account(), status_write(), deployment()],
            ApplyDeploymentAndStatus => vec![deployment(), status_write()],
            ApplyWorkers => vec![account(), deployment()],
            ApplyDeployment => vec![deployment()],
            Status => vec![status_write()],
            ListPods => vec![call(
                Method::GET,
                PODS,
                StatusCode::OK,
                json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": []}),
            )],
        })
        .collect()
}

/// What one reconcile did: its action, the bodies of the scripted calls,
/// the Event reasons.
type Outcome = (Action, Vec<Value>, Vec<String>);

/// One reconcile of `job` in `ctx` against `script`; gives the mock's
/// handle back for the next.
async fn step(
    ctx: &Arc<Context>,
    handle: Handle,
    job: &BatchJob,
    script: Vec<Call>,
) -> (Handle, Outcome) {
    let (done, finished) = tokio::sync::oneshot::channel::<()>();
    let server = serve_until(handle, script, async move {
        let _ = finished.await;
    });
    let action = tokio::time::timeout(
        Duration::from_secs(10),
        reconcile(Arc::new(job.clone()), ctx.clone()),
    )
    .await
    .expect("reconcile finished")
    .expect("reconcile succeeded");
    // Events are written beside the reconcile: the step's are those it
    // handed over.
    ctx.events.flush().await;
    let _ = done.send(());
    let (handle, bodies, events) = server.await.expect("the mock API server");
    (handle, (action, bodies, events))
}

/// The Deployment the last apply of `bodies` carried.
fn applied(bodies: &[Value]) -> &Value {
    bodies
        .iter()
        .rev()
        .find(|b| b["kind"] == "Deployment")
        .expect("a Deployment apply")
}

/// The status the last status write of `bodies` carried.
fn written(bodies: &[Value]) -> BatchJobStatus {
    let body = bodies
        .iter()
        .rev()
        .find(|b| b.get("status").is_some() && b["kind"] == "BatchJob")
        .expect("a status write");
    serde_json::from_value(body["status"].clone()).expect("a status")
}

fn status_write() -> Call {
    call(
        Method::PATCH,
        &format!("{JOBS}/thumbs/status"),
        StatusCode::OK,
        serde_json::to_value(job("thumbs", SourceSpec::default(), None, false)).expect("a job"),
    )
}

fn fan_out_job() -> BatchJob {
    let source: SourceSpec =
        serde_json::from_value(json!({"s3": {"bucket": "photos", "prefix": "in/"}}))
            .expect("a source");
    let mut job = job("thumbs", source, None, false);
    job.spec.output = None;
    job
}

/// A job consuming the memory queue `work`.
fn queue_job() -> BatchJob {
    let source: SourceSpec =
        serde_json::from_value(json!({"sqs": {"queueUrl": "memory://work"}})).expect("a source");
    job("thumbs", source, None, false)
}

/// A new context with a reconcile's mock; the mock is replaced per step.
fn bed(queue: &Arc<MemoryQueue>) -> (Arc<Context>, Handle) {
    context_with(Vec::new(), Vec::new(), queue.clone(), listing())
}

#[tokio::test]
async fn a_fan_out_goes_splitting_running_succeeded_with_one_scaling_each_way() {
    let queue = MemoryQueue::new("work");
    let (ctx, handle) = bed(&queue);
    let mut job = fan_out_job();

    // 1: dry run, queues made (checkpoint), the first page (one chunk of
    // ten, checkpointed), workers from 0 to 1, status.
    queue.set_counts(1, 0, 0);
    let (handle, (action, bodies, events)) = step(
        &ctx,
        handle,
        &job,
        script(&[DryRun, Status, Status, ApplyWorkers, Status]),
    )
    .await;
    let status = written(&bodies);
    assert_eq!(status.phase, Phase::Splitting);
    assert_eq!(status.queue_url.as_deref(), Some("memory://work"));
    assert_eq!(
        status.split.as_ref().map(|s| (s.chunks, s.done)),
        Some((1, false))
    );
    assert_eq!(
        action,
        Action::requeue(cadence::BUSY),
        "the next page at once"
    );
    assert_eq!(events, ["QueuesCreated", "Scaled", "Splitting"]);
    assert_eq!(queue.sent().len(), 1, "one chunk of ten photos");
    assert_eq!(applied(&bodies)["spec"]["replicas"], 1);

    // 2: the last page (one chunk of two, checkpointed, then done); the
    // Deployment the cache has not shown yet counts as applied: no second
    // apply, no Scaled. Fewer workers ready than asked, for the first
    // time: the pods are being made, and not listed yet.
    job.status = Some(status);
    queue.set_counts(1, 1, 0);
    let (handle, (action, bodies, events)) =
        step(&ctx, handle, &job, script(&[Status, Status, Status])).await;
    let status = written(&bodies);
    assert_eq!(status.phase, Phase::Running);
    assert_eq!(status.chunks.total, 2);
    assert_eq!(events, ["Running"]);
    assert_eq!(queue.sent().len(), 2);
    assert_eq!(action, Action::requeue(crate::health::LOOK_EVERY));

    // 3: drained: Succeeded, workers from 1 to 0 (the Deployment alone:
    // no pod is made, the ServiceAccount is as applied in 1).
    job.status = Some(status);
    queue.set_counts(0, 0, 0);
    let (_, (action, bodies, events)) =
        step(&ctx, handle, &job, script(&[ApplyDeployment, Status])).await;
    let status = written(&bodies);
    assert_eq!(status.phase, Phase::Succeeded);
    assert_eq!(status.chunks.succeeded, 2);
    assert_eq!(applied(&bodies)["spec"]["replicas"], 0);
    assert_eq!(events, ["Scaled", "Succeeded"]);
    assert_eq!(action, Action::await_change(), "no TTL: nothing more to do");
}

#[tokio::test]
async fn a_queue_that_vanished_is_made_again_and_said_once() {
    let queue = MemoryQueue::new("work");
    let (ctx, handle) = bed(&queue);
    let mut job = fan_out_job();
    job.status = Some(BatchJobStatus {
        phase: Phase::Running,
        queue_url: Some("memory://work".into()),
        dead_letter_queue_url: Some("memory://work-dlq".into()),
        split: Some(crate::crd::SplitCheckpoint {
            chunks: 2,
            done: true,
            ..Default::default()
        }),
        observed_generation: Some(1),
        start_time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::now(),
        )),
        ..BatchJobStatus::default()
    });
    queue.set(crate::backend::Reading::Missing);
    // No counts to decide from: nothing applied, nothing written.
    let (handle, (action, bodies, events)) = step(&ctx, handle, &job, Vec::new()).await;
    assert!(bodies.is_empty());
    assert_eq!(events, ["QueueRecreated"]);
    assert_eq!(queue.remade(), 1);
    assert_eq!(action, Action::requeue(cadence::ACTIVE), "counts soon");
    // The next reconcile reads the new queue's counts: no second remake.
    let (_, (_, _, events)) = step(&ctx, handle, &job, script(&[ApplyWorkers, Status])).await;
    assert_eq!(queue.remade(), 1);
    assert!(!events.contains(&"QueueRecreated".to_owned()), "{events:?}");
}

#[tokio::test]
async fn an_idle_queue_job_announces_no_scaling_and_waits_for_a_change() {
    let queue = MemoryQueue::new("work");
    let (ctx, handle) = bed(&queue);
    let job = queue_job();
    let (_, (action, bodies, events)) = step(
        &ctx,
        handle,
        &job,
        script(&[DryRun, Status, ApplyWorkers, Status]),
    )
    .await;
    assert_eq!(applied(&bodies)["spec"]["replicas"], 0);
    assert_eq!(written(&bodies).phase, Phase::Running);
    assert_eq!(events, ["QueuesCreated", "Running"], "no Scaled 0 -> 0");
    assert_eq!(action, Action::requeue(cadence::IDLE));
}

#[tokio::test]
async fn a_change_of_replicas_alone_applies_the_deployment_alone() {
    let queue = MemoryQueue::new("work");
    let (ctx, handle) = bed(&queue);
    let mut job = queue_job();
    let (handle, (_, bodies, _)) = step(
        &ctx,
        handle,
        &job,
        script(&[DryRun, Status, ApplyWorkers, Status]),
    )
    .await;
    assert_eq!(applied(&bodies)["spec"]["replicas"], 0);

    // A backlog: workers from none, so the ServiceAccount is applied again
    // (pods are about to be made; one deleted by hand comes back).
    job.status = Some(written(&bodies));
    queue.set_counts(30, 0, 0);
    let (handle, (_, bodies, events)) =
        step(&ctx, handle, &job, script(&[ApplyWorkersAndStatus])).await;
    let first = applied(&bodies)["spec"]["replicas"].as_i64().unwrap_or(0);
    assert!(first > 0, "{}", applied(&bodies));
    assert_eq!(events, ["Scaled"]);

    // More backlog: more replicas, the same pod template; the account was
    // applied with that content already. (No worker has been ready for a
    // while: the pods are looked at first.)
    job.status = Some(written(&bodies));
    queue.set_counts(300, 0, 0);
    ctx.pod_looks.seen_at(
        &crate::controller::job_key(&job),
        std::time::Instant::now()
            .checked_sub(crate::health::LOOK_EVERY)
            .expect("a clock older than the look interval"),
    );
    let (_, (_, bodies, events)) = step(
        &ctx,
        handle,
        &job,
        script(&[ListPods, ApplyDeploymentAndStatus]),
    )
    .await;
    assert_eq!(bodies[1]["kind"], "Deployment");
    assert!(
        bodies[1]["spec"]["replicas"].as_i64().unwrap_or(0) > first,
        "{}",
        bodies[1]
    );
    assert_eq!(events, ["Scaled"]);
}

#[tokio::test]
async fn workers_whose_pods_cannot_be_made_get_their_service_account_again() {
    // The Deployment as the operator left it (2 workers, applied by this
    // process before: same content), but its ReplicaSet cannot make pods.
    let queue = MemoryQueue::new("work");
    let (ctx, handle) = bed(&queue);
    let mut job = queue_job();
    let (handle, (_, bodies, _)) = step(
        &ctx,
        handle,
        &job,
        script(&[DryRun, Status, ApplyWorkers, Status]),
    )
    .await;
    let mut deployment: Deployment =
        serde_json::from_value(applied(&bodies).clone()).expect("the applied Deployment");
    deployment.metadata.resource_version = Some("9".into());
    deployment.metadata.generation = Some(1);
    deployment.status = Some(k8s_openapi::api::apps::v1::DeploymentStatus {
        conditions: Some(vec![k8s_openapi::api::apps::v1::DeploymentCondition {
            type_: crate::controller::caches::REPLICA_FAILURE.into(),
            status: "True".into(),
            reason: Some("FailedCreate".into()),
            ..Default::default()
        }]),
        ..Default::default()
    });
    drop(ctx);
    drop(handle);
    let (ctx, handle) = context_with(Vec::new(), vec![deployment], queue.clone(), listing());
    ctx.caches.settled("default", "thumbs-workers", Some(1));
    ctx.caches
        .account_applied_with("default", "thumbs-workers", "any".into());

    // Nothing else to change: the ServiceAccount alone is applied.
    job.status = Some(written(&bodies));
    let (_, (_, bodies, _)) = step(
        &ctx,
        handle,
        &job,
        vec![call(
            Method::PATCH,
            &format!("{ACCOUNTS}/thumbs-workers"),
            StatusCode::OK,
            object("v1", "ServiceAccount", "thumbs-workers"),
        )],
    )
    .await;
    assert_eq!(bodies[0]["kind"], "ServiceAccount");
}
