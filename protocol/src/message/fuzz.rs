//! Fuzzing the message decoders (see [`crate::fuzzing`]): whatever arrives
//! on a queue or as a Lambda payload, decoding returns items or an error,
//! never panics, and never makes more items than the body has bytes; what
//! shoal itself writes decodes back to what it wrote.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is how a test reports failure"
)]

use proptest::prelude::*;

use super::*;
use crate::fuzzing;

use crate::fuzzing::fixture;

/// Decodes `body` both ways a worker can receive it and checks the bound.
fn decode_all(body: &[u8]) {
    for items in [parse(body, "m-1"), parse_direct(body, "i-1")]
        .into_iter()
        .flatten()
    {
        assert!(
            items.len() <= body.len().max(1),
            "{} items from {} bytes",
            items.len(),
            body.len()
        );
    }
}

/// A valid chunk of `keys` as shoal's fan-out writes it.
fn chunk_of(keys: &[String]) -> Chunk {
    Chunk::new(
        keys.iter()
            .map(|key| {
                ChunkItem::Object(ObjectRef {
                    bucket: Some("photos".into()),
                    key: key.clone(),
                    size: Some(1),
                    etag: None,
                })
            })
            .collect(),
    )
}

/// `key` as S3 writes it into an event: form-style URL encoding.
fn s3_encoded(key: &str) -> String {
    const KEEP: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b' ')
        .remove(b'/')
        .remove(b'-')
        .remove(b'_')
        .remove(b'.');
    percent_encoding::utf8_percent_encode(key, KEEP)
        .to_string()
        .replace(' ', "+")
}

proptest! {
    #[test]
    fn fuzz_any_bytes_decode_or_fail_cleanly(body in fuzzing::bytes()) {
        decode_all(&body);
    }

    #[test]
    fn fuzz_json_with_the_decoders_words_decodes_or_fails_cleanly(value in fuzzing::json()) {
        decode_all(value.to_string().as_bytes());
    }

    #[test]
    fn fuzz_damaged_events_decode_or_fail_cleanly(
        body in prop_oneof![
            fuzzing::mutated(fixture("s3-event.json").unwrap()),
            fuzzing::mutated(fixture("sns-s3-event.json").unwrap()),
            fuzzing::mutated(fixture("sqs-event.json").unwrap()),
            fuzzing::mutated(serde_json::to_vec(&chunk_of(&["a/b.jpg".into(), "c".into()])).unwrap()),
        ]
    ) {
        decode_all(&body);
    }

    #[test]
    fn fuzz_chunks_decode_to_the_items_written(keys in prop::collection::vec(any::<String>(), 0..20)) {
        let chunk = chunk_of(&keys);
        let body = serde_json::to_vec(&chunk).unwrap();
        let items = parse(&body, "m-1").unwrap();
        prop_assert_eq!(items, chunk.into_raw_items());
    }

    #[test]
    fn fuzz_s3_event_keys_decode_to_the_key_uploaded(key in "\\PC{1,64}") {
        let mut event: serde_json::Value =
            serde_json::from_slice(&fixture("s3-event.json").unwrap()).unwrap();
        event["Records"][0]["s3"]["object"]["key"] = s3_encoded(&key).into();
        let items = parse(event.to_string().as_bytes(), "m-1").unwrap();
        prop_assert_eq!(items.len(), 1);
        prop_assert_eq!(&items[0].id, &key);
    }
}
