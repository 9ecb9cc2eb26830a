//! Driver of `bench/operator.sh`: the operator (a release build, path in
//! argv[1]) against a real kube-apiserver + etcd and ElasticMQ.
//!
//! 1. Scale reaction, TRIALS times: with the workers at 0, 50 messages are
//!    sent (5 `SendMessageBatch`es); the time until the Deployment's
//!    replicas read 5 (kubectl polled every 50 ms) is one sample. The queue
//!    is then purged and the driver waits for 0 again.
//! 2. Many jobs: JOBS BatchJobs on one queue; once all are Running, the
//!    operator's RSS (VmRSS) and the reconcile-duration p99 over a 30 s
//!    window (from its own histogram) are read.
//!
//!     operator-bench OPERATOR_BINARY [TRIALS] [JOBS]

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark driver: a panic is how it reports a broken setup"
)]

use std::time::{Duration, Instant};

use shoal_tests::elasticmq::ElasticMq;
use shoal_tests::kube::ControlPlane;
use shoal_tests::process::Proc;
use shoal_tests::prom::http_get;
use shoal_tests::{free_port, operator, sqs, wait_until};

fn percentile(samples: &mut [f64], q: f64) -> f64 {
    samples.sort_by(f64::total_cmp);
    let index = ((samples.len() - 1) as f64 * q).round() as usize;
    samples[index]
}

/// (upper bound, cumulative count) of every bucket of `name`.
fn buckets(metrics: &str, name: &str) -> Vec<(f64, f64)> {
    let prefix = format!("{name}_bucket{{le=\"");
    metrics
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(&prefix)?;
            let (le, value) = rest.split_once("\"} ")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, value.trim().parse().ok()?))
        })
        .collect()
}

/// The upper bound of the bucket holding quantile `q` of the observations
/// made between two scrapes.
fn window_quantile(before: &str, after: &str, name: &str, q: f64) -> (f64, f64) {
    let b = buckets(before, name);
    let a = buckets(after, name);
    let deltas: Vec<(f64, f64)> = a
        .iter()
        .zip(b.iter())
        .map(|((le, n1), (_, n0))| (*le, n1 - n0))
        .collect();
    let total = deltas.last().map_or(0.0, |(_, n)| *n);
    let bound = deltas
        .iter()
        .find(|(_, n)| *n >= q * total)
        .map_or(f64::INFINITY, |(le, _)| *le);
    (bound, total)
}

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let binary = args
        .get(1)
        .expect("usage: operator-bench OPERATOR_BINARY [TRIALS] [JOBS]");
    let trials: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(20);
    let jobs: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(1000);

    let plane = ControlPlane::start();
    plane.install_crds();
    let server = ElasticMq::start();
    let client = sqs::client(&server.endpoint());
    let url = operator::create_queue(&client, "bench").await;
    operator::apply_sqs_job(
        &plane,
        &url,
        "",
        "    minWorkers: 0\n    maxWorkers: 10\n    targetBacklogPerWorker: 10\n    scaleDownDelaySeconds: 0\n",
    );
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let env = vec![
        (
            "KUBECONFIG",
            plane.kubeconfig().to_string_lossy().into_owned(),
        ),
        ("AWS_ENDPOINT_URL_SQS", server.endpoint()),
        ("AWS_ACCESS_KEY_ID", "x".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "x".to_owned()),
        ("AWS_REGION", "us-east-1".to_owned()),
        ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
        ("RUST_LOG", "warn".to_owned()),
    ];
    let op = Proc::spawn(
        binary,
        &["run", "--metrics-addr", &metrics_addr],
        &env,
        &plane.dir().join("operator.log"),
    );
    let limit = Duration::from_secs(120);
    let replicas = || operator::replicas(&plane, "uploads-workers");
    wait_until(
        limit,
        "workers at 0",
        || (replicas() == Some(0)).then_some(()),
        || op.log_text(),
    );

    let bodies: Vec<String> = (0..50)
        .map(|n| format!("{{\"key\": \"{n}.jpg\"}}"))
        .collect();
    let mut reaction = Vec::new();
    for trial in 0..trials {
        let started = Instant::now();
        sqs::send_all(&client, &url, &bodies).await;
        wait_until(
            limit,
            "scaled to 5",
            || (replicas() == Some(5)).then_some(()),
            || op.log_text(),
        );
        let took = started.elapsed().as_secs_f64();
        println!("trial {trial} scale_reaction_s={took:.3}");
        reaction.push(took);
        client.purge_queue().queue_url(&url).send().await.unwrap();
        wait_until(
            limit,
            "back to 0",
            || (replicas() == Some(0)).then_some(()),
            || op.log_text(),
        );
    }
    let p50 = percentile(&mut reaction, 0.5);
    let p95 = percentile(&mut reaction, 0.95);
    println!("scale reaction over {trials} trials: p50 {p50:.3} s, p95 {p95:.3} s");

    // Many jobs on one (empty) queue.
    let mut yaml = String::new();
    for n in 0..jobs {
        yaml.push_str(&format!(
            "---\napiVersion: shoal.dev/v1alpha1\nkind: BatchJob\nmetadata:\n  name: job-{n:04}\nspec:\n  handler:\n    image: x\n  source:\n    sqs:\n      queueUrl: {url}\n"
        ));
    }
    let started = Instant::now();
    plane.apply_yaml(&yaml);
    let expected = jobs + 1;
    wait_until(
        Duration::from_secs(600),
        "every BatchJob Running",
        || {
            let phases = plane.jsonpath(&["bj"], "{.items[*].status.phase}");
            (phases.split(' ').filter(|p| *p == "Running").count() == expected).then_some(())
        },
        || op.log_text(),
    );
    println!(
        "{jobs} BatchJobs all Running after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let (_, before) = http_get(&format!("http://{metrics_addr}/metrics"));
    tokio::time::sleep(Duration::from_secs(30)).await;
    let (_, after) = http_get(&format!("http://{metrics_addr}/metrics"));
    let (p99, count) = window_quantile(
        &before,
        &after,
        "shoal_operator_reconcile_duration_seconds",
        0.99,
    );
    let rss = rss_mib(op.id());
    println!(
        "with {expected} BatchJobs: operator RSS {rss:.1} MiB; {count} reconciles in 30 s ({:.0}/s); reconcile p99 <= {p99} s",
        count / 30.0
    );
}
