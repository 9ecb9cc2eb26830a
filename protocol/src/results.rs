//! Item results: what became of each item of a fanned-out job, recorded by
//! the workers and merged by the operator into the job's failure report
//! (sharded `SUCCEEDED_<n>.jsonl` / `FAILED_<n>.jsonl` files and a small
//! manifest pointing at them; see the operator's `report` module).
//!
//! Contract:
//! - A worker started with `--record-results` writes, for every delivery of
//!   a shoal chunk that settles items, one *part* object: a JSON Lines file
//!   of [`ItemRecord`]s, one per item that succeeded or was dead-lettered
//!   in that delivery (items tried again later are recorded when they
//!   settle). It is written under [`PARTS`] in the worker's output store
//!   *before* the message is deleted or dead-lettered: once a chunk's
//!   message is gone from the queue, its records exist. A part that cannot
//!   be written leaves the message to be delivered again.
//! - Parts are kept apart by run (the operator passes the job's uid), so
//!   jobs sharing an output prefix, or a deleted job's namesake, never
//!   merge each other's records.
//! - A part's key groups it by chunk ([`part_key`]): every part of one chunk
//!   (first delivery, retries, redrives) shares a folder, so a merge reading
//!   parts in key order sees all records of an item together and needs to
//!   hold one chunk's items at a time ([`Merger`]).
//! - Merging is order-free: an item that succeeded in any delivery is
//!   succeeded (its output exists; a duplicate delivery that failed later
//!   does not undo it); otherwise it failed with the reason of its last
//!   record. Attempts add up over deliveries (a redriven item that failed
//!   three times and then succeeded has four).
//! - A part also says what the delivery's attempts used, as Lambda would
//!   have billed them ([`Usage`]: invocations, billed milliseconds, memory
//!   size), on a line of its own; a delivery that settles nothing (all its
//!   items retried) still writes a part when it ran any, so the sum over a
//!   run's parts is every attempt's. It is the sum of the REPORT lines the
//!   worker wrote for those attempts: the same rounding, the same memory
//!   size.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Folder of part objects, relative to the output location.
pub const PARTS: &str = "_shoal/results/parts/";

/// Longest reason kept in a record, in bytes.
pub const MAX_REASON_BYTES: usize = 2048;

/// Items of one chunk held by a [`Merger`] before it emits them early (a
/// chunk message holds far fewer; only forged parts reach this).
pub const MAX_GROUP_ITEMS: usize = 100_000;

/// Final state of an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    /// The handler succeeded; its output (if any) is stored.
    Succeeded,
    /// The item was dead-lettered.
    Failed,
}

impl Status {
    /// `SUCCEEDED` or `FAILED`, as in shard names.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "SUCCEEDED",
            Self::Failed => "FAILED",
        }
    }
}

/// What became of one item, in one delivery or merged over all of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ItemRecord {
    /// The item id (the object key, or `<chunk>/<index>` for inline items).
    pub item: String,
    /// The chunk that carried it.
    pub chunk: String,
    /// Succeeded or failed.
    pub status: Status,
    /// Attempts made.
    pub attempts: u32,
    /// Key of the output written, relative to the output location.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// `permanent` or `exhausted`, for a failed item.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
    /// The error category (the metrics label), for a failed item.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// The last failure's reason, at most [`MAX_REASON_BYTES`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// What a delivery's attempts used, summed; the figures of their REPORT
/// lines.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    /// Attempts run (Lambda would count each as a request).
    pub invocations: u64,
    /// Sum of their `Billed Duration`, in ms.
    pub billed_ms: u64,
    /// Sum of `Billed Duration` × `Memory Size` (MB × ms): GB-seconds ×
    /// 1,024,000, kept whole so sums are exact.
    pub mb_ms: u64,
    /// Highest `Max Memory Used` seen, in MB.
    pub max_memory_used_mb: u64,
}

impl Usage {
    /// Counts one attempt billed `billed_ms` with `memory_mb` configured.
    pub fn add_invocation(&mut self, billed_ms: u64, memory_mb: u32) {
        self.invocations = self.invocations.saturating_add(1);
        self.billed_ms = self.billed_ms.saturating_add(billed_ms);
        self.mb_ms = self
            .mb_ms
            .saturating_add(billed_ms.saturating_mul(u64::from(memory_mb)));
    }

    /// Adds `other` to these figures.
    pub fn add(&mut self, other: &Usage) {
        self.invocations = self.invocations.saturating_add(other.invocations);
        self.billed_ms = self.billed_ms.saturating_add(other.billed_ms);
        self.mb_ms = self.mb_ms.saturating_add(other.mb_ms);
        self.max_memory_used_mb = self.max_memory_used_mb.max(other.max_memory_used_mb);
    }

    /// Lambda's GB-seconds: `mb_ms` / 1,024 / 1,000.
    pub fn gb_seconds(&self) -> f64 {
        // Exact below 2^53 MB·ms (some 8.8 billion GB-seconds).
        self.mb_ms as f64 / 1_024_000.0
    }

    /// Whether a worker could have written these figures: at most
    /// [`MAX_PART_INVOCATIONS`] attempts, each billed at most 12 hours
    /// with at most 10,240 MB (Lambda's largest size) — a forged line must
    /// not inflate a job's cost without bound.
    fn plausible(&self) -> bool {
        const MAX_BILLED_MS: u64 = 12 * 3600 * 1000;
        const MAX_MEMORY_MB: u64 = 10_240;
        self.invocations <= MAX_PART_INVOCATIONS
            && self.billed_ms <= self.invocations.saturating_mul(MAX_BILLED_MS)
            && self.mb_ms <= self.billed_ms.saturating_mul(MAX_MEMORY_MB)
            && self.max_memory_used_mb <= 1 << 30
    }
}

/// Most attempts one part may count (one delivery runs a chunk's items
/// once each; chunks hold far fewer).
pub const MAX_PART_INVOCATIONS: u64 = MAX_GROUP_ITEMS as u64;

/// The usage line of a part.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct UsageLine {
    usage: Usage,
}

/// What a part holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Part {
    /// Its item records.
    pub records: Vec<ItemRecord>,
    /// What its attempts used (the sum of its usage lines).
    pub usage: Usage,
    /// Lines that were neither (forged, or from a newer writer).
    pub bad: usize,
}

/// The folder of `chunk_id`'s parts: a digest, so whatever a message says
/// its chunk id is, the key is short and safe.
pub fn group(chunk_id: &str) -> String {
    Sha256::digest(chunk_id.as_bytes())
        .iter()
        .take(12)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The folder of run `run`'s parts, relative to the output location:
/// `_shoal/results/parts/<run>/`, the run as given when it is a short
/// token (a job's uid), else a digest of it.
pub fn run_folder(run: &str) -> String {
    let safe = !run.is_empty()
        && run.len() <= 64
        && run.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    if safe {
        format!("{PARTS}{run}/")
    } else {
        format!("{PARTS}{}/", group(run))
    }
}

/// A new part's key for `chunk_id` in run `run`, relative to the output
/// location: `<run folder><group>/<ms since epoch>-<random>.jsonl`.
pub fn part_key(run: &str, chunk_id: &str) -> String {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    format!(
        "{}{}/{millis:015}-{}.jsonl",
        run_folder(run),
        group(chunk_id),
        uuid::Uuid::new_v4().simple()
    )
}

/// The group a part key (relative to the output location, or with any
/// prefix before [`PARTS`]) belongs to.
pub fn group_of(key: &str) -> Option<&str> {
    let (_, rest) = key.split_once(PARTS)?;
    let (_run, rest) = rest.split_once('/')?;
    let (group, _) = rest.split_once('/')?;
    Some(group)
}

/// The `chunkId` of a shoal chunk message, if `body` is one.
pub fn chunk_id(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Head {
        #[serde(rename = "chunkId")]
        chunk_id: String,
    }
    serde_json::from_slice::<Head>(body)
        .ok()
        .map(|h| h.chunk_id)
}

/// Cuts `reason` to at most [`MAX_REASON_BYTES`], on a character boundary.
pub fn bounded_reason(reason: &str) -> String {
    let mut end = reason.len().min(MAX_REASON_BYTES);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason[..end].to_owned()
}

/// A part: JSON Lines of `records`, then the usage line when `usage`
/// counts any attempt.
pub fn encode(records: &[ItemRecord], usage: &Usage) -> Vec<u8> {
    let mut out = Vec::new();
    for record in records {
        // A record is strings and numbers: encoding cannot fail.
        if serde_json::to_writer(&mut out, record).is_ok() {
            out.push(b'\n');
        }
    }
    if usage.invocations > 0
        && serde_json::to_writer(&mut out, &UsageLine { usage: *usage }).is_ok()
    {
        out.push(b'\n');
    }
    out
}

/// What a part holds; lines that are neither records nor a plausible
/// usage line are counted, not returned (a part is written by workers, but
/// anyone who can write to the bucket can forge one).
pub fn decode(part: &[u8]) -> Part {
    let mut decoded = Part::default();
    for line in part.split(|b| *b == b'\n') {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice::<ItemRecord>(line) {
            Ok(mut record) if sane(&record) => {
                record.reason = record.reason.as_deref().map(bounded_reason);
                decoded.records.push(record);
            }
            Ok(_) => decoded.bad += 1,
            Err(_) => match serde_json::from_slice::<UsageLine>(line) {
                Ok(UsageLine { usage }) if usage.plausible() => decoded.usage.add(&usage),
                _ => decoded.bad += 1,
            },
        }
    }
    decoded
}

/// Whether a decoded record has the sizes a worker writes (keys of at
/// most 1,024 bytes): a forged one must not make the merge hold more.
fn sane(record: &ItemRecord) -> bool {
    let short = |s: &str| s.len() <= crate::message::list::MAX_KEY;
    short(&record.item)
        && short(&record.chunk)
        && record.output.as_deref().is_none_or(short)
        && [&record.cause, &record.category]
            .iter()
            .all(|v| v.as_deref().is_none_or(|v| v.len() <= 64))
}

/// Merges the records of parts read in key order, one group at a time,
/// into one final record per item.
#[derive(Debug, Default)]
pub struct Merger {
    group: Option<String>,
    items: BTreeMap<String, ItemRecord>,
}

impl Merger {
    /// An empty merger.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the records of a part of `group`; returns the final records of
    /// the group before it, if `group` starts a new one (or of this group,
    /// if it grew past [`MAX_GROUP_ITEMS`]).
    pub fn add(&mut self, group: &str, records: Vec<ItemRecord>) -> Vec<ItemRecord> {
        let mut done = Vec::new();
        if self.group.as_deref() != Some(group) {
            done = self.finish();
            self.group = Some(group.to_owned());
        }
        for record in records {
            if self.items.len() >= MAX_GROUP_ITEMS && !self.items.contains_key(&record.item) {
                done.extend(std::mem::take(&mut self.items).into_values());
            }
            match self.items.get_mut(&record.item) {
                None => {
                    self.items.insert(record.item.clone(), record);
                }
                Some(seen) => merge(seen, record),
            }
        }
        done
    }

    /// The final records of the group being merged.
    pub fn finish(&mut self) -> Vec<ItemRecord> {
        self.group = None;
        std::mem::take(&mut self.items).into_values().collect()
    }
}

/// Folds a later record of the same item into `seen`.
fn merge(seen: &mut ItemRecord, later: ItemRecord) {
    let attempts = seen.attempts.saturating_add(later.attempts);
    match (seen.status, later.status) {
        // Succeeded stays succeeded (keeping the first output).
        (Status::Succeeded, _) => {}
        // A success replaces failures; a later failure, an earlier one.
        (Status::Failed, _) => *seen = later,
    }
    seen.attempts = attempts;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(item: &str, status: Status, attempts: u32, reason: &str) -> ItemRecord {
        ItemRecord {
            item: item.into(),
            chunk: "c-1".into(),
            status,
            attempts,
            output: (status == Status::Succeeded).then(|| format!("out/{item}")),
            cause: (status == Status::Failed).then(|| "exhausted".into()),
            category: (status == Status::Failed).then(|| "handler".into()),
            reason: (status == Status::Failed).then(|| reason.into()),
        }
    }

    #[test]
    fn a_redriven_item_that_succeeds_is_succeeded_with_all_its_attempts() {
        let mut merger = Merger::new();
        assert!(
            merger
                .add(
                    "g1",
                    vec![
                        record("a", Status::Failed, 3, "boom"),
                        record("b", Status::Succeeded, 1, "")
                    ]
                )
                .is_empty()
        );
        assert!(
            merger
                .add("g1", vec![record("a", Status::Succeeded, 1, "")])
                .is_empty()
        );
        let done = merger.add("g2", vec![record("c", Status::Failed, 1, "first")]);
        assert_eq!(done.len(), 2);
        assert_eq!(done[0].item, "a");
        assert_eq!(done[0].status, Status::Succeeded);
        assert_eq!(done[0].attempts, 4);
        assert_eq!(done[0].output.as_deref(), Some("out/a"));
        assert_eq!(done[0].reason, None);
        // A duplicate delivery failing after a success does not undo it.
        merger.add("g2", vec![record("c", Status::Failed, 2, "second")]);
        let last = merger.finish();
        assert_eq!(last.len(), 1);
        assert_eq!(last[0].status, Status::Failed);
        assert_eq!(last[0].reason.as_deref(), Some("second"));
        assert_eq!(last[0].attempts, 3);
        let mut merger = Merger::new();
        merger.add("g", vec![record("d", Status::Succeeded, 1, "")]);
        merger.add("g", vec![record("d", Status::Failed, 1, "late")]);
        assert_eq!(merger.finish()[0].status, Status::Succeeded);
    }

    #[test]
    fn parts_round_trip_and_forged_lines_are_counted() {
        let records = vec![
            record("photos/a b.jpg", Status::Succeeded, 1, ""),
            record("x", Status::Failed, 2, "line\nbreak \"quoted\""),
        ];
        let mut usage = Usage::default();
        usage.add_invocation(13, 128);
        usage.add_invocation(1, 128);
        usage.max_memory_used_mb = 18;
        let mut bytes = encode(&records, &usage);
        bytes.extend_from_slice(b"not json\n{\"item\":1}\n\n");
        let none = Usage::default();
        let mut huge = record(&"k".repeat(5000), Status::Succeeded, 1, "");
        bytes.extend(encode(std::slice::from_ref(&huge), &none));
        huge.item = "long-reason".into();
        huge.output = None;
        huge.reason = Some("r".repeat(10 * MAX_REASON_BYTES));
        bytes.extend(encode(std::slice::from_ref(&huge), &none));
        let back = decode(&bytes);
        assert_eq!(back.records[..2], records[..]);
        assert_eq!(back.bad, 3, "an item key over 1 KiB is not a worker's");
        assert_eq!(
            back.records[2].reason.as_ref().unwrap().len(),
            MAX_REASON_BYTES
        );
        assert_eq!(back.usage, usage);
        assert_eq!(back.usage.mb_ms, 14 * 128);
        assert_eq!(back.usage.max_memory_used_mb, 18);
    }

    #[test]
    fn forged_usage_cannot_inflate_a_bill_without_bound() {
        let forged = [
            // A billion attempts in one part.
            r#"{"usage":{"invocations":1000000000,"billedMs":1,"mbMs":1,"maxMemoryUsedMb":1}}"#,
            // A year billed for one attempt.
            r#"{"usage":{"invocations":1,"billedMs":31536000000,"mbMs":1,"maxMemoryUsedMb":1}}"#,
            // More memory than Lambda has.
            r#"{"usage":{"invocations":1,"billedMs":10,"mbMs":1000000,"maxMemoryUsedMb":1}}"#,
            // Fields a worker does not write.
            r#"{"usage":{"invocations":1,"billedMs":10,"mbMs":1280,"maxMemoryUsedMb":1},"cost":9}"#,
        ];
        let part = decode(forged.join("\n").as_bytes());
        assert_eq!(part.bad, 4);
        assert_eq!(part.usage, Usage::default());
        // Two usage lines (a part written twice over) add up.
        let line = r#"{"usage":{"invocations":2,"billedMs":30,"mbMs":3840,"maxMemoryUsedMb":20}}"#;
        let part = decode(format!("{line}\n{line}\n").as_bytes());
        assert_eq!((part.usage.invocations, part.usage.mb_ms), (4, 7680));
        assert!((part.usage.gb_seconds() - 0.0075).abs() < 1e-12);
    }

    #[test]
    fn part_keys_group_by_chunk_whatever_the_chunk_id_says() {
        let run = "0b4a3c52-5f1e-4c6e-9d43-7f7c2f1b9e10";
        let a = part_key(run, "c-1");
        let b = part_key(run, "c-1");
        assert_ne!(a, b);
        assert!(a.starts_with(&format!("{PARTS}{run}/")), "{a}");
        assert_eq!(group_of(&a), group_of(&b));
        assert_eq!(group_of(&format!("thumbs/{a}")), group_of(&a));
        // Another run's parts are in another folder.
        assert!(!part_key("another-uid", "c-1").starts_with(&run_folder(run)));
        let hostile = part_key("../x", "../../etc/passwd\n");
        assert!(hostile.starts_with(PARTS));
        assert!(
            hostile[PARTS.len()..]
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-./".contains(c))
        );
        assert_ne!(group_of(&hostile), group_of(&a));
    }

    #[test]
    fn a_forged_group_too_large_is_emitted_early_not_held() {
        let mut merger = Merger::new();
        let many: Vec<ItemRecord> = (0..MAX_GROUP_ITEMS + 5)
            .map(|i| record(&format!("k{i}"), Status::Succeeded, 1, ""))
            .collect();
        let early = merger.add("g", many);
        assert_eq!(early.len(), MAX_GROUP_ITEMS);
        assert_eq!(merger.finish().len(), 5);
    }

    #[test]
    fn reasons_are_bounded_on_a_character_boundary() {
        let long = "é".repeat(MAX_REASON_BYTES);
        let cut = bounded_reason(&long);
        assert!(cut.len() <= MAX_REASON_BYTES);
        assert!(cut.chars().all(|c| c == 'é'));
    }
}
