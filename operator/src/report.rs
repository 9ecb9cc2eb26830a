//! The failure report of a finished fan-out job: what became of every
//! item, written as Step Functions' ResultWriter writes a Distributed Map's
//! results: sharded `SUCCEEDED_<n>.jsonl` and `FAILED_<n>.jsonl` files under
//! `<output prefix>_shoal/results/`, pointed at by the small results
//! manifest ([`crate::manifest`]).
//!
//! Contract:
//! - Built from the parts the workers wrote ([`shoal_protocol::results`]):
//!   read one listing page and one part at a time, in key order, merged
//!   one chunk at a time, and written one shard at a time. Memory is bounded
//!   by [`SHARD_BYTES`] per shard kind, a listing page, one part (at most
//!   [`MAX_PART_BYTES`]) and one chunk's items, however many items the job
//!   has.
//! - One line per item, grouped by chunk (in digest order), by item key
//!   within a chunk: `item`, `chunk`, `status`,
//!   `attempts`, and `output` (succeeded) or `cause`, `category` and
//!   `reason` (failed). An item redriven and then succeeded is succeeded,
//!   its attempts summed.
//! - Rewritten whole at each finish (a redriven job finishes again): shards
//!   of an earlier finish past the new count are deleted, so the manifest's
//!   list and the folder agree. Idempotent: writing it twice writes the
//!   same shards.
//! - The parts' usage lines are summed into [`Report::usage`]: the
//!   Lambda-equivalent figures of every attempt (see
//!   [`shoal_protocol::results::Usage`]).
//! - Forged input is counted, never fatal: a part over the size limit or a
//!   line that is not a record counts in `unreadable`.

use aws_sdk_s3::primitives::ByteStream;
use serde::Serialize;
use shoal_protocol::results::{self, ItemRecord, Merger, Status, Usage};
use tokio::io::AsyncReadExt;

use crate::crd::OutputSpec;
use crate::error::{Error, Result};
use crate::manifest::{self, FOLDER};
use crate::s3::S3;

/// A shard is written once it holds this many bytes.
pub const SHARD_BYTES: usize = 4 << 20;
/// Bytes a record may take past a full shard (an item key of 1 KiB, a
/// reason of 2 KiB and the rest).
const RECORD_ROOM: usize = 8 << 10;
/// Failed items kept for the status (`kubectl shoal describe`); the rest
/// are in the shards.
pub const SAMPLE: usize = 5;
/// Largest part read; a bigger one is not a worker's.
pub const MAX_PART_BYTES: i64 = 32 << 20;

/// One shard file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ShardFile {
    /// Its key in the output bucket.
    pub key: String,
    /// Its size in bytes.
    pub size: u64,
    /// Items (lines) in it.
    pub items: u64,
}

/// The shards of one status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Shards {
    /// Items in all of them.
    pub items: u64,
    /// The files, in order.
    pub files: Vec<ShardFile>,
}

/// What the report holds, for the manifest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// Items that succeeded.
    pub succeeded: Shards,
    /// Items that were dead-lettered (and not redriven to success).
    pub failed: Shards,
    /// Items enqueued that are in neither (still queued when a job failed
    /// early, its workers stopped); set by the manifest from the counts.
    pub pending: u64,
    /// Parts merged.
    pub parts: u64,
    /// Parts too large and lines that were not records (forged input).
    pub unreadable: u64,
    /// The first failed items (at most [`SAMPLE`]), for the job's status.
    #[serde(skip)]
    pub sample: Vec<ItemRecord>,
    /// What every attempt of the job's workers used, as Lambda would have
    /// billed it: the sum of their REPORT lines.
    pub usage: Usage,
}

/// The folder of the report under `prefix`.
pub fn folder(prefix: &str) -> String {
    format!("{}{FOLDER}results/", manifest::folder(prefix))
}

/// Key of shard `index` of `status` under `prefix`.
pub fn shard_key(prefix: &str, status: Status, index: usize) -> String {
    format!("{}{}_{index}.jsonl", folder(prefix), status.as_str())
}

/// The index of a shard key of `status` under `prefix`, if it is one.
fn shard_index(prefix: &str, status: Status, key: &str) -> Option<usize> {
    key.strip_prefix(&folder(prefix))?
        .strip_prefix(status.as_str())?
        .strip_prefix('_')?
        .strip_suffix(".jsonl")?
        .parse()
        .ok()
}

/// Shards of one status being written.
struct Writer {
    status: Status,
    buffer: Vec<u8>,
    lines: u64,
    shards: Shards,
}

impl Writer {
    fn new(status: Status) -> Self {
        Self {
            status,
            buffer: Vec::new(),
            lines: 0,
            shards: Shards::default(),
        }
    }

    /// Adds a record; returns a full shard's (key, body, lines) to write.
    fn push(&mut self, prefix: &str, record: &ItemRecord) -> Option<(String, Vec<u8>, u64)> {
        if self.buffer.capacity() == 0 {
            // Room for a full shard and the record that fills it: no
            // doubling past the shard size.
            self.buffer.reserve(SHARD_BYTES + RECORD_ROOM);
        }
        if serde_json::to_writer(&mut self.buffer, record).is_ok() {
            self.buffer.push(b'\n');
            self.lines += 1;
        }
        (self.buffer.len() >= SHARD_BYTES).then(|| self.take(prefix))
    }

    /// The shard being filled, to write.
    fn take(&mut self, prefix: &str) -> (String, Vec<u8>, u64) {
        let key = shard_key(prefix, self.status, self.shards.files.len());
        let lines = std::mem::take(&mut self.lines);
        (key, std::mem::take(&mut self.buffer), lines)
    }

    fn written(&mut self, key: String, size: usize, lines: u64) {
        self.shards.items += lines;
        self.shards.files.push(ShardFile {
            key,
            size: u64::try_from(size).unwrap_or(u64::MAX),
            items: lines,
        });
    }
}

/// The two writers and the S3 client they write with.
struct Sink<'a> {
    s3: &'a S3,
    output: &'a OutputSpec,
    succeeded: Writer,
    failed: Writer,
    sample: Vec<ItemRecord>,
}

impl Sink<'_> {
    async fn add(&mut self, records: Vec<ItemRecord>) -> Result<()> {
        for record in records {
            if record.status == Status::Failed && self.sample.len() < SAMPLE {
                self.sample.push(record.clone());
            }
            let writer = match record.status {
                Status::Succeeded => &mut self.succeeded,
                Status::Failed => &mut self.failed,
            };
            if let Some((key, body, lines)) = writer.push(&self.output.prefix, &record) {
                let size = body.len();
                self.s3.put(&self.output.bucket, &key, body).await?;
                writer.written(key, size, lines);
            }
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<()> {
        for writer in [&mut self.succeeded, &mut self.failed] {
            if writer.lines > 0 {
                let (key, body, lines) = writer.take(&self.output.prefix);
                let size = body.len();
                self.s3.put(&self.output.bucket, &key, body).await?;
                writer.written(key, size, lines);
            }
        }
        Ok(())
    }
}

/// Merges the parts the workers of run `run` (the job's uid) wrote under
/// `output` into the report's shards; returns what it wrote.
pub async fn write(s3: &S3, output: &OutputSpec, run: &str) -> Result<Report> {
    let parts_prefix = format!(
        "{}{}",
        manifest::folder(&output.prefix),
        results::run_folder(run)
    );
    let mut sink = Sink {
        s3,
        output,
        succeeded: Writer::new(Status::Succeeded),
        failed: Writer::new(Status::Failed),
        sample: Vec::new(),
    };
    let mut merger = Merger::new();
    let mut report = Report::default();
    let mut after: Option<String> = None;
    loop {
        let (objects, truncated) = s3
            .list_raw(&output.bucket, &parts_prefix, after.as_deref())
            .await?;
        after = objects.last().map(|(key, _)| key.clone()).or(after);
        for (key, size) in objects {
            let Some(group) = results::group_of(&key) else {
                report.unreadable += 1;
                continue;
            };
            if size > MAX_PART_BYTES {
                tracing::warn!(bucket = %output.bucket, key = %key, size, "result part too large to be a worker's; left out of the report");
                report.unreadable += 1;
                continue;
            }
            let Some(body) = s3.get(&output.bucket, &key, MAX_PART_BYTES).await? else {
                // Replaced by a larger object since it was listed.
                report.unreadable += 1;
                continue;
            };
            let part = results::decode(&body);
            report.parts += 1;
            report.unreadable += u64::try_from(part.bad).unwrap_or(u64::MAX);
            report.usage.add(&part.usage);
            let done = merger.add(group, part.records);
            sink.add(done).await?;
        }
        if !truncated {
            break;
        }
    }
    sink.add(merger.finish()).await?;
    sink.flush().await?;
    for writer in [&sink.succeeded, &sink.failed] {
        remove_stale(s3, output, writer.status, writer.shards.files.len()).await?;
    }
    report.succeeded = sink.succeeded.shards;
    report.failed = sink.failed.shards;
    report.sample = sink.sample;
    Ok(report)
}

/// Deletes shards of `status` numbered `count` or more (left by an earlier
/// finish with more of them).
async fn remove_stale(s3: &S3, output: &OutputSpec, status: Status, count: usize) -> Result<()> {
    let prefix = format!("{}{}_", folder(&output.prefix), status.as_str());
    let mut after: Option<String> = None;
    loop {
        let (objects, truncated) = s3
            .list_raw(&output.bucket, &prefix, after.as_deref())
            .await?;
        after = objects.last().map(|(key, _)| key.clone()).or(after);
        for (key, _) in objects {
            if shard_index(&output.prefix, status, &key).is_some_and(|i| i >= count) {
                s3.delete(&output.bucket, &key).await?;
            }
        }
        if !truncated {
            return Ok(());
        }
    }
}

impl S3 {
    /// [`S3::list_keys`] of the output location.
    pub async fn list_raw(
        &self,
        bucket: &str,
        prefix: &str,
        after: Option<&str>,
    ) -> Result<(Vec<(String, i64)>, bool)> {
        self.list_keys(bucket, prefix, after)
            .await
            .map_err(|reason| Error::Output {
                location: format!("s3://{bucket}/{prefix}"),
                reason,
            })
    }

    /// The whole object at `s3://bucket/key`, or `None` if it is over
    /// `max` bytes (read no further).
    pub async fn get(&self, bucket: &str, key: &str, max: i64) -> Result<Option<Vec<u8>>> {
        let location = || format!("s3://{bucket}/{key}");
        let answer = self
            .client
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| Error::Output {
                location: location(),
                reason: aws_sdk_s3::error::DisplayErrorContext(e).to_string(),
            })?;
        if answer.content_length().is_some_and(|n| n > max) {
            return Ok(None);
        }
        let limit = u64::try_from(max).unwrap_or(0).saturating_add(1);
        let mut body = Vec::new();
        answer
            .body
            .into_async_read()
            .take(limit)
            .read_to_end(&mut body)
            .await
            .map_err(|e| Error::Output {
                location: location(),
                reason: e.to_string(),
            })?;
        Ok((u64::try_from(body.len()).unwrap_or(u64::MAX) < limit).then_some(body))
    }

    /// Stores a JSON Lines object.
    pub async fn put(&self, bucket: &str, key: &str, body: Vec<u8>) -> Result<()> {
        self.client
            .put_object()
            .bucket(bucket)
            .key(key)
            .content_type("application/x-ndjson")
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| Error::Output {
                location: format!("s3://{bucket}/{key}"),
                reason: aws_sdk_s3::error::DisplayErrorContext(e).to_string(),
            })?;
        Ok(())
    }

    /// Deletes `s3://bucket/key`.
    pub async fn delete(&self, bucket: &str, key: &str) -> Result<()> {
        self.client
            .delete_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| Error::Output {
                location: format!("s3://{bucket}/{key}"),
                reason: aws_sdk_s3::error::DisplayErrorContext(e).to_string(),
            })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_keys_sit_next_to_the_manifest_and_parse_back() {
        let key = shard_key("thumbs/", Status::Failed, 12);
        assert_eq!(key, "thumbs/_shoal/results/FAILED_12.jsonl");
        assert_eq!(shard_index("thumbs/", Status::Failed, &key), Some(12));
        assert_eq!(shard_index("thumbs/", Status::Succeeded, &key), None);
        assert_eq!(
            shard_index("thumbs/", Status::Failed, "thumbs/_shoal/results/parts/x"),
            None
        );
    }

    #[test]
    fn a_writer_cuts_shards_by_size_and_counts_lines() {
        let mut writer = Writer::new(Status::Succeeded);
        let record = ItemRecord {
            item: "k".repeat(1000),
            chunk: "c-1".into(),
            status: Status::Succeeded,
            attempts: 1,
            output: None,
            cause: None,
            category: None,
            reason: None,
        };
        let mut full = Vec::new();
        for _ in 0..(SHARD_BYTES / 1000 + 10) {
            if let Some(shard) = writer.push("p/", &record) {
                full.push(shard);
            }
        }
        assert_eq!(full.len(), 1);
        let (key, body, lines) = &full[0];
        assert_eq!(key, "p/_shoal/results/SUCCEEDED_0.jsonl");
        assert!(body.len() >= SHARD_BYTES && body.len() < SHARD_BYTES + 2000);
        assert_eq!(
            *lines,
            u64::try_from(body.iter().filter(|b| **b == b'\n').count()).unwrap()
        );
        assert!(writer.lines > 0, "the rest waits for the next shard");
    }
}
