//! The operator's own Prometheus metrics.
//!
//! Two kinds: sums over every BatchJob (`shoal_operator_*`, labels from
//! fixed enums only), and per-job series (`shoal_batchjob_*`, labelled
//! `namespace` and `batchjob`), ten a job, removed when the job is deleted.
//! Since anyone who may create BatchJobs decides how many there are, the
//! per-job series are bounded: past [`Metrics::per_job_limit`] jobs, a new
//! job gets none (it still counts in the sums and in
//! `shoal_operator_batchjobs_without_series`) until another is deleted.

mod per_job;

use std::collections::HashMap;
use std::sync::Mutex;

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use crate::crd::Phase;

/// Jobs with per-job series when no limit is given: 10,000 series.
pub const DEFAULT_PER_JOB_LIMIT: usize = 1000;

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
    /// `shoal_operator_api_requests_total{verb}`: requests to the
    /// Kubernetes API server, watches included.
    pub api_requests: IntCounterVec,
    /// `shoal_operator_api_request_duration_seconds{verb}`: how long the
    /// API server took to start answering (a watch's head comes at once).
    api_latency: HistogramVec,
    /// `shoal_operator_queue_requests_total{backend}`: requests to SQS and
    /// to RabbitMQ's management API.
    pub queue_requests: IntCounterVec,
    /// `shoal_operator_batchjobs_finished_total{phase}`.
    finished: IntCounterVec,
    /// `shoal_operator_events_total{outcome}`.
    events: IntCounterVec,
    backlog: IntGauge,
    desired: IntGauge,
    dead_lettered: IntGauge,
    phases: IntGaugeVec,
    without_series: IntGauge,
    per_job_limit: usize,
    /// Every job's figures: the sums move by them, the per-job series are
    /// written from them.
    jobs: Mutex<Jobs>,
}

/// Every job's figures, and how many have per-job series.
#[derive(Default)]
struct Jobs {
    tracked: HashMap<JobKey, Tracked>,
    labelled: usize,
}

/// A job's namespace and name.
type JobKey = (String, String);

/// A job's figures, and whether it has per-job series.
struct Tracked {
    figures: JobFigures,
    labelled: bool,
}

/// What one job contributes to the gauges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobFigures {
    /// Messages waiting (visible or delayed).
    pub waiting: i64,
    /// Messages leased by workers.
    pub in_flight: i64,
    /// Workers asked for.
    pub desired: i64,
    /// Workers ready.
    pub ready: i64,
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

/// The `outcome` label values of `shoal_operator_events_total`.
const EVENT_OUTCOMES: [&str; 4] = ["published", "repeated", "dropped", "failed"];

/// The `verb` label values (HTTP methods; any other is `OTHER`).
const VERBS: [&str; 6] = ["GET", "POST", "PUT", "PATCH", "DELETE", "OTHER"];

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
    /// Registers every metric, with per-job series for at most
    /// `per_job_limit` jobs at a time.
    pub fn new(per_job_limit: usize) -> Result<Self, prometheus::Error> {
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
        let api_requests = IntCounterVec::new(
            Opts::new(
                "shoal_operator_api_requests_total",
                "Requests the operator made to the Kubernetes API server, by HTTP verb",
            ),
            &["verb"],
        )?;
        let api_latency = HistogramVec::new(
            HistogramOpts::new(
                "shoal_operator_api_request_duration_seconds",
                "Time the Kubernetes API server took to start answering a request, by HTTP verb",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
            &["verb"],
        )?;
        let queue_requests = IntCounterVec::new(
            Opts::new(
                "shoal_operator_queue_requests_total",
                "Requests the operator made to SQS and to RabbitMQ's management API",
            ),
            &["backend"],
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
        let events = IntCounterVec::new(
            Opts::new(
                "shoal_operator_events_total",
                "Kubernetes Events by outcome: published (a new Event), repeated (the count of an earlier one raised), dropped (more waiting than the lanes hold), failed (refused by the API server)",
            ),
            &["outcome"],
        )?;
        let without_series = IntGauge::new(
            "shoal_operator_batchjobs_without_series",
            "BatchJobs past the per-job series limit, which have no shoal_batchjob_* series",
        )?;
        let build_info = IntGaugeVec::new(
            Opts::new(
                "shoal_build_info",
                "1, labelled with the version of the running operator",
            ),
            &["component", "version"],
        )?;
        build_info
            .with_label_values(&["operator", env!("CARGO_PKG_VERSION")])
            .set(1);
        let jobs = Mutex::new(Jobs::default());
        registry.register(Box::new(reconciles.clone()))?;
        registry.register(Box::new(errors.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(backlog.clone()))?;
        registry.register(Box::new(desired.clone()))?;
        registry.register(Box::new(phases.clone()))?;
        registry.register(Box::new(dead_lettered.clone()))?;
        registry.register(Box::new(leader.clone()))?;
        registry.register(Box::new(api_requests.clone()))?;
        registry.register(Box::new(api_latency.clone()))?;
        registry.register(Box::new(queue_requests.clone()))?;
        registry.register(Box::new(finished.clone()))?;
        registry.register(Box::new(without_series.clone()))?;
        registry.register(Box::new(events.clone()))?;
        registry.register(Box::new(build_info))?;
        for phase in [Phase::Succeeded, Phase::Failed] {
            finished.with_label_values(&[phase_label(phase)]);
        }
        for verb in VERBS {
            api_requests.with_label_values(&[verb]);
            api_latency.with_label_values(&[verb]);
        }
        for backend in ["sqs", "amqp"] {
            queue_requests.with_label_values(&[backend]);
        }
        for outcome in EVENT_OUTCOMES {
            events.with_label_values(&[outcome]);
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
            api_requests,
            api_latency,
            queue_requests,
            finished,
            events,
            backlog,
            desired,
            dead_lettered,
            phases,
            without_series,
            per_job_limit,
            jobs,
        })
    }

    /// How many jobs at most have per-job series at once.
    pub fn per_job_limit(&self) -> usize {
        self.per_job_limit
    }

    /// Records the figures of job `name` in `namespace` (`None`: the job
    /// is gone, its series removed) and moves the sums by the difference
    /// from its previous figures: the cost is the same with ten jobs or ten
    /// thousand.
    pub fn set_job(&self, namespace: &str, name: &str, figures: Option<JobFigures>) {
        let Ok(mut jobs) = self.jobs.lock() else {
            return;
        };
        let key = (namespace.to_owned(), name.to_owned());
        let old = jobs.tracked.get(&key).map(|t| (t.figures, t.labelled));
        if let Some((old, labelled)) = old {
            if Some(old) == figures && (labelled || jobs.labelled >= self.per_job_limit) {
                return;
            }
            self.add(&old, -1);
        }
        match figures {
            Some(figures) => {
                self.add(&figures, 1);
                let labelled_now = jobs.labelled;
                let tracked = jobs.tracked.entry(key.clone()).or_insert(Tracked {
                    figures,
                    labelled: false,
                });
                tracked.figures = figures;
                let mut newly_labelled = false;
                if !tracked.labelled && labelled_now < self.per_job_limit {
                    tracked.labelled = true;
                    newly_labelled = true;
                }
                if newly_labelled {
                    jobs.labelled += 1;
                }
            }
            None => {
                if jobs.tracked.remove(&key).is_some_and(|t| t.labelled) {
                    jobs.labelled -= 1;
                }
            }
        }
        let without = jobs.tracked.len() - jobs.labelled;
        self.without_series
            .set(i64::try_from(without).unwrap_or(i64::MAX));
    }

    /// Adds (`sign` 1) or takes away (`sign` -1) what one job's figures
    /// contribute to the sums.
    fn add(&self, f: &JobFigures, sign: i64) {
        self.backlog
            .add(sign.saturating_mul(f.waiting.saturating_add(f.in_flight)));
        self.desired.add(sign.saturating_mul(f.desired));
        self.dead_lettered.add(sign.saturating_mul(f.dead_lettered));
        self.phases
            .with_label_values(&[phase_label(f.phase)])
            .add(sign);
    }

    /// Counts one request to the API server with `method`; returns its
    /// verb label, for [`Self::api_answered`].
    pub fn api_request(&self, method: &http::Method) -> &'static str {
        let verb = VERBS
            .into_iter()
            .find(|v| *v == method.as_str())
            .unwrap_or("OTHER");
        self.api_requests.with_label_values(&[verb]).inc();
        verb
    }

    /// Records that the API server started answering a request of `verb`
    /// (from [`Self::api_request`]) `after` it was sent.
    pub fn api_answered(&self, verb: &'static str, after: std::time::Duration) {
        self.api_latency
            .with_label_values(&[verb])
            .observe(after.as_secs_f64());
    }

    /// Counts a job that has just reached `phase` (Succeeded or Failed).
    pub fn finished(&self, phase: Phase) {
        if phase.is_finished() {
            self.finished.with_label_values(&[phase_label(phase)]).inc();
        }
    }

    /// Counts `n` Events with `outcome` (one of [`EVENT_OUTCOMES`]).
    pub fn event(&self, outcome: &str, n: usize) {
        if EVENT_OUTCOMES.contains(&outcome) {
            self.events
                .with_label_values(&[outcome])
                .inc_by(u64::try_from(n).unwrap_or(u64::MAX));
        }
    }

    /// The text exposition of every metric.
    pub fn encode(&self) -> Result<String, prometheus::Error> {
        let families = self.registry.gather();
        // About 100 bytes a series: one allocation instead of a doubling
        // string.
        let series: usize = families.iter().map(|f| f.get_metric().len()).sum();
        let mut text = String::with_capacity(series.saturating_mul(100));
        TextEncoder::new().encode_utf8(&families, &mut text)?;
        // (A reconcile that panicked while recording leaves the sums.)
        let labelled = match self.jobs.lock() {
            Ok(jobs) => per_job::labelled(&jobs),
            Err(_) => Vec::new(),
        };
        per_job::write(&labelled, &mut text);
        Ok(text)
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        reason = "test code: a panic is how a test reports failure"
    )]

    use super::*;

    fn running(waiting: i64, desired: i64) -> JobFigures {
        JobFigures {
            waiting,
            in_flight: 2,
            desired,
            ready: desired,
            dead_lettered: 1,
            phase: Phase::Running,
        }
    }

    #[test]
    fn sums_over_jobs_and_a_series_set_per_job_removed_with_it() {
        let m = Metrics::new(DEFAULT_PER_JOB_LIMIT).unwrap();
        m.set_job("media", "a", Some(running(28, 3)));
        m.set_job("media", "b", Some(running(10, 2)));
        m.set_job("media", "a", Some(running(8, 1)));
        let text = m.encode().unwrap();
        for line in [
            "shoal_operator_backlog_messages 22",
            "shoal_operator_desired_workers 3",
            "shoal_operator_dead_lettered_chunks 2",
            "shoal_operator_batchjobs{phase=\"Running\"} 2",
            "shoal_batchjob_waiting_messages{batchjob=\"a\",namespace=\"media\"} 8",
            "shoal_batchjob_in_flight_messages{batchjob=\"b\",namespace=\"media\"} 2",
            "shoal_batchjob_desired_workers{batchjob=\"a\",namespace=\"media\"} 1",
            "shoal_batchjob_ready_workers{batchjob=\"b\",namespace=\"media\"} 2",
            "shoal_batchjob_phase{batchjob=\"a\",namespace=\"media\",phase=\"Running\"} 1",
            "shoal_batchjob_phase{batchjob=\"a\",namespace=\"media\",phase=\"Pending\"} 0",
            "shoal_operator_batchjobs_without_series 0",
            "shoal_build_info{component=\"operator\",version=\"",
        ] {
            assert!(text.contains(line), "{line}\n{text}");
        }
        m.set_job("media", "b", None);
        let text = m.encode().unwrap();
        assert!(
            text.contains("shoal_operator_batchjobs{phase=\"Running\"} 1"),
            "{text}"
        );
        assert!(
            !text.contains("batchjob=\"b\""),
            "b's series go with it:\n{text}"
        );
        assert_eq!(
            text.matches("batchjob=\"a\"").count(),
            10,
            "ten series a job:\n{text}"
        );
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

    #[test]
    fn past_the_limit_a_job_has_no_series_until_another_goes() {
        let m = Metrics::new(2).unwrap();
        for name in ["a", "b", "c"] {
            m.set_job("media", name, Some(running(1, 1)));
        }
        let text = m.encode().unwrap();
        assert!(!text.contains("batchjob=\"c\""), "{text}");
        assert!(
            text.contains("shoal_operator_batchjobs_without_series 1"),
            "{text}"
        );
        assert!(
            text.contains("shoal_operator_backlog_messages 9"),
            "c still sums: {text}"
        );
        m.set_job("media", "a", None);
        m.set_job("media", "c", Some(running(1, 1)));
        let text = m.encode().unwrap();
        assert!(text.contains("batchjob=\"c\""), "{text}");
        assert!(!text.contains("batchjob=\"a\""), "{text}");
        assert!(
            text.contains("shoal_operator_batchjobs_without_series 0"),
            "{text}"
        );
    }
}
