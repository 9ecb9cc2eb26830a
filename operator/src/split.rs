//! Fan-out: cutting a sorted listing of objects into chunk messages. Pure;
//! the reconciler lists, sends and checkpoints.
//!
//! Determinism: chunks are cut from the listing in key order, a chunk closes
//! when it holds `max_items` objects or the next object would take it past
//! `max_bytes` (an object larger than `max_bytes` is a chunk alone), and a
//! chunk's id is a hash of its items. Resuming after the last key of the
//! last enqueued chunk therefore cuts exactly the chunks a run without the
//! interruption would have cut.

use shoal_worker::message::{Chunk, ChunkItem, ObjectRef};

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
pub fn cut(objects: &[Listed], limits: Limits, last_page: bool) -> Vec<Vec<Listed>> {
    let max_items = limits.max_items.max(1);
    let mut chunks = Vec::new();
    let mut current: Vec<Listed> = Vec::new();
    let mut bytes = 0i64;
    for object in objects {
        let size = object.size.max(0);
        let full = current.len() >= max_items
            || (!current.is_empty() && bytes.saturating_add(size) > limits.max_bytes);
        if full {
            chunks.push(std::mem::take(&mut current));
            bytes = 0;
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
    Chunk::new(
        objects
            .iter()
            .map(|o| {
                ChunkItem::Object(ObjectRef {
                    bucket: Some(bucket.to_owned()),
                    key: o.key.clone(),
                    size: u64::try_from(o.size).ok(),
                    etag: None,
                })
            })
            .collect(),
    )
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
        assert_eq!(sizes(&cut(&objects(25, 1), TEN, true)), [10, 10, 5]);
        assert_eq!(sizes(&cut(&objects(25, 1), TEN, false)), [10, 10]);
        assert_eq!(sizes(&cut(&objects(20, 1), TEN, false)), [10, 10]);
        assert!(cut(&[], TEN, true).is_empty());
    }

    #[test]
    fn bytes_limit_cuts_and_a_big_object_is_alone() {
        assert_eq!(sizes(&cut(&objects(7, 300), TEN, true)), [3, 3, 1]);
        let mut list = objects(2, 10);
        list.insert(
            1,
            Listed {
                key: "in/0000b.jpg".into(),
                size: 5_000,
            },
        );
        assert_eq!(sizes(&cut(&list, TEN, true)), [1, 1, 1]);
    }

    #[test]
    fn resuming_after_the_last_chunk_cuts_the_same_chunks() {
        let all = objects(47, 37);
        let whole: Vec<_> = cut(&all, TEN, true);
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
            let chunks = cut(&page, TEN, last);
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
    fn chunk_ids_depend_on_the_items_only() {
        let a = chunk("photos", &objects(3, 5));
        let b = chunk("photos", &objects(3, 5));
        let c = chunk("other", &objects(3, 5));
        assert_eq!(a.chunk_id, b.chunk_id);
        assert_ne!(a.chunk_id, c.chunk_id);
        assert_eq!(a.items.len(), 3);
    }
}
