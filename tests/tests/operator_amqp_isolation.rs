//! The operator with RabbitMQ (Debian's rabbitmq-server) against a real
//! kube-apiserver, where jobs must not reach what is not theirs: a queue of
//! the derived name that someone else declared is neither published to nor
//! deleted, and a broker password never goes to a host other than the
//! broker's nor into any log, status or Event.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is how a test reports failure"
)]

use std::time::Duration;

use lapin::types::FieldTable;
use shoal_tests::kube::ControlPlane;
use shoal_tests::operator::{self, replicas};
use shoal_tests::rabbitmq::Rabbit;
use shoal_tests::stack::{Stack, tiny_jpeg, upload};
use shoal_tests::wait_until;

const OPERATOR: &str = env!("CARGO_BIN_EXE_shoal-operator-e2e");

/// A queue under the name the operator would derive, declared by someone
/// else before the job existed, is neither used nor deleted: the job waits
/// with QueueNotOwned, nothing is published to it, and deleting the job
/// leaves it with its messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_someone_else_declared_is_neither_used_nor_deleted() {
    let plane = ControlPlane::start();
    plane.install_crds();
    let rabbit = Rabbit::start();
    operator::rabbitmq_secret(&plane, &rabbit);
    let stack = Stack::start();
    upload(
        &stack.s3,
        "photos",
        &["incoming/p.jpg".to_owned()],
        &tiny_jpeg(),
    )
    .await;
    let queue = "shoal.default.squatted";
    {
        let (_connection, channel) = rabbit.channel().await;
        channel
            .queue_declare(
                queue.into(),
                lapin::options::QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
    }
    rabbit.publish(queue, &["not shoal's".to_owned()]).await;
    let management = rabbit.management_url();
    plane.apply_yaml(&operator::batchjob_yaml(
        "squatted",
        &operator::thumbnails_spec(
            &format!(
                "  queue:\n    amqp:\n      secretName: rabbitmq\n      managementUrl: {management}\n"
            ),
            "thumbs/",
        ),
    ));
    let operator = operator::spawn(OPERATOR, &plane, stack.env()).0;
    let log = || operator.log_text();
    let limit = Duration::from_secs(60);
    operator::wait_for_state(&plane, "squatted", "Pending QueueNotOwned", limit, log);
    let message = plane.jsonpath(&["bj", "squatted"], "{.status.conditions[0].message}");
    assert!(message.contains("shoal.default.squatted"), "{message}");
    assert!(!message.contains("guest"), "{message}");
    assert_eq!(rabbit.ready(queue).await, 1, "nothing published to it");
    assert!(
        !rabbit.exists(&format!("{queue}.dlq")).await,
        "nothing declared beside it"
    );
    assert!(
        plane
            .jsonpath(&["deployment", "squatted-workers"], "{.metadata.name}")
            .is_empty()
    );

    // Status is no authority: naming the queue there makes the operator
    // neither publish to it nor delete it.
    plane.kubectl(&[
        "patch",
        "bj",
        "squatted",
        "--subresource=status",
        "--type=merge",
        "-p",
        &format!(
            r#"{{"status":{{"queueUrl":"{}"}}}}"#,
            rabbit.queue_url(queue).replace("guest:guest@", "")
        ),
    ]);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        rabbit.ready(queue).await,
        1,
        "nothing published after the forgery"
    );
    operator::wait_for_state(&plane, "squatted", "Pending QueueNotOwned", limit, log);
    plane.kubectl(&["delete", "bj", "squatted", "--wait=true", "--timeout=60s"]);
    assert_eq!(rabbit.ready(queue).await, 1, "left with its message");
    operator::wait_for_events(&plane, None, &["QueuesNotDeleted"]);
}

/// A BatchJob's author may point `managementUrl` anywhere; the Secret's
/// password must only ever reach the broker's own host, and must appear in
/// no status, Event, log line or metric.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_brokers_password_reaches_no_other_host_and_nothing_printed() {
    const CANARY: &str = "Canary-Pw-5e1f0c";
    let plane = ControlPlane::start();
    plane.install_crds();
    let rabbit = Rabbit::start();
    let url = rabbit.add_user("canary", CANARY);
    plane.kubectl(&[
        "create",
        "secret",
        "generic",
        "rabbitmq",
        &format!("--from-literal=url={url}"),
    ]);
    // Somewhere else on loopback, by another name: what an author who
    // wants the password would listen on.
    let collector = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    collector.set_nonblocking(true).unwrap();
    let elsewhere = format!(
        "http://localhost:{}",
        collector.local_addr().unwrap().port()
    );
    let job = |name: &str, management: &str| {
        format!(
            "apiVersion: shoal.dev/v1alpha1
kind: BatchJob
metadata:
  name: {name}
spec:
  handler:
    image: ghcr.io/shoal-dev/thumbnail:0.1.0
  source:
    amqp:
      connection:
        secretName: rabbitmq
        managementUrl: {management}
      queue: {name}
"
        )
    };
    plane.apply_yaml(&job("exfiltrate", &elsewhere));
    plane.apply_yaml(&job("honest", &rabbit.management_url()));
    let (operator, metrics) = operator::spawn(OPERATOR, &plane, Vec::new());
    let log = || operator.log_text();
    let limit = Duration::from_secs(60);
    operator::wait_for_state(
        &plane,
        "exfiltrate",
        "Pending BrokerSecretInvalid",
        limit,
        log,
    );
    let message = plane.jsonpath(&["bj", "exfiltrate"], "{.status.conditions[0].message}");
    assert!(message.contains("not the broker's host"), "{message}");
    // The honest job runs: its queue is declared with the canary's rights.
    wait_until(
        limit,
        "the honest job's workers",
        || (replicas(&plane, "honest-workers") == Some(0)).then_some(()),
        log,
    );
    assert!(rabbit.exists("honest").await);
    // Let a few backlog polls happen, then look everywhere.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        collector.accept().is_err(),
        "the operator connected to a management URL on another host"
    );
    let (status, text) = shoal_tests::prom::http_get(&format!("http://{metrics}/metrics"));
    assert_eq!(status, 200);
    let everything = [
        plane.kubectl(&["get", "bj", "-o", "json"]),
        plane.kubectl(&["get", "events", "-o", "json"]),
        plane.kubectl(&["get", "deployments", "-o", "json"]),
        log(),
        text,
    ];
    for printed in everything {
        assert!(
            !printed.contains(CANARY),
            "the password was printed: {printed}"
        );
    }
}
