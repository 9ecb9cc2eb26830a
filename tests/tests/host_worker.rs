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
use shoal_tests::sqs::{counts, create_queues, send_all, take_all, wait_for};
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_thumbnail_function_consumes_sqs_batches_and_its_partial_batch_response_settles_each_message()
 {
    let python = python();
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
    let mut env = stack.env();
    env.extend([
        ("THUMBNAIL_BUCKET", "thumbs".to_owned()),
        ("LAMBDA_TASK_ROOT", task_root()),
        ("SHOAL_INIT_TIMEOUT", "60".to_owned()),
        ("SHOAL_METRICS_ADDR", format!("127.0.0.1:{}", free_port())),
        ("HOST_WORKER_TEST", std::process::id().to_string()),
    ]);
    let args = [
        "worker",
        "--queue",
        &queues.url,
        "--dead-letter-queue",
        &queues.dead_letter_url,
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
        "--timeout",
        "60",
        "--",
        &python,
        "-m",
        "awslambdaric",
        "app.handler",
    ];
    let mut host = Proc::spawn(HOST, &args, &env, &dir.path().join("host.log"));

    let started = std::time::Instant::now();
    let mut dead = Vec::new();
    while dead.is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no dead letter after 2 minutes: {}",
            host.log_text()
        );
        dead = take_all(&stack.sqs, &queues.dead_letter_url).await;
    }
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
    host.signal("TERM");
    let status = host.wait(Duration::from_secs(60));
    assert!(status.success(), "exit {status}: {}", host.log_text());
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
    let python = python();
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

    let mut env = stack.env();
    env.extend([
        ("THUMBNAIL_BUCKET", "thumbs".to_owned()),
        ("LAMBDA_TASK_ROOT", task_root()),
        ("SHOAL_INIT_TIMEOUT", "60".to_owned()),
        ("SHOAL_METRICS_ADDR", format!("127.0.0.1:{}", free_port())),
    ]);
    let args = [
        "worker",
        "--queue",
        &queues.url,
        "--dead-letter-queue",
        &queues.dead_letter_url,
        "--input",
        "s3://photos/in/",
        "--timeout",
        "60",
        "--",
        &python,
        "-m",
        "awslambdaric",
        "app.handler",
    ];
    let mut host = Proc::spawn(HOST, &args, &env, &dir.path().join("host.log"));
    let started = std::time::Instant::now();
    let mut dead = Vec::new();
    while dead.is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no dead letter after 2 minutes: {}",
            host.log_text()
        );
        dead = take_all(&stack.sqs, &queues.dead_letter_url).await;
    }
    let reason = dead[0].1.get("shoal.reason").cloned().unwrap_or_default();
    assert!(
        reason.contains("x.jpg")
            && reason.contains("\"secrets\", which is not this worker's input"),
        "{reason}"
    );
    assert_eq!(
        dead[0].1.get("shoal.pending").map(String::as_str),
        Some(shoal_worker::queue::headers::encode_indices(&[1]).as_str()),
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
    host.signal("TERM");
    let status = host.wait(Duration::from_secs(60));
    assert!(status.success(), "exit {status}: {}", host.log_text());
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
    let mut host = Proc::spawn(HOST, &args, &env, &dir.path().join("host.log"));
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
    host.signal("TERM");
    let status = host.wait(Duration::from_secs(60));
    assert!(status.success(), "exit {status}: {}", host.log_text());
}
