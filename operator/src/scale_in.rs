//! Idle-first scale-in: which worker pods a shrinking Deployment removes.
//!
//! A ReplicaSet scaled down deletes first the pods that are not running or
//! not ready, then those with the lowest
//! `controller.kubernetes.io/pod-deletion-cost`. Before the operator lowers
//! a job's replicas it asks each ready worker how many messages it holds
//! (`shoal_messages_in_flight` on its metrics port) and writes that count
//! as the pod's deletion cost, so idle pods go first and busy ones keep
//! their work instead of draining it.
//!
//! Guarantees and limits:
//! - Best effort. A worker that does not answer within
//!   [`PROBE_TIMEOUT`], or answers something that is not the gauge, keeps
//!   the cost it had (none: cost 0). The scale-in never waits for, or fails
//!   on, a probe.
//! - The counts are as fresh as the moment before the scale-in; a pod that
//!   picks up a message between the probe and the ReplicaSet's choice can
//!   still be chosen, and then drains as before (SIGTERM: it finishes what
//!   it holds within the grace period).
//! - A worker's answer only orders its own job's pods: the worst a
//!   worker that lies can do is be kept longer than its idle siblings.
//!   Answers are read up to [`BODY_LIMIT`] bytes; costs are capped at
//!   [`MAX_COST`].
//!
//! This module decides; [`crate::controller`] lists, probes and patches.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;

/// The annotation ReplicaSets order their scale-in by.
pub const DELETION_COST: &str = "controller.kubernetes.io/pod-deletion-cost";

/// The worker gauge read (see the worker's metrics).
pub const IN_FLIGHT_METRIC: &str = "shoal_messages_in_flight";

/// How long one worker's metrics may take.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// How long all the probes of one scale-in may take together: workers that
/// have not answered by then keep the cost they had.
pub const PROBES_DEADLINE: Duration = Duration::from_secs(3);

/// The most bytes read of one worker's metrics (a worker serves some
/// 10 KiB).
pub const BODY_LIMIT: usize = 256 * 1024;

/// Workers probed at once.
pub const PROBES_AT_ONCE: usize = 8;

/// The highest cost written: a count above it orders like it.
pub const MAX_COST: i64 = 1_000_000;

/// `shoal_messages_in_flight` from a Prometheus text exposition: the value
/// of its unlabelled sample, `None` when it has none or not a whole,
/// non-negative number.
pub fn in_flight(exposition: &str) -> Option<i64> {
    exposition.lines().find_map(|line| {
        let rest = line.strip_prefix(IN_FLIGHT_METRIC)?;
        // `name value [timestamp]`; a longer name or a labelled sample is
        // another series.
        let mut fields = rest.strip_prefix(' ')?.split_ascii_whitespace();
        let value: f64 = fields.next()?.parse().ok()?;
        (value.is_finite() && value >= 0.0 && value.fract() == 0.0)
            .then(|| value.min(MAX_COST as f64) as i64)
    })
}

/// A worker pod that can be asked: one of `deployment`'s (its controller a
/// ReplicaSet `<deployment>-<hash>`; a pod that only wears the labels is
/// not), running, ready, not being deleted, with an IP. Its name and IP.
pub fn probe_target(pod: &Pod, deployment: &str) -> Option<(String, String)> {
    if pod.metadata.deletion_timestamp.is_some() || !owned_by(pod, deployment) {
        return None;
    }
    let status = pod.status.as_ref()?;
    if status.phase.as_deref() != Some("Running") {
        return None;
    }
    let ready = status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    if !ready {
        return None;
    }
    let ip = status.pod_ip.clone().filter(|ip| !ip.is_empty())?;
    Some((pod.metadata.name.clone()?, ip))
}

/// Whether `pod`'s controller is a ReplicaSet of Deployment `deployment`.
pub fn owned_by(pod: &Pod, deployment: &str) -> bool {
    pod.metadata.owner_references.iter().flatten().any(|owner| {
        owner.controller == Some(true)
            && owner.kind == "ReplicaSet"
            && owner
                .name
                .strip_prefix(deployment)
                .and_then(|rest| rest.strip_prefix('-'))
                .is_some_and(|hash| !hash.is_empty() && !hash.contains('-'))
    })
}

/// The deletion-cost annotations to write: for each pod whose count is
/// known, the count, unless the pod already carries that value.
pub fn patches(pods: &[Pod], counts: &BTreeMap<String, i64>) -> Vec<(String, String)> {
    pods.iter()
        .filter_map(|pod| {
            let name = pod.metadata.name.as_ref()?;
            let cost = (*counts.get(name)?).clamp(0, MAX_COST).to_string();
            let current = pod
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(DELETION_COST));
            (current != Some(&cost)).then(|| (name.clone(), cost))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};

    fn owner(kind: &str, name: &str, controller: bool) -> OwnerReference {
        OwnerReference {
            api_version: "apps/v1".into(),
            kind: kind.into(),
            name: name.into(),
            uid: "u".into(),
            controller: Some(controller),
            ..Default::default()
        }
    }

    fn pod(name: &str, phase: &str, ready: bool, ip: Option<&str>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                owner_references: Some(vec![owner("ReplicaSet", "thumbs-workers-5d9f7c", true)]),
                ..Default::default()
            },
            status: Some(PodStatus {
                phase: Some(phase.into()),
                pod_ip: ip.map(Into::into),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn the_gauge_is_read_from_a_worker_exposition() {
        let text = "# HELP shoal_messages_in_flight Messages being handled.\n\
                    # TYPE shoal_messages_in_flight gauge\n\
                    shoal_messages_in_flight_total 9\n\
                    shoal_messages_in_flight{queue=\"x\"} 7\n\
                    shoal_messages_in_flight 3\n\
                    shoal_messages_received_total 12\n";
        assert_eq!(in_flight(text), Some(3));
        assert_eq!(
            in_flight("shoal_messages_in_flight 0 1700000000000\n"),
            Some(0)
        );
    }

    #[test]
    fn hostile_or_missing_answers_give_no_count() {
        for text in [
            "",
            "shoal_messages_received_total 12\n",
            "shoal_messages_in_flight -1\n",
            "shoal_messages_in_flight NaN\n",
            "shoal_messages_in_flight +Inf\n",
            "shoal_messages_in_flight 1.5\n",
            "shoal_messages_in_flight lots\n",
            "<html>not metrics</html>",
        ] {
            assert_eq!(in_flight(text), None, "{text:?}");
        }
        assert_eq!(
            in_flight("shoal_messages_in_flight 1e300\n"),
            Some(MAX_COST)
        );
    }

    #[test]
    fn only_running_ready_live_pods_with_an_ip_are_asked() {
        let target = |pod: &Pod| probe_target(pod, "thumbs-workers");
        assert_eq!(
            target(&pod("a", "Running", true, Some("10.0.0.5"))),
            Some(("a".into(), "10.0.0.5".into()))
        );
        assert_eq!(target(&pod("b", "Running", false, Some("10.0.0.6"))), None);
        assert_eq!(target(&pod("c", "Pending", true, Some("10.0.0.7"))), None);
        assert_eq!(target(&pod("d", "Running", true, None)), None);
        let mut leaving = pod("e", "Running", true, Some("10.0.0.8"));
        leaving.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::now()));
        assert_eq!(target(&leaving), None);
    }

    #[test]
    fn only_pods_of_the_jobs_own_replica_sets_are_asked() {
        let with = |owners: Vec<OwnerReference>| {
            let mut p = pod("x", "Running", true, Some("10.0.0.9"));
            p.metadata.owner_references = Some(owners);
            probe_target(&p, "thumbs-workers")
        };
        assert!(with(vec![owner("ReplicaSet", "thumbs-workers-5d9f7c", true)]).is_some());
        for owners in [
            vec![],
            vec![owner("ReplicaSet", "thumbs-workers-5d9f7c", false)],
            vec![owner("StatefulSet", "thumbs-workers-5d9f7c", true)],
            vec![owner("ReplicaSet", "thumbs-workers", true)],
            vec![owner("ReplicaSet", "thumbs-workers-other-5d9f7c", true)],
            vec![owner("ReplicaSet", "other-thumbs-workers-5d9f7c", true)],
        ] {
            assert!(with(owners.clone()).is_none(), "{owners:?}");
        }
    }

    #[test]
    fn costs_are_written_where_known_and_changed() {
        let mut same = pod("same", "Running", true, Some("10.0.0.1"));
        same.metadata.annotations = Some([(DELETION_COST.to_owned(), "2".to_owned())].into());
        let pods = vec![
            pod("idle", "Running", true, Some("10.0.0.2")),
            pod("busy", "Running", true, Some("10.0.0.3")),
            pod("silent", "Running", true, Some("10.0.0.4")),
            same,
        ];
        let counts = BTreeMap::from([
            ("idle".to_owned(), 0),
            ("busy".to_owned(), 4),
            ("same".to_owned(), 2),
        ]);
        assert_eq!(
            patches(&pods, &counts),
            vec![
                ("idle".to_owned(), "0".to_owned()),
                ("busy".to_owned(), "4".to_owned())
            ]
        );
    }
}
