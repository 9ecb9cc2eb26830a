//! The lifecycle users script against, on a real kube-apiserver with S3 on
//! moto and SQS on ElasticMQ: `kubectl wait --for=condition=Complete` and
//! `--for=condition=Failed` return when a job finishes that way;
//! `spec.suspend` stops a fan-out mid-way and scales the workers to zero,
//! and a resume enqueues the rest with no item twice; a consuming job
//! suspends and resumes with its queue untouched; CSV, JSON Lines and S3
//! Inventory lists fan out exactly their keys, and a bad or foreign list
//! fails its job.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is how a test reports failure"
)]

use std::collections::BTreeSet;
use std::time::Duration;

use shoal_protocol::message::{Chunk, ChunkItem};
use shoal_tests::kube::ControlPlane;
use shoal_tests::operator::{self, replicas};
use shoal_tests::stack::{Stack, corrupt_jpeg, tiny_jpeg, upload};
use shoal_tests::wait_until;

const OPERATOR: &str = env!("CARGO_BIN_EXE_shoal-operator-e2e");
const HANDLER: &str = env!("CARGO_BIN_EXE_thumbnail-e2e");

fn patch_suspend(plane: &ControlPlane, name: &str, suspend: bool) {
    plane.kubectl(&[
        "patch",
        "bj",
        name,
        "--type=merge",
        "-p",
        &format!("{{\"spec\":{{\"suspend\":{suspend}}}}}"),
    ]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_wait_returns_on_complete_and_on_failed() {
    let plane = ControlPlane::start();
    plane.install_crds();
    let stack = Stack::start();
    let good: Vec<String> = (0..4).map(|n| format!("good/p{n}.jpg")).collect();
    upload(&stack.s3, "photos", &good, &tiny_jpeg()).await;
    let body = corrupt_jpeg();
    for key in ["poison/a-corrupt.jpg", "poison/b-corrupt.jpg"] {
        stack
            .s3
            .put_object()
            .bucket("photos")
            .key(key)
            .body(body.clone().into())
            .send()
            .await
            .unwrap();
    }
    let one_delivery = "  queue:\n    maxReceiveCount: 1\n";
    plane.apply_yaml(&operator::thumbnail_job(
        &stack,
        HANDLER,
        "good",
        one_delivery,
    ));
    plane.apply_yaml(&operator::thumbnail_job(
        &stack,
        HANDLER,
        "poison",
        one_delivery,
    ));
    // Both waits start before anything has run: they must wait.
    let mut complete = operator::kubectl_wait(&plane, "good", "Complete", 180);
    let mut failed = operator::kubectl_wait(&plane, "poison", "Failed", 180);

    let (operator, _metrics) = operator::spawn(OPERATOR, &plane, stack.env());
    let log = || operator.log_text();
    let limit = Duration::from_secs(120);
    for name in ["good", "poison"] {
        operator::split_done(&plane, name, limit, log);
        assert_eq!(
            operator::condition(&plane, name, "Complete"),
            "",
            "{name} not done"
        );
        assert_eq!(
            operator::condition(&plane, name, "Failed"),
            "",
            "{name} not failed"
        );
    }
    assert!(complete.running() && failed.running(), "kubectl wait waits");
    // `kubectl get shoal -o wide`: the category and the wide columns.
    let wide = plane.kubectl(&["get", "shoal", "-o", "wide"]);
    let header = wide.lines().next().unwrap_or_default();
    for column in ["PHASE", "DESIRED", "SUSPENDED", "QUEUE", "MESSAGE"] {
        assert!(header.contains(column), "{column} in {wide}");
    }
    assert!(wide.contains("workers consume http://"), "{wide}");

    let mut workers = Vec::new();
    for name in ["good", "poison"] {
        wait_until(
            limit,
            "a Deployment",
            || replicas(&plane, &format!("{name}-workers")).filter(|r| *r > 0),
            log,
        );
        workers.extend(shoal_tests::pods::start_workers(
            &plane,
            &format!("{name}-workers"),
            HANDLER,
            1,
        ));
    }
    let status = complete.wait(Duration::from_secs(180));
    assert!(status.success(), "wait Complete: {}", complete.log_text());
    assert!(
        complete.log_text().contains("condition met"),
        "{}",
        complete.log_text()
    );
    let status = failed.wait(Duration::from_secs(180));
    assert!(status.success(), "wait Failed: {}", failed.log_text());
    drop(workers);

    assert_eq!(
        operator::condition(&plane, "good", "Complete"),
        "True Succeeded"
    );
    assert_eq!(operator::condition(&plane, "good", "Failed"), "");
    assert_eq!(
        operator::condition(&plane, "poison", "Failed"),
        "True FailureToleranceExceeded"
    );
    assert_eq!(operator::condition(&plane, "poison", "Complete"), "");
    let message = plane.jsonpath(
        &["bj", "poison"],
        "{.status.conditions[?(@.type==\"Failed\")].message}",
    );
    assert_eq!(message, "1 of 1 chunks dead-lettered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspended_fan_out_stops_at_its_checkpoint_and_resumes_without_duplicates() {
    let plane = ControlPlane::start();
    plane.install_crds();
    let stack = Stack::start();
    // Four listing pages of 1,000 keys, one key per chunk.
    let total = 4_000;
    let photos: Vec<String> = (0..total).map(|n| format!("many/p{n:05}.jpg")).collect();
    upload(&stack.s3, "photos", &photos, b"x").await;
    // A standard queue: a chunk enqueued twice would be there twice (a FIFO
    // queue would hide it).
    let spec = operator::thumbnail_job(
        &stack,
        HANDLER,
        "many",
        "  queue:\n    name: lifecycle-many\n",
    )
    .replace("maxItemsPerChunk: 2", "maxItemsPerChunk: 1")
    .replace("maxWorkers: 1", "maxWorkers: 3");
    plane.apply_yaml(&spec);
    let (operator, _metrics) = operator::spawn(OPERATOR, &plane, stack.env());
    let log = || operator.log_text();
    let limit = Duration::from_secs(120);
    let chunks = || -> i64 {
        plane
            .jsonpath(&["bj", "many"], "{.status.split.chunks}")
            .trim()
            .parse()
            .unwrap_or(0)
    };
    wait_until(
        limit,
        "a first page",
        || (chunks() >= 1000).then_some(()),
        log,
    );
    wait_until(
        limit,
        "workers wanted",
        || replicas(&plane, "many-workers").filter(|r| *r > 0),
        log,
    );
    // Hold the listing (S3 stopped) while the suspend lands, so the fan-out
    // cannot end before the operator sees it: at most the page in hand
    // and the next are enqueued after this point.
    stack.s3_server.signal("STOP");
    patch_suspend(&plane, "many", true);
    std::thread::sleep(Duration::from_secs(3));
    stack.s3_server.signal("CONT");

    wait_until(
        limit,
        "Suspended",
        || (operator::condition(&plane, "many", "Suspended") == "True Suspended").then_some(()),
        log,
    );
    let at = plane.jsonpath(
        &["bj", "many"],
        "{.status.split.done} {.status.split.chunks}",
    );
    let (done, stopped) = at.split_once(' ').unwrap();
    let stopped: i64 = stopped.parse().unwrap();
    assert_eq!(done, "false", "suspended mid fan-out ({at})");
    assert!((1000..total).contains(&stopped), "{at}");
    assert_eq!(
        replicas(&plane, "many-workers"),
        Some(0),
        "suspended: no workers"
    );
    assert_eq!(
        operator::condition(&plane, "many", "Ready"),
        "False Suspended"
    );
    operator::wait_for_events(&plane, Some("many"), &["Suspended"]);
    let events = plane.kubectl(&[
        "get",
        "events",
        "--field-selector",
        "reason=Suspended",
        "-o",
        "name",
    ]);
    assert_eq!(events.lines().count(), 1, "one Suspended event: {events}");
    // Another look (an annotation wakes the operator) enqueues nothing.
    plane.kubectl(&["annotate", "bj", "many", "poke=1"]);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(chunks(), stopped, "no chunk enqueued while suspended");

    patch_suspend(&plane, "many", false);
    let split = operator::split_done(&plane, "many", limit, log);
    assert_eq!(split, format!("true {total} {total}"));
    assert_eq!(
        operator::condition(&plane, "many", "Suspended"),
        "False Resumed"
    );
    wait_until(
        limit,
        "workers wanted again",
        || replicas(&plane, "many-workers").filter(|r| *r > 0),
        log,
    );

    // Every item is on the queue exactly once.
    let url = plane.jsonpath(&["bj", "many"], "{.status.queueUrl}");
    let (messages, seen) = queued_keys(&stack.sqs, &url).await;
    assert_eq!((messages, seen.len()), (total, total as usize));
}

/// Every chunk message on the queue at `url` (received, not deleted): how
/// many, and the keys they name; panics on a key named twice.
async fn queued_keys(sqs: &aws_sdk_sqs::Client, url: &str) -> (i64, BTreeSet<String>) {
    let bodies = shoal_tests::sqs::drain(sqs, url).await;
    let mut seen = BTreeSet::new();
    for body in &bodies {
        let chunk: Chunk = serde_json::from_str(body).unwrap();
        for item in chunk.items {
            let ChunkItem::Object(object) = item else {
                panic!("an S3 fan-out enqueues objects")
            };
            assert!(seen.insert(object.key.clone()), "{} twice", object.key);
        }
    }
    (i64::try_from(bodies.len()).unwrap(), seen)
}

/// Writes two S3 Inventory reports to bucket `inventory`, as S3 lays them
/// out: one of bucket photos (two gzip CSV data files, keys URL-encoded,
/// with an older version and a delete marker that are not items) and one
/// of bucket secrets. Returns the keys the first one names.
async fn inventory(s3: &aws_sdk_s3::Client) -> BTreeSet<String> {
    use std::io::Write;
    s3.create_bucket().bucket("inventory").send().await.unwrap();
    let row = |key: &str, latest: bool, marker: bool| {
        let encoded = key
            .replace('%', "%25")
            .replace('+', "%2B")
            .replace(' ', "+");
        format!(
            "\"photos\",\"{encoded}\",\"v1\",\"{latest}\",\"{marker}\",\"12\",\"2026-12-01T00:00:00.000Z\"\n"
        )
    };
    let mut first: Vec<String> = (0..11_997).map(|n| format!("inv/p{n:05}.jpg")).collect();
    first.push("inv/a cat+dog 100%.jpg".to_owned());
    let second: Vec<String> = (0..5).map(|n| format!("inv/q{n}.jpg")).collect();
    let mut files = Vec::new();
    for (n, keys) in [&first, &second].into_iter().enumerate() {
        let mut text: String = keys.iter().map(|k| row(k, true, false)).collect();
        if n == 0 {
            text.insert_str(0, &row("inv/old.jpg", false, false));
            text.push_str(&row("inv/deleted.jpg", true, true));
        }
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(text.as_bytes()).unwrap();
        let body = gz.finish().unwrap();
        let key = format!("photos/daily/data/{n}.csv.gz");
        files.push(format!(
            "{{\"key\": \"{key}\", \"size\": {}, \"MD5checksum\": \"x\"}}",
            body.len()
        ));
        s3.put_object()
            .bucket("inventory")
            .key(&key)
            .body(body.into())
            .send()
            .await
            .unwrap();
    }
    for source in ["photos", "secrets"] {
        let manifest = format!(
            "{{\"sourceBucket\": \"{source}\", \"destinationBucket\": \"arn:aws:s3:::inventory\",
              \"version\": \"2016-11-30\", \"creationTimestamp\": \"1764547200000\",
              \"fileFormat\": \"CSV\",
              \"fileSchema\": \"Bucket, Key, VersionId, IsLatest, IsDeleteMarker, Size, LastModifiedDate\",
              \"files\": [{}]}}",
            files.join(", ")
        );
        s3.put_object()
            .bucket("inventory")
            .key(format!("{source}/daily/manifest.json"))
            .body(manifest.into_bytes().into())
            .send()
            .await
            .unwrap();
    }
    first.into_iter().chain(second).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_and_json_lines_lists_fan_out_exactly_their_keys() {
    let plane = ControlPlane::start();
    plane.install_crds();
    let stack = Stack::start();
    // 2,500 plain keys and an awkward one, a header with the key second,
    // a blank line: three pages of 1,000, each resumed from its offset.
    let mut keys: Vec<String> = (0..2500).map(|n| format!("in/p{n:05}.jpg")).collect();
    let mut csv = String::from("size,key\n");
    for key in &keys {
        csv.push_str(&format!("1,{key}\n"));
    }
    csv.push_str("\n7,\"odd, \"\"quoted\"\" name.jpg\"\r\n");
    keys.push("odd, \"quoted\" name.jpg".to_owned());
    let jsonl = "{\"key\": \"a.jpg\", \"n\": 1}\n\"b.jpg\"\n{\"key\": \"c.jpg\"}\n";
    let bad = "\"fine.jpg\"\n{\"key\": \"also-fine.jpg\"}\n{oops\n";
    upload(
        &stack.s3,
        "photos",
        &["lists/all.csv".to_owned()],
        csv.as_bytes(),
    )
    .await;
    for (key, body) in [("lists/few.jsonl", jsonl), ("lists/bad.jsonl", bad)] {
        stack
            .s3
            .put_object()
            .bucket("photos")
            .key(key)
            .body(body.as_bytes().to_vec().into())
            .send()
            .await
            .unwrap();
    }
    let inventory = inventory(&stack.s3).await;
    // Three keys a chunk: pages of 1,000 end in the middle of a chunk.
    for (name, list, per_chunk) in [
        ("from-csv", "{key: lists/all.csv, format: csv}", 3),
        ("from-jsonl", "{key: lists/few.jsonl, format: jsonl}", 2),
        ("bad-list", "{key: lists/bad.jsonl, format: jsonl}", 2),
        (
            "from-inventory",
            "{bucket: inventory, key: photos/daily/manifest.json, format: inventory}",
            3,
        ),
        (
            "foreign-inventory",
            "{bucket: inventory, key: secrets/daily/manifest.json, format: inventory}",
            3,
        ),
    ] {
        let spec = operator::thumbnail_job(
            &stack,
            HANDLER,
            name,
            &format!("  queue:\n    name: lists-{name}\n"),
        )
        .replace(&format!("prefix: {name}/\n"), &format!("list: {list}\n"))
        .replace(
            "maxItemsPerChunk: 2",
            &format!("maxItemsPerChunk: {per_chunk}"),
        );
        plane.apply_yaml(&spec);
    }
    let (operator, _metrics) = operator::spawn(OPERATOR, &plane, stack.env());
    let log = || operator.log_text();
    let limit = Duration::from_secs(120);

    let split = operator::split_done(&plane, "from-csv", limit, log);
    assert_eq!(split, "true 834 2501");
    let url = plane.jsonpath(&["bj", "from-csv"], "{.status.queueUrl}");
    let (messages, seen) = queued_keys(&stack.sqs, &url).await;
    assert_eq!(messages, 834, "every chunk once");
    assert_eq!(seen, keys.into_iter().collect::<BTreeSet<_>>());

    let split = operator::split_done(&plane, "from-jsonl", limit, log);
    assert_eq!(split, "true 2 3");
    let url = plane.jsonpath(&["bj", "from-jsonl"], "{.status.queueUrl}");
    let (_, seen) = queued_keys(&stack.sqs, &url).await;
    let want: BTreeSet<String> = ["a.jpg", "b.jpg", "c.jpg"].map(String::from).into();
    assert_eq!(seen, want);

    // The inventory: 12,000 rows then 5 in two data files, an old version
    // and a delete marker left out; pages of 10,000 rows, and no chunk
    // across the two files: 3,999 + 1 + 2 chunks.
    let split = operator::split_done(&plane, "from-inventory", limit, log);
    assert_eq!(split, "true 4002 12003");
    let url = plane.jsonpath(&["bj", "from-inventory"], "{.status.queueUrl}");
    let (messages, seen) = queued_keys(&stack.sqs, &url).await;
    assert_eq!(messages, 4002, "every chunk once");
    assert_eq!(seen, inventory);
    // An inventory of another bucket is refused, not fanned out.
    wait_until(
        limit,
        "foreign-inventory Failed",
        || {
            (operator::condition(&plane, "foreign-inventory", "Failed") == "True ListInvalid")
                .then_some(())
        },
        log,
    );
    let message = plane.jsonpath(
        &["bj", "foreign-inventory"],
        "{.status.conditions[?(@.type==\"Failed\")].message}",
    );
    assert!(message.contains("\"secrets\""), "{message}");

    // A line that is not an item fails the job, saying where and why.
    wait_until(
        limit,
        "bad-list Failed",
        || (operator::condition(&plane, "bad-list", "Failed") == "True ListInvalid").then_some(()),
        log,
    );
    let message = plane.jsonpath(
        &["bj", "bad-list"],
        "{.status.conditions[?(@.type==\"Failed\")].message}",
    );
    assert!(
        message.contains("s3://photos/lists/bad.jsonl")
            && message.contains("ending at byte 42")
            && message.contains("not JSON"),
        "{message}"
    );
    assert_eq!(replicas(&plane, "bad-list-workers"), Some(0), "no workers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consuming_job_suspends_to_zero_workers_and_keeps_its_queue() {
    let job = operator::SqsJob::start("", "    minWorkers: 1\n").await;
    operator::send_messages(&job.sqs, &job.url, 5).await;
    let (operator, _metrics) = operator::spawn(OPERATOR, &job.plane, job.moto.env());
    let log = || operator.log_text();
    let limit = Duration::from_secs(60);
    let plane = &job.plane;
    wait_until(
        limit,
        "workers",
        || replicas(plane, "uploads-workers").filter(|r| *r > 0),
        log,
    );

    let mut wait = operator::kubectl_wait(plane, "uploads", "Suspended", 180);
    patch_suspend(plane, "uploads", true);
    assert!(wait.wait(limit).success(), "{}", wait.log_text());
    wait_until(
        limit,
        "scaled to zero",
        || (replicas(plane, "uploads-workers") == Some(0)).then_some(()),
        log,
    );
    // The operator neither purges nor deletes a suspended job's queue.
    let visible = plane.jsonpath(&["bj", "uploads"], "{.status.chunks.visible}");
    assert_eq!(visible, "5", "the queue keeps its messages");

    patch_suspend(plane, "uploads", false);
    wait_until(
        limit,
        "workers again",
        || replicas(plane, "uploads-workers").filter(|r| *r > 0),
        log,
    );
    assert_eq!(
        operator::condition(plane, "uploads", "Suspended"),
        "False Resumed"
    );
    assert_eq!(
        operator::condition(plane, "uploads", "Ready"),
        "True Consuming"
    );
    let resumed = plane.kubectl(&[
        "get",
        "events",
        "--field-selector",
        "reason=Resumed",
        "-o",
        "name",
    ]);
    assert_eq!(resumed.lines().count(), 1, "{resumed}");
}
