//! A Lambda function as a queue worker's handler (`shoal-host worker`):
//! `examples/python-lambda/app.py`, run by AWS's `awslambdaric`, consumes
//! S3 notifications from an SQS queue (ElasticMQ) in batches, with S3 on
//! moto. Its partial batch response settles each message: the good ones
//! are deleted, the poison one is retried alone and dead-lettered.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is how a test reports failure"
)]

use std::path::PathBuf;
use std::time::Duration;

use shoal_host::events::{CreatedObject, event_time, object_created, s3_event};
use shoal_tests::free_port;
use shoal_tests::process::Proc;
use std::collections::HashMap;

use aws_sdk_sqs::types::Message;
use shoal_tests::sqs::{Queues, counts, create_queues, send_all, take_all, wait_for};
use shoal_tests::stack::{Stack, corrupt_jpeg, keys, photos_and_thumbs, tiny_jpeg, upload};

const HOST: &str = env!("CARGO_BIN_EXE_shoal-host-e2e");

fn python() -> String {
    std::env::var("SHOAL_LAMBDA_PYTHON").unwrap_or_else(|_| {
        panic!("SHOAL_LAMBDA_PYTHON is not set: source scripts/install-test-deps.sh")
    })
}

fn task_root() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/python-lambda")
        .to_string_lossy()
        .into_owned()
}

/// What S3 sends to a queue when `key` is uploaded to `photos`.
fn notification(key: &str) -> String {
    let object = CreatedObject {
        bucket: "photos",
        key,
        size: None,
        etag: None,
    };
    let event = s3_event(vec![object_created(
        "us-east-1",
        &object,
        &event_time(std::time::SystemTime::now()),
    )]);
    String::from_utf8(event.to_vec()).unwrap()
}

/// PIDs of processes whose environment holds `marker`.
fn processes_marked(marker: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|c| c.is_ascii_digit())
        })
        .filter(|e| {
            std::fs::read(e.path().join("environ"))
                .is_ok_and(|env| env.windows(marker.len()).any(|w| w == marker.as_bytes()))
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// `shoal-host worker` with the thumbnail function on the SQS queues of
/// `stack`, `extra` worker options before `--`; its log in `dir`.
fn thumbnail_host(
    stack: &Stack,
    queues: &Queues,
    extra: &[&str],
    dir: &std::path::Path,
    env: &[(&'static str, String)],
) -> Proc {
    let python = python();
    let mut all_env = stack.env();
    all_env.extend([
        ("THUMBNAIL_BUCKET", "thumbs".to_owned()),
        ("LAMBDA_TASK_ROOT", task_root()),
        ("SHOAL_INIT_TIMEOUT", "60".to_owned()),
        ("SHOAL_METRICS_ADDR", format!("127.0.0.1:{}", free_port())),
    ]);
    all_env.extend(env.iter().cloned());
    let mut args = vec![
        "worker",
        "--queue",
        &queues.url,
        "--dead-letter-queue",
        &queues.dead_letter_url,
        "--timeout",
        "60",
    ];
    args.extend_from_slice(extra);
    args.extend(["--", &python, "-m", "awslambdaric", "app.handler"]);
    Proc::spawn(HOST, &args, &all_env, &dir.join("host.log"))
}

/// The dead letters in `url`, once there is at least one (2 minutes at
/// most).
async fn dead_letters(
    stack: &Stack,
    url: &str,
    host: &Proc,
) -> Vec<(Message, HashMap<String, String>)> {
    let started = std::time::Instant::now();
    loop {
        let dead = take_all(&stack.sqs, url).await;
        if !dead.is_empty() {
            return dead;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no dead letter after 2 minutes: {}",
            host.log_text()
        );
    }
}

/// SIGTERM, then a clean exit within a minute.
fn stop(mut host: Proc) {
    host.signal("TERM");
    let status = host.wait(Duration::from_secs(60));
    assert!(status.success(), "exit {status}: {}", host.log_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_thumbnail_function_consumes_sqs_batches_and_its_partial_batch_response_settles_each_message()
 {
    let stack = Stack::start();
    let dir = tempfile::tempdir().unwrap();
    photos_and_thumbs(&stack.s3, "in/cat.jpg").await;
    let good = ["in/cat.jpg", "in/holiday dog.jpg", "in/owl.jpg"];
    upload(
        &stack.s3,
        "photos",
        &good[1..]
            .iter()
            .map(|k| (*k).to_owned())
            .collect::<Vec<_>>(),
        &tiny_jpeg(),
    )
    .await;
    upload(
        &stack.s3,
        "photos",
        &["in/broken.jpg".to_owned()],
        &corrupt_jpeg(),
    )
    .await;
    // Two receives: the worker takes the attempts from the queue's redrive
    // policy and dead-letters on the second failure itself, with a reason.
    let queues = create_queues(&stack.sqs, "uploads", 30, 2).await;
    let bodies: Vec<String> = good
        .iter()
        .chain(&["in/broken.jpg"])
        .map(|k| notification(k))
        .collect();
    send_all(&stack.sqs, &queues.url, &bodies).await;

    let marker = format!("HOST_WORKER_TEST={}", std::process::id());
    let host = thumbnail_host(
        &stack,
        &queues,
        &[
            "--function-name",
            "thumbnails",
            "--memory-mib",
            "512",
            "--concurrency",
            "1",
            "--receivers",
            "1",
            "--max-messages-in-flight",
            "10",
            "--retry-base-delay-ms",
            "100",
        ],
        dir.path(),
        &[("HOST_WORKER_TEST", std::process::id().to_string())],
    );
    let dead = dead_letters(&stack, &queues.dead_letter_url, &host).await;
    wait_for("the queue to empty", Duration::from_secs(60), || async {
        counts(&stack.sqs, &queues.url).await == (0, 0, 0)
    })
    .await;
    let log = host.log_text();
    assert_eq!(dead.len(), 1, "{dead:?}\n{log}");
    let (message, attributes) = &dead[0];
    assert!(
        message.body().unwrap_or_default().contains("in/broken.jpg"),
        "{message:?}"
    );
    let reason = attributes.get("shoal.reason").cloned().unwrap_or_default();
    assert!(reason.contains("batchItemFailures"), "{attributes:?}");

    let made = keys(&stack.s3, "thumbs", "").await;
    for key in good {
        assert!(
            made.contains(key),
            "{key} has no thumbnail: {made:?}\n{log}"
        );
    }
    assert!(!made.contains("in/broken.jpg"), "{made:?}");

    // One SQS event carried the whole receive; the poison message came
    // back alone.
    assert!(log.contains("4 messages, 1 failed"), "{log}");
    assert!(log.contains("1 messages, 1 failed"), "{log}");
    let reports: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("REPORT RequestId: "))
        .collect();
    assert_eq!(reports.len(), 2, "one invocation per batch: {reports:#?}");
    assert!(reports[0].contains("Init Duration: "), "{}", reports[0]);
    assert!(
        !reports[1].contains("Init Duration: "),
        "warm: {}",
        reports[1]
    );
    assert!(reports[0].contains("Memory Size: 512 MB"), "{}", reports[0]);

    assert!(
        processes_marked(&marker).len() >= 2,
        "the host and its warm environment run"
    );
    stop(host);
    assert_eq!(
        processes_marked(&marker),
        Vec::<String>::new(),
        "the function's processes end with the worker"
    );
}

/// A shoal chunk (what the operator's fan-out sends) gives the function one
/// S3 event per object; an item naming a bucket outside the worker's input
/// is dead-lettered before the function sees it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunk_items_are_s3_events_and_a_foreign_bucket_never_reaches_the_function() {
    let stack = Stack::start();
    let dir = tempfile::tempdir().unwrap();
    photos_and_thumbs(&stack.s3, "in/cat.jpg").await;
    stack
        .s3
        .create_bucket()
        .bucket("secrets")
        .send()
        .await
        .unwrap();
    upload(&stack.s3, "secrets", &["x.jpg".to_owned()], &tiny_jpeg()).await;
    let queues = create_queues(&stack.sqs, "chunks", 30, 2).await;
    let chunk = serde_json::json!({
        "chunkId": "c-hostile",
        "items": [
            {"bucket": "photos", "key": "in/cat.jpg"},
            {"bucket": "secrets", "key": "x.jpg"},
        ],
    });
    send_all(&stack.sqs, &queues.url, &[chunk.to_string()]).await;

    let host = thumbnail_host(
        &stack,
        &queues,
        &["--input", "s3://photos/in/"],
        dir.path(),
        &[],
    );
    let dead = dead_letters(&stack, &queues.dead_letter_url, &host).await;
    let reason = dead[0].1.get("shoal.reason").cloned().unwrap_or_default();
    assert!(
        reason.contains("x.jpg")
            && reason.contains("\"secrets\", which is not this worker's input"),
        "{reason}"
    );
    assert_eq!(
        dead[0].1.get("shoal.pending").map(String::as_str),
        Some(shoal_protocol::headers::encode_indices(&[1]).as_str()),
        "only the foreign item is dead: {:?}",
        dead[0].1
    );
    let made = keys(&stack.s3, "thumbs", "").await;
    assert!(made.contains("in/cat.jpg"), "{made:?}\n{}", host.log_text());
    let log = host.log_text();
    assert_eq!(
        log.matches("REPORT RequestId: ").count(),
        1,
        "the function ran for the photo only:\n{log}"
    );
    stop(host);
}

/// From RabbitMQ each message body is the function's event (a direct
/// invoke); the function's exception dead-letters its message with the
/// error type and message as the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_messages_are_direct_invokes_and_an_exception_is_the_dead_letters_reason() {
    use futures_util::StreamExt;
    use lapin::options::{BasicAckOptions, BasicConsumeOptions};
    use lapin::types::{AMQPValue, FieldTable};

    let python = python();
    let rabbit = shoal_tests::rabbitmq::Rabbit::start();
    let dir = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let functions = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../host/tests/functions/python")
        .to_string_lossy()
        .into_owned();
    let env = [
        ("LAMBDA_TASK_ROOT", functions),
        ("OUT_DIR", out.path().to_string_lossy().into_owned()),
        ("SHOAL_INIT_TIMEOUT", "60".to_owned()),
        ("SHOAL_WAIT_TIME", "1".to_owned()),
        ("SHOAL_METRICS_ADDR", format!("127.0.0.1:{}", free_port())),
    ];
    let queue = rabbit.queue_url("direct");
    let args = [
        "worker",
        "--queue",
        &queue,
        "--max-attempts",
        "2",
        "--retry-base-delay-ms",
        "50",
        "--concurrency",
        "2",
        "--timeout",
        "30",
        "--",
        &python,
        "-m",
        "awslambdaric",
        "app.direct",
    ];
    let host = Proc::spawn(HOST, &args, &env, &dir.path().join("host.log"));
    let started = std::time::Instant::now();
    while !rabbit.exists("direct").await {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the worker declared no queue: {}",
            host.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let bodies: Vec<String> = [
        r#"{"id": 1}"#,
        r#"{"id": 2}"#,
        r#"{"id": 3, "poison": true}"#,
    ]
    .iter()
    .map(|b| (*b).to_owned())
    .collect();
    rabbit.publish("direct", &bodies).await;

    let (_connection, channel) = rabbit.channel().await;
    let mut consumer = channel
        .basic_consume(
            "direct.dlq".into(),
            "test".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let letter = tokio::time::timeout(Duration::from_secs(120), consumer.next())
        .await
        .unwrap_or_else(|_| panic!("no dead letter in 2 minutes: {}", host.log_text()))
        .unwrap()
        .unwrap();
    letter.ack(BasicAckOptions::default()).await.unwrap();
    assert_eq!(String::from_utf8_lossy(&letter.data), bodies[2]);
    let headers = letter.properties.headers().clone().unwrap_or_default();
    let reason = match headers.inner().get("shoal.reason") {
        Some(AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        other => panic!("shoal.reason: {other:?}"),
    };
    assert!(reason.contains("ValueError: poison message 3"), "{reason}");
    for id in ["1", "2"] {
        let path = out.path().join(id);
        let request_id = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}\n{}", path.display(), host.log_text()));
        assert!(
            host.log_text()
                .contains(&format!("REPORT RequestId: {request_id}")),
            "the REPORT line names the request id the function saw"
        );
    }
    stop(host);
}

/// A cold start is not counted against the invocation's timeout: a
/// function whose init takes 2 s runs its first event under a 1 s
/// timeout, with the whole second left when it gets it, and the REPORT
/// line keeps the init apart (`Init Duration`, not in `Duration`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_start_longer_than_the_timeout_does_not_count_against_it() {
    let python = python();
    let stack = Stack::start();
    let dir = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let queues = create_queues(&stack.sqs, "cold", 30, 2).await;
    send_all(&stack.sqs, &queues.url, &["hello".to_owned()]).await;
    let functions = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../host/tests/functions/python")
        .to_string_lossy()
        .into_owned();
    let mut env = stack.env();
    env.extend([
        ("LAMBDA_TASK_ROOT", functions),
        ("OUT_DIR", out.path().to_string_lossy().into_owned()),
        ("INIT_SECONDS", "2".to_owned()),
        ("SHOAL_INIT_TIMEOUT", "60".to_owned()),
        ("SHOAL_METRICS_ADDR", format!("127.0.0.1:{}", free_port())),
    ]);
    let args = [
        "worker",
        "--queue",
        &queues.url,
        "--dead-letter-queue",
        &queues.dead_letter_url,
        "--timeout",
        "1",
        "--",
        &python,
        "-m",
        "awslambdaric",
        "cold.handler",
    ];
    let host = Proc::spawn(HOST, &args, &env, &dir.path().join("host.log"));
    wait_for(
        "the message handled and deleted",
        Duration::from_secs(90),
        || async {
            counts(&stack.sqs, &queues.url).await == (0, 0, 0)
                && std::fs::read_dir(out.path()).is_ok_and(|d| d.count() == 1)
        },
    )
    .await;
    let log = host.log_text();
    let written = std::fs::read_dir(out.path())
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    let remaining: u64 = std::fs::read_to_string(written.path())
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        remaining > 500,
        "the deadline the function saw ran from its event, not from the cold start: {remaining} ms left\n{log}"
    );
    let report = log
        .lines()
        .find(|l| l.contains("REPORT RequestId: "))
        .unwrap_or_else(|| panic!("no REPORT line:\n{log}"));
    let field = |name: &str| -> f64 {
        let at = report
            .find(name)
            .unwrap_or_else(|| panic!("{name} in {report}"));
        report[at + name.len()..]
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert!(field("Init Duration: ") >= 2000.0, "{report}");
    assert!(field("\\tDuration: ") < 1000.0, "{report}");
    assert!(
        take_all(&stack.sqs, &queues.dead_letter_url)
            .await
            .is_empty()
    );
    stop(host);
}
