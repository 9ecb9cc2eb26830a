//! End to end: `kubectl apply` of a BatchJob with an S3 source against a
//! real kube-apiserver, the operator running as a process, S3 on moto and
//! SQS on ElasticMQ. There is no kubelet, so the test starts the workers
//! itself from the Deployment the operator wrote: its pod template's
//! command, args and environment (only the metrics port is changed, since
//! the processes share one host). The BatchJob must reach Succeeded with
//! every chunk accounted for, every thumbnail written and a results
//! manifest listing them; a second stage (`source.batchJob`) waits for it
//! and then runs over its outputs.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is how a test reports failure"
)]

use std::time::Duration;

use serde_json::Value;
use shoal_tests::kube::ControlPlane;
use shoal_tests::operator;
use shoal_tests::process::Proc;
use shoal_tests::stack::{Stack, keys, tiny_jpeg, upload};
use shoal_tests::wait_until;

const OPERATOR: &str = env!("CARGO_BIN_EXE_shoal-operator-e2e");
const HANDLER: &str = env!("CARGO_BIN_EXE_thumbnail-e2e");

/// The worker processes Deployment `name`'s pod template describes.
fn start_workers(plane: &ControlPlane, name: &str, count: usize) -> Vec<Proc> {
    shoal_tests::pods::start_workers(plane, name, HANDLER, count)
}

/// The results manifest under `prefix` in bucket `photos`.
async fn read_manifest(s3: &aws_sdk_s3::Client, prefix: &str) -> Value {
    let bytes = operator::object(s3, &format!("{prefix}_shoal/manifest.json")).await;
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batchjob_from_apply_to_succeeded() {
    let plane = ControlPlane::start();
    plane.install_crds();
    let stack = Stack::start();
    let photos: Vec<String> = (0..30)
        .map(|n| format!("incoming/photo-{n:03}.jpg"))
        .collect();
    upload(&stack.s3, "photos", &photos, &tiny_jpeg()).await;

    let env = stack.env_yaml();
    let job = format!(
        "apiVersion: shoal.dev/v1alpha1
kind: BatchJob
metadata:
  name: thumbnails
spec:
  handler:
    image: ghcr.io/shoal-dev/thumbnail:0.1.0
    command: [\"{HANDLER}\"]
    timeoutSeconds: 30
    concurrency: 2
    env:
{env}      - name: SHOAL_WAIT_TIME
        value: \"1\"
  source:
    s3:
      bucket: photos
      prefix: incoming/
      maxItemsPerChunk: 4
  queue:
    maxReceiveCount: 3
  scaling:
    maxWorkers: 2
    targetBacklogPerWorker: 2
    scaleDownDelaySeconds: 1
  output:
    bucket: photos
    prefix: thumbs/
"
    );
    plane.apply_yaml(&job);
    // A second stage, applied at once: it waits for `thumbnails`, then
    // makes thumbnails of its thumbnails.
    let stage = format!(
        "apiVersion: shoal.dev/v1alpha1
kind: BatchJob
metadata:
  name: thumbnails-small
spec:
  handler:
    image: ghcr.io/shoal-dev/thumbnail:0.1.0
    command: [\"{HANDLER}\"]
    concurrency: 2
    env:
{env}      - name: SHOAL_WAIT_TIME
        value: \"1\"
  source:
    batchJob:
      name: thumbnails
      maxItemsPerChunk: 10
  scaling:
    maxWorkers: 1
  output:
    bucket: photos
    prefix: small/
"
    );
    plane.apply_yaml(&stage);

    let (operator, _metrics) = operator::spawn(OPERATOR, &plane, stack.env());
    let log = || operator.log_text();
    let limit = Duration::from_secs(120);

    // Split done: 30 photos in chunks of 4 → 8 chunks; 2 workers wanted.
    let split = operator::split_done(&plane, "thumbnails", limit, log);
    assert_eq!(split, "true 8 30");
    wait_until(
        limit,
        "second stage waiting",
        || {
            let s = plane.jsonpath(
                &["bj", "thumbnails-small"],
                "{.status.phase} {.status.conditions[0].reason}",
            );
            (s == "Pending WaitingForUpstream").then_some(())
        },
        log,
    );
    let replicas = wait_until(
        limit,
        "workers wanted",
        || {
            let r: i64 = plane
                .jsonpath(&["deployment", "thumbnails-workers"], "{.spec.replicas}")
                .trim()
                .parse()
                .ok()?;
            (r > 0).then_some(r)
        },
        log,
    );
    assert_eq!(replicas, 2, "8 chunks at 2 per worker, at most 2 workers");

    let mut workers = start_workers(&plane, "thumbnails-workers", 2);
    let worker_logs = |workers: &Vec<Proc>| {
        workers
            .iter()
            .map(Proc::log_text)
            .collect::<Vec<_>>()
            .join("\n")
    };
    wait_until(
        limit,
        "BatchJob Succeeded",
        || (plane.jsonpath(&["bj", "thumbnails"], "{.status.phase}") == "Succeeded").then_some(()),
        || format!("{}\n{}", log(), worker_logs(&workers)),
    );
    let counts = plane.jsonpath(
        &["bj", "thumbnails"],
        "{.status.chunks.total} {.status.chunks.succeeded} {.status.chunks.deadLettered} {.status.desiredWorkers}",
    );
    assert_eq!(counts, "8 8 0 0");
    let thumbs = keys(&stack.s3, "photos", "thumbs/").await;
    assert_eq!(
        shoal_tests::stack::outputs(&thumbs),
        30,
        "30 thumbnails: {thumbs:?}"
    );
    assert!(thumbs.contains("thumbs/_shoal/manifest.json"), "{thumbs:?}");
    // The results manifest points at the report, which names every output.
    assert_eq!(
        plane.jsonpath(&["bj", "thumbnails"], "{.status.manifest}"),
        "s3://photos/thumbs/_shoal/manifest.json"
    );
    let manifest = read_manifest(&stack.s3, "thumbs/").await;
    assert_eq!(manifest["phase"], "Succeeded");
    assert_eq!(manifest["input"], "s3://photos/incoming/");
    assert_eq!(manifest["chunks"]["total"], 8);
    assert_eq!(manifest["chunks"]["succeeded"], 8);
    assert_eq!(manifest["items"], 30);
    assert_eq!(manifest["results"]["failed"]["items"], 0);
    assert_eq!(manifest["results"]["succeeded"]["items"], 30);
    let shard = manifest["results"]["succeeded"]["files"][0]["key"]
        .as_str()
        .unwrap();
    assert_eq!(shard, "thumbs/_shoal/results/SUCCEEDED_0.jsonl");
    let shard = operator::object(&stack.s3, shard).await;
    let mut listed: Vec<String> = String::from_utf8_lossy(&shard)
        .lines()
        .map(|line| {
            let record: Value = serde_json::from_str(line).unwrap();
            assert_eq!(record["status"], "SUCCEEDED");
            format!("thumbs/{}", record["output"].as_str().unwrap())
        })
        .collect();
    listed.sort_unstable();
    let written: Vec<&str> = thumbs
        .iter()
        .map(String::as_str)
        .filter(|k| !k.contains("_shoal/"))
        .collect();
    assert_eq!(listed, written);
    let table = plane.kubectl(&["get", "bj", "thumbnails"]);
    assert!(table.contains("Succeeded"), "{table}");
    // Shown with --nocapture; docs/operator.md quotes it.
    println!("$ kubectl get bj thumbnails\n{table}");
    println!(
        "$ kubectl get deployment thumbnails-workers\n{}",
        plane.kubectl(&["get", "deployment", "thumbnails-workers"])
    );

    // The second stage runs over the 30 thumbnails (not the manifest).
    let stage_split = wait_until(
        limit,
        "second stage split",
        || {
            let s = plane.jsonpath(
                &["bj", "thumbnails-small"],
                "{.status.split.done} {.status.split.chunks} {.status.split.items}",
            );
            s.starts_with("true").then_some(s)
        },
        log,
    );
    assert_eq!(stage_split, "true 3 30");
    assert_eq!(
        plane.jsonpath(&["bj", "thumbnails-small"], "{.status.input.prefix}"),
        "thumbs/"
    );
    workers.extend(start_workers(&plane, "thumbnails-small-workers", 1));
    wait_until(
        limit,
        "second stage Succeeded",
        || {
            (plane.jsonpath(&["bj", "thumbnails-small"], "{.status.phase}") == "Succeeded")
                .then_some(())
        },
        || format!("{}\n{}", log(), worker_logs(&workers)),
    );
    let small = keys(&stack.s3, "photos", "small/").await;
    assert_eq!(
        shoal_tests::stack::outputs(&small),
        30,
        "30 thumbnails: {small:?}"
    );
    assert_eq!(read_manifest(&stack.s3, "small/").await["items"], 30);
    println!("$ kubectl get bj\n{}", plane.kubectl(&["get", "bj"]));

    // Each step left an Event on the BatchJob.
    operator::wait_for_events(
        &plane,
        Some("thumbnails"),
        &["QueuesCreated", "Scaled", "Running", "Succeeded"],
    );

    // ttlSecondsAfterFinished: the job is deleted, and the finalizer
    // deletes the queues the operator created for it.
    let queues = || {
        let sqs = stack.sqs.clone();
        async move {
            let mut names: Vec<String> = sqs
                .list_queues()
                .queue_name_prefix("shoal-default-")
                .send()
                .await
                .unwrap()
                .queue_urls()
                .iter()
                .map(|u| u.rsplit('/').next().unwrap().to_owned())
                .collect();
            names.sort();
            names.join(" ")
        }
    };
    // Each job's queues carry a hash of its namespace, name and uid.
    let own = |job: &str| -> Vec<String> {
        ["queueUrl", "deadLetterQueueUrl"]
            .iter()
            .map(|field| {
                let url = plane.jsonpath(&["bj", job], &format!("{{.status.{field}}}"));
                url.rsplit('/').next().unwrap().to_owned()
            })
            .collect()
    };
    let (first, second) = (own("thumbnails"), own("thumbnails-small"));
    for (names, stem) in [(&first, "thumbnails-"), (&second, "thumbnails-small-")] {
        let hash = names[0]
            .strip_prefix(&format!("shoal-default-{stem}"))
            .and_then(|rest| rest.strip_suffix(".fifo"))
            .unwrap_or_else(|| panic!("{names:?}"));
        assert!(
            hash.len() == 12 && hash.bytes().all(|b| b.is_ascii_hexdigit()),
            "{names:?}"
        );
        assert_eq!(names[1], format!("shoal-default-{stem}{hash}-dlq.fifo"));
    }
    let sorted = |names: Vec<&String>| {
        let mut names: Vec<&str> = names.into_iter().map(String::as_str).collect();
        names.sort_unstable();
        names.join(" ")
    };
    assert_eq!(
        queues().await,
        sorted(first.iter().chain(&second).collect())
    );
    plane.kubectl(&[
        "patch",
        "bj",
        "thumbnails",
        "--type=merge",
        "-p",
        r#"{"spec":{"ttlSecondsAfterFinished":1}}"#,
    ]);
    wait_until(
        limit,
        "BatchJob deleted after its TTL",
        || {
            plane
                .jsonpath(&["bj", "thumbnails"], "{.metadata.name}")
                .is_empty()
                .then_some(())
        },
        log,
    );
    // The second stage keeps its queues (and needs nothing more from it).
    assert_eq!(queues().await, sorted(second.iter().collect()), "{}", log());

    for worker in &workers {
        worker.signal("TERM");
    }
    for worker in &mut workers {
        assert!(worker.wait(Duration::from_secs(30)).success());
    }
}
