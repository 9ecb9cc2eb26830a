//! When a job is looked at next. Pure.
//!
//! A job is reconciled when something it depends on changes: its spec or
//! status (the BatchJob watch), its Deployment (the Deployment watch), or
//! its queue's counts (the shared poller, see
//! `controller::backlogs`). Besides those, a reconcile asks to be run
//! again only for what changes with time alone:
//! - a fan-out or a redrive in progress: at once ([`BUSY`]);
//! - counts that lag (RabbitMQ's) settling before a finish, or moved dead
//!   letters not yet seen in them: every [`ACTIVE`];
//! - a scale-down delay running: when it ends;
//! - fewer workers ready than asked for: when the pods are next looked at
//!   ([`crate::health::LOOK_EVERY`]), to see pods that cannot start;
//! - else, as a safety net for a missed change: every [`IDLE`].

use std::time::Duration;

/// A fan-out or a redrive in progress: the next page at once.
pub const BUSY: Duration = Duration::from_millis(50);

/// Counts settling: looked at every second.
pub const ACTIVE: Duration = Duration::from_secs(1);

/// Nothing pending: looked at this often even if nothing is seen to change
/// (10,000 idle jobs: 33 reconciles a second, none with an API call).
pub const IDLE: Duration = Duration::from_secs(300);

/// What, in a job's state after a reconcile, changes with time alone.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pending {
    /// A fan-out page or a redrive page is still to send.
    pub busy: bool,
    /// The finish waits for lagging counts to settle, or moved dead letters
    /// may not show in the counts yet.
    pub settling: bool,
    /// How long until the scale-down delay ends, if it runs.
    pub scale_down_in: Option<Duration>,
    /// Fewer workers ready than the Deployment asks for.
    pub workers_missing: bool,
}

/// How long until the job is reconciled again if nothing changes.
pub fn next_look(pending: &Pending) -> Duration {
    if pending.busy {
        return BUSY;
    }
    let mut next = IDLE;
    if pending.settling {
        next = next.min(ACTIVE);
    }
    if let Some(left) = pending.scale_down_in {
        // Just past the end, so the delay has run out when it is looked at.
        next = next.min(left + BUSY);
    }
    if pending.workers_missing {
        next = next.min(crate::health::LOOK_EVERY);
    }
    next
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idle_job_is_looked_at_rarely_and_timers_bring_the_look_forward() {
        assert_eq!(next_look(&Pending::default()), IDLE);
        let scaling_down = Pending {
            scale_down_in: Some(Duration::from_secs(12)),
            ..Pending::default()
        };
        assert_eq!(next_look(&scaling_down), Duration::from_millis(12_050));
        let starting = Pending {
            workers_missing: true,
            ..scaling_down
        };
        assert_eq!(next_look(&starting), crate::health::LOOK_EVERY);
        let settling = Pending {
            settling: true,
            ..starting
        };
        assert_eq!(next_look(&settling), ACTIVE);
        let busy = Pending {
            busy: true,
            ..settling
        };
        assert_eq!(next_look(&busy), BUSY);
    }

    #[test]
    fn a_delay_that_has_run_out_is_looked_at_at_once() {
        let due = Pending {
            scale_down_in: Some(Duration::ZERO),
            ..Pending::default()
        };
        assert_eq!(next_look(&due), BUSY);
    }
}
