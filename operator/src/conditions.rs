//! The BatchJob's conditions: `Ready`, and the ones Kubernetes Jobs have
//! (`Complete`, `Failed`, `Suspended`), each with its transition time kept
//! while its status holds. Pure.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

use crate::crd::{ChunkCounts, Phase};

/// `condition` with its transition time kept from `previous` when its
/// status did not change.
pub fn condition(
    previous: &[Condition],
    type_: &str,
    ok: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    let status = if ok { "True" } else { "False" };
    let since = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map_or(Time(now), |c| c.last_transition_time.clone());
    Condition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message,
        observed_generation: generation,
        last_transition_time: since,
    }
}

/// The `Ready` condition for `phase` with `chunks` counted, on queue `url`;
/// False while the job is `suspended`.
pub fn ready_condition(
    previous: &[Condition],
    (phase, suspended): (Phase, bool),
    chunks: &ChunkCounts,
    url: &str,
    generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    let (ok, reason, message) = match phase {
        Phase::Succeeded => (
            true,
            "Succeeded",
            format!("all {} chunks done", chunks.total),
        ),
        Phase::Failed => (
            false,
            "FailureToleranceExceeded",
            format!(
                "{} of {} chunks dead-lettered",
                chunks.dead_lettered, chunks.total
            ),
        ),
        _ if suspended => (
            false,
            "Suspended",
            format!(
                "suspended with {} chunks enqueued and {} waiting: workers scaled to zero, queue {url} kept",
                chunks.total, chunks.visible
            ),
        ),
        _ => (true, "Consuming", format!("workers consume {url}")),
    };
    condition(previous, "Ready", ok, reason, message, generation, now)
}

/// The Event to publish when `Suspended` changed between `previous` and
/// `current` conditions: its reason and note.
pub fn suspension_change(
    previous: &[Condition],
    current: &[Condition],
) -> Option<(&'static str, String)> {
    let reason = |conditions: &[Condition]| {
        conditions
            .iter()
            .find(|c| c.type_ == "Suspended")
            .map(|c| c.reason.clone())
    };
    match (reason(previous).as_deref(), reason(current).as_deref()) {
        (Some("Suspended"), Some("Suspended")) => None,
        (_, Some("Suspended")) => Some((
            "Suspended",
            "fan-out stopped at its checkpoint; workers scaled to zero".to_owned(),
        )),
        (Some("Suspended"), Some("Resumed")) => {
            Some(("Resumed", "going on from the fan-out checkpoint".to_owned()))
        }
        _ => None,
    }
}

/// The conditions Kubernetes Jobs have, after `ready` (this reconcile's
/// `Ready`): `Complete` True once the job has succeeded, `Failed` True
/// (with `ready`'s reason and message) once it has failed, `Suspended`
/// True while `suspended` and False (reason `Resumed`) once resumed. A
/// condition that does not hold yet is absent, so
/// `kubectl wait --for=condition=Complete` waits for the finish.
pub fn lifecycle_conditions(
    previous: &[Condition],
    (phase, suspended): (Phase, bool),
    ready: &Condition,
    generation: Option<i64>,
    now: Timestamp,
) -> Vec<Condition> {
    let mut out = Vec::new();
    let finished = |type_: &str| {
        condition(
            previous,
            type_,
            true,
            &ready.reason,
            ready.message.clone(),
            generation,
            now,
        )
    };
    match phase {
        Phase::Succeeded => out.push(finished("Complete")),
        Phase::Failed => out.push(finished("Failed")),
        _ => {}
    }
    let was_suspended = previous.iter().any(|c| c.type_ == "Suspended");
    if suspended && !phase.is_finished() {
        out.push(condition(
            previous,
            "Suspended",
            true,
            "Suspended",
            "spec.suspend is true: no chunk is enqueued and no worker runs".to_owned(),
            generation,
            now,
        ));
    } else if was_suspended {
        let (reason, message) = if phase.is_finished() {
            ("Finished", "the job finished")
        } else {
            (
                "Resumed",
                "spec.suspend is false: the job goes on from its checkpoint",
            )
        };
        out.push(condition(
            previous,
            "Suspended",
            false,
            reason,
            message.to_owned(),
            generation,
            now,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `kubectl get bj NAME -o jsonpath` would show for `type_`.
    fn status_of<'a>(conditions: &'a [Condition], type_: &str) -> Option<(&'a str, &'a str)> {
        conditions
            .iter()
            .find(|c| c.type_ == type_)
            .map(|c| (c.status.as_str(), c.reason.as_str()))
    }

    /// The conditions after one reconcile in `phase`, from `previous`.
    fn after(
        previous: &[Condition],
        phase: Phase,
        suspended: bool,
        at: Timestamp,
    ) -> Vec<Condition> {
        let chunks = ChunkCounts {
            total: 10,
            dead_lettered: 2,
            ..ChunkCounts::default()
        };
        let ready = ready_condition(previous, (phase, suspended), &chunks, "q", Some(1), at);
        let mut out = vec![ready.clone()];
        out.extend(lifecycle_conditions(
            previous,
            (phase, suspended),
            &ready,
            Some(1),
            at,
        ));
        out
    }

    #[test]
    fn complete_and_failed_appear_only_when_the_job_finishes_that_way() {
        let t0 = Timestamp::UNIX_EPOCH;
        let running = after(&[], Phase::Running, false, t0);
        assert_eq!(status_of(&running, "Ready"), Some(("True", "Consuming")));
        assert_eq!(
            status_of(&running, "Complete"),
            None,
            "kubectl wait must wait"
        );
        assert_eq!(status_of(&running, "Failed"), None);
        assert_eq!(status_of(&running, "Suspended"), None);

        let done = after(&running, Phase::Succeeded, false, t0);
        assert_eq!(status_of(&done, "Complete"), Some(("True", "Succeeded")));
        assert_eq!(status_of(&done, "Failed"), None);

        let failed = after(&running, Phase::Failed, false, t0);
        assert_eq!(
            status_of(&failed, "Failed"),
            Some(("True", "FailureToleranceExceeded"))
        );
        let message = failed
            .iter()
            .find(|c| c.type_ == "Failed")
            .map(|c| c.message.as_str());
        assert_eq!(message, Some("2 of 10 chunks dead-lettered"));
        assert_eq!(status_of(&failed, "Complete"), None);
    }

    #[test]
    fn suspending_and_resuming_flip_one_condition_and_publish_one_event_each() {
        let t0 = Timestamp::UNIX_EPOCH;
        let t1 = t0 + k8s_openapi::jiff::SignedDuration::from_secs(5);
        let running = after(&[], Phase::Splitting, false, t0);
        let suspended = after(&running, Phase::Splitting, true, t0);
        assert_eq!(
            status_of(&suspended, "Suspended"),
            Some(("True", "Suspended"))
        );
        assert_eq!(status_of(&suspended, "Ready"), Some(("False", "Suspended")));
        assert_eq!(
            suspension_change(&running, &suspended).map(|c| c.0),
            Some("Suspended")
        );
        // Still suspended a reconcile later: no second Event, same time.
        let again = after(&suspended, Phase::Splitting, true, t1);
        assert_eq!(suspension_change(&suspended, &again), None);
        let since = |c: &[Condition]| {
            c.iter()
                .find(|c| c.type_ == "Suspended")
                .map(|c| c.last_transition_time.clone())
        };
        assert_eq!(since(&again), since(&suspended));

        let resumed = after(&again, Phase::Splitting, false, t1);
        assert_eq!(status_of(&resumed, "Suspended"), Some(("False", "Resumed")));
        assert_eq!(status_of(&resumed, "Ready"), Some(("True", "Consuming")));
        assert_eq!(
            suspension_change(&again, &resumed).map(|c| c.0),
            Some("Resumed")
        );
        // A job that finishes while suspended is not announced as resumed.
        let finished = after(&again, Phase::Succeeded, true, t1);
        assert_eq!(
            status_of(&finished, "Suspended"),
            Some(("False", "Finished"))
        );
        assert_eq!(suspension_change(&again, &finished), None);
    }
}
