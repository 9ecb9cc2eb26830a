//! Two operator replicas against one real kube-apiserver: only the Lease
//! holder reconciles; when it is killed the other takes over once the
//! Lease expires; a replica stopped cleanly gives the Lease up.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is how a test reports failure"
)]

use std::time::Duration;

use shoal_tests::kube::ControlPlane;
use shoal_tests::moto::Moto;
use shoal_tests::operator::{self, SqsJob};
use shoal_tests::process::Proc;
use shoal_tests::{free_port, wait_until};

const OPERATOR: &str = env!("CARGO_BIN_EXE_shoal-operator-e2e");

fn operator(plane: &ControlPlane, moto: &Moto, name: &str) -> Proc {
    let mut env = moto.env();
    env.push((
        "KUBECONFIG",
        plane.kubeconfig().to_string_lossy().into_owned(),
    ));
    env.push(("POD_NAME", name.to_owned()));
    let addr = format!("127.0.0.1:{}", free_port());
    Proc::spawn(
        OPERATOR,
        &["run", "--metrics-addr", &addr, "--lease-seconds", "3"],
        &env,
        &plane.dir().join(format!("{name}.log")),
    )
}

fn holder(plane: &ControlPlane) -> String {
    plane.jsonpath(&["lease", "shoal-operator"], "{.spec.holderIdentity}")
}

fn replicas(plane: &ControlPlane) -> Option<i64> {
    operator::replicas(plane, "uploads-workers")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_reconciles_and_a_follower_takes_over() {
    let SqsJob {
        plane,
        moto,
        sqs,
        url,
    } = SqsJob::start(
        "",
        "    minWorkers: 1\n    maxWorkers: 5\n    targetBacklogPerWorker: 10\n",
    )
    .await;
    let limit = Duration::from_secs(60);

    let mut a = operator(&plane, &moto, "op-a");
    wait_until(
        limit,
        "op-a leads",
        || (holder(&plane) == "op-a").then_some(()),
        || a.log_text(),
    );
    wait_until(
        limit,
        "op-a reconciles",
        || (replicas(&plane) == Some(1)).then_some(()),
        || a.log_text(),
    );

    let mut b = operator(&plane, &moto, "op-b");
    wait_until(
        limit,
        "op-b waits",
        || {
            b.log_text()
                .contains("another replica leads; waiting")
                .then_some(())
        },
        || b.log_text(),
    );
    assert_eq!(holder(&plane), "op-a");

    // The leader dies without giving the Lease up: op-b takes over after
    // the lease duration and reconciles (a backlog of 25 wants 3 workers).
    a.kill();
    wait_until(
        limit,
        "op-b leads",
        || (holder(&plane) == "op-b").then_some(()),
        || b.log_text(),
    );
    operator::send_messages(&sqs, &url, 25).await;
    wait_until(
        limit,
        "op-b scales",
        || (replicas(&plane) == Some(3)).then_some(()),
        || b.log_text(),
    );
    let transitions = plane.jsonpath(&["lease", "shoal-operator"], "{.spec.leaseTransitions}");
    assert_eq!(transitions, "2", "created by op-a, taken by op-b");

    // A clean stop gives the Lease up at once.
    b.signal("TERM");
    assert!(
        b.wait(Duration::from_secs(30)).success(),
        "{}",
        b.log_text()
    );
    assert_eq!(holder(&plane), "");
}
