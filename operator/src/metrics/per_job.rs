//! The per-job series (`shoal_batchjob_*`), made at each scrape from the
//! figures [`super::Metrics`] keeps for its sums anyway.
//!
//! Between scrapes a job costs its key and six numbers. Ten labelled gauges
//! of the `prometheus` crate would each hold their own copy of the metric's
//! description and label pairs, some 450 bytes a series: 4.5 MB at the
//! default limit of 1,000 jobs, held for the life of the jobs. A scrape
//! builds the same series for as long as it takes to write them out.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use prometheus::core::{Collector, Desc};
use prometheus::proto::{Gauge, LabelPair, Metric, MetricFamily, MetricType};

use super::{JobFigures, JobKey, Jobs, PHASES, phase_label};

/// A plain gauge: name, help, and the figure it shows.
type PlainGauge = (&'static str, &'static str, fn(&JobFigures) -> i64);

/// The plain gauges.
const GAUGES: [PlainGauge; 5] = [
    (
        "shoal_batchjob_waiting_messages",
        "Messages waiting in the BatchJob's work queue (visible or delayed)",
        |f| f.waiting,
    ),
    (
        "shoal_batchjob_in_flight_messages",
        "Messages of the BatchJob leased by workers",
        |f| f.in_flight,
    ),
    (
        "shoal_batchjob_dead_lettered_chunks",
        "Chunks in the BatchJob's dead-letter queue",
        |f| f.dead_lettered,
    ),
    (
        "shoal_batchjob_desired_workers",
        "Workers the operator asks for the BatchJob",
        |f| f.desired,
    ),
    (
        "shoal_batchjob_ready_workers",
        "Ready worker pods of the BatchJob",
        |f| f.ready,
    ),
];

/// The phase gauge: one series a phase, 1 for the job's.
const PHASE: (&str, &str) = (
    "shoal_batchjob_phase",
    "1 for the BatchJob's phase, 0 for the others",
);

/// The collector of the per-job series, registered once.
pub(super) struct PerJobSeries {
    jobs: Arc<Mutex<Jobs>>,
    descs: Vec<Desc>,
}

impl PerJobSeries {
    /// Series of the labelled jobs in `jobs`.
    pub(super) fn new(jobs: Arc<Mutex<Jobs>>) -> Result<Self, prometheus::Error> {
        let labels = || vec!["namespace".to_owned(), "batchjob".to_owned()];
        let mut descs = GAUGES
            .iter()
            .map(|(name, help, _)| {
                Desc::new((*name).into(), (*help).into(), labels(), HashMap::new())
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut phase_labels = labels();
        phase_labels.push("phase".to_owned());
        descs.push(Desc::new(
            PHASE.0.into(),
            PHASE.1.into(),
            phase_labels,
            HashMap::new(),
        )?);
        Ok(Self { jobs, descs })
    }
}

/// A label pair.
fn label(name: &str, value: &str) -> LabelPair {
    let mut pair = LabelPair::default();
    pair.set_name(name.to_owned());
    pair.set_value(value.to_owned());
    pair
}

/// One gauge sample of job `key`, its labels in name order (as the
/// `prometheus` crate writes its own).
#[allow(
    clippy::cast_precision_loss,
    reason = "counts far below 2^52, as the crate's own IntGauge does"
)]
fn sample((namespace, name): &JobKey, phase: Option<&str>, value: i64) -> Metric {
    let mut gauge = Gauge::default();
    gauge.set_value(value as f64);
    let mut metric = Metric::from_gauge(gauge);
    let mut labels = vec![label("batchjob", name), label("namespace", namespace)];
    if let Some(phase) = phase {
        labels.push(label("phase", phase));
    }
    metric.set_label(labels);
    metric
}

fn family(name: &str, help: &str, metrics: Vec<Metric>) -> MetricFamily {
    let mut family = MetricFamily::default();
    family.set_name(name.to_owned());
    family.set_help(help.to_owned());
    family.set_field_type(MetricType::GAUGE);
    family.set_metric(metrics);
    family
}

impl Collector for PerJobSeries {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        // A copy, so that reconciles recording figures do not wait for the
        // scrape.
        let labelled: Vec<(JobKey, JobFigures)> = match self.jobs.lock() {
            Ok(jobs) => jobs
                .tracked
                .iter()
                .filter(|(_, tracked)| tracked.labelled)
                .map(|(key, tracked)| (key.clone(), tracked.figures))
                .collect(),
            Err(_) => return Vec::new(),
        };
        let mut families: Vec<MetricFamily> = GAUGES
            .iter()
            .map(|(name, help, figure)| {
                let metrics = labelled
                    .iter()
                    .map(|(key, figures)| sample(key, None, figure(figures)))
                    .collect();
                family(name, help, metrics)
            })
            .collect();
        let phases = labelled
            .iter()
            .flat_map(|(key, figures)| {
                PHASES.into_iter().map(move |phase| {
                    sample(
                        key,
                        Some(phase_label(phase)),
                        i64::from(phase == figures.phase),
                    )
                })
            })
            .collect();
        families.push(family(PHASE.0, PHASE.1, phases));
        families
    }
}
