//! What `kubectl shoal status` shows of a BatchJob, computed from the job
//! alone (no API calls, so it is tested without a cluster).

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use serde::Serialize;
use shoal_operator::crd::{BatchJob, Phase};

/// One job's progress.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    /// Namespace of the job.
    pub namespace: String,
    /// Name of the job.
    pub name: String,
    /// `status.phase` (`Pending` before the operator has seen the job).
    pub phase: String,
    /// `spec.suspend`.
    pub suspended: bool,
    /// Chunks enqueued so far (final once the fan-out is done).
    pub chunks: i64,
    /// Whether `chunks` is final.
    pub fan_out_done: bool,
    /// Chunks done.
    pub succeeded: i64,
    /// Chunks dead-lettered.
    pub dead_lettered: i64,
    /// Chunks held by workers.
    pub in_flight: i64,
    /// Chunks waiting in the queue.
    pub waiting: i64,
    /// Worker pods ready.
    pub ready_workers: i32,
    /// Worker pods asked for.
    pub desired_workers: i32,
    /// Seconds since the job started (to its completion once finished).
    pub elapsed_seconds: Option<f64>,
    /// Chunks settled (done or dead-lettered) per second over that time.
    pub chunks_per_second: Option<f64>,
    /// Seconds left at that rate: only while running with the fan-out
    /// done, not suspended, and something settled already.
    pub eta_seconds: Option<f64>,
    /// The `Ready` condition's message (what the job is doing, or why not).
    pub message: String,
}

impl Progress {
    /// The progress of `job` at `now`.
    pub fn of(job: &BatchJob, now: Timestamp) -> Self {
        let status = job.status.clone().unwrap_or_default();
        let suspended = job.spec.suspend.unwrap_or(false);
        let fan_out_done = status.split.as_ref().is_some_and(|s| s.done);
        let settled = status
            .chunks
            .succeeded
            .saturating_add(status.chunks.dead_lettered);
        let elapsed_seconds = status.start_time.as_ref().map(|start| {
            let end = status.completion_time.as_ref().map_or(now, |t| t.0);
            (end.as_millisecond() - start.0.as_millisecond()).max(0) as f64 / 1000.0
        });
        let chunks_per_second = elapsed_seconds
            .filter(|secs| *secs > 0.0)
            .map(|secs| settled as f64 / secs);
        let eta_seconds = match (status.phase, chunks_per_second) {
            (Phase::Running, Some(rate)) if fan_out_done && !suspended && rate > 0.0 => {
                let left = status.chunks.total.saturating_sub(settled).max(0);
                Some(left as f64 / rate)
            }
            _ => None,
        };
        let message = status
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .map(|c| c.message.clone())
            .unwrap_or_default();
        Self {
            namespace: job.namespace().unwrap_or_default(),
            name: job.name_any(),
            phase: format!("{:?}", status.phase),
            suspended,
            chunks: status.chunks.total,
            fan_out_done,
            succeeded: status.chunks.succeeded,
            dead_lettered: status.chunks.dead_lettered,
            in_flight: status.chunks.in_flight,
            waiting: status.chunks.visible,
            ready_workers: status.ready_workers,
            desired_workers: status.desired_workers,
            elapsed_seconds,
            chunks_per_second,
            eta_seconds,
            message,
        }
    }

    /// `done/total (pct%)`, with `+` after the total while the fan-out
    /// still adds chunks.
    pub fn chunks_cell(&self) -> String {
        let settled = self.succeeded.saturating_add(self.dead_lettered);
        let more = if self.fan_out_done { "" } else { "+" };
        if self.chunks > 0 {
            let pct = settled.saturating_mul(100) / self.chunks;
            format!("{settled}/{}{more} ({pct}%)", self.chunks)
        } else {
            format!("{settled}/{}{more}", self.chunks)
        }
    }

    /// The phase, `Suspended` while suspended and not finished.
    pub fn phase_cell(&self) -> String {
        if self.suspended && !matches!(self.phase.as_str(), "Succeeded" | "Failed") {
            "Suspended".to_owned()
        } else {
            self.phase.clone()
        }
    }
}

/// A duration as people read it in a table: `45s`, `3m20s`, `2h05m`,
/// `3d04h`.
pub fn short_duration(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86_400 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{:02}h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// The `status` table: a header and one row per job, columns padded.
pub fn table(rows: &[Progress], with_namespace: bool) -> String {
    let mut lines: Vec<Vec<String>> = Vec::with_capacity(rows.len() + 1);
    let mut header: Vec<String> = Vec::new();
    if with_namespace {
        header.push("NAMESPACE".into());
    }
    header.extend(
        [
            "NAME", "PHASE", "CHUNKS", "FAILED", "WORKERS", "RATE", "ETA",
        ]
        .iter()
        .map(|h| (*h).to_owned()),
    );
    lines.push(header);
    for p in rows {
        let mut line = Vec::new();
        if with_namespace {
            line.push(p.namespace.clone());
        }
        line.push(p.name.clone());
        line.push(p.phase_cell());
        line.push(p.chunks_cell());
        line.push(p.dead_lettered.to_string());
        line.push(format!("{}/{}", p.ready_workers, p.desired_workers));
        line.push(
            p.chunks_per_second
                .map_or_else(|| "-".to_owned(), |r| format!("{r:.1}/s")),
        );
        line.push(p.eta_seconds.map_or_else(|| "-".to_owned(), short_duration));
        lines.push(line);
    }
    pad(&lines)
}

/// Columns left-aligned, three spaces apart, no trailing space.
pub fn pad(lines: &[Vec<String>]) -> String {
    let columns = lines.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            lines
                .iter()
                .filter_map(|l| l.get(c))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for line in lines {
        let mut text = String::new();
        for (c, cell) in line.iter().enumerate() {
            if c + 1 == line.len() {
                text.push_str(cell);
            } else {
                let width = widths.get(c).copied().unwrap_or(0);
                text.push_str(cell);
                text.push_str(&" ".repeat(width - cell.chars().count() + 3));
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use shoal_operator::crd::{BatchJobStatus, ChunkCounts, SplitCheckpoint};

    fn job(status: BatchJobStatus, suspend: bool) -> BatchJob {
        let mut job: BatchJob = serde_json::from_value(serde_json::json!({
            "apiVersion": "shoal.dev/v1alpha1",
            "kind": "BatchJob",
            "metadata": {"name": "thumbs", "namespace": "media"},
            "spec": {
                "handler": {"image": "shoal-thumbnail:0.1.0"},
                "source": {"s3": {"bucket": "photos", "prefix": "in/"}},
            },
        }))
        .unwrap_or_else(|e| panic!("a BatchJob: {e}"));
        job.spec.suspend = Some(suspend);
        job.status = Some(status);
        job
    }

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).unwrap_or_else(|e| panic!("{e}"))
    }

    fn running(succeeded: i64, dead: i64, total: i64, done: bool) -> BatchJobStatus {
        BatchJobStatus {
            phase: Phase::Running,
            start_time: Some(Time(at(0))),
            split: Some(SplitCheckpoint {
                done,
                chunks: total,
                ..Default::default()
            }),
            chunks: ChunkCounts {
                total,
                succeeded,
                dead_lettered: dead,
                in_flight: 4,
                visible: total - succeeded - dead - 4,
            },
            ready_workers: 4,
            desired_workers: 4,
            ..Default::default()
        }
    }

    #[test]
    fn rate_and_eta_come_from_settled_chunks_over_elapsed_time() {
        let p = Progress::of(&job(running(90, 10, 400, true), false), at(50));
        assert_eq!(p.elapsed_seconds, Some(50.0));
        assert_eq!(p.chunks_per_second, Some(2.0));
        assert_eq!(p.eta_seconds, Some(150.0), "300 left at 2/s");
        assert_eq!(p.chunks_cell(), "100/400 (25%)");
        assert_eq!(p.phase_cell(), "Running");
    }

    #[test]
    fn no_eta_while_the_fan_out_adds_chunks_or_the_job_is_suspended() {
        let splitting = Progress::of(&job(running(90, 10, 400, false), false), at(50));
        assert_eq!(splitting.eta_seconds, None);
        assert_eq!(splitting.chunks_cell(), "100/400+ (25%)");
        let suspended = Progress::of(&job(running(90, 10, 400, true), true), at(50));
        assert_eq!(suspended.eta_seconds, None);
        assert_eq!(suspended.phase_cell(), "Suspended");
        let fresh = Progress::of(&job(running(0, 0, 400, true), false), at(0));
        assert_eq!((fresh.chunks_per_second, fresh.eta_seconds), (None, None));
    }

    #[test]
    fn a_finished_job_is_timed_to_its_completion() {
        let mut status = running(400, 0, 400, true);
        status.phase = Phase::Succeeded;
        status.completion_time = Some(Time(at(80)));
        let p = Progress::of(&job(status, true), at(5000));
        assert_eq!(p.elapsed_seconds, Some(80.0));
        assert_eq!(p.chunks_per_second, Some(5.0));
        assert_eq!(p.eta_seconds, None);
        assert_eq!(
            p.phase_cell(),
            "Succeeded",
            "a finished job ignores suspend"
        );
    }

    #[test]
    fn a_job_the_operator_has_not_seen_has_no_figures() {
        let mut bare = job(BatchJobStatus::default(), false);
        bare.status = None;
        let p = Progress::of(&bare, at(0));
        assert_eq!(p.phase, "Pending");
        assert_eq!(p.chunks_cell(), "0/0+");
        assert_eq!((p.elapsed_seconds, p.chunks_per_second), (None, None));
    }

    #[test]
    fn the_table_lines_up() {
        let p = Progress::of(&job(running(90, 10, 400, true), false), at(50));
        let text = table(&[p], true);
        assert_eq!(
            text,
            "NAMESPACE   NAME     PHASE     CHUNKS          FAILED   WORKERS   RATE    ETA\n\
             media       thumbs   Running   100/400 (25%)   10       4/4       2.0/s   2m30s\n"
        );
    }

    #[test]
    fn durations_read_short() {
        assert_eq!(short_duration(0.4), "0s");
        assert_eq!(short_duration(59.0), "59s");
        assert_eq!(short_duration(200.0), "3m20s");
        assert_eq!(short_duration(7500.0), "2h05m");
        assert_eq!(short_duration(273_600.0), "3d04h");
        assert_eq!(short_duration(-5.0), "0s");
    }
}
