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
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::writer::BoxMakeWriter;

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

/// Installs the global subscriber. `RUST_LOG` overrides `default_filter`.
/// Also routes panics through the log, so JSON logs stay one object a line.
/// With `direct` false, lines are written by a background thread; keep the
/// returned guard alive until exit (dropping it flushes them). Use `direct`
/// with a progress bar on screen, and under Lambda, which freezes the
/// process as soon as an invocation is answered: a line still queued then
/// would show up an invocation late.
pub fn init(format: LogFormat, default_filter: &str, direct: bool) -> Option<WorkerGuard> {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
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
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    let installed = if is_json(format) {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init()
    } else {
        builder
            .with_target(false)
            .with_ansi(std::io::stderr().is_terminal())
            .compact()
            .try_init()
    };
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
