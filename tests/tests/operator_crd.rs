//! The BatchJob CRD on a real kube-apiserver (with etcd, built from their Go
//! modules by the test command): it installs, every example in
//! `examples/batchjobs/` is accepted, and BatchJobs that make no sense are
//! refused by the API server with a message a person understands.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is how a test reports failure"
)]

use shoal_tests::kube::ControlPlane;

/// A BatchJob's YAML with `spec`.
fn batchjob(name: &str, spec: &str) -> String {
    shoal_tests::operator::batchjob_yaml(name, spec)
}

const HANDLER: &str = "  handler:
    image: ghcr.io/shoal-dev/thumbnail:0.1.0
";
const S3_SOURCE: &str = "  source:
    s3:
      bucket: photos
      prefix: incoming/
";
const OUTPUT: &str = "  output:
    bucket: photos
    prefix: thumbs/
";

#[test]
fn crd_installs_examples_apply_and_nonsense_is_refused_with_a_reason() {
    let plane = ControlPlane::start();
    plane.install_crds();

    // The short name and printer columns work.
    for example in [
        "thumbnails-from-s3",
        "existing-queue",
        "pipeline",
        "rabbitmq",
        "gpu-on-spot",
    ] {
        let path = shoal_tests::repo_root().join(format!("examples/batchjobs/{example}.yaml"));
        plane.kubectl(&["apply", "-f", &path.to_string_lossy()]);
    }
    let listed = plane.kubectl(&["get", "bj"]);
    for column in ["NAME", "PHASE", "DONE", "TOTAL", "FAILED", "WORKERS", "AGE"] {
        assert!(listed.contains(column), "{listed}");
    }
    for name in [
        "thumbnails",
        "uploads",
        "thumbnail-index",
        "orders",
        "thumbnails-on-rabbitmq",
        "thumbnails-gpu",
    ] {
        assert!(listed.contains(name), "{listed}");
    }

    // The edges of the new rules are accepted: a 63-character name, a FIFO
    // dead-letter queue for the default (FIFO) queue.
    let longest = "l".repeat(63);
    let edges = [
        batchjob(&longest, &format!("{HANDLER}{S3_SOURCE}{OUTPUT}")),
        batchjob(
            "fifo-dlq-ok",
            &format!("{HANDLER}{S3_SOURCE}{OUTPUT}  queue:\n    deadLetterQueue: failed.fifo\n"),
        ),
        // An item past Lambda's 900 s: a Kubernetes worker may run it.
        batchjob(
            "four-hour-items",
            &format!("  handler:\n    image: x\n    timeoutSeconds: 14400\n{S3_SOURCE}{OUTPUT}"),
        ),
    ];
    for yaml in &edges {
        let out = plane.kubectl_with_input(&["apply", "-f", "-"], Some(yaml));
        assert!(
            out.status.success(),
            "refused:\n{yaml}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let names = plane.kubectl(&["get", "bj", "-o", "name"]);
    assert!(names.contains(&longest), "{names}");
    assert!(names.contains("fifo-dlq-ok"), "{names}");
    assert!(names.contains("four-hour-items"), "{names}");

    let cases: Vec<(&str, String, &str)> = vec![
        (
            "no source",
            batchjob("no-source", &format!("{HANDLER}  source: {{}}\n")),
            "source must name exactly one of sqs, amqp, s3 or batchJob",
        ),
        (
            "two sources",
            batchjob(
                "two-sources",
                &format!(
                    "{HANDLER}{S3_SOURCE}    sqs:\n      queueUrl: https://sqs.eu-west-1.amazonaws.com/1/q\n{OUTPUT}"
                ),
            ),
            "source must name exactly one of sqs, amqp, s3 or batchJob",
        ),
        (
            "min above max",
            batchjob(
                "min-above-max",
                &format!(
                    "{HANDLER}{S3_SOURCE}{OUTPUT}  scaling:\n    minWorkers: 5\n    maxWorkers: 2\n"
                ),
            ),
            "scaling.minWorkers must not exceed scaling.maxWorkers",
        ),
        (
            "visibility shorter than the timeout",
            batchjob(
                "short-visibility",
                &format!(
                    "  handler:\n    image: x\n    timeoutSeconds: 300\n{S3_SOURCE}{OUTPUT}  queue:\n    visibilityTimeoutSeconds: 60\n"
                ),
            ),
            "queue.visibilityTimeoutSeconds must be at least handler.timeoutSeconds",
        ),
        (
            "memory below Lambda's minimum",
            batchjob(
                "tiny-memory",
                &format!("  handler:\n    image: x\n    memoryMiB: 64\n{S3_SOURCE}{OUTPUT}"),
            ),
            "spec.handler.memoryMiB: Invalid value: 64: spec.handler.memoryMiB in body should be greater than or equal to 128",
        ),
        (
            "timeout above SQS's longest lease",
            batchjob(
                "long-timeout",
                &format!(
                    "  handler:\n    image: x\n    timeoutSeconds: 43201\n{S3_SOURCE}{OUTPUT}"
                ),
            ),
            "spec.handler.timeoutSeconds in body should be less than or equal to 43200",
        ),
        (
            "an item longer than RabbitMQ's consumer timeout",
            batchjob(
                "long-on-rabbitmq",
                &format!(
                    "  handler:\n    image: x\n    timeoutSeconds: 1701\n{S3_SOURCE}{OUTPUT}  queue:\n    amqp:\n      secretName: rabbitmq\n"
                ),
            ),
            "on RabbitMQ handler.timeoutSeconds may be at most 1700",
        ),
        (
            "bucket name",
            batchjob(
                "bad-bucket",
                &format!("{HANDLER}  source:\n    s3:\n      bucket: My_Photos\n{OUTPUT}"),
            ),
            "source.s3.bucket must be an S3 bucket name",
        ),
        (
            "queue name with an existing queue",
            batchjob(
                "sqs-and-queue-name",
                &format!(
                    "{HANDLER}  source:\n    sqs:\n      queueUrl: https://sqs.eu-west-1.amazonaws.com/1/q\n  queue:\n    name: other\n"
                ),
            ),
            "source.sqs consumes an existing queue: leave queue.name unset",
        ),
        (
            "queue settings with an existing RabbitMQ queue",
            batchjob(
                "amqp-and-queue",
                &format!(
                    "{HANDLER}  source:\n    amqp:\n      connection:\n        secretName: rabbitmq\n      queue: orders\n  queue:\n    maxReceiveCount: 3\n"
                ),
            ),
            "source.amqp consumes its own queue: leave queue unset",
        ),
        (
            "a RabbitMQ work queue for an SQS source",
            batchjob(
                "sqs-and-amqp",
                &format!(
                    "{HANDLER}  source:\n    sqs:\n      queueUrl: https://sqs.eu-west-1.amazonaws.com/1/q\n  queue:\n    amqp:\n      secretName: rabbitmq\n"
                ),
            ),
            "source.sqs is an SQS queue: leave queue.amqp unset",
        ),
        (
            "management URL",
            batchjob(
                "bad-management",
                &format!(
                    "{HANDLER}  source:\n    amqp:\n      connection:\n        secretName: rabbitmq\n        managementUrl: rabbitmq:15672\n      queue: orders\n"
                ),
            ),
            "managementUrl must be an http:// or https:// URL",
        ),
        (
            "s3 source without output",
            batchjob("no-output", &format!("{HANDLER}{S3_SOURCE}")),
            "an s3 or batchJob source needs an output: set output.bucket",
        ),
        (
            "empty image",
            batchjob(
                "no-image",
                &format!("  handler:\n    image: \"\"\n{S3_SOURCE}{OUTPUT}"),
            ),
            "spec.handler.image in body should be at least 1 chars long",
        ),
        (
            "queue URL",
            batchjob(
                "bad-queue-url",
                &format!("{HANDLER}  source:\n    sqs:\n      queueUrl: photo-uploads\n"),
            ),
            "source.sqs.queueUrl must be a queue URL",
        ),
        (
            "a name too long for a label value",
            batchjob(&"n".repeat(64), &format!("{HANDLER}{S3_SOURCE}{OUTPUT}")),
            "metadata.name must be at most 63 characters",
        ),
        (
            "a Lambda function's image with a command of its own",
            batchjob(
                "function-and-command",
                &format!(
                    "  handler:\n    image: fn:1\n    command: [/bin/fn]\n    function:\n      handler: app.handler\n{S3_SOURCE}{OUTPUT}"
                ),
            ),
            "handler.function runs the function's own command behind shoal's host",
        ),
        (
            "a mount over the Lambda host",
            batchjob(
                "mount-over-host",
                &format!(
                    "  handler:\n    image: fn:1\n    function: {{}}\n    volumeMounts:\n      - name: data\n        mountPath: /opt/shoal/\n{S3_SOURCE}{OUTPUT}"
                ),
            ),
            "handler.volumeMounts: /opt/shoal holds the Lambda host",
        ),
        (
            "white space in a function's handler",
            batchjob(
                "spaced-handler",
                &format!(
                    "  handler:\n    image: fn:1\n    function:\n      handler: \"app. handler\"\n{S3_SOURCE}{OUTPUT}"
                ),
            ),
            "handler.function.handler",
        ),
        (
            "white space in the image",
            batchjob(
                "spaced-image",
                &format!("  handler:\n    image: \"thumbnail :0.1\"\n{S3_SOURCE}{OUTPUT}"),
            ),
            "handler.image must not contain white space",
        ),
        (
            "a standard dead-letter queue for the default FIFO queue",
            batchjob(
                "standard-dlq",
                &format!("{HANDLER}{S3_SOURCE}{OUTPUT}  queue:\n    deadLetterQueue: failed\n"),
            ),
            "queue.deadLetterQueue must be FIFO (end in .fifo) exactly when the work queue is",
        ),
        (
            "a FIFO dead-letter queue for a standard queue",
            batchjob(
                "fifo-dlq",
                &format!(
                    "{HANDLER}{S3_SOURCE}{OUTPUT}  queue:\n    name: work\n    deadLetterQueue: failed.fifo\n"
                ),
            ),
            "queue.deadLetterQueue must be FIFO (end in .fifo) exactly when the work queue is",
        ),
        (
            "a dead-letter queue name SQS refuses",
            batchjob(
                "bad-dlq-name",
                &format!(
                    "{HANDLER}{S3_SOURCE}{OUTPUT}  queue:\n    name: work\n    deadLetterQueue: failed/letters\n"
                ),
            ),
            "queue.deadLetterQueue must be an SQS queue name",
        ),
        (
            "an SQS dead-letter queue on RabbitMQ",
            batchjob(
                "amqp-dlq",
                &format!(
                    "{HANDLER}{S3_SOURCE}{OUTPUT}  queue:\n    amqp:\n      secretName: rabbitmq\n    deadLetterQueue: failed\n"
                ),
            ),
            "queue.deadLetterQueue is for SQS",
        ),
        (
            "a RabbitMQ job named like another job's retry queue",
            batchjob(
                "thumbs.retry.1s",
                &format!(
                    "{HANDLER}{S3_SOURCE}{OUTPUT}  queue:\n    amqp:\n      secretName: rabbitmq\n"
                ),
            ),
            "would share it: rename the job or set queue.name",
        ),
        (
            "a RabbitMQ job named like another job's dead-letter queue",
            batchjob(
                "thumbs.dlq",
                &format!(
                    "{HANDLER}{S3_SOURCE}{OUTPUT}  queue:\n    amqp:\n      secretName: rabbitmq\n"
                ),
            ),
            "would share it: rename the job or set queue.name",
        ),
        (
            "no handler",
            batchjob("no-handler", &format!("{S3_SOURCE}{OUTPUT}")),
            "spec.handler: Required value",
        ),
        (
            "an environment variable named twice",
            batchjob(
                "env-twice",
                &format!(
                    "{HANDLER}    env:\n      - {{name: RUST_LOG, value: debug}}\n      - {{name: RUST_LOG, value: info}}\n{S3_SOURCE}{OUTPUT}"
                ),
            ),
            "spec.handler.env[1]: Duplicate value",
        ),
    ];
    for (what, yaml, expected) in &cases {
        let refusal = plane.refusal(yaml);
        assert!(
            refusal.contains(expected),
            "{what}: expected {expected:?} in:\n{refusal}"
        );
    }

    // The source of an existing BatchJob cannot change.
    let moved = batchjob(
        "thumbnails",
        &format!(
            "  handler:\n    image: ghcr.io/shoal-dev/thumbnail:0.1.0\n  source:\n    s3:\n      bucket: photos\n      prefix: elsewhere/\n{OUTPUT}"
        ),
    );
    let refusal = plane.refusal(&moved);
    assert!(
        refusal.contains("source is immutable: create a new BatchJob"),
        "{refusal}"
    );
    // So is its queue: the operator keeps using the one it created.
    for queue in ["  queue:\n    maxReceiveCount: 9\n", ""] {
        let requeued = batchjob(
            "thumbnails",
            &format!(
                "  handler:\n    image: ghcr.io/shoal-dev/thumbnail:0.1.0\n{S3_SOURCE}      maxItemsPerChunk: 20\n{queue}{OUTPUT}"
            ),
        );
        let refusal = plane.refusal(&requeued);
        assert!(
            refusal.contains("queue is immutable: create a new BatchJob"),
            "{refusal}"
        );
    }
}

#[test]
fn committed_crd_matches_the_rust_types() {
    let committed =
        std::fs::read_to_string(shoal_tests::repo_root().join("crds/batchjob.yaml")).unwrap();
    let generated = shoal_operator::crd::crd_yaml().unwrap();
    assert!(
        committed == generated,
        "crds/batchjob.yaml is stale: run `cargo run -p shoal-operator -- crd > crds/batchjob.yaml`"
    );
}
