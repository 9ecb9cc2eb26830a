//! The user's part of the worker pod: `spec.template` (pod settings,
//! labels, annotations, volumes) and the handler's container settings
//! (`envFrom`, volume mounts, extended resources, pull policy), merged into
//! what [`super::deployment`] builds.
//!
//! Precedence: the operator's settings win. The schema already refuses a
//! template that names what the operator owns (selector labels,
//! `shoal.dev/*` and `prometheus.io/*` keys, the `tmp` volume, a mount at
//! `/tmp`, CPU and memory); should a BatchJob stored before those rules
//! carry one, those keys, the `tmp` volume and mount, and CPU and memory
//! are dropped here rather than applied. What the schema cannot check
//! cheaply, [`refusal`] finds before anything is created: a volume type
//! outside the restricted profile, a projected service account token.
//! Environment from `envFrom` yields to every `env` entry, the operator's
//! `SHOAL_*` included, as Kubernetes resolves them.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, PodSpec, Volume, VolumeMount};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::crd::{HandlerSpec, WorkerTemplate};

/// Name of the worker's own `/tmp` volume.
pub const TMP_VOLUME: &str = "tmp";
/// Where it is mounted.
pub const TMP_PATH: &str = "/tmp";

/// `ours` with the user's entries added, ours kept on a clash.
pub fn merged(
    theirs: &BTreeMap<String, String>,
    ours: BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut all = theirs.clone();
    all.extend(ours);
    all
}

/// The worker's `/tmp` volume, then the template's.
pub fn volumes(template: Option<&WorkerTemplate>) -> Vec<Volume> {
    let mut volumes = vec![Volume {
        name: TMP_VOLUME.to_owned(),
        empty_dir: Some(Default::default()),
        ..Volume::default()
    }];
    let theirs = template
        .and_then(|t| t.spec.as_ref())
        .map(|s| s.volumes.as_slice())
        .unwrap_or_default();
    volumes.extend(theirs.iter().filter(|v| v.name != TMP_VOLUME).cloned());
    volumes
}

/// The `/tmp` mount, then the handler's.
pub fn volume_mounts(handler: &HandlerSpec) -> Vec<VolumeMount> {
    let mut mounts = vec![VolumeMount {
        name: TMP_VOLUME.to_owned(),
        mount_path: TMP_PATH.to_owned(),
        ..VolumeMount::default()
    }];
    mounts.extend(
        handler
            .volume_mounts
            .iter()
            .filter(|m| m.mount_path != TMP_PATH)
            .cloned(),
    );
    mounts
}

/// Why the worker pods of a job with `template` must not be created, if
/// they must not: a volume of a type the restricted Pod Security Standard
/// does not allow (the schema refuses those; a BatchJob stored before that
/// rule is caught here), or a projected `serviceAccountToken`, which would
/// hand the workers a Kubernetes API token the operator keeps from them.
pub fn refusal(template: Option<&WorkerTemplate>) -> Option<String> {
    let volumes = template
        .and_then(|t| t.spec.as_ref())
        .map(|s| s.volumes.as_slice())
        .unwrap_or_default();
    volumes.iter().find_map(|v| {
        let allowed = v.config_map.is_some()
            || v.secret.is_some()
            || v.empty_dir.is_some()
            || v.persistent_volume_claim.is_some()
            || v.projected.is_some()
            || v.downward_api.is_some()
            || v.csi.is_some()
            || v.ephemeral.is_some();
        if !allowed {
            return Some(format!(
                "template.spec.volumes: volume {} is of a type the restricted Pod Security Standard does not allow",
                v.name
            ));
        }
        let token = v.projected.as_ref().is_some_and(|p| {
            p.sources
                .iter()
                .flatten()
                .any(|s| s.service_account_token.is_some())
        });
        token.then(|| {
            format!(
                "template.spec.volumes: volume {} projects a service account token; workers get no Kubernetes API token (name the account in handler.serviceAccountName and let its identity webhook mount what it needs)",
                v.name
            )
        })
    })
}

/// Adds the handler's container settings to `container`: `envFrom`, pull
/// policy, and each extended resource as request and limit (Kubernetes
/// requires the two equal); CPU and memory stay the operator's.
pub fn add_container_settings(handler: &HandlerSpec, container: &mut Container) {
    if !handler.env_from.is_empty() {
        container.env_from = Some(handler.env_from.clone());
    }
    container.image_pull_policy = handler.image_pull_policy.map(|p| p.as_str().to_owned());
    let resources = container.resources.get_or_insert_with(Default::default);
    for (name, count) in &handler.extended_resources {
        if name == "cpu" || name == "memory" {
            continue;
        }
        let quantity = Quantity(count.to_string());
        for map in [&mut resources.requests, &mut resources.limits] {
            map.get_or_insert_with(BTreeMap::new)
                .entry(name.clone())
                .or_insert_with(|| quantity.clone());
        }
    }
}

/// Adds the template's scheduling and registry settings to `pod`.
pub fn add_pod_settings(template: Option<&WorkerTemplate>, pod: &mut PodSpec) {
    let Some(spec) = template.and_then(|t| t.spec.as_ref()) else {
        return;
    };
    if !spec.node_selector.is_empty() {
        pod.node_selector = Some(spec.node_selector.clone());
    }
    pod.tolerations = (!spec.tolerations.is_empty()).then(|| spec.tolerations.clone());
    pod.affinity.clone_from(&spec.affinity);
    pod.topology_spread_constraints = (!spec.topology_spread_constraints.is_empty())
        .then(|| spec.topology_spread_constraints.clone());
    pod.priority_class_name
        .clone_from(&spec.priority_class_name);
    pod.runtime_class_name.clone_from(&spec.runtime_class_name);
    pod.image_pull_secrets =
        (!spec.image_pull_secrets.is_empty()).then(|| spec.image_pull_secrets.clone());
}
