//! `kubectl shoal` against a running job, on a real kube-apiserver with the
//! operator, S3 on moto and SQS on ElasticMQ: `status` (table and JSON,
//! through kubectl's own plugin lookup too), `suspend` and `resume` acting
//! on the job, `describe` with conditions, Events and the failed item with
//! its reason once it failed on a poison item, `redrive --wait` moving the
//! dead letter back after the fix until the job completes, `cost` matching
//! a hand calculation from the workers' REPORT lines, `logs` of a job
//! without pods, exit code 3 for a job that does not exist, and `invoke`
//! sending an object to a job consuming a FIFO queue (bad items and
//! fan-out jobs refused, nothing sent). (`invoke` on RabbitMQ:
//! `operator_amqp.rs`.)
//! (`logs` of real pods: `real_node.rs`.)

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is how a test reports failure"
)]

use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;
use shoal_tests::kube::{ControlPlane, tool_from_env};
use shoal_tests::operator::{self, replicas};
use shoal_tests::stack::{Stack, corrupt_jpeg, tiny_jpeg, upload};
use shoal_tests::wait_until;

const OPERATOR: &str = env!("CARGO_BIN_EXE_shoal-operator-e2e");
const HANDLER: &str = env!("CARGO_BIN_EXE_thumbnail-e2e");
const PLUGIN: &str = env!("CARGO_BIN_EXE_kubectl-shoal-e2e");

/// `kubectl-shoal ARGS` with the plane's kubeconfig.
fn shoal(plane: &ControlPlane, args: &[&str]) -> Output {
    shoal_with(plane, args, &[])
}

/// `kubectl-shoal ARGS` with the plane's kubeconfig and `env`.
fn shoal_with(plane: &ControlPlane, args: &[&str], env: &[(&str, String)]) -> Output {
    Command::new(PLUGIN)
        .args(args)
        .env("KUBECONFIG", plane.kubeconfig())
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap()
}

/// Standard output of a `kubectl-shoal` call that must succeed.
fn ok(plane: &ControlPlane, args: &[&str]) -> String {
    let out = shoal(plane, args);
    assert!(
        out.status.success(),
        "kubectl-shoal {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn json(plane: &ControlPlane, args: &[&str]) -> Value {
    let mut with = args.to_vec();
    with.extend(["-o", "json"]);
    let text = ok(plane, &with);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{args:?} -o json: {e}\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_against_a_running_job() {
    let plane = ControlPlane::start();
    plane.install_crds();
    let stack = Stack::start();
    // Chunks of two: three good chunks and one holding a corrupt image,
    // dead-lettered at its first delivery.
    let good: Vec<String> = (0..6).map(|n| format!("plug/p{n}.jpg")).collect();
    upload(&stack.s3, "photos", &good, &tiny_jpeg()).await;
    upload(
        &stack.s3,
        "photos",
        &["plug/z-corrupt.jpg".to_owned()],
        &corrupt_jpeg(),
    )
    .await;
    plane.apply_yaml(&operator::thumbnail_job(
        &stack,
        HANDLER,
        "plug",
        "  queue:\n    maxReceiveCount: 1\n",
    ));
    let (operator, _metrics) = operator::spawn(OPERATOR, &plane, stack.env());
    let log = || operator.log_text();
    let limit = Duration::from_secs(120);
    operator::split_done(&plane, "plug", limit, log);

    // status: JSON and the table, before any worker.
    let rows = json(&plane, &["status"]);
    assert_eq!(rows.as_array().map(Vec::len), Some(1), "{rows}");
    let row = &rows[0];
    assert_eq!(row["name"], "plug");
    assert_eq!(row["namespace"], "default");
    assert_eq!(row["chunks"], 4, "{row}");
    assert_eq!(row["fanOutDone"], true, "{row}");
    assert_eq!(row["succeeded"], 0, "{row}");
    let table = ok(&plane, &["status"]);
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME", "PHASE", "CHUNKS", "FAILED", "WORKERS", "RATE", "ETA"
        ]
    );
    let cells: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(&cells[..2], ["plug", "Running"], "{table}");
    assert_eq!(&cells[2..4], ["0/4", "(0%)"], "{table}");
    // Through kubectl's plugin lookup: `kubectl-shoal` on the PATH.
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(PLUGIN, dir.path().join("kubectl-shoal")).unwrap();
    let path = format!(
        "{}:{}",
        dir.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let via_kubectl = Command::new(tool_from_env("SHOAL_KUBECTL"))
        .args(["shoal", "status", "plug"])
        .env("PATH", &path)
        .env("KUBECONFIG", plane.kubeconfig())
        .output()
        .unwrap();
    assert!(
        via_kubectl.status.success(),
        "kubectl shoal: {}",
        String::from_utf8_lossy(&via_kubectl.stderr)
    );
    assert!(String::from_utf8_lossy(&via_kubectl.stdout).contains("plug"));

    // A job that does not exist: exit 3, named.
    for args in [
        &["status", "nope"][..],
        &["describe", "nope"],
        &["redrive", "nope"],
    ] {
        let out = shoal(&plane, args);
        assert_eq!(out.status.code(), Some(3), "{args:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stderr).trim(),
            "error: batchjob default/nope not found"
        );
    }

    // suspend and resume act on the job.
    assert_eq!(
        ok(&plane, &["suspend", "plug"]),
        "batchjob default/plug suspended\n"
    );
    assert_eq!(plane.jsonpath(&["bj", "plug"], "{.spec.suspend}"), "true");
    wait_until(
        limit,
        "the job Suspended",
        || {
            operator::condition(&plane, "plug", "Suspended")
                .starts_with("True")
                .then_some(())
        },
        log,
    );
    let cells = ok(&plane, &["status", "plug"]);
    assert!(
        cells.lines().nth(1).unwrap().contains("Suspended"),
        "{cells}"
    );
    assert_eq!(json(&plane, &["resume", "plug"])["suspend"], false);
    assert_eq!(plane.jsonpath(&["bj", "plug"], "{.spec.suspend}"), "false");

    // logs: no pods run on this plane (no kubelet); said, not failed.
    let out = shoal(&plane, &["logs", "plug"]);
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("has no worker pods now"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A worker from the Deployment's template runs the job to Failed.
    wait_until(
        limit,
        "a Deployment",
        || replicas(&plane, "plug-workers").filter(|r| *r > 0),
        log,
    );
    let workers = shoal_tests::pods::start_workers(&plane, "plug-workers", HANDLER, 1);
    wait_until(
        limit,
        "the job Failed",
        || {
            operator::condition(&plane, "plug", "Failed")
                .starts_with("True")
                .then_some(())
        },
        log,
    );
    let described = json(&plane, &["describe", "plug"]);
    let progress = &described["progress"];
    assert_eq!(progress["phase"], "Failed", "{described}");
    // The job fails at the first dead letter past the tolerance, whatever
    // is still in flight then (the chunks run side by side, in no set
    // order): every chunk is counted once, the corrupt one dead-lettered.
    let count = |field: &str| progress[field].as_i64().unwrap_or(-1);
    assert_eq!(count("deadLettered"), 1, "{described}");
    assert_eq!(
        count("succeeded") + count("inFlight") + count("waiting"),
        3,
        "{described}"
    );
    let failed = described["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Failed")
        .unwrap_or_else(|| panic!("a Failed condition: {described}"));
    assert_eq!(failed["reason"], "FailureToleranceExceeded");
    let reasons: Vec<&str> = described["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["reason"].as_str())
        .collect();
    assert!(reasons.contains(&"Failed"), "{reasons:?}");
    // The failed item, with why, from the failure report.
    let failures = described["failures"].as_array().unwrap();
    assert_eq!(failures.len(), 1, "{described}");
    assert_eq!(failures[0]["item"], "plug/z-corrupt.jpg", "{described}");
    assert_eq!(failures[0]["category"], "handler", "{described}");
    assert_eq!(failures[0]["attempts"], 1, "{described}");
    let why = failures[0]["reason"].as_str().unwrap_or_default();
    assert!(!why.is_empty(), "{described}");
    let text = ok(&plane, &["describe", "plug"]);
    let listed = text
        .lines()
        .skip_while(|l| !l.starts_with("Failed items"))
        .nth(2)
        .unwrap_or_else(|| panic!("a failed item listed: {text}"));
    let cells: Vec<&str> = listed.split_whitespace().collect();
    assert_eq!(
        cells[..4],
        ["plug/z-corrupt.jpg", "1", "permanent", "handler"],
        "{text}"
    );

    // The fix (a good image where the corrupt one was), then redrive
    // --wait: the dead letter goes back, once, and the job completes.
    let url = plane.jsonpath(&["bj", "plug"], "{.status.queueUrl}");
    shoal_tests::sqs::wait_for("the work queue drained", limit, || async {
        shoal_tests::sqs::counts(&stack.sqs, &url).await == (0, 0, 0)
    })
    .await;
    // Stopped as a pod is: a receive under way must not take the message
    // the redrive moves.
    shoal_tests::pods::stop_workers(workers);
    upload(
        &stack.s3,
        "photos",
        &["plug/z-corrupt.jpg".to_owned()],
        &tiny_jpeg(),
    )
    .await;
    let redriven = json(&plane, &["redrive", "plug", "--wait", "--timeout", "2m"]);
    assert_eq!(redriven["round"], 1, "{redriven}");
    assert_eq!(redriven["moved"], 1, "{redriven}");
    wait_until(
        limit,
        "workers after the redrive",
        || replicas(&plane, "plug-workers").filter(|r| *r > 0),
        log,
    );
    let workers = shoal_tests::pods::start_workers(&plane, "plug-workers", HANDLER, 1);
    wait_until(
        limit,
        "Complete after the redrive",
        || (operator::condition(&plane, "plug", "Complete") == "True Succeeded").then_some(()),
        log,
    );
    let described = json(&plane, &["describe", "plug"]);
    let progress = &described["progress"];
    assert_eq!(
        (
            progress["phase"].as_str(),
            progress["succeeded"].as_i64(),
            progress["deadLettered"].as_i64()
        ),
        (Some("Succeeded"), Some(4), Some(0)),
        "{described}"
    );
    let text = ok(&plane, &["describe", "plug"]);
    assert!(
        text.contains("Redrive:      round 1: 1 moved, done"),
        "{text}"
    );
    assert!(text.contains("Conditions:\n  TYPE"), "{text}");
    assert!(text.contains("Events:\n  LAST SEEN"), "{text}");
    assert!(
        !text.contains("Failed items"),
        "redriven to success, nothing failed: {text}"
    );
    shoal_tests::pods::stop_workers(workers);

    // cost: the Lambda side is the hand calculation from the REPORT lines
    // of both workers (every attempt: the failed one and its redrive too),
    // at the us-east-1 list price. No kubelet runs pods here, so no worker
    // pod was ever ready: the cluster side counts none.
    let logs = std::fs::read_to_string(plane.dir().join("plug-workers-0.log")).unwrap();
    let (invocations, mb_ms) = report_figures(&logs);
    assert!(invocations >= 8, "7 images, the corrupt one twice: {logs}");
    let cost = json(&plane, &["cost", "plug", "--region", "us-east-1"]);
    let lambda = &cost["lambda"];
    assert_eq!(lambda["invocations"], invocations, "{cost}");
    let gb_seconds = mb_ms as f64 / 1_024_000.0;
    let close = |a: &Value, b: f64| (a.as_f64().unwrap() - b).abs() <= 1e-12 * b.max(1.0);
    assert!(
        close(&lambda["gbSeconds"], gb_seconds),
        "{cost} {gb_seconds}"
    );
    let by_hand = invocations as f64 * 0.20 / 1e6 + gb_seconds * 0.000_016_666_7;
    assert!(close(&lambda["totalUsd"], by_hand), "{cost} {by_hand}");
    assert_eq!(cost["cluster"]["workerSeconds"], 0.0, "{cost}");
    assert_eq!(cost["cluster"]["totalUsd"], 0.0, "{cost}");
    let text = ok(&plane, &["cost", "plug", "--region", "us-east-1"]);
    assert!(text.contains("On Lambda (us-east-1, x86_64)"), "{text}");
    let out = shoal(&plane, &["cost", "plug", "--region", "mars-north-1"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--prices FILE"), "{stderr}");

    invoke_sends_one_item_to_a_consuming_job(&plane, &stack, log).await;
}

/// `invoke`: an object for a job consuming a FIFO queue, sent with the
/// caller's AWS settings; a worker from the job's template turns it into
/// a thumbnail. Fan-out jobs and bad items are refused (exit 2) with
/// nothing sent.
async fn invoke_sends_one_item_to_a_consuming_job(
    plane: &ControlPlane,
    stack: &Stack,
    log: impl Fn() -> String + Copy,
) {
    let limit = Duration::from_secs(120);
    let queues = shoal_tests::sqs::create_queues(&stack.sqs, "inbox.fifo", 30, 2).await;
    let env = stack.env_yaml();
    plane.apply_yaml(&operator::batchjob_yaml(
        "inbox",
        &format!(
            "  handler:
    image: ghcr.io/shoal-dev/thumbnail:0.1.0
    command: [\"{HANDLER}\"]
    env:
{env}      - name: SHOAL_WAIT_TIME
        value: \"1\"
      - name: SHOAL_ALLOWED_BUCKETS
        value: photos
  source:
    sqs:
      queueUrl: {url}
  scaling:
    maxWorkers: 1
  output:
    bucket: photos
    prefix: out/inbox/
",
            url = queues.url
        ),
    ));
    let aws = stack.env();
    let object = "s3://photos/plug/p1.jpg";

    // Refused before anything is sent: a fan-out job, an empty item, one
    // too big, one SQS could not carry.
    let refused = |args: &[&str], why: &str| {
        let out = shoal_with(plane, args, &aws);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(why), "{args:?}: {stderr}");
    };
    refused(
        &["invoke", "plug", "--object", object],
        "fans out its input (source.s3)",
    );
    refused(&["invoke", "inbox", "-p", ""], "is empty");
    refused(&["invoke", "inbox", "-p", "a\u{7}b"], "U+0007 at byte 1");
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.json");
    std::fs::write(&big, vec![b' '; (1 << 20) + 1]).unwrap();
    refused(
        &["invoke", "inbox", "--payload-file", big.to_str().unwrap()],
        "is over 1048576 bytes",
    );
    let out = shoal_with(plane, &["invoke", "nope", "--object", object], &aws);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(
        shoal_tests::sqs::counts(&stack.sqs, &queues.url).await,
        (0, 0, 0),
        "nothing sent"
    );

    // The object as a one-item chunk, sent twice with one deduplication
    // id: the queue keeps one.
    for _ in 0..2 {
        let sent = {
            let out = shoal_with(
                plane,
                &[
                    "invoke",
                    "inbox",
                    "--object",
                    object,
                    "--deduplication-id",
                    "p1",
                    "-o",
                    "json",
                ],
                &aws,
            );
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            serde_json::from_slice::<Value>(&out.stdout).unwrap()
        };
        assert_eq!(sent["queue"], queues.url.as_str(), "{sent}");
        assert!(!sent["messageId"].as_str().unwrap().is_empty(), "{sent}");
    }
    assert_eq!(shoal_tests::sqs::counts(&stack.sqs, &queues.url).await.0, 1);

    // The operator sees the backlog; a worker from the template consumes
    // it and writes the thumbnail.
    wait_until(
        limit,
        "a worker for the item",
        || replicas(plane, "inbox-workers").filter(|r| *r > 0),
        log,
    );
    let workers = shoal_tests::pods::start_workers(plane, "inbox-workers", HANDLER, 1);
    shoal_tests::sqs::wait_for("the thumbnail of the invoked item", limit, || async {
        shoal_tests::stack::keys(&stack.s3, "photos", "out/inbox/")
            .await
            .contains("out/inbox/plug/p1.jpg")
    })
    .await;
    shoal_tests::sqs::wait_for("the queue drained", limit, || async {
        shoal_tests::sqs::counts(&stack.sqs, &queues.url).await == (0, 0, 0)
    })
    .await;
    shoal_tests::pods::stop_workers(workers);
}

/// The number of REPORT lines in `log` and the sum of their `Billed
/// Duration × Memory Size` (MB·ms), read as a person reads them.
fn report_figures(log: &str) -> (u64, u64) {
    let number_after = |line: &str, label: &str| -> u64 {
        let at = line
            .find(label)
            .unwrap_or_else(|| panic!("{label} in {line}"));
        line[at + label.len()..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .unwrap()
    };
    let mut count = 0;
    let mut mb_ms = 0;
    for line in log.lines().filter(|l| l.contains("REPORT RequestId: ")) {
        count += 1;
        mb_ms += number_after(line, "Billed Duration: ") * number_after(line, "Memory Size: ");
    }
    (count, mb_ms)
}
