//! A [`Node`] with S3 and SQS on its address and shoal's operator
//! installed by its Helm chart: what the real-node test and benchmark
//! share. BatchJobs run the images `scripts/build-images.sh` builds, tagged
//! with the workspace version.

use std::collections::BTreeSet;
use std::time::Duration;

use super::{NODE_IP, Node};
use crate::kube::ControlPlane;
use crate::stack::{Stack, keys, upload};
use crate::wait_until;

/// Tag of the images built here (the workspace version).
pub const TAG: &str = env!("CARGO_PKG_VERSION");

/// How long any one step may take on a loaded machine.
pub const LIMIT: Duration = Duration::from_secs(300);

/// Edits of a BatchJob's YAML that must take: an edit whose text is not
/// there would silently test another job.
pub trait Edit {
    /// `self` with every `from` replaced by `to`; panics when there is none.
    fn edit(&self, from: &str, to: &str) -> String;
}

impl Edit for str {
    fn edit(&self, from: &str, to: &str) -> String {
        assert!(self.contains(from), "{from:?} is not in:\n{self}");
        self.replace(from, to)
    }
}

/// The label selector of `job`'s worker pods.
pub fn selector(job: &str) -> String {
    format!("{}={job}", shoal_operator::workload::JOB_LABEL)
}

/// The node, its S3/SQS servers, and helpers to drive BatchJobs.
pub struct Bed<'a> {
    /// The node.
    pub node: &'a Node,
    /// ElasticMQ and moto, bound to the node's address.
    pub stack: Stack,
}

impl<'a> Bed<'a> {
    /// Starts S3 and SQS servers on the node's address (must run inside
    /// its network namespace).
    pub fn start(node: &'a Node) -> Self {
        Self {
            node,
            stack: Stack::start_at(NODE_IP),
        }
    }

    /// The node's API server.
    pub fn plane(&self) -> &ControlPlane {
        self.node.plane()
    }

    /// `handler.env` lines of a BatchJob: the node's S3 and SQS servers,
    /// short receive waits.
    pub fn env_yaml(&self) -> String {
        let mut env = self.stack.env_yaml();
        env.push_str("      - name: SHOAL_WAIT_TIME\n        value: \"1\"\n");
        env
    }

    /// The node's logs, the BatchJobs and pods, and the Events: the context
    /// of a failure.
    pub fn context(&self) -> String {
        let kubectl = |args: &[&str]| {
            String::from_utf8_lossy(&self.plane().kubectl_output(args).stdout).into_owned()
        };
        format!(
            "{}\n--- bj, pods\n{}\n--- events\n{}",
            self.node.logs(),
            kubectl(&["get", "bj,pods", "-A", "-o", "wide"]),
            kubectl(&["get", "events", "-A", "--sort-by=.lastTimestamp"])
        )
    }

    /// `helm install` of `charts/shoal` as release `shoal` in
    /// `shoal-system`, with the operator image built here and the node's
    /// S3 and SQS servers in its environment; waits until it is Ready.
    pub fn install_operator(&self) {
        let plane = self.plane();
        let values = plane.dir().join("values.yaml");
        let mut env = String::new();
        // The region is the chart's own value (`aws.region`).
        for (name, value) in self
            .stack
            .env()
            .into_iter()
            .filter(|(n, _)| *n != "AWS_REGION")
        {
            env.push_str(&format!("  - name: {name}\n    value: \"{value}\"\n"));
        }
        std::fs::write(
            &values,
            format!(
                "image:\n  repository: shoal-operator\n  tag: \"{TAG}\"\n  pullPolicy: IfNotPresent\n\
                 hostImage:\n  repository: shoal-host\n  tag: \"{TAG}\"\n\
                 aws:\n  region: us-east-1\nextraEnv:\n{env}"
            ),
        )
        .unwrap_or_else(|e| panic!("write {}: {e}", values.display()));
        let chart = crate::helm::chart();
        crate::helm::helm(
            &plane.dir().join("helm"),
            Some(plane.kubeconfig()),
            &[
                "install",
                "shoal",
                &chart.to_string_lossy(),
                "--namespace",
                "shoal-system",
                "--create-namespace",
                "--values",
                &values.to_string_lossy(),
                "--wait",
                "--timeout",
                "240s",
            ],
        );
    }

    /// Phase of BatchJob `job` (empty when it does not exist).
    pub fn phase(&self, job: &str) -> String {
        self.plane().jsonpath(&["bj", job], "{.status.phase}")
    }

    /// Waits until BatchJob `job` is in `phase`; fails at once, with the
    /// job's status (its dead letters' reasons), if it finishes otherwise.
    pub fn wait_phase(&self, job: &str, phase: &str) {
        let finished = wait_until(
            LIMIT,
            &format!("batchjob {job} {phase}"),
            || {
                let now = self.phase(job);
                (now == phase || now == "Succeeded" || now == "Failed").then_some(now)
            },
            || self.context(),
        );
        assert_eq!(
            finished,
            phase,
            "batchjob {job} finished {finished}, not {phase}; its status:\n{}\n{}",
            self.plane()
                .kubectl(&["get", "bj", job, "-o", "jsonpath={.status}"]),
            self.context()
        );
    }

    /// Replicas the worker Deployment of `job` asks for.
    pub fn replicas(&self, job: &str) -> Option<i64> {
        crate::operator::replicas(self.plane(), &format!("{job}-workers"))
    }

    /// Names of `job`'s worker pods that are Ready.
    pub fn ready_pods(&self, job: &str) -> Vec<String> {
        let out = self.plane().jsonpath(
            &["pods", "-l", &selector(job)],
            r#"{range .items[*]}{.metadata.name} {.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}"#,
        );
        out.lines()
            .filter_map(|l| l.strip_suffix(" True").map(str::to_owned))
            .collect()
    }

    /// Names of `job`'s worker pods, Ready or not, terminating included.
    pub fn pods(&self, job: &str) -> Vec<String> {
        self.plane()
            .jsonpath(&["pods", "-l", &selector(job)], "{.items[*].metadata.name}")
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    }

    /// How many worker pods `job` has, Ready or not, terminating included.
    pub fn pod_count(&self, job: &str) -> usize {
        self.pods(job).len()
    }

    /// `kubectl apply` of `yaml`.
    pub fn apply(&self, yaml: &str) {
        self.plane().apply_yaml(yaml);
    }

    /// A BatchJob over `s3://photos/<prefix>` writing to
    /// `s3://photos/out/<name>/`, with `extra` handler lines and `scaling`
    /// lines (both indented for their blocks).
    pub fn s3_job(&self, name: &str, prefix: &str, extra: &str, scaling: &str) -> String {
        format!(
            "apiVersion: shoal.dev/v1alpha1
kind: BatchJob
metadata:
  name: {name}
spec:
  handler:
    image: shoal-thumbnail:{TAG}
    timeoutSeconds: 20
{extra}    env:
{env}  source:
    s3:
      bucket: photos
      prefix: {prefix}
  scaling:
{scaling}  output:
    bucket: photos
    prefix: out/{name}/
",
            env = self.env_yaml()
        )
    }

    /// A BatchJob consuming the SQS queue at `url`, whose messages name
    /// images under `s3://photos/<input>`, writing to
    /// `s3://photos/out/<name>/`, with `extra` handler lines and `scaling`
    /// lines (both indented for their blocks).
    pub fn sqs_job(
        &self,
        name: &str,
        url: &str,
        input: &str,
        extra: &str,
        scaling: &str,
    ) -> String {
        format!(
            "apiVersion: shoal.dev/v1alpha1
kind: BatchJob
metadata:
  name: {name}
spec:
  handler:
    image: shoal-thumbnail:{TAG}
{extra}    env:
{env}      - name: SHOAL_INPUT
        value: s3://photos/{input}
      - name: SHOAL_OUTPUT
        value: s3://photos/out/{name}/
  source:
    sqs:
      queueUrl: {url}
  scaling:
{scaling}",
            env = self.env_yaml()
        )
    }

    /// Uploads `count` copies of `body` as `photos/<prefix>pNNNNN.jpg`;
    /// returns their keys.
    pub async fn upload_photos(&self, prefix: &str, count: usize, body: &[u8]) -> BTreeSet<String> {
        let keys: Vec<String> = (0..count).map(|n| format!("{prefix}p{n:05}.jpg")).collect();
        upload(&self.stack.s3, "photos", &keys, body).await;
        keys.into_iter().collect()
    }

    /// The thumbnails under `out/<job>/` (the results manifest left out).
    pub async fn outputs(&self, job: &str) -> BTreeSet<String> {
        keys(&self.stack.s3, "photos", &format!("out/{job}/"))
            .await
            .into_iter()
            .filter(|k| !k.contains("/_shoal/"))
            .collect()
    }
}
