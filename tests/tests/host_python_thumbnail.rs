//! The seed story as the Lambda function people already have:
//! `examples/python-lambda/app.py` (an S3-triggered thumbnail function,
//! boto3 and Pillow, byte for byte as deployed on AWS) run by AWS's
//! `awslambdaric` behind shoal's Runtime API host, fed one S3
//! `ObjectCreated:Put` notification per object, with S3 on moto.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is how a test reports failure"
)]

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use shoal_host::events::{CreatedObject, object_created, s3_event};
use shoal_host::{Environments, Failure, FunctionConfig};
use shoal_tests::moto::Moto;
use shoal_tests::stack::{corrupt_jpeg, keys, photos_and_thumbs, tiny_jpeg, upload};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_thumbnail_function_runs_unchanged_over_s3_events() {
    let python = std::env::var("SHOAL_LAMBDA_PYTHON").unwrap_or_else(|_| {
        panic!("SHOAL_LAMBDA_PYTHON is not set: source scripts/install-test-deps.sh")
    });
    let moto = Moto::start();
    let s3 = moto.s3();
    photos_and_thumbs(&s3, "in/cat.jpg").await;
    upload(
        &s3,
        "photos",
        &["in/holiday dog.jpg".to_owned()],
        &tiny_jpeg(),
    )
    .await;
    upload(
        &s3,
        "photos",
        &["in/broken.jpg".to_owned()],
        &corrupt_jpeg(),
    )
    .await;

    let mut config = FunctionConfig::new(
        "thumbnails",
        vec![
            python,
            "-m".into(),
            "awslambdaric".into(),
            "app.handler".into(),
        ],
    );
    config.task_root =
        Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/python-lambda"));
    config.timeout = Duration::from_secs(30);
    config.init_timeout = Duration::from_secs(30);
    config.memory_mb = 512;
    config.env = moto
        .env()
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .chain([("THUMBNAIL_BUCKET".to_owned(), "thumbs".to_owned())])
        .collect();
    let environments = Environments::new(config, 1);
    let event = |key: &str| {
        let object = CreatedObject {
            bucket: "photos",
            key,
            size: None,
            etag: None,
        };
        s3_event(vec![object_created(
            "us-east-1",
            &object,
            "2026-12-03T07:00:00.000Z",
        )])
    };

    for key in ["in/cat.jpg", "in/holiday dog.jpg"] {
        let (answer, _) = environments.invoke(event(key)).await;
        let answer: Value = serde_json::from_slice(&answer.unwrap()).unwrap();
        assert_eq!(answer["thumbnails"][0], key, "{answer}");
    }
    let made = keys(&s3, "thumbs", "").await;
    assert!(
        made.contains("in/cat.jpg") && made.contains("in/holiday dog.jpg"),
        "{made:?}"
    );
    let thumbnail = shoal_tests::operator::object_in(&s3, "thumbs", "in/cat.jpg").await;
    let image = image::load_from_memory(&thumbnail).unwrap();
    assert_eq!(image.width().max(image.height()), 256);

    // A file Pillow cannot read: the function's exception, as on Lambda.
    let (failed, _) = environments.invoke(event("in/broken.jpg")).await;
    match failed {
        Err(Failure::Function(error)) => {
            assert_eq!(error.error_type, "UnidentifiedImageError", "{error:?}");
            assert!(
                error.message.contains("cannot identify image file"),
                "{error:?}"
            );
        }
        other => panic!("expected Pillow's error, got {other:?}"),
    }
    assert_eq!(environments.started(), 1, "one warm environment throughout");
    environments.shutdown().await;
}
