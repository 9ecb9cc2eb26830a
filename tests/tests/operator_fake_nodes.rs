//! The operator on a cluster whose Deployments become pods: a real API
//! server and etcd, kube-controller-manager and kube-scheduler, and kwok's
//! fake nodes (see `shoal_tests::fake_nodes`). Jobs that get a backlog get
//! worker pods scheduled onto the nodes; the jobs' `readyWorkers` count
//! those pods once they are Ready; when the backlog goes, the pods go, and
//! the idle jobs never had any. The scale-in probe meets pod addresses
//! where nothing answers (loopback), as it meets workers that have died,
//! and the scale-in still happens.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is how a test reports failure"
)]

use std::collections::BTreeSet;
use std::time::Duration;

use shoal_tests::elasticmq::ElasticMq;
use shoal_tests::fake_nodes::FakeNodes;
use shoal_tests::kube::ControlPlane;
use shoal_tests::{operator, sqs, wait_until};

const OPERATOR: &str = env!("CARGO_BIN_EXE_shoal-operator-e2e");

/// Jobs in the cluster, and how many of them get a backlog.
const JOBS: usize = 12;
const BUSY: usize = 4;

/// `job<TAB>readyWorkers<TAB>desiredWorkers` lines of every BatchJob.
fn workers(plane: &ControlPlane) -> BTreeSet<String> {
    plane
        .jsonpath(
            &["bj"],
            "{range .items[*]}{.metadata.name}\t{.status.readyWorkers}\t{.status.desiredWorkers}\n{end}",
        )
        .lines()
        .map(str::to_owned)
        .collect()
}

/// `pod<TAB>node<TAB>phase<TAB>podIP` lines of the workers of `job`.
fn pods(plane: &ControlPlane, job: &str) -> Vec<String> {
    plane
        .jsonpath(
            &["pods", "-l", &format!("shoal.dev/batchjob={job}")],
            "{range .items[*]}{.metadata.name}\t{.spec.nodeName}\t{.status.phase}\t{.status.podIP}\n{end}",
        )
        .lines()
        .map(str::to_owned)
        .collect()
}

fn expected(busy: usize) -> BTreeSet<String> {
    (0..JOBS)
        .map(|n| {
            let workers = if n < BUSY { busy } else { 0 };
            format!("job-{n:02}\t{workers}\t{workers}")
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_pods_on_fake_nodes_follow_the_backlog_and_are_counted_ready() {
    let plane = ControlPlane::start();
    plane.install_crds();
    let nodes = FakeNodes::start(&plane, 3);
    let server = ElasticMq::start();
    let client = sqs::client(&server.endpoint());

    let mut urls = Vec::new();
    let mut yaml = String::new();
    for n in 0..JOBS {
        let name = format!("job-{n:02}");
        let url = operator::create_queue(&client, &name).await;
        yaml.push_str(&format!(
            "---
apiVersion: shoal.dev/v1alpha1
kind: BatchJob
metadata:
  name: {name}
spec:
  handler:
    image: ghcr.io/shoal-dev/thumbnail:0.1.0
    memoryMiB: 128
  source:
    sqs:
      queueUrl: {url}
  scaling:
    minWorkers: 0
    maxWorkers: 5
    targetBacklogPerWorker: 10
    scaleDownDelaySeconds: 0
"
        ));
        urls.push(url);
    }
    plane.apply_yaml(&yaml);

    let env = vec![
        ("AWS_ENDPOINT_URL_SQS", server.endpoint()),
        ("AWS_ACCESS_KEY_ID", "x".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "x".to_owned()),
        ("AWS_REGION", "us-east-1".to_owned()),
        ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
        // A line per reconcile and per outcome: which job was looked at
        // when, if one is ever left waiting.
        (
            "RUST_LOG",
            "info,shoal_operator::reconcile_timing=debug,shoal_operator::controller=debug"
                .to_owned(),
        ),
    ];
    let (op, _metrics) = operator::spawn(OPERATOR, &plane, env);
    let log = || {
        let objects = plane.kubectl_output(&["get", "bj,rs,pods,nodes,events", "-o", "wide"]);
        format!(
            "{}\n{}\n{}",
            String::from_utf8_lossy(&objects.stdout),
            nodes.logs(),
            op.log_text()
        )
    };
    let limit = Duration::from_secs(120);

    // Idle: a Deployment at 0 for every job, no pod anywhere.
    wait_until(
        limit,
        "every job at 0 workers",
        || (workers(&plane) == expected(0)).then_some(()),
        log,
    );

    // 30 messages on each busy queue, 10 per worker: 3 pods each, on the
    // fake nodes, Running with a loopback address, and counted Ready.
    for url in &urls[..BUSY] {
        operator::send_messages(&client, url, 30).await;
    }
    wait_until(
        limit,
        "the busy jobs at 3 ready workers",
        || (workers(&plane) == expected(3)).then_some(()),
        log,
    );
    let mut used_nodes = BTreeSet::new();
    for n in 0..JOBS {
        let job = format!("job-{n:02}");
        let pods = pods(&plane, &job);
        assert_eq!(pods.len(), if n < BUSY { 3 } else { 0 }, "{job}: {pods:?}");
        for pod in pods {
            let fields: Vec<&str> = pod.split('\t').collect();
            assert!(fields[1].starts_with("fake-"), "{job} not scheduled: {pod}");
            assert_eq!(fields[2], "Running", "{job}: {pod}");
            assert!(fields[3].starts_with("127.64."), "{job}: {pod}");
            used_nodes.insert(fields[1].to_owned());
        }
    }
    assert!(
        used_nodes.len() > 1,
        "12 pods all on one of 3 nodes: {used_nodes:?}"
    );

    // The backlog goes: the pods go with it (after the scale-in probe,
    // which nothing answers), and the jobs count 0 again.
    for url in &urls[..BUSY] {
        client.purge_queue().queue_url(url).send().await.unwrap();
    }
    wait_until(
        limit,
        "the busy jobs back at 0 and their pods gone",
        || {
            (workers(&plane) == expected(0)
                && (0..BUSY).all(|n| pods(&plane, &format!("job-{n:02}")).is_empty()))
            .then_some(())
        },
        log,
    );
    assert_eq!(
        plane.jsonpath(&["bj", "job-00"], "{.status.phase}"),
        "Running"
    );
}
