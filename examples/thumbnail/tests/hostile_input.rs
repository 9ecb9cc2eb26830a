//! The binary fed hostile files: decompression bombs and oversized objects
//! are dead-lettered with their reasons while the process stays within its
//! memory limit.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is how a test reports failure"
)]

use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_thumbnail");

/// The largest "Max Memory Used" of the REPORT lines in `logs` (MiB).
fn peak_reported_mib(logs: &str) -> u64 {
    logs.lines()
        .filter_map(|l| l.split("Max Memory Used: ").nth(1))
        .filter_map(|rest| rest.split(' ').next()?.parse::<u64>().ok())
        .max()
        .unwrap_or_else(|| panic!("no REPORT line in\n{logs}"))
}

#[test]
fn a_worker_fed_only_bombs_stays_within_its_memory_and_dead_letters_each() {
    let input = tempfile::tempdir().unwrap();
    let output = tempfile::tempdir().unwrap();
    let bombs = thumbnail::bombs::all();
    for round in 0..4 {
        for (name, bytes) in &bombs {
            std::fs::write(input.path().join(format!("{round}-{name}")), bytes).unwrap();
        }
    }
    // Over --max-object-mib: refused before it is read.
    std::fs::write(input.path().join("huge.png"), vec![7u8; 3 << 20]).unwrap();
    // One honest photo still goes through.
    let photo = thumbnail::samples::jpeg(&thumbnail::samples::picture(1200, 800, 9), 85);
    std::fs::write(input.path().join("photo.jpg"), photo).unwrap();

    let memory_mib = 256;
    let run = Command::new(BIN)
        .args(["run", "--strict", "--no-progress", "--log-format", "json"])
        .args(["--concurrency", "2", "--max-object-mib", "2"])
        .args(["--memory-mib", &memory_mib.to_string()])
        .arg("--input")
        .arg(input.path())
        .arg("--output")
        .arg(output.path())
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    let files = bombs.len() * 4 + 2;
    assert_eq!(run.status.code(), Some(3), "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!(
            "{files} total, 1 succeeded, {} dead-lettered",
            files - 1
        )),
        "{stdout}"
    );
    assert!(output.path().join("photo.jpg").exists());

    let dead = std::fs::read_to_string(output.path().join(".shoal/dead-letters.jsonl")).unwrap();
    let letters: Vec<serde_json::Value> = dead
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(letters.len(), files - 1, "{dead}");
    for letter in &letters {
        let item = letter["item"].as_str().unwrap();
        let reason = letter["reason"].as_str().unwrap();
        assert_eq!(letter["cause"], "permanent", "{letter}");
        if item == "huge.png" {
            assert!(
                reason.contains("is 3145728 bytes, over the limit of 2097152"),
                "{reason}"
            );
        } else {
            // "<format> image of WxH pixels needs about N MiB to decode, over
            // this invocation's memory budget of 96 MiB" ((256 - 64) / 2).
            let size = item.split(['-', '.']).find(|p| p.contains('x')).unwrap();
            assert!(
                reason.contains(&format!(" {size} pixels needs about ")),
                "{item}: {reason}"
            );
            assert!(
                reason.ends_with("memory budget of 96 MiB"),
                "{item}: {reason}"
            );
        }
    }

    let peak = peak_reported_mib(&stderr);
    println!("peak RSS of a worker fed {files} hostile files: {peak} MiB (limit {memory_mib} MiB)");
    assert!(
        peak <= memory_mib,
        "peak {peak} MiB over the {memory_mib} MiB limit"
    );
}

fn run_over(input: &std::path::Path, output: &std::path::Path) -> std::process::Output {
    Command::new(BIN)
        .args([
            "run",
            "--strict",
            "--no-progress",
            "--log-format",
            "json",
            "--input",
        ])
        .arg(input)
        .arg("--output")
        .arg(output)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn dead_letters(output: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(output.join(".shoal/dead-letters.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn a_dangling_link_and_a_link_loop_are_dead_lettered_and_the_rest_runs() {
    let input = tempfile::tempdir().unwrap();
    let output = tempfile::tempdir().unwrap();
    let photo = thumbnail::samples::jpeg(&thumbnail::samples::picture(600, 400, 3), 85);
    std::fs::write(input.path().join("photo.jpg"), photo).unwrap();
    std::os::unix::fs::symlink("missing.jpg", input.path().join("dangling.jpg")).unwrap();
    std::os::unix::fs::symlink(".", input.path().join("loop")).unwrap();
    let run = run_over(input.path(), output.path());
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(3), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("3 total, 1 succeeded, 2 dead-lettered"),
        "{stdout}"
    );
    assert!(output.path().join("photo.jpg").exists());
    let mut letters: Vec<(String, String)> = dead_letters(output.path())
        .iter()
        .map(|l| {
            assert_eq!(l["cause"], "permanent", "{l}");
            (
                l["item"].as_str().unwrap().to_owned(),
                l["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    letters.sort();
    assert_eq!(letters[0].0, "dangling.jpg");
    assert!(
        letters[0].1.contains("target does not exist"),
        "{letters:?}"
    );
    assert_eq!(letters[1].0, "loop");
    assert!(letters[1].1.contains("symbolic link loop"), "{letters:?}");
}

#[test]
fn input_equal_to_output_is_refused() {
    let folder = tempfile::tempdir().unwrap();
    let photo = thumbnail::samples::jpeg(&thumbnail::samples::picture(600, 400, 3), 85);
    std::fs::write(folder.path().join("photo.jpg"), &photo).unwrap();
    let run = run_over(folder.path(), &folder.path().join("."));
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("--input and --output are the same place"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read(folder.path().join("photo.jpg")).unwrap(),
        photo
    );
}

/// What `strace -y` shows of a run: every output reaches the disk before
/// it is renamed into place, and its folder entry after.
#[test]
fn outputs_are_flushed_before_they_count_as_written() {
    let input = tempfile::tempdir().unwrap();
    let output = tempfile::tempdir().unwrap();
    for i in 0..3 {
        let photo = thumbnail::samples::jpeg(&thumbnail::samples::picture(300, 200, i), 85);
        std::fs::write(input.path().join(format!("p{i}.jpg")), photo).unwrap();
    }
    let trace = output.path().join("syscalls.txt");
    let run = Command::new("strace")
        .args([
            "-f",
            "-y",
            "-qq",
            "-e",
            "trace=fsync,fdatasync,rename,renameat,renameat2",
        ])
        .arg("-o")
        .arg(&trace)
        .arg(BIN)
        .args([
            "run",
            "--strict",
            "--no-progress",
            "--log-format",
            "json",
            "--input",
        ])
        .arg(input.path())
        .arg("--output")
        .arg(output.path().join("thumbs"))
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("strace is installed by scripts/install-test-deps.sh");
    assert_eq!(
        run.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let lines: Vec<String> = std::fs::read_to_string(&trace)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    for i in 0..3 {
        let target = format!("thumbs/p{i}.jpg\"");
        let renamed = lines
            .iter()
            .position(|l| l.contains("rename") && l.contains(&target))
            .unwrap_or_else(|| panic!("no rename to {target} in\n{}", lines.join("\n")));
        let tmp = format!(".p{i}.jpg.");
        assert!(
            lines[..renamed]
                .iter()
                .any(|l| l.contains("fsync(") && l.contains(&tmp) && l.contains(".tmp>")),
            "p{i}.jpg renamed before its data was flushed:\n{}",
            lines.join("\n")
        );
        let folder = format!("{}>", output.path().join("thumbs").display());
        assert!(
            lines[renamed..]
                .iter()
                .any(|l| l.contains("fsync(") && l.contains(&folder)),
            "folder entry of p{i}.jpg never flushed:\n{}",
            lines.join("\n")
        );
    }
}

/// A broker password in the environment or on the command line appears in
/// no help text and no error message.
#[test]
fn a_queue_password_is_never_printed() {
    const CANARY: &str = "Canary-Pw-93b1d2";
    let worker = |queue: &str, args: &[&str]| {
        let out = Command::new(BIN)
            .arg("worker")
            .args(args)
            .env("SHOAL_QUEUE", queue)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code(), text)
    };
    let (code, help) = worker(&format!("amqp://app:{CANARY}@127.0.0.1:1/v/q"), &["--help"]);
    assert_eq!(code, Some(0));
    assert!(help.contains("SHOAL_QUEUE"), "{help}");
    assert!(!help.contains(CANARY), "{help}");
    for (queue, why) in [
        // No queue name: refused before connecting.
        (format!("amqp://app:{CANARY}@127.0.0.1:1"), "no queue name"),
        // Nothing listens on port 1.
        (
            format!("amqp://app:{CANARY}@127.0.0.1:1/v/q"),
            "cannot connect",
        ),
        // A password with a raw '/' does not parse as a URL at all.
        (format!("amqp://app:{CANARY}/x@127.0.0.1/v/q"), "queue"),
    ] {
        let (code, text) = worker(&queue, &[]);
        assert_eq!(code, Some(1), "{text}");
        assert!(text.contains(why), "{queue}: {text}");
        assert!(!text.contains(CANARY), "the password was printed: {text}");
    }
}
