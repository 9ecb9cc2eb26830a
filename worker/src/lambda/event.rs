//! What a Lambda invocation carries, told apart without the runtime: an SQS
//! batch (answered with a partial batch response) or anything else, which
//! is handled as a direct invoke (a chunk, an S3 event, an SNS-wrapped S3
//! event, a bare object reference, a raw payload).

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use serde_json::Value;

/// One SQS record of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqsRecord {
    /// The message id (what a partial batch response names).
    pub message_id: String,
    /// The message body.
    pub body: String,
    /// How often SQS has delivered it (1-based).
    pub receive_count: u32,
}

/// The two shapes an invocation comes in.
#[derive(Debug, Clone, PartialEq)]
pub enum Invocation {
    /// An SQS event source mapping's batch.
    Sqs(Vec<SqsRecord>),
    /// Any other payload, decoded like `invoke --event`.
    Direct(Value),
}

/// Tells an SQS batch (every record has `eventSource: aws:sqs`) from any
/// other payload.
pub fn classify(payload: Value) -> Invocation {
    let is_sqs = payload
        .get("Records")
        .and_then(Value::as_array)
        .is_some_and(|records| {
            !records.is_empty()
                && records
                    .iter()
                    .all(|r| r.get("eventSource").and_then(Value::as_str) == Some("aws:sqs"))
        });
    if !is_sqs {
        return Invocation::Direct(payload);
    }
    match serde_json::from_value::<SqsEvent>(payload.clone()) {
        Ok(event) => Invocation::Sqs(
            event
                .records
                .into_iter()
                .enumerate()
                .map(|(index, record)| SqsRecord {
                    message_id: record
                        .message_id
                        .unwrap_or_else(|| format!("record-{index}")),
                    body: record.body.unwrap_or_default(),
                    receive_count: record
                        .attributes
                        .get("ApproximateReceiveCount")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(1),
                })
                .collect(),
        ),
        // Looked like SQS but is not: let the direct path report why.
        Err(_) => Invocation::Direct(payload),
    }
}

/// The partial batch response naming the failed message ids (an empty list
/// means the whole batch succeeded).
pub fn batch_response(failed: impl IntoIterator<Item = String>) -> SqsBatchResponse {
    let mut response = SqsBatchResponse::default();
    response.batch_item_failures = failed
        .into_iter()
        .map(|item_identifier| {
            let mut failure = BatchItemFailure::default();
            failure.item_identifier = item_identifier;
            failure
        })
        .collect();
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_protocol::fuzzing;

    fn fixture(name: &str) -> Value {
        serde_json::from_slice(&fuzzing::fixture(name).unwrap()).unwrap()
    }

    #[test]
    fn sqs_fixture_round_trips_and_classifies_as_a_batch() {
        let value = fixture("sqs-event.json");
        let event: SqsEvent = serde_json::from_value(value.clone()).unwrap();
        let again = serde_json::to_value(&event).unwrap();
        let reparsed: SqsEvent = serde_json::from_value(again).unwrap();
        assert_eq!(event, reparsed);
        let Invocation::Sqs(records) = classify(value) else {
            panic!("not classified as SQS");
        };
        assert_eq!(records.len(), 2);
        assert_eq!(
            records[0].message_id,
            "2e1424d4-f796-459a-8184-9c92662be6da"
        );
        assert_eq!(records[1].receive_count, 3);
        assert!(records[0].body.contains("chunkId"));
    }

    #[test]
    fn s3_and_sns_fixtures_round_trip_and_are_direct() {
        use aws_lambda_events::event::s3::S3Event;
        use aws_lambda_events::event::sns::SnsEvent;
        let s3 = fixture("s3-event.json");
        let event: S3Event = serde_json::from_value(s3.clone()).unwrap();
        let reparsed: S3Event =
            serde_json::from_value(serde_json::to_value(&event).unwrap()).unwrap();
        assert_eq!(event, reparsed);
        assert!(matches!(classify(s3), Invocation::Direct(_)));
        let sns = fixture("sns-s3-event.json");
        let event: SnsEvent = serde_json::from_value(sns.clone()).unwrap();
        let reparsed: SnsEvent =
            serde_json::from_value(serde_json::to_value(&event).unwrap()).unwrap();
        assert_eq!(event, reparsed);
        assert!(matches!(classify(sns), Invocation::Direct(_)));
    }

    #[test]
    fn partial_batch_response_has_lambdas_field_names() {
        let response = batch_response(["m-2".to_owned()]);
        assert_eq!(
            serde_json::to_value(&response).unwrap(),
            serde_json::json!({"batchItemFailures": [{"itemIdentifier": "m-2"}]})
        );
        assert_eq!(
            serde_json::to_value(batch_response(Vec::new())).unwrap(),
            serde_json::json!({"batchItemFailures": []})
        );
    }

    #[test]
    fn a_chunk_or_object_reference_is_direct() {
        assert!(matches!(
            classify(serde_json::json!({"key": "cat.jpg"})),
            Invocation::Direct(_)
        ));
        assert!(matches!(
            classify(serde_json::json!({"Records": []})),
            Invocation::Direct(_)
        ));
    }

    proptest::proptest! {
        #[test]
        fn fuzz_any_payload_classifies_without_panicking(value in fuzzing::json()) {
            let _ = classify(value);
        }

        #[test]
        fn fuzz_damaged_sqs_events_classify_without_panicking(
            bytes in fuzzing::mutated(fuzzing::fixture("sqs-event.json").unwrap())
        ) {
            if let Ok(value) = serde_json::from_slice::<Value>(&bytes) {
                let _ = classify(value);
            }
        }
    }
}
