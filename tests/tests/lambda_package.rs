//! Lambda packaging: the SAM template lints clean, and the deployment zip
//! that `scripts/package-lambda.sh` makes holds one executable `bootstrap`
//! that serves invocations under the Runtime Interface Emulator.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is how a test reports failure"
)]

use std::process::Command;

use serde_json::json;
use shoal_tests::moto::Moto;
use shoal_tests::rie::Rie;
use shoal_tests::stack::photos_and_thumbs;

const BIN: &str = env!("CARGO_BIN_EXE_thumbnail-e2e");

#[test]
fn sam_template_lints_clean() {
    let cfn_lint = std::env::var("SHOAL_CFN_LINT").unwrap_or_else(|_| {
        panic!("SHOAL_CFN_LINT is not set: run the tests through scripts/test-all.sh")
    });
    let output = Command::new(cfn_lint)
        .arg(shoal_tests::repo_root().join("deploy/lambda/template.yaml"))
        .output()
        .unwrap();
    assert!(
        output.status.success() && output.stdout.is_empty(),
        "cfn-lint: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_packaged_bootstrap_serves_invocations() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("pkg");
    let status = Command::new(shoal_tests::repo_root().join("scripts/package-lambda.sh"))
        .args(["--binary", BIN, "--out"])
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success());

    // Exactly one entry, `bootstrap`, executable.
    let listing = Command::new("python3")
        .args([
            "-c",
            "import sys, zipfile\nfor i in zipfile.ZipFile(sys.argv[1]).infolist(): print(i.filename, oct(i.external_attr >> 16))",
        ])
        .arg(out.join("bootstrap.zip"))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&listing.stdout).trim(),
        "bootstrap 0o100755"
    );

    let unpacked = dir.path().join("unpacked");
    let status = Command::new("python3")
        .args(["-m", "zipfile", "-e"])
        .arg(out.join("bootstrap.zip"))
        .arg(&unpacked)
        .status()
        .unwrap();
    assert!(status.success());
    let bootstrap = unpacked.join("bootstrap");
    // zipfile -e does not restore modes; Lambda does.
    Command::new("chmod")
        .arg("755")
        .arg(&bootstrap)
        .status()
        .unwrap();

    let moto = Moto::start();
    photos_and_thumbs(&moto.s3(), "cat.jpg").await;
    let mut env = moto.env();
    env.push(("SHOAL_OUTPUT", "s3://thumbs/".into()));
    let rie = Rie::start(
        bootstrap.to_str().unwrap(),
        &env,
        &dir.path().join("rie.log"),
    );
    let (status, answer) = rie.invoke(&json!({"bucket": "photos", "key": "cat.jpg"}));
    assert_eq!(status, 200);
    assert_eq!(
        answer,
        json!({"succeeded": ["cat.jpg"]}),
        "{}",
        rie.log_text()
    );
}
