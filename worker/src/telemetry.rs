//! Logging: human-readable text on a terminal, JSON lines otherwise.
//!
//! Logs go to standard error. While a progress bar is drawn there, each log
//! line is printed above it (the bar is suspended for the write) so the two
//! never garble each other. Otherwise (Lambda mode excepted, see [`init`]),
//! lines are handed to a writer thread that writes them in batches, so the
//! per-invocation lines cost the runtime threads no system call; the
//! returned guard flushes them at exit.

use std::io::{IsTerminal, Write};
#[cfg(feature = "local")]
use std::sync::{Mutex, OnceLock, PoisonError};

#[cfg(feature = "local")]
use indicatif::ProgressBar;
use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::cli::LogFormat;

#[cfg(feature = "local")]
static BAR: OnceLock<Mutex<Option<ProgressBar>>> = OnceLock::new();

#[cfg(feature = "local")]
fn bar_slot() -> &'static Mutex<Option<ProgressBar>> {
    BAR.get_or_init(|| Mutex::new(None))
}

/// Routes log lines around `bar` until [`clear_progress_bar`].
#[cfg(feature = "local")]
pub fn set_progress_bar(bar: &ProgressBar) {
    *bar_slot().lock().unwrap_or_else(PoisonError::into_inner) = Some(bar.clone());
}

/// Stops routing log lines around a progress bar.
#[cfg(feature = "local")]
pub fn clear_progress_bar() {
    *bar_slot().lock().unwrap_or_else(PoisonError::into_inner) = None;
}

#[derive(Clone, Copy)]
struct StderrAroundBar;

struct LineWriter(Vec<u8>);

impl Write for LineWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        let write = || {
            let _ = std::io::stderr().lock().write_all(&self.0);
        };
        #[cfg(feature = "local")]
        {
            let bar = bar_slot()
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            if let Some(bar) = bar.filter(|bar| !bar.is_hidden()) {
                return bar.suspend(write);
            }
        }
        write()
    }
}

impl<'a> MakeWriter<'a> for StderrAroundBar {
    type Writer = LineWriter;
    fn make_writer(&'a self) -> Self::Writer {
        LineWriter(Vec::with_capacity(256))
    }
}

/// Lines the background writer holds before a logging thread waits.
const LOG_QUEUE_LINES: usize = 8192;

/// Whether logs will be JSON under `format`.
pub fn is_json(format: LogFormat) -> bool {
    match format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    }
}

/// The log filter: `RUST_LOG` when it is set and valid, else `default`.
///
/// `RUST_LOG` takes comma-separated `target=level` directives and bare
/// levels (`info`, `warn,shoal::platform=error`, `off`); a target matches
/// itself and every path below it; empty directives are skipped. Span
/// filters (`target[span{field=value}]=level`) are not supported: the
/// regular-expression engine they need cost a Lambda function about 50 of
/// its 380 start-up page faults. An unusable `RUST_LOG` is reported in the
/// second value, and the default applies.
pub fn log_filter(rust_log: Option<&str>, default: &str) -> (Targets, Option<String>) {
    let fallback = || directives(default).unwrap_or_else(|_| Targets::new());
    match rust_log.filter(|v| !v.trim().is_empty()) {
        None => (fallback(), None),
        Some(value) => match directives(value) {
            Ok(targets) => (targets, None),
            Err(e) => (
                fallback(),
                Some(format!(
                    "RUST_LOG {value:?} ignored ({e}); logging at {default:?} \
                     (RUST_LOG takes comma-separated target=level directives)"
                )),
            ),
        },
    }
}

fn directives(value: &str) -> Result<Targets, String> {
    let parts: Vec<&str> = value
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    if let Some(span) = parts.iter().find(|p| p.contains('[') && !p.contains("[{")) {
        return Err(format!("span filters such as {span:?} are not supported"));
    }
    parts.join(",").parse().map_err(|e| format!("{e}"))
}

/// Installs the global subscriber. `RUST_LOG` overrides `default_filter`
/// (see [`log_filter`]).
/// Also routes panics through the log, so JSON logs stay one object a line.
/// With `direct` false, lines are written by a background thread; keep the
/// returned guard alive until exit (dropping it flushes them). Use `direct`
/// with a progress bar on screen, and under Lambda, which freezes the
/// process as soon as an invocation is answered: a line still queued then
/// would show up an invocation late.
pub fn init(format: LogFormat, default_filter: &str, direct: bool) -> Option<WorkerGuard> {
    let rust_log = std::env::var("RUST_LOG").ok();
    let (filter, unusable) = log_filter(rust_log.as_deref(), default_filter);
    let (writer, guard) = if direct {
        (BoxMakeWriter::new(StderrAroundBar), None)
    } else {
        // Not lossy: a burst of lines waits for the writer rather than
        // being dropped. The queue's slots are allocated and touched up
        // front: the crate's default of 128,000 lines (4 MB, a thousand
        // page faults) took 2 ms of a worker's start-up; 8,192 lines hold
        // a second of REPORT lines at the fastest rate measured.
        let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
            .lossy(false)
            .buffered_lines_limit(LOG_QUEUE_LINES)
            .thread_name("shoal-log")
            .finish(std::io::BufWriter::with_capacity(
                64 * 1024,
                std::io::stderr(),
            ));
        (BoxMakeWriter::new(writer), Some(guard))
    };
    // The most verbose level any directive enables: tracing skips every
    // callsite above it without asking the filter (the SDK's and hyper's
    // debug and trace lines cost nothing at the default level).
    let most_verbose = filter
        .iter()
        .map(|(_, level)| level)
        .chain(filter.default_level())
        .max()
        .unwrap_or(tracing::level_filters::LevelFilter::OFF);
    let builder = tracing_subscriber::fmt()
        .with_max_level(most_verbose)
        .with_writer(writer);
    let installed = if is_json(format) {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .finish()
            .with(filter)
            .try_init()
    } else {
        builder
            .with_target(false)
            .with_ansi(std::io::stderr().is_terminal())
            .compact()
            .finish()
            .with(filter)
            .try_init()
    };
    if let Some(warning) = unusable.filter(|_| installed.is_ok()) {
        tracing::warn!("{warning}");
    }
    if installed.is_ok() {
        std::panic::set_hook(Box::new(|info| {
            let location = info
                .location()
                .map(|l| format!("{}:{}", l.file(), l.line()))
                .unwrap_or_default();
            let payload = crate::engine::panic_message(info.payload());
            tracing::error!(%location, panic = %payload, "panic");
        }));
    }
    guard
}

#[cfg(test)]
mod tests {
    use tracing::Level;

    use super::log_filter;

    fn enabled(rust_log: Option<&str>, target: &str, level: Level) -> bool {
        log_filter(rust_log, "info,shoal::platform=warn")
            .0
            .would_enable(target, &level)
    }

    #[test]
    fn rust_log_directives_choose_levels_per_target_prefix() {
        // The default: info, with the per-invocation lines held back.
        assert!(enabled(None, "shoal_worker::app", Level::INFO));
        assert!(!enabled(None, "shoal_worker::app", Level::DEBUG));
        assert!(!enabled(None, "shoal::platform", Level::INFO));
        let rust_log = Some("warn, shoal_worker=debug,,shoal::platform=info");
        assert!(enabled(rust_log, "shoal_worker::lambda", Level::DEBUG));
        assert!(!enabled(rust_log, "shoal_worker::lambda", Level::TRACE));
        assert!(enabled(rust_log, "shoal::platform", Level::INFO));
        assert!(!enabled(rust_log, "aws_smithy_runtime", Level::INFO));
        assert!(!enabled(Some("off"), "shoal_worker", Level::ERROR));
    }

    #[test]
    fn an_unusable_rust_log_is_reported_and_the_default_applies() {
        for bad in ["info=loud", "a=b=c", "shoal_worker[run]=debug"] {
            let (targets, warning) = log_filter(Some(bad), "info");
            let warning = warning.unwrap_or_else(|| panic!("{bad} accepted"));
            assert!(
                warning.contains(bad) && warning.contains("ignored"),
                "{warning}"
            );
            assert!(targets.would_enable("shoal_worker", &Level::INFO), "{bad}");
            assert!(
                !targets.would_enable("shoal_worker", &Level::DEBUG),
                "{bad}"
            );
        }
        // Blank is unset, not "log nothing".
        let (targets, warning) = log_filter(Some("  "), "info");
        assert!(warning.is_none());
        assert!(targets.would_enable("x", &Level::INFO));
    }
}
