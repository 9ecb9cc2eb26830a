//! The operator's own Prometheus metrics. Labels are fixed enums only: no
//! BatchJob names (their number is unbounded); per-job figures are in each
//! BatchJob's status, and the gauges here are sums over all jobs.

use std::collections::HashMap;
use std::sync::Mutex;

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use crate::crd::Phase;

/// Every operator metric, in one registry.
pub struct Metrics {
    registry: Registry,
    /// `shoal_operator_reconciles_total{outcome}`.
    pub reconciles: IntCounterVec,
    /// `shoal_operator_reconcile_errors_total{category}`.
    pub errors: IntCounterVec,
    /// `shoal_operator_reconcile_duration_seconds`.
    pub duration: Histogram,
    /// `shoal_operator_leader`: 1 while this replica reconciles.
    pub leader: IntGauge,
    /// `shoal_operator_batchjobs_finished_total{phase}`.
    finished: IntCounterVec,
    backlog: IntGauge,
    desired: IntGauge,
    dead_lettered: IntGauge,
    phases: IntGaugeVec,
    jobs: Mutex<HashMap<String, JobFigures>>,
}

/// What one job contributes to the gauges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobFigures {
    /// Messages waiting or in flight.
    pub backlog: i64,
    /// Workers asked for.
    pub desired: i64,
    /// Chunks in the dead-letter queue.
    pub dead_lettered: i64,
    /// Phase.
    pub phase: Phase,
}

const PHASES: [Phase; 5] = [
    Phase::Pending,
    Phase::Splitting,
    Phase::Running,
    Phase::Succeeded,
    Phase::Failed,
];

fn phase_label(phase: Phase) -> &'static str {
    match phase {
        Phase::Pending => "Pending",
        Phase::Splitting => "Splitting",
        Phase::Running => "Running",
        Phase::Succeeded => "Succeeded",
        Phase::Failed => "Failed",
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let reconciles = IntCounterVec::new(
            Opts::new(
                "shoal_operator_reconciles_total",
                "BatchJob reconciles by outcome",
            ),
            &["outcome"],
        )?;
        let errors = IntCounterVec::new(
            Opts::new(
                "shoal_operator_reconcile_errors_total",
                "Failed BatchJob reconciles by error category",
            ),
            &["category"],
        )?;
        let duration = Histogram::with_opts(
            HistogramOpts::new(
                "shoal_operator_reconcile_duration_seconds",
                "Time one BatchJob reconcile took",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
        )?;
        let backlog = IntGauge::new(
            "shoal_operator_backlog_messages",
            "Messages waiting or in flight, summed over all BatchJobs",
        )?;
        let desired = IntGauge::new(
            "shoal_operator_desired_workers",
            "Workers asked for, summed over all BatchJobs",
        )?;
        let phases = IntGaugeVec::new(
            Opts::new("shoal_operator_batchjobs", "BatchJobs by phase"),
            &["phase"],
        )?;
        let dead_lettered = IntGauge::new(
            "shoal_operator_dead_lettered_chunks",
            "Chunks in dead-letter queues, summed over all BatchJobs",
        )?;
        let leader = IntGauge::new(
            "shoal_operator_leader",
            "1 while this replica holds the leader Lease (or runs without leader election)",
        )?;
        let finished = IntCounterVec::new(
            Opts::new(
                "shoal_operator_batchjobs_finished_total",
                "BatchJobs that reached Succeeded or Failed",
            ),
            &["phase"],
        )?;
        registry.register(Box::new(reconciles.clone()))?;
        registry.register(Box::new(errors.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(backlog.clone()))?;
        registry.register(Box::new(desired.clone()))?;
        registry.register(Box::new(phases.clone()))?;
        registry.register(Box::new(dead_lettered.clone()))?;
        registry.register(Box::new(leader.clone()))?;
        registry.register(Box::new(finished.clone()))?;
        for phase in [Phase::Succeeded, Phase::Failed] {
            finished.with_label_values(&[phase_label(phase)]);
        }
        for outcome in ["success", "error"] {
            reconciles.with_label_values(&[outcome]);
        }
        for category in crate::error::Error::CATEGORIES {
            errors.with_label_values(&[category]);
        }
        for phase in PHASES {
            phases.with_label_values(&[phase_label(phase)]);
        }
        Ok(Self {
            registry,
            reconciles,
            errors,
            duration,
            leader,
            finished,
            backlog,
            desired,
            dead_lettered,
            phases,
            jobs: Mutex::new(HashMap::new()),
        })
    }

    /// Records `job`'s figures (`None`: the job is gone) and recomputes
    /// the sums.
    pub fn set_job(&self, job: &str, figures: Option<JobFigures>) {
        let Ok(mut jobs) = self.jobs.lock() else {
            return;
        };
        match figures {
            Some(f) => {
                jobs.insert(job.to_owned(), f);
            }
            None => {
                jobs.remove(job);
            }
        }
        self.backlog.set(jobs.values().map(|f| f.backlog).sum());
        self.desired.set(jobs.values().map(|f| f.desired).sum());
        self.dead_lettered
            .set(jobs.values().map(|f| f.dead_lettered).sum());
        for phase in PHASES {
            let count = jobs.values().filter(|f| f.phase == phase).count();
            self.phases
                .with_label_values(&[phase_label(phase)])
                .set(i64::try_from(count).unwrap_or(i64::MAX));
        }
    }

    /// Counts a job that has just reached `phase` (Succeeded or Failed).
    pub fn finished(&self, phase: Phase) {
        if phase.is_finished() {
            self.finished.with_label_values(&[phase_label(phase)]).inc();
        }
    }

    /// The text exposition of every metric.
    pub fn encode(&self) -> Result<String, prometheus::Error> {
        let mut buffer = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buffer)?;
        Ok(String::from_utf8_lossy(&buffer).into_owned())
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        reason = "test code: a panic is how a test reports failure"
    )]

    use super::*;

    #[test]
    fn gauges_are_sums_over_jobs_without_job_labels() {
        let m = Metrics::new().unwrap();
        let running = |backlog, desired| JobFigures {
            backlog,
            desired,
            dead_lettered: 1,
            phase: Phase::Running,
        };
        m.set_job("media/a", Some(running(30, 3)));
        m.set_job("media/b", Some(running(12, 2)));
        m.set_job("media/a", Some(running(10, 1)));
        let text = m.encode().unwrap();
        assert!(
            text.contains("shoal_operator_backlog_messages 22"),
            "{text}"
        );
        assert!(text.contains("shoal_operator_desired_workers 3"), "{text}");
        assert!(
            text.contains("shoal_operator_dead_lettered_chunks 2"),
            "{text}"
        );
        assert!(
            text.contains("shoal_operator_batchjobs{phase=\"Running\"} 2"),
            "{text}"
        );
        m.set_job("media/b", None);
        let text = m.encode().unwrap();
        assert!(
            text.contains("shoal_operator_batchjobs{phase=\"Running\"} 1"),
            "{text}"
        );
        assert!(!text.contains("media/"), "no object names in labels");
        m.finished(Phase::Failed);
        m.finished(Phase::Running);
        let text = m.encode().unwrap();
        assert!(
            text.contains("shoal_operator_batchjobs_finished_total{phase=\"Failed\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("shoal_operator_batchjobs_finished_total{phase=\"Succeeded\"} 0"),
            "{text}"
        );
    }
}
