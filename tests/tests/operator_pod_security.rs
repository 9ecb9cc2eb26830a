//! Worker pods under the `restricted` Pod Security Standard, on a real
//! kube-apiserver: the Deployment the operator builds (for an image
//! handler and for a Lambda function's image) is admitted in a namespace
//! that enforces it, and a BatchJob's pod template merges under the
//! profile without taking what the operator owns.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is how a test reports failure"
)]

use shoal_operator::crd::BatchJob;
use shoal_operator::workload::{self, Wiring, WorkerQueue};
use shoal_tests::kube::ControlPlane;

/// A BatchJob's YAML with `spec`.
fn batchjob(name: &str, spec: &str) -> String {
    shoal_tests::operator::batchjob_yaml(name, spec)
}

const S3_SOURCE: &str = "  source:
    s3:
      bucket: photos
      prefix: incoming/
";
const OUTPUT: &str = "  output:
    bucket: photos
    prefix: thumbs/
";

/// A control plane with the CRD and namespace `media` enforcing the
/// restricted Pod Security Standard, example `example` of
/// `examples/batchjobs/` applied there (its BatchJob named `name`), and
/// the worker Deployment the operator builds for it (with `replicas`)
/// applied, which the API server took without a warning. Returns the
/// plane, the BatchJob as stored, the wiring and the Deployment built (as
/// JSON).
fn example_in_a_restricted_namespace(
    example: &str,
    name: &str,
    replicas: i32,
) -> (ControlPlane, BatchJob, Wiring, serde_json::Value) {
    let plane = ControlPlane::start();
    plane.install_crds();
    plane.kubectl(&["create", "namespace", "media"]);
    plane.kubectl(&[
        "label",
        "namespace",
        "media",
        "pod-security.kubernetes.io/enforce=restricted",
        "pod-security.kubernetes.io/warn=restricted",
    ]);
    let path = shoal_tests::repo_root().join(format!("examples/batchjobs/{example}.yaml"));
    plane.kubectl(&["apply", "-n", "media", "-f", &path.to_string_lossy()]);
    // The BatchJob as stored (with its uid, for the owner reference).
    let stored = plane.kubectl(&["get", "-n", "media", "bj", name, "-o", "json"]);
    let job: BatchJob = serde_json::from_str(&stored).unwrap();
    let wiring = Wiring {
        queue: WorkerQueue::Url(format!("http://127.0.0.1:9324/000000000000/{name}")),
        output: Some("s3://photos/thumbs/".into()),
        input_bucket: Some("photos".into()),
        replicas,
        host_image: "shoal-host:0.1.0".into(),
    };
    let built = workload::deployment(&job, &wiring);
    let deployment = serde_json::to_string(&built).unwrap();
    let out = plane.kubectl_with_input(&["apply", "-f", "-"], Some(&deployment));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        !stderr.contains("Warning"),
        "the API server warned about the pod template:\n{stderr}"
    );
    (plane, job, wiring, serde_json::to_value(&built).unwrap())
}

#[test]
fn the_worker_deployment_passes_the_restricted_pod_security_standard() {
    let (plane, ..) = example_in_a_restricted_namespace("thumbnails-from-s3", "thumbnails", 2);
    // Stored as built: owner, replicas, resources.
    let stored = plane.kubectl(&[
        "get",
        "-n",
        "media",
        "deployment",
        "thumbnails-workers",
        "-o",
        "jsonpath={.metadata.ownerReferences[0].kind}/{.metadata.ownerReferences[0].name} {.spec.replicas} {.spec.template.spec.containers[0].resources.limits.cpu} {.spec.template.spec.containers[0].resources.limits.memory}",
    ]);
    assert_eq!(stored, "BatchJob/thumbnails 2 1 1769Mi");
}

#[test]
fn a_lambda_function_job_passes_the_restricted_pod_security_standard() {
    let (plane, ..) = example_in_a_restricted_namespace("lambda-function", "lambda-thumbnails", 1);
    let stored = plane.kubectl(&[
        "get",
        "-n",
        "media",
        "deployment",
        "lambda-thumbnails-workers",
        "-o",
        "jsonpath={.spec.template.spec.initContainers[0].image} {.spec.template.spec.containers[0].command[0]} {.spec.template.spec.containers[0].args}",
    ]);
    assert_eq!(
        stored,
        r#"shoal-host:0.1.0 /opt/shoal/shoal-host ["worker","--","/lambda-entrypoint.sh","app.handler"]"#
    );
}

/// The worker pod template on the real API server: the example's
/// template (node selector, tolerations, topology spread, pull secret, a
/// GPU, a ConfigMap as variables and as files) makes a Deployment the API
/// server stores as built in a namespace enforcing the restricted profile;
/// a template that reaches for what the operator owns, or for a volume the
/// profile forbids, is refused with the reason.
#[test]
fn a_worker_template_merges_under_the_restricted_profile_and_cannot_take_what_the_operator_owns() {
    let (plane, job, wiring, desired) =
        example_in_a_restricted_namespace("gpu-on-spot", "thumbnails-gpu", 1);
    let live: serde_json::Value = serde_json::from_str(&plane.kubectl(&[
        "get",
        "-n",
        "media",
        "deployment",
        "thumbnails-gpu-workers",
        "-o",
        "json",
    ]))
    .unwrap();
    // The API server keeps every value as built (its defaults come on top),
    // so the operator sees no drift and applies nothing again.
    assert_eq!(
        shoal_operator::drift::difference(&live["spec"], &desired["spec"]),
        None
    );
    let pod = &live["spec"]["template"];
    assert_eq!(pod["metadata"]["labels"]["team"], "media");
    assert_eq!(pod["spec"]["nodeSelector"]["pool"], "gpu-spot");
    assert_eq!(pod["spec"]["tolerations"][0]["key"], "spot");
    assert_eq!(
        pod["spec"]["imagePullSecrets"][0]["name"],
        "registry-example-com"
    );
    assert_eq!(
        pod["spec"]["volumes"][1]["configMap"]["name"],
        "thumbnail-settings"
    );
    let container = &pod["spec"]["containers"][0];
    assert_eq!(container["resources"]["limits"]["nvidia.com/gpu"], "1");
    assert_eq!(container["resources"]["requests"]["nvidia.com/gpu"], "1");
    assert_eq!(container["volumeMounts"][1]["mountPath"], "/etc/thumbnail");
    assert_eq!(
        container["envFrom"][0]["configMapRef"]["name"],
        "thumbnail-settings"
    );

    // What the operator owns, and what the profile forbids.
    let with = |handler: &str, template: &str| {
        batchjob(
            "grabby",
            &format!(
                "  handler:\n    image: x\n{handler}  template:\n{template}{S3_SOURCE}{OUTPUT}"
            ),
        )
    };
    let cases = [
        (
            with(
                "",
                "    metadata:\n      labels:\n        shoal.dev/batchjob: other\n",
            ),
            "app.kubernetes.io/name and shoal.dev/* select the job's workers",
        ),
        (
            with(
                "",
                "    metadata:\n      labels:\n        app.kubernetes.io/name: x\n",
            ),
            "app.kubernetes.io/name and shoal.dev/* select the job's workers",
        ),
        (
            with(
                "",
                "    metadata:\n      annotations:\n        prometheus.io/port: \"1\"\n",
            ),
            "shoal.dev/* and prometheus.io/* are set by the operator",
        ),
        (
            with(
                "",
                "    spec:\n      volumes:\n        - name: host\n          hostPath:\n            path: /\n",
            ),
            "the volume types the restricted Pod Security Standard allows",
        ),
        (
            with(
                "",
                "    spec:\n      volumes:\n        - name: tmp\n          emptyDir: {}\n",
            ),
            "tmp is the worker's own /tmp volume",
        ),
        (
            with(
                "    volumeMounts:\n      - name: tmp\n        mountPath: /tmp\n        readOnly: true\n",
                "    spec: {}\n",
            ),
            "/tmp is the worker's own writable folder",
        ),
        (
            with(
                "",
                "    spec:\n      priorityClassName: system-cluster-critical\n",
            ),
            "the system- classes are for the cluster's own critical pods",
        ),
        (
            with("    extendedResources:\n      cpu: 64\n", "    spec: {}\n"),
            "cpu and memory follow handler.memoryMiB",
        ),
        (
            with(
                "    extendedResources:\n      nvidia.com/gpu: 0\n",
                "    spec: {}\n",
            ),
            "each count is from 1 to 256",
        ),
        (
            with("    imagePullPolicy: Sometimes\n", "    spec: {}\n"),
            "Unsupported value: \"Sometimes\"",
        ),
    ];
    for (yaml, reason) in &cases {
        let refusal = plane.refusal(yaml);
        assert!(refusal.contains(reason), "{yaml}\n{refusal}");
    }

    // A mount of a volume the template does not declare: CEL cannot afford
    // to compare every name with every name, the API server's dry run of
    // the Deployment (which the operator makes before creating anything)
    // refuses it.
    let mut dangling = job.clone();
    dangling.spec.handler.volume_mounts[0].name = "missing".into();
    let deployment = serde_json::to_string(&workload::deployment(&dangling, &wiring)).unwrap();
    let out =
        plane.kubectl_with_input(&["apply", "--dry-run=server", "-f", "-"], Some(&deployment));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("volumeMounts[1].name: Not found: \"missing\""),
        "{stderr}"
    );
}
