//! The entry point a handler binary calls: parses the command line, sets up
//! logging, metrics and the async runtime, and runs the chosen mode.

use std::fmt::Display;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::cli::{Cli, Command};
use crate::error::{Error, Result};
use crate::handler::Handler;
use crate::http::{self, Readiness};
#[cfg(feature = "lambda")]
use crate::lambda;
#[cfg(feature = "local")]
use crate::local;
use crate::metrics::Metrics;
#[cfg(any(feature = "sqs", feature = "amqp"))]
use crate::queue;
use crate::setup::Setup;
use crate::telemetry;

/// Process exit codes.
pub mod exit {
    /// Everything succeeded (or stayed within the tolerated failures).
    pub const OK: u8 = 0;
    /// The run itself failed (bad configuration, unreadable folders).
    pub const ERROR: u8 = 1;
    /// Usage error (clap's own code).
    pub const USAGE: u8 = 2;
    /// Items were dead-lettered beyond `--tolerated-failure-percent` (any,
    /// with `--strict`), or an `invoke` failed.
    pub const ITEMS_FAILED: u8 = 3;
    /// Interrupted by Ctrl-C or SIGTERM; rerun to resume.
    pub const INTERRUPTED: u8 = 130;
}

/// Runs `handler` as a shoal binary. A handler binary's `main` is one line:
///
/// ```no_run
/// use shoal_worker::{Context, HandlerError, Item, handler_fn};
/// use shoal_worker::payload::Json;
///
/// async fn double(item: Item<Json<u64>>, _ctx: Context) -> Result<Json<u64>, HandlerError> {
///     Ok(Json(item.payload.0 * 2))
/// }
///
/// fn main() -> std::process::ExitCode {
///     shoal_worker::main(handler_fn(double))
/// }
/// ```
pub fn main<H: Handler>(handler: H) -> ExitCode {
    main_with(move || Ok::<_, std::convert::Infallible>(handler))
}

/// Like [`main`], with a fallible initialiser that builds the handler once
/// (the Lambda "init" phase: read configuration, build shared clients).
pub fn main_with<H, E, F>(init: F) -> ExitCode
where
    H: Handler,
    E: Display,
    F: FnOnce() -> Result<H, E>,
{
    // Under Lambda (or an emulator) the binary gets no arguments: its
    // configuration is the function's environment.
    #[cfg(feature = "lambda")]
    if lambda::detected() {
        let argv0 = std::env::args_os().next().unwrap_or_else(|| "shoal".into());
        return main_parsed(Cli::parse_lambda(argv0), init);
    }
    main_parsed(Cli::parse_args(std::env::args_os()), init)
}

/// Like [`main_with`], for a command line the caller parsed (a binary that
/// takes more than shoal's own arguments, such as `shoal-host`).
pub fn main_parsed<H, E, F>(cli: Cli, init: F) -> ExitCode
where
    H: Handler,
    E: Display,
    F: FnOnce() -> Result<H, E>,
{
    let started = Instant::now();
    let progress = cli.command.wants_progress()
        && std::io::stderr().is_terminal()
        && !telemetry::is_json(cli.common.log_format);
    // With a progress bar on screen, per-invocation lines would bury it;
    // under Lambda the service writes them itself.
    let under_lambda = cli.command.is_lambda();
    let default_filter = if progress || under_lambda {
        "info,shoal::platform=warn"
    } else {
        "info"
    };
    let direct_logs = progress || under_lambda;
    let _flush_logs_at_exit = telemetry::init(cli.common.log_format, default_filter, direct_logs);
    // Lambda runs one invocation at a time per process: a single-threaded
    // scheduler keeps an invocation's items on one thread (I/O still
    // overlaps; handlers put CPU work on the blocking pool, which uses every
    // vCPU) and starts faster. The other modes serve many messages at once.
    let mut builder = if under_lambda {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(exit::ERROR);
        }
    };
    let code = runtime.block_on(async {
        match run(cli, init, progress, started).await {
            Ok(code) => code,
            Err(e) => {
                tracing::error!("{e}");
                exit::ERROR
            }
        }
    });
    // Blocking handler work cut short by a second Ctrl-C must not hold the
    // process open.
    runtime.shutdown_timeout(Duration::from_secs(1));
    ExitCode::from(code)
}

async fn run<H, E, F>(
    cli: Cli,
    init: F,
    #[cfg_attr(
        not(feature = "local"),
        expect(unused_variables, reason = "only `run` draws a progress bar")
    )]
    progress: bool,
    started: Instant,
) -> Result<u8>
where
    H: Handler,
    E: Display,
    F: FnOnce() -> Result<H, E>,
{
    let metrics = Metrics::new().map_err(|e| Error::Metrics(e.to_string()))?;
    let ready = Readiness::default();
    let shutdown = CancellationToken::new();
    let _stop_server = shutdown.clone().drop_guard();
    if let Some(addr) = cli.common.metrics_addr {
        http::serve(addr, metrics.clone(), ready.clone(), shutdown.clone()).await?;
    }
    let init_started = Instant::now();
    let handler = Arc::new(init().map_err(|e| Error::Init(e.to_string()))?);
    tracing::debug!(
        init_ms = init_started.elapsed().as_secs_f64() * 1000.0,
        "handler initialised"
    );
    let under_lambda = cli.command.is_lambda();
    let setup = Setup::new(&cli.common, under_lambda, metrics, ready, started);
    match cli.command {
        #[cfg(feature = "local")]
        Command::Run(args) => local::run_mode(handler, setup, args.options(progress)).await,
        #[cfg(feature = "local")]
        Command::Invoke(args) => {
            local::invoke_mode(
                handler,
                setup,
                &args.input,
                args.output.as_ref(),
                &args.event,
            )
            .await
        }
        #[cfg(any(feature = "sqs", feature = "amqp"))]
        Command::Worker(args) => queue::worker_mode(handler, setup, &args).await,
        #[cfg(feature = "lambda")]
        Command::Lambda(args) => lambda::lambda_mode(handler, setup, &args).await,
    }
}
