//! Chaos: faults injected into real servers mid-run, and what came out
//! counted. Workers are kill -9'd ten times during a 10,000-message run;
//! the queue server restarts under the workers on both transports (ElasticMQ
//! for SQS, RabbitMQ); S3 stops answering for a while; kube-apiserver and
//! etcd are killed and started again while a BatchJob runs.
//!
//! Each scenario prints one line (`cargo test --test chaos -- --nocapture`):
//! sent, succeeded (distinct items whose handler returned success),
//! dead-lettered, duplicates (successful runs of an item after its first)
//! and lost (sent, but neither succeeded nor dead-lettered), and asserts
//! that nothing is lost and that nothing is dead-lettered: every fault here
//! is transient. Duplicates are allowed (delivery is at least once) and
//! reported, not asserted.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is how a test reports failure"
)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use shoal_tests::kube::ControlPlane;
use shoal_tests::process::Proc;
use shoal_tests::rabbitmq::Rabbit;
use shoal_tests::sqs::{Queues, counts, create_queues, send_all, take_all};
use shoal_tests::stack::{Stack, chunk_body, keys, tiny_jpeg, upload};
use shoal_tests::{operator, wait_until};

const LEDGER: &str = env!("CARGO_BIN_EXE_ledger-e2e");
const THUMBNAIL: &str = env!("CARGO_BIN_EXE_thumbnail-e2e");
const OPERATOR: &str = env!("CARGO_BIN_EXE_shoal-operator-e2e");

/// Every successful run the workers wrote to the ledger files in `dir`:
/// item → runs.
fn ledger(dir: &Path) -> BTreeMap<String, u32> {
    let mut runs = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "ledger") {
            for line in std::fs::read_to_string(&path).unwrap().lines() {
                *runs.entry(line.to_owned()).or_insert(0) += 1;
            }
        }
    }
    runs
}

fn runs(dir: &Path) -> u32 {
    ledger(dir).values().sum()
}

/// What a scenario sent and what became of it.
struct Report {
    /// When the scenario began: its duration is printed too.
    started: Instant,
    sent: BTreeSet<String>,
    succeeded: BTreeMap<String, u32>,
    dead_lettered: BTreeSet<String>,
}

impl Report {
    fn lost(&self) -> Vec<&String> {
        self.sent
            .iter()
            .filter(|s| !self.succeeded.contains_key(*s) && !self.dead_lettered.contains(*s))
            .collect()
    }

    fn duplicates(&self) -> u32 {
        self.succeeded.values().map(|n| n - 1).sum()
    }

    /// Prints the counts, then asserts nothing was lost or dead-lettered.
    fn check(&self, scenario: &str) {
        let lost = self.lost();
        println!(
            "chaos {scenario}: sent {}, succeeded {}, dead-lettered {}, duplicates {}, lost {} ({} s)",
            self.sent.len(),
            self.succeeded.len(),
            self.dead_lettered.len(),
            self.duplicates(),
            lost.len(),
            self.started.elapsed().as_secs()
        );
        assert!(lost.is_empty(), "{scenario}: lost {lost:?}");
        assert!(
            self.dead_lettered.is_empty(),
            "{scenario}: a transient fault dead-lettered {:?}",
            self.dead_lettered
        );
        let strangers: Vec<_> = self
            .succeeded
            .keys()
            .filter(|k| !self.sent.contains(*k))
            .collect();
        assert!(strangers.is_empty(), "ran items never sent: {strangers:?}");
    }
}

fn bodies(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i:05}")).collect()
}

/// Waits until the ledgers in `dir` hold `n` runs.
fn wait_for_runs(dir: &Path, n: u32, logs: impl Fn() -> String) {
    wait_until(
        Duration::from_secs(240),
        &format!("{n} successful runs"),
        || (runs(dir) >= n).then_some(()),
        logs,
    );
}

/// Ledger workers on an SQS queue, each with its own ledger file.
struct SqsWorkers {
    env: Vec<(&'static str, String)>,
    url: String,
    dir: PathBuf,
    procs: Vec<Proc>,
    started: usize,
}

impl SqsWorkers {
    fn start(stack: &Stack, url: &str, dir: &Path, n: usize) -> Self {
        let mut workers = Self {
            env: stack.env(),
            url: url.to_owned(),
            dir: dir.to_owned(),
            procs: Vec::new(),
            started: 0,
        };
        for _ in 0..n {
            let worker = workers.spawn();
            workers.procs.push(worker);
        }
        workers
    }

    fn spawn(&mut self) -> Proc {
        self.started += 1;
        let n = self.started;
        let mut env = self.env.clone();
        env.push(("SHOAL_LEDGER", self.ledger(n)));
        env.push(("SHOAL_E2E_DELAY_MS", "2".into()));
        env.push(("SHOAL_WAIT_TIME", "1".into()));
        Proc::spawn(
            LEDGER,
            &["worker", "--queue", &self.url, "--concurrency", "8"],
            &env,
            &self.dir.join(format!("worker-{n}.log")),
        )
    }

    fn ledger(&self, n: usize) -> String {
        self.dir
            .join(format!("worker-{n}.ledger"))
            .to_string_lossy()
            .into_owned()
    }

    /// kill -9 of worker `slot`, and a new one in its place.
    fn kill_and_replace(&mut self, slot: usize) {
        self.procs[slot].signal("KILL");
        self.procs[slot].wait(Duration::from_secs(10));
        self.procs[slot] = self.spawn();
    }

    fn logs(&self) -> String {
        self.procs.iter().map(Proc::log_text).collect()
    }

    fn stop(&mut self) {
        for worker in &mut self.procs {
            worker.signal("TERM");
            worker.wait(Duration::from_secs(30));
        }
    }
}

/// Waits until the queue and its dead-letter queue account for every body
/// sent: each succeeded or dead-lettered, nothing left waiting.
async fn sqs_settled(
    stack: &Stack,
    queues: &Queues,
    dir: &Path,
    sent: usize,
    logs: impl Fn() -> String,
) {
    let started = Instant::now();
    loop {
        let done = ledger(dir).len();
        let (dead, _, _) = counts(&stack.sqs, &queues.dead_letter_url).await;
        let work = counts(&stack.sqs, &queues.url).await;
        if work == (0, 0, 0) && done + usize::try_from(dead).unwrap() >= sent {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "after 300 s: {done} of {sent} succeeded, {dead} dead-lettered, queue {work:?}\n{}",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn sqs_dead_letters(stack: &Stack, queues: &Queues) -> BTreeSet<String> {
    take_all(&stack.sqs, &queues.dead_letter_url)
        .await
        .into_iter()
        .map(|(m, _)| m.body().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_kills_of_sqs_workers_over_ten_thousand_messages_lose_nothing() {
    let started = Instant::now();
    let stack = Stack::start();
    let dir = tempfile::tempdir().unwrap();
    let queues = create_queues(&stack.sqs, "chaos", 5, 5).await;
    let sent = bodies("k", 10_000);
    send_all(&stack.sqs, &queues.url, &sent).await;
    let mut workers = SqsWorkers::start(&stack, &queues.url, dir.path(), 2);
    for kill in 1..=10u32 {
        wait_for_runs(dir.path(), kill * 800, || workers.logs());
        workers.kill_and_replace(usize::try_from(kill % 2).unwrap());
    }
    sqs_settled(&stack, &queues, dir.path(), sent.len(), || workers.logs()).await;
    workers.stop();
    Report {
        started,
        sent: sent.into_iter().collect(),
        succeeded: ledger(dir.path()),
        dead_lettered: sqs_dead_letters(&stack, &queues).await,
    }
    .check("sqs, 10 kill -9 of workers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sqs_server_restarting_under_the_workers_loses_nothing() {
    let started = Instant::now();
    let mut stack = Stack::start();
    let dir = tempfile::tempdir().unwrap();
    let queues = create_queues(&stack.sqs, "restarted", 5, 5).await;
    let mut sent = bodies("r", 3_000);
    send_all(&stack.sqs, &queues.url, &sent).await;
    let mut workers = SqsWorkers::start(&stack, &queues.url, dir.path(), 2);
    wait_for_runs(dir.path(), 1_000, || workers.logs());
    stack
        .sqs_server
        .restart_after(|| std::thread::sleep(Duration::from_secs(2)));
    // Messages sent after the restart can only be taken by workers that
    // reached the server again (the first 3,000 may all be done by the time
    // the server stopped).
    let after = bodies("after", 500);
    send_all(&stack.sqs, &queues.url, &after).await;
    sent.extend(after);
    sqs_settled(&stack, &queues, dir.path(), sent.len(), || workers.logs()).await;
    assert!(
        workers.logs().contains("queue reachable again"),
        "{}",
        workers.logs()
    );
    workers.stop();
    Report {
        started,
        sent: sent.into_iter().collect(),
        succeeded: ledger(dir.path()),
        dead_lettered: sqs_dead_letters(&stack, &queues).await,
    }
    .check("sqs, ElasticMQ restarted mid-run");
}

/// Everything in RabbitMQ queue `queue`, consumed and acknowledged.
async fn drain(rabbit: &Rabbit, queue: &str) -> BTreeSet<String> {
    let (_connection, channel) = rabbit.channel().await;
    channel
        .basic_qos(100, BasicQosOptions::default())
        .await
        .unwrap();
    let mut consumer = channel
        .basic_consume(
            queue.into(),
            "chaos-drain".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut bodies = BTreeSet::new();
    while let Ok(Some(Ok(delivery))) =
        tokio::time::timeout(Duration::from_secs(2), consumer.next()).await
    {
        bodies.insert(String::from_utf8_lossy(&delivery.data).into_owned());
        delivery.ack(BasicAckOptions::default()).await.unwrap();
    }
    bodies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kills_of_amqp_workers_and_a_broker_restart_lose_nothing() {
    let started = Instant::now();
    const QUEUE: &str = "chaos";
    let mut rabbit = Rabbit::start();
    let dir = tempfile::tempdir().unwrap();
    {
        let (connection, channel) = rabbit.channel().await;
        shoal_clients::amqp::declare(&connection, &channel, QUEUE, 5, None)
            .await
            .unwrap();
    }
    let sent = bodies("a", 4_000);
    rabbit.publish(QUEUE, &sent).await;
    let url = rabbit.queue_url(QUEUE);
    let spawn = |n: usize| {
        Proc::spawn(
            LEDGER,
            &["worker", "--queue", &url, "--concurrency", "8"],
            &[
                (
                    "SHOAL_LEDGER",
                    dir.path()
                        .join(format!("worker-{n}.ledger"))
                        .to_string_lossy()
                        .into_owned(),
                ),
                ("SHOAL_E2E_DELAY_MS", "2".into()),
            ],
            &dir.path().join(format!("worker-{n}.log")),
        )
    };
    let mut workers = vec![spawn(1), spawn(2)];
    let logs = |workers: &[Proc]| workers.iter().map(Proc::log_text).collect::<String>();
    for kill in 1..=5usize {
        wait_for_runs(dir.path(), u32::try_from(kill * 400).unwrap(), || {
            logs(&workers)
        });
        let slot = kill % 2;
        workers[slot].signal("KILL");
        workers[slot].wait(Duration::from_secs(10));
        workers[slot] = spawn(kill + 2);
    }
    wait_for_runs(dir.path(), 2_400, || logs(&workers));
    rabbit.restart();
    let waiting = Instant::now();
    loop {
        let done = ledger(dir.path()).len();
        let dead = rabbit.ready(&format!("{QUEUE}.dlq")).await;
        if done + usize::try_from(dead).unwrap() >= sent.len() && rabbit.ready(QUEUE).await == 0 {
            break;
        }
        assert!(
            waiting.elapsed() < Duration::from_secs(300),
            "after 300 s: {done} of {} succeeded, {dead} dead-lettered\n{}",
            sent.len(),
            logs(&workers)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for worker in &mut workers {
        worker.signal("TERM");
        worker.wait(Duration::from_secs(30));
    }
    Report {
        started,
        sent: sent.into_iter().collect(),
        succeeded: ledger(dir.path()),
        dead_lettered: drain(&rabbit, &format!("{QUEUE}.dlq")).await,
    }
    .check("amqp, 5 kill -9 of workers and RabbitMQ kill -9 + restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_unavailable_mid_run_is_retried_and_dead_letters_nothing() {
    let started = Instant::now();
    let stack = Stack::start();
    let dir = tempfile::tempdir().unwrap();
    // Room for the attempts an outage costs: each that reaches S3 while it
    // is down waits out the 3 s timeout.
    let queues = create_queues(&stack.sqs, "outage", 5, 10).await;
    let inputs: Vec<String> = (0..400).map(|i| format!("o{i:04}.jpg")).collect();
    let objects: Vec<String> = inputs.iter().map(|k| format!("in/{k}")).collect();
    upload(&stack.s3, "photos", &objects, &tiny_jpeg()).await;
    let chunks: Vec<String> = objects
        .iter()
        .map(|k| chunk_body(std::slice::from_ref(k)))
        .collect();
    send_all(&stack.sqs, &queues.url, &chunks).await;
    let spawn = |n: usize| {
        let mut env = stack.env();
        env.push((
            "SHOAL_LEDGER",
            dir.path()
                .join(format!("worker-{n}.ledger"))
                .to_string_lossy()
                .into_owned(),
        ));
        env.push(("SHOAL_E2E_DELAY_MS", "50".into()));
        env.push(("SHOAL_WAIT_TIME", "1".into()));
        Proc::spawn(
            THUMBNAIL,
            &[
                "worker",
                "--queue",
                &queues.url,
                "--input",
                "s3://photos/",
                "--output",
                "s3://photos/thumbs/",
                "--concurrency",
                "4",
                "--timeout",
                "3",
                "--max-attempts",
                "6",
            ],
            &env,
            &dir.path().join(format!("worker-{n}.log")),
        )
    };
    let mut workers = [spawn(1), spawn(2)];
    let logs = |workers: &[Proc]| workers.iter().map(Proc::log_text).collect::<String>();
    wait_for_runs(dir.path(), 20, || logs(&workers));
    // S3 stops answering for 6 s: connections open, nothing comes back.
    stack.s3_server.signal("STOP");
    // 50 ms an item over 8 slots: at least 2.4 s of work was left.
    let before = ledger(dir.path()).len();
    assert!(before < inputs.len(), "all done before the outage began");
    std::thread::sleep(Duration::from_secs(6));
    stack.s3_server.signal("CONT");
    sqs_settled(&stack, &queues, dir.path(), inputs.len(), || logs(&workers)).await;
    for worker in &mut workers {
        worker.signal("TERM");
        worker.wait(Duration::from_secs(30));
    }
    let thumbs = keys(&stack.s3, "photos", "thumbs/").await;
    assert_eq!(thumbs.len(), inputs.len(), "one thumbnail per photo");
    let log = logs(&workers);
    let retried = log.matches("\"retryable\":true").count();
    assert!(retried > 0, "the outage was seen and retried:\n{log}");
    println!("chaos s3 outage: {retried} attempts failed and were retried");
    Report {
        started,
        sent: inputs.iter().map(|k| format!("in/{k}")).collect(),
        succeeded: ledger(dir.path()),
        dead_lettered: sqs_dead_letters(&stack, &queues).await,
    }
    .check("s3 unavailable for 6 s mid-run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_rides_out_an_api_server_and_etcd_restart_mid_job() {
    let mut plane = ControlPlane::start();
    plane.install_crds();
    let stack = Stack::start();
    let photos: Vec<String> = (0..40).map(|n| format!("incoming/p{n:03}.jpg")).collect();
    upload(&stack.s3, "photos", &photos, &tiny_jpeg()).await;
    let env = stack.env_yaml();
    plane.apply_yaml(&format!(
        "apiVersion: shoal.dev/v1alpha1
kind: BatchJob
metadata:
  name: chaos
spec:
  handler:
    image: ghcr.io/shoal-dev/thumbnail:0.1.0
    command: [\"{THUMBNAIL}\"]
    timeoutSeconds: 30
    concurrency: 2
    env:
{env}      - name: SHOAL_E2E_DELAY_MS
        value: \"500\"
  source:
    s3:
      bucket: photos
      prefix: incoming/
      maxItemsPerChunk: 2
  scaling:
    maxWorkers: 2
    targetBacklogPerWorker: 5
  output:
    bucket: photos
    prefix: thumbs/
"
    ));
    let (mut operator, _metrics) = operator::spawn(OPERATOR, &plane, stack.env());
    let limit = Duration::from_secs(120);
    let split = operator::split_done(&plane, "chaos", limit, || operator.log_text());
    assert_eq!(split, "true 20 40");
    wait_until(
        limit,
        "workers wanted",
        || (operator::replicas(&plane, "chaos-workers") == Some(2)).then_some(()),
        || operator.log_text(),
    );
    let workers = shoal_tests::pods::start_workers(&plane, "chaos-workers", THUMBNAIL, 2);
    shoal_tests::sqs::wait_for("some thumbnails", limit, || async {
        keys(&stack.s3, "photos", "thumbs/").await.len() >= 6
    })
    .await;
    // The API server and etcd die mid-job (40 items of 500 ms over 4
    // slots: 5 s of work at least) and come back 5 s later.
    assert_ne!(
        plane.jsonpath(&["bj", "chaos"], "{.status.phase}"),
        "Succeeded",
        "the job ended before the restart"
    );
    plane.restart_after(|| std::thread::sleep(Duration::from_secs(5)));
    wait_until(
        Duration::from_secs(180),
        "BatchJob Succeeded after the restart",
        || (plane.jsonpath(&["bj", "chaos"], "{.status.phase}") == "Succeeded").then_some(()),
        || operator.log_text(),
    );
    assert!(
        operator.running(),
        "the operator recovered unaided, without a restart"
    );
    let counts = plane.jsonpath(
        &["bj", "chaos"],
        "{.status.chunks.total} {.status.chunks.succeeded} {.status.chunks.deadLettered}",
    );
    assert_eq!(counts, "20 20 0");
    drop(workers);
    let thumbs = keys(&stack.s3, "photos", "thumbs/").await;
    let made: BTreeSet<String> = thumbs
        .iter()
        .filter(|k| !k.contains("_shoal/"))
        .cloned()
        .collect();
    println!(
        "chaos kube-apiserver and etcd kill -9 + restart mid-job: {} photos, {} thumbnails, chunks {counts} (total succeeded dead-lettered)",
        photos.len(),
        made.len()
    );
    assert_eq!(made.len(), photos.len());
}
