//! Shared steps of the operator tests: BatchJobs of the thumbnail handler,
//! an `uploads` BatchJob on an existing SQS queue, waiting on a job's
//! conditions, and reading what the operator wrote.

use serde_json::Value;

use crate::kube::ControlPlane;
use crate::process::Proc;
use crate::stack::Stack;

/// A BatchJob manifest: `apiVersion`, `kind`, `metadata.name: name`, then
/// `spec` (the spec's YAML lines, indented two spaces).
pub fn batchjob_yaml(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: shoal.dev/v1alpha1
kind: BatchJob
metadata:
  name: {name}
spec:
{spec}"
    )
}

/// Spec lines of the thumbnail handler fanning out `s3://photos/incoming/`
/// into `s3://photos/<output>`, with `extra` (more spec lines) between the
/// source and the output.
pub fn thumbnails_spec(extra: &str, output: &str) -> String {
    format!(
        "  handler:
    image: ghcr.io/shoal-dev/thumbnail:0.1.0
  source:
    s3:
      bucket: photos
      prefix: incoming/
{extra}  output:
    bucket: photos
    prefix: {output}
"
    )
}

/// Waits until BatchJob `name` has fanned out its whole source; returns
/// `"true <chunks> <items>"` from its split checkpoint.
pub fn split_done(
    plane: &ControlPlane,
    name: &str,
    limit: std::time::Duration,
    log: impl Fn() -> String,
) -> String {
    crate::wait_until(
        limit,
        "fan-out done",
        || {
            let s = plane.jsonpath(
                &["bj", name],
                "{.status.split.done} {.status.split.chunks} {.status.split.items}",
            );
            s.starts_with("true").then_some(s)
        },
        log,
    )
}

/// The operator binary `binary` as a process against `plane` (its
/// kubeconfig added to `env`), serving metrics on a free loopback port;
/// returns the process and the metrics address. Its log is
/// `operator.log` in the plane's folder.
pub fn spawn(
    binary: &str,
    plane: &ControlPlane,
    mut env: Vec<(&'static str, String)>,
) -> (crate::process::Proc, String) {
    env.push((
        "KUBECONFIG",
        plane.kubeconfig().to_string_lossy().into_owned(),
    ));
    let metrics = format!("127.0.0.1:{}", crate::free_port());
    let operator = crate::process::Proc::spawn(
        binary,
        &["run", "--metrics-addr", &metrics],
        &env,
        &plane.dir().join("operator.log"),
    );
    (operator, metrics)
}

/// Waits until BatchJob `name` shows `want` as `"<phase> <reason of its
/// first condition>"` (`"Pending QueueNotOwned"`).
pub fn wait_for_state(
    plane: &ControlPlane,
    name: &str,
    want: &str,
    limit: std::time::Duration,
    log: impl Fn() -> String,
) {
    crate::wait_until(
        limit,
        &format!("BatchJob {name} {want}"),
        || {
            let state = plane.jsonpath(
                &["bj", name],
                "{.status.phase} {.status.conditions[0].reason}",
            );
            (state == want).then_some(())
        },
        log,
    );
}

/// Waits until the namespace holds an Event of each of `reasons` (about
/// object `about` when given) and returns every Event's reason, spaced. The
/// operator writes Events beside its reconciles, so one may land just
/// after the status that caused it.
pub fn wait_for_events(plane: &ControlPlane, about: Option<&str>, reasons: &[&str]) -> String {
    let selector = about.map(|name| format!("involvedObject.name={name}"));
    let mut args = vec!["get", "events", "-o", "jsonpath={.items[*].reason}"];
    if let Some(selector) = &selector {
        args.extend(["--field-selector", selector.as_str()]);
    }
    let mut last = String::new();
    crate::wait_until(
        std::time::Duration::from_secs(30),
        &format!("Events {reasons:?}"),
        || {
            last = plane.kubectl(&args);
            let seen: Vec<&str> = last.split(' ').collect();
            reasons
                .iter()
                .all(|r| seen.contains(r))
                .then(|| last.clone())
        },
        || plane.kubectl(&["get", "events", "-o", "wide"]),
    )
}

/// Replicas of Deployment `name`, if it exists.
pub fn replicas(plane: &ControlPlane, name: &str) -> Option<i64> {
    plane
        .jsonpath(&["deployment", name], "{.spec.replicas}")
        .trim()
        .parse()
        .ok()
}

/// Creates SQS queue `name`; returns its URL.
pub async fn create_queue(sqs: &aws_sdk_sqs::Client, name: &str) -> String {
    sqs.create_queue()
        .queue_name(name)
        .send()
        .await
        .unwrap_or_else(|e| panic!("create queue {name}: {e:?}"))
        .queue_url
        .unwrap_or_else(|| panic!("create queue {name}: no URL"))
}

/// Applies BatchJob `uploads` consuming the queue at `url`, with
/// `handler_extra` and `scaling` (YAML lines, indented for their blocks).
pub fn apply_sqs_job(plane: &ControlPlane, url: &str, handler_extra: &str, scaling: &str) {
    let job = format!(
        "apiVersion: shoal.dev/v1alpha1
kind: BatchJob
metadata:
  name: uploads
spec:
  handler:
    image: ghcr.io/shoal-dev/thumbnail:0.1.0
{handler_extra}  source:
    sqs:
      queueUrl: {url}
  scaling:
{scaling}"
    );
    plane.apply_yaml(&job);
}

/// A control plane with the CRD, moto for SQS, queue `uploads`, and the
/// `uploads` BatchJob on it (see [`apply_sqs_job`]).
pub struct SqsJob {
    /// The API server.
    pub plane: ControlPlane,
    /// The SQS server.
    pub moto: crate::moto::Moto,
    /// A client of it.
    pub sqs: aws_sdk_sqs::Client,
    /// The queue's URL.
    pub url: String,
}

impl SqsJob {
    /// Starts everything and applies the BatchJob.
    pub async fn start(handler_extra: &str, scaling: &str) -> Self {
        let plane = ControlPlane::start();
        plane.install_crds();
        let moto = crate::moto::Moto::start();
        let sqs = moto.sqs();
        let url = create_queue(&sqs, "uploads").await;
        apply_sqs_job(&plane, &url, handler_extra, scaling);
        Self {
            plane,
            moto,
            sqs,
            url,
        }
    }
}

/// Sends `count` small messages to the queue at `url`.
pub async fn send_messages(sqs: &aws_sdk_sqs::Client, url: &str, count: usize) {
    for n in 0..count {
        sqs.send_message()
            .queue_url(url)
            .message_body(format!("{{\"key\": \"photo-{n}.jpg\"}}"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("send to {url}: {e:?}"));
    }
}

/// A BatchJob `name` making thumbnails of `s3://photos/<name>/` into
/// `s3://photos/out/<name>/` with `handler` (a program path), one delivery
/// per chunk of two, one worker, `extra` spec lines appended.
pub fn thumbnail_job(stack: &Stack, handler: &str, name: &str, extra: &str) -> String {
    let env = stack.env_yaml();
    batchjob_yaml(
        name,
        &format!(
            "  handler:
    image: ghcr.io/shoal-dev/thumbnail:0.1.0
    command: [\"{handler}\"]
    timeoutSeconds: 30
    env:
{env}      - name: SHOAL_WAIT_TIME
        value: \"1\"
  source:
    s3:
      bucket: photos
      prefix: {name}/
      maxItemsPerChunk: 2
  scaling:
    maxWorkers: 1
  output:
    bucket: photos
    prefix: out/{name}/
{extra}"
        ),
    )
}

/// `kubectl wait --for=condition=<condition> --timeout=<seconds>s
/// bj/<name>`, in the background.
pub fn kubectl_wait(plane: &ControlPlane, name: &str, condition: &str, seconds: u32) -> Proc {
    plane.kubectl_spawn(
        &[
            "wait",
            &format!("--for=condition={condition}"),
            &format!("--timeout={seconds}s"),
            &format!("bj/{name}"),
        ],
        &format!("wait-{name}-{condition}"),
    )
}

/// `"<status> <reason>"` of condition `type_` of BatchJob `name`; empty
/// while it is absent.
pub fn condition(plane: &ControlPlane, name: &str, type_: &str) -> String {
    plane
        .jsonpath(
            &["bj", name],
            &format!(
                "{{.status.conditions[?(@.type==\"{type_}\")].status}} {{.status.conditions[?(@.type==\"{type_}\")].reason}}"
            ),
        )
        .trim()
        .to_owned()
}

/// The body of `s3://photos/<key>`.
pub async fn object(s3: &aws_sdk_s3::Client, key: &str) -> Vec<u8> {
    object_in(s3, "photos", key).await
}

/// The body of `s3://<bucket>/<key>`.
pub async fn object_in(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Vec<u8> {
    let got = s3.get_object().bucket(bucket).key(key).send().await;
    let got = got.unwrap_or_else(|e| panic!("s3://{bucket}/{key}: {e:?}"));
    let body = got.body.collect().await;
    body.unwrap_or_else(|e| panic!("s3://{bucket}/{key}: {e}"))
        .to_vec()
}

/// Lines of a JSON Lines object, each parsed.
fn json_lines(key: &str, text: &[u8]) -> Vec<Value> {
    text.split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|line| serde_json::from_slice(line).unwrap_or_else(|e| panic!("a line of {key}: {e}")))
        .collect()
}

/// The results manifest under `prefix` in bucket photos, and the lines of
/// its SUCCEEDED and FAILED shards, read through the files it lists (each
/// file's size and item count checked against the manifest).
pub async fn report(s3: &aws_sdk_s3::Client, prefix: &str) -> (Value, Vec<Value>, Vec<Value>) {
    let key = format!("{prefix}_shoal/manifest.json");
    let manifest: Value =
        serde_json::from_slice(&object(s3, &key).await).unwrap_or_else(|e| panic!("{key}: {e}"));
    let read = |status: &'static str| {
        let files = manifest["results"][status]["files"].as_array().cloned();
        let files = files.unwrap_or_else(|| panic!("{key}: no results.{status}.files"));
        async move {
            let mut lines = Vec::new();
            for file in files {
                let shard = file["key"].as_str().unwrap_or_default();
                let text = object(s3, shard).await;
                assert_eq!(file["size"], text.len(), "{shard}: size");
                let got = json_lines(shard, &text);
                assert_eq!(file["items"], got.len(), "{shard}: items");
                lines.extend(got);
            }
            lines
        }
    };
    let succeeded = read("succeeded").await;
    let failed = read("failed").await;
    for (status, lines) in [("succeeded", &succeeded), ("failed", &failed)] {
        assert_eq!(
            manifest["results"][status]["items"],
            lines.len(),
            "{key}: {status}"
        );
    }
    (manifest, succeeded, failed)
}

/// Creates Secret `rabbitmq` holding `rabbit`'s URL under `url`.
pub fn rabbitmq_secret(plane: &ControlPlane, rabbit: &crate::rabbitmq::Rabbit) {
    plane.kubectl(&[
        "create",
        "secret",
        "generic",
        "rabbitmq",
        &format!("--from-literal=url={}", rabbit.uri()),
    ]);
}
