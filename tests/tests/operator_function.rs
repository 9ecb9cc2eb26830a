//! A BatchJob whose handler is an existing Lambda function
//! (`handler.function`): `examples/python-lambda/app.py`, unchanged, run
//! by AWS's `awslambdaric` over an S3 prefix the operator fans out, against
//! a real kube-apiserver, with S3 on moto and SQS on ElasticMQ.
//!
//! There is no kubelet: the test does what the pod would. It runs the init
//! container's command (`shoal-host install`, with this build's host) and
//! starts the worker container's command from the copy, with the pod
//! template's arguments and environment.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is how a test reports failure"
)]

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use shoal_tests::kube::ControlPlane;
use shoal_tests::process::Proc;
use shoal_tests::stack::{Stack, corrupt_jpeg, keys, tiny_jpeg, upload};
use shoal_tests::{free_port, operator, pods, wait_until};

const OPERATOR: &str = env!("CARGO_BIN_EXE_shoal-operator-e2e");
const HOST: &str = env!("CARGO_BIN_EXE_shoal-host-e2e");
const HOST_IMAGE: &str = "registry.local/shoal-host:e2e";

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_lambda_functions_image_makes_thumbnails_from_a_batchjob() {
    let python = std::env::var("SHOAL_LAMBDA_PYTHON").unwrap_or_else(|_| {
        panic!("SHOAL_LAMBDA_PYTHON is not set: source scripts/install-test-deps.sh")
    });
    let task_root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/python-lambda");
    let plane = ControlPlane::start();
    plane.install_crds();
    let stack = Stack::start();
    let good: Vec<String> = (0..4).map(|n| format!("lambda/photo {n}.jpg")).collect();
    upload(&stack.s3, "photos", &good, &tiny_jpeg()).await;
    upload(
        &stack.s3,
        "photos",
        &["lambda/broken.jpg".to_owned()],
        &corrupt_jpeg(),
    )
    .await;
    stack
        .s3
        .create_bucket()
        .bucket("thumbs")
        .send()
        .await
        .unwrap();

    let env = stack.env_yaml();
    let task_root = task_root.to_string_lossy();
    let job = operator::batchjob_yaml(
        "lambda-thumbs",
        &format!(
            "  handler:
    image: 123456789012.dkr.ecr.us-east-1.amazonaws.com/thumbnails:1
    timeoutSeconds: 60
    memoryMiB: 512
    function:
      command: [\"{python}\", \"-m\", \"awslambdaric\"]
      handler: app.handler
      initTimeoutSeconds: 60
    env:
{env}      - name: SHOAL_WAIT_TIME
        value: \"1\"
      - name: THUMBNAIL_BUCKET
        value: thumbs
      - name: LAMBDA_TASK_ROOT
        value: \"{task_root}\"
  source:
    s3:
      bucket: photos
      prefix: lambda/
      maxItemsPerChunk: 2
  queue:
    maxReceiveCount: 2
  failurePolicy:
    maxFailedChunks: 1
  scaling:
    maxWorkers: 1
  output:
    bucket: photos
    prefix: out/lambda/
"
        ),
    );
    plane.apply_yaml(&job);
    let mut operator_env = stack.env();
    operator_env.push(("SHOAL_OPERATOR_HOST_IMAGE", HOST_IMAGE.to_owned()));
    let (operator, _metrics) = operator::spawn(OPERATOR, &plane, operator_env);
    let log = || operator.log_text();
    let limit = Duration::from_secs(120);
    assert_eq!(
        operator::split_done(&plane, "lambda-thumbs", limit, log),
        "true 3 5"
    );
    wait_until(
        limit,
        "workers wanted",
        || (operator::replicas(&plane, "lambda-thumbs-workers")? > 0).then_some(()),
        log,
    );

    // The pod: the host copied in by an init container, then run with the
    // function's command as its handler, in the function's image.
    let json = plane.kubectl(&["get", "deployment", "lambda-thumbs-workers", "-o", "json"]);
    let deployment: Value = serde_json::from_str(&json).unwrap();
    let pod = &deployment["spec"]["template"]["spec"];
    let init = &pod["initContainers"][0];
    assert_eq!(init["image"], HOST_IMAGE);
    let install = strings(&init["command"]);
    assert_eq!(
        install,
        [
            "/usr/local/bin/shoal-host",
            "install",
            "/opt/shoal/shoal-host"
        ]
    );
    let worker = &pod["containers"][0];
    assert_eq!(
        worker["image"],
        "123456789012.dkr.ecr.us-east-1.amazonaws.com/thumbnails:1"
    );
    assert_eq!(strings(&worker["command"]), ["/opt/shoal/shoal-host"]);
    let args = strings(&worker["args"]);
    assert_eq!(
        args,
        ["worker", "--", &python, "-m", "awslambdaric", "app.handler"]
    );
    assert_eq!(init["securityContext"], worker["securityContext"]);
    assert_eq!(worker["securityContext"]["runAsNonRoot"], true);

    // What the kubelet would run: the init container's command (with this
    // build's host in place of the host image's), then the worker's.
    let opt = tempfile::tempdir().unwrap();
    let installed = opt.path().join("shoal-host");
    let status = std::process::Command::new(HOST)
        .args(["install", &installed.to_string_lossy()])
        .status()
        .unwrap();
    assert!(status.success(), "shoal-host install: {status}");
    let mut env: Vec<(String, String)> = pods::template_env(&plane, &deployment)
        .into_iter()
        .filter(|(k, _)| k != "SHOAL_METRICS_ADDR")
        .collect();
    env.push((
        "SHOAL_METRICS_ADDR".into(),
        format!("127.0.0.1:{}", free_port()),
    ));
    let env: Vec<(&str, String)> = env.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let worker = Proc::spawn(
        &installed.to_string_lossy(),
        &args,
        &env,
        &plane.dir().join("lambda-thumbs-worker.log"),
    );

    operator::wait_for_state(
        &plane,
        "lambda-thumbs",
        "Succeeded Succeeded",
        limit,
        || format!("{}\n--- worker ---\n{}", log(), worker.log_text()),
    );
    let made = keys(&stack.s3, "thumbs", "").await;
    for key in &good {
        assert!(made.contains(key), "{key}: {made:?}\n{}", worker.log_text());
    }
    let thumbnail = operator::object_in(&stack.s3, "thumbs", &good[0]).await;
    let image = image::load_from_memory(&thumbnail).unwrap();
    assert_eq!(image.width().max(image.height()), 256);

    // The file Pillow cannot read: dead-lettered with the function's own
    // error type and message as its reason.
    let failure = plane.jsonpath(
        &["bj", "lambda-thumbs"],
        "{.status.failures[0].item} {.status.failures[0].reason}",
    );
    assert!(
        failure.starts_with("lambda/broken.jpg UnidentifiedImageError: cannot identify image file"),
        "{failure}"
    );
    let worker_log = worker.log_text();
    let reports = worker_log.matches("REPORT RequestId: ").count();
    assert!(
        reports >= 6,
        "one invocation per object and attempt: {reports}"
    );
    assert_eq!(
        worker_log.matches("Init Duration: ").count(),
        1,
        "one warm environment"
    );
    pods::stop_workers(vec![worker]);
}
