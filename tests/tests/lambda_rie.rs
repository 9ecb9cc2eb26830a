//! Lambda mode on the AWS Runtime Interface Emulator (built from its Go
//! module by the test command), with moto serving S3. The same
//! `thumbnail-e2e` binary is the function's bootstrap: no flag, the
//! emulator's AWS_LAMBDA_RUNTIME_API selects Lambda mode.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is how a test reports failure"
)]

use serde_json::json;
use shoal_tests::moto::Moto;
use shoal_tests::prom::{Pushgateway, promtool_check, sample_with};
use shoal_tests::rie::Rie;
use shoal_tests::stack::{keys, photos_and_thumbs, sqs_record, tiny_jpeg};

const BIN: &str = env!("CARGO_BIN_EXE_thumbnail-e2e");

async fn photos(moto: &Moto) -> aws_sdk_s3::Client {
    let s3 = moto.s3();
    photos_and_thumbs(&s3, "in/cat.jpg").await;
    s3
}

fn function_env(moto: &Moto, extra: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
    let mut env = moto.env();
    env.push(("SHOAL_OUTPUT", "s3://thumbs/".into()));
    env.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
    env
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs_batch_s3_event_and_direct_invoke_on_the_emulator() {
    let moto = Moto::start();
    let s3 = photos(&moto).await;
    let dir = tempfile::tempdir().unwrap();
    let rie = Rie::start(BIN, &function_env(&moto, &[]), &dir.path().join("rie.log"));

    // An SQS batch with one good chunk and one poison record: the partial
    // batch response names exactly the poison one.
    let chunk = json!({"chunkId": "c-1", "items": [{"bucket": "photos", "key": "in/cat.jpg"}]});
    let batch = json!({"Records": [
        sqs_record("good-1", &chunk.to_string()),
        sqs_record("poison-2", r#"{"chunkId": "c-2", "items": 42}"#),
    ]});
    let (status, answer) = rie.invoke(&batch);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer,
        json!({"batchItemFailures": [{"itemIdentifier": "poison-2"}]}),
        "{}",
        rie.log_text()
    );
    assert!(keys(&s3, "thumbs", "").await.contains("in/cat.jpg"));

    // An S3 event notification (key URL-encoded as S3 sends it).
    s3.put_object()
        .bucket("photos")
        .key("in/holiday dog.jpg")
        .body(tiny_jpeg().into())
        .send()
        .await
        .unwrap();
    let event = json!({"Records": [{
        "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
        "eventName": "ObjectCreated:Put",
        "s3": {"bucket": {"name": "photos"}, "object": {"key": "in/holiday+dog.jpg", "size": 1}}
    }]});
    let (status, answer) = rie.invoke(&event);
    assert_eq!(status, 200);
    assert_eq!(answer, json!({"succeeded": ["in/holiday dog.jpg"]}));
    assert!(keys(&s3, "thumbs", "").await.contains("in/holiday dog.jpg"));

    // A direct invoke with a missing object fails with its reason.
    let (_, answer) = rie.invoke(&json!({"bucket": "photos", "key": "in/missing.jpg"}));
    let message = answer["errorMessage"].as_str().unwrap_or_default();
    assert!(
        message.contains("in/missing.jpg") && message.contains("not found"),
        "{answer}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_invocation_reports_an_error_and_the_next_one_is_served() {
    let moto = Moto::start();
    let s3 = photos(&moto).await;
    let dir = tempfile::tempdir().unwrap();
    // Every invocation sleeps 1.5 s first; the timeout is 0.5 s.
    let env = function_env(
        &moto,
        &[("SHOAL_E2E_DELAY_MS", "1500"), ("SHOAL_TIMEOUT", "0.5")],
    );
    let rie = Rie::start(BIN, &env, &dir.path().join("rie.log"));
    let item = json!({"bucket": "photos", "key": "in/cat.jpg"});
    let (_, first) = rie.invoke(&item);
    let message = first["errorMessage"].as_str().unwrap_or_default();
    assert!(
        message.contains("Task timed out after 0.50 seconds"),
        "{first}"
    );
    // The process is still serving: the next invocation is answered too.
    let (_, second) = rie.invoke(&item);
    assert!(
        second["errorMessage"]
            .as_str()
            .unwrap_or_default()
            .contains("timed out"),
        "{second}"
    );
    assert!(keys(&s3, "thumbs", "").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invocation_metrics_reach_a_pushgateway_and_a_dead_gateway_fails_nothing() {
    let moto = Moto::start();
    let s3 = photos(&moto).await;
    let dir = tempfile::tempdir().unwrap();
    let gateway = Pushgateway::start(&dir.path().join("pushgateway.log"));
    let env = function_env(
        &moto,
        &[
            ("SHOAL_PUSHGATEWAY_URL", &gateway.url),
            ("AWS_LAMBDA_FUNCTION_NAME", "thumbs-test"),
        ],
    );
    let rie = Rie::start(BIN, &env, &dir.path().join("rie.log"));
    let good = json!({"bucket": "photos", "key": "in/cat.jpg"});
    let missing = json!({"bucket": "photos", "key": "in/missing.jpg"});
    assert_eq!(rie.invoke(&good).0, 200);
    assert_eq!(rie.invoke(&good).0, 200);
    rie.invoke(&missing);

    // Each invocation pushed before answering: the gateway already has the
    // counts of all three, under the function's grouping key.
    let pushed = gateway.metrics();
    promtool_check(&pushed);
    let group = [("job", "shoal"), ("function", "thumbs-test")];
    let outcome = |o: &'static str| {
        let mut labels = group.to_vec();
        labels.push(("outcome", o));
        sample_with(&pushed, "shoal_invocations_total", &labels)
    };
    assert_eq!(outcome("success"), Some(2.0), "{pushed}");
    assert_eq!(outcome("error"), Some(1.0), "{pushed}");
    let mut input_errors = group.to_vec();
    input_errors.push(("category", "input"));
    assert_eq!(
        sample_with(&pushed, "shoal_invocation_errors_total", &input_errors),
        Some(1.0),
        "{pushed}"
    );
    assert!(keys(&s3, "thumbs", "").await.contains("in/cat.jpg"));
    drop(rie);

    // With nobody listening at the gateway's address, invocations still
    // succeed; the failed push is logged.
    let nobody = format!("http://127.0.0.1:{}", shoal_tests::free_port());
    let env = function_env(&moto, &[("SHOAL_PUSHGATEWAY_URL", &nobody)]);
    let rie = Rie::start(BIN, &env, &dir.path().join("rie-dead-gateway.log"));
    let (status, answer) = rie.invoke(&good);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer, json!({"succeeded": ["in/cat.jpg"]}));
    assert!(
        rie.log_text().contains("metrics push failed"),
        "{}",
        rie.log_text()
    );
}

#[test]
fn outside_lambda_a_missing_service_variable_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut function = shoal_tests::process::Proc::spawn(
        BIN,
        &[],
        &[("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9".into())],
        &dir.path().join("function.log"),
    );
    let status = function.wait(std::time::Duration::from_secs(30));
    let log = function.log_text();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(
        log.contains("AWS_LAMBDA_FUNCTION_NAME") && !log.contains("panic"),
        "{log}"
    );
}
