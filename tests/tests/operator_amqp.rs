//! The operator with RabbitMQ (Debian's rabbitmq-server) against a real
//! kube-apiserver: the broker URL only in a Secret, replicas from the
//! queue's ready + unacknowledged counts, and an S3 fan-out published onto
//! RabbitMQ with confirms, run to Succeeded by worker processes started
//! from the pod template the operator wrote (no kubelet here: the test
//! resolves the template's `secretKeyRef` and `$(VAR)` itself, as the
//! kubelet would); a chunk published to a queue that does not exist
//! fails the publish; and `kubectl shoal invoke` publishes to a consuming
//! job's queue with the URL from its Secret.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is how a test reports failure"
)]

use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use shoal_operator::amqp::{Amqp, Broker};
use shoal_tests::kube::ControlPlane;
use shoal_tests::operator::{self, replicas};
use shoal_tests::process::Proc;
use shoal_tests::rabbitmq::Rabbit;
use shoal_tests::stack::{Stack, keys, tiny_jpeg, upload};
use shoal_tests::wait_until;

const OPERATOR: &str = env!("CARGO_BIN_EXE_shoal-operator-e2e");
const HANDLER: &str = env!("CARGO_BIN_EXE_thumbnail-e2e");
const PLUGIN: &str = env!("CARGO_BIN_EXE_kubectl-shoal-e2e");

/// `kubectl-shoal ARGS` with the plane's kubeconfig: its exit code,
/// standard output and error.
fn shoal(plane: &ControlPlane, args: &[&str]) -> (Option<i32>, String, String) {
    let out = std::process::Command::new(PLUGIN)
        .args(args)
        .env("KUBECONFIG", plane.kubeconfig())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// BatchJob `name` consuming RabbitMQ queue `queue` of the broker whose
/// URL Secret `secret` holds.
fn consuming_job(name: &str, secret: &str, queue: &str) -> String {
    operator::batchjob_yaml(
        name,
        &format!(
            "  handler:
    image: ghcr.io/shoal-dev/thumbnail:0.1.0
  source:
    amqp:
      connection:
        secretName: {secret}
      queue: {queue}
"
        ),
    )
}

/// The operator as a process (defaults: counts taken as up to 10 s old).
fn start_operator(plane: &ControlPlane, env: Vec<(&'static str, String)>) -> Proc {
    operator::spawn(OPERATOR, plane, env).0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_follow_ready_plus_unacked_messages_on_rabbitmq() {
    let plane = ControlPlane::start();
    plane.install_crds();
    let rabbit = Rabbit::start();
    operator::rabbitmq_secret(&plane, &rabbit);
    let management = rabbit.management_url();
    plane.apply_yaml(&format!(
        "apiVersion: shoal.dev/v1alpha1
kind: BatchJob
metadata:
  name: uploads
spec:
  handler:
    image: ghcr.io/shoal-dev/thumbnail:0.1.0
    concurrency: 2
  source:
    amqp:
      connection:
        secretName: rabbitmq
        managementUrl: {management}
      queue: uploads
  scaling:
    minWorkers: 0
    maxWorkers: 5
    targetBacklogPerWorker: 10
    scaleDownDelaySeconds: 2
---
{orphan}",
        orphan = consuming_job("orphan", "missing", "orphan")
    ));
    let operator = start_operator(&plane, Vec::new());
    let log = || operator.log_text();
    let limit = Duration::from_secs(60);

    // The queue is declared on the fresh broker; no work, no workers.
    wait_until(
        limit,
        "deployment at 0 replicas",
        || (replicas(&plane, "uploads-workers") == Some(0)).then_some(()),
        log,
    );
    assert!(rabbit.exists("uploads").await, "the operator declared it");
    assert!(rabbit.exists("uploads.dlq").await);
    let public = rabbit
        .uri()
        .replace("guest:guest@", "")
        .replace("%2f", "%2F");
    assert_eq!(
        plane.jsonpath(&["bj", "uploads"], "{.status.queueUrl}"),
        format!("{public}/uploads")
    );
    // The workers get the URL from the Secret; the password is nowhere in
    // the Deployment or the status.
    let deployment = plane.kubectl(&["get", "deployment", "uploads-workers", "-o", "json"]);
    let job = plane.kubectl(&["get", "bj", "uploads", "-o", "json"]);
    for text in [&deployment, &job] {
        assert!(!text.contains("guest:guest"), "credentials leaked: {text}");
    }
    let queue_env = |name: &str, path: &str| {
        plane.jsonpath(
            &["deployment", "uploads-workers"],
            &format!("{{.spec.template.spec.containers[0].env[?(@.name==\"{name}\")].{path}}}"),
        )
    };
    assert_eq!(
        queue_env("SHOAL_QUEUE", "value"),
        "$(SHOAL_AMQP_URL)/uploads"
    );
    assert_eq!(
        queue_env("SHOAL_AMQP_URL", "valueFrom.secretKeyRef.name"),
        "rabbitmq"
    );
    // A job whose Secret is missing waits, saying why.
    operator::wait_for_state(&plane, "orphan", "Pending BrokerSecretNotFound", limit, log);

    // 35 messages at 10 per worker: 4 workers.
    let bodies: Vec<String> = (0..35)
        .map(|n| format!("{{\"key\": \"photo-{n}.jpg\"}}"))
        .collect();
    rabbit.publish("uploads", &bodies).await;
    wait_until(
        limit,
        "scaled up to 4",
        || (replicas(&plane, "uploads-workers") == Some(4)).then_some(()),
        log,
    );

    // A consumer takes 25 and holds them unacknowledged: still 35 to do,
    // still 4 workers, and the status tells ready from in flight.
    let (_connection, channel) = rabbit.channel().await;
    channel
        .basic_qos(25, BasicQosOptions::default())
        .await
        .unwrap();
    let mut consumer = channel
        .basic_consume(
            "uploads".into(),
            "holder".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut held = Vec::new();
    while held.len() < 25 {
        let delivery = tokio::time::timeout(Duration::from_secs(60), consumer.next())
            .await
            .expect("a delivery within 60 s")
            .expect("the consumer is open")
            .unwrap();
        held.push(delivery);
    }
    wait_until(
        limit,
        "in-flight messages in the status",
        || {
            let s = plane.jsonpath(
                &["bj", "uploads"],
                "{.status.chunks.visible} {.status.chunks.inFlight} {.status.desiredWorkers}",
            );
            (s == "10 25 4").then_some(())
        },
        log,
    );
    assert_eq!(replicas(&plane, "uploads-workers"), Some(4));

    // Everything done (the 25 held and the 10 left): back to zero after
    // the scale-down delay.
    for delivery in held {
        delivery.ack(BasicAckOptions::default()).await.unwrap();
    }
    for _ in 0..10 {
        let delivery = tokio::time::timeout(Duration::from_secs(60), consumer.next())
            .await
            .expect("a delivery within 60 s")
            .expect("the consumer is open")
            .unwrap();
        delivery.ack(BasicAckOptions::default()).await.unwrap();
    }
    wait_until(
        limit,
        "scaled down to 0",
        || (replicas(&plane, "uploads-workers") == Some(0)).then_some(()),
        log,
    );
    channel.close(200, "done".into()).await.unwrap();

    // kubectl shoal invoke: the body published as it is, confirmed by the
    // broker, with the URL from the job's Secret and its password never
    // printed; the operator scales up for it.
    let (code, stdout, stderr) =
        shoal(&plane, &["invoke", "uploads", "-p", "{\"key\": \"x.jpg\"}"]);
    assert_eq!(code, Some(0), "{stderr}");
    let public = rabbit
        .queue_url("uploads")
        .replace("guest:guest@", "")
        .replace("%2f", "%2F");
    assert!(
        stdout.starts_with(&format!(
            "sent 16 bytes to batchjob default/uploads on {public}: message invoke-"
        )),
        "{stdout}"
    );
    assert_eq!(rabbit.ready("uploads").await, 1);
    wait_until(
        limit,
        "a worker for the invoked item",
        || (replicas(&plane, "uploads-workers") == Some(1)).then_some(()),
        log,
    );
    let (code, _, stderr) = shoal(&plane, &["invoke", "uploads", "-p", "x", "--group-id", "g"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("are for SQS FIFO queues"), "{stderr}");
    // A job whose Secret is missing: said, nothing sent.
    let (code, _, stderr) = shoal(&plane, &["invoke", "orphan", "-p", "x"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("secret default/missing (the RabbitMQ URL) does not exist"),
        "{stderr}"
    );
    // A Secret naming an address this machine cannot reach (as an
    // in-cluster service name would be): refused without the password;
    // --amqp-address reaches the broker with the Secret's credentials.
    let unreachable = format!(
        "amqp://guest:guest@127.0.0.1:{}/%2f",
        shoal_tests::free_port()
    );
    plane.kubectl(&[
        "create",
        "secret",
        "generic",
        "in-cluster",
        &format!("--from-literal=url={unreachable}"),
    ]);
    plane.apply_yaml(&consuming_job("remote", "in-cluster", "uploads"));
    let (code, _, stderr) = shoal(&plane, &["invoke", "remote", "-p", "x"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot connect to amqp://127.0.0.1:"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("guest:guest"),
        "the password leaked: {stderr}"
    );
    let address = rabbit.address();
    let (code, stdout, stderr) = shoal(
        &plane,
        &[
            "invoke",
            "remote",
            "-p",
            "x",
            "--amqp-address",
            &address,
            "-o",
            "json",
        ],
    );
    assert_eq!(code, Some(0), "{stderr}");
    let sent: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        sent["queue"],
        format!("amqp://{address}/%2F/uploads"),
        "{sent}"
    );
    assert_eq!(rabbit.ready("uploads").await, 2);
    plane.kubectl(&["delete", "bj", "remote", "--wait=true", "--timeout=60s"]);

    // Deleting the job leaves the queue it was given.
    plane.kubectl(&["delete", "bj", "uploads", "--wait=true", "--timeout=60s"]);
    assert!(rabbit.exists("uploads").await, "a given queue is kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_job_fanned_out_onto_rabbitmq_runs_to_succeeded() {
    let plane = ControlPlane::start();
    plane.install_crds();
    let rabbit = Rabbit::start();
    operator::rabbitmq_secret(&plane, &rabbit);
    let stack = Stack::start();
    let photos: Vec<String> = (0..30)
        .map(|n| format!("incoming/photo-{n:03}.jpg"))
        .collect();
    upload(&stack.s3, "photos", &photos, &tiny_jpeg()).await;
    // One input no decoder accepts: its chunk is dead-lettered.
    upload(
        &stack.s3,
        "photos",
        &["incoming/zz-broken.jpg".to_owned()],
        b"not an image",
    )
    .await;

    let env = stack.env_yaml();
    let management = rabbit.management_url();
    plane.apply_yaml(&format!(
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
{env}      - name: SHOAL_RETRY_MAX_DELAY_MS
        value: \"1000\"
  source:
    s3:
      bucket: photos
      prefix: incoming/
      maxItemsPerChunk: 4
  queue:
    maxReceiveCount: 2
    amqp:
      secretName: rabbitmq
      managementUrl: {management}
  scaling:
    maxWorkers: 2
    targetBacklogPerWorker: 2
    scaleDownDelaySeconds: 1
  failurePolicy:
    maxFailedChunks: 1
  output:
    bucket: photos
    prefix: thumbs/
"
    ));
    let operator = start_operator(&plane, stack.env());
    let log = || operator.log_text();
    let limit = Duration::from_secs(120);

    // 31 objects in chunks of 4: 8 chunks, all published and confirmed.
    let split = operator::split_done(&plane, "thumbnails", limit, log);
    assert_eq!(split, "true 8 31");
    let queue = "shoal.default.thumbnails";
    assert_eq!(rabbit.ready(queue).await, 8, "every chunk is on the broker");
    wait_until(
        limit,
        "workers wanted",
        || (replicas(&plane, "thumbnails-workers") == Some(2)).then_some(()),
        log,
    );

    let workers = shoal_tests::pods::start_workers(&plane, "thumbnails-workers", HANDLER, 2);
    let all_logs = || {
        let mut text = log();
        for worker in &workers {
            text.push_str(&worker.log_text());
        }
        text
    };
    wait_until(
        limit,
        "BatchJob Succeeded",
        || (plane.jsonpath(&["bj", "thumbnails"], "{.status.phase}") == "Succeeded").then_some(()),
        all_logs,
    );
    let counts = plane.jsonpath(
        &["bj", "thumbnails"],
        "{.status.chunks.total} {.status.chunks.succeeded} {.status.chunks.deadLettered} {.status.desiredWorkers}",
    );
    assert_eq!(counts, "8 7 1 0");
    assert_eq!(rabbit.ready(&format!("{queue}.dlq")).await, 1);
    let thumbs = keys(&stack.s3, "photos", "thumbs/").await;
    assert_eq!(
        shoal_tests::stack::outputs(&thumbs),
        30,
        "30 thumbnails: {thumbs:?}"
    );
    assert!(thumbs.contains("thumbs/_shoal/manifest.json"), "{thumbs:?}");
    // The broken input fixed and its dead letter redriven: the job runs
    // again, only that item is redone, and it succeeds with none failed.
    upload_again(&stack.s3, "incoming/zz-broken.jpg", &tiny_jpeg()).await;
    let out = std::process::Command::new(OPERATOR)
        .args(["redrive", "thumbnails", "--wait", "--timeout", "2m"])
        .env("KUBECONFIG", plane.kubeconfig())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("redrive 1 moved 1 dead letters back"),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until(
        limit,
        "Succeeded with nothing dead-lettered",
        || {
            let now = plane.jsonpath(
                &["bj", "thumbnails"],
                "{.status.phase} {.status.chunks.total} {.status.chunks.succeeded} {.status.chunks.deadLettered}",
            );
            (now == "Succeeded 8 8 0").then_some(())
        },
        all_logs,
    );
    assert_eq!(rabbit.ready(&format!("{queue}.dlq")).await, 0);
    let thumbs = keys(&stack.s3, "photos", "thumbs/").await;
    assert_eq!(
        shoal_tests::stack::outputs(&thumbs),
        31,
        "31 thumbnails: {thumbs:?}"
    );
    // Succeeded means 0 replicas: the pods would be gone (else a worker
    // would declare its queue again).
    drop(workers);

    // Deleting the job deletes the queues the operator declared.
    plane.kubectl(&["delete", "bj", "thumbnails", "--wait=true", "--timeout=60s"]);
    for name in [queue.to_owned(), format!("{queue}.dlq")] {
        assert!(!rabbit.exists(&name).await, "{name} deleted");
    }
}

/// Puts `body` at `key` in bucket `photos` (which exists).
async fn upload_again(s3: &aws_sdk_s3::Client, key: &str, body: &[u8]) {
    s3.put_object()
        .bucket("photos")
        .key(key)
        .body(body.to_vec().into())
        .send()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_no_queue_takes_fail_the_publish_instead_of_vanishing() {
    let rabbit = Rabbit::start();
    let broker = Broker::parse(&rabbit.uri(), Some(&rabbit.management_url()), None).unwrap();
    let amqp = Amqp::new(Duration::from_secs(10)).unwrap();
    let chunks = vec![("chunk-0".to_owned(), "{}".to_owned())];
    let error = amqp
        .publish(&broker, "nowhere", &chunks)
        .await
        .expect_err("no queue named nowhere");
    assert!(error.to_string().contains("returned"), "{error}");
    assert!(!error.to_string().contains("guest:guest"), "{error}");
    // Once declared, the same publish is confirmed and the chunk is there.
    amqp.ensure_queues(&broker, "nowhere", 3, None)
        .await
        .unwrap()
        .unwrap();
    amqp.publish(&broker, "nowhere", &chunks).await.unwrap();
    assert_eq!(rabbit.ready("nowhere").await, 1);
}
