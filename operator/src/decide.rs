//! The reconciler's decision from what it observed: the next status
//! (phase, counts, conditions, the scale-down timer, completion), the
//! workers to run, what to announce, and what changes with time. Pure: no
//! API call; the reconciler observes before and applies after.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

use crate::backend::Backlog;
use crate::cadence;
use crate::crd::{BatchJob, BatchJobStatus, ChunkCounts, Phase};
use crate::{plan, scaling, usage};

/// What a reconcile observed, and the status it built so far.
pub struct Observed<'a> {
    /// The job.
    pub job: &'a BatchJob,
    /// Its status as read.
    pub previous: &'a BatchJobStatus,
    /// The status so far: queue URLs, fan-out and redrive progress.
    pub status: BatchJobStatus,
    /// The work queue's counts.
    pub backlog: Backlog,
    /// The dead-letter queue's counts.
    pub dead: Backlog,
    /// The Deployment's replicas (`None`: no Deployment).
    pub replicas: Option<i32>,
    /// Its ready replicas.
    pub ready: i32,
    /// The item list cannot be read (the job fails).
    pub bad_list: Option<String>,
    /// A redrive page is still to move.
    pub moving: bool,
    /// Moved dead letters may not show in the counts yet.
    pub redriving: bool,
    /// Since when lagging counts have looked drained.
    pub drained_since: Option<Time>,
    /// How old the counts can be.
    pub lag: Duration,
    /// The work queue's URL, for the `Ready` message.
    pub url: &'a str,
    /// The `WorkersHealthy` condition, as looked at.
    pub workers: Option<Condition>,
    /// Now.
    pub now: Timestamp,
}

/// What to do.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The status to write (unless it equals the one read).
    pub status: BatchJobStatus,
    /// Workers to run.
    pub replicas: i32,
    /// `(from, to)` when the workers change (never `0 → 0`).
    pub scaled: Option<(i32, i32)>,
    /// The phase changed.
    pub phase_changed: bool,
    /// The job was suspended or resumed: Event reason and note.
    pub suspension: Option<(&'static str, String)>,
    /// What changes with time alone.
    pub pending: cadence::Pending,
}

/// Decides from `o`.
pub fn decide(o: Observed<'_>) -> Decision {
    let Observed {
        job,
        previous,
        mut status,
        backlog,
        dead,
        replicas,
        ready,
        bad_list,
        moving,
        redriving,
        drained_since,
        lag,
        url,
        workers,
        now,
    } = o;
    let suspended = job.spec.suspend == Some(true);
    let generation = job.metadata.generation;
    let (chunks, phase) = match &status.split {
        Some(split) => {
            let (chunks, mut phase) = plan::fanout_progress(job, split, backlog, dead);
            if bad_list.is_some() {
                phase = Phase::Failed;
            }
            if redriving && phase.is_finished() {
                // Dead letters are still on their way back.
                phase = Phase::Running;
            }
            let (phase, drained_since) = plan::settle(phase, drained_since.as_ref(), now, lag);
            status.drained_since = drained_since;
            (chunks, phase)
        }
        None => (
            ChunkCounts {
                visible: backlog.visible,
                in_flight: backlog.in_flight,
                ..previous.chunks.clone()
            },
            Phase::Running,
        ),
    };
    let policy = plan::policy(job);
    let current = replicas.unwrap_or(policy.min);
    let below_for = previous
        .scale_down_since
        .as_ref()
        .map(|since| Duration::try_from(now.duration_since(since.0)).unwrap_or(Duration::ZERO));
    let mut decision = if phase.is_finished() || suspended {
        scaling::Decision {
            replicas: 0,
            wanted: 0,
            below_for: None,
        }
    } else {
        scaling::decide(&policy, backlog.total(), current, below_for)
    };
    if redriving && !suspended && decision.replicas == 0 {
        decision.replicas = 1;
    }

    status.phase = phase;
    status.chunks = chunks;
    status.desired_workers = decision.replicas;
    status.ready_workers = ready;
    status.usage = usage::count_workers(previous.usage.as_ref(), ready, phase.is_finished(), now);
    status.scale_down_since = decision
        .below_for
        .map(|_| previous.scale_down_since.clone().unwrap_or(Time(now)));
    status.completion_time = phase.is_finished().then_some(Time(now));
    let ready = match &bad_list {
        Some(message) => plan::condition(
            &previous.conditions,
            "Ready",
            false,
            "ListInvalid",
            message.clone(),
            generation,
            now,
        ),
        None => plan::ready_condition(
            &previous.conditions,
            (phase, suspended),
            &status.chunks,
            url,
            generation,
            now,
        ),
    };
    let lifecycle = plan::lifecycle_conditions(
        &previous.conditions,
        (phase, suspended),
        &ready,
        generation,
        now,
    );
    status.conditions = std::iter::once(ready)
        .chain(workers)
        .chain(lifecycle)
        .collect();

    let from = replicas.unwrap_or(0);
    let pending = cadence::Pending {
        busy: moving || (phase == Phase::Splitting && !suspended),
        settling: redriving || status.drained_since.is_some(),
        scale_down_in: decision
            .below_for
            .map(|held| policy.scale_down_delay.saturating_sub(held)),
        workers_missing: status.ready_workers < decision.replicas,
    };
    Decision {
        suspension: plan::suspension_change(&previous.conditions, &status.conditions),
        phase_changed: phase != previous.phase,
        scaled: (from != decision.replicas).then_some((from, decision.replicas)),
        replicas: decision.replicas,
        status,
        pending,
    }
}

#[cfg(test)]
mod tests;
