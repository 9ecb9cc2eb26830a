//! An operator that dies mid-split, at the worst moment (a batch of chunks
//! sent, its checkpoint not yet written), and is started again enqueues
//! every chunk exactly once. The crash is placed with a fail point
//! (`FAILPOINTS=fanout-sent=...`, the `failpoints` feature): the process
//! aborts right after its third `SendMessageBatch`, so the test does not
//! depend on timing a SIGKILL. Real kube-apiserver, S3 on moto, SQS on
//! ElasticMQ.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is how a test reports failure"
)]

use std::collections::BTreeSet;
use std::time::Duration;

use aws_sdk_sqs::types::QueueAttributeName;
use shoal_protocol::message::{Chunk, ChunkItem};
use shoal_tests::free_port;
use shoal_tests::kube::ControlPlane;
use shoal_tests::operator;
use shoal_tests::process::Proc;
use shoal_tests::stack::{Stack, upload};

const OPERATOR: &str = env!("CARGO_BIN_EXE_shoal-operator-e2e");

/// 45 photos, one per chunk: five batches (10, 10, 10, 10, 5).
const PHOTOS: usize = 45;

const JOB: &str = "apiVersion: shoal.dev/v1alpha1
kind: BatchJob
metadata:
  name: resume
spec:
  handler:
    image: ghcr.io/shoal-dev/thumbnail:0.1.0
  source:
    s3:
      bucket: photos
      prefix: incoming/
      maxItemsPerChunk: 1
  scaling:
    maxWorkers: 1
  output:
    bucket: photos
    prefix: thumbs/
";

async fn visible(sqs: &aws_sdk_sqs::Client, url: &str) -> i64 {
    sqs.get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .send()
        .await
        .unwrap()
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::ApproximateNumberOfMessages))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_killed_between_send_and_checkpoint_enqueues_no_chunk_twice() {
    let plane = ControlPlane::start();
    plane.install_crds();
    let stack = Stack::start();
    let photos: Vec<String> = (0..PHOTOS)
        .map(|n| format!("incoming/photo-{n:03}.jpg"))
        .collect();
    upload(&stack.s3, "photos", &photos, b"not really a jpeg").await;
    plane.apply_yaml(JOB);

    let mut env = stack.env();
    env.push((
        "KUBECONFIG",
        plane.kubeconfig().to_string_lossy().into_owned(),
    ));
    let metrics = format!("127.0.0.1:{}", free_port());
    let args = ["run", "--leader-election=false", "--metrics-addr", &metrics];
    let limit = Duration::from_secs(120);

    // First life: aborts right after sending the third batch.
    let mut crashing = env.clone();
    crashing.push(("FAILPOINTS", "fanout-sent=2*off->return".into()));
    let mut first = Proc::spawn(
        OPERATOR,
        &args,
        &crashing,
        &plane.dir().join("operator-1.log"),
    );
    let status = first.wait(limit);
    assert!(
        !status.success(),
        "the fail point aborts the operator: {status:?}\n{}",
        first.log_text()
    );
    let url = plane.jsonpath(&["bj", "resume"], "{.status.queueUrl}");
    assert!(
        url.contains("/shoal-default-resume-") && url.ends_with(".fifo"),
        "{url}"
    );
    let checkpoint = plane.jsonpath(
        &["bj", "resume"],
        "{.status.split.chunks} {.status.split.done}",
    );
    // 30 chunks sent, 20 checkpointed: the third batch is the one in doubt.
    assert_eq!(checkpoint, "20 false", "{}", first.log_text());
    assert_eq!(visible(&stack.sqs, &url).await, 30);

    // Second life: resumes from the checkpoint and sends that batch again.
    let mut second = Proc::spawn(OPERATOR, &args, &env, &plane.dir().join("operator-2.log"));
    let split = operator::split_done(&plane, "resume", limit, || second.log_text());
    assert_eq!(split, format!("true {PHOTOS} {PHOTOS}"));

    // The queue holds each chunk once, and together they cover every photo.
    let bodies = shoal_tests::sqs::drain(&stack.sqs, &url).await;
    let chunks: Vec<Chunk> = bodies
        .iter()
        .map(|b| serde_json::from_str(b).unwrap())
        .collect();
    let ids: BTreeSet<&str> = chunks.iter().map(|c| c.chunk_id.as_str()).collect();
    assert_eq!(
        (bodies.len(), ids.len()),
        (PHOTOS, PHOTOS),
        "messages and distinct chunks in the queue"
    );
    let covered: BTreeSet<String> = chunks
        .iter()
        .flat_map(|c| &c.items)
        .map(|item| match item {
            ChunkItem::Object(object) => object.key.clone(),
            ChunkItem::Inline(other) => panic!("not an object: {other}"),
        })
        .collect();
    assert_eq!(covered, photos.iter().cloned().collect::<BTreeSet<_>>());
    assert_eq!(
        plane.jsonpath(&["bj", "resume"], "{.status.chunks.total}"),
        PHOTOS.to_string()
    );

    second.signal("TERM");
    assert!(second.wait(Duration::from_secs(30)).success());
}
