//! The per-job series (`shoal_batchjob_*`), written straight into the
//! exposition at each scrape from the figures [`super::Metrics`] keeps for
//! its sums anyway.
//!
//! Between scrapes a job costs its key and six numbers. Ten labelled gauges
//! of the `prometheus` crate would each hold their own copy of the metric's
//! description and label pairs, some 450 bytes a series: 4.5 MB at the
//! default limit of 1,000 jobs, held for the life of the jobs. Built as the
//! crate's protobuf families at each scrape they cost as much again for the
//! length of the scrape; written as text they cost the text alone.
//!
//! The lines are those the crate's text encoder writes for gauges: `# HELP`
//! and `# TYPE` once a family, labels in name order, integer values; a
//! family with no series is left out.

use std::fmt::Write;

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

/// The labelled jobs' keys and figures, copied (under the lock) so that
/// reconciles recording figures do not wait for the text to be written.
pub(super) fn labelled(jobs: &Jobs) -> Vec<(JobKey, JobFigures)> {
    jobs.tracked
        .iter()
        .filter(|(_, tracked)| tracked.labelled)
        .map(|(key, tracked)| (key.clone(), tracked.figures))
        .collect()
}

/// Appends the per-job families of `labelled` to `out`.
pub(super) fn write(labelled: &[(JobKey, JobFigures)], out: &mut String) {
    if labelled.is_empty() {
        return;
    }
    // About 110 bytes a line.
    out.reserve(labelled.len() * (GAUGES.len() + PHASES.len()) * 110);
    for (name, help, figure) in GAUGES {
        header(out, name, help);
        for (key, figures) in labelled {
            line(out, name, key, None, figure(figures));
        }
    }
    header(out, PHASE.0, PHASE.1);
    for (key, figures) in labelled {
        for phase in PHASES {
            let value = i64::from(phase == figures.phase);
            line(out, PHASE.0, key, Some(phase_label(phase)), value);
        }
    }
}

fn header(out: &mut String, name: &str, help: &str) {
    // Writing into a String cannot fail.
    let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n");
}

/// One sample of job `key`, its labels in name order.
fn line(out: &mut String, name: &str, (namespace, job): &JobKey, phase: Option<&str>, value: i64) {
    out.push_str(name);
    out.push_str("{batchjob=\"");
    escape(out, job);
    out.push_str("\",namespace=\"");
    escape(out, namespace);
    if let Some(phase) = phase {
        out.push_str("\",phase=\"");
        out.push_str(phase);
    }
    let _ = writeln!(out, "\"}} {value}");
}

/// A label value as the exposition format quotes it. Kubernetes names
/// never need it; the format's rule is kept all the same.
fn escape(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_quoted_as_the_exposition_format_says() {
        let mut out = String::new();
        let key = ("a\"b".to_owned(), "c\\d\ne".to_owned());
        line(&mut out, "m", &key, Some("Running"), 1);
        assert_eq!(
            out,
            "m{batchjob=\"c\\\\d\\ne\",namespace=\"a\\\"b\",phase=\"Running\"} 1\n"
        );
    }
}
