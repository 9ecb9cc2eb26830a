//! Driver of `bench/real-node.sh`: shoal on the test bed's real node
//! (`shoal_tests::node`), the operator installed by its chart, the images
//! `scripts/build-images.sh` built (already imported: no pull).
//!
//! 1. Cold start, ROUNDS times: an SQS-source BatchJob at zero workers
//!    gets one message; the time to the first worker pod Ready (from a
//!    `kubectl get pods --watch` stream, each event stamped on arrival) and
//!    to the message's thumbnail in S3 are one sample each. The job then
//!    scales back to zero (pod gone) before the next round.
//! 2. Throughput, TP_ROUNDS times: IMAGES photos (1600x1200 JPEG) made into
//!    256 px thumbnails by (a) `thumbnail run` over a local folder, (b)
//!    `thumbnail run` over S3 (the same moto server), both with
//!    `--concurrency 2` on the machine's 2 cores, and (c) an S3 BatchJob on
//!    the node with 2 worker pods of 1 CPU each (`memoryMiB: 1769`), timed
//!    from `kubectl apply` to Succeeded. The ratio local/node is the cost
//!    of the distributed path.
//!
//!     node-bench THUMBNAIL_BINARY [ROUNDS] [IMAGES] [TP_ROUNDS]

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark driver: a panic is how it reports a broken setup"
)]

use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use shoal_tests::node::bed::{Bed, Edit, LIMIT};
use shoal_tests::node::{image_archives, with_node};
use shoal_tests::sqs::{create_queues, send_all};
use shoal_tests::stack::{chunk_body, tiny_jpeg, upload};
use shoal_tests::wait_until;

fn percentile(samples: &[f64], q: f64) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn median(samples: &[f64]) -> f64 {
    percentile(samples, 0.5)
}

/// When each of a job's pods was first seen Ready, from a watch stream.
struct ReadyWatch {
    seen: Arc<Mutex<Vec<(Instant, String)>>>,
    child: std::process::Child,
}

impl ReadyWatch {
    fn start(bed: &Bed<'_>, job: &str) -> Self {
        let plane = bed.plane();
        let mut child = Command::new(std::env::var("SHOAL_KUBECTL").unwrap())
            .arg("--kubeconfig")
            .arg(plane.kubeconfig())
            .args(["get", "pods", "-l", &shoal_tests::node::bed::selector(job)])
            .args(["--watch", "-o", "json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        std::thread::spawn(move || {
            let stream =
                serde_json::Deserializer::from_reader(BufReader::new(stdout)).into_iter::<Value>();
            for value in stream.flatten() {
                let at = Instant::now();
                let ready = value["status"]["conditions"].as_array().is_some_and(|c| {
                    c.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                });
                let name = value["metadata"]["name"].as_str().unwrap_or_default();
                let mut seen = record.lock().unwrap();
                if ready && !seen.iter().any(|(_, n)| n == name) {
                    seen.push((at, name.to_owned()));
                }
            }
        });
        Self { seen, child }
    }

    /// The first time a pod was seen Ready after `after`.
    fn ready_after(&self, after: Instant) -> Option<Instant> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .map(|(t, _)| *t)
            .find(|t| *t > after)
    }
}

impl Drop for ReadyWatch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn object_exists(bed: &Bed<'_>, key: &str) -> bool {
    bed.stack
        .s3
        .head_object()
        .bucket("photos")
        .key(key)
        .send()
        .await
        .is_ok()
}

async fn cold_start(bed: &Bed<'_>, rounds: usize) -> (Vec<f64>, Vec<f64>) {
    let queues = create_queues(&bed.stack.sqs, "latency", 30, 3).await;
    let keys: Vec<String> = (0..rounds).map(|r| format!("lat/r{r}.jpg")).collect();
    upload(&bed.stack.s3, "photos", &keys, &tiny_jpeg()).await;
    bed.apply(&bed.sqs_job(
        "latency",
        &queues.url,
        "lat/",
        "",
        "    minWorkers: 0\n    maxWorkers: 1\n    targetBacklogPerWorker: 1\n    scaleDownDelaySeconds: 1\n",
    ));
    let watch = ReadyWatch::start(bed, "latency");
    let (mut ready, mut output) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        wait_until(
            LIMIT,
            "zero workers",
            || (bed.replicas("latency") == Some(0) && bed.pod_count("latency") == 0).then_some(()),
            || bed.context(),
        );
        let sent = Instant::now();
        send_all(
            &bed.stack.sqs,
            &queues.url,
            &[chunk_body(&[format!("r{round}.jpg")])],
        )
        .await;
        let key = format!("out/latency/r{round}.jpg");
        let mut pod_ready = None;
        while pod_ready.is_none() || !object_exists(bed, &key).await {
            assert!(
                sent.elapsed() < LIMIT,
                "round {round}: no pod or output\n{}",
                bed.context()
            );
            pod_ready = pod_ready.or_else(|| watch.ready_after(sent));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let done = sent.elapsed().as_secs_f64();
        let first = pod_ready.unwrap().duration_since(sent).as_secs_f64();
        println!("round {round}: pod Ready {first:.2} s, thumbnail {done:.2} s after the message");
        ready.push(first);
        output.push(done);
    }
    bed.plane()
        .kubectl(&["delete", "bj", "latency", "--wait=true"]);
    (ready, output)
}

/// A 1600x1200 photo-like JPEG (gradients and texture), `seed` varying it.
fn photo(seed: u32) -> Vec<u8> {
    let image = image::RgbImage::from_fn(1600, 1200, |x, y| {
        let t = (x.wrapping_mul(31) ^ y.wrapping_mul(17) ^ seed).wrapping_mul(2_654_435_761) >> 28;
        image::Rgb([
            ((x / 7 + seed) % 256) as u8,
            ((y / 5 + t) % 256) as u8,
            (((x + y) / 11 + t * 3) % 256) as u8,
        ])
    });
    let mut bytes = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 85)
        .encode_image(&image)
        .unwrap();
    bytes
}

/// Invocations at once: of `thumbnail run` (LOCAL_CONCURRENCY, default 2:
/// the cores) and of each worker pod (POD_CONCURRENCY, default 1, as one
/// Lambda execution environment).
fn concurrency(var: &str, default: u32) -> u32 {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn run_local(
    binary: &Path,
    input: &str,
    output: &str,
    env: &[(&'static str, String)],
    state: &Path,
) -> f64 {
    let started = Instant::now();
    let out = Command::new(binary)
        .args([
            "run",
            "--input",
            input,
            "--output",
            output,
            "--no-progress",
            "--concurrency",
            &concurrency("LOCAL_CONCURRENCY", 2).to_string(),
        ])
        .arg("--state-dir")
        .arg(state)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .unwrap();
    let took = started.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    took
}

async fn throughput(bed: &Bed<'_>, binary: &Path, images: usize, rounds: usize) {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    let mut keys = Vec::new();
    for n in 0..images {
        let bytes = photo(n as u32);
        let name = format!("p{n:05}.jpg");
        std::fs::write(input.join(&name), &bytes).unwrap();
        upload(&bed.stack.s3, "photos", &[format!("tp/{name}")], &bytes).await;
        keys.push(name);
    }
    let s3_env = bed.stack.env();
    let (mut disk, mut s3, mut node) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let out = dir.path().join(format!("out-{round}"));
        disk.push(run_local(
            binary,
            &input.to_string_lossy(),
            &out.to_string_lossy(),
            &[],
            &dir.path().join(format!("state-disk-{round}")),
        ));
        s3.push(run_local(
            binary,
            "s3://photos/tp/",
            &format!("s3://photos/out/tp-local-{round}/"),
            &s3_env,
            &dir.path().join(format!("state-s3-{round}")),
        ));
        let name = format!("tp-{round}");
        let job = bed
            .s3_job(
                &name,
                "tp/",
                &format!(
                    "    memoryMiB: 1769\n    concurrency: {}\n",
                    concurrency("POD_CONCURRENCY", 1)
                ),
                "    maxWorkers: 2\n    targetBacklogPerWorker: 1\n    scaleDownDelaySeconds: 1\n",
            )
            .edit("timeoutSeconds: 20", "timeoutSeconds: 60");
        let started = Instant::now();
        bed.apply(&job);
        while bed.phase(&name) != "Succeeded" {
            assert!(started.elapsed() < LIMIT, "{name}\n{}", bed.context());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        node.push(started.elapsed().as_secs_f64());
        assert_eq!(bed.outputs(&name).await.len(), images);
        bed.plane().kubectl(&["delete", "bj", &name, "--wait=true"]);
        println!(
            "round {round}: local folder {:.2} s, local over S3 {:.2} s, node {:.2} s",
            disk[round], s3[round], node[round]
        );
    }
    let per_s = |t: f64| images as f64 / t;
    let (d, s, n) = (median(&disk), median(&s3), median(&node));
    println!(
        "\nthroughput, {images} images of 1600x1200, median of {rounds} \
         (local concurrency {}, 2 pods x concurrency {}):",
        concurrency("LOCAL_CONCURRENCY", 2),
        concurrency("POD_CONCURRENCY", 1)
    );
    println!(
        "  local run, folder      {d:7.2} s  {:7.1} images/s",
        per_s(d)
    );
    println!(
        "  local run, S3 (moto)   {s:7.2} s  {:7.1} images/s",
        per_s(s)
    );
    println!(
        "  BatchJob on the node   {n:7.2} s  {:7.1} images/s",
        per_s(n)
    );
    println!("  node / local folder  {:.2}x", d / n);
    println!("  node / local over S3 {:.2}x", s / n);
}

fn main() {
    let mut args = std::env::args().skip(1);
    let binary = PathBuf::from(
        args.next()
            .expect("usage: node-bench THUMBNAIL_BINARY [ROUNDS] [IMAGES] [TP_ROUNDS]"),
    );
    let rounds: usize = args.next().map_or(10, |a| a.parse().unwrap());
    let images: usize = args.next().map_or(200, |a| a.parse().unwrap());
    let tp_rounds: usize = args.next().map_or(3, |a| a.parse().unwrap());
    let problems = with_node(image_archives(), move |node, runtime| {
        runtime.block_on(async {
            let bed = Bed::start(node);
            bed.install_operator();
            let (ready, output) = cold_start(&bed, rounds).await;
            println!("\ncold start, {rounds} rounds (image present, zero workers):");
            println!(
                "  message -> worker pod Ready   p50 {:.2} s  p95 {:.2} s",
                median(&ready),
                percentile(&ready, 0.95)
            );
            println!(
                "  message -> thumbnail in S3    p50 {:.2} s  p95 {:.2} s\n",
                median(&output),
                percentile(&output, 0.95)
            );
            throughput(&bed, &binary, images, tp_rounds).await;
        });
    });
    assert!(problems.is_empty(), "teardown: {problems:?}");
}
