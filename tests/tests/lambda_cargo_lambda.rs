//! Lambda mode under cargo-lambda's emulator (`cargo lambda watch
//! --only-lambda-apis` and `cargo lambda invoke`, from PyPI), the tool Rust
//! Lambda users test with locally, with moto serving S3. That emulator
//! sends `Lambda-Runtime-Deadline-Ms` as the function timeout (a duration)
//! rather than epoch milliseconds; the function must not read it as a
//! deadline long past.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is how a test reports failure"
)]

use serde_json::json;
use shoal_tests::cargo_lambda::CargoLambda;
use shoal_tests::moto::Moto;
use shoal_tests::stack::{corrupt_jpeg, keys, photos_and_thumbs, sqs_record, upload};

const BIN: &str = env!("CARGO_BIN_EXE_thumbnail-e2e");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sqs_batch_under_cargo_lambda_reports_only_the_corrupt_record() {
    let moto = Moto::start();
    let s3 = moto.s3();
    photos_and_thumbs(&s3, "in/cat.jpg").await;
    let corrupt = corrupt_jpeg();
    upload(&s3, "photos", &["in/corrupt.jpg".to_owned()], &corrupt).await;
    let dir = tempfile::tempdir().unwrap();
    let mut env = moto.env();
    env.push(("SHOAL_OUTPUT", "s3://thumbs/".into()));
    let emulator = CargoLambda::start(BIN, &env, dir.path());

    let chunk = |key: &str| {
        json!({"chunkId": format!("c-{key}"), "items": [{"bucket": "photos", "key": key}]})
            .to_string()
    };
    let batch = json!({"Records": [
        sqs_record("good-1", &chunk("in/cat.jpg")),
        sqs_record("corrupt-2", &chunk("in/corrupt.jpg")),
    ]});
    for round in 1..=2 {
        let answer = emulator
            .invoke(&batch)
            .unwrap_or_else(|e| panic!("round {round}: {e}\n{}", emulator.log_text()));
        assert_eq!(
            answer,
            json!({"batchItemFailures": [{"itemIdentifier": "corrupt-2"}]}),
            "round {round}: only the corrupt record fails\n{}",
            emulator.log_text()
        );
    }
    assert!(keys(&s3, "thumbs", "").await.contains("in/cat.jpg"));
    let log = emulator.log_text();
    assert!(!log.contains("timed out"), "{log}");
    assert_eq!(
        log.matches("not a wall-clock time").count(),
        1,
        "the unusable deadline is reported once:\n{log}"
    );
}
