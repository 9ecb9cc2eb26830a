//! shoal on a real Kubernetes node: kubelet, containerd, runc and the
//! bridge CNI, with the control plane, all inside a network namespace of
//! the test's own (`shoal_tests::node`). The operator runs as a pod that
//! `helm install` of `charts/shoal` creates from the image
//! `scripts/build-images.sh` built; BatchJobs run real worker pods of the
//! thumbnail image, which read from moto (S3) and ElasticMQ (SQS)
//! listening on the node's address.
//!
//! One test, its scenarios in order on one node (starting a node takes a
//! minute): the chart's operator becomes Ready; an S3 job of a few hundred
//! images succeeds with every thumbnail once, scales to zero and is
//! deleted by its TTL; a scale-down mid-work drains the pods the kubelet
//! stops; a scale-in removes idle workers and keeps busy ones; a worker pod force-deleted and the operator pod deleted in the
//! middle of a fan-out lose nothing; an SQS-source job scales 0 -> N -> 0;
//! worker pods that cannot start (no such image, a crashing handler) show
//! in the job's status and Events; a job placed by its template (node
//! selector, toleration, labels) and configured from ConfigMaps (a mounted
//! AWS config file, `envFrom`) runs where and as its template says. The node is torn down at the end and
//! the machine checked to be as it was.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is how a test reports failure"
)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::Value;
use shoal_tests::node::bed::{Bed, Edit, LIMIT, TAG};
use shoal_tests::node::watch::{PodWatch, in_flight_by_pod};
use shoal_tests::node::{Node, image_archives, with_node};
use shoal_tests::sqs::create_queues;
use shoal_tests::stack::tiny_jpeg;
use shoal_tests::wait_until;

#[path = "real_node/pod_forms.rs"]
mod pod_forms;

use pod_forms::{
    a_lambda_functions_image_runs_behind_the_host_in_real_pods,
    templated_job_runs_where_and_as_its_template_says,
    the_python_thumbnail_function_runs_as_real_pods,
};

#[test]
fn batchjobs_run_as_real_pods_on_a_real_node() {
    // What a killed earlier run left goes first: the machine's state is
    // recorded after it.
    for problem in shoal_tests::node::clean_stale() {
        eprintln!("an earlier node: {problem}");
    }
    shoal_tests::node::netns::remove_stale();
    let before = shoal_tests::node::host::HostState::record();
    let had_run_netns = std::path::Path::new("/run/netns").exists();
    let problems = with_node(image_archives(), |node, runtime| {
        runtime.block_on(scenarios(node));
    });
    assert!(problems.is_empty(), "teardown: {problems:#?}");
    assert_eq!(
        before,
        shoal_tests::node::host::HostState::record(),
        "the machine is as it was"
    );
    assert_eq!(std::path::Path::new("/run/netns").exists(), had_run_netns);
}

/// Waits until every item has its thumbnail under `out/<job>/` (keyed by
/// the item's key as its chunk names it), then checks there is exactly
/// one per item.
async fn expect_outputs(bed: &Bed<'_>, job: &str, items: &BTreeSet<String>) {
    let want: BTreeSet<String> = items.iter().map(|k| format!("out/{job}/{k}")).collect();
    let started = Instant::now();
    loop {
        let got = bed.outputs(job).await;
        if got.len() >= want.len() {
            assert_eq!(got, want, "one thumbnail per image, no more, no less");
            return;
        }
        assert!(
            started.elapsed() < LIMIT,
            "{} of {} thumbnails\n{}",
            got.len(),
            want.len(),
            bed.context()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn scenarios(node: &Node) {
    let bed = Bed::start(node);
    println!(
        "node up:\n{}",
        bed.plane().kubectl(&["get", "nodes", "-o", "wide"])
    );
    install_the_chart(&bed);
    s3_job_succeeds_and_scales_to_zero(&bed).await;
    scale_down_mid_work_drains(&bed).await;
    scale_in_removes_idle_workers_first(&bed).await;
    operator_and_worker_pod_deleted_mid_run(&bed).await;
    sqs_source_scales_from_zero_and_back(&bed).await;
    pods_that_cannot_start_are_reported(&bed).await;
    templated_job_runs_where_and_as_its_template_says(&bed).await;
    a_lambda_functions_image_runs_behind_the_host_in_real_pods(&bed).await;
    the_python_thumbnail_function_runs_as_real_pods(&bed).await;
}

/// `helm install` of the chart with the operator image built here: the pod
/// becomes Ready under the chart's security context and reaches the API
/// server through the `kubernetes` Service.
fn install_the_chart(bed: &Bed<'_>) {
    bed.install_operator();
    let plane = bed.plane();
    let pod: Value = serde_json::from_str(&plane.kubectl(&[
        "-n",
        "shoal-system",
        "get",
        "pods",
        "-l",
        "app.kubernetes.io/name=shoal",
        "-o",
        "json",
    ]))
    .unwrap();
    let pod = &pod["items"][0];
    assert_eq!(pod["status"]["phase"], "Running", "{pod}");
    let container = &pod["spec"]["containers"][0];
    let security = &container["securityContext"];
    assert_eq!(security["readOnlyRootFilesystem"], true, "{container}");
    assert_eq!(security["runAsNonRoot"], true, "{container}");
    assert_eq!(security["allowPrivilegeEscalation"], false, "{container}");
    assert_eq!(
        container["image"],
        format!("shoal-operator:{TAG}"),
        "the image built here"
    );
    // It reached the API server through the Service (Ready means its
    // watches run), logged no error, and serves its metrics on the pod's
    // address.
    let logs = plane.kubectl(&["-n", "shoal-system", "logs", "deployment/shoal"]);
    assert!(!logs.contains(r#""level":"ERROR""#), "{logs}");
    let ip = pod["status"]["podIP"].as_str().unwrap();
    let (status, metrics) = shoal_tests::prom::http_get(&format!("http://{ip}:8080/metrics"));
    assert_eq!(status, 200, "{metrics}");
    assert!(
        metrics.contains("shoal_operator_reconcile_duration_seconds"),
        "{metrics}"
    );
    println!(
        "{}",
        plane.kubectl(&["-n", "shoal-system", "get", "deploy,pods", "-o", "wide"])
    );
}

/// The seed story as real pods: a few hundred images in S3, a BatchJob,
/// worker pods scheduled and Ready, one thumbnail per image, Succeeded,
/// its usage recorded (worker-seconds of real pods, REPORT figures),
/// scaled to zero, deleted by its TTL. Its images (`in/`) stay for the
/// SQS scenario.
async fn s3_job_succeeds_and_scales_to_zero(bed: &Bed<'_>) {
    let photos = bed.upload_photos("in/", 300, &tiny_jpeg()).await;
    let job = bed
        .s3_job(
            "thumbs",
            "in/",
            "    concurrency: 2\n",
            "    maxWorkers: 3\n    targetBacklogPerWorker: 5\n    scaleDownDelaySeconds: 2\n",
        )
        .edit("output:", "ttlSecondsAfterFinished: 20\n  output:");
    let applied = std::time::Instant::now();
    bed.apply(&job);
    wait_until(
        LIMIT,
        "a Ready worker pod",
        || (!bed.ready_pods("thumbs").is_empty()).then_some(()),
        || bed.context(),
    );
    println!(
        "{}",
        bed.plane()
            .kubectl(&["get", "bj,deploy,pods", "-o", "wide"])
    );
    expect_outputs(bed, "thumbs", &photos).await;
    bed.wait_phase("thumbs", "Succeeded");
    let counts = bed.plane().jsonpath(
        &["bj", "thumbs"],
        "{.status.chunks.total} {.status.chunks.succeeded} {.status.chunks.deadLettered}",
    );
    assert_eq!(counts, "30 30 0", "300 images in chunks of 10");
    // What it used, for `kubectl shoal cost`: ready pods for some of that
    // time (never more than the 3 it may have for as long as it ran), and
    // every image billed as Lambda would have.
    let usage = bed.plane().jsonpath(
        &["bj", "thumbs"],
        "{.status.usage.workerSeconds} {.status.usage.invocations} {.status.usage.gbSeconds}",
    );
    let figures: Vec<f64> = usage
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(f64::NAN))
        .collect();
    assert_eq!(figures.len(), 3, "{usage}");
    let most = applied.elapsed().as_secs_f64() * 3.0;
    assert!(
        figures[0] > 0.0 && figures[0] <= most,
        "{usage}, at most {most}"
    );
    assert!(figures[1] >= 300.0 && figures[2] > 0.0, "{usage}");
    println!(
        "{}",
        bed.plane()
            .kubectl(&["get", "bj,deploy,pods", "-o", "wide"])
    );
    wait_until(
        LIMIT,
        "no worker pods left",
        || (bed.pod_count("thumbs") == 0).then_some(()),
        || bed.context(),
    );
    wait_until(
        LIMIT,
        "the job deleted by its TTL",
        || {
            bed.plane()
                .jsonpath(&["bj", "thumbs"], "{.metadata.name}")
                .is_empty()
                .then_some(())
        },
        || bed.context(),
    );
}

/// Slow items (2400x1800 images made into 2000 px thumbnails under a CPU
/// limit of 145 millicores: 256 MiB, as Lambda sizes CPU) on four
/// workers; the job is then capped at one worker, so the kubelet stops
/// three pods with items in flight. Each drains: its container exits 0
/// within the grace period. Back at four workers, every image still gets
/// exactly one thumbnail, none dead-lettered.
async fn scale_down_mid_work_drains(bed: &Bed<'_>) {
    let photos = bed.upload_photos("big/", 100, &big_jpeg()).await;
    let scaling = |max: u32| {
        format!(
            "    maxWorkers: {max}\n    targetBacklogPerWorker: 1\n    scaleDownDelaySeconds: 1\n"
        )
    };
    let job = bed
        .s3_job(
            "drain",
            "big/",
            "    memoryMiB: 256\n    concurrency: 1\n",
            &scaling(4),
        )
        .edit(
            "prefix: big/\n",
            "prefix: big/\n      maxItemsPerChunk: 1\n",
        )
        .edit(
            "    env:\n",
            "    env:\n      - name: THUMBNAIL_MAX_EDGE\n        value: \"2000\"\n",
        );
    bed.apply(&job);
    let watch = PodWatch::start(bed.plane(), "drain");
    wait_until(
        LIMIT,
        "four Ready workers",
        || (bed.ready_pods("drain").len() == 4).then_some(()),
        || bed.context(),
    );
    let before: BTreeSet<String> = bed.ready_pods("drain").into_iter().collect();
    bed.apply(&job.edit(&scaling(4), &scaling(1)));
    let done = bed.outputs("drain").await.len();
    println!("capped at one worker with {done} of 100 thumbnails made");
    assert!(done < 100, "the scale-down came after the work was done");
    wait_until(
        LIMIT,
        "one worker left",
        || (bed.pod_count("drain") == 1).then_some(()),
        || bed.context(),
    );
    let kept: BTreeSet<String> = bed.pods("drain").into_iter().collect();
    let stopped: Vec<&String> = before.difference(&kept).collect();
    assert_eq!(stopped.len(), 3, "{before:?} -> {kept:?}");
    for pod in stopped {
        let exit = watch.last_exit(pod);
        assert_eq!(
            exit,
            Some(0),
            "pod {pod} drained and exited 0 on the kubelet's SIGTERM\n{}",
            watch.text()
        );
    }
    // The rest on four workers again: one worker at 145 millicores would
    // take minutes over what is left, longer still on a busy machine.
    bed.apply(&job);
    expect_outputs(bed, "drain", &photos).await;
    bed.wait_phase("drain", "Succeeded");
    assert_eq!(
        bed.plane()
            .jsonpath(&["bj", "drain"], "{.status.chunks.deadLettered}"),
        "0"
    );
    bed.plane()
        .kubectl(&["delete", "bj", "drain", "--wait=true"]);
}

/// Idle-first scale-in: four workers, two chunks of slow images, so two
/// workers hold a message and two hold none; the job is then capped at two
/// workers. The operator writes each worker's in-flight count as its pod
/// deletion cost before lowering the replicas, so the ReplicaSet removes
/// the two idle pods and the busy ones keep their chunks (left to chance,
/// both idle pods go one time in six).
async fn scale_in_removes_idle_workers_first(bed: &Bed<'_>) {
    let photos = bed.upload_photos("idle/", 50, &big_jpeg()).await;
    let scaling = |n: u32| format!("    minWorkers: {n}\n    maxWorkers: {n}\n");
    let job = bed
        .s3_job(
            "idle",
            "idle/",
            "    memoryMiB: 256\n    concurrency: 1\n",
            &scaling(4),
        )
        .edit("timeoutSeconds: 20\n", "timeoutSeconds: 600\n")
        .edit(
            "prefix: idle/\n",
            "prefix: idle/\n      maxItemsPerChunk: 25\n",
        )
        // One message held per worker (they prefetch ten by default): the
        // two chunks go to two workers.
        .edit(
            "    env:\n",
            "    env:\n      - name: THUMBNAIL_MAX_EDGE\n        value: \"2000\"\n      - name: SHOAL_MAX_MESSAGES_IN_FLIGHT\n        value: \"1\"\n",
        );
    bed.apply(&job);
    let busy = wait_until(
        LIMIT,
        "four Ready workers, two of them holding a chunk",
        || {
            if bed.ready_pods("idle").len() != 4 {
                return None;
            }
            let counts = in_flight_by_pod(bed, "idle");
            let busy: BTreeSet<String> = counts
                .iter()
                .filter(|(_, n)| **n > 0)
                .map(|(pod, _)| pod.clone())
                .collect();
            (counts.len() == 4 && busy.len() == 2).then_some(busy)
        },
        || bed.context(),
    );
    // `kubectl shoal logs`: the last lines of each of the four pods, as
    // JSON lines naming their pod.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kubectl-shoal-e2e"))
        .args(["logs", "idle", "--tail", "5", "-o", "json"])
        .env("KUBECONFIG", bed.plane().kubeconfig())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lines_by_pod: BTreeMap<String, usize> = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let line: Value = serde_json::from_str(line).unwrap();
        *lines_by_pod
            .entry(line["pod"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    let pods: BTreeSet<String> = bed.pods("idle").into_iter().collect();
    assert_eq!(
        lines_by_pod.keys().cloned().collect::<BTreeSet<_>>(),
        pods,
        "a log line of every pod"
    );
    assert!(
        lines_by_pod.values().all(|n| (1..=5).contains(n)),
        "{lines_by_pod:?}"
    );
    bed.apply(&job.edit(&scaling(4), &scaling(2)));
    wait_until(
        LIMIT,
        "two workers left",
        || (bed.pod_count("idle") == 2).then_some(()),
        || bed.context(),
    );
    let kept: BTreeSet<String> = bed.pods("idle").into_iter().collect();
    assert_eq!(kept, busy, "the idle workers went, the busy ones stayed");
    for pod in &kept {
        assert_eq!(
            bed.plane().jsonpath(
                &["pod", pod],
                r#"{.metadata.annotations.controller\.kubernetes\.io/pod-deletion-cost}"#
            ),
            "1",
            "{pod}: its deletion cost is the one message it holds"
        );
    }
    expect_outputs(bed, "idle", &photos).await;
    bed.wait_phase("idle", "Succeeded");
    bed.plane()
        .kubectl(&["delete", "bj", "idle", "--wait=true"]);
}

/// The operator pod deleted while it fans 1,500 images out one per chunk,
/// and a worker pod force-deleted while it runs items: the job still
/// succeeds, with one thumbnail per image.
async fn operator_and_worker_pod_deleted_mid_run(bed: &Bed<'_>) {
    let photos = bed.upload_photos("many/", 1500, &tiny_jpeg()).await;
    let job = bed
        .s3_job(
            "many",
            "many/",
            "    concurrency: 2\n",
            "    maxWorkers: 3\n    targetBacklogPerWorker: 50\n    scaleDownDelaySeconds: 2\n",
        )
        .edit(
            "prefix: many/\n",
            "prefix: many/\n      maxItemsPerChunk: 1\n",
        );
    bed.apply(&job);
    let plane = bed.plane();
    let mid_split = wait_until(
        LIMIT,
        "the fan-out under way",
        || {
            let s = plane.jsonpath(
                &["bj", "many"],
                "{.status.split.done} {.status.split.chunks}",
            );
            let mut parts = s.split_whitespace();
            let done = parts.next()?;
            let chunks: i64 = parts.next()?.parse().ok()?;
            (chunks >= 50).then(|| (done.to_owned(), chunks))
        },
        || bed.context(),
    );
    assert_eq!(
        mid_split.0, "false",
        "the fan-out must still be running when the operator pod is deleted (it had sent {} chunks)",
        mid_split.1
    );
    plane.kubectl(&[
        "-n",
        "shoal-system",
        "delete",
        "pod",
        "-l",
        "app.kubernetes.io/name=shoal",
        "--grace-period=0",
        "--force",
    ]);
    println!("operator pod deleted after {} chunks", mid_split.1);
    let victim = wait_until(
        LIMIT,
        "a Ready worker of the job",
        || bed.ready_pods("many").into_iter().next(),
        || bed.context(),
    );
    plane.kubectl(&["delete", "pod", &victim, "--grace-period=0", "--force"]);
    println!("worker pod {victim} force-deleted");
    expect_outputs(bed, "many", &photos).await;
    bed.wait_phase("many", "Succeeded");
    assert_eq!(
        plane.jsonpath(
            &["bj", "many"],
            "{.status.chunks.total} {.status.chunks.deadLettered}"
        ),
        "1500 0",
        "every chunk enqueued once, none dead-lettered"
    );
    plane.kubectl(&["delete", "bj", "many", "--wait=true"]);
}

/// A job consuming an existing SQS queue: messages arrive, worker pods go
/// from zero to several, every message is processed, and they go back to
/// zero.
async fn sqs_source_scales_from_zero_and_back(bed: &Bed<'_>) {
    let queues = create_queues(&bed.stack.sqs, "uploads", 30, 3).await;
    let job = bed.sqs_job(
        "uploads",
        &queues.url,
        "in/",
        "    concurrency: 1\n",
        "    minWorkers: 0\n    maxWorkers: 3\n    targetBacklogPerWorker: 5\n    scaleDownDelaySeconds: 20\n",
    );
    bed.apply(&job);
    wait_until(
        LIMIT,
        "no workers while the queue is empty",
        || (bed.replicas("uploads") == Some(0)).then_some(()),
        || bed.context(),
    );
    let photos: Vec<String> = (0..40).map(|n| format!("p{n:05}.jpg")).collect();
    let bodies: Vec<String> = photos
        .chunks(2)
        .map(shoal_tests::stack::chunk_body)
        .collect();
    // Twenty messages over a target of five a worker: the operator asks
    // for three pods at once; they stay for the 20 s scale-down delay
    // after the backlog is gone, so each becomes Ready however fast the
    // first one empties the queue.
    let watch = PodWatch::start(bed.plane(), "uploads");
    shoal_tests::sqs::send_all(&bed.stack.sqs, &queues.url, &bodies).await;
    let most = wait_until(
        LIMIT,
        "workers for the backlog",
        || {
            let ready = watch.ever_ready().len();
            (ready >= 2).then_some(ready)
        },
        || format!("{}\n{}", bed.context(), watch.text()),
    );
    println!("{most} worker pods Ready for 20 messages");
    expect_outputs(bed, "uploads", &photos.into_iter().collect()).await;
    wait_until(
        LIMIT,
        "back to zero workers",
        || (bed.replicas("uploads") == Some(0) && bed.pod_count("uploads") == 0).then_some(()),
        || bed.context(),
    );
    assert_eq!(
        bed.phase("uploads"),
        "Running",
        "an SQS source runs until deleted"
    );
    bed.plane()
        .kubectl(&["delete", "bj", "uploads", "--wait=true"]);
}

/// An image that does not exist, and a handler that exits at once: the
/// job's `WorkersHealthy` condition and a Warning Event say why, instead
/// of a job that waits silently.
async fn pods_that_cannot_start_are_reported(bed: &Bed<'_>) {
    bed.upload_photos("few/", 4, &tiny_jpeg()).await;
    let missing = bed
        .s3_job("noimage", "few/", "", "    maxWorkers: 1\n")
        .edit(
            &format!("shoal-thumbnail:{TAG}"),
            &format!("shoal-no-such-image:{TAG}"),
        );
    bed.apply(&missing);
    let crashing = bed.s3_job(
        "crashing",
        "few/",
        "    args: [\"--no-such-flag\"]\n",
        "    maxWorkers: 1\n",
    );
    bed.apply(&crashing);
    for (job, reasons) in [
        ("noimage", &["ErrImagePull", "ImagePullBackOff"][..]),
        ("crashing", &["CrashLoopBackOff"][..]),
    ] {
        let (reason, message) = wait_until(
            LIMIT,
            &format!("{job}: WorkersHealthy False"),
            || {
                let s = bed.plane().jsonpath(
                    &["bj", job],
                    r#"{.status.conditions[?(@.type=="WorkersHealthy")].status}|{.status.conditions[?(@.type=="WorkersHealthy")].reason}|{.status.conditions[?(@.type=="WorkersHealthy")].message}"#,
                );
                let mut parts = s.splitn(3, '|');
                let (status, reason, message) = (parts.next()?, parts.next()?, parts.next()?);
                (status == "False" && reasons.contains(&reason))
                    .then(|| (reason.to_owned(), message.to_owned()))
            },
            || bed.context(),
        );
        println!("{job}: {reason}: {message}");
        let events = bed.plane().kubectl(&[
            "get",
            "events",
            "--field-selector",
            &format!("involvedObject.name={job},reason=WorkersCannotRun"),
            "-o",
            "jsonpath={.items[*].note}{.items[*].message}",
        ]);
        assert!(events.contains("cannot run"), "{job}: Event: {events:?}");
        if job == "crashing" {
            assert!(message.contains("last exit"), "{message}");
        } else {
            assert!(message.contains("shoal-no-such-image"), "{message}");
        }
        bed.plane().kubectl(&["delete", "bj", job, "--wait=true"]);
    }
}

/// A 2400x1800 JPEG with detail (a slow item under a small CPU limit).
fn big_jpeg() -> Vec<u8> {
    let image = image::RgbImage::from_fn(2400, 1800, |x, y| {
        let v = (x ^ y).wrapping_mul(2654435761) >> 24;
        image::Rgb([(x % 256) as u8, (y % 256) as u8, v as u8])
    });
    let mut bytes = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 85)
        .encode_image(&image)
        .unwrap();
    bytes
}
