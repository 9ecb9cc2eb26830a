//! Jobs are isolated on SQS (ElasticMQ) with a real kube-apiserver: no two
//! BatchJobs share a queue, whatever their names; a queue the operator did
//! not create for a job is never used or deleted as that job's; and the
//! finalizer deletes what the spec and the owner tags say, never what a
//! forged status names; hand edits of a worker Deployment are put back and
//! a queue deleted behind the operator is made again.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is how a test reports failure"
)]

use std::time::Duration;

use shoal_operator::crd::BatchJob;
use shoal_tests::kube::ControlPlane;
use shoal_tests::operator::{self, create_queue};
use shoal_tests::stack::{Stack, tiny_jpeg, upload};
use shoal_tests::wait_until;

const OPERATOR: &str = env!("CARGO_BIN_EXE_shoal-operator-e2e");

fn job_yaml(name: &str) -> String {
    operator::batchjob_yaml(
        name,
        &operator::thumbnails_spec("", &format!("out/{name}/")),
    )
}

/// An API server with the CRD, ElasticMQ and moto, and one photo under
/// `s3://photos/incoming/`.
async fn one_photo() -> (ControlPlane, Stack) {
    let plane = ControlPlane::start();
    plane.install_crds();
    let stack = Stack::start();
    upload(
        &stack.s3,
        "photos",
        &["incoming/p.jpg".to_owned()],
        &tiny_jpeg(),
    )
    .await;
    (plane, stack)
}

/// Names of every queue on the server.
async fn queue_names(sqs: &aws_sdk_sqs::Client) -> Vec<String> {
    let mut names: Vec<String> = sqs
        .list_queues()
        .send()
        .await
        .unwrap()
        .queue_urls()
        .iter()
        .map(|u| u.rsplit('/').next().unwrap().to_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_never_share_a_queue_and_the_finalizer_deletes_only_its_own() {
    let plane = ControlPlane::start();
    plane.install_crds();
    let stack = Stack::start();
    let photos: Vec<String> = (0..3).map(|n| format!("incoming/p{n}.jpg")).collect();
    upload(&stack.s3, "photos", &photos, &tiny_jpeg()).await;
    // Someone else's queue, with a message in it.
    let victim = create_queue(&stack.sqs, "payments").await;
    stack
        .sqs
        .send_message()
        .queue_url(&victim)
        .message_body("not shoal's")
        .send()
        .await
        .unwrap();

    // Names that squash to the same text, and a job whose queue someone
    // made before the operator could (its name is predictable once the
    // job's uid is known).
    for name in ["a.b", "a-b", "squatted"] {
        plane.apply_yaml(&job_yaml(name));
    }
    let squatted: BatchJob =
        serde_json::from_str(&plane.kubectl(&["get", "bj", "squatted", "-o", "json"])).unwrap();
    let taken = shoal_operator::plan::queue_settings(&squatted, "default").name;
    stack
        .sqs
        .create_queue()
        .queue_name(&taken)
        .attributes(aws_sdk_sqs::types::QueueAttributeName::FifoQueue, "true")
        .send()
        .await
        .unwrap();

    let (operator, _metrics) = operator::spawn(OPERATOR, &plane, stack.env());
    let log = || operator.log_text();
    let limit = Duration::from_secs(60);
    let fanned_out = |name: &'static str| {
        wait_until(
            limit,
            "fan-out done",
            || {
                let s = plane.jsonpath(&["bj", name], "{.status.split.done}");
                (s == "true").then_some(())
            },
            log,
        );
        plane.jsonpath(&["bj", name], "{.status.queueUrl}")
    };
    let (dotted, dashed) = (fanned_out("a.b"), fanned_out("a-b"));
    assert_ne!(dotted, dashed, "two jobs share a queue");
    for url in [&dotted, &dashed] {
        let visible = stack
            .sqs
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
            .send()
            .await
            .unwrap();
        let count = visible
            .attributes()
            .and_then(|a| {
                a.get(&aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
            })
            .cloned();
        assert_eq!(
            count.as_deref(),
            Some("1"),
            "each job's one chunk, in its own queue: {url}"
        );
    }
    operator::wait_for_state(&plane, "squatted", "Pending QueueNotOwned", limit, log);
    let message = plane.jsonpath(&["bj", "squatted"], "{.status.conditions[0].message}");
    assert!(message.contains(&taken), "{message}");

    // Drift: a hand edit of the worker Deployment is put back, and a queue
    // deleted behind the operator is made again.
    let image = || {
        plane.jsonpath(
            &["deployment", "a.b-workers"],
            "{.spec.template.spec.containers[0].image}",
        )
    };
    assert_eq!(image(), "ghcr.io/shoal-dev/thumbnail:0.1.0");
    assert!(!log().contains("edited by hand"), "{}", log());
    plane.kubectl(&[
        "patch",
        "deployment",
        "a.b-workers",
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"/spec/template/spec/containers/0/image","value":"evil.example/miner:1"}]"#,
    ]);
    wait_until(
        limit,
        "the hand edit reverted",
        || (image() == "ghcr.io/shoal-dev/thumbnail:0.1.0").then_some(()),
        log,
    );
    stack
        .sqs
        .delete_queue()
        .queue_url(&dotted)
        .send()
        .await
        .unwrap();
    let dotted_name = dotted.rsplit('/').next().unwrap().to_owned();
    let sqs = stack.sqs.clone();
    let recreated = || {
        let sqs = sqs.clone();
        let name = dotted_name.clone();
        async move { queue_names(&sqs).await.contains(&name) }
    };
    let deadline = std::time::Instant::now() + limit;
    while !recreated().await {
        assert!(
            std::time::Instant::now() < deadline,
            "queue not recreated\n{}",
            log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    operator::wait_for_events(&plane, None, &["QueueRecreated"]);
    // The revert was one apply, not a loop of them.
    assert_eq!(log().matches("edited by hand").count(), 1, "{}", log());

    // Whoever may write status points a job at someone else's queue, then
    // deletes the job.
    plane.kubectl(&[
        "patch",
        "bj",
        "a-b",
        "--subresource=status",
        "--type=merge",
        "-p",
        &format!(r#"{{"status":{{"queueUrl":"{victim}","deadLetterQueueUrl":"{victim}"}}}}"#),
    ]);
    for name in ["a-b", "squatted"] {
        plane.kubectl(&["delete", "bj", name, "--wait=false"]);
    }
    for name in ["a-b", "squatted"] {
        wait_until(
            limit,
            "BatchJob deleted",
            || {
                plane
                    .jsonpath(&["bj", name], "{.metadata.name}")
                    .is_empty()
                    .then_some(())
            },
            log,
        );
    }
    let names = queue_names(&stack.sqs).await;
    assert!(names.contains(&"payments".to_owned()), "{names:?}");
    assert!(
        names.contains(&taken),
        "a queue it did not create: {names:?}"
    );
    let dashed_name = dashed.rsplit('/').next().unwrap().to_owned();
    assert!(
        !names.contains(&dashed_name),
        "its own queue deleted: {names:?}"
    );
    let dotted_name = dotted.rsplit('/').next().unwrap().to_owned();
    assert!(
        names.contains(&dotted_name),
        "the other job's stays: {names:?}"
    );
    let kept = stack
        .sqs
        .receive_message()
        .queue_url(&victim)
        .send()
        .await
        .unwrap();
    assert_eq!(
        kept.messages().len(),
        1,
        "the victim's message is still there"
    );
}

/// What CEL cannot check, the API server refuses when the operator asks
/// with a dry run before it creates anything: the job waits with the
/// reason, no queue exists, and a fixed spec goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spec_the_api_server_refuses_stops_before_any_queue() {
    let (plane, stack) = one_photo().await;
    let yaml = |env_name: &str| {
        job_yaml("refused").replace(
            "    image: ghcr.io/shoal-dev/thumbnail:0.1.0\n",
            &format!(
                "    image: ghcr.io/shoal-dev/thumbnail:0.1.0\n    env:\n      - name: {env_name}\n        value: x\n"
            ),
        )
    };
    plane.apply_yaml(&yaml("THUMBNAIL=QUALITY"));
    let (operator, _metrics) = operator::spawn(OPERATOR, &plane, stack.env());
    let log = || operator.log_text();
    let limit = Duration::from_secs(60);
    operator::wait_for_state(&plane, "refused", "Pending SpecInvalid", limit, log);
    let message = plane.jsonpath(&["bj", "refused"], "{.status.conditions[0].message}");
    assert!(message.contains("would be refused"), "{message}");
    assert!(message.contains("THUMBNAIL=QUALITY"), "{message}");
    operator::wait_for_events(&plane, None, &["SpecInvalid"]);
    assert!(queue_names(&stack.sqs).await.is_empty(), "nothing created");
    assert!(
        plane
            .jsonpath(&["deployment", "refused-workers"], "{.metadata.name}")
            .is_empty()
    );

    // Fixed: the job goes on.
    plane.apply_yaml(&yaml("THUMBNAIL_QUALITY"));
    wait_until(
        limit,
        "fan-out done after the fix",
        || (plane.jsonpath(&["bj", "refused"], "{.status.split.done}") == "true").then_some(()),
        log,
    );
    assert_eq!(queue_names(&stack.sqs).await.len(), 2);
}

/// A queue the spec names but SQS will not create as asked (it exists with
/// other attributes) keeps the job Pending with SQS's answer, not a retried
/// error in the log; deleting the job removes the dead-letter queue the
/// operator made for it and leaves the named queue to its owner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_sqs_refuses_blocks_the_job_with_the_reason_and_leaves_nothing() {
    let (plane, stack) = one_photo().await;
    stack
        .sqs
        .create_queue()
        .queue_name("shared-work")
        .attributes(
            aws_sdk_sqs::types::QueueAttributeName::VisibilityTimeout,
            "5",
        )
        .send()
        .await
        .unwrap();
    plane.apply_yaml(&operator::batchjob_yaml(
        "clash",
        &operator::thumbnails_spec("  queue:\n    name: shared-work\n", "out/clash/"),
    ));
    let (operator, _metrics) = operator::spawn(OPERATOR, &plane, stack.env());
    let log = || operator.log_text();
    let limit = Duration::from_secs(60);
    operator::wait_for_state(&plane, "clash", "Pending QueueRefused", limit, log);
    let message = plane.jsonpath(&["bj", "clash"], "{.status.conditions[0].message}");
    assert!(
        message.contains("creating the work queue shared-work"),
        "{message}"
    );
    operator::wait_for_events(&plane, None, &["QueueRefused"]);
    assert!(
        plane
            .jsonpath(&["deployment", "clash-workers"], "{.metadata.name}")
            .is_empty(),
        "no workers for a job without a queue"
    );
    assert_eq!(
        queue_names(&stack.sqs).await,
        ["shared-work", "shared-work-dlq"]
    );

    plane.kubectl(&["delete", "bj", "clash", "--wait=true", "--timeout=60s"]);
    assert_eq!(
        queue_names(&stack.sqs).await,
        ["shared-work"],
        "the dead-letter queue made for the job is gone, the named queue stays"
    );
}
