//! The seed story on a real server (moto serves S3 and SQS, and delivers
//! S3 event notifications to its queues): an image lands in a bucket whose
//! notifications target the queue, and its thumbnail appears.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is how a test reports failure"
)]

use std::time::Duration;

use aws_sdk_s3::types::{Event, NotificationConfiguration, QueueConfiguration};
use aws_sdk_sqs::types::QueueAttributeName;
use shoal_tests::moto::Moto;
use shoal_tests::process::Proc;
use shoal_tests::sqs::{attribute, counts, create_queues, wait_for};
use shoal_tests::stack::{keys, tiny_jpeg};

const BIN: &str = env!("CARGO_BIN_EXE_thumbnail-e2e");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_triggers_its_thumbnail() {
    let moto = Moto::start();
    let (s3, sqs) = (moto.s3(), moto.sqs());
    let dir = tempfile::tempdir().unwrap();
    for bucket in ["uploads", "thumbnails"] {
        s3.create_bucket().bucket(bucket).send().await.unwrap();
    }
    let queues = create_queues(&sqs, "uploads-events", 30, 3).await;
    let queue_arn = attribute(&sqs, &queues.url, QueueAttributeName::QueueArn).await;
    s3.put_bucket_notification_configuration()
        .bucket("uploads")
        .notification_configuration(
            NotificationConfiguration::builder()
                .queue_configurations(
                    QueueConfiguration::builder()
                        .queue_arn(queue_arn)
                        .events(Event::from("s3:ObjectCreated:*"))
                        .build()
                        .unwrap(),
                )
                .build(),
        )
        .send()
        .await
        .unwrap();

    let mut worker = Proc::spawn(
        BIN,
        &[
            "worker",
            "--queue",
            &queues.url,
            "--output",
            "s3://thumbnails/",
        ],
        &moto.env(),
        &dir.path().join("worker.log"),
    );
    // A key with a space arrives URL-encoded in the event.
    s3.put_object()
        .bucket("uploads")
        .key("incoming/holiday cat.jpg")
        .body(tiny_jpeg().into())
        .send()
        .await
        .unwrap();
    wait_for("the thumbnail", Duration::from_secs(60), || {
        let s3 = s3.clone();
        async move { !keys(&s3, "thumbnails", "").await.is_empty() }
    })
    .await;
    let thumbs = keys(&s3, "thumbnails", "").await;
    assert_eq!(
        thumbs.into_iter().collect::<Vec<_>>(),
        vec!["incoming/holiday cat.jpg".to_owned()]
    );
    let thumb =
        shoal_tests::operator::object_in(&s3, "thumbnails", "incoming/holiday cat.jpg").await;
    let image = image::load_from_memory(&thumb).unwrap();
    assert!(image.width().max(image.height()) <= 256);
    wait_for("the event to be deleted", Duration::from_secs(30), || {
        let sqs = sqs.clone();
        let url = queues.url.clone();
        async move { counts(&sqs, &url).await == (0, 0, 0) }
    })
    .await;
    worker.signal("TERM");
    assert!(
        worker.wait(Duration::from_secs(30)).success(),
        "{}",
        worker.log_text()
    );
}
