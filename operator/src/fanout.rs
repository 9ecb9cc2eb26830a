//! The fan-out step of a BatchJob with an S3 source: list, cut, send,
//! checkpoint.
//!
//! Contract: chunks are sent in batches of at most 10 and 256 KiB (one
//! `SendMessageBatch` on SQS, publishes confirmed together on RabbitMQ;
//! see [`split::batches`]), and after each
//! batch the checkpoint (last key of the last chunk sent, chunks and items
//! so far) is written to the BatchJob's status. A restarted operator resumes
//! after the checkpoint and cuts exactly the chunks it would have cut (see
//! [`crate::split`]), so everything before the checkpoint is enqueued once.
//! The one batch in flight when an operator dies — sent, not yet
//! checkpointed — is sent again with the same chunk ids; the FIFO queues
//! the operator creates drop those copies (deduplication id = chunk id, for
//! five minutes), so each chunk is enqueued once. On a standard queue or
//! on RabbitMQ (which has no deduplication) the copies stay, and at most
//! those 10 chunks are processed twice (outputs are keyed by input:
//! duplicates cost work, never correctness).

use crate::crd::{ListFormat, S3Source, SplitCheckpoint};
use crate::error::Result;
use crate::inventory;
use crate::s3::S3;
use crate::split::{self, Limits, Listed};

/// Default bytes per chunk: 64 MiB.
pub const DEFAULT_MAX_BYTES: i64 = 64 << 20;
/// Default objects per chunk.
pub const DEFAULT_MAX_ITEMS: u32 = 10;
/// Items read from a list object per step.
pub const LIST_PAGE: usize = 1000;

/// Chunk limits of `source`, with defaults.
pub fn limits(source: &S3Source) -> Limits {
    Limits {
        max_items: usize::try_from(source.max_items_per_chunk.unwrap_or(DEFAULT_MAX_ITEMS))
            .unwrap_or(1),
        max_bytes: source.max_bytes_per_chunk.unwrap_or(DEFAULT_MAX_BYTES),
    }
}

/// Enqueues the next listing page's chunks with `send` (given up to 10
/// `(chunk id, body)` pairs; it returns once the queue has taken all of
/// them); calls `checkpoint` after every batch sent (and once more when the
/// source is exhausted) with the progress to persist. Returns the progress.
pub async fn step<S, SFut, F, Fut>(
    s3: &S3,
    source: &S3Source,
    from: SplitCheckpoint,
    mut send: S,
    mut checkpoint: F,
) -> Result<SplitCheckpoint>
where
    S: FnMut(Vec<(String, String)>) -> SFut,
    SFut: std::future::Future<Output = Result<()>>,
    F: FnMut(SplitCheckpoint) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let limits = limits(source);
    let mut progress = from;
    // A list object: one page from the checkpoint's offset, each item with
    // the offset after its line.
    let mut ends: Option<Vec<i64>> = None;
    // An inventory's data file that ends with this page: the next page
    // reads the next file.
    let mut next_file: Option<i64> = None;
    let (chunks, last) = if let Some(list) = &source.list {
        let list_bucket = list.bucket.as_deref().unwrap_or(&source.bucket);
        let offset = progress.list_offset.unwrap_or(0);
        let etag = progress.list_etag.as_deref();
        let page = if list.format == ListFormat::Inventory {
            let file = usize::try_from(progress.list_file.unwrap_or(0)).unwrap_or(0);
            let at = (file, u64::try_from(offset).unwrap_or(0), etag);
            let buckets = (list_bucket, source.bucket.as_str());
            s3.read_inventory(buckets, list, at, inventory::PAGE)
                .await?
        } else {
            s3.read_list(list_bucket, list, (offset, etag), LIST_PAGE)
                .await?
        };
        progress.list_etag = page.etag.clone().or(progress.list_etag);
        if page.file_end && !page.last {
            next_file = Some(progress.list_file.unwrap_or(0) + 1);
        }
        if page.items.is_empty() && !page.last {
            // Only blank (or skipped) lines so far: their end is progress
            // too.
            progress.list_offset = Some(page.end);
            if let Some(file) = next_file {
                progress.list_file = Some(file);
                progress.list_offset = Some(0);
            }
            checkpoint(progress.clone()).await?;
            return Ok(progress);
        }
        ends = Some(page.ends);
        (
            split::cut(&source.bucket, &page.items, limits, page.file_end),
            page.last,
        )
    } else {
        // List until at least one whole chunk is cut or the listing ends.
        let mut objects: Vec<Listed> = Vec::new();
        let mut after = progress.after_key.clone();
        loop {
            let page = s3
                .list(&source.bucket, &source.prefix, after.as_deref())
                .await?;
            if let Some(tail) = page.objects.last() {
                after = Some(tail.key.clone());
            }
            objects.extend(page.objects);
            let last = !page.truncated;
            let chunks = split::cut(&source.bucket, &objects, limits, last);
            if last || !chunks.is_empty() {
                break (chunks, last);
            }
        }
    };
    let mut consumed = 0usize;
    let mut bodies: Vec<(String, String)> = chunks
        .iter()
        .map(|objects| {
            let chunk = split::chunk(&source.bucket, objects);
            let body = serde_json::to_string(&chunk).unwrap_or_default();
            (chunk.chunk_id, body)
        })
        .collect();
    let sizes: Vec<usize> = bodies.iter().map(|(_, body)| body.len()).collect();
    for range in split::batches(&sizes) {
        let batch = &chunks[range.clone()];
        let rest = bodies.split_off(range.len());
        send(std::mem::replace(&mut bodies, rest)).await?;
        // Crash tests stop the process here: sent, not yet checkpointed.
        fail::fail_point!("fanout-sent", |_| std::process::abort());
        progress.chunks += i64::try_from(batch.len()).unwrap_or(0);
        progress.items += batch
            .iter()
            .map(|c| i64::try_from(c.len()).unwrap_or(0))
            .sum::<i64>();
        consumed += batch.iter().map(Vec::len).sum::<usize>();
        match &ends {
            Some(ends) => {
                progress.list_offset = consumed
                    .checked_sub(1)
                    .and_then(|i| ends.get(i))
                    .copied()
                    .or(progress.list_offset);
            }
            None => {
                progress.after_key = batch
                    .last()
                    .and_then(|c| c.last())
                    .map(|o| o.key.clone())
                    .or(progress.after_key);
            }
        }
        checkpoint(progress.clone()).await?;
    }
    if let Some(file) = next_file {
        // Every item of the file is enqueued (its last chunk closed with it).
        progress.list_file = Some(file);
        progress.list_offset = Some(0);
        checkpoint(progress.clone()).await?;
    }
    if last {
        progress.done = true;
        checkpoint(progress.clone()).await?;
    }
    Ok(progress)
}
