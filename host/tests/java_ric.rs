//! A Java Lambda function (`tests/functions/java`), compiled with `javac`
//! against `aws-lambda-java-core`, behind shoal's Runtime API, run by
//! AWS's Java runtime interface client (from Maven Central): the answer and
//! the context the function sees, warm reuse of the JVM, and the function's
//! exception as the invocation's error.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is how a test reports failure"
)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};
use shoal_host::{Environments, Failure, FunctionConfig};

/// The folder of the Java runtime interface client's jars that
/// `scripts/install-test-deps.sh` fills.
fn java_lib() -> PathBuf {
    std::env::var_os("SHOAL_LAMBDA_JAVA_LIB")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            panic!("SHOAL_LAMBDA_JAVA_LIB is not set: source scripts/install-test-deps.sh (.ci/run does)")
        })
}

/// The test function's classes, compiled into `dir`.
fn compile(dir: &Path) -> PathBuf {
    let sources = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/functions/java/example");
    let classes = dir.join("classes");
    let out = Command::new("javac")
        .arg("-cp")
        .arg(java_lib().join("*"))
        .arg("-d")
        .arg(&classes)
        .arg(sources.join("Echo.java"))
        .arg(sources.join("Fail.java"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "javac: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    classes
}

/// `java -cp … AWSLambda <handler>` as function `name`.
fn function(name: &str, classes: &Path, handler: &str) -> FunctionConfig {
    let classpath = format!("{}:{}/*", classes.display(), java_lib().display());
    let mut config = FunctionConfig::new(
        name,
        vec![
            "java".into(),
            "-cp".into(),
            classpath,
            "com.amazonaws.services.lambda.runtime.api.client.AWSLambda".into(),
            handler.into(),
        ],
    );
    config.handler = Some(handler.to_owned());
    config.memory_mb = 1024;
    config.timeout = Duration::from_secs(20);
    config.init_timeout = Duration::from_secs(60);
    config
}

fn event(value: Value) -> Bytes {
    Bytes::from(value.to_string())
}

#[tokio::test]
async fn a_java_function_answers_stays_warm_and_reports_its_exceptions() {
    let dir = tempfile::tempdir().unwrap();
    let classes = compile(dir.path());

    let environments = Environments::new(
        function("orders", &classes, "example.Echo::handleRequest"),
        1,
    );
    let (first, cold) = environments.invoke(event(json!({"orderId": 42}))).await;
    let first: Value = serde_json::from_slice(&first.unwrap()).unwrap();
    assert_eq!(first["event"], json!({"orderId": 42}));
    assert_eq!(first["requestId"], cold.request_id.as_str());
    assert_eq!(first["function"], "orders");
    assert_eq!(first["memory"], 1024);
    assert_eq!(
        first["arn"],
        "arn:aws:lambda:us-east-1:000000000000:function:orders"
    );
    let remaining = first["remainingMs"].as_i64().unwrap();
    assert!((1..=20_000).contains(&remaining), "{remaining}");
    assert!(cold.init_duration.is_some());
    let (second, warm) = environments.invoke(event(json!({"orderId": 43}))).await;
    let second: Value = serde_json::from_slice(&second.unwrap()).unwrap();
    assert_eq!(second["pid"], first["pid"], "the same JVM");
    assert_eq!(second["invocations"], 2);
    assert_eq!(warm.init_duration, None);
    environments.shutdown().await;

    let environments = Environments::new(
        function("orders", &classes, "example.Fail::handleRequest"),
        1,
    );
    let (failed, _) = environments.invoke(event(json!({"key": "poison"}))).await;
    match failed {
        Err(Failure::Function(error)) => {
            assert_eq!(error.error_type, "java.lang.IllegalArgumentException");
            assert_eq!(error.message, "cannot process poison");
            assert!(!error.trace.is_empty(), "{error:?}");
        }
        other => panic!("expected the function's exception, got {other:?}"),
    }
    let (again, _) = environments.invoke(event(json!({"key": "b"}))).await;
    assert!(matches!(again, Err(Failure::Function(_))), "{again:?}");
    assert_eq!(environments.started(), 1, "the JVM lives on after an error");
    environments.shutdown().await;
}
