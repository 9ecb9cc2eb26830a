//! Driver of `bench/operator.sh`: the operator (a release build, path in
//! argv[1]) against a real kube-apiserver + etcd and ElasticMQ, at growing
//! numbers of BatchJobs.
//!
//! 1. Scale reaction of a job alone, TRIALS times: with its workers at 0,
//!    after a pause of random length (0-1 s, so the sends do not fall in
//!    step with the operator's queue reads), 50 messages are sent (5
//!    `SendMessageBatch`es); the time until its Deployment's replicas read
//!    5 (kubectl polled every 50 ms) is one sample. The queue is then
//!    purged and the driver waits for 0 again.
//! 2. For each count in STEPS (cumulative), that many BatchJobs exist, each
//!    on a queue of its own (`BENCH_QUEUES=shared`: all on one queue) with
//!    no messages. From their creation until the operator counts them all
//!    Running, every reconcile's duration is kept (the ramp: the operator's
//!    own debug line per reconcile, percentiles of raw samples). Then:
//!    - over a 30 s window in which one message is sent to each of a tenth
//!      of the step's queues (spread over the window: those jobs scale up
//!      from zero, the others stay idle): the operator's resident memory
//!      (VmRSS sampled every 250 ms: median and the peak VmHWM so far),
//!      every reconcile's duration, requests to the API server and to the
//!      queue server (the operator's counters), how many API answers took
//!      over 100 ms (the operator's latency histogram, and the API
//!      server's own per verb and resource), and the CPU time each
//!      process on the machine used;
//!    - the scale reaction of the job above again, TRIALS times, while the
//!      others exist.
//! 3. Slopes between the first and last step: bytes and requests per job.
//!
//!     operator-bench OPERATOR_BINARY [TRIALS] [STEPS, e.g. 100,1000]
//!
//! ElasticMQ stands in for SQS, which in production runs on no node of the
//! cluster: it runs at `nice` 10 (it takes the CPU the control plane and
//! the operator leave) with the JVM's full JIT.
//!
//! `BENCH_OPERATOR_ENV="K=V K=V"` adds to the operator's environment (an
//! allocator setting, `SHOAL_OPERATOR_*` flags).
//!
//! `BENCH_NODES=N` adds kube-controller-manager, kube-scheduler and kwok
//! with N fake nodes (`shoal_tests::fake_nodes`): every Deployment becomes
//! a ReplicaSet and pods. The step's jobs then keep one worker each
//! (`minWorkers: 1`, so N jobs have N pods), the window's changed jobs go
//! to 2 (two messages, `targetBacklogPerWorker: 1`), and a step waits until
//! every job counts its workers Ready before its window.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_precision_loss,
    reason = "a benchmark driver: a panic is how it reports a broken setup; counts are far below 2^52"
)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use shoal_tests::elasticmq::ElasticMq;
use shoal_tests::fake_nodes::FakeNodes;
use shoal_tests::kube::ControlPlane;
use shoal_tests::process::Proc;
use shoal_tests::prom::{http_get, sample_with};
use shoal_tests::{free_port, operator, sqs, wait_until};

#[path = "operator_bench/window.rs"]
mod window;

/// How long each step is watched.
const WINDOW: Duration = Duration::from_secs(30);

fn percentile(samples: &mut [f64], q: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    samples.sort_by(f64::total_cmp);
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "an index into a short vector"
    )]
    let index = ((samples.len() - 1) as f64 * q).round() as usize;
    samples[index]
}

/// The memory figures of `pid` from `/proc/PID/status`, KiB.
#[derive(Clone, Copy)]
struct Memory {
    /// `VmRSS`: resident now.
    rss: u64,
    /// `VmHWM`: the peak resident so far.
    peak: u64,
    /// `RssAnon`: heap, stacks, what the allocator holds.
    anon: u64,
    /// `RssFile`: file pages mapped, the binary's own above all.
    file: u64,
}

fn memory_kib(pid: u32) -> Memory {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    Memory {
        rss: field("VmRSS:"),
        peak: field("VmHWM:"),
        anon: field("RssAnon:"),
        file: field("RssFile:"),
    }
}

/// Samples the operator's memory every 250 ms until dropped.
struct Sampler {
    samples: Arc<Mutex<Vec<Memory>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sampler {
    fn start(pid: u32) -> Self {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (samples, stop) = (samples.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    samples.lock().unwrap().push(memory_kib(pid));
                    std::thread::sleep(Duration::from_millis(250));
                }
            })
        };
        Self {
            samples,
            stop,
            thread: Some(thread),
        }
    }

    /// The samples since the last call.
    fn take(&self) -> Vec<Memory> {
        std::mem::take(&mut *self.samples.lock().unwrap())
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Reconcile durations (ms) logged in `log` from byte `from` on.
fn reconcile_samples(log: &str, from: usize) -> Vec<f64> {
    log.get(from..)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("reconcile_timing"))
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["micros"].as_f64())
        .map(|us| us / 1000.0)
        .collect()
}

/// Sum of every series of counter `name` in `metrics`.
fn counter_sum(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter(|l| l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The last `n` bytes (or a little more) of `text`.
fn tail(text: &str, n: usize) -> String {
    let mut from = text.len().saturating_sub(n);
    while !text.is_char_boundary(from) {
        from -= 1;
    }
    text[from..].to_owned()
}

fn scrape(addr: &str) -> String {
    http_get(&format!("http://{addr}/metrics")).1
}

/// A pause between 0 and 1 s, from the clock's nanoseconds.
fn random_pause() -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    Duration::from_nanos(u64::from(nanos))
}

/// How long a trial waits for the replicas to follow: past it the trial
/// counts as this long (a lower bound, said as such) and the next begins.
const REACTION_LIMIT: Duration = Duration::from_secs(300);

/// Scale-reaction samples (s) of job `uploads` on `url`, and how many of
/// them are [`REACTION_LIMIT`] standing for a reaction that did not come.
async fn reactions(
    plane: &ControlPlane,
    client: &aws_sdk_sqs::Client,
    url: &str,
    trials: usize,
    op: &Proc,
) -> (Vec<f64>, usize) {
    let replicas = || operator::replicas(plane, "uploads-workers");
    let bodies: Vec<String> = (0..50)
        .map(|n| format!("{{\"key\": \"{n}.jpg\"}}"))
        .collect();
    let mut reaction = Vec::new();
    let mut cut = 0;
    for trial in 0..trials {
        tokio::time::sleep(random_pause()).await;
        let started = Instant::now();
        sqs::send_all(client, url, &bodies).await;
        let scaled = loop {
            let scaled = replicas() == Some(5);
            if scaled || started.elapsed() >= REACTION_LIMIT {
                break scaled;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let took = started.elapsed().as_secs_f64();
        if scaled {
            println!("trial {trial} scale_reaction_s={took:.3}");
        } else {
            println!("trial {trial} scale_reaction_s=>{took:.0} (not scaled to 5 by then)");
            cut += 1;
        }
        reaction.push(took);
        client.purge_queue().queue_url(url).send().await.unwrap();
        wait_until(
            REACTION_LIMIT,
            "back to 0",
            || (replicas() == Some(0)).then_some(()),
            || op.log_text(),
        );
    }
    (reaction, cut)
}

/// What one step measured.
struct Step {
    jobs: usize,
    rss_mib: f64,
    peak_mib: f64,
    api_per_s: f64,
    queue_per_s: f64,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let binary = args
        .get(1)
        .expect("usage: operator-bench OPERATOR_BINARY [TRIALS] [STEPS]");
    let trials: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(20);
    let steps: Vec<usize> = args
        .get(3)
        .map_or("100,1000", String::as_str)
        .split(',')
        .map(|s| s.trim().parse().expect("STEPS: counts separated by commas"))
        .collect();
    let shared = std::env::var("BENCH_QUEUES").is_ok_and(|v| v == "shared");
    let nodes: usize = std::env::var("BENCH_NODES").ok().map_or(0, |v| {
        v.parse().expect("BENCH_NODES: a count of fake nodes")
    });

    assert!(
        !(shared && nodes > 0),
        "BENCH_QUEUES=shared with BENCH_NODES: every job would scale on the reaction job's messages"
    );

    let plane = ControlPlane::start();
    plane.install_crds();
    let fake = (nodes > 0).then(|| FakeNodes::start(&plane, nodes));
    if let Some(fake) = &fake {
        println!("fake nodes: {}", fake.nodes());
    }
    // With pods: one worker per job, a changed job goes to two.
    let (scaling, churn) = if fake.is_some() {
        (
            "  scaling:\n    minWorkers: 1\n    targetBacklogPerWorker: 1\n",
            2,
        )
    } else {
        ("", 1)
    };
    let server = ElasticMq::start_beside_a_benchmark();
    let client = sqs::client(&server.endpoint());
    let url = operator::create_queue(&client, "bench").await;
    operator::apply_sqs_job(
        &plane,
        &url,
        "",
        "    minWorkers: 0\n    maxWorkers: 10\n    targetBacklogPerWorker: 10\n    scaleDownDelaySeconds: 0\n",
    );
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let mut env = vec![
        (
            "KUBECONFIG".to_owned(),
            plane.kubeconfig().to_string_lossy().into_owned(),
        ),
        ("AWS_ENDPOINT_URL_SQS".to_owned(), server.endpoint()),
        ("AWS_ACCESS_KEY_ID".to_owned(), "x".to_owned()),
        ("AWS_SECRET_ACCESS_KEY".to_owned(), "x".to_owned()),
        ("AWS_REGION".to_owned(), "us-east-1".to_owned()),
        ("AWS_EC2_METADATA_DISABLED".to_owned(), "true".to_owned()),
        (
            "RUST_LOG".to_owned(),
            "warn,shoal_operator::reconcile_timing=debug".to_owned(),
        ),
    ];
    for pair in std::env::var("BENCH_OPERATOR_ENV")
        .unwrap_or_default()
        .split_whitespace()
    {
        let (k, v) = pair.split_once('=').expect("BENCH_OPERATOR_ENV: K=V pairs");
        println!("operator environment: {k}={v}");
        env.push((k.to_owned(), v.to_owned()));
    }
    let env: Vec<(&str, String)> = env.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    let op = Proc::spawn(
        binary,
        &["run", "--metrics-addr", &metrics_addr],
        &env,
        &plane.dir().join("operator.log"),
    );
    let sampler = Sampler::start(op.id());
    wait_until(
        Duration::from_secs(120),
        "workers at 0",
        || (operator::replicas(&plane, "uploads-workers") == Some(0)).then_some(()),
        || op.log_text(),
    );

    let (mut alone, cut) = reactions(&plane, &client, &url, trials, &op).await;
    let p50 = percentile(&mut alone, 0.5);
    let p95 = percentile(&mut alone, 0.95);
    println!(
        "RESULT alone reaction_p50_s={p50:.3} reaction_p95_s={p95:.3} trials={trials} not_scaled={cut}"
    );

    let mut made = 0;
    let mut results: Vec<Step> = Vec::new();
    for &jobs in &steps {
        // The queues and jobs this step adds.
        let names: Vec<String> = (made..jobs).map(|n| format!("job-{n:05}")).collect();
        let urls: Vec<String> = if shared {
            vec![url.clone(); names.len()]
        } else {
            futures_util::stream::iter(names.iter())
                .map(|name| operator::create_queue(&client, name))
                .buffered(16)
                .collect()
                .await
        };
        let started = Instant::now();
        let ramp_from = op.log_text().len();
        for batch in names.iter().zip(&urls).collect::<Vec<_>>().chunks(500) {
            let mut yaml = String::new();
            for (name, queue) in batch {
                yaml.push_str(&format!(
                    "---\napiVersion: shoal.dev/v1alpha1\nkind: BatchJob\nmetadata:\n  name: {name}\nspec:\n  handler:\n    image: x\n    memoryMiB: 128\n  source:\n    sqs:\n      queueUrl: {queue}\n{scaling}"
                ));
            }
            let out = plane.kubectl_with_input(&["create", "-f", "-"], Some(&yaml));
            assert!(
                out.status.success(),
                "kubectl create: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        made = jobs;
        let expected = (jobs + 1) as f64;
        wait_until(
            Duration::from_secs(3600),
            "every BatchJob Running",
            || {
                let text = scrape(&metrics_addr);
                (sample_with(&text, "shoal_operator_batchjobs", &[("phase", "Running")])
                    == Some(expected))
                .then_some(())
            },
            || tail(&op.log_text(), 4000),
        );
        if fake.is_some() {
            wait_until(
                Duration::from_secs(3600),
                "every job's worker Ready",
                || {
                    // Jobs with a Ready worker (the reaction job idles at
                    // 0; those a window changed keep 2).
                    let ready = plane
                        .jsonpath(
                            &["bj"],
                            "{range .items[*]}{.metadata.name} {.status.readyWorkers}{\"\\n\"}{end}",
                        )
                        .lines()
                        .filter_map(|l| l.split_once(' '))
                        .filter(|(name, n)| {
                            name.starts_with("job-") && n.parse::<usize>().is_ok_and(|n| n >= 1)
                        })
                        .count();
                    (ready == jobs).then_some(())
                },
                || tail(&op.log_text(), 4000),
            );
        }
        let running_after = started.elapsed().as_secs_f64();
        let mut ramp = reconcile_samples(&op.log_text(), ramp_from);
        let ramp_count = ramp.len();
        println!(
            "RESULT jobs={jobs} ramp_reconciles={ramp_count} ramp_reconcile_p50_ms={:.2} ramp_reconcile_p99_ms={:.2} ramp_reconcile_max_ms={:.2}",
            percentile(&mut ramp, 0.5),
            percentile(&mut ramp, 0.99),
            percentile(&mut ramp, 1.0)
        );

        // The window.
        sampler.take();
        let log_from = op.log_text().len();
        let before = scrape(&metrics_addr);
        let (cpu_before, api_server_before) =
            (window::cpu_ticks(), window::api_server_latency(&plane));
        // Change during the window: one message to each of a tenth of this
        // step's queues (never the reaction job's), spread over it, so a
        // tenth of the jobs scale up from zero while the others stay idle.
        let window_started = Instant::now();
        // (Not with one shared queue: that is the reaction job's.)
        let changed: Vec<&String> = if shared {
            Vec::new()
        } else {
            urls.iter().step_by(10).collect()
        };
        let spacing = WINDOW.mul_f64(0.8) / u32::try_from(changed.len().max(1)).unwrap_or(1);
        for queue in &changed {
            let bodies = vec!["{\"key\": \"churn.jpg\"}".to_owned(); churn];
            sqs::send_all(&client, queue, &bodies).await;
            tokio::time::sleep(spacing).await;
        }
        tokio::time::sleep(WINDOW.saturating_sub(window_started.elapsed())).await;
        let after = scrape(&metrics_addr);
        let (cpu_after, api_server_after) =
            (window::cpu_ticks(), window::api_server_latency(&plane));
        let samples = sampler.take();
        let mib = |of: fn(&Memory) -> u64| {
            let mut all: Vec<f64> = samples.iter().map(|m| of(m) as f64 / 1024.0).collect();
            percentile(&mut all, 0.5)
        };
        let (rss_median, anon_median, file_median) =
            (mib(|m| m.rss), mib(|m| m.anon), mib(|m| m.file));
        let peak = memory_kib(op.id()).peak as f64 / 1024.0;
        let mut durations = reconcile_samples(&op.log_text(), log_from);
        let delta = |name: &str| (counter_sum(&after, name) - counter_sum(&before, name)) / 30.0;
        let api = delta("shoal_operator_api_requests_total");
        // A series of the window, by its labels.
        let moved = |name: &str, labels: &[(&str, &str)]| {
            sample_with(&after, name, labels).unwrap_or(0.0)
                - sample_with(&before, name, labels).unwrap_or(0.0)
        };
        let verbs: Vec<String> = ["GET", "PATCH", "POST", "PUT", "DELETE"]
            .iter()
            .map(|verb| {
                let sent = moved("shoal_operator_api_requests_total", &[("verb", verb)]);
                format!("{verb}:{:.1}", sent / WINDOW.as_secs_f64())
            })
            .collect();
        // How many answers of the window took the API server over 100 ms
        // to start, by verb (from the operator's latency histogram).
        let slow: Vec<String> = ["GET", "PATCH", "POST"]
            .iter()
            .map(|verb| {
                let bucket = |le: &str| {
                    moved(
                        "shoal_operator_api_request_duration_seconds_bucket",
                        &[("verb", verb), ("le", le)],
                    )
                };
                format!(
                    "{verb}:{}/{}",
                    bucket("+Inf") - bucket("0.1"),
                    bucket("+Inf")
                )
            })
            .collect();
        let queue = delta("shoal_operator_queue_requests_total");
        let count = durations.len();
        let (p50, p99, max) = (
            percentile(&mut durations, 0.5),
            percentile(&mut durations, 0.99),
            percentile(&mut durations, 1.0),
        );
        println!(
            "RESULT jobs={jobs} running_after_s={running_after:.1} rss_mib={rss_median:.1} peak_mib={peak:.1} reconciles_per_s={:.1} reconcile_p50_ms={p50:.2} reconcile_p99_ms={p99:.2} reconcile_max_ms={max:.2} api_requests_per_s={api:.1} api_per_s_by_verb={} api_answers_over_100ms={} queue_requests_per_s={queue:.1}",
            count as f64 / WINDOW.as_secs_f64(),
            verbs.join(","),
            slow.join(",")
        );
        println!(
            "RESULT jobs={jobs} anon_mib={anon_median:.1} file_mib={file_median:.1} window_cpu_s={} api_server_over_100ms={}",
            window::cpu_spent(&cpu_before, &cpu_after, 10),
            window::api_server_slow(&api_server_before, &api_server_after, 8)
        );
        let (mut busy, cut) = reactions(&plane, &client, &url, trials, &op).await;
        println!(
            "RESULT jobs={jobs} reaction_p50_s={:.3} reaction_p95_s={:.3} trials={trials} not_scaled={cut}",
            percentile(&mut busy, 0.5),
            percentile(&mut busy, 0.95)
        );
        results.push(Step {
            jobs,
            rss_mib: rss_median,
            peak_mib: peak,
            api_per_s: api,
            queue_per_s: queue,
        });
    }
    if let (Some(first), Some(last)) = (results.first(), results.last())
        && last.jobs > first.jobs
    {
        let jobs = (last.jobs - first.jobs) as f64;
        println!(
            "RESULT slope jobs={}..{} rss_kib_per_job={:.1} peak_kib_per_job={:.1} api_requests_per_s_per_job={:.4} queue_requests_per_s_per_job={:.4}",
            first.jobs,
            last.jobs,
            (last.rss_mib - first.rss_mib) * 1024.0 / jobs,
            (last.peak_mib - first.peak_mib) * 1024.0 / jobs,
            (last.api_per_s - first.api_per_s) / jobs,
            (last.queue_per_s - first.queue_per_s) / jobs,
        );
    }
}
