//! helm (built from its Go module by `scripts/k8s-tools.sh`, `SHOAL_HELM`)
//! on the chart in `charts/shoal`, against a [`ControlPlane`] or offline.
//! helm's cache, config and data folders live in a temporary folder: the
//! machine's own helm setup is never read or changed.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::kube::{ControlPlane, tool_from_env};

/// `charts/shoal` of this repository.
pub fn chart() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/shoal")
}

/// helm with its state in `home`, against `kubeconfig` (if any).
pub fn helm_output(home: &Path, kubeconfig: Option<&Path>, args: &[&str]) -> Output {
    let helm = tool_from_env("SHOAL_HELM");
    let mut command = Command::new(&helm);
    command
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .env_remove("KUBECONFIG")
        .args(args);
    if let Some(kubeconfig) = kubeconfig {
        command.arg("--kubeconfig").arg(kubeconfig);
    }
    command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {helm}: {e}"))
}

/// helm as above; panics with its output unless it succeeds; returns
/// standard output.
pub fn helm(home: &Path, kubeconfig: Option<&Path>, args: &[&str]) -> String {
    let out = helm_output(home, kubeconfig, args);
    assert!(
        out.status.success(),
        "helm {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `helm template` of the chart as release `release` in `namespace` with
/// `--set` values; the rendered YAML.
pub fn render(home: &Path, release: &str, namespace: &str, sets: &[&str]) -> String {
    let chart = chart();
    let chart = chart.to_string_lossy();
    let mut args = vec!["template", release, &chart, "--namespace", namespace];
    for set in sets {
        args.extend(["--set", set]);
    }
    helm(home, None, &args)
}

/// helm against the control plane's API server as its admin.
pub fn helm_in(plane: &ControlPlane, args: &[&str]) -> String {
    helm(&plane.dir().join("helm"), Some(plane.kubeconfig()), args)
}
