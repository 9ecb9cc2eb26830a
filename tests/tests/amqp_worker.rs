//! `worker --queue amqp://…` against a real RabbitMQ (Debian's
//! rabbitmq-server) and moto for S3, both on loopback. Each test starts its
//! own broker and worker processes and stops them at the end.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is how a test reports failure"
)]

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions};
use lapin::types::{AMQPValue, FieldTable};
use shoal_tests::moto::Moto;
use shoal_tests::process::Proc;
use shoal_tests::rabbitmq::{Rabbit, second_of_day};
use shoal_tests::stack::{chunk_body, corrupt_jpeg, keys, tiny_jpeg, upload};
use shoal_tests::wait_until;

const BIN: &str = env!("CARGO_BIN_EXE_thumbnail-e2e");
const QUEUE: &str = "jobs";

struct Bed {
    rabbit: Rabbit,
    moto: Moto,
    s3: aws_sdk_s3::Client,
    dir: tempfile::TempDir,
}

impl Bed {
    async fn start() -> Self {
        let rabbit = Rabbit::start();
        let moto = Moto::start();
        let s3 = moto.s3();
        s3.create_bucket().bucket("photos").send().await.unwrap();
        Self {
            rabbit,
            moto,
            s3,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// A worker on the queue, reading `s3://photos/in/`, writing
    /// `s3://photos/thumbs/`.
    fn worker(&self, name: &str, extra: &[(&str, String)]) -> Proc {
        let mut env = self.moto.env();
        env.extend(extra.iter().cloned());
        env.push(("SHOAL_WAIT_TIME", "1".into()));
        let url = self.rabbit.queue_url(QUEUE);
        Proc::spawn(
            BIN,
            &[
                "worker",
                "--queue",
                &url,
                "--input",
                "s3://photos/in/",
                "--output",
                "s3://photos/thumbs/",
                "--concurrency",
                "4",
            ],
            &env,
            &self.dir.path().join(format!("{name}.log")),
        )
    }

    /// Uploads `n` photos and publishes them `per_chunk` to a chunk; returns
    /// their keys below `in/`. The first worker declares the queue, so the
    /// test declares it the same way first (a quorum queue).
    async fn load(&self, prefix: &str, n: usize, per_chunk: usize) -> Vec<String> {
        let inputs: Vec<String> = (0..n).map(|i| format!("{prefix}{i:05}.jpg")).collect();
        let keys: Vec<String> = inputs.iter().map(|k| format!("in/{k}")).collect();
        upload(&self.s3, "photos", &keys, &tiny_jpeg()).await;
        let bodies: Vec<String> = inputs.chunks(per_chunk).map(chunk_body).collect();
        self.rabbit.publish(QUEUE, &bodies).await;
        inputs
    }

    async fn outputs(&self) -> BTreeSet<String> {
        keys(&self.s3, "photos", "thumbs/").await
    }
}

fn expected(inputs: &[String]) -> BTreeSet<String> {
    inputs.iter().map(|k| format!("thumbs/{k}")).collect()
}

/// Starts one worker so it declares the topology, and waits for it.
fn declare_with_a_worker(bed: &Bed) -> Proc {
    let first = bed.worker("declare", &[]);
    wait_until(
        Duration::from_secs(60),
        "the worker connected",
        || first.log_text().contains("queue connected").then_some(()),
        || first.log_text(),
    );
    first
}

async fn wait_for_outputs(bed: &Bed, want: &BTreeSet<String>, logs: impl Fn() -> String) {
    let started = Instant::now();
    loop {
        let got = bed.outputs().await;
        if got.len() >= want.len() {
            assert_eq!(&got, want, "one output per item, no more, no less");
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "{} of {} outputs after 300 s\n{}",
            got.len(),
            want.len(),
            logs()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn stop(worker: &mut Proc) {
    worker.signal("TERM");
    let status = worker.wait(Duration::from_secs(30));
    assert!(status.success(), "{}", worker.log_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_chunks_through_two_workers_leave_exactly_one_output_each() {
    let bed = Bed::start().await;
    let mut a = declare_with_a_worker(&bed);
    let mut b = bed.worker("b", &[]);
    let inputs = bed.load("p", 2000, 2).await;
    wait_for_outputs(&bed, &expected(&inputs), || {
        format!("{}\n{}", a.log_text(), b.log_text())
    })
    .await;
    stop(&mut a);
    stop(&mut b);
    // Nothing left, nothing dead: unacked messages would be back by now.
    assert_eq!(bed.rabbit.ready(QUEUE).await, 0);
    assert_eq!(bed.rabbit.ready(&format!("{QUEUE}.dlq")).await, 0);
    for (name, log) in [("a", a.log_text()), ("b", b.log_text())] {
        assert!(
            log.contains("REPORT RequestId"),
            "worker {name} processed nothing:\n{log}"
        );
    }
}

/// The dead letters of the queue: body and `shoal.*` headers.
async fn dead_letters(rabbit: &Rabbit, expect: usize) -> Vec<(String, FieldTable)> {
    let (_connection, channel) = rabbit.channel().await;
    let mut consumer = channel
        .basic_consume(
            format!("{QUEUE}.dlq").as_str().into(),
            "test".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut letters = Vec::new();
    while letters.len() < expect {
        let next = tokio::time::timeout(Duration::from_secs(30), consumer.next())
            .await
            .expect("a dead letter within 30 s")
            .unwrap()
            .unwrap();
        next.ack(BasicAckOptions::default()).await.unwrap();
        let headers = next.properties.headers().clone().unwrap_or_default();
        letters.push((String::from_utf8_lossy(&next.data).into_owned(), headers));
    }
    letters
}

fn header(headers: &FieldTable, name: &str) -> String {
    match headers.inner().get(name) {
        Some(AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        other => panic!("header {name}: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_messages_reach_the_dead_letter_exchange_with_their_reason() {
    let bed = Bed::start().await;
    let mut worker = declare_with_a_worker(&bed);
    let good: Vec<String> = (0..3).map(|i| format!("good-{i}.jpg")).collect();
    let keys: Vec<String> = good.iter().map(|k| format!("in/{k}")).collect();
    upload(&bed.s3, "photos", &keys, &tiny_jpeg()).await;
    let corrupt = corrupt_jpeg();
    upload(&bed.s3, "photos", &["in/corrupt.jpg".to_owned()], &corrupt).await;
    bed.rabbit
        .publish(
            QUEUE,
            &[
                chunk_body(&[good[0].clone(), "corrupt.jpg".into(), good[1].clone()]),
                chunk_body(&[good[2].clone(), "missing.jpg".into()]),
                r#"{"chunkId": "c-broken", "items": 42}"#.to_owned(),
                // 3,000 items that each fail: their reasons together would
                // exceed the broker's frame size.
                serde_json::json!({"chunkId": "c-wide", "items": (0..3000).collect::<Vec<_>>()})
                    .to_string(),
            ],
        )
        .await;
    wait_for_outputs(&bed, &expected(&good), || worker.log_text()).await;
    let letters = dead_letters(&bed.rabbit, 4).await;
    let find = |needle: &str| {
        letters
            .iter()
            .find(|(body, _)| body.contains(needle))
            .map(|(_, headers)| headers.clone())
            .unwrap_or_else(|| panic!("no dead letter for {needle}"))
    };
    let corrupt = find("corrupt.jpg");
    assert_eq!(header(&corrupt, "shoal.pending"), "1", "only that item");
    assert_eq!(header(&corrupt, "shoal.cause"), "permanent");
    assert!(header(&corrupt, "shoal.reason").starts_with("corrupt.jpg: "));
    assert_eq!(header(&corrupt, "shoal.source-queue"), QUEUE);
    let missing = find("missing.jpg");
    assert!(header(&missing, "shoal.reason").contains("not found"));
    let broken = find("c-broken");
    assert!(header(&broken, "shoal.reason").contains("malformed shoal chunk"));
    assert_eq!(header(&broken, "shoal.category"), "input");
    let wide = header(&find("c-wide"), "shoal.reason");
    assert!(wide.len() <= 16 * 1024, "{} bytes", wide.len());
    assert!(
        wide.starts_with("c-wide/0: expected an object reference"),
        "{wide:.200}"
    );
    assert!(
        wide.ends_with(" more"),
        "{}",
        &wide[wide.len().saturating_sub(60)..]
    );
    stop(&mut worker);
    assert_eq!(bed.rabbit.ready(QUEUE).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_mid_run_loses_nothing_and_the_worker_reconnects() {
    let mut bed = Bed::start().await;
    let slow = [("SHOAL_E2E_DELAY_MS", "20".to_owned())];
    let mut worker = declare_with_a_worker(&bed);
    let mut steady = bed.worker("steady", &slow);
    let inputs = bed.load("r", 600, 2).await;
    let started = Instant::now();
    while bed.outputs().await.len() < 60 {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no progress before the restart\n{}",
            steady.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bed.rabbit.restart();
    // From the broker's and the worker's own logs (both UTC wall clock):
    // when the broker finished starting, when the worker was consuming
    // again.
    let reconnected = wait_until(
        Duration::from_secs(30),
        "the worker reconnected",
        || {
            let log = steady.log_text();
            let line = log.lines().rev().find(|l| l.contains("\"reconnected\""))?;
            let at = line.split("\"timestamp\":\"").nth(1)?.get(11..26)?;
            second_of_day(at)
        },
        || format!("{}\n{}", steady.log_text(), bed.rabbit.log_text()),
    );
    let back = bed
        .rabbit
        .last_startup_second()
        .expect("the broker's startup line");
    // A measurement, not an assertion (a loaded machine stretches it):
    // the retry delay's 1 s bound is unit-tested in the transport.
    let took = reconnected - back;
    println!("consuming again {took:.3} s after the broker finished starting");
    wait_for_outputs(&bed, &expected(&inputs), || steady.log_text()).await;
    stop(&mut steady);
    stop(&mut worker);
    assert_eq!(bed.rabbit.ready(QUEUE).await, 0);
}

/// A delivery held while its connection drops belongs to the broker
/// again: the worker stops its invocation and forgets it, the message is
/// delivered again (here to the same worker, whose second attempt runs at
/// once), and SIGTERM then finds nothing held: the worker exits at once
/// with status 0 instead of waiting out its 10-minute grace period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_held_when_the_connection_drops_is_let_go_and_sigterm_exits_at_once() {
    let bed = Bed::start().await;
    let mut worker = bed.worker(
        "held",
        &[
            // The START line says the attempt began.
            ("SHOAL_INVOCATION_LOGS", "all".to_owned()),
            ("SHOAL_E2E_DELAY_MS", "600000".to_owned()),
            ("SHOAL_E2E_DELAY_FIRST_ATTEMPT", "1".to_owned()),
            ("SHOAL_SHUTDOWN_GRACE", "600".to_owned()),
        ],
    );
    wait_until(
        Duration::from_secs(60),
        "the worker connected",
        || worker.log_text().contains("queue connected").then_some(()),
        || worker.log_text(),
    );
    let inputs = bed.load("held", 1, 1).await;
    wait_until(
        Duration::from_secs(60),
        "the first attempt to start",
        || worker.log_text().contains("START RequestId").then_some(()),
        || worker.log_text(),
    );
    bed.rabbit.close_connections();
    wait_for_outputs(&bed, &expected(&inputs), || worker.log_text()).await;
    assert!(worker.log_text().contains("\"reconnected\""));
    worker.signal("TERM");
    // Far below the grace period: nothing is held, nothing to wait for.
    let status = worker.wait(Duration::from_secs(60));
    let log = worker.log_text();
    assert!(status.success(), "{log}");
    assert!(
        log.contains("the queue took the message back"),
        "the first delivery was let go:\n{log}"
    );
    assert_eq!(bed.rabbit.ready(QUEUE).await, 0);
    assert_eq!(bed.rabbit.ready(&format!("{QUEUE}.dlq")).await, 0);
    assert_eq!(bed.outputs().await, expected(&inputs), "one output, once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_a_worker_loses_nothing() {
    let bed = Bed::start().await;
    // The START line says invocations began.
    let slow = [
        ("SHOAL_E2E_DELAY_MS", "50".to_owned()),
        ("SHOAL_INVOCATION_LOGS", "all".to_owned()),
    ];
    let mut steady = declare_with_a_worker(&bed);
    let mut victim = bed.worker("victim", &slow);
    let inputs = bed.load("k", 300, 2).await;
    wait_until(
        Duration::from_secs(60),
        "the victim to start invocations",
        || victim.log_text().contains("START RequestId").then_some(()),
        || victim.log_text(),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    victim.signal("KILL");
    victim.wait(Duration::from_secs(10));
    wait_for_outputs(&bed, &expected(&inputs), || steady.log_text()).await;
    stop(&mut steady);
    assert_eq!(bed.rabbit.ready(QUEUE).await, 0);
    assert_eq!(bed.rabbit.ready(&format!("{QUEUE}.dlq")).await, 0);
}

/// A dead letter the broker keeps refusing (here the worker's user may not
/// publish to `Q.dlx`) does not loop: the attempts a message has had are
/// counted across the copies the worker re-publishes, and after its last
/// attempt plus 3 the message is handed to the queue's own dead-lettering
/// (the broker's, which needs no permission), the reason in the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_the_broker_keeps_refusing_stops_after_the_last_attempt_plus_3() {
    const REFUSING: &str = "refusing";
    let rabbit = Rabbit::start();
    {
        let (connection, channel) = rabbit.channel().await;
        shoal_clients::amqp::declare(&connection, &channel, REFUSING, 3, None)
            .await
            .unwrap();
    }
    let limited = rabbit.add_user_writing("limited", "limited-pw", "^(?!refusing\\.dlx$).*");
    // Not an object reference: a permanent failure, dead-lettered at once.
    rabbit
        .publish(REFUSING, &["not an object".to_owned()])
        .await;
    let out = tempfile::tempdir().unwrap();
    let mut worker = Proc::spawn(
        BIN,
        &[
            "worker",
            "--queue",
            &format!("{limited}/{REFUSING}"),
            "--output",
            &out.path().to_string_lossy(),
            "--max-attempts",
            "3",
        ],
        &[
            ("SHOAL_RETRY_MAX_DELAY_MS", "200".to_owned()),
            // No AWS here: nothing may look for instance metadata.
            ("AWS_REGION", "us-east-1".to_owned()),
            ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
        ],
        &out.path().join("worker.log"),
    );
    let started = Instant::now();
    while rabbit.ready(&format!("{REFUSING}.dlq")).await < 1 {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "not in the dead-letter queue after 120 s:\n{}",
            worker.log_text()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let log = worker.log_text();
    assert!(
        log.contains("handing the message to the queue's own dead-lettering"),
        "{log}"
    );
    // Attempts 1 to 6 each re-publish a copy carrying its count; the 7th
    // hands the message over.
    let refused = log.matches("cannot dead-letter").count();
    assert_eq!(refused, 7, "dead-lettering tried {refused} times:\n{log}");
    assert!(log.contains("publishing channel reopened"), "{log}");
    assert_eq!(rabbit.ready(REFUSING).await, 0);
    stop(&mut worker);
}

/// Without `--input`, object references name their bucket (S3 events). The
/// worker below writes to a folder, so its S3 client is built on the first
/// message, from the configuration loaded then (the unit tests of
/// `Stores` show that nothing is loaded at start).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_input_an_s3_event_is_read_by_a_client_built_on_first_use() {
    let bed = Bed::start().await;
    upload(&bed.s3, "photos", &["in/cat.jpg".to_owned()], &tiny_jpeg()).await;
    let out = bed.dir.path().join("out");
    let mut env = bed.moto.env();
    env.push(("SHOAL_WAIT_TIME", "1".into()));
    let url = bed.rabbit.queue_url(QUEUE);
    let mut worker = Proc::spawn(
        BIN,
        &["worker", "--queue", &url, "--output", out.to_str().unwrap()],
        &env,
        &bed.dir.path().join("worker.log"),
    );
    wait_until(
        Duration::from_secs(60),
        "the worker connected",
        || worker.log_text().contains("queue connected").then_some(()),
        || worker.log_text(),
    );
    let event =
        r#"{"Records":[{"s3":{"bucket":{"name":"photos"},"object":{"key":"in/cat.jpg"}}}]}"#;
    bed.rabbit.publish(QUEUE, &[event.to_owned()]).await;
    let thumbnail = out.join("in/cat.jpg");
    wait_until(
        Duration::from_secs(60),
        "the thumbnail",
        || thumbnail.exists().then_some(()),
        || worker.log_text(),
    );
    // A reference to a bucket that does not exist is the item's failure,
    // not the worker's.
    let missing = r#"{"Records":[{"s3":{"bucket":{"name":"nowhere"},"object":{"key":"a.jpg"}}}]}"#;
    bed.rabbit.publish(QUEUE, &[missing.to_owned()]).await;
    wait_until(
        Duration::from_secs(60),
        "the missing object dead-lettered",
        || worker.log_text().contains("nowhere").then_some(()),
        || worker.log_text(),
    );
    stop(&mut worker);
}
