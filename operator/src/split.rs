//! Fan-out: cutting a sorted listing of objects into chunk messages. Pure;
//! the reconciler lists, sends and checkpoints.
//!
//! Determinism: chunks are cut from the listing in key order, a chunk closes
//! when it holds `max_items` objects or the next object would take it past
//! `max_bytes` (an object larger than `max_bytes` is a chunk alone), and a
//! chunk's id is a hash of its items. A chunk also closes before its message
//! body would pass [`MAX_BODY`] bytes, whatever the limits say: a thousand
//! long keys would not fit in one SQS message. Resuming after the last key of the
//! last enqueued chunk therefore cuts exactly the chunks a run without the
//! interruption would have cut.

use std::ops::Range;

use shoal_protocol::message::{Chunk, ChunkItem, ObjectRef};

/// Most bytes of a chunk message's body: within SQS's 256 KiB message
/// limit (the operator sends chunks without attributes).
pub const MAX_BODY: usize = 240 * 1024;
/// Most bytes of one send: SQS's 256 KiB for a whole `SendMessageBatch`.
pub const MAX_BATCH_BYTES: usize = 256 * 1024;
/// Most chunks of one send: SQS's 10 entries per `SendMessageBatch`.
pub const MAX_BATCH: usize = 10;

/// One listed object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// Object key.
    pub key: String,
    /// Size in bytes.
    pub size: i64,
}

/// Limits of one chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most objects in a chunk.
    pub max_items: usize,
    /// Most bytes of objects in a chunk (a bigger object is a chunk alone).
    pub max_bytes: i64,
}

/// Cuts `objects` (in key order) into chunks. With `last_page`, the trailing
/// chunk is closed too; otherwise it is left out, and listing resumes after
/// the last key of the last chunk returned (so the left-out objects are
/// listed again and cut the same way).
pub fn cut(bucket: &str, objects: &[Listed], limits: Limits, last_page: bool) -> Vec<Vec<Listed>> {
    let max_items = limits.max_items.max(1);
    let empty = encoded_len(&Chunk::new(Vec::new()));
    let mut chunks = Vec::new();
    let mut current: Vec<Listed> = Vec::new();
    let mut bytes = 0i64;
    let mut body = empty;
    for object in objects {
        let size = object.size.max(0);
        // The body grows by the item and, after the first, a comma.
        let item = encoded_len(&item(bucket, object)) + usize::from(!current.is_empty());
        let full = current.len() >= max_items
            || (!current.is_empty() && bytes.saturating_add(size) > limits.max_bytes)
            || (!current.is_empty() && body + item > MAX_BODY);
        if full {
            chunks.push(std::mem::take(&mut current));
            bytes = 0;
            body = empty + encoded_len(&self::item(bucket, object));
        } else {
            body += item;
        }
        bytes = bytes.saturating_add(size);
        current.push(object.clone());
    }
    if !current.is_empty() && (last_page || current.len() >= max_items) {
        chunks.push(current);
    }
    chunks
}

/// The chunk message for `objects` of `bucket`.
pub fn chunk(bucket: &str, objects: &[Listed]) -> Chunk {
    Chunk::new(objects.iter().map(|o| item(bucket, o)).collect())
}

/// The chunk item naming `object` of `bucket`.
fn item(bucket: &str, object: &Listed) -> ChunkItem {
    ChunkItem::Object(ObjectRef {
        bucket: Some(bucket.to_owned()),
        key: object.key.clone(),
        size: u64::try_from(object.size).ok(),
        etag: None,
    })
}

/// Bytes of `value` as JSON (these types always serialise).
fn encoded_len<T: serde::Serialize>(value: &T) -> usize {
    serde_json::to_vec(value).map_or(0, |v| v.len())
}

/// Groups message bodies of `sizes` bytes, in order, into sends of at most
/// [`MAX_BATCH`] bodies and [`MAX_BATCH_BYTES`] bytes (a body alone always
/// fits: see [`MAX_BODY`]).
pub fn batches(sizes: &[usize]) -> Vec<Range<usize>> {
    let mut batches = Vec::new();
    let mut start = 0;
    let mut bytes = 0usize;
    for (i, &size) in sizes.iter().enumerate() {
        if i > start && (i - start >= MAX_BATCH || bytes + size > MAX_BATCH_BYTES) {
            batches.push(start..i);
            start = i;
            bytes = 0;
        }
        bytes += size;
    }
    if start < sizes.len() {
        batches.push(start..sizes.len());
    }
    batches
}

#[cfg(test)]
mod tests {
    use super::*;

    fn objects(n: usize, size: i64) -> Vec<Listed> {
        (0..n)
            .map(|i| Listed {
                key: format!("in/{i:04}.jpg"),
                size,
            })
            .collect()
    }

    fn sizes(chunks: &[Vec<Listed>]) -> Vec<usize> {
        chunks.iter().map(Vec::len).collect()
    }

    const TEN: Limits = Limits {
        max_items: 10,
        max_bytes: 1_000,
    };

    #[test]
    fn items_limit_cuts_and_the_last_page_closes_the_tail() {
        assert_eq!(
            sizes(&cut("photos", &objects(25, 1), TEN, true)),
            [10, 10, 5]
        );
        assert_eq!(sizes(&cut("photos", &objects(25, 1), TEN, false)), [10, 10]);
        assert_eq!(sizes(&cut("photos", &objects(20, 1), TEN, false)), [10, 10]);
        assert!(cut("photos", &[], TEN, true).is_empty());
    }

    #[test]
    fn bytes_limit_cuts_and_a_big_object_is_alone() {
        assert_eq!(
            sizes(&cut("photos", &objects(7, 300), TEN, true)),
            [3, 3, 1]
        );
        let mut list = objects(2, 10);
        list.insert(
            1,
            Listed {
                key: "in/0000b.jpg".into(),
                size: 5_000,
            },
        );
        assert_eq!(sizes(&cut("photos", &list, TEN, true)), [1, 1, 1]);
    }

    #[test]
    fn resuming_after_the_last_chunk_cuts_the_same_chunks() {
        let all = objects(47, 37);
        let whole: Vec<_> = cut("photos", &all, TEN, true);
        // Pages of 13: each reconcile cuts what it can and resumes after the
        // last key it enqueued.
        let mut resumed = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let rest: Vec<Listed> = all
                .iter()
                .filter(|o| after.as_ref().is_none_or(|a| &o.key > a))
                .cloned()
                .collect();
            let page: Vec<Listed> = rest.iter().take(13).cloned().collect();
            let last = rest.len() <= 13;
            let chunks = cut("photos", &page, TEN, last);
            if let Some(tail) = chunks.last().and_then(|c| c.last()) {
                after = Some(tail.key.clone());
            }
            resumed.extend(chunks);
            if last {
                break;
            }
        }
        assert_eq!(resumed, whole);
    }

    #[test]
    fn a_chunk_body_never_passes_the_message_limit_whatever_the_keys() {
        // 1,000 of the longest keys S3 allows, of characters JSON escapes
        // six bytes each: one chunk of them would be about 6 MB.
        let hostile: Vec<Listed> = (0..1000)
            .map(|i| Listed {
                key: format!("{i:04}{}", "\u{1}".repeat(1020)),
                size: 1,
            })
            .collect();
        let limits = Limits {
            max_items: 1000,
            max_bytes: i64::MAX,
        };
        let chunks = cut("photos", &hostile, limits, true);
        assert!(chunks.len() > 1, "cut by size");
        assert_eq!(chunks.iter().map(Vec::len).sum::<usize>(), 1000);
        let sizes: Vec<usize> = chunks
            .iter()
            .map(|c| serde_json::to_vec(&chunk("photos", c)).unwrap().len())
            .collect();
        for size in &sizes {
            assert!(*size <= MAX_BODY, "{size} bytes");
        }
        // Full: each chunk took every item that fitted.
        assert!(sizes[0] > MAX_BODY - 7_000, "{}", sizes[0]);
        // Resumed page by page, the same chunks are cut.
        let (first, rest) = hostile.split_at(333);
        let mut resumed = cut("photos", first, limits, false);
        let after = resumed.last().unwrap().last().unwrap().key.clone();
        let rest: Vec<Listed> = first
            .iter()
            .chain(rest)
            .filter(|o| o.key > after)
            .cloned()
            .collect();
        resumed.extend(cut("photos", &rest, limits, true));
        assert_eq!(resumed, chunks);
        // And every send fits SQS's batch limits.
        for batch in batches(&sizes) {
            assert!(batch.len() <= MAX_BATCH);
            assert!(sizes[batch].iter().sum::<usize>() <= MAX_BATCH_BYTES);
        }
    }

    #[test]
    fn sends_group_bodies_by_count_and_bytes_in_order() {
        assert_eq!(batches(&[10; 25]), [0..10, 10..20, 20..25]);
        assert_eq!(batches(&[MAX_BODY, MAX_BODY, 100]), [0..1, 1..3]);
        assert_eq!(batches(&[100_000; 5]), [0..2, 2..4, 4..5]);
        assert!(batches(&[]).is_empty());
    }

    #[test]
    fn chunk_ids_depend_on_the_items_only() {
        let a = chunk("photos", &objects(3, 5));
        let b = chunk("photos", &objects(3, 5));
        let c = chunk("other", &objects(3, 5));
        assert_eq!(a.chunk_id, b.chunk_id);
        assert_ne!(a.chunk_id, c.chunk_id);
        assert_eq!(a.items.len(), 3);
    }

    proptest::proptest! {
        /// However the listing is paged, resuming after the last chunk cut
        /// cuts exactly the chunks one pass over the whole listing would:
        /// a restarted fan-out never sends a chunk the first run did not.
        #[test]
        fn fuzz_any_paging_cuts_the_same_chunks(
            sizes in proptest::collection::vec(0i64..5_000, 0..120),
            key_len in 1usize..400,
            max_items in 1usize..50,
            max_bytes in 1i64..20_000,
            page in 1usize..40,
        ) {
            let all: Vec<Listed> = sizes
                .iter()
                .enumerate()
                .map(|(i, &size)| Listed {
                    key: format!("{i:05}{}", "k".repeat(key_len)),
                    size,
                })
                .collect();
            let limits = Limits { max_items, max_bytes };
            let whole = cut("photos", &all, limits, true);
            let mut resumed: Vec<Vec<Listed>> = Vec::new();
            let mut after: Option<String> = None;
            // Pages grow until a chunk is cut, as the fan-out lists more.
            let mut taken = page;
            loop {
                let rest: Vec<Listed> = all
                    .iter()
                    .filter(|o| after.as_ref().is_none_or(|a| &o.key > a))
                    .cloned()
                    .collect();
                let last = rest.len() <= taken;
                let chunks = cut("photos", &rest[..rest.len().min(taken)], limits, last);
                if let Some(tail) = chunks.last().and_then(|c| c.last()) {
                    after = Some(tail.key.clone());
                    taken = page;
                } else {
                    taken += page;
                }
                resumed.extend(chunks);
                if last {
                    break;
                }
            }
            proptest::prop_assert_eq!(&resumed, &whole);
            for chunk in &whole {
                proptest::prop_assert!(serde_json::to_vec(&self::chunk("photos", chunk)).unwrap().len() <= MAX_BODY);
            }
        }
    }
}
