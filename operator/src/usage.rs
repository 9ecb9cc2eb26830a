//! What a job's workers used, kept in `status.usage` for its cost (`kubectl
//! shoal cost`). Pure: no API calls.
//!
//! Contract:
//! - Worker-seconds are seconds of *ready* worker pods as the operator
//!   observes them, integrated piecewise: the count seen last
//!   (`countedWorkers`) times the time since `countedUntil`, folded into
//!   `workerSeconds` only when the count changes, so a job whose workers
//!   stay the same writes no status for it. A reader computes the live
//!   figure with [`worker_seconds_at`]. Counting stops when the job
//!   finishes (the pods then only drain) and starts again on a redrive.
//!   The resolution is the reconcile interval: a pod that became ready
//!   between two looks counts from the second.
//! - The Lambda-equivalent figures are the sum of the workers' REPORT
//!   lines, read from the failure report's parts when a fanned-out job with
//!   an output finishes ([`with_lambda`]); a redriven job's are summed
//!   again over every part, earlier runs included.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use shoal_protocol::results::Usage;

use crate::crd::UsageStatus;

/// Seconds of ready workers of `usage` until `now`.
pub fn worker_seconds_at(usage: &UsageStatus, now: Timestamp) -> f64 {
    let since = usage
        .counted_until
        .as_ref()
        .map_or(0.0, |t| now.duration_since(t.0).as_secs_f64().max(0.0));
    usage.worker_seconds + f64::from(usage.counted_workers.max(0)) * since
}

/// `previous` with `ready` workers observed at `now` (none counted once
/// `finished`); `None` while no worker was ever counted.
pub fn count_workers(
    previous: Option<&UsageStatus>,
    ready: i32,
    finished: bool,
    now: Timestamp,
) -> Option<UsageStatus> {
    let counted = if finished { 0 } else { ready.max(0) };
    let Some(previous) = previous else {
        return (counted > 0).then(|| UsageStatus {
            counted_workers: counted,
            counted_until: Some(Time(now)),
            ..UsageStatus::default()
        });
    };
    if previous.counted_workers == counted && previous.counted_until.is_some() {
        return Some(previous.clone());
    }
    let mut next = previous.clone();
    // Kept to the millisecond: the status stays readable.
    next.worker_seconds = (worker_seconds_at(previous, now) * 1000.0).round() / 1000.0;
    next.counted_workers = counted;
    next.counted_until = Some(Time(now));
    Some(next)
}

/// `usage` with the Lambda-equivalent figures of `lambda` (a finished
/// job's whole report).
pub fn with_lambda(usage: Option<UsageStatus>, lambda: &Usage) -> UsageStatus {
    let whole = |n: u64| Some(i64::try_from(n).unwrap_or(i64::MAX));
    UsageStatus {
        invocations: whole(lambda.invocations),
        billed_ms: whole(lambda.billed_ms),
        gb_seconds: Some(lambda.gb_seconds()),
        max_memory_used_mb: whole(lambda.max_memory_used_mb),
        ..usage.unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).unwrap()
    }

    #[test]
    fn worker_seconds_integrate_the_ready_count_over_time() {
        // Nothing counted before a worker is ready.
        assert_eq!(count_workers(None, 0, false, at(0)), None);
        let one = count_workers(None, 2, false, at(10)).unwrap();
        assert_eq!((one.worker_seconds, one.counted_workers), (0.0, 2));
        // The same count: the same status (no write for it).
        assert_eq!(
            count_workers(Some(&one), 2, false, at(20)).as_ref(),
            Some(&one)
        );
        assert_eq!(worker_seconds_at(&one, at(20)), 20.0);
        // 2 workers for 30 s, then 5 for 4 s, then finished.
        let five = count_workers(Some(&one), 5, false, at(40)).unwrap();
        assert_eq!((five.worker_seconds, five.counted_workers), (60.0, 5));
        let done = count_workers(Some(&five), 5, true, at(44)).unwrap();
        assert_eq!((done.worker_seconds, done.counted_workers), (80.0, 0));
        // Pods draining after the finish, or a finished job left for a
        // day, cost nothing more; a redrive counts again from its start.
        assert_eq!(worker_seconds_at(&done, at(86_400)), 80.0);
        let again = count_workers(Some(&done), 1, false, at(90_000)).unwrap();
        assert_eq!(worker_seconds_at(&again, at(90_003)), 83.0);
    }

    #[test]
    fn lambda_figures_keep_the_worker_seconds() {
        let counted = count_workers(None, 1, false, at(0));
        let mut lambda = Usage::default();
        lambda.add_invocation(400, 1024);
        lambda.add_invocation(1, 1024);
        lambda.max_memory_used_mb = 80;
        let usage = with_lambda(counted, &lambda);
        assert_eq!(usage.counted_workers, 1);
        assert_eq!(usage.invocations, Some(2));
        assert_eq!(usage.billed_ms, Some(401));
        assert_eq!(usage.gb_seconds, Some(401.0 * 1024.0 / 1_024_000.0));
        assert_eq!(usage.max_memory_used_mb, Some(80));
    }
}
