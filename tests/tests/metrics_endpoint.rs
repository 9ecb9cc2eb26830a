//! The live metrics endpoint of a running batch, scraped over loopback and
//! checked with `promtool check metrics` (Debian's prometheus package).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is how a test reports failure"
)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use shoal_tests::prom::{http_get as get, promtool_check};

#[test]
fn promtool_accepts_the_live_metrics_of_a_running_batch() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    let jpeg = thumbnail::samples::jpeg(&thumbnail::samples::picture(2000, 1333, 5), 90);
    for i in 0..150 {
        std::fs::write(input.join(format!("img-{i:03}.jpg")), &jpeg).unwrap();
    }
    std::fs::write(input.join("broken.jpg"), thumbnail::samples::corrupt_jpeg()).unwrap();

    let mut child = Command::new(env!("CARGO_BIN_EXE_thumbnail-e2e"))
        .args([
            "run",
            "--concurrency",
            "1",
            "--log-format",
            "json",
            "--metrics-addr",
            "127.0.0.1:0",
        ])
        .arg("--input")
        .arg(&input)
        .arg("--output")
        .arg(dir.path().join("out"))
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if let Some(addr) = event.get("addr").and_then(|a| a.as_str()) {
                let _ = tx.send(addr.to_owned());
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the binary announces its metrics address");
    let base = format!("http://{addr}");

    // Scrape while the batch runs, once a few invocations are counted.
    let started = Instant::now();
    let metrics = loop {
        let (status, body) = get(&format!("{base}/metrics"));
        assert_eq!(status, 200);
        if body.contains("shoal_invocations_total{outcome=\"success\"}")
            && !body.contains("shoal_invocations_total{outcome=\"success\"} 0")
        {
            break body;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no invocations counted:\n{body}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(get(&format!("{base}/healthz")).0, 200);
    assert_eq!(
        get(&format!("{base}/readyz")).0,
        200,
        "ready while the batch runs"
    );

    for series in [
        "shoal_invocation_duration_seconds_bucket",
        "shoal_concurrent_executions",
        "shoal_invocation_errors_total{category=\"handler\"}",
        "shoal_dead_letters_total{cause=\"permanent\"}",
        "shoal_batch_items{state=\"total\"} 151",
    ] {
        assert!(metrics.contains(series), "missing {series}:\n{metrics}");
    }

    promtool_check(&metrics);

    let _ = Command::new("kill")
        .args(["-KILL", &child.id().to_string()])
        .status();
    let _ = child.wait();
}
