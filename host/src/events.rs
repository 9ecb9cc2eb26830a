//! Events as AWS triggers send them, built for functions that expect
//! them: an S3 `ObjectCreated:Put` notification per object, so a function
//! written for "S3 upload → Lambda" runs over objects shoal hands it.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::{Value, json};

/// What S3 leaves unescaped in an event's key; a space becomes `+`.
const KEY: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'/')
    .remove(b' ');

/// An object that was created, as one record names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedObject<'a> {
    /// Its bucket.
    pub bucket: &'a str,
    /// Its key (as stored; the record carries it URL-encoded, as S3 does).
    pub key: &'a str,
    /// Its size in bytes, when known.
    pub size: Option<u64>,
    /// Its entity tag, when known.
    pub etag: Option<&'a str>,
}

/// `key` as S3 writes it into an event: URL-encoded, spaces as `+`.
pub fn encode_key(key: &str) -> String {
    utf8_percent_encode(key, KEY).to_string().replace(' ', "+")
}

/// One `ObjectCreated:Put` record for `object` in `region`, at `time`
/// (RFC 3339).
pub fn object_created(region: &str, object: &CreatedObject<'_>, time: &str) -> Value {
    let mut entity = json!({"key": encode_key(object.key), "sequencer": "0"});
    if let Some(size) = object.size {
        entity["size"] = json!(size);
    }
    if let Some(etag) = object.etag {
        entity["eTag"] = json!(etag.trim_matches('"'));
    }
    json!({
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": region,
        "eventTime": time,
        "eventName": "ObjectCreated:Put",
        "userIdentity": {"principalId": "shoal"},
        "requestParameters": {"sourceIPAddress": "127.0.0.1"},
        "responseElements": {},
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": "shoal",
            "bucket": {
                "name": object.bucket,
                "ownerIdentity": {"principalId": "shoal"},
                "arn": format!("arn:aws:s3:::{}", object.bucket),
            },
            "object": entity,
        },
    })
}

/// An S3 event notification holding `records`.
pub fn s3_event(records: Vec<Value>) -> bytes::Bytes {
    bytes::Bytes::from(json!({"Records": records}).to_string())
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        reason = "test code: a panic is how a test reports failure"
    )]

    use super::*;

    #[test]
    fn keys_are_encoded_as_s3_encodes_them() {
        assert_eq!(
            encode_key("photos/holiday dog.jpg"),
            "photos/holiday+dog.jpg"
        );
        assert_eq!(encode_key("a+b&c=d.jpg"), "a%2Bb%26c%3Dd.jpg");
        assert_eq!(encode_key("café/ü.png"), "caf%C3%A9/%C3%BC.png");
    }

    #[test]
    fn records_read_as_aws_lambda_events_reads_an_s3_trigger() {
        let object = CreatedObject {
            bucket: "photos",
            key: "in/holiday dog.jpg",
            size: Some(1234),
            etag: Some("\"abc123\""),
        };
        let event = s3_event(vec![object_created(
            "eu-west-1",
            &object,
            "2026-12-03T07:00:00.000Z",
        )]);
        let parsed: aws_lambda_events::event::s3::S3Event = serde_json::from_slice(&event).unwrap();
        let record = &parsed.records[0];
        assert_eq!(record.event_name.as_deref(), Some("ObjectCreated:Put"));
        assert_eq!(record.aws_region.as_deref(), Some("eu-west-1"));
        assert_eq!(record.s3.bucket.name.as_deref(), Some("photos"));
        assert_eq!(record.s3.object.key.as_deref(), Some("in/holiday+dog.jpg"));
        assert_eq!(record.s3.object.size, Some(1234));
        assert_eq!(record.s3.object.e_tag.as_deref(), Some("abc123"));
    }
}
