//! A custom-runtime function behind shoal's Runtime API host
//! (`shoal-host`): the `thumbnail-e2e` binary in its Lambda mode, which
//! talks to the Runtime API through AWS's Rust client (`lambda_runtime`),
//! exactly as it does on AWS and on the Runtime Interface Emulator
//! (`lambda_rie.rs` makes the same invocations there). S3 on moto.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is how a test reports failure"
)]

use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};
use shoal_host::{Environments, Failure, FunctionConfig};
use shoal_tests::moto::Moto;
use shoal_tests::stack::{keys, photos_and_thumbs, sqs_record};

const BIN: &str = env!("CARGO_BIN_EXE_thumbnail-e2e");

fn event(value: &Value) -> Bytes {
    Bytes::from(value.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shoals_lambda_mode_runs_behind_the_host_as_on_the_emulator() {
    let moto = Moto::start();
    let s3 = moto.s3();
    photos_and_thumbs(&s3, "in/cat.jpg").await;
    let mut config = FunctionConfig::new("thumbs", vec![BIN.to_owned()]);
    config.timeout = Duration::from_secs(30);
    config.init_timeout = Duration::from_secs(30);
    config.memory_mb = 256;
    config.env = moto
        .env()
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .chain([("SHOAL_OUTPUT".to_owned(), "s3://thumbs/".to_owned())])
        .collect();
    let environments = Environments::new(config, 1);

    // An SQS batch with one good chunk and one poison record: the partial
    // batch response names exactly the poison one.
    let chunk = json!({"chunkId": "c-1", "items": [{"bucket": "photos", "key": "in/cat.jpg"}]});
    let batch = json!({"Records": [
        sqs_record("good-1", &chunk.to_string()),
        sqs_record("poison-2", r#"{"chunkId": "c-2", "items": 42}"#),
    ]});
    let (answer, cold) = environments.invoke(event(&batch)).await;
    let answer: Value = serde_json::from_slice(&answer.unwrap()).unwrap();
    assert_eq!(
        answer,
        json!({"batchItemFailures": [{"itemIdentifier": "poison-2"}]})
    );
    assert!(keys(&s3, "thumbs", "").await.contains("in/cat.jpg"));
    assert!(cold.init_duration.is_some());

    // A direct invoke of a missing object: the function's error, its
    // reason intact; the environment stays warm.
    let (failed, warm) = environments
        .invoke(event(&json!({"bucket": "photos", "key": "in/missing.jpg"})))
        .await;
    match failed {
        Err(Failure::Function(error)) => {
            assert!(
                error.message.contains("in/missing.jpg") && error.message.contains("not found"),
                "{error:?}"
            );
        }
        other => panic!("expected the function's error, got {other:?}"),
    }
    assert_eq!(warm.environment, cold.environment);
    assert_eq!(warm.init_duration, None);
    assert!(warm.max_memory_used_mb.is_some_and(|mb| mb > 0));
    assert_eq!(environments.started(), 1);
    environments.shutdown().await;
}
