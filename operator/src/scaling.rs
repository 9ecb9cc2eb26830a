//! How many workers a BatchJob wants, from its queue backlog. Pure: the
//! reconciler feeds it what it observed and stores what it returns.
//!
//! Rules:
//! - wanted = ceil(backlog / targetBacklogPerWorker), within
//!   [minWorkers, maxWorkers]; any backlog wants at least one worker, even
//!   with `minWorkers: 0` (unless `maxWorkers` is 0, which the CRD forbids).
//! - Up: at once, at most `maxStep` workers per decision.
//! - Down: only after wanted has stayed below the current count for
//!   `scaleDownDelaySeconds` without interruption; then at most `maxStep`
//!   per decision. A backlog that rises again restarts the delay.
//! - Scale to zero is scale-down like any other: after the delay, with
//!   `minWorkers: 0` and an empty queue.

use std::time::Duration;

/// Bounds and pace, with the CRD's defaults applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Lower bound.
    pub min: i32,
    /// Upper bound.
    pub max: i32,
    /// Backlog one worker carries.
    pub target_per_worker: i64,
    /// How long wanted < current must hold before removing workers.
    pub scale_down_delay: Duration,
    /// Most workers added or removed at once.
    pub max_step: i32,
}

/// One decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Replicas to run now.
    pub replicas: i32,
    /// Replicas the backlog alone asks for (after bounds).
    pub wanted: i32,
    /// How long wanted < current has held, if it does now; the caller
    /// stores it (as a timestamp) and passes it back next time.
    pub below_for: Option<Duration>,
}

/// Workers the backlog asks for, within the bounds.
pub fn wanted(policy: &Policy, backlog: i64) -> i32 {
    let target = policy.target_per_worker.max(1);
    let backlog = backlog.max(0);
    let raw = backlog / target + i64::from(backlog % target != 0);
    let raw = i32::try_from(raw).unwrap_or(i32::MAX);
    let floor = if backlog > 0 {
        policy.min.max(1)
    } else {
        policy.min
    };
    raw.max(floor).min(policy.max).max(0)
}

/// Decides the replica count from the backlog, the current count and how
/// long the backlog has wanted fewer workers (`below_for`, `None` if it did
/// not at the previous decision).
pub fn decide(
    policy: &Policy,
    backlog: i64,
    current: i32,
    below_for: Option<Duration>,
) -> Decision {
    let wanted = wanted(policy, backlog);
    let step = policy.max_step.max(1);
    // Outside the bounds (the spec changed): move into them at once.
    if current < policy.min || current > policy.max {
        let replicas = current.clamp(policy.min, policy.max);
        return Decision {
            replicas,
            wanted,
            below_for: None,
        };
    }
    if wanted > current {
        return Decision {
            replicas: current.saturating_add(step).min(wanted),
            wanted,
            below_for: None,
        };
    }
    if wanted == current {
        return Decision {
            replicas: current,
            wanted,
            below_for: None,
        };
    }
    let held = below_for.unwrap_or(Duration::ZERO);
    if held >= policy.scale_down_delay {
        // Stepped down: the next step waits a full delay again.
        return Decision {
            replicas: current.saturating_sub(step).max(wanted),
            wanted,
            below_for: None,
        };
    }
    Decision {
        replicas: current,
        wanted,
        below_for: Some(held),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            min: 0,
            max: 10,
            target_per_worker: 10,
            scale_down_delay: Duration::from_secs(30),
            max_step: 4,
        }
    }

    #[test]
    fn wanted_is_backlog_over_target_rounded_up_within_bounds() {
        let p = policy();
        assert_eq!(wanted(&p, 0), 0);
        assert_eq!(wanted(&p, 1), 1);
        assert_eq!(wanted(&p, 10), 1);
        assert_eq!(wanted(&p, 11), 2);
        assert_eq!(wanted(&p, 95), 10);
        assert_eq!(wanted(&p, 1_000_000), 10);
        assert_eq!(wanted(&Policy { min: 2, ..p }, 0), 2);
        assert_eq!(wanted(&p, -5), 0, "a negative reading counts as empty");
        assert_eq!(wanted(&p, i64::MAX), 10);
    }

    #[test]
    fn scale_up_is_immediate_and_bounded_by_the_step() {
        let p = policy();
        assert_eq!(decide(&p, 100, 0, None).replicas, 4);
        assert_eq!(decide(&p, 100, 4, None).replicas, 8);
        assert_eq!(decide(&p, 100, 8, None).replicas, 10);
        assert_eq!(decide(&p, 25, 0, None).replicas, 3);
    }

    #[test]
    fn scale_down_waits_for_the_delay_then_steps() {
        let p = policy();
        let first = decide(&p, 0, 10, None);
        assert_eq!(
            (first.replicas, first.below_for),
            (10, Some(Duration::ZERO))
        );
        let during = decide(&p, 0, 10, Some(Duration::from_secs(29)));
        assert_eq!(during.replicas, 10);
        let after = decide(&p, 0, 10, Some(Duration::from_secs(30)));
        assert_eq!((after.replicas, after.below_for), (6, None));
        // Down to zero in steps, each after a full delay.
        let next = decide(&p, 0, 2, Some(Duration::from_secs(31)));
        assert_eq!(next.replicas, 0);
    }

    #[test]
    fn a_backlog_that_comes_back_restarts_the_delay() {
        let p = policy();
        let rising = decide(&p, 100, 6, Some(Duration::from_secs(20)));
        assert_eq!((rising.replicas, rising.below_for), (10, None));
        let level = decide(&p, 60, 6, Some(Duration::from_secs(20)));
        assert_eq!((level.replicas, level.below_for), (6, None));
    }

    #[test]
    fn min_workers_stay_and_bounds_apply_at_once() {
        let p = Policy { min: 2, ..policy() };
        assert_eq!(decide(&p, 0, 2, Some(Duration::from_secs(300))).replicas, 2);
        assert_eq!(decide(&p, 0, 0, None).replicas, 2, "raised to min");
        let capped = Policy { max: 3, ..policy() };
        assert_eq!(decide(&capped, 0, 8, None).replicas, 3, "lowered to max");
    }
}
