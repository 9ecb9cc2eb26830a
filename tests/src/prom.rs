//! Reading a live `/metrics` endpoint and checking it with promtool.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::tool;

/// An HTTP client that returns 4xx/5xx answers instead of failing on them,
/// giving up after `timeout`.
pub fn http_agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .build()
        .into()
}

/// GET `url`: status and body (any status, no error for 4xx/5xx).
pub fn http_get(url: &str) -> (u16, String) {
    let mut response = http_agent(Duration::from_secs(10))
        .get(url)
        .call()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = response.status().as_u16();
    let body = response
        .body_mut()
        .read_to_string()
        .unwrap_or_else(|e| panic!("GET {url}: body: {e}"));
    (status, body)
}

/// Panics unless `promtool check metrics` accepts `metrics` silently.
pub fn promtool_check(metrics: &str) {
    let promtool = tool("promtool", "prometheus");
    let mut check = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run promtool: {e}"));
    if let Some(mut stdin) = check.stdin.take() {
        stdin
            .write_all(metrics.as_bytes())
            .unwrap_or_else(|e| panic!("cannot feed promtool: {e}"));
    }
    let result = check
        .wait_with_output()
        .unwrap_or_else(|e| panic!("promtool: {e}"));
    let complaints = format!(
        "{}{}",
        String::from_utf8_lossy(&result.stdout),
        String::from_utf8_lossy(&result.stderr)
    );
    assert!(
        result.status.success() && complaints.trim().is_empty(),
        "promtool: {complaints}\n{metrics}"
    );
}

/// The value of one sample (`name{labels}` exactly as exposed).
pub fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let rest = line.strip_prefix(series)?;
        rest.strip_prefix(' ')?.trim().parse().ok()
    })
}

/// The value of the sample of `name` whose labels include every pair of
/// `labels` (whatever else it carries, in any order).
pub fn sample_with(metrics: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?.strip_prefix('{')?;
        let (set, value) = rest.split_once("} ")?;
        labels
            .iter()
            .all(|(k, v)| set.split(',').any(|pair| pair == format!("{k}=\"{v}\"")))
            .then(|| value.trim().parse().ok())?
    })
}

/// A Prometheus Pushgateway (Debian's prometheus-pushgateway) on a free
/// loopback port, in memory only; stopped when the handle drops.
pub struct Pushgateway {
    _process: crate::process::Proc,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
}

impl Pushgateway {
    /// Starts the gateway and waits until it answers.
    pub fn start(log: &std::path::Path) -> Self {
        let binary = tool("prometheus-pushgateway", "prometheus-pushgateway");
        let port = crate::free_port();
        let listen = format!("--web.listen-address=127.0.0.1:{port}");
        let process = crate::process::Proc::spawn(&binary.to_string_lossy(), &[&listen], &[], log);
        let url = format!("http://127.0.0.1:{port}");
        let ready = format!("{url}/-/ready");
        let started = std::time::Instant::now();
        loop {
            let answer = http_agent(Duration::from_secs(2)).get(&ready).call();
            if answer.is_ok_and(|r| r.status().is_success()) {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the Pushgateway did not become ready on {url}; log:\n{}",
                process.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            _process: process,
            url,
        }
    }

    /// Everything the gateway exposes right now.
    pub fn metrics(&self) -> String {
        let (status, body) = http_get(&format!("{}/metrics", self.url));
        assert_eq!(status, 200, "{body}");
        body
    }
}
