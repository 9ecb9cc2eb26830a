//! The lifecycle users script against, on a real kube-apiserver with S3 on
//! moto and SQS on ElasticMQ: `kubectl wait --for=condition=Complete` and
//! `--for=condition=Failed` return when a job finishes that way;
//! `spec.suspend` stops a fan-out mid-way and scales the workers to zero,
//! and a resume enqueues the rest with no item twice; a consuming job
//! suspends and resumes with its queue untouched.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is how a test reports failure"
)]

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;
use shoal_tests::kube::ControlPlane;
use shoal_tests::operator::{self, replicas};
use shoal_tests::stack::{Stack, corrupt_jpeg, tiny_jpeg, upload};
use shoal_tests::wait_until;
use shoal_worker::message::{Chunk, ChunkItem};

const OPERATOR: &str = env!("CARGO_BIN_EXE_shoal-operator-e2e");
const HANDLER: &str = env!("CARGO_BIN_EXE_thumbnail-e2e");

/// A BatchJob `name` making thumbnails of `s3://photos/<name>/` with the
/// test's handler, one delivery per chunk, `extra` spec lines appended.
fn job(stack: &Stack, name: &str, extra: &str) -> String {
    let env = stack.env_yaml();
    operator::batchjob_yaml(
        name,
        &format!(
            "  handler:
    image: ghcr.io/shoal-dev/thumbnail:0.1.0
    command: [\"{HANDLER}\"]
    timeoutSeconds: 30
    env:
{env}      - name: SHOAL_WAIT_TIME
        value: \"1\"
  source:
    s3:
      bucket: photos
      prefix: {name}/
      maxItemsPerChunk: 2
  scaling:
    maxWorkers: 1
  output:
    bucket: photos
    prefix: out/{name}/
{extra}"
        ),
    )
}

/// `kubectl wait --for=condition=<condition> bj/<name>`, in the background.
fn kubectl_wait(plane: &ControlPlane, name: &str, condition: &str) -> shoal_tests::process::Proc {
    kubectl_wait_for(plane, name, condition, 180)
}

/// [`kubectl_wait`] with a timeout of `seconds`.
fn kubectl_wait_for(
    plane: &ControlPlane,
    name: &str,
    condition: &str,
    seconds: u32,
) -> shoal_tests::process::Proc {
    plane.kubectl_spawn(
        &[
            "wait",
            &format!("--for=condition={condition}"),
            &format!("--timeout={seconds}s"),
            &format!("bj/{name}"),
        ],
        &format!("wait-{name}-{condition}"),
    )
}

/// `"<status> <reason>"` of condition `type_` of BatchJob `name`; empty
/// while it is absent.
fn condition(plane: &ControlPlane, name: &str, type_: &str) -> String {
    plane
        .jsonpath(
            &["bj", name],
            &format!(
                "{{.status.conditions[?(@.type==\"{type_}\")].status}} {{.status.conditions[?(@.type==\"{type_}\")].reason}}"
            ),
        )
        .trim()
        .to_owned()
}

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
    plane.apply_yaml(&job(&stack, "good", one_delivery));
    plane.apply_yaml(&job(&stack, "poison", one_delivery));
    // Both waits start before anything has run: they must wait.
    let mut complete = kubectl_wait(&plane, "good", "Complete");
    let mut failed = kubectl_wait(&plane, "poison", "Failed");

    let (operator, _metrics) = operator::spawn(OPERATOR, &plane, stack.env());
    let log = || operator.log_text();
    let limit = Duration::from_secs(120);
    for name in ["good", "poison"] {
        operator::split_done(&plane, name, limit, log);
        assert_eq!(condition(&plane, name, "Complete"), "", "{name} not done");
        assert_eq!(condition(&plane, name, "Failed"), "", "{name} not failed");
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

    assert_eq!(condition(&plane, "good", "Complete"), "True Succeeded");
    assert_eq!(condition(&plane, "good", "Failed"), "");
    assert_eq!(
        condition(&plane, "poison", "Failed"),
        "True FailureToleranceExceeded"
    );
    assert_eq!(condition(&plane, "poison", "Complete"), "");
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
    let spec = job(&stack, "many", "  queue:\n    name: lifecycle-many\n")
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
        || (condition(&plane, "many", "Suspended") == "True Suspended").then_some(()),
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
    assert_eq!(condition(&plane, "many", "Ready"), "False Suspended");
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
    assert_eq!(condition(&plane, "many", "Suspended"), "False Resumed");
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
        let spec = job(&stack, name, &format!("  queue:\n    name: lists-{name}\n"))
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
        || (condition(&plane, "foreign-inventory", "Failed") == "True ListInvalid").then_some(()),
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
        || (condition(&plane, "bad-list", "Failed") == "True ListInvalid").then_some(()),
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

    let mut wait = kubectl_wait(plane, "uploads", "Suspended");
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
    assert_eq!(condition(plane, "uploads", "Suspended"), "False Resumed");
    assert_eq!(condition(plane, "uploads", "Ready"), "True Consuming");
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

/// `shoal-operator redrive <name> --wait` against `plane`; its stdout.
async fn object(s3: &aws_sdk_s3::Client, key: &str) -> Vec<u8> {
    let got = s3.get_object().bucket("photos").key(key).send().await;
    let got = got.unwrap_or_else(|e| panic!("s3://photos/{key}: {e:?}"));
    got.body.collect().await.unwrap().to_vec()
}

/// The results manifest under `prefix` in bucket photos, and the lines of
/// its SUCCEEDED and FAILED shards, read through the files it lists.
async fn report(s3: &aws_sdk_s3::Client, prefix: &str) -> (Value, Vec<Value>, Vec<Value>) {
    let manifest: Value =
        serde_json::from_slice(&object(s3, &format!("{prefix}_shoal/manifest.json")).await)
            .unwrap();
    let mut shards = Vec::new();
    for status in ["succeeded", "failed"] {
        let mut lines = Vec::new();
        for file in manifest["results"][status]["files"].as_array().unwrap() {
            let text = object(s3, file["key"].as_str().unwrap()).await;
            assert_eq!(file["size"], text.len());
            let before = lines.len();
            for line in text.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                lines.push(serde_json::from_slice::<Value>(line).unwrap());
            }
            assert_eq!(file["items"], lines.len() - before);
        }
        assert_eq!(manifest["results"][status]["items"], lines.len());
        shards.push(lines);
    }
    let failed = shards.pop().unwrap();
    let succeeded = shards.pop().unwrap();
    (manifest, succeeded, failed)
}

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
    plane.apply_yaml(&job(&stack, "fixme", "  queue:\n    maxReceiveCount: 1\n"));
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
    let mut failed = kubectl_wait(&plane, "fixme", "Failed");
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
    let (manifest, succeeded, failed) = report(&stack.s3, "out/fixme/").await;
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
        || (condition(&plane, "fixme", "Complete") == "True Succeeded").then_some(()),
        all_logs,
    );
    assert_eq!(plane.jsonpath(&["bj", "fixme"], counts), "2 2 0");
    assert_eq!(condition(&plane, "fixme", "Failed"), "", "no longer failed");
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
    let (manifest, succeeded, failed) = report(&stack.s3, "out/fixme/").await;
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
    let spec = job(
        &stack,
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
    let mut complete = kubectl_wait_for(&plane, "big", "Complete", 600);
    if !complete.wait(limit).success() {
        let tail: String = workers.iter().map(|w| w.log_text()).collect();
        let tail = &tail[tail.len().saturating_sub(20_000)..];
        panic!("{}\n{}\n{tail}", complete.log_text(), log());
    }
    let peak = operator.peak_memory_kib();
    drop(workers);

    let (manifest, succeeded, failed) = report(&stack.s3, "out/big/").await;
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
