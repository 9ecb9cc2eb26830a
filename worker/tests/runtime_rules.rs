//! The runtime rules every mode shares, tested on the engine with small
//! handlers: timeout, panic, retry then dead-letter, permanent error,
//! concurrency bound, resume after interruption.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is how a test reports failure"
)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use shoal_worker::engine::{Engine, EngineConfig, Outcome};
use shoal_worker::local::{self, RunOptions};
use shoal_worker::message::{ItemBody, RawItem};
use shoal_worker::metrics::{DeadLetterCause, ErrorCategory, Metrics};
use shoal_worker::retry::RetryPolicy;
use shoal_worker::store::{LocalStore, Location, ObjectStore};
use shoal_worker::{Context, Handler, HandlerError, Item, handler_fn};

fn config(concurrency: usize, timeout: Duration, max_attempts: u32) -> EngineConfig {
    EngineConfig {
        timeout,
        function_name: "test".into(),
        memory_mib: 128,
        concurrency,
        invocation_logs: shoal_worker::platform::InvocationLogs::All,
        retry: RetryPolicy {
            max_attempts,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(5),
        },
    }
}

fn engine<H: Handler>(handler: H, config: EngineConfig) -> Engine<H> {
    let store: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(std::env::temp_dir()));
    Engine::new(
        Arc::new(handler),
        store,
        None,
        config,
        Metrics::new().unwrap(),
    )
}

fn raw(id: &str) -> RawItem {
    RawItem {
        id: id.into(),
        body: ItemBody::Raw(Bytes::from(id.to_owned())),
    }
}

#[tokio::test]
async fn a_timeout_fails_that_attempt_and_cancels_its_context() {
    let saw_cancel = Arc::new(AtomicUsize::new(0));
    let seen = saw_cancel.clone();
    let e = engine(
        handler_fn(move |_item: Item<Bytes>, ctx: Context| {
            let seen = seen.clone();
            async move {
                let token = ctx.cancellation().clone();
                // Observe cancellation from a task that outlives the aborted invocation.
                tokio::spawn(async move {
                    token.cancelled().await;
                    seen.fetch_add(1, Ordering::SeqCst);
                });
                tokio::time::sleep(Duration::from_secs(30)).await;
                Ok(())
            }
        }),
        config(1, Duration::from_millis(50), 1),
    );
    let attempt = e.attempt(&raw("slow"), 1).await;
    let failure = attempt.result.unwrap_err();
    assert_eq!(failure.category, ErrorCategory::Timeout);
    assert!(
        failure
            .reason
            .starts_with("Task timed out after 0.05 seconds"),
        "{}",
        failure.reason
    );
    tokio::time::timeout(Duration::from_secs(5), async {
        while saw_cancel.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("context was cancelled at the deadline");
    let text = e.metrics().encode().unwrap();
    assert!(
        text.contains("shoal_invocation_errors_total{category=\"timeout\"} 1"),
        "{text}"
    );
}

#[tokio::test]
async fn a_panic_fails_that_item_only() {
    let e = engine(
        handler_fn(|item: Item<Bytes>, _ctx: Context| async move {
            if item.id == "boom" {
                panic!("bad item {}", item.id);
            }
            Ok(())
        }),
        config(4, Duration::from_secs(5), 1),
    );
    let ids = ["a", "boom", "b", "c"];
    let reports = futures_join(ids.iter().map(|id| {
        let e = e.clone();
        let item = raw(id);
        async move { e.process(&item).await }
    }))
    .await;
    for report in reports {
        match (report.id.as_str(), &report.outcome) {
            ("boom", Outcome::DeadLettered { cause, failure }) => {
                assert_eq!(*cause, DeadLetterCause::Exhausted);
                assert_eq!(failure.category, ErrorCategory::Panic);
                assert!(
                    failure.reason.contains("bad item boom"),
                    "{}",
                    failure.reason
                );
            }
            (_, Outcome::Succeeded { .. }) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

async fn futures_join<F: std::future::Future + Send + 'static>(
    futures: impl Iterator<Item = F>,
) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

#[tokio::test]
async fn retryable_errors_are_retried_then_dead_lettered() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let e = engine(
        handler_fn(move |_item: Item<Bytes>, ctx: Context| {
            counter.fetch_add(1, Ordering::SeqCst);
            async move {
                Err::<(), _>(HandlerError::retryable(format!(
                    "flaky on attempt {}",
                    ctx.attempt
                )))
            }
        }),
        config(1, Duration::from_secs(5), 3),
    );
    let report = e.process(&raw("x")).await;
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(report.attempts, 3);
    assert_eq!(report.durations.len(), 3);
    match report.outcome {
        Outcome::DeadLettered { cause, failure } => {
            assert_eq!(cause, DeadLetterCause::Exhausted);
            assert_eq!(failure.reason, "flaky on attempt 3");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(
        e.metrics()
            .encode()
            .unwrap()
            .contains("shoal_retries_total 2")
    );
}

#[tokio::test]
async fn a_retry_can_succeed() {
    let e = engine(
        handler_fn(|_item: Item<Bytes>, ctx: Context| async move {
            if ctx.attempt < 3 {
                Err(HandlerError::retryable("not yet"))
            } else {
                Ok(())
            }
        }),
        config(1, Duration::from_secs(5), 5),
    );
    let report = e.process(&raw("x")).await;
    assert_eq!(report.attempts, 3);
    assert_eq!(report.outcome, Outcome::Succeeded { output_key: None });
}

#[tokio::test]
async fn permanent_errors_are_dead_lettered_at_once_with_the_reason() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let e = engine(
        handler_fn(move |_item: Item<Bytes>, _ctx: Context| {
            counter.fetch_add(1, Ordering::SeqCst);
            async { Err::<(), _>(HandlerError::permanent("corrupt input")) }
        }),
        config(1, Duration::from_secs(5), 5),
    );
    let report = e.process(&raw("x")).await;
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    match report.outcome {
        Outcome::DeadLettered { cause, failure } => {
            assert_eq!(cause, DeadLetterCause::Permanent);
            assert_eq!(failure.category, ErrorCategory::Handler);
            assert_eq!(failure.reason, "corrupt input");
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_is_bounded() {
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let (r, p) = (running.clone(), peak.clone());
    let e = engine(
        handler_fn(move |_item: Item<Bytes>, _ctx: Context| {
            let (r, p) = (r.clone(), p.clone());
            async move {
                let now = r.fetch_add(1, Ordering::SeqCst) + 1;
                p.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(10)).await;
                r.fetch_sub(1, Ordering::SeqCst);
                Ok(())
            }
        }),
        config(3, Duration::from_secs(5), 1),
    );
    let reports = futures_join((0..24).map(|i| {
        let e = e.clone();
        let item = raw(&format!("i{i}"));
        async move { e.process(&item).await }
    }))
    .await;
    assert!(
        reports
            .iter()
            .all(|r| matches!(r.outcome, Outcome::Succeeded { .. }))
    );
    assert!(
        peak.load(Ordering::SeqCst) <= 3,
        "peak {}",
        peak.load(Ordering::SeqCst)
    );
    let text = e.metrics().encode().unwrap();
    assert!(
        !text.contains("shoal_throttles_total 0"),
        "24 items on 3 slots must wait:\n{text}"
    );
    assert!(text.contains("shoal_concurrent_executions 0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_work_of_a_timed_out_attempt_keeps_its_slot_so_retries_never_overlap_it() {
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let (r, p) = (running.clone(), peak.clone());
    let e = engine(
        handler_fn(move |_item: Item<Bytes>, ctx: Context| {
            let (r, p) = (r.clone(), p.clone());
            async move {
                // A decode that cannot be interrupted, longer than the timeout.
                let work = ctx.spawn_blocking(move || {
                    let now = r.fetch_add(1, Ordering::SeqCst) + 1;
                    p.fetch_max(now, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(300));
                    r.fetch_sub(1, Ordering::SeqCst);
                });
                work.await
                    .map_err(|e| HandlerError::retryable(e.to_string()))?;
                Ok(())
            }
        }),
        config(1, Duration::from_millis(50), 3),
    );
    let reports = futures_join((0..2).map(|i| {
        let e = e.clone();
        let item = raw(&format!("slow{i}"));
        async move { e.process(&item).await }
    }))
    .await;
    for report in &reports {
        assert_eq!(report.attempts, 3, "{report:?}");
        let Outcome::DeadLettered { failure, .. } = &report.outcome else {
            panic!("{report:?}");
        };
        assert_eq!(failure.category, ErrorCategory::Timeout);
    }
    assert_eq!(
        peak.load(Ordering::SeqCst),
        1,
        "abandoned blocking work ran beside a retry: --concurrency 1 exceeded"
    );
}

fn run_options(input: &std::path::Path, output: &std::path::Path) -> RunOptions {
    RunOptions {
        items_per_chunk: 3,
        tolerated_failure_percent: Some(0.0),
        progress: false,
        ..RunOptions::new(
            Location::Local(input.to_owned()),
            Location::Local(output.to_owned()),
        )
    }
}

/// Upper-cases text files; counts calls per item; fails permanently on "bad".
fn counting_handler(
    calls: Arc<Mutex<HashMap<String, usize>>>,
) -> impl Handler<Input = Bytes, Output = shoal_worker::Blob> {
    handler_fn(move |item: Item<Bytes>, _ctx: Context| {
        *calls.lock().unwrap().entry(item.id.clone()).or_default() += 1;
        async move {
            if item.id.starts_with("bad") {
                return Err(HandlerError::permanent("bad by name"));
            }
            Ok(shoal_worker::Blob {
                bytes: Bytes::from(item.payload.to_ascii_uppercase()),
                extension: "out".into(),
                content_type: "text/plain".into(),
            })
        }
    })
}

async fn run_once(
    input: &std::path::Path,
    output: &std::path::Path,
    calls: &Arc<Mutex<HashMap<String, usize>>>,
) -> local::RunSummary {
    let options = run_options(input, output);
    let in_store: Arc<dyn ObjectStore> =
        Arc::new(LocalStore::new(input).excluding(&options.excluded()));
    let out_store: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(output));
    let e = Engine::new(
        Arc::new(counting_handler(calls.clone())),
        in_store,
        Some(out_store),
        config(2, Duration::from_secs(5), 2),
        Metrics::new().unwrap(),
    );
    local::run(e, &options).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rerun_resumes_without_redoing_finished_items() {
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = (dir.path().join("in"), dir.path().join("out"));
    std::fs::create_dir_all(input.join("sub")).unwrap();
    for name in [
        "a.txt",
        "b.txt",
        "sub/c.txt",
        "bad.txt",
        "d.txt",
        "e.txt",
        "f.txt",
    ] {
        std::fs::write(input.join(name), name).unwrap();
    }
    let calls = Arc::new(Mutex::new(HashMap::new()));

    let first = run_once(&input, &output, &calls).await;
    assert_eq!(
        (first.total, first.succeeded, first.dead_lettered),
        (7, 6, 1)
    );
    assert_eq!(
        std::fs::read_to_string(output.join("sub/c.out")).unwrap(),
        "SUB/C.TXT"
    );
    let dead = std::fs::read_to_string(output.join(".shoal/dead-letters.jsonl")).unwrap();
    assert!(
        dead.contains("\"item\":\"bad.txt\"") && dead.contains("bad by name"),
        "{dead}"
    );

    // Nothing changed: nothing is processed again, the dead letter still counts.
    let second = run_once(&input, &output, &calls).await;
    assert_eq!((second.succeeded, second.dead_lettered), (0, 0));
    assert_eq!(
        (second.skipped_succeeded, second.skipped_dead_lettered),
        (6, 1)
    );
    assert!(!second.within_tolerance(0.0));
    assert!(calls.lock().unwrap().values().all(|&n| n == 1), "{calls:?}");

    // A deleted output and a changed input are redone; nothing else is.
    std::fs::remove_file(output.join("a.out")).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    std::fs::write(input.join("b.txt"), "changed").unwrap();
    let third = run_once(&input, &output, &calls).await;
    assert_eq!(third.succeeded, 2);
    let calls = calls.lock().unwrap();
    assert_eq!(calls["a.txt"], 2);
    assert_eq!(calls["b.txt"], 2);
    assert_eq!(calls["d.txt"], 1);
    assert_eq!(
        std::fs::read_to_string(output.join("b.out")).unwrap(),
        "CHANGED"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_drain_queued_items_do_not_start_but_running_ones_finish() {
    let started = Arc::new(AtomicUsize::new(0));
    let counter = started.clone();
    let e = engine(
        handler_fn(move |_item: Item<Bytes>, _ctx: Context| {
            counter.fetch_add(1, Ordering::SeqCst);
            async {
                tokio::time::sleep(Duration::from_millis(200)).await;
                Ok(())
            }
        }),
        config(1, Duration::from_secs(5), 3),
    );
    let handles: Vec<_> = (0..5)
        .map(|i| {
            let e = e.clone();
            tokio::spawn(async move { e.process(&raw(&format!("i{i}"))).await })
        })
        .collect();
    while started.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    e.drain();
    let mut outcomes = Vec::new();
    for h in handles {
        outcomes.push(h.await.unwrap());
    }
    assert_eq!(
        started.load(Ordering::SeqCst),
        1,
        "nothing starts after drain"
    );
    let succeeded = outcomes
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Succeeded { .. }))
        .count();
    let abandoned: Vec<_> = outcomes
        .iter()
        .filter(|r| r.outcome == Outcome::Abandoned)
        .collect();
    assert_eq!(succeeded, 1, "the running item finishes");
    assert_eq!(abandoned.len(), 4);
    assert!(
        abandoned
            .iter()
            .all(|r| r.attempts == 0 && r.durations.is_empty())
    );
}
