//! The end-of-run summary and the exit decision.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// What a `run` did.
#[derive(Debug, Clone, Default)]
pub struct RunSummary {
    /// Items in the input folder.
    pub total: usize,
    /// Succeeded in this run.
    pub succeeded: usize,
    /// Dead-lettered in this run.
    pub dead_lettered: usize,
    /// Already succeeded in an earlier run (not processed again).
    pub skipped_succeeded: usize,
    /// Already dead-lettered in an earlier run (not processed again).
    pub skipped_dead_lettered: usize,
    /// Interrupted before finishing, or whose dead letter could not be written.
    pub abandoned: usize,
    /// Planned for this run but not finished (interrupted).
    pub remaining: usize,
    /// Attempts that failed (retried or not).
    pub failed_invocations: usize,
    /// Duration of every attempt of this run.
    pub durations: Vec<Duration>,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Whether Ctrl-C or SIGTERM cut the run short.
    pub interrupted: bool,
    /// Where dead letters are.
    pub dead_letter_path: PathBuf,
    /// The first items dead-lettered in this run, with their reasons (at
    /// most [`SAMPLES`]).
    pub dead_letter_samples: Vec<(String, String)>,
    /// The dead-lettered percentage above which the run fails (`None`:
    /// dead letters are reported only).
    pub tolerance: Option<f64>,
}

/// Dead letters the summary names.
pub const SAMPLES: usize = 3;

/// A reason as the summary shows it: one line, at most 160 characters.
fn short(reason: &str) -> String {
    let line = reason.lines().next().unwrap_or_default();
    match line.char_indices().nth(160) {
        Some((end, _)) => format!("{}…", &line[..end]),
        None => line.to_owned(),
    }
}

/// Nearest-rank percentile of sorted `values`, `p` in (0, 100].
pub fn percentile(sorted: &[Duration], p: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

impl RunSummary {
    /// Items finished in this run.
    pub fn processed(&self) -> usize {
        self.succeeded + self.dead_lettered + self.abandoned
    }

    /// Dead-lettered items of the whole batch (this run and earlier ones).
    pub fn dead_lettered_total(&self) -> usize {
        self.dead_lettered + self.skipped_dead_lettered
    }

    /// Percentage of the batch that is dead-lettered.
    pub fn dead_letter_percent(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.dead_lettered_total() as f64 * 100.0 / self.total as f64
        }
    }

    /// Notes `item`, dead-lettered for `reason`, among the samples the
    /// summary shows.
    pub fn sample_dead_letter(&mut self, item: &str, reason: &str) {
        if self.dead_letter_samples.len() < SAMPLES {
            self.dead_letter_samples
                .push((item.to_owned(), short(reason)));
        }
    }

    /// Whether the batch stays within the tolerated failure percentage.
    pub fn within_tolerance(&self, tolerated_percent: f64) -> bool {
        self.dead_lettered_total() == 0 || self.dead_letter_percent() <= tolerated_percent
    }

    /// Items per second finished in this run.
    pub fn throughput(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            (self.succeeded + self.dead_lettered) as f64 / secs
        } else {
            0.0
        }
    }

    /// p50 and p99 of attempt durations.
    pub fn p50_p99(&self) -> (Option<Duration>, Option<Duration>) {
        let mut sorted = self.durations.clone();
        sorted.sort_unstable();
        (percentile(&sorted, 50.0), percentile(&sorted, 99.0))
    }
}

fn ms(d: Option<Duration>) -> String {
    d.map(|d| format!("{:.1} ms", d.as_secs_f64() * 1000.0))
        .unwrap_or_else(|| "-".into())
}

impl fmt::Display for RunSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = if self.interrupted {
            "interrupted"
        } else {
            "finished"
        };
        writeln!(f, "batch {status} in {:.2} s", self.elapsed.as_secs_f64())?;
        writeln!(
            f,
            "  items:        {} total, {} succeeded, {} dead-lettered, {} failed invocations",
            self.total,
            self.succeeded + self.skipped_succeeded,
            self.dead_lettered_total(),
            self.failed_invocations,
        )?;
        if self.skipped_succeeded + self.skipped_dead_lettered > 0 {
            writeln!(
                f,
                "  resumed:      {} succeeded and {} dead-lettered in earlier runs, not redone",
                self.skipped_succeeded, self.skipped_dead_lettered
            )?;
        }
        if self.remaining > 0 {
            writeln!(
                f,
                "  remaining:    {} (run the same command again to finish them)",
                self.remaining
            )?;
        }
        let (p50, p99) = self.p50_p99();
        writeln!(
            f,
            "  duration:     p50 {}, p99 {} over {} invocations",
            ms(p50),
            ms(p99),
            self.durations.len()
        )?;
        writeln!(f, "  throughput:   {:.1} items/s", self.throughput())?;
        if self.dead_lettered_total() > 0 {
            writeln!(f, "  dead letters: {}", self.dead_letter_path.display())?;
            for (item, reason) in &self.dead_letter_samples {
                writeln!(f, "    {item}: {reason}")?;
            }
            let more = self
                .dead_lettered
                .saturating_sub(self.dead_letter_samples.len());
            if more > 0 {
                writeln!(
                    f,
                    "    … and {more} more, each with its reason in that file"
                )?;
            }
            match self.tolerance {
                None => writeln!(
                    f,
                    "  exit status 0: dead letters are reported, not fatal (--strict makes any fatal)"
                )?,
                Some(tolerated) if !self.within_tolerance(tolerated) => writeln!(
                    f,
                    "  exit status 3: {:.1}% dead-lettered, above the tolerated {tolerated}%",
                    self.dead_letter_percent()
                )?,
                Some(_) => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<_> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 50.0), Some(Duration::from_millis(50)));
        assert_eq!(percentile(&v, 99.0), Some(Duration::from_millis(99)));
        assert_eq!(percentile(&v[..1], 99.0), Some(Duration::from_millis(1)));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn tolerance_counts_earlier_dead_letters_too() {
        let s = RunSummary {
            total: 20,
            succeeded: 19,
            skipped_dead_lettered: 1,
            ..RunSummary::default()
        };
        assert_eq!(s.dead_letter_percent(), 5.0);
        assert!(!s.within_tolerance(0.0));
        assert!(!s.within_tolerance(4.9));
        assert!(s.within_tolerance(5.0));
        assert!(
            RunSummary {
                total: 3,
                succeeded: 3,
                ..RunSummary::default()
            }
            .within_tolerance(0.0)
        );
    }
}
