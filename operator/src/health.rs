//! Worker pods that cannot run, read from their status: an image that
//! cannot be pulled, a handler that crashes on start, a pod no node can
//! take. A Deployment shows none of this until its progress deadline (ten
//! minutes), so the operator looks at the pods themselves whenever fewer
//! are ready than asked for, and reports the first cause in the
//! `WorkersHealthy` condition and a Warning Event. Pure: no API calls.

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use crate::plan::condition;

/// Type of the condition this module sets.
pub const CONDITION: &str = "WorkersHealthy";

/// Waiting reasons of a container that will not get better by waiting.
const STUCK_WAITING: [&str; 8] = [
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
    "CrashLoopBackOff",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
];

/// Longest message kept from the kubelet (they quote image names and
/// runtime errors, which can be long).
const MAX_MESSAGE: usize = 300;

/// Why one worker pod cannot run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stuck {
    /// The pod's name.
    pub pod: String,
    /// The kubelet's or scheduler's reason (`ImagePullBackOff`, ...).
    pub reason: String,
    /// Its message, with the last exit of a crashing container.
    pub message: String,
}

fn cut(text: &str) -> String {
    if text.len() <= MAX_MESSAGE {
        return text.to_owned();
    }
    let mut end = MAX_MESSAGE;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

fn container_problem(status: &ContainerStatus) -> Option<(String, String)> {
    let waiting = status.state.as_ref()?.waiting.as_ref()?;
    let reason = waiting.reason.as_deref()?;
    if !STUCK_WAITING.contains(&reason) {
        return None;
    }
    let mut message = waiting.message.clone().unwrap_or_default();
    if let Some(last) = status
        .last_state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
    {
        let how = last.reason.as_deref().unwrap_or("Error");
        let exit = format!("last exit: {how} (code {})", last.exit_code);
        message = if message.is_empty() {
            exit
        } else {
            format!("{exit}; {message}")
        };
    }
    Some((reason.to_owned(), message))
}

/// Why `pod` cannot run, if it is stuck.
pub fn stuck(pod: &Pod) -> Option<Stuck> {
    if pod.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let status = pod.status.as_ref()?;
    let containers = status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten());
    let found = containers
        .filter_map(container_problem)
        .next()
        .or_else(|| {
            status
                .conditions
                .iter()
                .flatten()
                .find(|c| {
                    c.type_ == "PodScheduled"
                        && c.status == "False"
                        && c.reason.as_deref() == Some("Unschedulable")
                })
                .map(|c| {
                    (
                        "Unschedulable".to_owned(),
                        c.message.clone().unwrap_or_default(),
                    )
                })
        })?;
    Some(Stuck {
        pod: pod.name_any(),
        reason: found.0,
        message: cut(&found.1),
    })
}

/// The `WorkersHealthy` condition from the stuck pods among `pods` (the
/// job's worker pods, or none when all are ready).
pub fn workers_condition(
    previous: &[Condition],
    stuck: &[Stuck],
    pods: usize,
    generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    match stuck.first() {
        None => condition(
            previous,
            CONDITION,
            true,
            "WorkersRunning",
            "no worker pod is stuck".to_owned(),
            generation,
            now,
        ),
        Some(first) => condition(
            previous,
            CONDITION,
            false,
            &first.reason,
            format!(
                "{} of {} worker pods cannot run; pod {}: {}: {}",
                stuck.len(),
                pods,
                first.pod,
                first.reason,
                first.message
            ),
            generation,
            now,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateTerminated, ContainerStateWaiting, PodCondition, PodStatus,
    };
    use kube::api::ObjectMeta;

    fn pod(name: &str, status: PodStatus) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..ObjectMeta::default()
            },
            spec: None,
            status: Some(status),
        }
    }

    fn waiting(reason: &str, message: &str) -> ContainerStatus {
        ContainerStatus {
            name: "worker".into(),
            state: Some(ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some(reason.into()),
                    message: Some(message.into()),
                }),
                ..ContainerState::default()
            }),
            ..ContainerStatus::default()
        }
    }

    fn with_containers(statuses: Vec<ContainerStatus>) -> PodStatus {
        PodStatus {
            container_statuses: Some(statuses),
            ..PodStatus::default()
        }
    }

    #[test]
    fn an_image_that_cannot_be_pulled_is_stuck_with_the_kubelets_words() {
        let p = pod(
            "w-1",
            with_containers(vec![waiting(
                "ImagePullBackOff",
                "Back-off pulling image \"nope:1\"",
            )]),
        );
        assert_eq!(
            stuck(&p),
            Some(Stuck {
                pod: "w-1".into(),
                reason: "ImagePullBackOff".into(),
                message: "Back-off pulling image \"nope:1\"".into(),
            })
        );
    }

    #[test]
    fn a_crash_loop_names_the_last_exit() {
        let mut status = waiting(
            "CrashLoopBackOff",
            "back-off 10s restarting failed container",
        );
        status.last_state = Some(ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: 2,
                reason: Some("Error".into()),
                ..ContainerStateTerminated::default()
            }),
            ..ContainerState::default()
        });
        let found = stuck(&pod("w-2", with_containers(vec![status]))).unwrap();
        assert_eq!(found.reason, "CrashLoopBackOff");
        assert!(
            found
                .message
                .starts_with("last exit: Error (code 2); back-off")
        );
    }

    #[test]
    fn starting_or_terminating_pods_are_not_stuck() {
        let creating = pod(
            "w-3",
            with_containers(vec![waiting("ContainerCreating", "")]),
        );
        assert_eq!(stuck(&creating), None);
        let mut leaving = pod(
            "w-4",
            with_containers(vec![waiting("ImagePullBackOff", "x")]),
        );
        leaving.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Timestamp::UNIX_EPOCH),
        );
        assert_eq!(stuck(&leaving), None);
    }

    #[test]
    fn an_unschedulable_pod_is_stuck() {
        let p = pod(
            "w-5",
            PodStatus {
                conditions: Some(vec![PodCondition {
                    type_: "PodScheduled".into(),
                    status: "False".into(),
                    reason: Some("Unschedulable".into()),
                    message: Some("0/1 nodes are available: 1 Insufficient memory.".into()),
                    ..PodCondition::default()
                }]),
                ..PodStatus::default()
            },
        );
        assert_eq!(stuck(&p).unwrap().reason, "Unschedulable");
    }

    #[test]
    fn the_condition_names_the_first_stuck_pod_and_keeps_its_transition_time() {
        let t0 = Timestamp::UNIX_EPOCH;
        let later = Timestamp::from_second(100).unwrap();
        let stuck = [Stuck {
            pod: "w-1".into(),
            reason: "ErrImagePull".into(),
            message: "not found".into(),
        }];
        let first = workers_condition(&[], &stuck, 3, Some(1), t0);
        assert_eq!(first.status, "False");
        assert_eq!(first.reason, "ErrImagePull");
        assert_eq!(
            first.message,
            "1 of 3 worker pods cannot run; pod w-1: ErrImagePull: not found"
        );
        let again = workers_condition(std::slice::from_ref(&first), &stuck, 3, Some(1), later);
        assert_eq!(again.last_transition_time, first.last_transition_time);
        let healed = workers_condition(&[again], &[], 3, Some(1), later);
        assert_eq!(
            (healed.status.as_str(), healed.reason.as_str()),
            ("True", "WorkersRunning")
        );
    }

    #[test]
    fn long_messages_are_cut_on_a_character_boundary() {
        let long = "é".repeat(400);
        let cut = cut(&long);
        assert!(cut.len() <= MAX_MESSAGE + 3 && cut.ends_with("..."));
    }
}
