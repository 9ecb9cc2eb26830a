//! Per-invocation log lines in the exact format Lambda writes them, so log
//! queries written for Lambda work unchanged.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Target of the START/END/REPORT events, for filtering (`shoal::platform`).
pub const TARGET: &str = "shoal::platform";

/// Which of Lambda's per-invocation lines shoal writes
/// (`--invocation-logs`, `SHOAL_INVOCATION_LOGS`). Whichever are written
/// are exactly Lambda's. The default is the REPORT line alone: it carries
/// everything the three do (request id, duration, billed duration, memory),
/// so the queries written for Lambda's REPORT lines work, at a third of the
/// cost per invocation of all three.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum InvocationLogs {
    /// START, END and REPORT, as Lambda writes them.
    All,
    /// REPORT only.
    #[default]
    Report,
    /// None (failures are still logged, as `item failed`).
    None,
}

impl InvocationLogs {
    /// Whether START and END lines are written.
    pub fn start_and_end(self) -> bool {
        self == Self::All
    }

    /// Whether REPORT lines are written.
    pub fn report(self) -> bool {
        self != Self::None
    }
}

/// `START RequestId: <id> Version: $LATEST`
pub fn start_line(request_id: &str) -> String {
    format!("START RequestId: {request_id} Version: $LATEST")
}

/// `END RequestId: <id>`
pub fn end_line(request_id: &str) -> String {
    format!("END RequestId: {request_id}")
}

/// `REPORT RequestId: <id>\tDuration: X ms\tBilled Duration: Y ms\tMemory Size: M MB\tMax Memory Used: U MB\t`,
/// with `Init Duration: I ms\t` after it on an execution environment's
/// first invocation.
///
/// Billed duration is rounded up to the millisecond, as Lambda bills (the
/// init phase is not billed here: Lambda bills it only for some runtimes).
/// Max memory used is the peak resident set of the process that ran it.
pub fn report_line(
    request_id: &str,
    duration: Duration,
    memory_size_mib: u32,
    max_memory_used_mib: u64,
    init: Option<Duration>,
) -> String {
    let millis = duration.as_secs_f64() * 1000.0;
    let billed = billed_ms(duration);
    let mut line = format!(
        "REPORT RequestId: {request_id}\tDuration: {millis:.2} ms\tBilled Duration: {billed} ms\tMemory Size: {memory_size_mib} MB\tMax Memory Used: {max_memory_used_mib} MB\t"
    );
    if let Some(init) = init {
        line.push_str(&format!(
            "Init Duration: {:.2} ms\t",
            init.as_secs_f64() * 1000.0
        ));
    }
    line
}

/// The billed duration of an invocation that took `duration`, in ms:
/// rounded up to the millisecond, at least 1, as Lambda bills (and as the
/// REPORT line says).
pub fn billed_ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros().div_ceil(1000))
        .unwrap_or(u64::MAX)
        .max(1)
}

/// Peak resident set size of this process in MiB (`VmHWM`), 0 where unknown.
///
/// Read from `/proc` at most every [`MEMORY_SAMPLE_EVERY`]; in between the
/// last reading is reported (the peak only grows, so it is at most that
/// much behind).
pub fn max_memory_used_mib() -> u64 {
    static LAST: Mutex<Option<(Instant, u64)>> = Mutex::new(None);
    let mut last = LAST.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some((at, mib)) = *last
        && at.elapsed() < MEMORY_SAMPLE_EVERY
    {
        return mib;
    }
    let mib = read_peak_mib();
    *last = Some((Instant::now(), mib));
    mib
}

/// How often [`max_memory_used_mib`] reads `/proc`.
pub const MEMORY_SAMPLE_EVERY: Duration = Duration::from_millis(100);

fn read_peak_mib() -> u64 {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return 0;
    };
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map(|kib| kib.div_ceil(1024))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_match_lambda_format() {
        assert_eq!(start_line("r1"), "START RequestId: r1 Version: $LATEST");
        assert_eq!(end_line("r1"), "END RequestId: r1");
        assert_eq!(
            report_line("r1", Duration::from_micros(12_345), 128, 18, None),
            "REPORT RequestId: r1\tDuration: 12.35 ms\tBilled Duration: 13 ms\tMemory Size: 128 MB\tMax Memory Used: 18 MB\t"
        );
        assert_eq!(
            report_line("r2", Duration::from_micros(10), 128, 18, None),
            "REPORT RequestId: r2\tDuration: 0.01 ms\tBilled Duration: 1 ms\tMemory Size: 128 MB\tMax Memory Used: 18 MB\t"
        );
        assert_eq!(
            report_line(
                "r3",
                Duration::from_millis(2),
                512,
                61,
                Some(Duration::from_micros(240_714))
            ),
            "REPORT RequestId: r3\tDuration: 2.00 ms\tBilled Duration: 2 ms\tMemory Size: 512 MB\tMax Memory Used: 61 MB\tInit Duration: 240.71 ms\t"
        );
    }

    #[test]
    fn peak_memory_is_read_from_proc() {
        assert!(max_memory_used_mib() > 0);
    }
}
