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

/// `at` as S3 events write `eventTime` (`2026-12-03T07:00:00.000Z`).
pub fn event_time(at: std::time::SystemTime) -> String {
    humantime::format_rfc3339_millis(at).to_string()
}

/// A message from an SQS queue, as the queue gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueMessage {
    /// `MessageId`.
    pub id: String,
    /// `ReceiptHandle`.
    pub receipt_handle: String,
    /// The body.
    pub body: String,
    /// `MD5OfBody`, as SQS computed it.
    pub md5_of_body: String,
    /// `ApproximateReceiveCount`.
    pub receive_count: u32,
    /// `SentTimestamp`, epoch milliseconds.
    pub sent_timestamp_ms: u64,
    /// String message attributes.
    pub attributes: std::collections::BTreeMap<String, String>,
}

/// The SQS event an event source mapping would hand a function for
/// `messages`, read from queue `queue_arn`.
pub fn sqs_event(queue_arn: &str, region: &str, messages: &[QueueMessage]) -> bytes::Bytes {
    let records: Vec<Value> = messages
        .iter()
        .map(|m| {
            let attributes: serde_json::Map<String, Value> = m
                .attributes
                .iter()
                .map(|(name, value)| {
                    (
                        name.clone(),
                        json!({"stringValue": value, "stringListValues": [], "binaryListValues": [], "dataType": "String"}),
                    )
                })
                .collect();
            json!({
                "messageId": m.id,
                "receiptHandle": m.receipt_handle,
                "body": m.body,
                "attributes": {
                    "ApproximateReceiveCount": m.receive_count.to_string(),
                    "SentTimestamp": m.sent_timestamp_ms.to_string(),
                    "SenderId": "shoal",
                    "ApproximateFirstReceiveTimestamp": m.sent_timestamp_ms.to_string(),
                },
                "messageAttributes": attributes,
                "md5OfBody": m.md5_of_body,
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": region,
            })
        })
        .collect();
    bytes::Bytes::from(json!({"Records": records}).to_string())
}

/// Which records of a batch failed, from a function's answer, by Lambda's
/// rules for a partial batch response (`ReportBatchItemFailures`).
/// `Some(set)` names the failed records: empty for an empty answer,
/// `null`, an object without `batchItemFailures`, or an empty or `null`
/// list. `None` fails the whole batch: an answer that is not JSON (or is
/// JSON but neither an object nor `null`), a `batchItemFailures` that is
/// not a list, or an entry whose `itemIdentifier` is missing, empty or not
/// one of `batch`.
pub fn failed_records(answer: &[u8], batch: &[&str]) -> Option<std::collections::BTreeSet<String>> {
    let mut failed = std::collections::BTreeSet::new();
    if answer.iter().all(u8::is_ascii_whitespace) {
        return Some(failed);
    }
    let answer = match serde_json::from_slice::<Value>(answer).ok()? {
        Value::Null => return Some(failed),
        Value::Object(answer) => answer,
        _ => return None,
    };
    let entries = match answer.get("batchItemFailures") {
        None | Some(Value::Null) => return Some(failed),
        Some(Value::Array(entries)) => entries,
        Some(_) => return None,
    };
    for entry in entries {
        let id = entry.get("itemIdentifier").and_then(Value::as_str)?;
        if id.is_empty() || !batch.contains(&id) {
            return None;
        }
        failed.insert(id.to_owned());
    }
    Some(failed)
}

#[cfg(test)]
mod sqs_tests {
    #![allow(
        clippy::unwrap_used,
        reason = "test code: a panic is how a test reports failure"
    )]

    use super::*;

    fn message(id: &str) -> QueueMessage {
        QueueMessage {
            id: id.to_owned(),
            receipt_handle: format!("rh-{id}"),
            body: format!("{{\"order\": \"{id}\"}}"),
            md5_of_body: "0123456789abcdef0123456789abcdef".to_owned(),
            receive_count: 2,
            sent_timestamp_ms: 1_764_230_400_000,
            attributes: [("tenant".to_owned(), "media".to_owned())].into(),
        }
    }

    #[test]
    fn batches_read_as_aws_lambda_events_reads_an_sqs_trigger() {
        let event = sqs_event(
            "arn:aws:sqs:eu-west-1:000000000000:orders",
            "eu-west-1",
            &[message("m-1"), message("m-2")],
        );
        let parsed: aws_lambda_events::event::sqs::SqsEvent =
            serde_json::from_slice(&event).unwrap();
        assert_eq!(parsed.records.len(), 2);
        let first = &parsed.records[0];
        assert_eq!(first.message_id.as_deref(), Some("m-1"));
        assert_eq!(first.receipt_handle.as_deref(), Some("rh-m-1"));
        assert_eq!(first.body.as_deref(), Some("{\"order\": \"m-1\"}"));
        assert_eq!(first.attributes["ApproximateReceiveCount"], "2");
        assert_eq!(
            first.message_attributes["tenant"].string_value.as_deref(),
            Some("media")
        );
        assert_eq!(
            first.event_source_arn.as_deref(),
            Some("arn:aws:sqs:eu-west-1:000000000000:orders")
        );
    }

    #[test]
    fn partial_batch_responses_follow_lambdas_rules() {
        let batch = ["m-1", "m-2", "m-3"];
        let failed = |answer: &str| failed_records(answer.as_bytes(), &batch);
        let set = |ids: &[&str]| Some(ids.iter().map(|s| (*s).to_owned()).collect());
        assert_eq!(
            failed(r#"{"batchItemFailures": [{"itemIdentifier": "m-2"}]}"#),
            set(&["m-2"])
        );
        for all_succeeded in [
            r#"{"batchItemFailures": []}"#,
            r#"{"batchItemFailures": null}"#,
            r#"{}"#,
            r#"null"#,
            "",
        ] {
            assert_eq!(failed(all_succeeded), set(&[]), "{all_succeeded}");
        }
        for whole_batch in [
            r#"{"batchItemFailures": [{"itemIdentifier": ""}]}"#,
            r#"{"batchItemFailures": [{"itemIdentifier": null}]}"#,
            r#"{"batchItemFailures": [{}]}"#,
            r#"{"batchItemFailures": [{"itemIdentifier": "m-9"}]}"#,
            r#"{"batchItemFailures": "m-1"}"#,
            r#""done""#,
            "not json",
        ] {
            assert_eq!(failed(whole_batch), None, "{whole_batch}");
        }
    }
}
