//! `shoal-host serve -- python3 -m awslambdaric …`: the Invoke API the
//! Runtime Interface Emulator serves, in front of two environments of a
//! Python function: answers, the function's error flagged as Lambda flags
//! it, a payload over 6 MB refused, two invocations at once in two
//! processes, REPORT lines, and SIGTERM ending the function processes.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is how a test reports failure"
)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

const HOST: &str = env!("CARGO_BIN_EXE_shoal-host");

/// A running `shoal-host serve` and what it printed.
struct Served {
    child: Child,
    url: String,
    log: Arc<Mutex<String>>,
}

impl Served {
    fn start(handler: &str) -> Self {
        let python = std::env::var("SHOAL_LAMBDA_PYTHON").unwrap_or_else(|_| {
            panic!("SHOAL_LAMBDA_PYTHON is not set: source scripts/install-test-deps.sh")
        });
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/functions/python");
        let mut child = Command::new(HOST)
            .args(["serve", "--listen", "127.0.0.1:0", "--concurrency", "2"])
            .args(["--timeout", "10", "--function-name", "pythonic"])
            .arg("--task-root")
            .arg(&root)
            .args(["--", &python, "-m", "awslambdaric", handler])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (address, found) = std::sync::mpsc::channel();
        let lines = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix("shoal-host: Invoke API on ") {
                    let _ = address.send(rest.to_owned());
                }
                let mut log = lines.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let url = found
            .recv_timeout(Duration::from_secs(30))
            .expect("shoal-host prints where it listens");
        Self { child, url, log }
    }

    fn invoke(&self, body: &[u8]) -> (u16, Option<String>, Value) {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        let mut response = agent.post(&self.url).send(body).unwrap();
        let status = response.status().as_u16();
        let flagged = response
            .headers()
            .get("x-amz-function-error")
            .map(|v| v.to_str().unwrap().to_owned());
        let text = response.body_mut().read_to_string().unwrap();
        (status, flagged, serde_json::from_str(&text).unwrap())
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// The log once it holds `text` (at most 30 s).
    fn wait_for_log(&self, text: &str) -> String {
        for _ in 0..300 {
            let log = self.log();
            if log.contains(text) {
                return log;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("{text:?} not in the log:\n{}", self.log());
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_invoke_api_in_front_of_a_python_function() {
    let served = Served::start("app.echo");
    let (status, flagged, answer) = served.invoke(br#"{"key": "cat.jpg"}"#);
    assert_eq!((status, flagged), (200, None), "{answer}");
    assert_eq!(answer["event"], json!({"key": "cat.jpg"}));
    assert_eq!(answer["function"], "pythonic");

    let too_big = vec![b' '; 6 * 1024 * 1024 + 1];
    let (status, _, refused) = served.invoke(&too_big);
    assert_eq!(status, 413, "{refused}");

    // Printed before the answer; read by another thread.
    let log = served.wait_for_log("Init Duration: ");
    assert!(log.contains("REPORT RequestId: "), "{log}");
}

#[test]
fn errors_are_flagged_and_two_invocations_run_at_once() {
    let served = Served::start("app.fail");
    let (status, flagged, answer) = served.invoke(br#"{"key": "poison.jpg"}"#);
    assert_eq!(status, 200);
    assert_eq!(flagged.as_deref(), Some("Unhandled"));
    assert_eq!(answer["errorType"], "ValueError");
    assert_eq!(answer["errorMessage"], "cannot process poison.jpg");
    drop(served);

    let served = Arc::new(Served::start("app.nap"));
    let calls: Vec<_> = (0..2)
        .map(|_| {
            let served = served.clone();
            std::thread::spawn(move || served.invoke(br#"{"seconds": 1.5}"#))
        })
        .collect();
    let pids: std::collections::BTreeSet<i64> = calls
        .into_iter()
        .map(|call| {
            let (status, flagged, answer) = call.join().unwrap();
            assert_eq!((status, flagged), (200, None), "{answer}");
            answer["pid"].as_i64().unwrap()
        })
        .collect();
    assert_eq!(pids.len(), 2, "one process per environment, both busy");

    // SIGTERM: the host exits and ends the function processes.
    let mut served = Arc::try_unwrap(served).ok().unwrap();
    let pid = nix::unistd::Pid::from_raw(i32::try_from(served.child.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = served.child.wait().unwrap();
    assert!(status.success(), "{status:?}\n{}", served.log());
    for pid in pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "function process {pid} outlived the host"
        );
    }
}
