//! The `BatchJob` custom resource (`shoal.dev/v1alpha1`): the single source
//! of its schema. `shoal-operator crd` prints the YAML generated from these
//! types; `crds/batchjob.yaml` is that output, checked in, and a test fails
//! if the two drift.
//!
//! Cross-field rules are CEL `x-kubernetes-validations` in the schema, so the
//! API server refuses a BatchJob that makes no sense when it is applied,
//! with the rule's message.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{EnvFromSource, EnvVar, VolumeMount};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

mod status;
mod template;

pub use status::{
    BatchJobStatus, ChunkCounts, FailedItem, InputLocation, Phase, RedriveStatus, SplitCheckpoint,
    UsageStatus,
};
pub use template::{WorkerMetadata, WorkerPodSpec, WorkerTemplate};

/// Lambda gives one vCPU per 1,769 MiB of memory; shoal does the same.
pub const MIB_PER_CPU: u32 = 1769;

/// A batch of work: a source fanned out into chunk messages on a queue,
/// consumed by a Deployment of handler workers scaled from the backlog.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "shoal.dev",
    version = "v1alpha1",
    kind = "BatchJob",
    namespaced,
    shortname = "bj",
    category = "shoal",
    status = "BatchJobStatus",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Done","type":"integer","jsonPath":".status.chunks.succeeded"}"#,
    printcolumn = r#"{"name":"Total","type":"integer","jsonPath":".status.chunks.total"}"#,
    printcolumn = r#"{"name":"Failed","type":"integer","jsonPath":".status.chunks.deadLettered"}"#,
    printcolumn = r#"{"name":"Workers","type":"integer","jsonPath":".status.readyWorkers"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Desired","type":"integer","priority":1,"jsonPath":".status.desiredWorkers"}"#,
    printcolumn = r#"{"name":"Suspended","type":"boolean","priority":1,"jsonPath":".spec.suspend"}"#,
    printcolumn = r#"{"name":"Queue","type":"string","priority":1,"jsonPath":".status.queueUrl"}"#,
    printcolumn = r#"{"name":"Message","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Ready\")].message"}"#,
    validation = Rule::new("self.metadata.name.size() <= 63").message("metadata.name must be at most 63 characters: it is a label value on the workers"),
    validation = Rule::new("!has(self.spec.queue) || !has(self.spec.queue.amqp) || has(self.spec.queue.name) || !self.metadata.name.matches('[.](dlq|dlx|retry[.][0-9]+s)$')").message("on RabbitMQ a job named like another job's dead-letter or retry queue (ending in .dlq, .dlx or .retry.<n>s) would share it: rename the job or set queue.name")
)]
#[x_kube(validation = Rule::new("!has(self.queue) || !has(self.queue.visibilityTimeoutSeconds) || !has(self.handler.timeoutSeconds) || self.queue.visibilityTimeoutSeconds >= self.handler.timeoutSeconds").message("queue.visibilityTimeoutSeconds must be at least handler.timeoutSeconds: a message would come back while its handler still runs"))]
#[x_kube(validation = Rule::new("!has(self.source.sqs) || !has(self.queue) || !has(self.queue.name)").message("source.sqs consumes an existing queue: leave queue.name unset"))]
#[x_kube(validation = Rule::new("has(self.queue) == has(oldSelf.queue) && (!has(self.queue) || self.queue == oldSelf.queue)").message("queue is immutable: create a new BatchJob"))]
#[x_kube(validation = Rule::new("!has(self.source.amqp) || !has(self.queue)").message("source.amqp consumes its own queue: leave queue unset"))]
#[x_kube(validation = Rule::new("!has(self.source.sqs) || !has(self.queue) || !has(self.queue.amqp)").message("source.sqs is an SQS queue: leave queue.amqp unset"))]
#[x_kube(validation = Rule::new("!has(self.queue) || !has(self.queue.deadLetterQueue) || has(self.queue.amqp) || has(self.source.sqs) || (has(self.queue.name) ? self.queue.name.endsWith('.fifo') : true) == self.queue.deadLetterQueue.endsWith('.fifo')").message("queue.deadLetterQueue must be FIFO (end in .fifo) exactly when the work queue is (the default work queue is FIFO)"))]
#[x_kube(validation = Rule::new("!has(self.handler.timeoutSeconds) || self.handler.timeoutSeconds <= 1700 || !(has(self.source.amqp) || (has(self.queue) && has(self.queue.amqp)))").message("on RabbitMQ handler.timeoutSeconds may be at most 1700: the broker closes a channel that holds a message longer than its consumer_timeout (30 min by default)"))]
#[x_kube(validation = Rule::new("!has(self.queue) || !has(self.queue.amqp) || !has(self.queue.deadLetterQueue)").message("queue.deadLetterQueue is for SQS: on RabbitMQ the dead-letter queue is <queue>.dlq"))]
#[x_kube(validation = Rule::new("!(has(self.source.s3) || has(self.source.batchJob)) || has(self.output)").message("an s3 or batchJob source needs an output: set output.bucket"))]
#[serde(rename_all = "camelCase")]
pub struct BatchJobSpec {
    /// The handler: image, command, resources, limits.
    pub handler: HandlerSpec,
    /// The worker pods' labels, annotations, scheduling, image pull
    /// secrets and volumes, merged into the Deployment the operator builds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<WorkerTemplate>,
    /// Where the work comes from (exactly one kind).
    #[x_kube(validation = Rule::new("self == oldSelf").message("source is immutable: create a new BatchJob"))]
    pub source: SourceSpec,
    /// The work queue and its dead-letter queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<QueueSpec>,
    /// How many workers run, from the backlog.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaling: Option<ScalingSpec>,
    /// How many failed chunks the job tolerates before it is Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_policy: Option<FailurePolicy>,
    /// Where outputs and the results manifest go.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<OutputSpec>,
    /// Seconds after Succeeded or Failed before the BatchJob (and what it
    /// owns) is deleted; kept forever when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub ttl_seconds_after_finished: Option<i64>,
    /// Pause the job: the fan-out stops where it is (its checkpoint kept),
    /// the workers are scaled to zero (each drains what it holds), queues
    /// and counts stay. Setting it back to false resumes from the
    /// checkpoint; no chunk is enqueued twice. A finished job ignores it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend: Option<bool>,
    /// Set to a new value to move the job's dead letters back to its work
    /// queue once, after a fix (`shoal-operator redrive NAME` adds one).
    /// The redrive is recorded in `status.redrive`; a finished job runs
    /// again to a new completion, and items that succeed leave the failed
    /// count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redrive: Option<i64>,
}

/// The handler container.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[x_kube(validation = Rule::new("!has(self.function) || !has(self.volumeMounts) || self.volumeMounts.all(m, m.mountPath != '/opt/shoal' && !m.mountPath.startsWith('/opt/shoal/'))").message("handler.volumeMounts: /opt/shoal holds the Lambda host in a handler.function pod: mount elsewhere"))]
#[x_kube(validation = Rule::new("!has(self.function) || (!has(self.command) && !has(self.args))").message("handler.function runs the function's own command behind shoal's host: leave handler.command and handler.args unset and use handler.function.command"))]
#[serde(rename_all = "camelCase")]
pub struct HandlerSpec {
    /// Container image holding the handler binary.
    #[schemars(length(min = 1))]
    #[x_kube(validation = Rule::new("!self.matches('[[:space:]]')").message("handler.image must not contain white space"))]
    pub image: String,
    /// Entrypoint override; the image's entrypoint when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// Arguments before the operator's own (`worker`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Extra environment for the handler; a variable the operator also
    /// sets (`SHOAL_*`) takes the value given here. Each name at most once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub env: Vec<EnvVar>,
    /// Environment from ConfigMaps and Secrets. A variable also set in
    /// `env`, or by the operator, takes that value (Kubernetes lets `env`
    /// win over `envFrom`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub env_from: Vec<EnvFromSource>,
    /// Mounts of `template.spec.volumes` into the handler's container.
    /// `/tmp` is the worker's own writable folder. A mount naming no
    /// volume is refused by the API server's dry run (`SpecInvalid`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    #[x_kube(validation = Rule::new("self.all(m, m.mountPath != '/tmp')").message("handler.volumeMounts: /tmp is the worker's own writable folder: mount elsewhere"))]
    pub volume_mounts: Vec<VolumeMount>,
    /// Extended resources each worker requests and is limited to, as
    /// whole counts (`nvidia.com/gpu: 1`). CPU and memory follow
    /// `memoryMiB`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 16))]
    #[x_kube(validation = Rule::new("self.all(k, k.contains('/') && !k.startsWith('kubernetes.io/') && !k.startsWith('requests.'))").message("handler.extendedResources names extended resources as domain/name (nvidia.com/gpu): cpu and memory follow handler.memoryMiB"))]
    #[x_kube(validation = Rule::new("self.all(k, self[k] >= 1 && self[k] <= 256)").message("handler.extendedResources: each count is from 1 to 256"))]
    pub extended_resources: BTreeMap<String, u32>,
    /// When the kubelet pulls `image`: `Always`, `IfNotPresent` or
    /// `Never`. Kubernetes' default when unset (`Always` for `:latest`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<PullPolicy>,
    /// Memory limit in MiB (Lambda's range); CPU follows at 1,769 MiB per
    /// CPU, as on Lambda. Default 1024.
    #[serde(default, rename = "memoryMiB", skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 128, max = 10240))]
    pub memory_mib: Option<u32>,
    /// Per-item timeout in seconds. Default 60. Up to 12 h (43,200 s,
    /// SQS's longest lease; the worker extends an item's lease while it
    /// runs), past Lambda's 900 s: a Kubernetes worker is not a Lambda
    /// function (the same binary deployed to Lambda is still cut at 900 s
    /// by Lambda). On RabbitMQ at most 1,700 s, within the broker's default
    /// `consumer_timeout` (1,800 s), past which it closes the worker's
    /// channel. A fan-out puts no more items in a chunk than one delivery
    /// can run within that lease.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 43200))]
    pub timeout_seconds: Option<u32>,
    /// Items one worker runs at once. Default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub concurrency: Option<u32>,
    /// Service account of the worker pods (e.g. bound to an IAM role).
    /// When unset the operator creates `<name>-workers`, with no role and
    /// no token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    /// `image` is an existing Lambda function's container image, run
    /// unchanged: an init container copies shoal's Runtime API host into a
    /// shared volume, and the worker container runs the host, which runs
    /// the function's command as its handler (see docs/lambda-functions.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<FunctionSpec>,
}

/// A Lambda function's image as the handler.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FunctionSpec {
    /// The function's command: the image's entrypoint and its arguments.
    /// Default `/lambda-entrypoint.sh`, the entrypoint of AWS's Lambda
    /// base images (the operator cannot read an image's configuration).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub command: Vec<String>,
    /// The function's handler (the image's `CMD`, e.g. `app.handler`):
    /// `_HANDLER`, and the command's last argument.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256), regex(pattern = r"^[^\s]+$"))]
    pub handler: Option<String>,
    /// SQS messages per event at most, as an event source mapping's
    /// batch size (1 to 10). Default 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10))]
    pub batch_size: Option<u32>,
    /// How long the function's init phase may take, in seconds. Default
    /// 10, as on Lambda.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 900))]
    pub init_timeout_seconds: Option<u32>,
    /// Image holding shoal's host at `/usr/local/bin/shoal-host`. Default:
    /// the operator's `--host-image`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub host_image: Option<String>,
}

/// When the kubelet pulls the handler's image.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum PullPolicy {
    /// On every pod start.
    Always,
    /// When the node does not hold it.
    IfNotPresent,
    /// Never: the node must hold it.
    Never,
}

impl PullPolicy {
    /// The name Kubernetes uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Always => "Always",
            Self::IfNotPresent => "IfNotPresent",
            Self::Never => "Never",
        }
    }
}

impl HandlerSpec {
    /// A handler running `image`, everything else at its default.
    pub fn image(image: impl Into<String>) -> Self {
        Self {
            image: image.into(),
            command: Vec::new(),
            args: Vec::new(),
            env: Vec::new(),
            env_from: Vec::new(),
            volume_mounts: Vec::new(),
            extended_resources: BTreeMap::new(),
            image_pull_policy: None,
            memory_mib: None,
            timeout_seconds: None,
            concurrency: None,
            service_account_name: None,
            function: None,
        }
    }
}

/// Where the work comes from: exactly one of the fields.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(has(self.sqs) ? 1 : 0) + (has(self.amqp) ? 1 : 0) + (has(self.s3) ? 1 : 0) + (has(self.batchJob) ? 1 : 0) == 1").message("source must name exactly one of sqs, amqp, s3 or batchJob"))]
pub struct SourceSpec {
    /// Consume an existing SQS queue (no fan-out; the job runs until
    /// deleted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sqs: Option<SqsSource>,
    /// Consume a RabbitMQ queue (declared when missing; no fan-out; the
    /// job runs until deleted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amqp: Option<AmqpSource>,
    /// Fan out every object under an S3 prefix into chunk messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Source>,
    /// Fan out the outputs of another BatchJob once it has succeeded
    /// (pipelines).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_job: Option<BatchJobSource>,
}

/// An existing SQS queue.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SqsSource {
    /// The queue's URL.
    #[schemars(length(max = 2048))]
    #[x_kube(validation = Rule::new("self.startsWith('https://') || self.startsWith('http://')").message("source.sqs.queueUrl must be a queue URL (http:// or https://)"))]
    pub queue_url: String,
}

/// A RabbitMQ broker. Its URL, which holds the password, stays in a Secret:
/// the operator reads it to publish chunks and count the backlog, and the
/// worker pods get it from the Secret through `secretKeyRef`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct AmqpConnection {
    /// Secret in the BatchJob's namespace holding the broker URL. The
    /// operator's RBAC must allow `get` on it (chart value
    /// `rbac.amqpSecrets`).
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: String,
    /// Key of the URL in the Secret:
    /// `amqp[s]://user:password@host[:port][/vhost]`. Default `url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Base URL of the broker's management API, where queue counts are
    /// read (with the broker URL's credentials). It must name the broker
    /// URL's host: the credentials are never sent elsewhere on a
    /// BatchJob's word. A management API on another host is named in the
    /// Secret, under the key `managementUrl`, which takes precedence.
    /// Default: `http://<broker host>:15672` (`https://…:15671` for
    /// `amqps`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.startsWith('https://') || self.startsWith('http://')").message("managementUrl must be an http:// or https:// URL"))]
    pub management_url: Option<String>,
}

impl AmqpConnection {
    /// The Secret key of the URL.
    pub fn key(&self) -> &str {
        self.key.as_deref().unwrap_or("url")
    }
}

/// An existing (or, when missing, declared) RabbitMQ queue.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct AmqpSource {
    /// The broker.
    pub connection: AmqpConnection,
    /// The queue's name.
    #[schemars(length(min = 1, max = 255))]
    pub queue: String,
}

/// An S3 prefix (or a list of keys in a bucket) to fan out.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.list) || self.prefix == ''").message("source.s3.list names the items: leave source.s3.prefix empty"))]
pub struct S3Source {
    /// Bucket name.
    #[schemars(length(max = 63))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$')").message("source.s3.bucket must be an S3 bucket name (3-63 lowercase letters, digits, dots, hyphens)"))]
    pub bucket: String,
    /// Key prefix; every object under it is one item. The whole bucket
    /// when empty.
    #[serde(default)]
    pub prefix: String,
    /// Items per chunk message (1-1000). Default 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_items_per_chunk: Option<u32>,
    /// Total object bytes per chunk; a larger object is a chunk alone.
    /// Default 64 MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_bytes_per_chunk: Option<i64>,
    /// Fan out the keys a list object names (in `bucket`) instead of a
    /// prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub list: Option<ItemList>,
}

/// A list object naming the items, one per line.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ItemList {
    /// Key of the list object (for `inventory`, of the inventory's
    /// `manifest.json`).
    #[schemars(length(min = 1, max = 1024))]
    pub key: String,
    /// Bucket holding the list object (for `inventory`, the inventory's
    /// destination bucket). Default `source.s3.bucket`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 3, max = 63))]
    pub bucket: Option<String>,
    /// `csv`: a header row, then one record per line; `jsonl`: one JSON
    /// object per line (or a JSON string, the key itself); `inventory`: an
    /// S3 Inventory report (CSV format) of `source.s3.bucket`, named by its
    /// `manifest.json`.
    pub format: ListFormat,
    /// The CSV column (by its header) or JSON field holding each item's
    /// key. Default `key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub key_field: Option<String>,
}

impl ItemList {
    /// The column or field holding the key.
    pub fn key_field(&self) -> &str {
        self.key_field.as_deref().unwrap_or("key")
    }
}

/// Format of an item list.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ListFormat {
    /// Comma-separated values with a header row.
    #[serde(rename = "csv")]
    Csv,
    /// JSON Lines.
    #[serde(rename = "jsonl")]
    JsonLines,
    /// An S3 Inventory manifest and its gzip CSV data files.
    #[serde(rename = "inventory")]
    Inventory,
}

/// Another BatchJob whose outputs are this job's input: once it has
/// Succeeded, every object under its output prefix (except its `_shoal/`
/// folder) is fanned out as if it were an S3 source.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct BatchJobSource {
    /// Name of the upstream BatchJob (same namespace).
    #[schemars(length(min = 1))]
    pub name: String,
    /// Items per chunk message (1-1000). Default 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_items_per_chunk: Option<u32>,
    /// Total object bytes per chunk; a larger object is a chunk alone.
    /// Default 64 MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_bytes_per_chunk: Option<i64>,
}

/// The work queue: created by the operator unless named. On SQS unless
/// `amqp` names a RabbitMQ broker.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct QueueSpec {
    /// Put the work queue on this RabbitMQ broker instead of SQS: the
    /// operator declares a quorum queue `queue.name` (default
    /// `shoal.<namespace>.<name>`) with its dead-letter exchange and queue,
    /// and publishes chunks to it with publisher confirms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amqp: Option<AmqpConnection>,
    /// Name of the work queue (created if missing). Default:
    /// `shoal-<namespace>-<name>.fifo`. A name ending in `.fifo` is a FIFO
    /// queue, which drops chunks sent twice (see docs/operator.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z0-9_-]{1,80}$') || self.matches('^[A-Za-z0-9_-]{1,75}[.]fifo$')").message("queue.name must be an SQS queue name (1-80 letters, digits, hyphens, underscores; FIFO names end in .fifo)"))]
    pub name: Option<String>,
    /// Deliveries of a message before it is dead-lettered (1-1000).
    /// Default 5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_receive_count: Option<u32>,
    /// Dead-letter queue name (created if missing); `<queue>-dlq` (created)
    /// when unset. FIFO when the work queue is: both names end in `.fifo`,
    /// or neither does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z0-9_-]{1,80}$') || self.matches('^[A-Za-z0-9_-]{1,75}[.]fifo$')").message("queue.deadLetterQueue must be an SQS queue name (1-80 letters, digits, hyphens, underscores; FIFO names end in .fifo)"))]
    pub dead_letter_queue: Option<String>,
    /// Visibility timeout of the queue in seconds (at least the handler's
    /// timeout). Default: 6x the handler timeout, at least 30.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 43200))]
    pub visibility_timeout_seconds: Option<u32>,
}

/// Worker count bounds and how fast it follows the backlog.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.minWorkers) || !has(self.maxWorkers) || self.minWorkers <= self.maxWorkers").message("scaling.minWorkers must not exceed scaling.maxWorkers"))]
pub struct ScalingSpec {
    /// Workers kept even with an empty queue (0 allowed). Default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1000))]
    pub min_workers: Option<i32>,
    /// Upper bound of workers. Default 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_workers: Option<i32>,
    /// Backlog (visible + in flight messages) one worker is meant to
    /// carry. Default: 10x the handler concurrency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub target_backlog_per_worker: Option<i32>,
    /// Seconds the backlog must stay lower before workers are removed.
    /// Default 30.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 86400))]
    pub scale_down_delay_seconds: Option<i32>,
    /// Most workers added or removed in one step. Default 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_step: Option<i32>,
}

/// The failure tolerance: the job is Failed once more chunks than this
/// are dead-lettered. No tolerance when unset.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct FailurePolicy {
    /// Dead-lettered chunks tolerated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub max_failed_chunks: Option<i64>,
    /// Dead-lettered chunks tolerated, in percent of all chunks (0-100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub max_failed_percent: Option<i32>,
}

/// Where outputs go.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct OutputSpec {
    /// Bucket name.
    #[schemars(length(max = 63))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$')").message("output.bucket must be an S3 bucket name (3-63 lowercase letters, digits, dots, hyphens)"))]
    pub bucket: String,
    /// Key prefix of outputs; the manifest is `<prefix>_shoal/manifest.json`.
    #[serde(default)]
    pub prefix: String,
}

/// The CRD as YAML, exactly what `crds/batchjob.yaml` holds.
pub fn crd_yaml() -> Result<String, serde_yaml::Error> {
    use kube::CustomResourceExt;
    let mut crd = serde_yaml::to_value(BatchJob::crd())?;
    sort_defaults(&mut crd);
    let yaml = serde_yaml::to_string(&crd)?;
    Ok(format!(
        "# Generated by `shoal-operator crd` from operator/src/crd.rs: do not edit.\n{yaml}"
    ))
}

/// `value` with the keys of every schema `default` in order. A default is
/// a JSON value whose key order follows serde_json's `preserve_order`
/// feature, which another crate in the same build may turn on: sorted, the
/// CRD is the same text whatever the build.
fn sort_defaults(value: &mut serde_yaml::Value) {
    fn sort_all(value: &mut serde_yaml::Value) {
        match value {
            serde_yaml::Value::Mapping(map) => {
                let mut entries: Vec<_> = std::mem::take(map).into_iter().collect();
                entries.sort_by(|a, b| a.0.as_str().cmp(&b.0.as_str()));
                for (key, mut item) in entries {
                    sort_all(&mut item);
                    map.insert(key, item);
                }
            }
            serde_yaml::Value::Sequence(items) => items.iter_mut().for_each(sort_all),
            _ => {}
        }
    }
    match value {
        serde_yaml::Value::Mapping(map) => {
            for (key, item) in map.iter_mut() {
                if key.as_str() == Some("default") {
                    sort_all(item);
                } else {
                    sort_defaults(item);
                }
            }
        }
        serde_yaml::Value::Sequence(items) => items.iter_mut().for_each(sort_defaults),
        _ => {}
    }
}
