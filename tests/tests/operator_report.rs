//! The failure report and redrive, on a real kube-apiserver with S3 on
//! moto and SQS on ElasticMQ: a poison item fixed and redriven completes
//! its job with the report's counts and shards rewritten; the report of a
//! 100,000-item job is written in bounded memory.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is how a test reports failure"
)]

use std::collections::BTreeSet;
use std::time::Duration;

use shoal_tests::kube::ControlPlane;
use shoal_tests::operator::{self, replicas};
use shoal_tests::stack::{Stack, corrupt_jpeg, tiny_jpeg, upload};
use shoal_tests::wait_until;

const OPERATOR: &str = env!("CARGO_BIN_EXE_shoal-operator-e2e");
const HANDLER: &str = env!("CARGO_BIN_EXE_thumbnail-e2e");

/// `shoal-operator redrive <name> --wait` against `plane`; its stdout.
fn redrive(plane: &ControlPlane, name: &str, log: impl Fn() -> String) -> String {
    let out = std::process::Command::new(OPERATOR)
        .args(["redrive", name, "--wait", "--timeout", "2m"])
        .env("KUBECONFIG", plane.kubeconfig())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "redrive: {stdout}{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        log()
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_item_fixed_and_redriven_completes_the_job_with_counts_right() {
    let plane = ControlPlane::start();
    plane.install_crds();
    let stack = Stack::start();
    let good: Vec<String> = (0..3).map(|n| format!("fixme/p{n}.jpg")).collect();
    upload(&stack.s3, "photos", &good, &tiny_jpeg()).await;
    let poison = "fixme/z-poison.jpg";
    let put = |body: Vec<u8>| {
        stack
            .s3
            .put_object()
            .bucket("photos")
            .key(poison)
            .body(body.into())
            .send()
    };
    put(corrupt_jpeg()).await.unwrap();
    // Chunks [p0, p1] and [p2, z-poison]: the second is dead-lettered with
    // p2 done and z-poison pending.
    plane.apply_yaml(&operator::thumbnail_job(
        &stack,
        HANDLER,
        "fixme",
        "  queue:\n    maxReceiveCount: 1\n",
    ));
    let (operator, _metrics) = operator::spawn(OPERATOR, &plane, stack.env());
    let log = || operator.log_text();
    let limit = Duration::from_secs(120);
    wait_until(
        limit,
        "a Deployment",
        || replicas(&plane, "fixme-workers").filter(|r| *r > 0),
        log,
    );
    let workers = shoal_tests::pods::start_workers(&plane, "fixme-workers", HANDLER, 1);
    let mut failed = operator::kubectl_wait(&plane, "fixme", "Failed", 180);
    assert!(failed.wait(limit).success(), "{}", failed.log_text());
    // Failed at the first dead letter, maybe before the other chunk is
    // done: no workers wanted. The pod drains what it holds before it goes.
    assert_eq!(replicas(&plane, "fixme-workers"), Some(0));
    let failed_at = "{.status.chunks.total} {.status.chunks.deadLettered}";
    assert_eq!(plane.jsonpath(&["bj", "fixme"], failed_at), "2 1");
    let url = plane.jsonpath(&["bj", "fixme"], "{.status.queueUrl}");
    shoal_tests::sqs::wait_for("the other chunk done", limit, || async {
        shoal_tests::sqs::counts(&stack.sqs, &url).await == (0, 0, 0)
    })
    .await;
    // Stopped as a pod is: a receive under way when it stops must not
    // take the message the redrive moves next.
    shoal_tests::pods::stop_workers(workers);
    let counts = "{.status.chunks.total} {.status.chunks.succeeded} {.status.chunks.deadLettered}";

    // The failure report, written when the job failed: the poison item,
    // with why; p2 (its chunk-mate) succeeded. The other chunk may have
    // finished after the report (then it counts as pending).
    let (manifest, succeeded, failed) = operator::report(&stack.s3, "out/fixme/").await;
    assert_eq!(manifest["phase"], "Failed");
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["item"], poison);
    assert_eq!(failed[0]["status"], "FAILED");
    assert_eq!(failed[0]["attempts"], 1);
    assert_eq!(failed[0]["category"], "handler", "{failed:?}");
    assert!(
        !failed[0]["reason"].as_str().unwrap().is_empty(),
        "{failed:?}"
    );
    let ok: BTreeSet<&str> = succeeded
        .iter()
        .map(|r| r["item"].as_str().unwrap())
        .collect();
    assert!(ok.contains("fixme/p2.jpg"), "{succeeded:?}");
    assert_eq!(
        manifest["results"]["pending"].as_u64().unwrap() + ok.len() as u64 + 1,
        4,
        "{manifest}"
    );

    // The fix: a good image where the corrupt one was. And p2's thumbnail
    // removed: were p2 run again, it would come back.
    put(tiny_jpeg()).await.unwrap();
    stack
        .s3
        .delete_object()
        .bucket("photos")
        .key("out/fixme/fixme/p2.jpg")
        .send()
        .await
        .unwrap();
    let said = redrive(&plane, "fixme", log);
    assert!(
        said.contains("redrive 1 moved 1 dead letters back"),
        "{said}"
    );
    // Running again: workers are wanted for the moved dead letter.
    wait_until(
        limit,
        "workers after the redrive",
        || replicas(&plane, "fixme-workers").filter(|r| *r > 0),
        log,
    );
    let workers = shoal_tests::pods::start_workers(&plane, "fixme-workers", HANDLER, 1);
    let all_logs = || {
        let mut text = log();
        for worker in &workers {
            text.push_str(&worker.log_text());
        }
        text
    };
    wait_until(
        limit,
        "Complete after the redrive",
        || (operator::condition(&plane, "fixme", "Complete") == "True Succeeded").then_some(()),
        all_logs,
    );
    assert_eq!(plane.jsonpath(&["bj", "fixme"], counts), "2 2 0");
    assert_eq!(
        operator::condition(&plane, "fixme", "Failed"),
        "",
        "no longer failed"
    );
    assert_eq!(
        plane.jsonpath(
            &["bj", "fixme"],
            "{.spec.redrive} {.status.redrive.round} {.status.redrive.moved} {.status.redrive.done}"
        ),
        "1 1 1 true"
    );
    let thumbs = shoal_tests::stack::keys(&stack.s3, "photos", "out/fixme/").await;
    assert!(
        thumbs.contains("out/fixme/fixme/z-poison.jpg"),
        "{thumbs:?}"
    );
    assert!(
        !thumbs.contains("out/fixme/fixme/p2.jpg"),
        "an item that had succeeded was run again: {thumbs:?}"
    );
    // The report, rewritten at the new finish: nothing failed (the old
    // FAILED shard is gone), the poison item succeeded on its second try.
    let (manifest, succeeded, failed) = operator::report(&stack.s3, "out/fixme/").await;
    assert_eq!(manifest["phase"], "Succeeded");
    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(manifest["results"]["pending"], 0);
    let mut items: Vec<&str> = succeeded
        .iter()
        .map(|r| r["item"].as_str().unwrap())
        .collect();
    items.sort_unstable();
    assert_eq!(
        items,
        ["fixme/p0.jpg", "fixme/p1.jpg", "fixme/p2.jpg", poison],
        "each item once"
    );
    let fixed = succeeded.iter().find(|r| r["item"] == poison).unwrap();
    assert_eq!(fixed["attempts"], 2, "{fixed}");
    assert_eq!(fixed["output"], "fixme/z-poison.jpg");
    let stale =
        shoal_tests::stack::keys(&stack.s3, "photos", "out/fixme/_shoal/results/FAILED").await;
    assert!(stale.is_empty(), "{stale:?}");

    // A second redrive with nothing to move runs once and changes nothing.
    let said = redrive(&plane, "fixme", log);
    assert!(said.contains("redrive 2 moved 0 dead letters"), "{said}");
    assert_eq!(
        plane.jsonpath(&["bj", "fixme"], "{.status.phase}"),
        "Succeeded"
    );
    assert_eq!(plane.jsonpath(&["bj", "fixme"], counts), "2 2 0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_failure_report_of_a_100000_item_job_is_written_in_bounded_memory() {
    let plane = ControlPlane::start();
    plane.install_crds();
    let stack = Stack::start();
    // 100,000 keys from a list, and workers misconfigured so that each
    // item fails at once, unread: the user's SHOAL_ALLOWED_BUCKETS (theirs
    // wins over the operator's) leaves out the source bucket. Every failure
    // tolerated, so the job runs to the end.
    let keys: Vec<String> = (0..100_000).map(|n| format!("big/k{n:06}.jpg")).collect();
    upload(&stack.s3, "photos", &[], b"").await;
    let mut csv = String::from("key\n");
    for key in &keys {
        csv.push_str(key);
        csv.push('\n');
    }
    stack
        .s3
        .put_object()
        .bucket("photos")
        .key("lists/big.csv")
        .body(csv.into_bytes().into())
        .send()
        .await
        .unwrap();
    let spec = operator::thumbnail_job(
        &stack,
        HANDLER,
        "big",
        "  failurePolicy:\n    maxFailedPercent: 100\n  queue:\n    maxReceiveCount: 1\n",
    )
    .replace(
        "prefix: big/\n",
        "list: {key: lists/big.csv, format: csv}\n",
    )
    .replace("maxItemsPerChunk: 2", "maxItemsPerChunk: 1000")
    .replace(
        "timeoutSeconds: 30\n",
        "timeoutSeconds: 30\n    concurrency: 32\n",
    )
    .replace(
        "    env:\n",
        "    env:\n      - name: SHOAL_ALLOWED_BUCKETS\n        value: elsewhere\n",
    );
    plane.apply_yaml(&spec);
    let (operator, _metrics) = operator::spawn(OPERATOR, &plane, stack.env());
    let log = || operator.log_text();
    let limit = Duration::from_secs(600);
    let split = operator::split_done(&plane, "big", limit, log);
    assert_eq!(split, "true 100 100000");
    wait_until(
        limit,
        "a Deployment",
        || replicas(&plane, "big-workers").filter(|r| *r > 0),
        log,
    );
    // From here the operator's memory is what the finish (the report)
    // takes on top of what it holds anyway.
    operator.reset_peak_memory();
    let baseline = operator.peak_memory_kib();
    let workers = shoal_tests::pods::start_workers(&plane, "big-workers", HANDLER, 1);
    let mut complete = operator::kubectl_wait(&plane, "big", "Complete", 600);
    if !complete.wait(limit).success() {
        let tail: String = workers.iter().map(|w| w.log_text()).collect();
        let tail = &tail[tail.len().saturating_sub(20_000)..];
        panic!("{}\n{}\n{tail}", complete.log_text(), log());
    }
    let peak = operator.peak_memory_kib();
    drop(workers);

    let (manifest, succeeded, failed) = operator::report(&stack.s3, "out/big/").await;
    assert_eq!(manifest["phase"], "Succeeded");
    assert_eq!(manifest["items"], 100_000);
    assert_eq!(manifest["results"]["pending"], 0);
    assert_eq!(manifest["results"]["unreadable"], 0);
    assert!(succeeded.is_empty());
    assert_eq!(failed.len(), 100_000);
    let mut seen = BTreeSet::new();
    for record in succeeded.iter().chain(&failed) {
        assert!(
            seen.insert(record["item"].as_str().unwrap().to_owned()),
            "{record} twice"
        );
    }
    assert_eq!(seen, keys.iter().cloned().collect::<BTreeSet<_>>());
    let sample = &failed[12_345];
    assert_eq!(sample["cause"], "permanent", "{sample}");
    assert_eq!(sample["attempts"], 1, "{sample}");
    let reason = sample["reason"].as_str().unwrap();
    assert!(
        reason.contains(sample["item"].as_str().unwrap()) && reason.contains("\"photos\""),
        "{sample}"
    );
    // Sharded, and the operator never held the report: its peak grew by
    // less than the report's size.
    let files = manifest["results"]["failed"]["files"].as_array().unwrap();
    let bytes: u64 = files.iter().map(|f| f["size"].as_u64().unwrap()).sum();
    assert!(files.len() > 1, "{manifest}");
    eprintln!(
        "failure report: {} items in {} FAILED shards, {} KiB; operator peak RSS {} KiB, {} KiB over the {} KiB it held before the finish",
        failed.len(),
        files.len(),
        bytes / 1024,
        peak,
        peak.saturating_sub(baseline),
        baseline
    );
    assert!(
        (peak - baseline) * 1024 < bytes,
        "peak {peak} KiB, baseline {baseline} KiB, report {bytes} bytes"
    );
}
