//! `spec.template`: the pod-level settings of a BatchJob's workers that the
//! operator does not own — where they run (node selector, tolerations,
//! affinity, topology spread, priority and runtime class), the registries
//! they pull from, the volumes they mount, and labels and annotations.
//! Container-level settings (extended resources such as GPUs, volume
//! mounts, `envFrom`) sit in `spec.handler`, the container.
//!
//! What the operator owns it keeps, and the schema refuses a template that
//! tries to change it (see `docs/operator.md`, "Worker pod template"): the
//! selector labels, `shoal.dev/*` and `prometheus.io/*` keys, the `tmp`
//! volume, and volume types outside the restricted Pod Security Standard.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, LocalObjectReference, Toleration, TopologySpreadConstraint, Volume,
};
use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// The worker pods' template: labels, annotations and pod settings merged
/// into the Deployment the operator builds.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkerTemplate {
    /// Labels and annotations of the worker pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<WorkerMetadata>,
    /// Pod settings of the worker pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<WorkerPodSpec>,
}

/// Labels and annotations added to the worker pods (not to the Deployment
/// or its selector). Keys the operator sets are refused.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkerMetadata {
    /// Pod labels. `app.kubernetes.io/name` and `shoal.dev/*` select the
    /// job's workers and are the operator's.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64))]
    #[x_kube(validation = Rule::new("!self.exists(k, k == 'app.kubernetes.io/name' || k.startsWith('shoal.dev/'))").message("template.metadata.labels: app.kubernetes.io/name and shoal.dev/* select the job's workers and are set by the operator"))]
    pub labels: BTreeMap<String, String>,
    /// Pod annotations. `shoal.dev/*` and `prometheus.io/*` are the
    /// operator's.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64))]
    #[x_kube(validation = Rule::new("!self.exists(k, k.startsWith('shoal.dev/') || k.startsWith('prometheus.io/'))").message("template.metadata.annotations: shoal.dev/* and prometheus.io/* are set by the operator"))]
    pub annotations: BTreeMap<String, String>,
}

/// Pod settings of the worker pods, each as in a Pod's spec.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkerPodSpec {
    /// Nodes the workers may run on, by label (e.g. a spot or GPU pool).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 32))]
    pub node_selector: BTreeMap<String, String>,
    /// Taints the workers tolerate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub tolerations: Vec<Toleration>,
    /// Node and pod affinity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// How the workers spread over zones or nodes. Their pods carry the
    /// labels `app.kubernetes.io/name: shoal-worker` and
    /// `shoal.dev/batchjob: <name>` to select.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub topology_spread_constraints: Vec<TopologySpreadConstraint>,
    /// PriorityClass of the worker pods; not one of Kubernetes' own
    /// `system-` classes, which would let batch work preempt the cluster's
    /// critical pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new("!self.startsWith('system-')").message("template.spec.priorityClassName: the system- classes are for the cluster's own critical pods"))]
    pub priority_class_name: Option<String>,
    /// RuntimeClass of the worker pods (e.g. `nvidia`, `gvisor`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub runtime_class_name: Option<String>,
    /// Secrets holding credentials for the registry of `handler.image`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub image_pull_secrets: Vec<LocalObjectReference>,
    /// Volumes the handler mounts (`handler.volumeMounts`), of the types
    /// the restricted Pod Security Standard allows. `tmp` is the
    /// operator's (the worker's `/tmp`). A `projected` volume may not
    /// carry a `serviceAccountToken` (the operator refuses the job,
    /// `SpecInvalid`): the workers get no Kubernetes API token.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    #[x_kube(validation = Rule::new("self.all(v, v.name != 'tmp')").message("template.spec.volumes: tmp is the worker's own /tmp volume: choose another name"))]
    #[x_kube(validation = Rule::new("self.all(v, v.name != 'shoal-host')").message("template.spec.volumes: shoal-host is the volume the Lambda host is copied into: choose another name"))]
    #[x_kube(validation = Rule::new("self.all(v, has(v.configMap) || has(v.secret) || has(v.emptyDir) || has(v.persistentVolumeClaim) || has(v.projected) || has(v.downwardAPI) || has(v.csi) || has(v.ephemeral))").message("template.spec.volumes may be configMap, secret, emptyDir, persistentVolumeClaim, projected, downwardAPI, csi or ephemeral: the volume types the restricted Pod Security Standard allows"))]
    pub volumes: Vec<Volume>,
}
