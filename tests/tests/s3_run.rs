//! `run` over S3: the README's main job reading from and writing to a real
//! S3-compatible server (moto) on loopback.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is how a test reports failure"
)]

use std::path::Path;
use std::process::{Command, Output, Stdio};

use aws_sdk_s3::primitives::ByteStream;
use shoal_tests::moto::Moto;

const BIN: &str = env!("CARGO_BIN_EXE_thumbnail-e2e");

fn samples() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/thumbnail/samples")
}

fn run(moto: &Moto, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .envs(moto.env())
        .env_remove("AWS_PROFILE")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

async fn keys(s3: &aws_sdk_s3::Client, bucket: &str, prefix: &str) -> Vec<String> {
    let listed = s3
        .list_objects_v2()
        .bucket(bucket)
        .prefix(prefix)
        .send()
        .await
        .unwrap();
    let mut keys: Vec<String> = listed
        .contents()
        .iter()
        .filter_map(|o| o.key().map(str::to_owned))
        .collect();
    keys.sort();
    keys
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_reads_photos_from_s3_and_writes_thumbnails_back() {
    let moto = Moto::start();
    let s3 = moto.s3();
    s3.create_bucket().bucket("photos").send().await.unwrap();
    let mut uploaded = 0;
    for entry in std::fs::read_dir(samples()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        let body = ByteStream::from(std::fs::read(&path).unwrap());
        s3.put_object()
            .bucket("photos")
            .key(format!("incoming/{name}"))
            .body(body)
            .send()
            .await
            .unwrap();
        uploaded += 1;
    }
    let nested = std::fs::read(samples().join("photo-0001.jpg")).unwrap();
    s3.put_object()
        .bucket("photos")
        .key("incoming/2026/11/nested.jpg")
        .body(ByteStream::from(nested))
        .send()
        .await
        .unwrap();
    s3.put_object()
        .bucket("photos")
        .key("incoming/.keep")
        .body(ByteStream::from_static(b""))
        .send()
        .await
        .unwrap();
    let total = uploaded + 1;

    let state = tempfile::tempdir().unwrap();
    let state_dir = state.path().to_str().unwrap();
    let args = [
        "run",
        "--input",
        "s3://photos/incoming",
        "--output",
        "s3://photos/thumbs/",
        "--state-dir",
        state_dir,
    ];
    let first = run(&moto, &args);
    let stdout = String::from_utf8_lossy(&first.stdout);
    assert_eq!(
        first.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(
        stdout.contains(&format!(
            "{total} total, {} succeeded, 1 dead-lettered",
            total - 1
        )),
        "{stdout}"
    );

    let thumbs = keys(&s3, "photos", "thumbs/").await;
    assert_eq!(thumbs.len(), total - 1, "{thumbs:?}");
    assert!(
        thumbs.contains(&"thumbs/2026/11/nested.jpg".to_owned()),
        "{thumbs:?}"
    );
    assert!(
        thumbs.contains(&"thumbs/logo-transparent.jpg".to_owned()),
        "{thumbs:?}"
    );
    assert!(!thumbs.iter().any(|k| k.contains("corrupt")), "{thumbs:?}");
    let object = s3
        .get_object()
        .bucket("photos")
        .key("thumbs/photo-0003.jpg")
        .send()
        .await
        .unwrap();
    assert_eq!(object.content_type(), Some("image/jpeg"));
    let bytes = object.body.collect().await.unwrap().into_bytes();
    let thumb = image::load_from_memory(&bytes).unwrap();
    assert_eq!(thumb.width().max(thumb.height()), 256);

    let dead = std::fs::read_to_string(state.path().join("dead-letters.jsonl")).unwrap();
    assert!(
        dead.contains("\"item\":\"corrupt.jpg\"") && dead.contains("corrupt JPEG image"),
        "{dead}"
    );

    // Resume: a deleted thumbnail is made again, nothing else is.
    s3.delete_object()
        .bucket("photos")
        .key("thumbs/photo-0003.jpg")
        .send()
        .await
        .unwrap();
    let second = run(&moto, &args);
    let stdout = String::from_utf8_lossy(&second.stdout);
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        stdout.contains(&format!(
            "resumed:      {} succeeded and 1 dead-lettered",
            total - 2
        )),
        "{stdout}"
    );
    assert_eq!(stderr.matches("REPORT RequestId: ").count(), 1, "{stderr}");
    assert_eq!(keys(&s3, "photos", "thumbs/").await.len(), total - 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_bucket_is_a_clear_error() {
    let moto = Moto::start();
    let state = tempfile::tempdir().unwrap();
    let out = run(
        &moto,
        &[
            "--log-format",
            "text",
            "run",
            "--input",
            "s3://no-such-bucket/x",
            "--output",
            "s3://no-such-bucket/y",
            "--state-dir",
            state.path().to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot list --input s3://no-such-bucket/x/"),
        "{stderr}"
    );
    assert!(stderr.contains("not found"), "{stderr}");
}

/// Over S3, an object above `--max-object-mib` is refused from its length
/// without being downloaded, and a bomb from its header; both dead-letter
/// with their reasons, and the honest photo goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_objects_and_bombs_are_dead_lettered_with_their_reasons() {
    let moto = Moto::start();
    let s3 = moto.s3();
    s3.create_bucket().bucket("photos").send().await.unwrap();
    let photo = std::fs::read(samples().join("photo-0001.jpg")).unwrap();
    let (bomb_name, bomb) = thumbnail::bombs::all().swap_remove(0);
    for (key, body) in [
        ("in/photo.jpg".to_owned(), photo),
        ("in/huge.jpg".to_owned(), vec![0xFF; 3 << 20]),
        (format!("in/{bomb_name}"), bomb),
    ] {
        s3.put_object()
            .bucket("photos")
            .key(key)
            .body(ByteStream::from(body))
            .send()
            .await
            .unwrap();
    }
    let state = tempfile::tempdir().unwrap();
    let out = run(
        &moto,
        &[
            "run",
            "--input",
            "s3://photos/in/",
            "--output",
            "s3://photos/out/",
            "--state-dir",
            state.path().to_str().unwrap(),
            "--max-object-mib",
            "2",
            "--strict",
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{stdout}");
    assert!(
        stdout.contains("3 total, 1 succeeded, 2 dead-lettered"),
        "{stdout}"
    );
    assert_eq!(keys(&s3, "photos", "out/").await, vec!["out/photo.jpg"]);
    let dead = std::fs::read_to_string(state.path().join("dead-letters.jsonl")).unwrap();
    assert!(
        dead.contains("s3://photos/in/huge.jpg is 3145728 bytes, over the limit of 2097152 bytes"),
        "{dead}"
    );
    assert!(dead.contains("100000x100000 pixels needs about"), "{dead}");
}
