//! What the operator keeps of the objects it watches: BatchJobs, and the
//! worker Deployments it made (label-selected), both without
//! `managedFields` and `kubectl`'s last-applied copy, which are most of an
//! object's bytes and never read. Of a Deployment it keeps the metadata,
//! the replicas and the status counts, not the pod template: whether the
//! spec is still what the operator applied is told by its `generation`
//! (recorded with each apply, [`Caches::expect`], and each comparison,
//! [`Caches::settled`]); only a Deployment whose
//! generation moved is read whole and compared. A reconcile reads its
//! Deployment and a pipeline stage its upstream job from here, not from the
//! API server.
//!
//! A cache lags the writes it has not seen yet: right after the operator
//! applies a Deployment, the cache may still hold the one from before.
//! [`Caches::expect`] records what was applied over which version, and
//! [`Caches::deployment`] answers with the applied replicas and hash until
//! the cache has moved past that version, so a decision is never made twice
//! from a count already changed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use kube::ResourceExt;
use kube::runtime::reflector::{ObjectRef, Store};

use crate::crd::BatchJob;

/// The annotation `kubectl apply` keeps a whole copy of the object in.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// `object` without what the operator never reads: `managedFields` and
/// the last-applied copy.
pub fn strip<K: ResourceExt>(object: &mut K) {
    object.managed_fields_mut().clear();
    object.annotations_mut().remove(LAST_APPLIED);
}

/// The Deployment condition telling that its ReplicaSet cannot make pods
/// (a ServiceAccount missing, a quota, an admission webhook).
pub const REPLICA_FAILURE: &str = "ReplicaFailure";

/// A Deployment as cached: [`strip`]ped, without its pod template or
/// status conditions other than [`REPLICA_FAILURE`].
pub fn strip_deployment(deployment: &mut Deployment) {
    strip(deployment);
    if let Some(spec) = deployment.spec.as_mut() {
        spec.template = PodTemplateSpec::default();
    }
    if let Some(status) = deployment.status.as_mut() {
        // Only `ReplicaFailure` is read: pods its ReplicaSet cannot make.
        if let Some(conditions) = status.conditions.as_mut() {
            conditions.retain(|c| c.type_ == REPLICA_FAILURE);
        }
        if status.conditions.as_ref().is_some_and(Vec::is_empty) {
            status.conditions = None;
        }
    }
}

/// What the operator knows of a Deployment it applied.
#[derive(Default)]
struct Applied {
    /// The `generation` the operator left it at (applied, or compared and
    /// found holding what it wants).
    generation: Option<i64>,
    /// Its last apply, while the cache may not show it yet.
    pending: Option<Pending>,
    /// The content hash the workers' ServiceAccount was last applied with.
    account: Option<String>,
}

/// An apply the cache may not show yet.
struct Pending {
    /// The `resourceVersion` the cache held when the apply was decided
    /// (`None`: it held no Deployment).
    over: Option<String>,
    replicas: i32,
    hash: String,
}

/// The watched objects, and what the operator applied.
pub struct Caches {
    /// Every BatchJob in scope.
    pub jobs: Store<BatchJob>,
    /// The worker Deployments (those labelled with
    /// [`crate::workload::JOB_LABEL`]).
    pub deployments: Store<Deployment>,
    applied: Mutex<HashMap<ObjectRef<Deployment>, Applied>>,
}

/// A Deployment as the reconcile should see it.
pub struct Seen {
    /// The object in the cache, if any.
    pub object: Option<Arc<Deployment>>,
    /// Set when the cache is behind the operator's own apply: the replicas
    /// and content hash that apply wrote.
    pub applied: Option<(i32, String)>,
}

impl Caches {
    /// Caches read from `jobs` and `deployments`.
    pub fn new(jobs: Store<BatchJob>, deployments: Store<Deployment>) -> Self {
        Self {
            jobs,
            deployments,
            applied: Mutex::new(HashMap::new()),
        }
    }

    /// Deployment `name` in `namespace`.
    pub fn deployment(&self, namespace: &str, name: &str) -> Seen {
        let key = ObjectRef::new(name).within(namespace);
        let object = self.deployments.get(&key);
        let version = object.as_ref().and_then(|d| d.resource_version());
        let cached_generation = object.as_ref().and_then(|d| d.metadata.generation);
        let applied = self.applied.lock().ok().and_then(|mut applied| {
            let entry = applied.get_mut(&key)?;
            let pending = entry.pending.as_ref()?;
            // The cache still shows what the apply was decided from, or a
            // version before the apply's generation (a status update of the
            // old spec): the apply is the truth.
            let behind = pending.over == version
                || matches!((cached_generation, entry.generation), (Some(c), Some(a)) if c < a);
            if behind {
                return Some((pending.replicas, pending.hash.clone()));
            }
            // The cache shows the apply, or someone's change after it.
            entry.pending = None;
            None
        });
        Seen { object, applied }
    }

    /// Records that Deployment `name` in `namespace` was applied with
    /// `replicas` and content `hash`, over the version `over` the cache
    /// held, leaving `generation` (see [`Seen::applied`] and
    /// [`Caches::unchanged`]).
    pub fn expect(
        &self,
        namespace: &str,
        name: &str,
        (over, generation): (Option<String>, Option<i64>),
        replicas: i32,
        hash: String,
    ) {
        self.update(namespace, name, |entry| {
            entry.generation = generation;
            entry.pending = Some(Pending {
                over,
                replicas,
                hash,
            });
        });
    }

    /// Whether the workers' ServiceAccount of Deployment `name` was applied
    /// with `content` (its content hash) by this process.
    pub fn account_applied(&self, namespace: &str, name: &str, content: &str) -> bool {
        let key = ObjectRef::new(name).within(namespace);
        self.applied
            .lock()
            .is_ok_and(|a| a.get(&key).and_then(|e| e.account.as_deref()) == Some(content))
    }

    /// Records that the workers' ServiceAccount of Deployment `name` was
    /// applied with `content`.
    pub fn account_applied_with(&self, namespace: &str, name: &str, content: String) {
        self.update(namespace, name, |entry| entry.account = Some(content));
    }

    /// Records that Deployment `name` in `namespace` holds what the
    /// operator wants at `generation` (compared, not applied).
    pub fn settled(&self, namespace: &str, name: &str, generation: Option<i64>) {
        self.update(namespace, name, |entry| entry.generation = generation);
    }

    /// Whether Deployment `name` is still at the generation the operator
    /// left it at ([`Caches::expect`], [`Caches::settled`]).
    pub fn unchanged(&self, namespace: &str, name: &str, generation: Option<i64>) -> bool {
        let key = ObjectRef::new(name).within(namespace);
        generation.is_some()
            && self
                .applied
                .lock()
                .is_ok_and(|a| a.get(&key).and_then(|e| e.generation) == generation)
    }

    /// Runs `change` on what is known of Deployment `name`.
    fn update(&self, namespace: &str, name: &str, change: impl FnOnce(&mut Applied)) {
        if let Ok(mut applied) = self.applied.lock() {
            change(
                applied
                    .entry(ObjectRef::new(name).within(namespace))
                    .or_default(),
            );
        }
    }

    /// Forgets what was applied for Deployment `name` (its job is gone).
    pub fn forget(&self, namespace: &str, name: &str) {
        if let Ok(mut applied) = self.applied.lock() {
            applied.remove(&ObjectRef::new(name).within(namespace));
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        reason = "test code: a panic is how a test reports failure"
    )]

    use k8s_openapi::api::apps::v1::DeploymentSpec;
    use kube::runtime::reflector::store::Writer;
    use kube::runtime::watcher::Event;

    use super::*;

    fn deployment(version: &str, replicas: i32) -> Deployment {
        let mut d = Deployment::default();
        d.metadata.name = Some("w".into());
        d.metadata.namespace = Some("ns".into());
        d.metadata.resource_version = Some(version.into());
        d.spec = Some(DeploymentSpec {
            replicas: Some(replicas),
            ..DeploymentSpec::default()
        });
        d
    }

    #[test]
    fn stripping_keeps_what_the_operator_reads() {
        let mut d = deployment("1", 2);
        d.metadata.managed_fields = Some(vec![Default::default()]);
        d.annotations_mut()
            .insert(LAST_APPLIED.into(), "{...}".into());
        d.annotations_mut()
            .insert(crate::workload::APPLIED_HASH.into(), "abc".into());
        strip(&mut d);
        assert!(d.metadata.managed_fields.as_ref().is_none_or(Vec::is_empty));
        assert_eq!(d.annotations().len(), 1, "{:?}", d.annotations());
        assert_eq!(d.spec.unwrap().replicas, Some(2));
    }

    #[test]
    fn a_cached_deployment_keeps_counts_not_its_template() {
        let mut d = deployment("1", 2);
        if let Some(spec) = d.spec.as_mut() {
            spec.template.metadata = Some(Default::default());
        }
        d.metadata.generation = Some(4);
        let condition = |type_: &str| k8s_openapi::api::apps::v1::DeploymentCondition {
            type_: type_.into(),
            status: "True".into(),
            ..Default::default()
        };
        d.status = Some(k8s_openapi::api::apps::v1::DeploymentStatus {
            conditions: Some(vec![condition("Available"), condition(REPLICA_FAILURE)]),
            ..Default::default()
        });
        strip_deployment(&mut d);
        assert_eq!(
            d.spec.as_ref().unwrap().template,
            PodTemplateSpec::default()
        );
        let kept: Vec<_> = d
            .status
            .as_ref()
            .unwrap()
            .conditions
            .iter()
            .flatten()
            .map(|c| c.type_.as_str())
            .collect();
        assert_eq!(kept, [REPLICA_FAILURE], "only the condition read is kept");
        assert_eq!(d.spec.unwrap().replicas, Some(2));
        assert_eq!(d.metadata.generation, Some(4));
    }

    #[test]
    fn only_a_recorded_generation_is_unchanged() {
        let caches = Caches::new(Writer::default().as_reader(), Writer::default().as_reader());
        assert!(!caches.unchanged("ns", "w", Some(3)), "nothing recorded");
        caches.settled("ns", "w", Some(3));
        assert!(caches.unchanged("ns", "w", Some(3)));
        assert!(!caches.unchanged("ns", "w", Some(4)), "edited since");
        assert!(!caches.unchanged("ns", "w", None));
        caches.forget("ns", "w");
        assert!(!caches.unchanged("ns", "w", Some(3)));
        caches.expect("ns", "w", (None, Some(5)), 1, "h".into());
        assert!(
            caches.unchanged("ns", "w", Some(5)),
            "an apply records the generation it left"
        );
    }

    #[test]
    fn an_apply_the_cache_has_not_seen_is_what_the_reconcile_sees() {
        let mut writer: Writer<Deployment> = Writer::default();
        let caches = Caches::new(Writer::default().as_reader(), writer.as_reader());
        // Nothing in the cache, an apply made one: seen as applied.
        caches.expect("ns", "w", (None, Some(1)), 3, "h1".into());
        let seen = caches.deployment("ns", "w");
        assert!(seen.object.is_none());
        assert_eq!(seen.applied, Some((3, "h1".into())));
        // The cache catches up: the object is the truth again.
        writer.apply_watcher_event(&Event::Apply(deployment("7", 3)));
        let seen = caches.deployment("ns", "w");
        assert_eq!(seen.applied, None);
        assert_eq!(
            seen.object.unwrap().spec.as_ref().unwrap().replicas,
            Some(3)
        );
        // Applied over version 7; until the cache moves past it, the apply
        // counts.
        caches.expect("ns", "w", (Some("7".into()), Some(2)), 5, "h1".into());
        assert_eq!(caches.deployment("ns", "w").applied, Some((5, "h1".into())));
        // A status update of the old spec (generation 1) arrives first: the
        // apply still counts.
        let mut status_only = deployment("8", 3);
        status_only.metadata.generation = Some(1);
        writer.apply_watcher_event(&Event::Apply(status_only));
        assert_eq!(caches.deployment("ns", "w").applied, Some((5, "h1".into())));
        let mut applied = deployment("9", 5);
        applied.metadata.generation = Some(2);
        writer.apply_watcher_event(&Event::Apply(applied));
        assert_eq!(caches.deployment("ns", "w").applied, None);
    }
}
