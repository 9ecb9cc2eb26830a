//! Dead letters of `worker` on SQS, against real servers on loopback
//! (ElasticMQ and moto, as in `sqs_worker.rs`): what cannot succeed
//! reaches the dead-letter queue with its reason, a missing dead-letter
//! queue loses nothing, and a queue with nowhere to dead-letter to is
//! refused.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is how a test reports failure"
)]

use std::time::Duration;

use shoal_tests::free_port;
use shoal_tests::photos::{expected_outputs, names, queue_empty, upload_inputs, worker};
use shoal_tests::process::Proc;
use shoal_tests::prom::{http_get, promtool_check, sample};
use shoal_tests::sqs::{counts, create_queues, send_all, send_with_attributes, take_all, wait_for};
use shoal_tests::stack::{Stack, chunk_body, corrupt_jpeg, keys, tiny_jpeg, upload};

const BIN: &str = env!("CARGO_BIN_EXE_thumbnail-e2e");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_messages_reach_the_dead_letter_queue_with_their_reason() {
    poison_messages("jobs").await;
}

/// The same on FIFO queues: dead letters go to the FIFO dead-letter queue
/// (in the message's group, with a deduplication id).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_messages_on_fifo_queues_reach_the_fifo_dead_letter_queue() {
    poison_messages("jobs.fifo").await;
}

async fn poison_messages(queue: &str) {
    let stack = Stack::start();
    let dir = tempfile::tempdir().unwrap();
    let good = names("good-", 4);
    upload_inputs(&stack, &good).await;
    let corrupt = corrupt_jpeg();
    stack
        .s3
        .put_object()
        .bucket("photos")
        .key("in/corrupt.jpg")
        .body(corrupt.into())
        .send()
        .await
        .unwrap();
    let queues = create_queues(&stack.sqs, queue, 30, 3).await;
    let malformed = r#"{"chunkId": "c-broken", "items": 42}"#.to_owned();
    // An item naming a bucket the worker does not read from, where a
    // readable photo waits.
    stack
        .s3
        .create_bucket()
        .bucket("payroll")
        .send()
        .await
        .unwrap();
    upload(
        &stack.s3,
        "payroll",
        &["march.jpg".to_owned()],
        &tiny_jpeg(),
    )
    .await;
    let foreign =
        shoal_worker::message::Chunk::new(vec![shoal_worker::message::ChunkItem::Object(
            shoal_worker::message::ObjectRef {
                bucket: Some("payroll".into()),
                key: "march.jpg".into(),
                size: None,
                etag: None,
            },
        )]);
    send_all(
        &stack.sqs,
        &queues.url,
        &[
            chunk_body(&[good[0].clone(), "corrupt.jpg".into(), good[1].clone()]),
            chunk_body(&[good[2].clone(), "missing.jpg".into()]),
            malformed.clone(),
            chunk_body(&[good[3].clone()]),
            serde_json::to_string(&foreign).unwrap(),
        ],
    )
    .await;
    // A control attribute naming an item the message does not have: on its
    // own it would select nothing, and the message would vanish.
    send_with_attributes(
        &stack.sqs,
        &queues.url,
        &chunk_body(&["forged.jpg".into()]),
        &[("shoal.pending", "5")],
    )
    .await;

    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let mut w = worker(
        BIN,
        &stack,
        &queues,
        dir.path(),
        "w",
        &[],
        &["--metrics-addr", &metrics_addr],
    );
    wait_for("the queue to drain", Duration::from_secs(120), || {
        queue_empty(&stack, &queues.url)
    })
    .await;

    assert_eq!(
        keys(&stack.s3, "photos", "thumbs/").await,
        expected_outputs(&good)
    );
    let (status, metrics) = http_get(&format!("http://{metrics_addr}/metrics"));
    assert_eq!(status, 200);
    promtool_check(&metrics);
    let value = |series: &str| {
        sample(&metrics, series).unwrap_or_else(|| panic!("no {series} in\n{metrics}"))
    };
    assert_eq!(value("shoal_messages_received_total"), 6.0);
    assert_eq!(
        value("shoal_messages_deleted_total"),
        6.0,
        "every message settled"
    );
    assert_eq!(value("shoal_messages_dead_lettered_total"), 5.0);
    assert_eq!(value("shoal_dead_letters_total{cause=\"permanent\"}"), 5.0);
    assert_eq!(value("shoal_invocations_total{outcome=\"success\"}"), 4.0);
    assert_eq!(value("shoal_message_age_seconds_count"), 6.0);
    assert_eq!(value("shoal_messages_in_flight"), 0.0);
    let letters = take_all(&stack.sqs, &queues.dead_letter_url).await;
    assert_eq!(letters.len(), 5, "{letters:?}");
    let find = |needle: &str| {
        letters
            .iter()
            .find(|(m, a)| m.body().unwrap().contains(needle) && a.contains_key("shoal.reason"))
            .map(|(_, a)| a.clone())
            .unwrap_or_else(|| panic!("no dead letter for {needle}: {letters:?}"))
    };
    let corrupt = find("corrupt.jpg");
    assert_eq!(
        corrupt["shoal.pending"], "1",
        "only the corrupt item is dead"
    );
    assert_eq!(corrupt["shoal.cause"], "permanent");
    assert!(
        corrupt["shoal.reason"].starts_with("corrupt.jpg: "),
        "{corrupt:?}"
    );
    let missing = find("missing.jpg");
    assert_eq!(missing["shoal.pending"], "1");
    assert!(missing["shoal.reason"].contains("not found"), "{missing:?}");
    let broken = find("c-broken");
    assert!(
        !broken.contains_key("shoal.pending"),
        "the whole message is dead"
    );
    assert!(
        broken["shoal.reason"].contains("malformed shoal chunk"),
        "{broken:?}"
    );
    assert_eq!(broken["shoal.category"], "input");
    let forged = find("forged.jpg");
    assert!(
        forged["shoal.reason"]
            .contains("shoal.pending: it names item 5, but the message has 1 items"),
        "{forged:?}"
    );
    assert!(
        !forged.contains_key("shoal.pending"),
        "the whole message is dead"
    );
    let payroll = find("march.jpg");
    assert!(
        payroll["shoal.reason"]
            .contains("names bucket \"payroll\", which is not this worker's input"),
        "{payroll:?}"
    );
    w.signal("TERM");
    assert!(w.wait(Duration::from_secs(30)).success());
}

/// A dead-letter queue deleted behind the worker's back (its redrive
/// policy still names it): the failed message is not lost. The worker
/// says it cannot find the queue, keeps releasing the message, and
/// dead-letters it once the queue exists again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_dead_letter_queue_keeps_the_failed_message_until_it_exists() {
    let stack = Stack::start();
    let dir = tempfile::tempdir().unwrap();
    // Far from the queue's own dead-lettering (maxReceiveCount 50), so
    // only the worker can move the message.
    let queues = create_queues(&stack.sqs, "orphaned", 30, 50).await;
    stack
        .sqs
        .delete_queue()
        .queue_url(&queues.dead_letter_url)
        .send()
        .await
        .unwrap();
    let malformed = r#"{"chunkId": "c-lost", "items": "none"}"#.to_owned();
    send_all(&stack.sqs, &queues.url, std::slice::from_ref(&malformed)).await;

    let mut w = worker(BIN, &stack, &queues, dir.path(), "w", &[], &[]);
    wait_for(
        "a dead letter to fail twice",
        Duration::from_secs(60),
        || {
            let log = w.log_text();
            async move { log.matches("cannot dead-letter; releasing").count() >= 2 }
        },
    )
    .await;
    let log = w.log_text();
    assert!(
        log.contains("cannot find the dead-letter queue"),
        "the missing queue is named at start\n{log}"
    );
    let (visible, in_flight, _) = counts(&stack.sqs, &queues.url).await;
    assert_eq!(visible + in_flight, 1, "the message is still queued\n{log}");

    // The same name again: the redrive policy's ARN names it once more.
    stack
        .sqs
        .create_queue()
        .queue_name("orphaned-dlq")
        .send()
        .await
        .unwrap();
    wait_for("the queue to drain", Duration::from_secs(120), || {
        queue_empty(&stack, &queues.url)
    })
    .await;
    let letters = take_all(&stack.sqs, &queues.dead_letter_url).await;
    assert_eq!(letters.len(), 1, "{letters:?}");
    let (letter, attrs) = &letters[0];
    assert_eq!(letter.body(), Some(malformed.as_str()));
    assert!(
        attrs["shoal.reason"].contains("malformed shoal chunk"),
        "{attrs:?}"
    );
    w.signal("TERM");
    assert!(w.wait(Duration::from_secs(30)).success());
}

/// A queue with nowhere to dead-letter to is refused, with the reason,
/// before anything is received from it: its messages stay visible, and no
/// receive is counted against them (a worker refused in a loop must not
/// walk messages towards a redrive policy's maxReceiveCount).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_without_a_redrive_policy_is_refused_and_its_messages_stay_visible() {
    let stack = Stack::start();
    let dir = tempfile::tempdir().unwrap();
    let url = stack
        .sqs
        .create_queue()
        .queue_name("no-redrive")
        .attributes(
            aws_sdk_sqs::types::QueueAttributeName::VisibilityTimeout,
            "30",
        )
        .send()
        .await
        .unwrap()
        .queue_url()
        .unwrap()
        .to_owned();
    let bodies: Vec<String> = names("refused-", 5).chunks(1).map(chunk_body).collect();
    send_all(&stack.sqs, &url, &bodies).await;
    let mut refused = Proc::spawn(
        BIN,
        &["worker", "--queue", &url, "--input", "s3://photos/in/"],
        &stack.env(),
        &dir.path().join("refused.log"),
    );
    let status = refused.wait(Duration::from_secs(60));
    let log = refused.log_text();
    assert!(!status.success(), "the worker started on it:\n{log}");
    assert!(log.contains("no redrive policy"), "{log}");
    assert_eq!(
        counts(&stack.sqs, &url).await,
        (5, 0, 0),
        "every message visible, none held back\n{log}"
    );
    let received = stack
        .sqs
        .receive_message()
        .queue_url(&url)
        .max_number_of_messages(10)
        .message_system_attribute_names(
            aws_sdk_sqs::types::MessageSystemAttributeName::ApproximateReceiveCount,
        )
        .send()
        .await
        .unwrap();
    let counts: Vec<&str> = received
        .messages()
        .iter()
        .filter_map(|m| {
            m.attributes()?
                .get(&aws_sdk_sqs::types::MessageSystemAttributeName::ApproximateReceiveCount)
                .map(String::as_str)
        })
        .collect();
    assert!(
        !counts.is_empty() && counts.iter().all(|c| *c == "1"),
        "receive counts {counts:?}: the refused worker received messages\n{log}"
    );
}
