//! The operator against a real kube-apiserver and a real SQS server (moto):
//! the worker Deployment's replicas follow the queue's backlog up, and back
//! down to zero after the scale-down delay, and the job's own series in
//! the operator's metrics come and go with it. No pod runs (there is no
//! kubelet): the test reads the Deployment the operator wrote.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is how a test reports failure"
)]

use std::time::Duration;

use shoal_tests::kube::ControlPlane;
use shoal_tests::operator::{self, SqsJob};
use shoal_tests::process::Proc;
use shoal_tests::prom::{http_get, promtool_check, sample};
use shoal_tests::wait_until;

const OPERATOR: &str = env!("CARGO_BIN_EXE_shoal-operator-e2e");

fn replicas(plane: &ControlPlane) -> Option<i64> {
    operator::replicas(plane, "uploads-workers")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_follow_the_sqs_backlog_up_and_down_to_zero() {
    let SqsJob {
        plane,
        moto,
        sqs,
        url,
    } = SqsJob::start(
        "    concurrency: 2\n",
        "    minWorkers: 0\n    maxWorkers: 5\n    targetBacklogPerWorker: 10\n    scaleDownDelaySeconds: 2\n",
    )
    .await;

    let mut env = moto.env();
    env.push((
        "KUBECONFIG",
        plane.kubeconfig().to_string_lossy().into_owned(),
    ));
    let metrics_port = shoal_tests::free_port();
    let metrics_addr = format!("127.0.0.1:{metrics_port}");
    let operator = Proc::spawn(
        OPERATOR,
        &["run", "--metrics-addr", &metrics_addr],
        &env,
        &plane.dir().join("operator.log"),
    );
    let log = || operator.log_text();

    // An empty queue and minWorkers 0: a Deployment with no replicas.
    let limit = Duration::from_secs(60);
    wait_until(
        limit,
        "deployment at 0 replicas",
        || (replicas(&plane) == Some(0)).then_some(()),
        log,
    );
    let template = plane.jsonpath(
        &["deployment", "uploads-workers"],
        "{.spec.template.spec.containers[0].env[?(@.name==\"SHOAL_QUEUE\")].value}",
    );
    assert_eq!(template, url);

    // 35 messages, 10 per worker: 4 workers.
    operator::send_messages(&sqs, &url, 35).await;
    wait_until(
        limit,
        "scaled up to 4",
        || (replicas(&plane) == Some(4)).then_some(()),
        log,
    );
    // The counts that scaled it may have been read mid-send (34 of them
    // ask for 4 workers too), and the status is written beside the
    // Deployment: it shows all 35 by the next read.
    wait_until(
        limit,
        "status Running 4 35",
        || {
            let status = plane.jsonpath(
                &["bj", "uploads"],
                "{.status.phase} {.status.desiredWorkers} {.status.chunks.visible}",
            );
            (status == "Running 4 35").then_some(())
        },
        log,
    );

    // The operator's own metrics: valid exposition, sums, and the job's
    // series labelled with its namespace and name.
    let (code, ready) = http_get(&format!("http://{metrics_addr}/readyz"));
    assert_eq!(code, 200, "{ready}");
    let metrics = wait_until(
        limit,
        "desired workers in the operator's metrics",
        || {
            let (_, text) = http_get(&format!("http://{metrics_addr}/metrics"));
            (sample(&text, "shoal_operator_desired_workers") == Some(4.0)).then_some(text)
        },
        log,
    );
    promtool_check(&metrics);
    assert_eq!(
        sample(&metrics, "shoal_operator_backlog_messages"),
        Some(35.0)
    );
    assert_eq!(
        sample(&metrics, "shoal_operator_batchjobs{phase=\"Running\"}"),
        Some(1.0)
    );
    assert!(
        sample(
            &metrics,
            "shoal_operator_reconciles_total{outcome=\"success\"}"
        )
        .unwrap_or(0.0)
            >= 2.0
    );
    let job = "{batchjob=\"uploads\",namespace=\"default\"}";
    for (name, want) in [
        ("shoal_batchjob_desired_workers", 4.0),
        ("shoal_batchjob_waiting_messages", 35.0),
        ("shoal_batchjob_in_flight_messages", 0.0),
        ("shoal_batchjob_dead_lettered_chunks", 0.0),
        ("shoal_batchjob_ready_workers", 0.0),
    ] {
        assert_eq!(
            sample(&metrics, &format!("{name}{job}")),
            Some(want),
            "{name}"
        );
    }
    assert_eq!(
        sample(
            &metrics,
            "shoal_batchjob_phase{batchjob=\"uploads\",namespace=\"default\",phase=\"Running\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        metrics.matches("batchjob=\"uploads\"").count(),
        10,
        "ten series a job:\n{metrics}"
    );
    for line in metrics.lines().filter(|l| l.starts_with("shoal_operator_")) {
        assert!(!line.contains("uploads"), "sums carry no job name: {line}");
    }

    // The queue drains: back to zero once the delay has passed.
    sqs.purge_queue().queue_url(&url).send().await.unwrap();
    wait_until(
        limit,
        "scaled down to 0",
        || (replicas(&plane) == Some(0)).then_some(()),
        log,
    );
    let status = plane.jsonpath(
        &["bj", "uploads"],
        "{.status.desiredWorkers} {.status.chunks.visible}",
    );
    assert_eq!(status, "0 0");
    assert!(log().contains("scaled workers"), "{}", log());

    // Deleted: its series go with it.
    plane.kubectl(&["delete", "bj", "uploads", "--wait=false"]);
    let metrics = wait_until(
        limit,
        "the job's series removed",
        || {
            let (_, text) = http_get(&format!("http://{metrics_addr}/metrics"));
            (!text.contains("uploads")).then_some(text)
        },
        log,
    );
    promtool_check(&metrics);
    assert_eq!(
        sample(&metrics, "shoal_operator_desired_workers"),
        Some(0.0)
    );
}
