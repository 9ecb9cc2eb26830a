//! `kubectl shoal` against a running job, on a real kube-apiserver with the
//! operator, S3 on moto and SQS on ElasticMQ: `status` (table and JSON,
//! through kubectl's own plugin lookup too), `suspend` and `resume` acting
//! on the job, `describe` with conditions and Events once it failed on a
//! poison item, `redrive --wait` moving the dead letter back after the fix
//! until the job completes, `logs` of a job without pods, and exit code 3
//! for a job that does not exist.
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
    Command::new(PLUGIN)
        .args(args)
        .env("KUBECONFIG", plane.kubeconfig())
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
    assert_eq!(
        (
            progress["succeeded"].as_i64(),
            progress["deadLettered"].as_i64()
        ),
        (Some(3), Some(1)),
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
    shoal_tests::pods::stop_workers(workers);
}
