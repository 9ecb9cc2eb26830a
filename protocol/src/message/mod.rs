//! Message formats a worker accepts, decoded into transport-neutral items.
//!
//! - shoal chunk: `{"chunkId": "...", "items": [ObjectRef | inline JSON, ...]}`
//! - S3 event notification, optionally wrapped in an SNS notification
//! - anything else: one raw item whose body is the message body
//!
//! Chunk ids are deterministic (a hash of the items), so splitting the same
//! input twice yields the same chunk ids and never duplicates work.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A reference to one stored object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectRef {
    /// Bucket; `None` means the runtime's input store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
    /// Object key, `/`-separated.
    pub key: String,
    /// Size in bytes, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Entity tag (content version), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
}

/// One item as it arrives, before the handler's payload type decodes it.
#[derive(Debug, Clone, PartialEq)]
pub struct RawItem {
    /// Stable identity: an object's key, or `<chunk id>/<index>` for inline
    /// JSON (shoal-worker's `Item::id`).
    pub id: String,
    /// The item body.
    pub body: ItemBody,
}

/// What an item carries.
#[derive(Debug, Clone, PartialEq)]
pub enum ItemBody {
    /// A stored object the runtime fetches for the handler.
    Object(ObjectRef),
    /// Inline JSON from a chunk message.
    Inline(serde_json::Value),
    /// An opaque message body.
    Raw(Bytes),
}

/// An item inside a chunk message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ChunkItem {
    /// `{bucket?, key, size?, etag?}` with no other fields.
    Object(ObjectRef),
    /// Any other JSON value.
    Inline(serde_json::Value),
}

/// A shoal chunk message: a batch of items that travel together.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Chunk {
    /// Deterministic id; see [`Chunk::new`].
    pub chunk_id: String,
    /// The items, in order.
    pub items: Vec<ChunkItem>,
}

impl Chunk {
    /// Builds a chunk whose id is derived from its items, so the same items
    /// always make the same chunk id.
    pub fn new(items: Vec<ChunkItem>) -> Self {
        let mut hasher = Sha256::new();
        for item in &items {
            // Serialising these types cannot fail: no maps with non-string keys.
            let encoded = serde_json::to_vec(item).unwrap_or_default();
            hasher.update((encoded.len() as u64).to_le_bytes());
            hasher.update(&encoded);
        }
        let digest = hasher.finalize();
        let hex: String = digest.iter().take(10).map(|b| format!("{b:02x}")).collect();
        Self {
            chunk_id: format!("c-{hex}"),
            items,
        }
    }

    /// The chunk's items as runtime items.
    pub fn into_raw_items(self) -> Vec<RawItem> {
        let chunk_id = self.chunk_id;
        self.items
            .into_iter()
            .enumerate()
            .map(|(index, item)| match item {
                ChunkItem::Object(obj) => RawItem {
                    id: obj.key.clone(),
                    body: ItemBody::Object(obj),
                },
                ChunkItem::Inline(value) => RawItem {
                    id: format!("{chunk_id}/{index}"),
                    body: ItemBody::Inline(value),
                },
            })
            .collect()
    }
}

/// Why a message body could not be decoded into items.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    /// The body looked like a known format but broke its rules.
    #[error("malformed {format} message: {reason}")]
    Malformed {
        /// Which format was recognised.
        format: &'static str,
        /// What was wrong.
        reason: String,
    },
}

#[derive(Deserialize)]
struct S3Event {
    #[serde(rename = "Records")]
    records: Vec<S3Record>,
}

#[derive(Deserialize)]
struct S3Record {
    s3: S3Entity,
}

#[derive(Deserialize)]
struct S3Entity {
    bucket: S3Bucket,
    object: S3Object,
}

#[derive(Deserialize)]
struct S3Bucket {
    name: String,
}

#[derive(Deserialize)]
struct S3Object {
    key: String,
    size: Option<u64>,
    #[serde(rename = "eTag")]
    etag: Option<String>,
}

#[derive(Deserialize)]
struct SnsRecords {
    #[serde(rename = "Records")]
    records: Vec<SnsRecord>,
}

#[derive(Deserialize)]
struct SnsRecord {
    #[serde(rename = "Sns")]
    sns: SnsMessage,
}

#[derive(Deserialize)]
struct SnsMessage {
    #[serde(rename = "Message")]
    message: String,
}

/// Decodes one message body into items. `message_id` names the item when the
/// body is raw.
pub fn parse(body: &[u8], message_id: &str) -> Result<Vec<RawItem>, MessageError> {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else {
        return Ok(vec![raw(body, message_id)]);
    };
    parse_value(value, body, message_id, 0)
}

/// Decodes one message body for a handler that takes messages as records
/// (shoal-worker's `Batching::Records`): a shoal chunk becomes its
/// items, anything else (an S3 notification included) one raw item whose
/// body is the message body, untouched.
pub fn parse_records(body: &Bytes, message_id: &str) -> Result<Vec<RawItem>, MessageError> {
    let is_chunk = serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(body)
        .is_ok_and(|object| object.contains_key("chunkId"));
    if !is_chunk {
        return Ok(vec![RawItem {
            id: message_id.to_owned(),
            body: ItemBody::Raw(body.clone()),
        }]);
    }
    parse(body, message_id)
}

/// Decodes a direct invocation's payload: everything [`parse`] accepts, and
/// also a bare object reference (`{"key": "cat.jpg"}`) as one object item.
pub fn parse_direct(body: &[u8], invocation_id: &str) -> Result<Vec<RawItem>, MessageError> {
    if let Ok(object) = serde_json::from_slice::<ObjectRef>(body) {
        return Ok(vec![RawItem {
            id: object.key.clone(),
            body: ItemBody::Object(object),
        }]);
    }
    parse(body, invocation_id)
}

fn raw(body: &[u8], message_id: &str) -> RawItem {
    RawItem {
        id: message_id.to_owned(),
        body: ItemBody::Raw(Bytes::copy_from_slice(body)),
    }
}

fn parse_value(
    value: serde_json::Value,
    body: &[u8],
    message_id: &str,
    depth: u8,
) -> Result<Vec<RawItem>, MessageError> {
    let Some(obj) = value.as_object() else {
        return Ok(vec![raw(body, message_id)]);
    };
    if obj.contains_key("chunkId") {
        let chunk: Chunk = serde_json::from_value(value).map_err(|e| MessageError::Malformed {
            format: "shoal chunk",
            reason: e.to_string(),
        })?;
        return Ok(chunk.into_raw_items());
    }
    // S3 sends this once when a notification is configured; it carries no work.
    if obj.get("Event").and_then(|e| e.as_str()) == Some("s3:TestEvent") {
        return Ok(Vec::new());
    }
    let first = obj
        .get("Records")
        .and_then(|r| r.as_array())
        .and_then(|r| r.first());
    if let Some(first) = first {
        if first.get("s3").is_some() {
            let event: S3Event =
                serde_json::from_value(value).map_err(|e| MessageError::Malformed {
                    format: "S3 event notification",
                    reason: e.to_string(),
                })?;
            return event
                .records
                .into_iter()
                .map(|r| s3_item(r.s3))
                .collect::<Result<_, _>>();
        }
        if first.get("Sns").is_some() && depth == 0 {
            let sns: SnsRecords =
                serde_json::from_value(value).map_err(|e| MessageError::Malformed {
                    format: "SNS notification",
                    reason: e.to_string(),
                })?;
            let mut items = Vec::new();
            for record in sns.records {
                let inner = record.sns.message;
                let inner_value: serde_json::Value =
                    serde_json::from_str(&inner).map_err(|e| MessageError::Malformed {
                        format: "SNS notification",
                        reason: format!("Message is not JSON: {e}"),
                    })?;
                items.extend(parse_value(
                    inner_value,
                    inner.as_bytes(),
                    message_id,
                    depth + 1,
                )?);
            }
            return Ok(items);
        }
    }
    Ok(vec![raw(body, message_id)])
}

/// S3 event keys are URL-encoded in form style (`+` is a space).
fn s3_item(s3: S3Entity) -> Result<RawItem, MessageError> {
    let plus_decoded = s3.object.key.replace('+', " ");
    let key = percent_encoding::percent_decode_str(&plus_decoded)
        .decode_utf8()
        .map_err(|e| MessageError::Malformed {
            format: "S3 event notification",
            reason: format!("object key {:?} is not UTF-8: {e}", s3.object.key),
        })?
        .into_owned();
    Ok(RawItem {
        id: key.clone(),
        body: ItemBody::Object(ObjectRef {
            bucket: Some(s3.bucket.name),
            key,
            size: s3.object.size,
            etag: s3.object.etag,
        }),
    })
}

pub mod list;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_keep_bodies_untouched_except_shoal_chunks() {
        let notification = Bytes::from_static(
            br#"{"Records":[{"s3":{"bucket":{"name":"b"},"object":{"key":"a.jpg"}}}]}"#,
        );
        let items = parse_records(&notification, "m-1").unwrap();
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].id, "m-1");
        assert_eq!(items[0].body, ItemBody::Raw(notification.clone()));
        let text = Bytes::from_static(b"not json");
        assert_eq!(
            parse_records(&text, "m-2").unwrap()[0].body,
            ItemBody::Raw(text)
        );
        let chunk = Bytes::from(
            serde_json::to_vec(&Chunk::new(vec![ChunkItem::Object(ObjectRef {
                bucket: None,
                key: "x/y.png".into(),
                size: None,
                etag: None,
            })]))
            .unwrap(),
        );
        let items = parse_records(&chunk, "m-3").unwrap();
        assert_eq!(items[0].id, "x/y.png");
        assert!(matches!(items[0].body, ItemBody::Object(_)));
        assert!(parse_records(&Bytes::from_static(br#"{"chunkId":1}"#), "m-4").is_err());
    }

    #[test]
    fn chunk_ids_are_deterministic_and_content_addressed() {
        let items = |k: &str| {
            vec![ChunkItem::Object(ObjectRef {
                bucket: None,
                key: k.into(),
                size: Some(1),
                etag: None,
            })]
        };
        assert_eq!(
            Chunk::new(items("a")).chunk_id,
            Chunk::new(items("a")).chunk_id
        );
        assert_ne!(
            Chunk::new(items("a")).chunk_id,
            Chunk::new(items("b")).chunk_id
        );
    }

    #[test]
    fn chunk_round_trips_objects_and_inline_items() {
        let chunk = Chunk::new(vec![
            ChunkItem::Object(ObjectRef {
                bucket: Some("photos".into()),
                key: "a/b.jpg".into(),
                size: Some(10),
                etag: Some("e1".into()),
            }),
            ChunkItem::Inline(serde_json::json!({"key": "x", "width": 3})),
        ]);
        let body = serde_json::to_vec(&chunk).unwrap();
        let items = parse(&body, "m1").unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].id, "a/b.jpg");
        assert!(
            matches!(&items[0].body, ItemBody::Object(o) if o.bucket.as_deref() == Some("photos"))
        );
        assert_eq!(items[1].id, format!("{}/1", chunk.chunk_id));
        assert!(matches!(&items[1].body, ItemBody::Inline(v) if v["width"] == 3));
    }

    #[test]
    fn s3_event_keys_are_url_decoded() {
        let body = br#"{"Records":[{"eventSource":"aws:s3","s3":{"bucket":{"name":"in"},"object":{"key":"my+photos/caf%C3%A9.jpg","size":42,"eTag":"abc"}}}]}"#;
        let items = parse(body, "m").unwrap();
        assert_eq!(items[0].id, "my photos/café.jpg");
        assert_eq!(
            items[0].body,
            ItemBody::Object(ObjectRef {
                bucket: Some("in".into()),
                key: "my photos/café.jpg".into(),
                size: Some(42),
                etag: Some("abc".into())
            })
        );
    }

    #[test]
    fn sns_wrapped_s3_event_is_unwrapped() {
        let inner = r#"{"Records":[{"s3":{"bucket":{"name":"in"},"object":{"key":"k.png"}}}]}"#;
        let body =
            serde_json::json!({"Records":[{"EventSource":"aws:sns","Sns":{"Message": inner}}]});
        let items = parse(body.to_string().as_bytes(), "m").unwrap();
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].id, "k.png");
    }

    #[test]
    fn s3_test_event_carries_no_work() {
        let body = br#"{"Service":"Amazon S3","Event":"s3:TestEvent","Bucket":"in"}"#;
        assert!(parse(body, "m").unwrap().is_empty());
    }

    #[test]
    fn malformed_chunk_is_an_error_with_a_reason() {
        let err = parse(br#"{"chunkId": 7}"#, "m").unwrap_err();
        assert!(
            err.to_string().starts_with("malformed shoal chunk message"),
            "{err}"
        );
    }

    #[test]
    fn direct_invokes_accept_a_bare_object_reference() {
        let items = parse_direct(br#"{"key": "cat.jpg"}"#, "i").unwrap();
        assert_eq!(items[0].id, "cat.jpg");
        assert!(matches!(&items[0].body, ItemBody::Object(_)));
        let items = parse_direct(br#"{"key": "cat.jpg", "width": 3}"#, "i").unwrap();
        assert!(
            matches!(&items[0].body, ItemBody::Raw(_)),
            "extra fields: not an object reference"
        );
    }

    #[test]
    fn other_bodies_are_raw_items() {
        let items = parse(b"hello", "m-1").unwrap();
        assert_eq!(
            items,
            vec![RawItem {
                id: "m-1".into(),
                body: ItemBody::Raw(Bytes::from_static(b"hello"))
            }]
        );
        let items = parse(br#"{"width": 3}"#, "m-2").unwrap();
        assert!(matches!(&items[0].body, ItemBody::Raw(_)));
    }
}

#[cfg(test)]
mod fuzz;
