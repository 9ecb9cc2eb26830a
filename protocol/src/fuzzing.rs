//! Input generators for the property-based fuzz tests of the decoders of
//! untrusted bytes (tests named `fuzz_*`). CI runs each property with
//! proptest's default 256 cases; `scripts/fuzz.sh` runs many more. A case
//! that fails is saved under `proptest-regressions/` (checked in) and
//! replayed first on every later run.
//!
//! Random bytes rarely get past a JSON parser, so besides them the
//! generators make JSON built from the field names the decoders look for,
//! and valid messages with bytes flipped, inserted, removed or cut off.

use proptest::prelude::*;
use serde_json::{Map, Value};

/// Field names and values the message decoders look at, so generated JSON
/// reaches their deep paths.
const WORDS: &[&str] = &[
    "chunkId",
    "items",
    "bucket",
    "key",
    "size",
    "etag",
    "Records",
    "s3",
    "object",
    "name",
    "Sns",
    "Message",
    "Event",
    "s3:TestEvent",
    "eventSource",
    "aws:sqs",
    "aws:s3",
    "body",
    "messageId",
    "receiptHandle",
    "%",
    "%e9",
    "+",
    "",
];

/// Arbitrary bytes, up to 4 KiB.
pub fn bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..4096)
}

/// A short string: a decoder's word or anything at all.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(WORDS).prop_map(str::to_owned),
        any::<String>(),
    ]
}

/// JSON made of the decoders' words, nested up to 4 deep.
pub fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::vec((text(), inner.clone()), 0..8)
                .prop_map(|fields| Value::Object(fields.into_iter().collect::<Map<_, _>>())),
            // A JSON document inside a string, as SNS wraps S3 events.
            inner.prop_map(|v| Value::String(v.to_string())),
        ]
    })
}

/// One edit of a byte string.
#[derive(Debug, Clone)]
enum Edit {
    Flip(usize, u8),
    Insert(usize, u8),
    Remove(usize),
    Truncate(usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(at, b)| Edit::Flip(at, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(at, b)| Edit::Insert(at, b)),
        any::<usize>().prop_map(Edit::Remove),
        any::<usize>().prop_map(Edit::Truncate),
    ]
}

/// `seed` with up to 8 random edits.
pub fn mutated(seed: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(edit(), 0..8).prop_map(move |edits| {
        let mut bytes = seed.clone();
        for edit in edits {
            let len = bytes.len();
            match edit {
                Edit::Flip(at, b) if len > 0 => bytes[at % len] ^= b,
                Edit::Insert(at, b) => bytes.insert(at % (len + 1), b),
                Edit::Remove(at) if len > 0 => {
                    bytes.remove(at % len);
                }
                Edit::Truncate(at) => bytes.truncate(at % (len + 1)),
                _ => {}
            }
        }
        bytes
    })
}

/// The bytes of the event fixture `name` (`tests/fixtures/` of this crate:
/// S3, SNS-wrapped S3 and SQS events as AWS sends them); an error names
/// the file.
pub fn fixture(name: &str) -> Result<Vec<u8>, String> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).map_err(|e| format!("fixture {path}: {e}"))
}
