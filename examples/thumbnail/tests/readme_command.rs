//! The README's main command, run as a user would: the real binary over a
//! folder of images.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is how a test reports failure"
)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

const BIN: &str = env!("CARGO_BIN_EXE_thumbnail");

fn samples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("samples")
}

fn thumbnail(args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn jpeg_dims(path: &Path) -> (u32, u32) {
    image::image_dimensions(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn the_readme_command_thumbnails_every_sample_and_dead_letters_the_corrupt_one() {
    let out = tempfile::tempdir().unwrap();
    let run = |extra: &[&str]| -> Output {
        let mut args = vec!["run", "--input"];
        let input = samples();
        let input = input.to_str().unwrap();
        args.push(input);
        args.extend_from_slice(extra);
        // --output through its environment variable, as the operator sets it.
        thumbnail(&args)
            .env("SHOAL_OUTPUT", out.path())
            .output()
            .unwrap()
    };
    let first = run(&[]);
    let stdout = text(&first.stdout);
    assert_eq!(
        first.status.code(),
        Some(0),
        "a first run over the samples succeeds\n{stdout}\n{}",
        text(&first.stderr)
    );
    assert!(
        stdout.contains("12 total, 11 succeeded, 1 dead-lettered"),
        "{stdout}"
    );
    assert!(
        stdout.contains("p50") && stdout.contains("p99") && stdout.contains("items/s"),
        "{stdout}"
    );
    // The dead-lettered file, its reason and where the rest is.
    assert!(
        stdout.contains("    corrupt.jpg: corrupt JPEG image"),
        "{stdout}"
    );
    assert!(stdout.contains(".shoal/dead-letters.jsonl"), "{stdout}");
    assert!(
        stdout.contains("exit status 0: dead letters are reported"),
        "{stdout}"
    );

    // Every image but the corrupt one has a thumbnail within 256 px.
    for entry in std::fs::read_dir(samples()).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        let stem = name.rsplit_once('.').unwrap().0;
        let thumb = out.path().join(format!("{stem}.jpg"));
        if name == "corrupt.jpg" {
            assert!(!thumb.exists());
            continue;
        }
        let (w, h) = jpeg_dims(&thumb);
        assert_eq!(w.max(h), 256, "{name} -> {w}x{h}");
    }
    // Stored landscape with EXIF orientation 6: the thumbnail is upright.
    let (w, h) = jpeg_dims(&out.path().join("phone-portrait-exif6.jpg"));
    assert!(h > w, "EXIF orientation applied: {w}x{h}");

    let dead = std::fs::read_to_string(out.path().join(".shoal/dead-letters.jsonl")).unwrap();
    let letters: Vec<serde_json::Value> = dead
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(letters.len(), 1, "{dead}");
    assert_eq!(letters[0]["item"], "corrupt.jpg");
    assert_eq!(letters[0]["cause"], "permanent");
    assert_eq!(letters[0]["attempts"], 1);
    assert!(
        letters[0]["reason"]
            .as_str()
            .unwrap()
            .starts_with("corrupt JPEG image"),
        "{dead}"
    );

    // Not a terminal: logs are JSON lines, with Lambda's REPORT line per
    // invocation (START and END only with --invocation-logs all).
    let stderr = text(&first.stderr);
    for line in stderr.lines() {
        assert!(
            serde_json::from_str::<serde_json::Value>(line).is_ok(),
            "not JSON: {line}"
        );
    }
    assert_eq!(stderr.matches("REPORT RequestId: ").count(), 12);
    assert_eq!(stderr.matches("START RequestId: ").count(), 0);
    assert!(stderr.contains("\\tBilled Duration: "), "{stderr}");

    // A strict rerun fails on the earlier dead letter (nothing redone);
    // with a tolerance the same batch passes.
    let strict = run(&["--strict"]);
    let stdout = text(&strict.stdout);
    assert_eq!(strict.status.code(), Some(3), "{stdout}");
    assert!(
        stdout.contains("exit status 3: 8.3% dead-lettered, above the tolerated 0%"),
        "{stdout}"
    );
    let second = run(&["--tolerated-failure-percent", "10"]);
    let stdout = text(&second.stdout);
    assert_eq!(second.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("11 succeeded and 1 dead-lettered in earlier runs, not redone"),
        "{stdout}"
    );
    assert_eq!(
        text(&second.stderr).matches("REPORT RequestId: ").count(),
        0
    );
}

/// A folder of `n` copies of one large JPEG (slow enough to interrupt).
fn big_batch(dir: &Path, n: usize) {
    std::fs::create_dir_all(dir).unwrap();
    let jpeg = thumbnail::samples::jpeg(&thumbnail::samples::picture(2400, 1600, 3), 90);
    for i in 0..n {
        std::fs::write(dir.join(format!("img-{i:04}.jpg")), &jpeg).unwrap();
    }
}

fn journal_lines(output: &Path) -> usize {
    std::fs::read_to_string(output.join(".shoal/journal.jsonl"))
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

fn outputs(dir: &Path) -> HashMap<String, SystemTime> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".jpg"))
        .map(|e| {
            (
                e.file_name().into_string().unwrap(),
                e.metadata().unwrap().modified().unwrap(),
            )
        })
        .collect()
}

/// Runs the batch over `input` to the end.
fn rerun(input: &Path, output: &Path) -> Output {
    thumbnail(&[
        "run",
        "--input",
        input.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
    ])
    .output()
    .unwrap()
}

/// Starts the batch, waits until some items are journaled, sends `signal`.
fn interrupted_run(input: &Path, output: &Path, signal: &str) -> Output {
    let child = thumbnail(&[
        "run",
        "--input",
        input.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
        "--concurrency",
        "1",
    ])
    .spawn()
    .unwrap();
    let started = Instant::now();
    while journal_lines(output) < 10 {
        assert!(started.elapsed() < Duration::from_secs(60), "no progress");
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    child.wait_with_output().unwrap()
}

#[test]
fn interrupting_then_the_same_command_finishes_without_redoing_thumbnails() {
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = (dir.path().join("in"), dir.path().join("out"));
    big_batch(&input, 240);

    // SIGTERM takes the same path as Ctrl-C (and is what Kubernetes sends);
    // unlike SIGINT, no shell running the tests in the background ignores it.
    let first = interrupted_run(&input, &output, "-TERM");
    let stdout = text(&first.stdout);
    assert_eq!(
        first.status.code(),
        Some(130),
        "{stdout}\n{}",
        text(&first.stderr)
    );
    assert!(
        stdout.contains("batch interrupted") && stdout.contains("remaining:"),
        "{stdout}"
    );
    let done = outputs(&output);
    assert!(
        !done.is_empty() && done.len() < 240,
        "interrupted mid-run: {} done",
        done.len()
    );
    assert_eq!(
        journal_lines(&output),
        done.len(),
        "every finished thumbnail is journaled"
    );

    std::thread::sleep(Duration::from_millis(20));
    let second = rerun(&input, &output);
    let stdout = text(&second.stdout);
    assert_eq!(second.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains(&format!("resumed:      {} succeeded", done.len())),
        "{stdout}"
    );
    let after = outputs(&output);
    assert_eq!(after.len(), 240);
    for (name, modified) in &done {
        assert_eq!(after[name], *modified, "{name} was redone");
    }
}

#[test]
fn kill_9_then_the_same_command_finishes_the_batch() {
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = (dir.path().join("in"), dir.path().join("out"));
    big_batch(&input, 200);

    let first = interrupted_run(&input, &output, "-KILL");
    assert_eq!(first.status.code(), None, "killed by a signal");
    let journaled = journal_lines(&output);

    let second = rerun(&input, &output);
    let stdout = text(&second.stdout);
    assert_eq!(
        second.status.code(),
        Some(0),
        "{stdout}\n{}",
        text(&second.stderr)
    );
    assert!(
        stdout.contains("200 total, 200 succeeded, 0 dead-lettered"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("resumed:      {journaled} succeeded")),
        "{stdout}"
    );
    assert_eq!(outputs(&output).len(), 200);
    // No temporary files from the killed writes are visible as outputs.
    assert!(std::fs::read_dir(&output).unwrap().all(|e| {
        let name = e.unwrap().file_name().into_string().unwrap();
        name.ends_with(".jpg") || name == ".shoal" || name.ends_with(".tmp")
    }));
}

#[test]
fn invoke_runs_the_handler_once_on_one_event() {
    let dir = tempfile::tempdir().unwrap();
    let event = dir.path().join("event.json");
    let out = dir.path().join("out");
    let input = samples();
    let invoke_with = |event_body: &str, extra: &[&str]| -> Output {
        std::fs::write(&event, event_body).unwrap();
        let mut args = vec![
            "invoke",
            "--event",
            event.to_str().unwrap(),
            "--input",
            input.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        thumbnail(&args).output().unwrap()
    };
    let invoke = |event_body: &str| invoke_with(event_body, &[]);

    let ok = invoke(r#"{"key": "photo-0001.jpg"}"#);
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok.stderr));
    let result: serde_json::Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert_eq!(result["status"], "succeeded");
    assert!(
        result["output"]["stored"]
            .as_str()
            .unwrap()
            .ends_with("out/photo-0001.jpg")
    );
    assert_eq!(jpeg_dims(&out.join("photo-0001.jpg")), (256, 171));

    // An S3 event notification names its bucket: read from the folder
    // only when --allowed-buckets says that bucket is the folder.
    let s3 = r#"{"Records":[{"s3":{"bucket":{"name":"local"},"object":{"key":"corrupt.jpg"}}}]}"#;
    let refused = invoke(s3);
    let result: serde_json::Value = serde_json::from_slice(&refused.stdout).unwrap();
    assert!(
        result["reason"]
            .as_str()
            .unwrap()
            .contains("names bucket \"local\", which is not this worker's input"),
        "{result}"
    );
    let bad = invoke_with(s3, &["--allowed-buckets", "local"]);
    assert_eq!(bad.status.code(), Some(3));
    let result: serde_json::Value = serde_json::from_slice(&bad.stdout).unwrap();
    assert_eq!(result["status"], "failed");
    assert_eq!(result["retryable"], false);
    assert!(
        result["reason"].as_str().unwrap().contains("corrupt JPEG"),
        "{result}"
    );

    let missing = invoke(r#"{"key": "nope.jpg"}"#);
    let result: serde_json::Value = serde_json::from_slice(&missing.stdout).unwrap();
    assert_eq!(result["category"], "input");
    assert!(
        result["reason"].as_str().unwrap().contains("not found"),
        "{result}"
    );
}

#[test]
fn bad_settings_are_refused_with_a_clear_message() {
    let out = tempfile::tempdir().unwrap();
    let refused = thumbnail(&[
        "--log-format",
        "text",
        "run",
        "--input",
        "/no/such/folder",
        "--output",
        out.path().to_str().unwrap(),
    ])
    .output()
    .unwrap();
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        text(&refused.stderr).contains("/no/such/folder"),
        "{}",
        text(&refused.stderr)
    );

    let bad_env = thumbnail(&[
        "--log-format",
        "text",
        "run",
        "--input",
        samples().to_str().unwrap(),
        "--output",
        out.path().to_str().unwrap(),
    ])
    .env("THUMBNAIL_MAX_EDGE", "huge")
    .output()
    .unwrap();
    assert_eq!(bad_env.status.code(), Some(1));
    assert!(
        text(&bad_env.stderr).contains("THUMBNAIL_MAX_EDGE=\"huge\""),
        "{}",
        text(&bad_env.stderr)
    );

    let bad_flag = thumbnail(&["run", "--input", "x", "--output", "y", "--timeout", "0"])
        .output()
        .unwrap();
    assert_eq!(bad_flag.status.code(), Some(2));
}

#[test]
fn an_input_list_runs_exactly_the_keys_it_names_and_refuses_others() {
    let out = tempfile::tempdir().unwrap();
    let lists = tempfile::tempdir().unwrap();
    let input = samples();
    let run_list = |list: &Path, output: &Path| {
        thumbnail(&["run", "--no-progress", "--input-list"])
            .arg(list)
            .arg("--input")
            .arg(&input)
            .arg("--output")
            .arg(output)
            .output()
            .unwrap()
    };
    // Two samples (one quoted, one listed twice) and a blank line.
    let csv = lists.path().join("keys.csv");
    std::fs::write(
        &csv,
        "size,key\n1,photo-0000.jpg\n1,\"logo-transparent.png\"\n\n1,photo-0000.jpg\n",
    )
    .unwrap();
    let run = run_list(&csv, out.path());
    let stdout = text(&run.stdout);
    assert_eq!(
        run.status.code(),
        Some(0),
        "{stdout}\n{}",
        text(&run.stderr)
    );
    assert!(
        stdout.contains("2 total, 2 succeeded, 0 dead-lettered"),
        "{stdout}"
    );
    let mut made: Vec<String> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| !n.starts_with('.'))
        .collect();
    made.sort();
    assert_eq!(made, ["logo-transparent.jpg", "photo-0000.jpg"]);

    // A key that is not an item of --input (missing, or leaving it) refuses
    // the whole run before anything runs.
    let plain = lists.path().join("keys.txt");
    std::fs::write(&plain, "photo-0001.jpg\nmissing.jpg\n../README.md\n").unwrap();
    let elsewhere = lists.path().join("out-refused");
    let refused = run_list(&plain, &elsewhere);
    let stderr = text(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("names 2 keys that are not items of --input"),
        "{stderr}"
    );
    assert!(
        !elsewhere.join("photo-0001.jpg").exists(),
        "nothing was run"
    );

    // A list line that is not an item refuses the run too.
    let jsonl = lists.path().join("bad.jsonl");
    std::fs::write(&jsonl, "\"photo-0000.jpg\"\n{\"key\": 3}\n").unwrap();
    let refused = run_list(&jsonl, &lists.path().join("out-bad"));
    let stderr = text(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("bad.jsonl: line 2: field") && stderr.contains("is not a string"),
        "{stderr}"
    );
}

#[test]
fn rust_log_sets_the_levels_and_an_unusable_value_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let event = dir.path().join("event.json");
    std::fs::write(&event, r#"{"key": "photo-0001.jpg"}"#).unwrap();
    let out = dir.path().join("out");
    let invoke = |rust_log: Option<&str>| -> Vec<serde_json::Value> {
        let mut cmd = thumbnail(&[
            "invoke",
            "--event",
            event.to_str().unwrap(),
            "--input",
            samples().to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
        ]);
        if let Some(value) = rust_log {
            cmd.env("RUST_LOG", value);
        }
        let run = cmd.output().unwrap();
        assert_eq!(run.status.code(), Some(0), "{}", text(&run.stderr));
        text(&run.stderr)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
            .collect()
    };
    let said = |lines: &[serde_json::Value], level: &str, words: &str| {
        lines.iter().any(|l| {
            l["level"] == level && l["message"].as_str().is_some_and(|m| m.contains(words))
        })
    };
    // The default is info: the handler's set-up time is a debug line.
    let default = invoke(None);
    assert!(
        !said(&default, "DEBUG", "handler initialised"),
        "{default:?}"
    );
    let debug = invoke(Some("warn,shoal_worker=debug"));
    assert!(said(&debug, "DEBUG", "handler initialised"), "{debug:?}");
    // A span filter (which needs a regex engine the worker does not carry)
    // or a malformed directive: reported, and the default applies.
    for bad in ["shoal_worker[invoke]=debug", "shoal_worker=loud"] {
        let lines = invoke(Some(bad));
        assert!(
            said(&lines, "WARN", &format!("RUST_LOG \"{bad}\"")),
            "{lines:?}"
        );
        assert!(!said(&lines, "DEBUG", "handler initialised"), "{lines:?}");
    }
}
