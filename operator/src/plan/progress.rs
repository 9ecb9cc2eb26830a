//! A fan-out job's chunk counts and phase from its queues' counts, the
//! failure tolerance, and the settling of lagging counts before a finish.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::crd::{BatchJob, ChunkCounts, Phase, SplitCheckpoint};
use crate::sqs::Backlog;

/// Completion when the counts may be up to `lag` old (RabbitMQ's
/// management statistics; zero for SQS): queues that look drained make a
/// job Succeeded only once they have looked drained for twice `lag`, so a
/// chunk a worker took just before the last refresh is seen first.
/// Returns the phase and since when the queues have looked drained.
pub fn settle(
    phase: Phase,
    drained_since: Option<&Time>,
    now: Timestamp,
    lag: Duration,
) -> (Phase, Option<Time>) {
    if phase != Phase::Succeeded || lag.is_zero() {
        return (phase, None);
    }
    let since = drained_since.map_or(now, |t| t.0);
    let drained_for = Duration::try_from(now.duration_since(since)).unwrap_or(Duration::ZERO);
    if drained_for >= lag.saturating_mul(2) {
        (Phase::Succeeded, Some(Time(since)))
    } else {
        (Phase::Running, Some(Time(since)))
    }
}

/// Whether `dead_lettered` of `total` chunks is more than the failure
/// policy tolerates (nothing, when it is unset).
pub fn tolerance_exceeded(job: &BatchJob, dead_lettered: i64, total: i64) -> bool {
    let policy = job.spec.failure_policy.clone().unwrap_or_default();
    if policy.max_failed_chunks.is_none() && policy.max_failed_percent.is_none() {
        return dead_lettered > 0;
    }
    let over_count = policy
        .max_failed_chunks
        .is_some_and(|max| dead_lettered > max);
    let over_percent = policy.max_failed_percent.is_some_and(|pct| {
        dead_lettered.saturating_mul(100) > i64::from(pct).saturating_mul(total)
    });
    over_count || over_percent
}

/// Chunk counts and phase of a fan-out job from its queues: `backlog` of
/// the work queue, `dead` of the dead-letter queue.
///
/// Once every chunk is sent, the counts show each chunk once: a chunk on
/// its way to the dead-letter queue (a worker sends it there, then
/// deletes it from the work queue; the two queues are read one after the
/// other) shows in both for a moment, and is counted as dead-lettered, not
/// also as in flight or waiting. The phase is decided from the queues as
/// read: a job does not succeed while any message is left.
pub fn fanout_progress(
    job: &BatchJob,
    split: &SplitCheckpoint,
    backlog: Backlog,
    dead: Backlog,
) -> (ChunkCounts, Phase) {
    let total = split.chunks;
    let dead_lettered = dead.total();
    let pending = backlog.total();
    let mut shown = backlog;
    if split.done {
        let twice = pending
            .saturating_add(dead_lettered)
            .saturating_sub(total)
            .max(0);
        let from_in_flight = twice.min(shown.in_flight.max(0));
        shown.in_flight -= from_in_flight;
        shown.visible -= (twice - from_in_flight).min(shown.visible.max(0));
    }
    let counts = ChunkCounts {
        total,
        succeeded: total
            .saturating_sub(pending)
            .saturating_sub(dead_lettered)
            .max(0),
        dead_lettered,
        in_flight: shown.in_flight,
        visible: shown.visible,
    };
    let phase = if tolerance_exceeded(job, dead_lettered, total) {
        Phase::Failed
    } else if !split.done {
        Phase::Splitting
    } else if pending == 0 {
        Phase::Succeeded
    } else {
        Phase::Running
    };
    (counts, phase)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::tests::job;

    fn done(chunks: i64) -> SplitCheckpoint {
        SplitCheckpoint {
            after_key: Some("k".into()),
            chunks,
            items: chunks * 4,
            done: true,
            ..SplitCheckpoint::default()
        }
    }

    fn backlog(visible: i64, in_flight: i64) -> Backlog {
        Backlog { visible, in_flight }
    }

    #[test]
    fn succeeded_only_when_split_and_every_chunk_is_accounted_for() {
        let j = job(None, None);
        let (counts, phase) = fanout_progress(&j, &done(8), backlog(0, 0), backlog(0, 0));
        assert_eq!(phase, Phase::Succeeded);
        assert_eq!((counts.total, counts.succeeded), (8, 8));
        let (counts, phase) = fanout_progress(&j, &done(8), backlog(2, 1), backlog(0, 0));
        assert_eq!((phase, counts.succeeded), (Phase::Running, 5));
        let splitting = SplitCheckpoint {
            done: false,
            ..done(3)
        };
        let (_, phase) = fanout_progress(&j, &splitting, backlog(0, 0), backlog(0, 0));
        assert_eq!(
            phase,
            Phase::Splitting,
            "an empty queue mid-split is not the end"
        );
    }

    #[test]
    fn a_chunk_on_its_way_to_the_dead_letter_queue_is_counted_once() {
        let j = job(None, None);
        // 4 chunks: all 4 still leased in the work queue, 1 of them
        // already in the dead-letter queue.
        let (counts, phase) = fanout_progress(&j, &done(4), backlog(0, 4), backlog(1, 0));
        assert_eq!(phase, Phase::Failed);
        assert_eq!(
            (
                counts.succeeded,
                counts.in_flight,
                counts.visible,
                counts.dead_lettered
            ),
            (0, 3, 0, 1)
        );
        // Past the leased ones, from those waiting.
        let (counts, _) = fanout_progress(&j, &done(4), backlog(3, 1), backlog(2, 0));
        assert_eq!(
            (counts.in_flight, counts.visible, counts.dead_lettered),
            (0, 2, 2)
        );
        // Mid-split the total is what was recorded so far: shown as read.
        let splitting = SplitCheckpoint {
            done: false,
            ..done(4)
        };
        let (counts, _) = fanout_progress(&j, &splitting, backlog(2, 4), backlog(1, 0));
        assert_eq!((counts.in_flight, counts.visible), (4, 2));
    }

    #[test]
    fn dead_letters_beyond_the_tolerance_fail_the_job() {
        let strict = job(None, None);
        let (counts, phase) = fanout_progress(&strict, &done(10), backlog(3, 0), backlog(1, 0));
        assert_eq!(
            (phase, counts.dead_lettered, counts.succeeded),
            (Phase::Failed, 1, 6)
        );
        let mut tolerant = job(None, None);
        tolerant.spec.failure_policy = Some(crate::crd::FailurePolicy {
            max_failed_chunks: None,
            max_failed_percent: Some(10),
        });
        assert!(!tolerance_exceeded(&tolerant, 1, 10));
        assert!(tolerance_exceeded(&tolerant, 2, 10));
        let (_, phase) = fanout_progress(&tolerant, &done(10), backlog(0, 0), backlog(1, 0));
        assert_eq!(phase, Phase::Succeeded, "within tolerance");
        tolerant.spec.failure_policy = Some(crate::crd::FailurePolicy {
            max_failed_chunks: Some(0),
            max_failed_percent: Some(50),
        });
        assert!(
            tolerance_exceeded(&tolerant, 1, 10),
            "either limit fails the job"
        );
    }

    #[test]
    fn lagging_counts_make_a_drained_job_wait_twice_the_lag() {
        let t0: Timestamp = "2026-11-27T10:00:00Z".parse().unwrap();
        let lag = Duration::from_secs(5);
        let at = |secs: i64| t0 + k8s_openapi::jiff::SignedDuration::from_secs(secs);
        // SQS: no lag, done at once.
        assert_eq!(
            settle(Phase::Succeeded, None, t0, Duration::ZERO),
            (Phase::Succeeded, None)
        );
        // First drained look: still Running, the time is kept.
        let (phase, since) = settle(Phase::Succeeded, None, t0, lag);
        assert_eq!(
            (phase, since.as_ref().map(|t| t.0)),
            (Phase::Running, Some(t0))
        );
        let (phase, _) = settle(Phase::Succeeded, since.as_ref(), at(9), lag);
        assert_eq!(phase, Phase::Running);
        let (phase, _) = settle(Phase::Succeeded, since.as_ref(), at(10), lag);
        assert_eq!(phase, Phase::Succeeded);
        // Work seen again: the clock starts over.
        assert_eq!(
            settle(Phase::Running, since.as_ref(), at(11), lag),
            (Phase::Running, None)
        );
        assert_eq!(settle(Phase::Failed, None, t0, lag), (Phase::Failed, None));
    }
}
