//! `worker` against real servers on loopback: ElasticMQ speaking SQS and
//! moto serving S3. Each test starts its own servers and worker processes
//! (the `thumbnail-e2e` binary) and stops them at the end. Dead letters,
//! and queues with nowhere to send them, are in `sqs_dead_letters.rs`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is how a test reports failure"
)]

use std::time::Duration;

use shoal_tests::photos::{expected_outputs, names, queue_empty, upload_inputs, worker};
use shoal_tests::sqs::{Queues, counts, create_queues, send_all, take_all, wait_for};
use shoal_tests::stack::{Stack, chunk_body, keys};

const BIN: &str = env!("CARGO_BIN_EXE_thumbnail-e2e");

/// Uploads photos `in/PREFIXnnnnn.jpg` and queues them `per_chunk` to a
/// chunk message; returns their keys below `in/`.
async fn load(
    stack: &Stack,
    queues: &Queues,
    prefix: &str,
    n: usize,
    per_chunk: usize,
) -> Vec<String> {
    let inputs = names(prefix, n);
    upload_inputs(stack, &inputs).await;
    let bodies: Vec<String> = inputs.chunks(per_chunk).map(chunk_body).collect();
    send_all(&stack.sqs, &queues.url, &bodies).await;
    inputs
}

/// Items named by the dead letters of `queues`.
async fn dead_items(stack: &Stack, queues: &Queues) -> usize {
    take_all(&stack.sqs, &queues.dead_letter_url)
        .await
        .iter()
        .map(|(message, attrs)| {
            let body: serde_json::Value = serde_json::from_str(message.body().unwrap()).unwrap();
            match attrs.get("shoal.pending") {
                Some(pending) => pending.split(',').count(),
                None => body["items"].as_array().map_or(1, Vec::len),
            }
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_chunks_through_two_workers_leave_exactly_one_output_per_item() {
    let stack = Stack::start();
    let dir = tempfile::tempdir().unwrap();
    let queues = create_queues(&stack.sqs, "jobs", 30, 3).await;
    let inputs = load(&stack, &queues, "p", 2000, 2).await;
    assert_eq!(
        counts(&stack.sqs, &queues.url).await.0,
        1000,
        "1,000 chunk messages"
    );

    let mut a = worker(
        BIN,
        &stack,
        &queues,
        dir.path(),
        "a",
        &[],
        &["--concurrency", "2"],
    );
    let mut b = worker(
        BIN,
        &stack,
        &queues,
        dir.path(),
        "b",
        &[],
        &["--concurrency", "2"],
    );
    wait_for("the queue to drain", Duration::from_secs(300), || {
        queue_empty(&stack, &queues.url)
    })
    .await;

    let outputs = keys(&stack.s3, "photos", "thumbs/").await;
    assert_eq!(
        outputs,
        expected_outputs(&inputs),
        "one output per item, no more, no less"
    );
    assert_eq!(dead_items(&stack, &queues).await, 0);
    for (name, proc) in [("a", &a), ("b", &b)] {
        let reports = proc.log_text().matches("REPORT RequestId").count();
        assert!(
            reports > 0,
            "worker {name} processed nothing:\n{}",
            proc.log_text()
        );
    }
    a.signal("TERM");
    b.signal("TERM");
    assert!(
        a.wait(Duration::from_secs(30)).success(),
        "{}",
        a.log_text()
    );
    assert!(
        b.wait(Duration::from_secs(30)).success(),
        "{}",
        b.log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_run_loses_nothing() {
    let stack = Stack::start();
    let dir = tempfile::tempdir().unwrap();
    // Short leases, so what a killed worker held comes back quickly.
    let queues = create_queues(&stack.sqs, "jobs", 2, 6).await;
    let inputs = load(&stack, &queues, "k", 300, 2).await;

    // The START line says invocations began.
    let slow = [
        ("SHOAL_E2E_DELAY_MS", "100".to_owned()),
        ("SHOAL_INVOCATION_LOGS", "all".to_owned()),
    ];
    let args = ["--concurrency", "4"];
    let mut steady = worker(BIN, &stack, &queues, dir.path(), "steady", &slow, &args);
    let mut victim = worker(BIN, &stack, &queues, dir.path(), "victim-0", &slow, &args);
    let mut kills = 0;
    for round in 1..=3 {
        // Let it take messages and start invocations, then kill it.
        wait_for(
            "the victim to start invocations",
            Duration::from_secs(60),
            || {
                let log = victim.log_text();
                async move { log.contains("START RequestId") }
            },
        )
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        victim.signal("KILL");
        victim.wait(Duration::from_secs(10));
        kills += 1;
        victim = worker(
            BIN,
            &stack,
            &queues,
            dir.path(),
            &format!("victim-{round}"),
            &slow,
            &args,
        );
    }
    assert_eq!(kills, 3);
    wait_for("the queue to drain", Duration::from_secs(300), || {
        queue_empty(&stack, &queues.url)
    })
    .await;

    let outputs = keys(&stack.s3, "photos", "thumbs/").await;
    let expected = expected_outputs(&inputs);
    assert!(outputs.is_subset(&expected), "unexpected outputs");
    let dead = dead_items(&stack, &queues).await;
    assert_eq!(
        outputs.len() + dead,
        inputs.len(),
        "succeeded + dead-lettered = total"
    );
    steady.signal("TERM");
    victim.signal("TERM");
    assert!(steady.wait(Duration::from_secs(30)).success());
    assert!(victim.wait(Duration::from_secs(30)).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_or_releases_every_message_in_flight() {
    let stack = Stack::start();
    let dir = tempfile::tempdir().unwrap();
    // Long leases: a message the worker kept at exit would stay invisible
    // for two minutes, which the test would see.
    let queues = create_queues(&stack.sqs, "jobs", 120, 5).await;
    let inputs = load(&stack, &queues, "t", 30, 1).await;

    let mut first = worker(
        BIN,
        &stack,
        &queues,
        dir.path(),
        "first",
        &[
            ("SHOAL_E2E_DELAY_MS", "1500".to_owned()),
            ("SHOAL_INVOCATION_LOGS", "all".to_owned()),
        ],
        &["--concurrency", "2", "--max-messages-in-flight", "10"],
    );
    wait_for("two invocations in flight", Duration::from_secs(60), || {
        let log = first.log_text();
        async move { log.matches("START RequestId").count() >= 4 }
    })
    .await;
    first.signal("TERM");
    let status = first.wait(Duration::from_secs(40));
    assert!(status.success(), "{}", first.log_text());
    assert!(
        first.log_text().contains("draining"),
        "{}",
        first.log_text()
    );

    let done = keys(&stack.s3, "photos", "thumbs/").await.len();
    let (visible, in_flight, delayed) = counts(&stack.sqs, &queues.url).await;
    assert!(done >= 2, "in-flight invocations finished ({done} done)");
    assert_eq!(
        in_flight, 0,
        "nothing left invisible after the worker exited"
    );
    assert_eq!(
        visible + delayed + done as u64,
        inputs.len() as u64,
        "every message is either done or back in the queue"
    );

    let mut second = worker(BIN, &stack, &queues, dir.path(), "second", &[], &[]);
    wait_for("the queue to drain", Duration::from_secs(120), || {
        queue_empty(&stack, &queues.url)
    })
    .await;
    assert_eq!(
        keys(&stack.s3, "photos", "thumbs/").await,
        expected_outputs(&inputs)
    );
    assert_eq!(dead_items(&stack, &queues).await, 0);
    second.signal("TERM");
    assert!(second.wait(Duration::from_secs(30)).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_reconnects_after_the_queue_server_restarts() {
    let mut stack = Stack::start();
    let dir = tempfile::tempdir().unwrap();
    let queues = create_queues(&stack.sqs, "jobs", 5, 10).await;
    let inputs = load(&stack, &queues, "r", 120, 1).await;

    let mut w = worker(
        BIN,
        &stack,
        &queues,
        dir.path(),
        "w",
        &[("SHOAL_E2E_DELAY_MS", "50".to_owned())],
        &["--concurrency", "2"],
    );
    wait_for(
        "the worker to make progress",
        Duration::from_secs(60),
        || {
            let log = w.log_text();
            async move { log.matches("REPORT RequestId").count() >= 10 }
        },
    )
    .await;
    // The server is down while the worker runs: it restarts and loads its
    // stored messages back (that load is not instant, so the test waits
    // for the outputs, not for an empty queue).
    stack.sqs_server.restart_after(|| {
        let started = std::time::Instant::now();
        while !w.log_text().contains("receive failed") {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the worker never noticed"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    let expected = expected_outputs(&inputs);
    wait_for("every thumbnail", Duration::from_secs(180), || {
        let (s3, expected) = (&stack.s3, &expected);
        async move { keys(s3, "photos", "thumbs/").await == *expected }
    })
    .await;
    wait_for("the queue to drain", Duration::from_secs(60), || {
        queue_empty(&stack, &queues.url)
    })
    .await;
    assert!(
        w.log_text().contains("queue reachable again"),
        "{}",
        w.log_text()
    );
    w.signal("TERM");
    assert!(w.wait(Duration::from_secs(30)).success());
}
