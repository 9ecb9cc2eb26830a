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
        for command in ["status", "describe", "logs", "suspend", "resume", "redrive"] {
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
