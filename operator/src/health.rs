//! Worker pods that cannot run, read from their status: an image that
//! cannot be pulled, a handler that crashes on start, a pod no node can
//! take. A Deployment shows none of this until its progress deadline (ten
//! minutes), so the operator looks at the pods themselves while fewer are
//! ready than asked for (at most once per [`LOOK_EVERY`] per job, the first
//! time [`LOOK_EVERY`] after it fell short, from the API server's watch
//! cache), and reports the first cause in the
//! `WorkersHealthy` condition, with a Warning Event when the condition
//! turns False. Pure, apart from the per-job clock of [`Looks`]: no API
//! calls.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use crate::plan::condition;

/// How often, at most, the pods of one job are listed.
pub const LOOK_EVERY: Duration = Duration::from_secs(10);

/// How long a pod may wait for a node before it counts as stuck: a
/// cluster autoscaler adding a node takes minutes, and that is not a
/// fault.
pub const UNSCHEDULABLE_AFTER: Duration = Duration::from_secs(180);

/// How long a job short of ready workers may go unseen before its wait
/// starts anew: far longer than the gap between two of its reconciles
/// (one [`LOOK_EVERY`] requeue plus an apply and a status write of up to
/// 30 s each), so a slow API server delays a look but never prevents it;
/// the map holds only jobs seen short in that time.
const FORGET_AFTER: Duration = Duration::from_secs(600);

/// Per job short of ready workers, when it was first seen short or its
/// pods were last listed, so such a job costs one pod list per
/// [`LOOK_EVERY`], not one per reconcile. The first look comes
/// [`LOOK_EVERY`] after the job is first seen short: right after a
/// scale-up the pods are being made, and none can have failed yet (an
/// image pull or a crash takes seconds to show), so a list then would cost
/// an API call and find nothing.
#[derive(Debug, Default)]
pub struct Looks {
    last: Mutex<HashMap<String, Instant>>,
}

impl Looks {
    /// Whether the job keyed `key` (namespace/name) is due a look at
    /// `now`; if so, records it. A job not seen before is recorded and not
    /// due yet.
    pub fn due(&self, key: &str, now: Instant) -> bool {
        // A poisoned lock only means another reconcile panicked mid-update
        // of a timestamp map: its data is still usable.
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        last.retain(|_, at| now.saturating_duration_since(*at) < FORGET_AFTER);
        match last.get(key) {
            Some(at) if now.saturating_duration_since(*at) < LOOK_EVERY => false,
            Some(_) => {
                last.insert(key.to_owned(), now);
                true
            }
            None => {
                last.insert(key.to_owned(), now);
                false
            }
        }
    }

    /// Forgets `key`: its workers are all ready; the next time it is short
    /// of them starts the wait anew.
    pub fn forget(&self, key: &str) {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        last.remove(key);
    }

    /// Records `key` as seen short of workers (or looked at) at `at`: the
    /// mocked-API tests' way to a look that is due.
    #[cfg(test)]
    pub fn seen_at(&self, key: &str, at: Instant) {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        last.insert(key.to_owned(), at);
    }
}

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

/// The last exit of a container that has exited before, as the kubelet
/// reports it.
fn last_exit(status: &ContainerStatus) -> Option<(String, i32)> {
    let last = status.last_state.as_ref()?.terminated.as_ref()?;
    let how = last.reason.as_deref().unwrap_or("Error").to_owned();
    Some((how, last.exit_code))
}

fn container_problem(status: &ContainerStatus) -> Option<(String, String)> {
    let state = status.state.as_ref()?;
    let last = last_exit(status);
    let exit = last
        .as_ref()
        .map(|(how, code)| format!("last exit: {how} (code {code})"));
    if let Some(waiting) = &state.waiting {
        let reason = waiting.reason.as_deref()?;
        if !STUCK_WAITING.contains(&reason) {
            return None;
        }
        // One reason for a pull that fails: the kubelet alternates the
        // two on every retry, and the condition should not flap.
        let reason = if reason == "ImagePullBackOff" {
            "ErrImagePull"
        } else {
            reason
        };
        let message = waiting.message.clone().unwrap_or_default();
        let message = match exit {
            Some(exit) if message.is_empty() => exit,
            Some(exit) => format!("{exit}; {message}"),
            None => message,
        };
        return Some((reason.to_owned(), message));
    }
    // Between two crashes of a crash loop the container runs (or has just
    // exited) without being ready: still the same crash loop.
    let crashed = matches!(&last, Some((_, code)) if *code != 0);
    if crashed && !status.ready && status.restart_count > 0 {
        return Some((
            "CrashLoopBackOff".to_owned(),
            format!(
                "{}; restarted {} times",
                exit.unwrap_or_default(),
                status.restart_count
            ),
        ));
    }
    None
}

/// The pod's `Unschedulable` message, once it has waited for a node
/// longer than [`UNSCHEDULABLE_AFTER`] at `now`.
fn unschedulable(pod: &Pod, now: Timestamp) -> Option<(String, String)> {
    let scheduled = pod
        .status
        .as_ref()?
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "PodScheduled")?;
    if scheduled.status != "False" || scheduled.reason.as_deref() != Some("Unschedulable") {
        return None;
    }
    let since = scheduled.last_transition_time.as_ref().map(|t| t.0);
    let waited = since.map_or(Duration::ZERO, |since| {
        Duration::try_from(now.duration_since(since)).unwrap_or(Duration::ZERO)
    });
    (waited >= UNSCHEDULABLE_AFTER).then(|| {
        (
            "Unschedulable".to_owned(),
            scheduled.message.clone().unwrap_or_default(),
        )
    })
}

/// Why `pod` cannot run at `now`, if it is stuck.
pub fn stuck(pod: &Pod, now: Timestamp) -> Option<Stuck> {
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
        .or_else(|| unschedulable(pod, now))?;
    Some(Stuck {
        pod: pod.name_any(),
        reason: found.0,
        message: cut(&found.1),
    })
}

/// The `WorkersHealthy` condition among `conditions`, kept as it is when
/// the pods were not looked at.
pub fn kept(conditions: &[Condition]) -> Option<Condition> {
    conditions.iter().find(|c| c.type_ == CONDITION).cloned()
}

/// Whether `condition` turns the job's `WorkersHealthy` False where it was
/// True or absent in `previous`: the moment for one Warning Event (a
/// reason that changes while it stays False is no new fault).
pub fn turned_unhealthy(previous: &[Condition], condition: &Condition) -> bool {
    condition.type_ == CONDITION
        && condition.status == "False"
        && !previous
            .iter()
            .any(|c| c.type_ == CONDITION && c.status == "False")
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
        ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
        PodCondition, PodStatus,
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
    fn an_image_that_cannot_be_pulled_is_stuck_with_the_kubelets_words_under_one_reason() {
        let p = pod(
            "w-1",
            with_containers(vec![waiting(
                "ImagePullBackOff",
                "Back-off pulling image \"nope:1\"",
            )]),
        );
        assert_eq!(
            stuck(&p, Timestamp::UNIX_EPOCH),
            Some(Stuck {
                pod: "w-1".into(),
                reason: "ErrImagePull".into(),
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
        let found = stuck(
            &pod("w-2", with_containers(vec![status])),
            Timestamp::UNIX_EPOCH,
        )
        .unwrap();
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
        assert_eq!(stuck(&creating, Timestamp::UNIX_EPOCH), None);
        let mut leaving = pod(
            "w-4",
            with_containers(vec![waiting("ImagePullBackOff", "x")]),
        );
        leaving.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Timestamp::UNIX_EPOCH),
        );
        assert_eq!(stuck(&leaving, Timestamp::UNIX_EPOCH), None);
    }

    #[test]
    fn a_crash_loop_between_two_crashes_is_still_stuck() {
        let status = ContainerStatus {
            name: "worker".into(),
            ready: false,
            restart_count: 3,
            state: Some(ContainerState {
                running: Some(ContainerStateRunning::default()),
                ..ContainerState::default()
            }),
            last_state: Some(ContainerState {
                terminated: Some(ContainerStateTerminated {
                    exit_code: 2,
                    reason: Some("Error".into()),
                    ..ContainerStateTerminated::default()
                }),
                ..ContainerState::default()
            }),
            ..ContainerStatus::default()
        };
        let found = stuck(
            &pod("w-6", with_containers(vec![status.clone()])),
            Timestamp::UNIX_EPOCH,
        )
        .unwrap();
        assert_eq!(found.reason, "CrashLoopBackOff");
        assert_eq!(
            found.message,
            "last exit: Error (code 2); restarted 3 times"
        );
        // Ready again, or restarted after a clean exit: not stuck.
        let ready = ContainerStatus {
            ready: true,
            ..status.clone()
        };
        assert_eq!(
            stuck(
                &pod("w-6", with_containers(vec![ready])),
                Timestamp::UNIX_EPOCH
            ),
            None
        );
        let mut clean = status;
        if let Some(t) = clean
            .last_state
            .as_mut()
            .and_then(|s| s.terminated.as_mut())
        {
            t.exit_code = 0;
        }
        assert_eq!(
            stuck(
                &pod("w-6", with_containers(vec![clean])),
                Timestamp::UNIX_EPOCH
            ),
            None
        );
    }

    #[test]
    fn a_pod_waiting_for_a_node_is_stuck_only_after_the_grace() {
        let since = Timestamp::from_second(1_000).unwrap();
        let p = pod(
            "w-5",
            PodStatus {
                conditions: Some(vec![PodCondition {
                    type_: "PodScheduled".into(),
                    status: "False".into(),
                    reason: Some("Unschedulable".into()),
                    message: Some("0/1 nodes are available: 1 Insufficient memory.".into()),
                    last_transition_time: Some(
                        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(since),
                    ),
                    ..PodCondition::default()
                }]),
                ..PodStatus::default()
            },
        );
        let soon = Timestamp::from_second(1_000 + 179).unwrap();
        assert_eq!(stuck(&p, soon), None, "an autoscaler may be adding a node");
        let later = Timestamp::from_second(1_000 + 180).unwrap();
        assert_eq!(stuck(&p, later).unwrap().reason, "Unschedulable");
    }

    #[test]
    fn one_warning_when_the_condition_turns_false_not_per_reason() {
        let t0 = Timestamp::UNIX_EPOCH;
        let pull = |reason: &str| Stuck {
            pod: "w-1".into(),
            reason: reason.into(),
            message: "x".into(),
        };
        let first = workers_condition(&[], &[pull("ErrImagePull")], 1, Some(1), t0);
        assert!(turned_unhealthy(&[], &first));
        let crash = workers_condition(
            std::slice::from_ref(&first),
            &[pull("CrashLoopBackOff")],
            1,
            Some(1),
            t0,
        );
        assert!(!turned_unhealthy(std::slice::from_ref(&first), &crash));
        let healed = workers_condition(std::slice::from_ref(&crash), &[], 1, Some(1), t0);
        assert!(!turned_unhealthy(std::slice::from_ref(&crash), &healed));
        let again = workers_condition(std::slice::from_ref(&healed), &[pull("X")], 1, Some(1), t0);
        assert!(turned_unhealthy(std::slice::from_ref(&healed), &again));
    }

    #[test]
    fn pods_of_a_job_are_looked_at_once_per_interval_after_a_first_wait() {
        let looks = Looks::default();
        let t0 = Instant::now();
        // First seen short of workers: the pods are being made.
        assert!(!looks.due("ns/a", t0));
        assert!(!looks.due("ns/a", t0 + LOOK_EVERY / 2));
        assert!(!looks.due("ns/b", t0 + LOOK_EVERY / 2), "per job");
        assert!(looks.due("ns/a", t0 + LOOK_EVERY));
        assert!(!looks.due("ns/a", t0 + LOOK_EVERY * 3 / 2));
        assert!(looks.due("ns/b", t0 + LOOK_EVERY * 3 / 2));
        // A reconcile long delayed (a slow API server) still looks.
        assert!(looks.due("ns/a", t0 + LOOK_EVERY * 5));
        // All ready, then short again: the wait starts anew.
        looks.forget("ns/a");
        assert!(!looks.due("ns/a", t0 + LOOK_EVERY * 5));
        // Jobs not seen for long leave the map.
        let later = t0 + LOOK_EVERY * 5 + FORGET_AFTER;
        assert!(!looks.due("ns/c", later));
        let kept = looks.last.lock().unwrap().len();
        assert_eq!(kept, 1);
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
        // One ASCII byte first, so byte MAX_MESSAGE falls inside a "é".
        let long = format!("a{}", "é".repeat(400));
        let cut = cut(&long);
        assert!(cut.len() <= MAX_MESSAGE + 3 && cut.ends_with("..."));
        assert_eq!(
            cut.len(),
            MAX_MESSAGE - 1 + 3,
            "stops before the split character"
        );
    }
}
