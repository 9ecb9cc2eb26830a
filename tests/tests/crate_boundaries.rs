//! The crates depend on what their job needs and nothing else, as
//! `cargo tree` resolves them from the lock file:
//!
//! - the operator talks to Kubernetes, S3, SQS and RabbitMQ; it carries
//!   none of the worker's runtime (no Lambda runtime, no progress bars, no
//!   shoal-worker at all): the formats both sides share are in
//!   shoal-protocol;
//! - shoal-protocol does no I/O: no async runtime, no network client;
//! - a handler built for Lambda only (`--no-default-features -F
//!   lambda,s3`) carries no RabbitMQ or SQS client, no metrics server and
//!   no progress bar.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is how a test reports failure"
)]

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

/// The crate names in the normal (not dev) dependency tree of `package`
/// built with `features` (`None`: its defaults).
fn dependencies(package: &str, features: Option<&str>) -> BTreeSet<String> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut command = Command::new(env!("CARGO"));
    command
        .current_dir(&workspace)
        .args(["tree", "--locked", "--offline", "-p", package])
        .args(["-e", "normal,build", "--prefix", "none", "--format", "{p}"]);
    if let Some(features) = features {
        command.args(["--no-default-features", "-F", features]);
    }
    let output = command.output().expect("cargo runs");
    assert!(
        output.status.success(),
        "cargo tree -p {package}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let names: BTreeSet<String> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    assert!(names.contains(package), "{package} not in its own tree");
    names
}

fn assert_free_of(package: &str, features: Option<&str>, banned: &[&str]) {
    let tree = dependencies(package, features);
    let found: Vec<&&str> = banned.iter().filter(|c| tree.contains(**c)).collect();
    assert!(
        found.is_empty(),
        "{package} (features {features:?}) depends on {found:?}"
    );
}

#[test]
fn the_operator_carries_no_worker_runtime() {
    assert_free_of(
        "shoal-operator",
        None,
        &[
            "shoal-worker",
            "lambda_runtime",
            "aws_lambda_events",
            "indicatif",
        ],
    );
    // What it does need, to show the check sees the tree.
    let tree = dependencies("shoal-operator", None);
    for needed in ["shoal-protocol", "kube", "lapin"] {
        assert!(tree.contains(needed), "shoal-operator without {needed}");
    }
}

#[test]
fn the_protocol_crate_does_no_io() {
    assert_free_of(
        "shoal-protocol",
        None,
        &["tokio", "hyper", "lapin", "aws-config", "reqwest", "mio"],
    );
}

#[test]
fn a_lambda_only_handler_carries_no_queue_client_server_or_progress_bar() {
    let banned = ["lapin", "aws-sdk-sqs", "axum", "indicatif", "humantime"];
    assert_free_of("thumbnail", Some("lambda,s3"), &banned);
    let tree = dependencies("thumbnail", Some("lambda,s3"));
    for needed in ["lambda_runtime", "aws-sdk-s3"] {
        assert!(tree.contains(needed), "the Lambda build without {needed}");
    }
    // The default build has every mode.
    let full = dependencies("thumbnail", None);
    for mode in banned {
        assert!(full.contains(mode), "the default build without {mode}");
    }
}

#[test]
fn no_handler_build_carries_a_regex_engine_for_its_log_filter() {
    // RUST_LOG's span filters need regex-automata and its Unicode tables:
    // ten thousand relocations every start pays, about 50 of a Lambda
    // cold start's 380 page faults (BENCHMARKS.md). The worker parses
    // target=level directives without one; the AWS SDK's regex-lite stays.
    let banned = ["regex", "regex-automata", "regex-syntax", "matchers"];
    for features in [None, Some("lambda,s3"), Some("sqs,s3,http")] {
        assert_free_of("thumbnail", features, &banned);
    }
}
