//! The results manifest: `<output prefix>_shoal/manifest.json`, written
//! once when a fanned-out BatchJob (S3 or `batchJob` source) finishes,
//! before its status says Succeeded or Failed.
//!
//! Contract:
//! - It names the job (namespace, name, uid), its final phase, start and
//!   completion time, input and output locations, the dead-letter queue,
//!   chunk and item counts, and the failure report's shard files
//!   (`results`: succeeded and failed, each with its item count and files;
//!   see [`crate::report`]). It stays small however many items the job
//!   has: the items themselves, with their outputs or failure reasons, are
//!   in the shards.
//! - Written before the status records the finish, so a finished job
//!   always has one (`status.manifest` gives its URL); a failed write is
//!   retried by the next reconcile. A job that finishes again (redrive)
//!   gets both rewritten.
//! - Sources skip the `_shoal/` folder under their prefix, so a pipeline
//!   stage never takes its upstream's manifest or report for an input.

use serde::Serialize;

use crate::crd::{BatchJob, BatchJobStatus, ChunkCounts, OutputSpec, Phase, S3Source};
use crate::report::Report;

/// shoal's own folder under an output prefix.
pub const FOLDER: &str = "_shoal/";

/// `prefix` as a folder: with a trailing `/` unless empty, as workers
/// write under it (`out` and `out/` are the same output location).
pub fn folder(prefix: &str) -> String {
    if prefix.is_empty() || prefix.ends_with('/') {
        prefix.to_owned()
    } else {
        format!("{prefix}/")
    }
}

/// Key of the manifest for outputs under `prefix`.
pub fn key(prefix: &str) -> String {
    format!("{}{FOLDER}manifest.json", folder(prefix))
}

/// Whether `key`, listed under `prefix`, is in shoal's own folder.
pub fn is_shoal_key(prefix: &str, key: &str) -> bool {
    key.strip_prefix(&folder(prefix))
        .is_some_and(|rest| rest.starts_with(FOLDER))
}

/// The manifest document.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// `shoal.dev/v1alpha1`.
    pub api_version: &'static str,
    /// `BatchJobManifest`.
    pub kind: &'static str,
    /// Namespace of the BatchJob.
    pub namespace: String,
    /// Name of the BatchJob.
    pub name: String,
    /// Its uid (tells runs of same-named jobs apart).
    pub uid: String,
    /// Succeeded or Failed.
    pub phase: Phase,
    /// RFC 3339.
    pub start_time: Option<String>,
    /// RFC 3339.
    pub completion_time: Option<String>,
    /// `s3://bucket/prefix` read, or the list object for a list source.
    pub input: String,
    /// `s3://bucket/prefix` written.
    pub output: String,
    /// Where failed chunks are.
    pub dead_letter_queue_url: Option<String>,
    /// Chunk counts at the finish.
    pub chunks: ChunkCounts,
    /// Items enqueued.
    pub items: i64,
    /// The failure report: succeeded and failed items, sharded.
    pub results: Report,
}

/// The manifest of `job`, finished with `status`, having read `input` and
/// written `results` under `output`.
pub fn build(
    job: &BatchJob,
    status: &BatchJobStatus,
    input: &S3Source,
    output: &OutputSpec,
    mut results: Report,
) -> Manifest {
    let items = status.split.as_ref().map_or(0, |s| s.items);
    let settled = results.succeeded.items.saturating_add(results.failed.items);
    results.pending = u64::try_from(items).unwrap_or(0).saturating_sub(settled);
    Manifest {
        api_version: "shoal.dev/v1alpha1",
        kind: "BatchJobManifest",
        namespace: job.metadata.namespace.clone().unwrap_or_default(),
        name: job.metadata.name.clone().unwrap_or_default(),
        uid: job.metadata.uid.clone().unwrap_or_default(),
        phase: status.phase,
        start_time: status.start_time.as_ref().map(|t| t.0.to_string()),
        completion_time: status.completion_time.as_ref().map(|t| t.0.to_string()),
        input: match &input.list {
            Some(list) => format!("s3://{}/{}", input.bucket, list.key),
            None => format!("s3://{}/{}", input.bucket, input.prefix),
        },
        output: format!("s3://{}/{}", output.bucket, output.prefix),
        dead_letter_queue_url: status.dead_letter_queue_url.clone(),
        chunks: status.chunks.clone(),
        items,
        results,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_folder_right_under_the_prefix_is_shoals() {
        assert_eq!(key("thumbs/"), "thumbs/_shoal/manifest.json");
        assert!(is_shoal_key("thumbs/", "thumbs/_shoal/manifest.json"));
        assert!(!is_shoal_key("thumbs/", "thumbs/a/_shoal/x.jpg"));
        assert!(!is_shoal_key("thumbs/", "thumbs/_shoalish.jpg"));
        assert!(is_shoal_key("", "_shoal/manifest.json"));
        // Without the slash, the same folder (where workers write).
        assert_eq!(key("thumbs"), "thumbs/_shoal/manifest.json");
        assert!(is_shoal_key("thumbs", "thumbs/_shoal/results/x"));
    }
}
