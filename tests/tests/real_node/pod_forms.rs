//! Real-node scenarios of what a BatchJob puts into its pods: a worker
//! template's placement and configuration, and a Lambda function's image
//! behind the host (`handler.function`).

use serde_json::Value;
use shoal_tests::node::bed::{Bed, LIMIT, TAG, selector};
use shoal_tests::stack::tiny_jpeg;
use shoal_tests::wait_until;

use super::expect_outputs;

/// A job placed and configured through `spec.template` and the handler's
/// `envFrom` and `volumeMounts`, as real pods. Its workers tolerate the
/// taint of a node pool and select the pool by label: they wait
/// Unschedulable until the node joins the pool, then run there with the
/// template's labels and annotations under the restricted security
/// context. They find S3 and SQS through a ConfigMap mounted as their AWS
/// config file (no endpoint in their environment) and take their
/// thumbnail size from a ConfigMap in their environment. Runs last: the
/// node's taint and label are removed at the end.
pub(crate) async fn templated_job_runs_where_and_as_its_template_says(bed: &Bed<'_>) {
    const POOL: &str = "pool.shoal.example/batch";
    let plane = bed.plane();
    let node = plane.kubectl(&["get", "nodes", "-o", "jsonpath={.items[0].metadata.name}"]);
    let photos = bed.upload_photos("placed/", 6, &tiny_jpeg()).await;
    let env = bed.stack.env();
    let endpoint = |name: &str| {
        env.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    let aws_config = format!(
        "[default]\nservices = test-bed\n[services test-bed]\ns3 =\n  endpoint_url = {}\nsqs =\n  endpoint_url = {}\n",
        endpoint("AWS_ENDPOINT_URL_S3"),
        endpoint("AWS_ENDPOINT_URL_SQS")
    );
    plane.kubectl(&[
        "create",
        "configmap",
        "aws-config",
        &format!("--from-literal=config={aws_config}"),
    ]);
    plane.kubectl(&[
        "create",
        "configmap",
        "thumbnail-settings",
        "--from-literal=THUMBNAIL_MAX_EDGE=16",
    ]);
    // Credentials and region stay in the environment, endpoints do not.
    let handler_env: String = env
        .iter()
        .filter(|(k, _)| !k.starts_with("AWS_ENDPOINT_URL"))
        .map(|(k, v)| format!("      - name: {k}\n        value: \"{v}\"\n"))
        .collect();
    plane.kubectl(&["taint", "node", &node, &format!("{POOL}=true:NoSchedule")]);
    bed.apply(&format!(
        "apiVersion: shoal.dev/v1alpha1
kind: BatchJob
metadata:
  name: placed
spec:
  template:
    metadata:
      labels:
        team: media
      annotations:
        example.com/cost-center: \"42\"
    spec:
      nodeSelector:
        {POOL}: \"true\"
      tolerations:
        - key: {POOL}
          operator: Exists
          effect: NoSchedule
      volumes:
        - name: aws
          configMap:
            name: aws-config
  handler:
    image: shoal-thumbnail:{TAG}
    timeoutSeconds: 20
    envFrom:
      - configMapRef:
          name: thumbnail-settings
    volumeMounts:
      - name: aws
        mountPath: /etc/aws
        readOnly: true
    env:
{handler_env}      - name: AWS_CONFIG_FILE
        value: /etc/aws/config
      - name: SHOAL_WAIT_TIME
        value: \"1\"
  source:
    s3:
      bucket: photos
      prefix: placed/
  scaling:
    maxWorkers: 1
  output:
    bucket: photos
    prefix: out/placed/
"
    ));
    // Outside the pool: the scheduler keeps the pod waiting, for the
    // selector only (the taint is tolerated).
    let message = wait_until(
        LIMIT,
        "the worker pod Unschedulable",
        || {
            let s = plane.jsonpath(
                &["pods", "-l", &selector("placed")],
                r#"{.items[*].status.conditions[?(@.reason=="Unschedulable")].message}"#,
            );
            (!s.is_empty()).then_some(s)
        },
        || bed.context(),
    );
    assert!(message.contains("affinity/selector"), "{message}");
    assert!(!message.contains("taint"), "{message}");
    plane.kubectl(&["label", "node", &node, &format!("{POOL}=true")]);
    let pod = wait_until(
        LIMIT,
        "the worker pod Ready in the pool",
        || bed.ready_pods("placed").pop(),
        || bed.context(),
    );
    let pod: Value =
        serde_json::from_str(&plane.kubectl(&["get", "pod", &pod, "-o", "json"])).unwrap();
    let spec = &pod["spec"];
    assert_eq!(spec["nodeName"], node.as_str(), "{pod}");
    assert_eq!(pod["metadata"]["labels"]["team"], "media", "{pod}");
    assert_eq!(
        pod["metadata"]["annotations"]["example.com/cost-center"], "42",
        "{pod}"
    );
    assert_eq!(spec["securityContext"]["runAsNonRoot"], true, "{pod}");
    let container = &spec["containers"][0];
    assert_eq!(
        container["securityContext"]["allowPrivilegeEscalation"], false,
        "{pod}"
    );
    bed.wait_phase("placed", "Succeeded");
    expect_outputs(bed, "placed", &photos).await;
    // THUMBNAIL_MAX_EDGE from the ConfigMap: the longer edge is 16 pixels
    // (256 by default).
    let first = photos.iter().next().unwrap();
    let thumbnail =
        shoal_tests::operator::object(&bed.stack.s3, &format!("out/placed/{first}")).await;
    let image = image::load_from_memory(&thumbnail).unwrap();
    assert_eq!(image.width().max(image.height()), 16);

    plane.kubectl(&["delete", "bj", "placed", "--wait=true"]);
    plane.kubectl(&["delete", "configmap", "aws-config", "thumbnail-settings"]);
    plane.kubectl(&["taint", "node", &node, &format!("{POOL}:NoSchedule-")]);
    plane.kubectl(&["label", "node", &node, &format!("{POOL}-")]);
}

/// `handler.function` as real pods: the thumbnail image run as a Lambda
/// function (its Lambda mode, AWS's Rust runtime client `lambda_runtime`,
/// a `provided`-runtime function), not as a shoal worker. The init
/// container copies the host from the host image into the pod, under the
/// restricted profile; the host hands the function one S3 event per
/// photo. The function is given no output location (the host keeps shoal's
/// `SHOAL_*` settings from it), so what shows it ran is the job: Succeeded
/// with one invocation per photo recorded from the host's REPORT figures.
pub(crate) async fn a_lambda_functions_image_runs_behind_the_host_in_real_pods(bed: &Bed<'_>) {
    let plane = bed.plane();
    let photos = bed.upload_photos("lambda/", 6, &tiny_jpeg()).await;
    bed.apply(&format!(
        "apiVersion: shoal.dev/v1alpha1
kind: BatchJob
metadata:
  name: lambda
spec:
  handler:
    image: shoal-thumbnail:{TAG}
    timeoutSeconds: 20
    memoryMiB: 256
    function:
      command: [/usr/local/bin/thumbnail]
    env:
{env}  source:
    s3:
      bucket: photos
      prefix: lambda/
      maxItemsPerChunk: 2
  scaling:
    maxWorkers: 1
  output:
    bucket: photos
    prefix: out/lambda/
",
        env = bed.env_yaml()
    ));
    let pod = wait_until(
        LIMIT,
        "the function's worker pod Ready",
        || bed.ready_pods("lambda").pop(),
        || bed.context(),
    );
    let pod: Value =
        serde_json::from_str(&plane.kubectl(&["get", "pod", &pod, "-o", "json"])).unwrap();
    let installed = &pod["status"]["initContainerStatuses"][0];
    assert_eq!(installed["name"], "shoal-host", "{pod}");
    assert_eq!(installed["state"]["terminated"]["exitCode"], 0, "{pod}");
    assert_eq!(
        pod["spec"]["initContainers"][0]["image"],
        format!("shoal-host:{TAG}"),
        "the chart's hostImage"
    );
    let worker = &pod["spec"]["containers"][0];
    assert_eq!(worker["command"][0], "/opt/shoal/shoal-host", "{pod}");
    assert_eq!(worker["securityContext"]["readOnlyRootFilesystem"], true);
    bed.wait_phase("lambda", "Succeeded");
    let counts = plane.jsonpath(
        &["bj", "lambda"],
        "{.status.chunks.succeeded}/{.status.chunks.total} {.status.usage.invocations}",
    );
    assert_eq!(counts, format!("3/3 {}", photos.len()), "{}", bed.context());
    plane.kubectl(&["delete", "bj", "lambda", "--wait=true"]);
}

/// The seed story as the Lambda function people already have, as real
/// pods: `examples/python-lambda/app.py` in an image as a Lambda user
/// builds it (Python, awslambdaric, boto3, Pillow; `scripts/build-images.sh`
/// writes it from the test virtualenv), run by AWS's runtime interface
/// client behind the host the init container copied in, one S3 event per
/// photo; its thumbnails land in the `thumbs` bucket.
pub(crate) async fn the_python_thumbnail_function_runs_as_real_pods(bed: &Bed<'_>) {
    let plane = bed.plane();
    // The image is built from the test virtualenv only when it is named.
    assert!(
        std::env::var_os("SHOAL_LAMBDA_PYTHON").is_some(),
        "SHOAL_LAMBDA_PYTHON is not set: source scripts/install-test-deps.sh"
    );
    // The image's virtualenv (`scripts/build-images.sh`), not the path it
    // was copied from: that may be under /tmp, which the pod mounts over.
    let python = "/opt/python-venv/bin/python3";
    let photos = bed.upload_photos("pylambda/", 6, &tiny_jpeg()).await;
    bed.stack
        .s3
        .create_bucket()
        .bucket("thumbs")
        .send()
        .await
        .unwrap();
    bed.apply(&format!(
        "apiVersion: shoal.dev/v1alpha1
kind: BatchJob
metadata:
  name: pylambda
spec:
  handler:
    image: python-thumbnails:{TAG}
    timeoutSeconds: 30
    memoryMiB: 512
    function:
      command: [\"{python}\", \"-m\", \"awslambdaric\"]
      handler: app.handler
      initTimeoutSeconds: 60
    env:
{env}      - name: THUMBNAIL_BUCKET
        value: thumbs
  source:
    s3:
      bucket: photos
      prefix: pylambda/
      maxItemsPerChunk: 2
  scaling:
    maxWorkers: 1
  output:
    bucket: photos
    prefix: out/pylambda/
",
        env = bed.env_yaml()
    ));
    bed.wait_phase("pylambda", "Succeeded");
    let counts = plane.jsonpath(
        &["bj", "pylambda"],
        "{.status.chunks.succeeded}/{.status.chunks.total} {.status.usage.invocations}",
    );
    assert_eq!(counts, format!("3/3 {}", photos.len()), "{}", bed.context());
    let made = shoal_tests::stack::keys(&bed.stack.s3, "thumbs", "").await;
    assert_eq!(made, photos, "one thumbnail per photo, by the function");
    let first = photos.iter().next().unwrap();
    let thumbnail = shoal_tests::operator::object_in(&bed.stack.s3, "thumbs", first).await;
    let image = image::load_from_memory(&thumbnail).unwrap();
    assert_eq!(image.width().max(image.height()), 256);
    plane.kubectl(&["delete", "bj", "pylambda", "--wait=true"]);
}
