//! Reconcile decisions against a mocked Kubernetes API (tower-test): each
//! test scripts the API server's answers and checks the calls the
//! reconciler makes and the action it returns. The AWS clients point at a
//! closed port: these paths must not touch SQS or S3.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a panic is how a test reports failure"
)]

use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Client;
use kube::client::Body;
use kube::runtime::controller::Action;
use serde_json::Value;

use k8s_openapi::api::apps::v1::Deployment;
use kube::runtime::reflector::store::Writer;
use kube::runtime::watcher;

use super::{Backlogs, Caches, Context, FINALIZER, MANAGER, UPSTREAM_INTERVAL, reconcile};
use crate::backend::memory::{MemoryBackends, MemoryQueue};
use crate::crd::{
    BatchJob, BatchJobSource, BatchJobSpec, BatchJobStatus, HandlerSpec, OutputSpec, Phase,
    SourceSpec,
};
use crate::metrics::Metrics;
use crate::s3::S3;

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

/// One expected API call: method, path, and the answer (status, body).
struct Call {
    method: Method,
    path: String,
    status: StatusCode,
    answer: Value,
}

fn call(method: Method, path: &str, status: StatusCode, answer: Value) -> Call {
    Call {
        method,
        path: path.to_owned(),
        status,
        answer,
    }
}

/// A context whose Kubernetes client is the mock, whose caches hold
/// `cached` BatchJobs (and no Deployment), whose queue lives in memory, and
/// whose S3 client points at a port nothing listens on.
fn context(cached: Vec<BatchJob>) -> (Arc<Context>, Handle) {
    let credentials = aws_sdk_s3::config::Credentials::new("test", "test", None, None, "test");
    let s3 = aws_sdk_s3::Config::builder()
        .behavior_version_latest()
        .region(aws_sdk_s3::config::Region::new("us-east-1"))
        .endpoint_url("http://127.0.0.1:9")
        .credentials_provider(credentials)
        .build();
    context_with(
        cached,
        Vec::new(),
        MemoryQueue::new("work"),
        aws_sdk_s3::Client::from_conf(s3),
    )
}

/// A context whose Kubernetes client is the mock, whose caches hold
/// `cached` BatchJobs and `workers` Deployments, whose queue is `queue` and
/// whose S3 client is `s3`.
fn context_with(
    cached: Vec<BatchJob>,
    workers: Vec<Deployment>,
    queue: Arc<MemoryQueue>,
    s3: aws_sdk_s3::Client,
) -> (Arc<Context>, Handle) {
    let mut jobs = Writer::<BatchJob>::default();
    jobs.apply_watcher_event(&watcher::Event::InitDone);
    for job in cached {
        jobs.apply_watcher_event(&watcher::Event::Apply(job));
    }
    let mut deployments = Writer::<Deployment>::default();
    deployments.apply_watcher_event(&watcher::Event::InitDone);
    for deployment in workers {
        deployments.apply_watcher_event(&watcher::Event::Apply(deployment));
    }
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let metrics = Arc::new(Metrics::new(crate::metrics::DEFAULT_PER_JOB_LIMIT).unwrap());
    let ctx = Context {
        events: crate::events::Events::start(&client, MANAGER, metrics.clone()),
        client,
        queues: Arc::new(MemoryBackends { queue }),
        s3: S3::from_client(s3),
        metrics,
        pod_looks: crate::health::Looks::default(),
        scale_in: None,
        host_image: "shoal-host:test".into(),
        // Counts kept for no time: each reconcile reads what the test set.
        backlogs: Backlogs::new(Duration::ZERO, 100).0,
        caches: Caches::new(jobs.as_reader(), deployments.as_reader()),
    };
    (Arc::new(ctx), handle)
}

/// Answers the reconciler's calls from `script`, in order, until the
/// client is dropped; Event writes are answered on the side (echoed) and
/// counted by reason. Returns the bodies sent with the scripted calls, and
/// the Event reasons.
fn serve(handle: Handle, script: Vec<Call>) -> tokio::task::JoinHandle<(Vec<Value>, Vec<String>)> {
    let server = serve_until(handle, script, std::future::pending());
    tokio::spawn(async move {
        let (_, bodies, events) = server.await.unwrap();
        (bodies, events)
    })
}

/// [`serve`] until `done` resolves (the client lives on); returns the
/// handle too, for the next reconcile.
fn serve_until(
    mut handle: Handle,
    script: Vec<Call>,
    done: impl std::future::Future<Output = ()> + Send + 'static,
) -> tokio::task::JoinHandle<(Handle, Vec<Value>, Vec<String>)> {
    tokio::spawn(async move {
        let mut bodies = Vec::new();
        let mut events = Vec::new();
        let mut script = script.into_iter();
        tokio::pin!(done);
        loop {
            let next = tokio::select! {
                next = handle.next_request() => next,
                () = &mut done => None,
            };
            let Some((request, respond)) = next else {
                break;
            };
            let method = request.method().clone();
            let path = request.uri().path().to_owned();
            let bytes = request.into_body().collect_bytes().await.unwrap();
            let body: Value = if bytes.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&bytes).unwrap()
            };
            if path.contains("/events") {
                // A new Event (a repeat is a patch of the first's count).
                if method == Method::POST {
                    events.push(body["reason"].as_str().unwrap_or_default().to_owned());
                }
                let answer = serde_json::to_vec(&body).unwrap();
                respond.send_response(
                    Response::builder()
                        .status(StatusCode::CREATED)
                        .body(Body::from(answer))
                        .unwrap(),
                );
                continue;
            }
            let Some(expected) = script.next() else {
                panic!("unexpected call {method} {path}: {body}");
            };
            assert_eq!(
                (&method, path.as_str()),
                (&expected.method, expected.path.as_str()),
                "call {} of the script (body {body})",
                bodies.len() + 1
            );
            bodies.push(body);
            respond.send_response(
                Response::builder()
                    .status(expected.status)
                    .body(Body::from(serde_json::to_vec(&expected.answer).unwrap()))
                    .unwrap(),
            );
        }
        if let Some(next) = script.next() {
            panic!(
                "the reconciler stopped before {} {} (after {} calls: {bodies:?}; events {events:?})",
                next.method,
                next.path,
                bodies.len()
            );
        }
        (handle, bodies, events)
    })
}

/// BatchJob `name` in `default` with the given source and status, with the
/// finalizer already on it unless `fresh`.
fn job(name: &str, source: SourceSpec, status: Option<BatchJobStatus>, fresh: bool) -> BatchJob {
    let mut job = BatchJob::new(
        name,
        BatchJobSpec {
            handler: HandlerSpec::image("x"),
            template: None,
            source,
            queue: None,
            scaling: None,
            failure_policy: None,
            output: Some(OutputSpec {
                bucket: "photos".into(),
                prefix: format!("{name}/"),
            }),
            ttl_seconds_after_finished: None,
            suspend: None,
            redrive: None,
        },
    );
    job.metadata.namespace = Some("default".into());
    job.metadata.uid = Some(format!("uid-{name}"));
    job.metadata.generation = Some(1);
    job.metadata.resource_version = Some("1".into());
    if !fresh {
        job.metadata.finalizers = Some(vec![FINALIZER.into()]);
    }
    job.status = status;
    job
}

fn stage() -> SourceSpec {
    SourceSpec {
        batch_job: Some(BatchJobSource {
            name: "upstream".into(),
            max_items_per_chunk: None,
            max_bytes_per_chunk: None,
        }),
        ..SourceSpec::default()
    }
}

fn with_phase(phase: Phase) -> Option<BatchJobStatus> {
    Some(BatchJobStatus {
        phase,
        ..BatchJobStatus::default()
    })
}

const JOBS: &str = "/apis/shoal.dev/v1alpha1/namespaces/default/batchjobs";

async fn run(job: BatchJob, script: Vec<Call>) -> (Action, Vec<Value>, Vec<String>) {
    run_with(job, Vec::new(), script).await
}

/// [`run`], with `cached` BatchJobs in the operator's cache.
async fn run_with(
    job: BatchJob,
    cached: Vec<BatchJob>,
    script: Vec<Call>,
) -> (Action, Vec<Value>, Vec<String>) {
    let (ctx, handle) = context(cached);
    let server = serve(handle, script);
    let action = tokio::time::timeout(Duration::from_secs(10), reconcile(Arc::new(job), ctx))
        .await
        .expect("reconcile finished")
        .expect("reconcile succeeded");
    // The reconciler and its clients are gone: the mock sees no more calls.
    let (bodies, events) = server.await.unwrap();
    (action, bodies, events)
}

#[tokio::test]
async fn a_new_batchjob_first_gets_the_cleanup_finalizer() {
    let fresh = job("thumbs", stage(), None, true);
    let mut answer = fresh.clone();
    answer.metadata.finalizers = Some(vec![FINALIZER.into()]);
    let (action, bodies, events) = run(
        fresh,
        vec![call(
            Method::PATCH,
            &format!("{JOBS}/thumbs"),
            StatusCode::OK,
            serde_json::to_value(&answer).unwrap(),
        )],
    )
    .await;
    assert_eq!(action, Action::await_change());
    assert!(
        bodies[0].to_string().contains(FINALIZER),
        "the patch adds the finalizer: {}",
        bodies[0]
    );
    assert!(events.is_empty());
}

/// Reconciles stage `small` with `upstream` in the cache (or none); the
/// status write is the only call.
async fn reconcile_stage(upstream: Option<BatchJob>) -> (Action, Vec<Value>, Vec<String>) {
    let downstream = job("small", stage(), None, false);
    let answer = serde_json::to_value(&downstream).unwrap();
    run_with(
        downstream,
        upstream.into_iter().collect(),
        vec![call(
            Method::PATCH,
            &format!("{JOBS}/small/status"),
            StatusCode::OK,
            answer,
        )],
    )
    .await
}

fn upstream_in(phase: Phase) -> Option<BatchJob> {
    Some(job(
        "upstream",
        SourceSpec::default(),
        with_phase(phase),
        false,
    ))
}

#[tokio::test]
async fn a_stage_waits_for_an_upstream_that_is_still_running() {
    let (action, bodies, events) = reconcile_stage(upstream_in(Phase::Running)).await;
    assert_eq!(action, Action::requeue(UPSTREAM_INTERVAL));
    let status = &bodies[0]["status"];
    assert_eq!(status["phase"], "Pending");
    assert_eq!(status["conditions"][0]["reason"], "WaitingForUpstream");
    assert_eq!(status["conditions"][0]["status"], "False");
    assert!(status.get("startTime").is_none(), "not started: {status}");
    assert_eq!(events, ["WaitingForUpstream"]);
}

#[tokio::test]
async fn a_stage_whose_upstream_does_not_exist_waits_for_it() {
    let (action, bodies, _) = reconcile_stage(None).await;
    assert_eq!(action, Action::requeue(UPSTREAM_INTERVAL));
    assert_eq!(
        bodies[0]["status"]["conditions"][0]["reason"],
        "UpstreamNotFound"
    );
}

#[tokio::test]
async fn a_stage_whose_upstream_failed_fails_without_creating_queues() {
    let (action, bodies, events) = reconcile_stage(upstream_in(Phase::Failed)).await;
    // Finished without a TTL: nothing more to do until the job changes.
    assert_eq!(action, Action::await_change());
    let status = &bodies[0]["status"];
    assert_eq!(status["phase"], "Failed");
    assert_eq!(status["conditions"][0]["reason"], "UpstreamFailed");
    assert!(status["completionTime"].is_string(), "{status}");
    assert!(status.get("queueUrl").is_none(), "{status}");
    assert_eq!(events, ["UpstreamFailed"]);
}

#[tokio::test]
async fn a_finished_job_past_its_ttl_is_deleted_and_one_within_waits() {
    let finished = |ago_s: i64| {
        let mut j = job(
            "done",
            stage(),
            Some(BatchJobStatus {
                phase: Phase::Succeeded,
                completion_time: Some(Time(Timestamp::now() - SignedDuration::from_secs(ago_s))),
                ..BatchJobStatus::default()
            }),
            false,
        );
        j.spec.ttl_seconds_after_finished = Some(60);
        j
    };
    let expired = finished(120);
    let (action, _, events) = run(
        expired.clone(),
        vec![call(
            Method::DELETE,
            &format!("{JOBS}/done"),
            StatusCode::OK,
            serde_json::to_value(&expired).unwrap(),
        )],
    )
    .await;
    assert_eq!(action, Action::await_change());
    assert!(events.is_empty());

    // 10 s after finishing: no call, looked at again when the TTL ends.
    let (action, bodies, _) = run(finished(10), vec![]).await;
    assert!(bodies.is_empty());
    assert_ne!(action, Action::await_change());
    let debug = format!("{action:?}");
    assert!(debug.contains("requeue_after: Some("), "{debug}");
}

#[tokio::test]
async fn a_job_being_deleted_without_created_queues_just_loses_its_finalizer() {
    let mut deleted = job("gone", stage(), with_phase(Phase::Pending), false);
    deleted.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
    let mut answer = deleted.clone();
    answer.metadata.finalizers = None;
    let (action, bodies, events) = run(
        deleted.clone(),
        vec![call(
            Method::PATCH,
            &format!("{JOBS}/gone"),
            StatusCode::OK,
            serde_json::to_value(&answer).unwrap(),
        )],
    )
    .await;
    assert_eq!(action, Action::await_change());
    assert!(
        bodies[0].to_string().contains(r#""op":"remove""#),
        "the patch removes the finalizer: {}",
        bodies[0]
    );
    assert!(events.is_empty(), "no queues were created, none deleted");
}

mod flow;
