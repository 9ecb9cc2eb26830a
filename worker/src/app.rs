//! The entry point a handler binary calls: parses the command line, sets up
//! logging, metrics and the async runtime, and runs the chosen mode.

use std::fmt::Display;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::cli::{Cli, Command, CommonArgs};
use crate::engine::{Engine, EngineConfig};
use crate::error::{Error, Result};
use crate::handler::{Handler, memory_budget_bytes};
use crate::http::{self, Readiness};
use crate::lambda;
use crate::local::{self, RunPaths};
use crate::metrics::Metrics;
use crate::queue::{self, AmqpOptions, AmqpQueue, Shutdown, SqsOptions, SqsQueue, Transport};
use crate::retry::RetryPolicy;
use crate::signals::Interrupts;
use crate::store::{LocalStore, Location, ObjectStore, S3Store, s3_client, sdk_config};
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
    let cli = if lambda::detected() {
        let argv0 = std::env::args_os().next().unwrap_or_else(|| "shoal".into());
        Cli::parse_args([argv0, "lambda".into()])
    } else {
        Cli::parse_args(std::env::args_os())
    };
    main_parsed(cli, init)
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
    let progress = matches!(&cli.command, Command::Run(args) if !args.no_progress)
        && std::io::stderr().is_terminal()
        && !telemetry::is_json(cli.common.log_format);
    // With a progress bar on screen, per-invocation lines would bury it;
    // under Lambda the service writes them itself.
    let default_filter = if progress || matches!(cli.command, Command::Lambda(_)) {
        "info,shoal::platform=warn"
    } else {
        "info"
    };
    let direct_logs = progress || matches!(cli.command, Command::Lambda(_));
    let _flush_logs_at_exit = telemetry::init(cli.common.log_format, default_filter, direct_logs);
    // Lambda runs one invocation at a time per process: a single-threaded
    // scheduler keeps an invocation's items on one thread (I/O still
    // overlaps; handlers put CPU work on the blocking pool, which uses every
    // vCPU) and starts faster. The other modes serve many messages at once.
    let mut builder = if matches!(cli.command, Command::Lambda(_)) {
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
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    ExitCode::from(code)
}

fn engine_config(common: &CommonArgs) -> EngineConfig {
    let concurrency = common.concurrency.map(|c| c as usize).unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let function_name = common.function_name.clone().unwrap_or_else(|| {
        std::env::current_exe()
            .ok()
            .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "shoal".into())
    });
    EngineConfig {
        timeout: common.timeout(),
        function_name,
        memory_mib: common.memory_mib,
        concurrency,
        retry: RetryPolicy {
            max_attempts: common.max_attempts,
            base_delay: std::time::Duration::from_millis(common.retry_base_delay_ms),
            max_delay: std::time::Duration::from_millis(common.retry_max_delay_ms),
        },
    }
}

/// Opens stores, loading the AWS configuration and building the S3 client
/// once, and only if needed.
struct Stores {
    force_path_style: Option<bool>,
    max_object_bytes: u64,
    allowed_buckets: Option<Vec<String>>,
    aws: Option<aws_config::SdkConfig>,
    s3: Option<aws_sdk_s3::Client>,
}

impl Stores {
    /// Stores whose inputs are read whole up to `--max-object-mib`, or the
    /// memory one invocation may use under `config`.
    fn new(common: &CommonArgs, config: &EngineConfig) -> Self {
        let max_object_bytes = common.max_object_mib.map_or_else(
            || {
                memory_budget_bytes(
                    config.memory_mib,
                    u32::try_from(config.concurrency).unwrap_or(u32::MAX),
                )
            },
            |mib| mib.saturating_mul(1024 * 1024),
        );
        Self {
            force_path_style: common.s3_force_path_style,
            max_object_bytes,
            allowed_buckets: common.allowed_buckets.as_ref().map(|buckets| {
                buckets
                    .iter()
                    .map(|b| b.trim().to_owned())
                    .filter(|b| !b.is_empty())
                    .collect()
            }),
            aws: None,
            s3: None,
        }
    }

    async fn aws(&mut self) -> aws_config::SdkConfig {
        if let Some(config) = &self.aws {
            return config.clone();
        }
        let config = sdk_config().await;
        self.aws = Some(config.clone());
        config
    }

    async fn s3(&mut self) -> aws_sdk_s3::Client {
        if let Some(client) = &self.s3 {
            return client.clone();
        }
        let force_path_style = self.force_path_style;
        let client = s3_client(&self.aws().await, force_path_style);
        self.s3 = Some(client.clone());
        client
    }

    async fn open(&mut self, location: &Location, exclude: &[PathBuf]) -> Arc<dyn ObjectStore> {
        match location {
            Location::Local(folder) => Arc::new(
                LocalStore::new(folder)
                    .excluding(exclude)
                    .with_max_object_bytes(self.max_object_bytes)
                    .with_allowed_buckets(self.allowed_buckets.clone()),
            ),
            Location::S3 { bucket, prefix } => Arc::new(
                S3Store::new(self.s3().await, bucket, prefix)
                    .with_max_object_bytes(self.max_object_bytes)
                    .with_allowed_buckets(self.allowed_buckets.clone()),
            ),
        }
    }

    /// The store `location` names, or, without one, S3 for object
    /// references that name their own bucket (S3 events).
    async fn input_or_any_bucket(&mut self, location: Option<&Location>) -> Arc<dyn ObjectStore> {
        match location {
            Some(location) => self.open(location, &[]).await,
            None => Arc::new(
                S3Store::any_bucket(self.s3().await)
                    .with_max_object_bytes(self.max_object_bytes)
                    .with_allowed_buckets(self.allowed_buckets.clone()),
            ),
        }
    }

    /// The store `location` names, if any.
    async fn open_optional(&mut self, location: Option<&Location>) -> Option<Arc<dyn ObjectStore>> {
        match location {
            Some(location) => Some(self.open(location, &[]).await),
            None => None,
        }
    }

    /// An SQS client whose calls outlast a long poll of `wait`.
    async fn sqs(&mut self, wait: Duration) -> aws_sdk_sqs::Client {
        let timeouts = aws_sdk_sqs::config::timeout::TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(5))
            .operation_attempt_timeout(wait + Duration::from_secs(10))
            .build();
        let config = aws_sdk_sqs::config::Builder::from(&self.aws().await)
            .timeout_config(timeouts)
            .build();
        aws_sdk_sqs::Client::from_conf(config)
    }
}

async fn run<H, E, F>(cli: Cli, init: F, progress: bool, started: Instant) -> Result<u8>
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
    let config = engine_config(&cli.common);
    match cli.command {
        Command::Run(args) => {
            let paths = RunPaths::from_args(&args);
            let mut stores = Stores::new(&cli.common, &config);
            let input = stores.open(&args.input, &paths.excluded(&args)).await;
            let output = stores.open(&args.output, &[]).await;
            let engine = Engine::new(handler, input, Some(output), config, metrics);
            ready.set(true);
            let summary = local::run(engine, &paths, &args, progress).await?;
            ready.set(false);
            print!("{summary}");
            tracing::info!(
                total = summary.total,
                succeeded = summary.succeeded + summary.skipped_succeeded,
                dead_lettered = summary.dead_lettered_total(),
                failed_invocations = summary.failed_invocations,
                remaining = summary.remaining,
                elapsed_s = summary.elapsed.as_secs_f64(),
                "batch summary"
            );
            Ok(if summary.interrupted {
                exit::INTERRUPTED
            } else if let Some(tolerated) = args.tolerance()
                && !summary.within_tolerance(tolerated)
            {
                tracing::error!(
                    dead_lettered = summary.dead_lettered_total(),
                    total = summary.total,
                    tolerated_percent = tolerated,
                    "{:.1}% of the items dead-lettered, above the tolerated {tolerated}%",
                    summary.dead_letter_percent(),
                );
                exit::ITEMS_FAILED
            } else {
                exit::OK
            })
        }
        Command::Worker(args) => {
            let mut stores = Stores::new(&cli.common, &config);
            let input = stores.input_or_any_bucket(args.input.as_ref()).await;
            let output = stores.open_optional(args.output.as_ref()).await;
            let wait = Duration::from_secs(u64::from(args.wait_time));
            // Receiving is latency-bound: one receive loop per concurrent
            // invocation (up to 8), each with a batch of 10 in flight, keeps
            // the invocations fed without holding much more than that.
            let receivers = args
                .receivers
                .map_or(config.concurrency.clamp(1, 8), |n| n as usize);
            let max_in_flight = args.max_messages_in_flight.map_or(
                (2 * config.concurrency).max(receivers * queue::MAX_BATCH),
                |n| n as usize,
            );
            let settings = queue::Settings {
                receivers,
                max_in_flight,
                grace: Duration::from_secs_f64(args.shutdown_grace),
                started,
                record_results: args.record_results.clone(),
            };
            if is_amqp(&args.queue) {
                if config.timeout > Duration::from_secs(1800) {
                    tracing::warn!(
                        timeout_s = config.timeout.as_secs_f64(),
                        "items may run past RabbitMQ's default consumer_timeout (30 min): unless the broker's is raised, it closes the channel and redelivers the message"
                    );
                }
                let transport = AmqpQueue::connect(AmqpOptions {
                    url: args.queue.clone(),
                    prefetch: u16::try_from(config.concurrency).unwrap_or(u16::MAX),
                    wait_time: wait,
                    max_attempts: config.retry.max_attempts,
                })
                .await?;
                let engine = Engine::new(handler, input, output, config, metrics);
                return consume(engine, transport, settings, ready).await;
            }
            let sqs = stores.sqs(wait).await;
            let transport = SqsQueue::connect(
                sqs,
                SqsOptions {
                    queue_url: args.queue.clone(),
                    dead_letter_queue: args.dead_letter_queue.clone(),
                    visibility: args
                        .visibility_timeout
                        .map(|s| Duration::from_secs(u64::from(s))),
                    wait_time: wait,
                    max_attempts: config.retry.max_attempts,
                },
            )
            .await?;
            if transport.visibility() < config.timeout.saturating_mul(6) {
                tracing::info!(
                    visibility_s = transport.visibility().as_secs_f64(),
                    timeout_s = config.timeout.as_secs_f64(),
                    "the visibility timeout is below 6x the invocation timeout (AWS's advice); leases are extended while items run"
                );
            }
            let engine = Engine::new(handler, input, output, config, metrics);
            consume(engine, transport, settings, ready).await
        }
        Command::Lambda(args) => {
            let mut config = config;
            // The invocation's deadline bounds each item; SHOAL_TIMEOUT only
            // if set.
            let set = std::env::var_os("SHOAL_TIMEOUT").is_some();
            let timeout = crate::cli::lambda_timeout(set.then_some(config.timeout));
            if set && timeout < config.timeout {
                tracing::warn!(
                    timeout_s = config.timeout.as_secs_f64(),
                    "SHOAL_TIMEOUT is above Lambda's 900 s; items are bounded by 900 s in Lambda mode"
                );
            }
            config.timeout = timeout;
            if let Some(name) = std::env::var("AWS_LAMBDA_FUNCTION_NAME")
                .ok()
                .filter(|_| cli.common.function_name.is_none())
            {
                config.function_name = name;
            }
            if let Some(mib) = std::env::var("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")
                .ok()
                .and_then(|v| v.parse().ok())
            {
                config.memory_mib = mib;
            }
            let mut stores = Stores::new(&cli.common, &config);
            let input = stores.input_or_any_bucket(args.input.as_ref()).await;
            let output = stores.open_optional(args.output.as_ref()).await;
            tracing::debug!(
                init_ms = started.elapsed().as_secs_f64() * 1000.0,
                "lambda init done"
            );
            let push = match &args.pushgateway_url {
                Some(url) => Some(lambda::Pushgateway::new(
                    url,
                    &args.pushgateway_job,
                    &config.function_name,
                    &lambda::instance_id(),
                    Duration::from_secs_f64(args.pushgateway_timeout),
                )?),
                None => None,
            };
            let engine = Engine::new(handler, input, output, config, metrics);
            lambda::run(engine, push).await?;
            Ok(exit::OK)
        }
        Command::Invoke(args) => {
            let mut stores = Stores::new(&cli.common, &config);
            let input = stores.open(&args.input, &[]).await;
            let output = stores.open_optional(args.output.as_ref()).await;
            let engine = Engine::new(handler, input, output, config, metrics);
            ready.set(true);
            let ok = local::invoke(engine, &args.event).await?;
            Ok(if ok { exit::OK } else { exit::ITEMS_FAILED })
        }
    }
}

/// Whether `--queue` names an AMQP queue rather than an SQS queue URL.
fn is_amqp(queue: &str) -> bool {
    queue.starts_with("amqp://") || queue.starts_with("amqps://")
}

/// Runs the queue worker on `transport` until a signal drains it.
async fn consume<H: Handler, T: Transport>(
    engine: Engine<H>,
    transport: T,
    settings: queue::Settings,
    ready: Readiness,
) -> Result<u8> {
    let shutdown = Shutdown::default();
    let mut signals = Interrupts::listen()?;
    let watch = shutdown.clone();
    let not_ready = ready.clone();
    let listener = tokio::spawn(async move {
        signals.next().await;
        not_ready.set(false);
        tracing::warn!("shutdown signal: draining (send it again to stop now)");
        watch.drain.cancel();
        signals.next().await;
        tracing::warn!("second signal: stopping now");
        watch.stop.cancel();
    });
    ready.set(true);
    queue::run(engine, Arc::new(transport), settings, shutdown).await;
    ready.set(false);
    listener.abort();
    Ok(exit::OK)
}
