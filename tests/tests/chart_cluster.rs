//! The Helm chart against a real kube-apiserver (with etcd, no kubelet):
//! a server-side dry run of everything it renders into a namespace that
//! enforces Pod Security `restricted`; install, upgrade with a CRD change,
//! uninstall; and the operator run with nothing but its ServiceAccount's
//! rights (the admin impersonates the account, as `kubectl --as` does).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is how a test reports failure"
)]

use std::path::Path;
use std::time::Duration;

use shoal_tests::helm::{chart, helm_in, render};
use shoal_tests::kube::ControlPlane;
use shoal_tests::moto::Moto;
use shoal_tests::operator::{self, create_queue, send_messages};
use shoal_tests::process::Proc;
use shoal_tests::rabbitmq::Rabbit;
use shoal_tests::{free_port, wait_until};

const OPERATOR: &str = env!("CARGO_BIN_EXE_shoal-operator-e2e");
const OPERATOR_ACCOUNT: &str = "system:serviceaccount:shoal-system:shoal";

/// Creates namespace `name` enforcing (and warning about) Pod Security
/// `restricted`.
fn restricted_namespace(plane: &ControlPlane, name: &str) {
    plane.kubectl(&["create", "namespace", name]);
    plane.kubectl(&[
        "label",
        "namespace",
        name,
        "pod-security.kubernetes.io/enforce=restricted",
        "pod-security.kubernetes.io/warn=restricted",
        "pod-security.kubernetes.io/audit=restricted",
    ]);
}

/// Installs the ServiceMonitor, PodMonitor and PrometheusRule CRDs of the
/// prometheus-operator (fetched by scripts/k8s-tools.sh).
fn install_monitoring_crds(plane: &ControlPlane) {
    let dir = std::env::var("SHOAL_MONITORING_CRDS")
        .expect("SHOAL_MONITORING_CRDS is set by scripts/k8s-tools.sh");
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        plane.kubectl(&["apply", "--server-side", "-f", &path.to_string_lossy()]);
    }
    for crd in ["servicemonitors", "podmonitors", "prometheusrules"] {
        plane.wait_established(&format!("{crd}.monitoring.coreos.com"));
    }
}

#[test]
fn everything_rendered_passes_a_server_dry_run_in_a_restricted_namespace() {
    let plane = ControlPlane::start();
    install_monitoring_crds(&plane);
    restricted_namespace(&plane, "shoal-system");
    restricted_namespace(&plane, "media");
    let home = plane.dir().join("helm");
    let everything = [
        "metrics.serviceMonitor.enabled=true",
        "metrics.podMonitor.enabled=true",
        "metrics.prometheusRule.enabled=true",
        "dashboard.enabled=true",
    ];
    let namespaced: Vec<&str> = everything
        .iter()
        .copied()
        .chain([
            "watchNamespace=media",
            "replicaCount=2",
            "extraVolumes[0].name=ca,extraVolumes[0].configMap.name=corporate-ca",
            "extraVolumeMounts[0].name=ca,extraVolumeMounts[0].mountPath=/etc/ssl/corporate",
            "extraEnvFrom[0].secretRef.name=aws",
            "topologySpreadConstraints[0].maxSkew=1,topologySpreadConstraints[0].topologyKey=topology.kubernetes.io/zone,topologySpreadConstraints[0].whenUnsatisfiable=ScheduleAnyway,topologySpreadConstraints[0].labelSelector.matchLabels.app\\.kubernetes\\.io/component=operator",
        ])
        .collect();
    for sets in [&everything[..], &namespaced[..]] {
        let yaml = render(&home, "shoal", "shoal-system", sets);
        let out = plane.kubectl_with_input(&["apply", "--dry-run=server", "-f", "-"], Some(&yaml));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{sets:?}: {stdout}\n{stderr}");
        assert!(stderr.trim().is_empty(), "{sets:?}: warnings: {stderr}");
        for kind in [
            "customresourcedefinition.apiextensions.k8s.io/batchjobs.shoal.dev",
            "deployment.apps/shoal",
            "servicemonitor.monitoring.coreos.com/shoal",
            "podmonitor.monitoring.coreos.com/shoal-workers",
            "prometheusrule.monitoring.coreos.com/shoal",
            "configmap/shoal-dashboard",
        ] {
            assert!(stdout.contains(kind), "{sets:?}: no {kind} in\n{stdout}");
        }
        assert_eq!(
            stdout.contains("poddisruptionbudget.policy/shoal"),
            sets.contains(&"replicaCount=2"),
            "a budget exactly with more than one replica: {stdout}"
        );
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// `helm install RELEASE charts/shoal` into `namespace` (created).
fn install(plane: &ControlPlane, release: &str, namespace: &str, extra: &[&str]) {
    let chart = chart();
    let chart = chart.to_string_lossy();
    let mut args = vec![
        "install",
        release,
        &chart,
        "--namespace",
        namespace,
        "--create-namespace",
    ];
    args.extend_from_slice(extra);
    helm_in(plane, &args);
}

fn printer_columns(plane: &ControlPlane) -> String {
    plane.jsonpath(
        &["crd", "batchjobs.shoal.dev"],
        "{.spec.versions[0].additionalPrinterColumns[*].name}",
    )
}

#[test]
fn install_upgrade_with_a_crd_change_and_uninstall() {
    let plane = ControlPlane::start();
    let chart = chart();
    install(&plane, "shoal", "shoal-system", &[]);
    let get = |what: &[&str], path: &str| plane.jsonpath(what, path);
    assert_eq!(
        get(
            &["-n", "shoal-system", "deployment", "shoal"],
            "{.spec.replicas}"
        ),
        "1"
    );
    assert_eq!(get(&["clusterrole", "shoal"], "{.metadata.name}"), "shoal");
    assert_eq!(
        printer_columns(&plane),
        "Phase Done Total Failed Workers Age Desired Suspended Queue Message"
    );

    // Version 0.1.1 of the chart adds a printer column to the CRD.
    let dir = tempfile::tempdir().unwrap();
    let next = dir.path().join("shoal");
    copy_dir(&chart, &next);
    let crd_path = next.join("files/crds/batchjob.yaml");
    let crd = std::fs::read_to_string(&crd_path).unwrap().replacen(
        "  - additionalPrinterColumns:\n",
        "  - additionalPrinterColumns:\n    - jsonPath: .status.split.items\n      name: Items\n      type: integer\n",
        1,
    );
    std::fs::write(&crd_path, crd).unwrap();
    let chart_yaml = next.join("Chart.yaml");
    let text = std::fs::read_to_string(&chart_yaml)
        .unwrap()
        .replace("version: 0.1.0", "version: 0.1.1");
    std::fs::write(&chart_yaml, text).unwrap();
    helm_in(
        &plane,
        &[
            "upgrade",
            "shoal",
            &next.to_string_lossy(),
            "--namespace",
            "shoal-system",
            "--set",
            "replicaCount=2",
        ],
    );
    assert_eq!(
        printer_columns(&plane),
        "Items Phase Done Total Failed Workers Age Desired Suspended Queue Message"
    );
    assert_eq!(
        get(
            &["-n", "shoal-system", "deployment", "shoal"],
            "{.spec.replicas}"
        ),
        "2"
    );
    let history = helm_in(&plane, &["history", "shoal", "--namespace", "shoal-system"]);
    assert!(history.contains("shoal-0.1.1"), "{history}");
    operator::apply_sqs_job(
        &plane,
        "https://sqs.eu-west-1.amazonaws.com/1/q",
        "",
        "    maxWorkers: 1\n",
    );

    helm_in(
        &plane,
        &["uninstall", "shoal", "--namespace", "shoal-system"],
    );
    assert_eq!(
        get(
            &[
                "-n",
                "shoal-system",
                "deployment",
                "shoal",
                "--ignore-not-found"
            ],
            "{.metadata.name}"
        ),
        ""
    );
    assert_eq!(
        get(
            &["clusterrole", "shoal", "--ignore-not-found"],
            "{.metadata.name}"
        ),
        ""
    );
    // The CRD (resource-policy: keep) and the BatchJobs stay.
    assert!(printer_columns(&plane).starts_with("Items"));
    assert_eq!(get(&["bj", "uploads"], "{.metadata.name}"), "uploads");
}

/// `kubectl auth can-i VERB RESOURCE ARGS` as `user`: "yes" or "no".
fn can_i(plane: &ControlPlane, user: &str, args: &[&str]) -> String {
    let mut all = vec!["auth", "can-i", "--as", user];
    all.extend_from_slice(args);
    let out = plane.kubectl_output(&all);
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_runs_batchjobs_with_only_its_service_account_rights() {
    let plane = ControlPlane::start();
    install(
        &plane,
        "shoal",
        "shoal-system",
        &[
            "--set",
            "rbac.amqpSecrets[0].namespace=default,rbac.amqpSecrets[0].name=rabbitmq",
        ],
    );
    let moto = Moto::start();
    let sqs = moto.sqs();
    let url = create_queue(&sqs, "uploads").await;
    send_messages(&sqs, &url, 25).await;
    moto.s3()
        .create_bucket()
        .bucket("photos")
        .send()
        .await
        .unwrap();
    operator::apply_sqs_job(
        &plane,
        &url,
        "",
        "    maxWorkers: 5\n    targetBacklogPerWorker: 10\n",
    );
    // An S3 job over an empty prefix: queues created, nothing to split,
    // Succeeded, manifest written, deleted after its TTL, queues deleted.
    plane.apply_yaml(
        "apiVersion: shoal.dev/v1alpha1
kind: BatchJob
metadata:
  name: empty
spec:
  handler:
    image: ghcr.io/shoal-dev/thumbnail:0.1.0
  source:
    s3: {bucket: photos, prefix: nothing-here/}
  output: {bucket: photos, prefix: out/}
  ttlSecondsAfterFinished: 1
",
    );
    // RabbitMQ jobs: one whose Secret the chart granted, one whose Secret
    // exists but was not granted.
    let rabbit = Rabbit::start();
    for secret in ["rabbitmq", "not-granted"] {
        plane.kubectl(&[
            "create",
            "secret",
            "generic",
            secret,
            &format!("--from-literal=url={}", rabbit.uri()),
        ]);
    }
    for (job, secret) in [("orders", "rabbitmq"), ("denied", "not-granted")] {
        plane.apply_yaml(&format!(
            "apiVersion: shoal.dev/v1alpha1
kind: BatchJob
metadata:
  name: {job}
spec:
  handler:
    image: ghcr.io/shoal-dev/thumbnail:0.1.0
  source:
    amqp:
      connection: {{secretName: {secret}, managementUrl: \"{}\"}}
      queue: {job}
",
            rabbit.management_url()
        ));
    }

    let mut env = moto.env();
    let kubeconfig = plane.kubeconfig_as(OPERATOR_ACCOUNT);
    env.push(("KUBECONFIG", kubeconfig.to_string_lossy().into_owned()));
    let metrics = format!("127.0.0.1:{}", free_port());
    let operator = Proc::spawn(
        OPERATOR,
        &[
            "run",
            "--metrics-addr",
            &metrics,
            "--lease-namespace",
            "shoal-system",
            "--lease-name",
            "shoal",
        ],
        &env,
        &plane.dir().join("operator.log"),
    );
    let log = || operator.log_text();
    let limit = Duration::from_secs(90);
    wait_until(
        limit,
        "3 workers for 25 messages",
        || (operator::replicas(&plane, "uploads-workers") == Some(3)).then_some(()),
        log,
    );
    assert_eq!(
        plane.jsonpath(
            &["serviceaccount", "uploads-workers"],
            "{.automountServiceAccountToken}"
        ),
        "false",
        "the workers' account carries no token"
    );
    assert!(
        !plane
            .jsonpath(
                &["-n", "shoal-system", "lease", "shoal"],
                "{.spec.holderIdentity}"
            )
            .is_empty()
    );
    wait_until(
        limit,
        "the empty job deleted after its TTL",
        || {
            plane
                .jsonpath(&["bj", "empty", "--ignore-not-found"], "{.metadata.name}")
                .is_empty()
                .then_some(())
        },
        log,
    );
    let manifest = moto
        .s3()
        .head_object()
        .bucket("photos")
        .key("out/_shoal/manifest.json")
        .send()
        .await;
    assert!(manifest.is_ok(), "manifest written: {manifest:?}");
    // The granted Secret was read: the queue is declared on the broker.
    wait_until(
        limit,
        "the RabbitMQ job's queue declared",
        || {
            (!plane
                .jsonpath(&["bj", "orders"], "{.status.queueUrl}")
                .is_empty())
            .then_some(())
        },
        log,
    );
    assert!(rabbit.exists("orders").await);
    wait_until(
        limit,
        "the job with an ungranted Secret waiting",
        || {
            (plane.jsonpath(&["bj", "denied"], "{.status.conditions[0].reason}")
                == "BrokerSecretForbidden")
                .then_some(())
        },
        log,
    );
    assert!(!rabbit.exists("denied").await);
    operator::wait_for_events(
        &plane,
        None,
        &[
            "Scaled",
            "QueuesCreated",
            "Succeeded",
            "QueuesDeleted",
            "QueuesDeclared",
            "BrokerSecretForbidden",
        ],
    );
    assert!(
        !log().to_lowercase().contains("forbidden"),
        "the operator was refused something:\n{}",
        log()
    );

    // What the account may not do.
    for (args, answer) in [
        (&["get", "secrets", "-n", "shoal-system"][..], "no"),
        (&["list", "secrets", "--all-namespaces"][..], "no"),
        (&["get", "secrets", "-n", "default"][..], "no"),
        (&["get", "secret/rabbitmq", "-n", "default"][..], "yes"),
        (&["get", "secret/not-granted", "-n", "default"][..], "no"),
        (&["get", "secret/rabbitmq", "-n", "shoal-system"][..], "no"),
        (&["list", "secrets", "-n", "default"][..], "no"),
        (&["watch", "secrets", "-n", "default"][..], "no"),
        (&["create", "pods", "-n", "default"][..], "no"),
        (&["delete", "deployments", "-n", "default"][..], "no"),
        (&["update", "customresourcedefinitions"][..], "no"),
        (&["update", "leases", "-n", "default"][..], "no"),
        (
            &["patch", "batchjobs.shoal.dev", "--subresource=status"][..],
            "yes",
        ),
    ] {
        assert_eq!(can_i(&plane, OPERATOR_ACCOUNT, args), answer, "{args:?}");
    }

    // Namespaced mode: a second release watching `media` only.
    plane.kubectl(&["create", "namespace", "media"]);
    install(
        &plane,
        "shoal-ns",
        "shoal-ns",
        &["--set", "watchNamespace=media,crds.install=false"],
    );
    let namespaced = "system:serviceaccount:shoal-ns:shoal-ns";
    for (args, answer) in [
        (&["list", "batchjobs.shoal.dev", "-n", "media"][..], "yes"),
        (&["list", "batchjobs.shoal.dev", "-n", "default"][..], "no"),
        (
            &["list", "batchjobs.shoal.dev", "--all-namespaces"][..],
            "no",
        ),
        (&["get", "secrets", "-n", "media"][..], "no"),
    ] {
        assert_eq!(can_i(&plane, namespaced, args), answer, "{args:?}");
    }

    operator.signal("TERM");
}
