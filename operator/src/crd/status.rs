//! `status` of a BatchJob: its phase, chunk counts, fan-out checkpoint,
//! redrive record and conditions, written by the operator alone
//! (server-side apply of the status subresource).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Lifecycle of a BatchJob.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
pub enum Phase {
    /// Accepted; queue and workers being set up.
    #[default]
    Pending,
    /// The source is being fanned out into chunks.
    Splitting,
    /// Every chunk is enqueued; workers are draining the queue.
    Running,
    /// Every chunk is accounted for within the failure tolerance.
    Succeeded,
    /// More chunks failed than tolerated, or the job cannot run.
    Failed,
}

impl Phase {
    /// Whether the job is over.
    pub fn is_finished(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed)
    }
}

/// Chunk counts.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct ChunkCounts {
    /// Chunks enqueued (the final total once splitting is done).
    pub total: i64,
    /// Chunks done.
    pub succeeded: i64,
    /// Chunks dead-lettered (failed for good).
    pub dead_lettered: i64,
    /// Chunks received by a worker and not settled yet.
    pub in_flight: i64,
    /// Chunks waiting in the queue.
    pub visible: i64,
}

/// A redrive: dead letters moved back to the work queue.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct RedriveStatus {
    /// The `spec.redrive` value it answers.
    pub round: i64,
    /// Dead letters moved back so far.
    pub moved: i64,
    /// Whether the dead-letter queue was found empty: the redrive is over.
    pub done: bool,
    /// When it was found empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
}

/// What a job's workers used, for its cost: on the cluster, seconds of
/// ready worker pods, counted as the job runs; on Lambda, what the same
/// attempts would have been billed (the sum of the workers' REPORT lines),
/// known once a fanned-out job with an output has finished (from its
/// failure report's parts).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct UsageStatus {
    /// Seconds of ready worker pods up to `countedUntil`.
    #[serde(default)]
    pub worker_seconds: f64,
    /// Ready worker pods since `countedUntil` (0 once the job finished):
    /// the seconds since then count this many times more.
    #[serde(default)]
    pub counted_workers: i32,
    /// Until when `workerSeconds` counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counted_until: Option<Time>,
    /// Attempts the workers ran (Lambda's requests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invocations: Option<i64>,
    /// Sum of their billed durations, in ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub billed_ms: Option<i64>,
    /// Sum of billed duration × memory size: Lambda's GB-seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gb_seconds: Option<f64>,
    /// Highest `Max Memory Used` of a worker, in MB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_memory_used_mb: Option<i64>,
}

/// A failed item, as the failure report has it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct FailedItem {
    /// The item (object key, or `<chunk>/<index>`).
    pub item: String,
    /// Attempts made.
    pub attempts: i64,
    /// `permanent` or `exhausted`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
    /// The error category.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// Why, cut to 256 bytes (the report has it whole).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Where fan-out stopped: resuming from here never enqueues a chunk twice.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct SplitCheckpoint {
    /// Last source key of the last enqueued chunk; listing resumes after
    /// it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_key: Option<String>,
    /// For a list source: byte offset in the list object after the last
    /// item of the last enqueued chunk; reading resumes there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub list_offset: Option<i64>,
    /// For a list source: the ETag of the list object the fan-out reads; a
    /// list replaced mid fan-out fails the job instead of being read at an
    /// offset of another file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub list_etag: Option<String>,
    /// For an inventory: the data file being read (by index in its
    /// manifest); `listOffset` is then a byte offset in its decompressed
    /// text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub list_file: Option<i64>,
    /// Chunks enqueued so far (the next chunk's index).
    pub chunks: i64,
    /// Items enqueued so far.
    pub items: i64,
    /// Whether the whole source is enqueued.
    pub done: bool,
}

/// An S3 bucket and prefix.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct InputLocation {
    /// Bucket name.
    pub bucket: String,
    /// Key prefix.
    pub prefix: String,
}

/// Observed state, written by the operator only.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct BatchJobStatus {
    /// Lifecycle phase.
    #[serde(default)]
    pub phase: Phase,
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The work queue's URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_url: Option<String>,
    /// The dead-letter queue's URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter_queue_url: Option<String>,
    /// Fan-out progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split: Option<SplitCheckpoint>,
    /// Chunk counts.
    #[serde(default)]
    pub chunks: ChunkCounts,
    /// Workers the operator asks for.
    #[serde(default)]
    pub desired_workers: i32,
    /// Workers ready.
    #[serde(default)]
    pub ready_workers: i32,
    /// Since when the backlog has wanted fewer workers (scale-down delay).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_down_since: Option<Time>,
    /// When the job started running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// Since when the queues have looked drained, while the operator waits
    /// for counts that may lag (RabbitMQ's management statistics) to
    /// confirm it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drained_since: Option<Time>,
    /// When the job succeeded or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// The upstream output a `batchJob` source reads, fixed when its
    /// fan-out starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<InputLocation>,
    /// The last redrive asked for in `spec.redrive`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redrive: Option<RedriveStatus>,
    /// What the workers used (see `kubectl shoal cost`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<UsageStatus>,
    /// The first failed items of the failure report (at most 5), once
    /// written; the manifest points at all of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<FailedItem>,
    /// `s3://` URL of the results manifest, once written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<String>,
    /// One per type: `Ready` (the job's state, with why when it is not
    /// running), `WorkersHealthy` (whether its worker pods can run), and,
    /// as Kubernetes Jobs have them, `Complete` and `Failed` (True once the
    /// job has finished that way) and `Suspended` (True while
    /// `spec.suspend` holds, False once resumed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}
