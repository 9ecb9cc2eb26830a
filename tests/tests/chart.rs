//! The Helm chart (`charts/shoal`) with helm built from its Go module,
//! offline: lint, what it renders, the images it runs, and the alert rules
//! and dashboard queries under promtool. `chart_cluster.rs` takes it to a
//! real kube-apiserver.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is how a test reports failure"
)]

use std::path::Path;
use std::process::Command;

use serde_json::Value;
use shoal_tests::helm::{chart, helm, helm_output, render};
use shoal_tests::kube::tool_from_env;
use shoal_tests::tool;

/// Every optional object of the chart switched on.
const EVERYTHING: [&str; 4] = [
    "metrics.serviceMonitor.enabled=true",
    "metrics.podMonitor.enabled=true",
    "metrics.prometheusRule.enabled=true",
    "dashboard.enabled=true",
];

fn repo(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

/// The YAML documents of a multi-document string, as JSON values.
fn documents(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .filter_map(|doc| {
            let value: Value = serde::Deserialize::deserialize(doc).unwrap();
            (!value.is_null()).then_some(value)
        })
        .collect()
}

fn numbers_as_floats(value: &Value) -> Value {
    match value {
        Value::Number(n) => serde_json::json!(n.as_f64()),
        Value::Array(items) => Value::Array(items.iter().map(numbers_as_floats).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), numbers_as_floats(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn find<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} rendered"))
}

#[test]
fn helm_lint_strict_passes_in_every_mode() {
    let home = tempfile::tempdir().unwrap();
    let chart = chart();
    let chart = chart.to_string_lossy();
    helm(home.path(), None, &["lint", "--strict", &chart]);
    let mut all = vec!["lint", "--strict", &chart];
    for set in EVERYTHING.iter().chain(&[
        "watchNamespace=media",
        "replicaCount=2",
        "rbac.amqpSecrets[0].name=rabbitmq",
    ]) {
        all.extend(["--set", set]);
    }
    helm(home.path(), None, &all);
    // values.schema.json refuses a value that makes no sense.
    let out = helm_output(
        home.path(),
        None,
        &[
            "lint",
            "--strict",
            &chart,
            "--set",
            "leaderElection.leaseSeconds=1",
        ],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("leaseSeconds"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn the_chart_crd_is_the_one_in_crds() {
    let committed = std::fs::read_to_string(repo("crds/batchjob.yaml")).unwrap();
    let copied = std::fs::read_to_string(chart().join("files/crds/batchjob.yaml")).unwrap();
    assert!(
        committed == copied,
        "charts/shoal/files/crds/batchjob.yaml differs from crds/batchjob.yaml: \
         run scripts/sync-chart-crds.sh"
    );
    let home = tempfile::tempdir().unwrap();
    let docs = documents(&render(home.path(), "shoal", "shoal-system", &[]));
    let rendered = find(&docs, "CustomResourceDefinition");
    let source = &documents(&committed)[0];
    // helm writes `minimum: 1.0` as `1`: compare numbers as numbers.
    assert!(
        numbers_as_floats(&rendered["spec"]) == numbers_as_floats(&source["spec"]),
        "the CRD the chart renders differs from crds/batchjob.yaml"
    );
    assert_eq!(
        rendered["metadata"]["annotations"]["helm.sh/resource-policy"], "keep",
        "uninstalling the chart keeps the CRD (and every BatchJob)"
    );
}

/// `charts/shoal/README.md` is what helm-docs makes of `values.yaml` and
/// `README.md.gotmpl` now, and its table describes every value.
#[test]
fn the_chart_readme_is_generated_from_the_values() {
    let out = Command::new(repo("scripts/chart-readme.sh"))
        .arg("--dry-run")
        .env("SHOAL_HELM_DOCS", tool_from_env("SHOAL_HELM_DOCS"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let generated = String::from_utf8(out.stdout).unwrap();
    let committed = std::fs::read_to_string(chart().join("README.md")).unwrap();
    assert!(
        committed == generated,
        "charts/shoal/README.md is not what helm-docs generates from values.yaml: \
         run scripts/chart-readme.sh"
    );
    // Rows: | key | type | default | description |.
    let rows: Vec<(&str, &str)> = generated
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| Key "))
        .map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split(" | ").collect();
            (cells[0].trim(), cells.last().unwrap().trim())
        })
        .collect();
    for (key, description) in &rows {
        assert!(!description.is_empty(), "value {key} has no '# --' comment");
    }
    let values: Value =
        serde_yaml::from_str(&std::fs::read_to_string(chart().join("values.yaml")).unwrap())
            .unwrap();
    let mut leaves = Vec::new();
    leaf_paths(&values, String::new(), &mut leaves);
    assert!(leaves.len() > 40, "{leaves:?}");
    for leaf in &leaves {
        assert!(
            rows.iter()
                .any(|(key, _)| leaf == key || leaf.starts_with(&format!("{key}."))),
            "value {leaf} is not in the chart README"
        );
    }
}

/// The dotted paths of `value`'s leaves (empty maps and lists are leaves).
fn leaf_paths(value: &Value, path: String, out: &mut Vec<String>) {
    match value.as_object() {
        Some(map) if !map.is_empty() => {
            for (key, child) in map {
                let child_path = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                leaf_paths(child, child_path, out);
            }
        }
        _ => out.push(path),
    }
}

#[test]
fn the_operator_deployment_is_locked_down_and_wired() {
    let home = tempfile::tempdir().unwrap();
    let docs = documents(&render(
        home.path(),
        "shoal",
        "shoal-system",
        &["watchNamespace=media"],
    ));
    let deployment = find(&docs, "Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["runAsUser"], 65532);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let container = &pod["containers"][0];
    let security = &container["securityContext"];
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["capabilities"]["drop"][0], "ALL");
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    let args: Vec<&str> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    for arg in [
        "--leader-election=true",
        "--lease-name=shoal",
        "--lease-namespace=shoal-system",
        "--watch-namespace=media",
    ] {
        assert!(args.contains(&arg), "{arg} not in {args:?}");
    }
    // Namespaced mode: a Role in the watched namespace, no ClusterRole.
    assert!(docs.iter().all(|d| d["kind"] != "ClusterRole"));
    let role = docs
        .iter()
        .find(|d| d["kind"] == "Role" && d["metadata"]["namespace"] == "media")
        .expect("a Role in media");
    assert!(!role.to_string().contains("secrets"));
    // No Secret at all by default; one Role per granted RabbitMQ Secret,
    // `get` on that name only.
    let default = documents(&render(home.path(), "shoal", "shoal-system", &[]));
    for rbac in default
        .iter()
        .filter(|d| matches!(d["kind"].as_str(), Some("Role" | "ClusterRole")))
    {
        assert!(!rbac["rules"].to_string().contains("secrets"), "{rbac}");
    }
    // Pods: `list` always; `patch` (deletion costs) only with idle-first
    // scale-in, which the operator is told of too.
    let pod_verbs = |docs: &[serde_json::Value]| -> (serde_json::Value, bool) {
        let role = docs
            .iter()
            .find(|d| d["kind"] == "ClusterRole")
            .expect("a ClusterRole");
        let rule = role["rules"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["resources"][0] == "pods")
            .expect("a rule on pods");
        let deployment = docs
            .iter()
            .find(|d| d["kind"] == "Deployment")
            .expect("the Deployment");
        let on = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|a| a == "--idle-first-scale-in=true");
        (rule["verbs"].clone(), on)
    };
    assert_eq!(
        pod_verbs(&default),
        (serde_json::json!(["list", "patch"]), true)
    );
    let off = documents(&render(
        home.path(),
        "shoal",
        "shoal-system",
        &["idleFirstScaleIn=false"],
    ));
    assert_eq!(pod_verbs(&off), (serde_json::json!(["list"]), false));
    let granted = documents(&render(
        home.path(),
        "shoal",
        "shoal-system",
        &[
            "watchNamespace=media,rbac.amqpSecrets[0].name=rabbitmq,rbac.amqpSecrets[1].namespace=etl,rbac.amqpSecrets[1].name=broker",
        ],
    ));
    let secret_rules: Vec<(String, String)> = granted
        .iter()
        .filter(|d| d["kind"] == "Role")
        .flat_map(|d| {
            let namespace = d["metadata"]["namespace"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            d["rules"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|r| r["resources"][0] == "secrets")
                .map(move |r| {
                    assert_eq!(r["verbs"], serde_json::json!(["get"]));
                    (namespace.clone(), r["resourceNames"].to_string())
                })
        })
        .collect();
    assert_eq!(
        secret_rules,
        [
            ("media".to_owned(), "[\"rabbitmq\"]".to_owned()),
            ("etl".to_owned(), "[\"broker\"]".to_owned())
        ]
    );
    // The images run as the user the pods are told to run as.
    for dockerfile in ["deploy/operator.Dockerfile", "deploy/Dockerfile"] {
        let text = std::fs::read_to_string(repo(dockerfile)).unwrap();
        let user = text
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix("USER "))
            .unwrap_or_else(|| panic!("{dockerfile} sets no USER"));
        assert_eq!(user.trim(), "65532:65532", "{dockerfile}");
        assert!(text.contains(" AS build"), "{dockerfile} is multi-stage");
    }
}

#[test]
fn names_disruption_budget_spread_volumes_and_security_contexts_follow_the_values() {
    let home = tempfile::tempdir().unwrap();
    // One replica: no PodDisruptionBudget (it would block every drain).
    let single = documents(&render(home.path(), "shoal", "shoal-system", &[]));
    assert!(single.iter().all(|d| d["kind"] != "PodDisruptionBudget"));
    let docs = documents(&render(
        home.path(),
        "ops",
        "shoal-system",
        &[
            "replicaCount=2",
            "nameOverride=batch",
            "crds.annotations.example\\.com/owner=platform",
            "extraEnvFrom[0].secretRef.name=aws",
            "extraVolumes[0].name=ca,extraVolumes[0].configMap.name=corporate-ca",
            "extraVolumeMounts[0].name=ca,extraVolumeMounts[0].mountPath=/etc/ssl/corporate",
            "topologySpreadConstraints[0].maxSkew=1,topologySpreadConstraints[0].topologyKey=topology.kubernetes.io/zone,topologySpreadConstraints[0].whenUnsatisfiable=DoNotSchedule",
            "podSecurityContext.runAsUser=10001,podSecurityContext.runAsNonRoot=true",
        ],
    ));
    let deployment = find(&docs, "Deployment");
    assert_eq!(deployment["metadata"]["name"], "ops-batch");
    assert_eq!(
        deployment["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"],
        "batch"
    );
    let pdb = find(&docs, "PodDisruptionBudget");
    assert_eq!(pdb["spec"]["maxUnavailable"], 1);
    assert_eq!(
        pdb["spec"]["selector"], deployment["spec"]["selector"],
        "the budget covers the operator's pods"
    );
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["volumes"][0]["configMap"]["name"], "corporate-ca");
    assert_eq!(pod["topologySpreadConstraints"][0]["maxSkew"], 1);
    // Values merge key by key into the restricted defaults.
    assert_eq!(pod["securityContext"]["runAsUser"], 10001);
    assert_eq!(pod["securityContext"]["runAsGroup"], 65532);
    let container = &pod["containers"][0];
    assert_eq!(container["envFrom"][0]["secretRef"]["name"], "aws");
    assert_eq!(
        container["volumeMounts"][0]["mountPath"],
        "/etc/ssl/corporate"
    );
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    let crd = find(&docs, "CustomResourceDefinition");
    let annotations = &crd["metadata"]["annotations"];
    assert_eq!(annotations["helm.sh/resource-policy"], "keep");
    assert_eq!(annotations["example.com/owner"], "platform");
    // fullnameOverride names every object.
    let full = documents(&render(
        home.path(),
        "ops",
        "shoal-system",
        &["fullnameOverride=shoal-operator"],
    ));
    assert_eq!(
        find(&full, "Deployment")["metadata"]["name"],
        "shoal-operator"
    );
    assert_eq!(
        find(&full, "ServiceAccount")["metadata"]["name"],
        "shoal-operator"
    );
}

/// Writes `groups` as a Prometheus rule file in `dir`; returns its path.
fn rule_file(dir: &Path, name: &str, groups: &Value) -> std::path::PathBuf {
    let path = dir.join(name);
    let text = serde_yaml::to_string(&serde_json::json!({ "groups": groups })).unwrap();
    std::fs::write(&path, text).unwrap();
    path
}

fn promtool(args: &[&str], dir: &Path) {
    let out = Command::new(tool("promtool", "prometheus"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool {args:?}:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn alert_rules_fire_as_documented_and_dashboard_queries_parse() {
    let home = tempfile::tempdir().unwrap();
    let docs = documents(&render(home.path(), "shoal", "shoal-system", &EVERYTHING));
    let rule = find(&docs, "PrometheusRule");
    let dir = home.path();
    rule_file(dir, "alerts.yaml", &rule["spec"]["groups"]);
    promtool(&["check", "rules", "alerts.yaml"], dir);
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("rules/alerts.test.yaml"),
        dir.join("alerts.test.yaml"),
    )
    .unwrap();
    promtool(&["test", "rules", "alerts.test.yaml"], dir);

    // The operator's per-job series keep their own namespace label.
    assert_eq!(
        find(&docs, "ServiceMonitor")["spec"]["endpoints"][0]["honorLabels"],
        true
    );
    // Worker series carry their BatchJob, as the operator's per-job ones do.
    let pod_monitor = find(&docs, "PodMonitor");
    let relabel = &pod_monitor["spec"]["podMetricsEndpoints"][0]["relabelings"][0];
    assert_eq!(
        relabel["sourceLabels"][0],
        "__meta_kubernetes_pod_label_shoal_dev_batchjob"
    );
    assert_eq!(relabel["targetLabel"], "batchjob");

    // Each alert links its runbook: a section of docs/runbooks.md.
    let runbooks =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/runbooks.md"))
            .unwrap();
    let alerts: Vec<&Value> = rule["spec"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .collect();
    assert!(alerts.len() >= 4);
    for alert in alerts {
        let name = alert["alert"].as_str().unwrap();
        let url = alert["annotations"]["runbook_url"]
            .as_str()
            .unwrap_or_default();
        assert_eq!(
            url,
            format!(
                "https://github.com/shoal-dev/shoal/blob/main/docs/runbooks.md#{}",
                name.to_lowercase()
            ),
            "{name}"
        );
        assert!(
            runbooks.contains(&format!("\n## {name}\n")),
            "docs/runbooks.md has no section {name}"
        );
    }

    // Every dashboard query, as a recording rule, must parse.
    let config_map = docs
        .iter()
        .find(|d| d["kind"] == "ConfigMap" && d["metadata"]["name"] == "shoal-dashboard")
        .expect("dashboard ConfigMap");
    let dashboard: Value =
        serde_json::from_str(config_map["data"]["shoal.json"].as_str().unwrap()).unwrap();
    // Namespace and BatchJob variables, from the operator's per-job series.
    let variables: Vec<&str> = dashboard["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    assert_eq!(variables, ["datasource", "namespace", "batchjob"]);
    let rules: Vec<Value> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap().clone())
        .enumerate()
        .map(|(n, t)| {
            serde_json::json!({
                "record": format!("shoal:dashboard_query_{n}"),
                "expr": t["expr"]
                    .as_str()
                    .unwrap()
                    .replace("$__rate_interval", "5m")
                    .replace("$namespace", ".*")
                    .replace("$batchjob", ".*"),
            })
        })
        .collect();
    assert!(rules.len() >= 10, "{} queries", rules.len());
    // Every worker and job query follows the variables.
    for rule in &rules {
        let expr = rule["expr"].as_str().unwrap();
        if expr.contains("shoal_operator_") {
            continue;
        }
        assert!(
            expr.contains("namespace=~\".*\", batchjob=~\".*\""),
            "{expr}"
        );
    }
    rule_file(
        dir,
        "dashboard.yaml",
        &serde_json::json!([{ "name": "dashboard", "rules": rules }]),
    );
    promtool(&["check", "rules", "dashboard.yaml"], dir);
}
