//! Unit tests of the worker Deployment builder.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is how a test reports failure"
)]

use super::*;
use crate::crd::{BatchJobSpec, HandlerSpec, SourceSpec, SqsSource};

pub(super) fn job() -> BatchJob {
    let mut job = BatchJob::new(
        "thumbs",
        BatchJobSpec {
            handler: HandlerSpec {
                image: "ghcr.io/acme/thumbnail:1.0".into(),
                command: vec![],
                args: vec!["--verbose".into()],
                env: vec![env("SHOAL_TIMEOUT", "5"), env("RUST_LOG", "debug")],
                memory_mib: Some(3538),
                timeout_seconds: Some(120),
                concurrency: Some(4),
                service_account_name: Some("thumbs-s3".into()),
                ..HandlerSpec::image("x")
            },
            template: None,
            source: SourceSpec {
                sqs: Some(SqsSource {
                    queue_url: "http://127.0.0.1:9324/000000000000/jobs".into(),
                }),
                ..SourceSpec::default()
            },
            queue: None,
            scaling: None,
            failure_policy: None,
            output: None,
            ttl_seconds_after_finished: None,
            suspend: None,
            redrive: None,
        },
    );
    job.metadata.namespace = Some("media".into());
    job.metadata.uid = Some("0c3d1d8e-5b43-4d38-9d0e-3f0e1c8f4a11".into());
    job
}

fn wiring() -> Wiring {
    Wiring {
        input_bucket: Some("photos".into()),
        queue: WorkerQueue::Url("http://127.0.0.1:9324/000000000000/jobs".into()),
        output: Some("s3://thumbs/out/".into()),
        replicas: 3,
        host_image: "shoal-host:test".into(),
    }
}

fn container(d: &Deployment) -> &Container {
    &d.spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0]
}

fn env_value<'a>(c: &'a Container, name: &str) -> Vec<&'a str> {
    c.env
        .as_ref()
        .unwrap()
        .iter()
        .filter(|e| e.name == name)
        .filter_map(|e| e.value.as_deref())
        .collect()
}

#[test]
fn owned_by_the_job_in_its_namespace_with_stable_labels() {
    let d = deployment(&job(), &wiring());
    assert_eq!(d.metadata.name.as_deref(), Some("thumbs-workers"));
    assert_eq!(d.metadata.namespace.as_deref(), Some("media"));
    let owner = &d.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("BatchJob", "thumbs")
    );
    assert_eq!(owner.controller, Some(true));
    let spec = d.spec.as_ref().unwrap();
    assert_eq!(spec.replicas, Some(3));
    let selector = spec.selector.match_labels.as_ref().unwrap();
    let pod_labels = spec
        .template
        .metadata
        .as_ref()
        .unwrap()
        .labels
        .as_ref()
        .unwrap();
    assert_eq!(selector, pod_labels);
    assert_eq!(selector.get(JOB_LABEL).map(String::as_str), Some("thumbs"));
}

#[test]
fn worker_command_and_configuration() {
    let d = deployment(&job(), &wiring());
    let c = container(&d);
    assert_eq!(c.image.as_deref(), Some("ghcr.io/acme/thumbnail:1.0"));
    assert_eq!(c.command, None, "the image's entrypoint");
    assert_eq!(c.args.as_ref().unwrap(), &["--verbose", "worker"]);
    assert_eq!(
        env_value(c, "SHOAL_QUEUE"),
        ["http://127.0.0.1:9324/000000000000/jobs"]
    );
    assert_eq!(env_value(c, "SHOAL_OUTPUT"), ["s3://thumbs/out/"]);
    assert_eq!(env_value(c, "SHOAL_ALLOWED_BUCKETS"), ["photos"]);
    // The run whose parts the workers write: the job's uid.
    assert_eq!(
        env_value(c, "SHOAL_RECORD_RESULTS"),
        ["0c3d1d8e-5b43-4d38-9d0e-3f0e1c8f4a11"]
    );
    assert_eq!(env_value(c, "SHOAL_CONCURRENCY"), ["4"]);
    assert_eq!(env_value(c, "SHOAL_MEMORY_MIB"), ["3538"]);
    // The user's value replaces the operator's (a name twice is refused by
    // server-side apply).
    assert_eq!(env_value(c, "SHOAL_TIMEOUT"), ["5"]);
    assert_eq!(env_value(c, "RUST_LOG"), ["debug"]);
    let pod = d.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    assert_eq!(pod.service_account_name.as_deref(), Some("thumbs-s3"));
    assert_eq!(pod.automount_service_account_token, Some(false));
    assert!(
        service_account(&job()).is_none(),
        "the user's account is used"
    );
}

#[test]
fn an_amqp_queue_reaches_the_pod_through_its_secret_only() {
    let wiring = Wiring {
        queue: WorkerQueue::Amqp {
            secret: "rabbitmq".into(),
            key: "url".into(),
            queue: "shoal-media-thumbs".into(),
            max_attempts: 500,
        },
        ..wiring()
    };
    let d = deployment(&job(), &wiring);
    let c = container(&d);
    let vars = c.env.as_ref().unwrap();
    let position = |name: &str| vars.iter().position(|e| e.name == name).unwrap();
    let url = &vars[position("SHOAL_AMQP_URL")];
    assert_eq!(url.value, None, "no URL (nor password) in the Deployment");
    let secret = url
        .value_from
        .as_ref()
        .unwrap()
        .secret_key_ref
        .as_ref()
        .unwrap();
    assert_eq!(
        (secret.name.as_str(), secret.key.as_str()),
        ("rabbitmq", "url")
    );
    // Kubernetes expands $(VAR) only from variables defined before.
    assert!(position("SHOAL_AMQP_URL") < position("SHOAL_QUEUE"));
    assert_eq!(
        env_value(c, "SHOAL_QUEUE"),
        ["$(SHOAL_AMQP_URL)/shoal-media-thumbs"]
    );
    assert_eq!(env_value(c, "SHOAL_MAX_ATTEMPTS"), ["100"]);
}

#[test]
fn without_an_account_the_workers_get_one_with_nothing() {
    let mut j = job();
    j.spec.handler.service_account_name = None;
    let sa = service_account(&j).unwrap();
    assert_eq!(sa.metadata.name.as_deref(), Some("thumbs-workers"));
    assert_eq!(sa.automount_service_account_token, Some(false));
    let owner = &sa.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(owner.name, "thumbs");
    let d = deployment(&j, &wiring());
    let pod = d.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    assert_eq!(pod.service_account_name.as_deref(), Some("thumbs-workers"));
    assert_eq!(pod.automount_service_account_token, Some(false));
}

#[test]
fn the_content_hash_changes_with_the_content_only() {
    let a = deployment(&job(), &wiring());
    assert_eq!(
        content_hash(&a),
        content_hash(&deployment(&job(), &wiring()))
    );
    let scaled = Wiring {
        replicas: 4,
        ..wiring()
    };
    assert_ne!(content_hash(&a), content_hash(&deployment(&job(), &scaled)));
    assert_eq!(content_hash(&a).len(), 24);
}

#[test]
fn resources_follow_memory_as_on_lambda() {
    assert_eq!(cpu_millis(1769), 1000);
    assert_eq!(cpu_millis(3538), 2000);
    assert_eq!(cpu_millis(1024), 579);
    assert_eq!(cpu_millis(128), 73);
    let d = deployment(&job(), &wiring());
    let resources = container(&d).resources.as_ref().unwrap();
    for set in [
        resources.limits.as_ref().unwrap(),
        resources.requests.as_ref().unwrap(),
    ] {
        assert_eq!(set["memory"], Quantity("3538Mi".into()));
        assert_eq!(set["cpu"], Quantity("2".into()));
    }
    assert_eq!(canonical_mebibytes(2048), "2Gi");
    assert_eq!(canonical_millicores(579), "579m");
}

#[test]
fn restricted_security_probes_metrics_and_grace() {
    let d = deployment(&job(), &wiring());
    let pod = d.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    let c = &pod.containers[0];
    let sc = c.security_context.as_ref().unwrap();
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.run_as_non_root, Some(true));
    assert_eq!(
        sc.capabilities.as_ref().unwrap().drop.as_ref().unwrap(),
        &["ALL"]
    );
    assert_eq!(sc.seccomp_profile.as_ref().unwrap().type_, "RuntimeDefault");
    let psc = pod.security_context.as_ref().unwrap();
    assert_eq!(psc.run_as_non_root, Some(true));
    assert_eq!(
        psc.seccomp_profile.as_ref().unwrap().type_,
        "RuntimeDefault"
    );
    let ready = c
        .readiness_probe
        .as_ref()
        .unwrap()
        .http_get
        .as_ref()
        .unwrap();
    assert_eq!(ready.path.as_deref(), Some("/readyz"));
    assert_eq!(ready.port, IntOrString::Int(METRICS_PORT));
    let live = c
        .liveness_probe
        .as_ref()
        .unwrap()
        .http_get
        .as_ref()
        .unwrap();
    assert_eq!(live.path.as_deref(), Some("/healthz"));
    assert_eq!(c.ports.as_ref().unwrap()[0].container_port, METRICS_PORT);
    assert_eq!(env_value(c, "SHOAL_METRICS_ADDR"), ["0.0.0.0:9090"]);
    // Grace covers a full item timeout plus settling.
    assert!(pod.termination_grace_period_seconds.unwrap() >= 120 + 5);
    assert_eq!(env_value(c, "SHOAL_SHUTDOWN_GRACE"), ["125"]);
}

#[test]
fn long_items_keep_their_timeout_and_drain_at_most_an_hour() {
    let mut long = job();
    long.spec.handler.timeout_seconds = Some(4 * 3600);
    // (Without the test job's own SHOAL_TIMEOUT, which would win.)
    long.spec.handler.env.retain(|e| e.name != "SHOAL_TIMEOUT");
    let d = deployment(&long, &wiring());
    let pod = d.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    let c = &pod.containers[0];
    assert_eq!(env_value(c, "SHOAL_TIMEOUT"), ["14400"]);
    // What the worker accepts as its drain, and Kubernetes a bit longer.
    assert_eq!(env_value(c, "SHOAL_SHUTDOWN_GRACE"), ["3600"]);
    assert_eq!(pod.termination_grace_period_seconds, Some(3610));
}

/// `job()` with `template` and the handler settings in `handler` (JSON
/// objects as a user writes them).
fn templated(template: serde_json::Value, handler: serde_json::Value) -> BatchJob {
    let mut job = job();
    job.spec.template = Some(serde_json::from_value(template).unwrap());
    let mut spec = serde_json::to_value(&job.spec.handler).unwrap();
    for (key, value) in handler.as_object().unwrap() {
        spec[key] = value.clone();
    }
    job.spec.handler = serde_json::from_value(spec).unwrap();
    job
}

fn pod(d: &Deployment) -> (&ObjectMeta, &PodSpec) {
    let template = &d.spec.as_ref().unwrap().template;
    (
        template.metadata.as_ref().unwrap(),
        template.spec.as_ref().unwrap(),
    )
}

#[test]
fn a_template_places_the_workers_and_the_handler_mounts_and_requests() {
    let job = templated(
        serde_json::json!({
            "metadata": {
                "labels": {"team": "media", "cost-center": "42"},
                "annotations": {"example.com/owner": "media@example.com"}
            },
            "spec": {
                "nodeSelector": {"pool": "gpu-spot"},
                "tolerations": [{"key": "spot", "operator": "Exists", "effect": "NoSchedule"}],
                "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [{"matchExpressions": [
                        {"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["a", "b"]}
                    ]}]
                }}},
                "topologySpreadConstraints": [{
                    "maxSkew": 1,
                    "topologyKey": "kubernetes.io/hostname",
                    "whenUnsatisfiable": "ScheduleAnyway",
                    "labelSelector": {"matchLabels": {"shoal.dev/batchjob": "thumbs"}}
                }],
                "priorityClassName": "batch-low",
                "runtimeClassName": "nvidia",
                "imagePullSecrets": [{"name": "registry"}],
                "volumes": [{"name": "models", "configMap": {"name": "models"}}]
            }
        }),
        serde_json::json!({
            "envFrom": [{"configMapRef": {"name": "thumbnail-settings"}}],
            "volumeMounts": [{"name": "models", "mountPath": "/models", "readOnly": true}],
            "extendedResources": {"nvidia.com/gpu": 1},
            "imagePullPolicy": "IfNotPresent"
        }),
    );
    let d = deployment(&job, &wiring());
    let (meta, spec) = pod(&d);
    let labels = meta.labels.as_ref().unwrap();
    assert_eq!(labels["team"], "media");
    assert_eq!(labels[JOB_LABEL], "thumbs");
    let selector = d
        .spec
        .as_ref()
        .unwrap()
        .selector
        .match_labels
        .as_ref()
        .unwrap();
    assert_eq!(
        selector,
        &selector_labels(&job),
        "the selector is the operator's alone"
    );
    let annotations = meta.annotations.as_ref().unwrap();
    assert_eq!(annotations["example.com/owner"], "media@example.com");
    assert_eq!(annotations["prometheus.io/port"], "9090");

    assert_eq!(spec.node_selector.as_ref().unwrap()["pool"], "gpu-spot");
    assert_eq!(
        spec.tolerations.as_ref().unwrap()[0].key.as_deref(),
        Some("spot")
    );
    assert!(spec.affinity.as_ref().unwrap().node_affinity.is_some());
    assert_eq!(
        spec.topology_spread_constraints.as_ref().unwrap()[0].max_skew,
        1
    );
    assert_eq!(spec.priority_class_name.as_deref(), Some("batch-low"));
    assert_eq!(spec.runtime_class_name.as_deref(), Some("nvidia"));
    assert_eq!(
        spec.image_pull_secrets.as_ref().unwrap()[0].name,
        "registry"
    );
    let volumes: Vec<&str> = spec
        .volumes
        .as_ref()
        .unwrap()
        .iter()
        .map(|v| v.name.as_str())
        .collect();
    assert_eq!(volumes, ["tmp", "models"]);
    // Untouched by the template: the restricted profile and the account.
    assert_eq!(
        spec.security_context.as_ref().unwrap().run_as_non_root,
        Some(true)
    );
    assert_eq!(spec.automount_service_account_token, Some(false));

    let c = container(&d);
    let mounts: Vec<(&str, &str)> = c
        .volume_mounts
        .as_ref()
        .unwrap()
        .iter()
        .map(|m| (m.name.as_str(), m.mount_path.as_str()))
        .collect();
    assert_eq!(mounts, [("tmp", "/tmp"), ("models", "/models")]);
    let env_from = c.env_from.as_ref().unwrap();
    assert_eq!(
        env_from[0].config_map_ref.as_ref().unwrap().name,
        "thumbnail-settings"
    );
    // env wins over envFrom in Kubernetes: the operator's variables stay.
    assert_eq!(env_value(c, "SHOAL_QUEUE").len(), 1);
    assert_eq!(c.image_pull_policy.as_deref(), Some("IfNotPresent"));
    let resources = c.resources.as_ref().unwrap();
    for map in [&resources.requests, &resources.limits] {
        let map = map.as_ref().unwrap();
        assert_eq!(map["nvidia.com/gpu"], Quantity("1".into()));
        assert_eq!(map["memory"], Quantity("3538Mi".into()));
        assert_eq!(map["cpu"], Quantity("2".into()));
    }
}

#[test]
fn what_the_operator_owns_a_template_cannot_take() {
    // What the schema refuses, had a BatchJob stored before its rules
    // carried it.
    let job = templated(
        serde_json::json!({
            "metadata": {
                "labels": {"shoal.dev/batchjob": "someone-else", "app.kubernetes.io/name": "x"},
                "annotations": {"prometheus.io/port": "1"}
            },
            "spec": {"volumes": [{"name": "tmp", "hostPath": {"path": "/"}}]}
        }),
        serde_json::json!({
            "volumeMounts": [{"name": "tmp", "mountPath": "/tmp", "readOnly": true}],
            "extendedResources": {"cpu": 64, "memory": 1}
        }),
    );
    let d = deployment(&job, &wiring());
    let (meta, spec) = pod(&d);
    assert_eq!(meta.labels.as_ref().unwrap(), &selector_labels(&job));
    assert_eq!(
        meta.annotations.as_ref().unwrap()["prometheus.io/port"],
        "9090"
    );
    let volumes = spec.volumes.as_ref().unwrap();
    assert_eq!(volumes.len(), 1);
    assert!(volumes[0].empty_dir.is_some() && volumes[0].host_path.is_none());
    let c = container(&d);
    let mounts = c.volume_mounts.as_ref().unwrap();
    assert_eq!(mounts.len(), 1);
    assert_eq!(mounts[0].read_only, None, "/tmp stays writable");
    let limits = c.resources.as_ref().unwrap().limits.as_ref().unwrap();
    assert_eq!(limits["cpu"], Quantity("2".into()));
    assert_eq!(limits["memory"], Quantity("3538Mi".into()));
}

#[test]
fn without_a_template_the_pod_is_as_before() {
    let d = deployment(&job(), &wiring());
    let (_, spec) = pod(&d);
    assert_eq!(spec.node_selector, None);
    assert_eq!(spec.tolerations, None);
    assert_eq!(spec.affinity, None);
    assert_eq!(spec.image_pull_secrets, None);
    let c = container(&d);
    assert_eq!(c.env_from, None);
    assert_eq!(c.image_pull_policy, None);
    assert_eq!(
        c.resources.as_ref().unwrap().limits.as_ref().unwrap().len(),
        2
    );
}

#[test]
fn a_projected_token_or_a_node_volume_is_refused_before_anything_is_made() {
    let refusal = |volumes: serde_json::Value| {
        let template: crate::crd::WorkerTemplate =
            serde_json::from_value(serde_json::json!({"spec": {"volumes": volumes}})).unwrap();
        template_refusal(Some(&template))
    };
    assert_eq!(template_refusal(None), None);
    assert_eq!(
        refusal(serde_json::json!([
            {"name": "settings", "configMap": {"name": "s"}},
            {"name": "both", "projected": {"sources": [
                {"configMap": {"name": "s"}}, {"secret": {"name": "k"}},
                {"downwardAPI": {"items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}}
            ]}},
            {"name": "claim", "persistentVolumeClaim": {"claimName": "models"}}
        ])),
        None
    );
    let token = refusal(
        serde_json::json!([{"name": "api", "projected": {"sources": [
            {"serviceAccountToken": {"path": "token", "audience": "sts.amazonaws.com"}}
        ]}}]),
    )
    .unwrap();
    assert!(
        token.contains("volume api projects a service account token"),
        "{token}"
    );
    let host = refusal(serde_json::json!([{"name": "root", "hostPath": {"path": "/"}}])).unwrap();
    assert!(host.contains("volume root is of a type"), "{host}");
}
