//! Python Lambda functions (`tests/functions/python`), unchanged, behind
//! shoal's Runtime API, run by AWS's own runtime interface client
//! (`python3 -m awslambdaric MODULE.HANDLER`, from PyPI): responses and the
//! context the function sees, warm reuse of an environment, the function's
//! own errors, an SQS batch answered with a partial batch response, a
//! timeout and a crash ending their environment (the next
//! invocation gets a fresh one), an init error, an init timeout, a response
//! over the limit, and environments running side by side.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is how a test reports failure"
)]

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};
use shoal_host::{Environments, Failure, FunctionConfig};

/// The Python of the virtualenv with awslambdaric that
/// `scripts/install-test-deps.sh` makes.
fn python() -> String {
    std::env::var("SHOAL_LAMBDA_PYTHON").unwrap_or_else(|_| {
        panic!("SHOAL_LAMBDA_PYTHON is not set: source scripts/install-test-deps.sh (.ci/run does)")
    })
}

/// Function `name` running `python -m awslambdaric <handler>` in the test
/// functions' folder.
fn function(name: &str, handler: &str) -> FunctionConfig {
    let mut config = FunctionConfig::new(
        name,
        vec![python(), "-m".into(), "awslambdaric".into(), handler.into()],
    );
    config.task_root =
        Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/functions/python"));
    config.handler = Some(handler.to_owned());
    config.timeout = Duration::from_secs(10);
    config.init_timeout = Duration::from_secs(20);
    config
}

fn event(value: Value) -> Bytes {
    Bytes::from(value.to_string())
}

fn answer(result: Result<Bytes, Failure>) -> Value {
    let bytes = result.unwrap_or_else(|f| panic!("the invocation failed: {f}"));
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test]
async fn a_python_function_answers_with_lambdas_context_and_stays_warm() {
    let mut config = function("thumbnails", "app.echo");
    config.memory_mb = 512;
    config.region = "eu-west-1".into();
    config.env = vec![("JOB_SETTING".into(), "from the job".into())];
    let environments = Environments::new(config, 1);
    let (first, report) = environments.invoke(event(json!({"key": "cat.jpg"}))).await;
    let first = answer(first);
    assert_eq!(first["event"], json!({"key": "cat.jpg"}));
    assert_eq!(first["requestId"], report.request_id.as_str());
    assert_eq!(first["function"], "thumbnails");
    assert_eq!(first["memory"], "512");
    assert_eq!(
        first["arn"],
        "arn:aws:lambda:eu-west-1:000000000000:function:thumbnails"
    );
    assert_eq!(first["logGroup"], "/aws/lambda/thumbnails");
    let remaining = first["remainingMs"].as_i64().unwrap();
    assert!((1..=10_000).contains(&remaining), "{remaining}");
    let env = &first["env"];
    assert_eq!(env["AWS_REGION"], "eu-west-1");
    assert_eq!(env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"], "512");
    assert_eq!(env["_HANDLER"], "app.echo");
    assert_eq!(env["JOB_SETTING"], "from the job");
    assert!(
        env["LAMBDA_TASK_ROOT"]
            .as_str()
            .unwrap()
            .ends_with("functions/python")
    );
    assert!(report.init_duration.is_some(), "a cold start reports init");
    assert!(report.max_memory_used_mb.is_some_and(|mb| mb > 0));

    // Warm: the same process, its globals kept, no init reported.
    let (second, warm) = environments.invoke(event(json!([1, 2]))).await;
    let second = answer(second);
    assert_eq!(second["pid"], first["pid"]);
    assert_eq!(second["invocations"], 2);
    assert_eq!(second["event"], json!([1, 2]));
    assert_ne!(second["requestId"], first["requestId"]);
    assert_eq!(warm.init_duration, None);
    assert_eq!(warm.environment, report.environment);
    assert_eq!(environments.started(), 1);
    environments.shutdown().await;
}

#[tokio::test]
async fn shoals_own_settings_stay_out_of_the_functions_environment() {
    // The host's SHOAL_* settings (a worker's queue URL...) are not the
    // function's; the rest of the host's environment is.
    let mut command = std::process::Command::new(std::env::current_exe().unwrap());
    command
        .args([
            "--exact",
            "child_sees_no_shoal_setting",
            "--include-ignored",
            "--nocapture",
        ])
        .env("SHOAL_QUEUE", "https://sqs.example/secret-queue")
        .env("SHOAL_HOST_CHILD", "1");
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 passed"));
}

/// Run by the test above in a process of its own, with `SHOAL_QUEUE` set.
#[tokio::test]
#[ignore = "run by shoals_own_settings_stay_out_of_the_functions_environment"]
async fn child_sees_no_shoal_setting() {
    assert_eq!(std::env::var("SHOAL_HOST_CHILD").as_deref(), Ok("1"));
    let environments = Environments::new(function("env", "app.echo"), 1);
    let (result, _) = environments.invoke(event(json!({}))).await;
    let seen = answer(result);
    assert_eq!(seen["env"]["SHOAL_QUEUE"], Value::Null);
    environments.shutdown().await;
}

#[tokio::test]
async fn an_sqs_batch_and_the_functions_partial_batch_response() {
    use shoal_host::events::{QueueMessage, failed_records, sqs_event};
    let environments = Environments::new(function("orders", "app.batch"), 1);
    let messages: Vec<QueueMessage> = ["fine", "poison", "fine too"]
        .iter()
        .enumerate()
        .map(|(n, body)| QueueMessage {
            id: format!("m-{n}"),
            receipt_handle: format!("rh-{n}"),
            body: (*body).to_owned(),
            md5_of_body: String::new(),
            receive_count: 1,
            sent_timestamp_ms: 1_764_230_400_000,
            attributes: Default::default(),
        })
        .collect();
    let batch = sqs_event(
        "arn:aws:sqs:us-east-1:000000000000:orders",
        "us-east-1",
        &messages,
    );
    let (answer, _) = environments.invoke(batch).await;
    let ids: Vec<&str> = messages.iter().map(|m| m.id.as_str()).collect();
    let failed = failed_records(&answer.unwrap(), &ids);
    assert_eq!(failed, Some(["m-1".to_owned()].into()));
    environments.shutdown().await;
}

#[tokio::test]
async fn the_functions_errors_fail_the_invocation_and_keep_the_environment() {
    let environments = Environments::new(function("errors", "app.fail"), 1);
    let (result, first) = environments
        .invoke(event(json!({"key": "poison.jpg"})))
        .await;
    match result {
        Err(Failure::Function(error)) => {
            assert_eq!(error.error_type, "ValueError");
            assert_eq!(error.message, "cannot process poison.jpg");
            assert!(!error.trace.is_empty());
        }
        other => panic!("expected the function's ValueError, got {other:?}"),
    }
    let (again, second) = environments.invoke(event(json!({"key": "b"}))).await;
    assert!(matches!(again, Err(Failure::Function(_))), "{again:?}");
    assert_eq!(second.environment, first.environment, "still warm");
    assert_eq!(environments.started(), 1);
    environments.shutdown().await;
}

#[tokio::test]
async fn a_timeout_or_a_crash_ends_the_environment_and_the_next_one_is_fresh() {
    let mut config = function("naps", "app.nap");
    config.timeout = Duration::from_secs(2);
    let environments = Environments::new(config, 1);
    let (ok, warm) = environments.invoke(event(json!({"seconds": 0}))).await;
    let pid = answer(ok)["pid"].clone();
    let (late, timed_out) = environments.invoke(event(json!({"seconds": 30}))).await;
    assert_eq!(late, Err(Failure::Timeout(Duration::from_secs(2))));
    assert_eq!(timed_out.environment, warm.environment);
    assert_eq!(
        Failure::Timeout(Duration::from_secs(2)).to_string(),
        "Task timed out after 2.00 seconds"
    );
    let pid_alive = std::path::Path::new(&format!("/proc/{pid}")).exists();
    assert!(!pid_alive, "the timed-out process {pid} was killed");
    let (fresh, report) = environments.invoke(event(json!({"seconds": 0}))).await;
    let fresh = answer(fresh);
    assert_ne!(fresh["pid"], pid);
    assert!(report.init_duration.is_some(), "a fresh environment inits");
    assert_eq!(environments.started(), 2);
    environments.shutdown().await;

    let environments = Environments::new(function("crashes", "app.crash"), 1);
    let (crashed, _) = environments.invoke(event(json!({}))).await;
    assert_eq!(
        crashed,
        Err(Failure::Exited("exit status 3".into())),
        "os._exit(3) mid-invocation"
    );
    let (again, _) = environments.invoke(event(json!({}))).await;
    assert!(matches!(again, Err(Failure::Exited(_))));
    assert_eq!(
        environments.started(),
        2,
        "each crash costs its environment"
    );
}

#[tokio::test]
async fn init_errors_and_init_timeouts_fail_clearly_and_are_tried_again() {
    let environments = Environments::new(function("broken", "broken.handler"), 1);
    let (result, report) = environments.invoke(event(json!({}))).await;
    match &result {
        Err(Failure::Init(error)) => {
            // The exception the import raised, posted to /init/error.
            assert_eq!(error.error_type, "RuntimeError", "{error:?}");
            assert_eq!(error.message, "THUMBNAIL_BUCKET is not set");
            assert!(
                error.trace.last().is_some_and(|f| f.contains("broken.py")),
                "{error:?}"
            );
        }
        other => panic!("expected an init error, got {other:?}"),
    }
    assert!(report.init_duration.is_some());
    let (again, _) = environments.invoke(event(json!({}))).await;
    assert!(matches!(again, Err(Failure::Init(_))), "{again:?}");
    assert_eq!(environments.started(), 2, "init is tried again");

    let mut config = function("slow", "slow_start.handler");
    config.init_timeout = Duration::from_secs(2);
    let environments = Environments::new(config, 1);
    let (result, _) = environments.invoke(event(json!({}))).await;
    match result {
        Err(Failure::Init(error)) => {
            assert_eq!(error.error_type, "Sandbox.Timedout");
            assert_eq!(error.message, "init did not finish within 2.00 seconds");
        }
        other => panic!("expected an init timeout, got {other:?}"),
    }

    let missing = FunctionConfig::new("missing", vec!["/nonexistent/bootstrap".into()]);
    let (result, _) = Environments::new(missing, 1).invoke(event(json!({}))).await;
    match result {
        Err(Failure::Init(error)) => {
            assert_eq!(error.error_type, "Runtime.InvalidEntrypoint");
            assert!(
                error
                    .message
                    .starts_with("cannot start /nonexistent/bootstrap")
            );
        }
        other => panic!("expected a missing entrypoint, got {other:?}"),
    }
}

/// Processes whose environment holds `marker`.
fn processes_marked(marker: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .chars()
                .all(|c| c.is_ascii_digit())
        })
        .filter(|e| {
            std::fs::read(e.path().join("environ"))
                .is_ok_and(|env| env.windows(marker.len()).any(|w| w == marker.as_bytes()))
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

#[tokio::test]
async fn an_invocation_abandoned_during_init_leaves_no_process() {
    // As when a client of `shoal-host serve` hangs up during a cold start.
    let marker = format!("SHOAL_HOST_TEST_MARK=abandoned-{}", std::process::id());
    let (name, value) = marker.split_once('=').unwrap();
    let mut config = function("slow", "slow_start.handler");
    config.env = vec![(name.to_owned(), value.to_owned())];
    // SHOAL_* settings of the host are removed, the job's are kept.
    let environments = Environments::new(config, 1);
    let abandoned = tokio::time::timeout(
        Duration::from_secs(2),
        environments.invoke(event(json!({}))),
    )
    .await;
    assert!(abandoned.is_err(), "the import sleeps 60 s");
    for _ in 0..50 {
        if processes_marked(&marker).is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("left running: {:?}", processes_marked(&marker));
}

#[tokio::test]
async fn a_response_over_the_limit_fails_and_ends_the_environment() {
    let mut config = function("big", "app.big");
    config.max_response_bytes = 64 * 1024;
    let environments = Environments::new(config, 1);
    let (fits, _) = environments.invoke(event(json!({"bytes": 1000}))).await;
    assert_eq!(fits.unwrap().len(), 1002, "a JSON string of 1000 x");
    let (result, _) = environments.invoke(event(json!({"bytes": 200_000}))).await;
    assert_eq!(result, Err(Failure::ResponseTooLarge(64 * 1024)));
    let (after, report) = environments.invoke(event(json!({"bytes": 10}))).await;
    assert!(after.is_ok(), "{after:?}");
    assert!(report.init_duration.is_some(), "a fresh environment");
    environments.shutdown().await;
}

#[tokio::test]
async fn environments_run_side_by_side_one_invocation_each() {
    let environments = std::sync::Arc::new(Environments::new(function("naps", "app.nap"), 3));
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let environments = environments.clone();
        tasks.push(tokio::spawn(async move {
            let (result, report) = environments.invoke(event(json!({"seconds": 0.5}))).await;
            (answer(result)["pid"].as_i64().unwrap(), report.environment)
        }));
    }
    let mut by_environment = std::collections::BTreeMap::new();
    for task in tasks {
        let (pid, environment) = task.await.unwrap();
        by_environment
            .entry(environment)
            .or_insert_with(std::collections::BTreeSet::new)
            .insert(pid);
    }
    assert_eq!(
        environments.started(),
        3,
        "3 at once, then reused: {by_environment:?}"
    );
    for pids in by_environment.values() {
        assert_eq!(pids.len(), 1, "one process per environment");
    }
    let pids: std::collections::BTreeSet<i64> =
        by_environment.values().flatten().copied().collect();
    assert_eq!(pids.len(), by_environment.len());
    environments.shutdown().await;
}
