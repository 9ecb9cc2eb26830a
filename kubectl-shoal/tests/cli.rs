//! `kubectl-shoal` as a user runs it, without a cluster: completion
//! scripts, usage errors, and the exit codes and messages when the
//! kubeconfig is missing or its API server does not answer. Commands
//! against a running job: `tests/tests/operator_plugin.rs` (API server)
//! and `tests/tests/real_node.rs` (`logs` of real pods).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is how a test reports failure"
)]

use std::process::{Command, Output};

const PLUGIN: &str = env!("CARGO_BIN_EXE_kubectl-shoal");

fn plugin(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(PLUGIN);
    command.args(args).env_remove("KUBECONFIG");
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn completion_scripts_name_every_command() {
    for shell in ["bash", "zsh", "fish"] {
        let out = plugin(&["completions", shell], &[]);
        assert!(out.status.success(), "{shell}: {}", text(&out.stderr));
        let script = text(&out.stdout);
        for command in [
            "status", "describe", "logs", "suspend", "resume", "redrive", "cost",
        ] {
            assert!(script.contains(command), "{shell} script names {command}");
        }
    }
}

#[test]
fn a_wrong_command_line_exits_2_pointing_at_help() {
    for args in [
        &["status", "--output", "yaml"][..],
        &["describe"][..],
        &["status", "one", "--all-namespaces"][..],
        &["frobnicate"][..],
    ] {
        let out = plugin(args, &[]);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
        let stderr = text(&out.stderr);
        assert!(stderr.starts_with("error: "), "{args:?}: {stderr}");
        assert!(stderr.contains("--help"), "{args:?}: {stderr}");
    }
}

#[test]
fn no_cluster_exits_1_saying_what_it_could_not_do() {
    let dir = tempfile::tempdir().unwrap();
    // No kubeconfig at all.
    let missing = dir.path().join("missing.yaml");
    let out = plugin(&["status", "--kubeconfig", missing.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("missing.yaml"),
        "names the file: {}",
        text(&out.stderr)
    );
    // A kubeconfig whose API server is a closed loopback port; the token
    // must not show in the message.
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        "apiVersion: v1
kind: Config
clusters:
  - name: gone
    cluster:
      server: https://127.0.0.1:1
      insecure-skip-tls-verify: true
users:
  - name: someone
    user:
      token: secret-token-never-printed
contexts:
  - name: gone
    context:
      cluster: gone
      user: someone
      namespace: media
current-context: gone
",
    )
    .unwrap();
    let config = config.to_str().unwrap();
    for args in [
        &["status"][..],
        &["describe", "thumbs"][..],
        &["suspend", "thumbs"][..],
    ] {
        let out = plugin(args, &[("KUBECONFIG", config)]);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.starts_with("error: "), "{stderr}");
        assert!(stderr.contains("media"), "names the namespace: {stderr}");
        assert!(!stderr.contains("secret-token"), "{stderr}");
    }
}

/// docs/hybrid.md shows what `cost -f docs/cost-example.yaml` prints.
#[test]
fn the_worked_cost_example_in_the_docs_is_what_the_tool_prints() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let command = "$ kubectl shoal cost -f docs/cost-example.yaml\n";
    let page = std::fs::read_to_string(format!("{root}/docs/hybrid.md")).unwrap();
    let shown = page
        .split_once(command)
        .and_then(|(_, rest)| rest.split_once("```"))
        .map(|(block, _)| block)
        .expect("hybrid.md shows the command and its output");
    let mut run = Command::new(PLUGIN);
    run.args(["cost", "-f", "docs/cost-example.yaml"])
        .current_dir(root)
        .env_remove("AWS_REGION")
        .env_remove("KUBECONFIG");
    let out = run.output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        shown,
        "regenerate the block in docs/hybrid.md"
    );
}

#[test]
fn cost_inputs_that_cannot_be_priced_exit_2_saying_why() {
    let dir = tempfile::tempdir().unwrap();
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/cost-example.yaml");
    let garbage = dir.path().join("job.yaml");
    std::fs::write(&garbage, "kind: [not a job").unwrap();
    let prices = dir.path().join("prices.json");
    std::fs::write(&prices, r#"{"source":"mine","regions":{"eu-north-1":{"arm64":{"gbSecond":0.00001,"perMillionRequests":0.2}}}}"#).unwrap();
    let prices = prices.to_str().unwrap();
    for (args, says) in [
        (
            vec!["cost", "-f", example, "--region", "mars-north-1"],
            "mars-north-1",
        ),
        (
            vec!["cost", "-f", garbage.to_str().unwrap()],
            "not a BatchJob",
        ),
        (
            vec!["cost", "-f", "/nonexistent/job.yaml"],
            "/nonexistent/job.yaml",
        ),
        (vec!["cost", "-f", example, "--node-cpu", "0"], "--node-cpu"),
        (
            vec![
                "cost",
                "-f",
                example,
                "--prices",
                prices,
                "--region",
                "eu-north-1",
            ],
            "x86_64",
        ),
        (vec!["cost"], "--help"),
    ] {
        let out = plugin(&args, &[]);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(
            text(&out.stderr).contains(says),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    // A price table of one's own.
    let out = plugin(
        &[
            "cost",
            "-f",
            example,
            "--prices",
            prices,
            "--region",
            "eu-north-1",
            "--architecture",
            "arm64",
            "-o",
            "json",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let cost: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(cost["lambda"]["region"], "eu-north-1");
    let compute = cost["lambda"]["computeUsd"].as_f64().unwrap();
    assert!((compute - 1_382_031.25 * 0.00001).abs() < 1e-9, "{cost}");
}
