//! Command line of every shoal handler binary. Each flag can also be set by
//! an environment variable `SHOAL_<FLAG>` (`--output` <-> `SHOAL_OUTPUT`):
//! that is how the operator's pods and Lambda functions configure it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use shoal_protocol::env as vars;

use crate::platform::InvocationLogs;
use crate::store::Location;

/// A shoal batch handler.
#[derive(Debug, Parser)]
#[command(
    version,
    about = "A shoal batch handler: process a folder (run), consume a queue (worker) or run one event (invoke).",
    long_about = None,
    propagate_version = true
)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
    /// Settings shared by every mode.
    #[command(flatten)]
    pub common: CommonArgs,
}

impl Cli {
    /// The command line, with the values of environment variables left out
    /// of `--help` (`SHOAL_QUEUE` may hold a broker's password).
    pub fn command_without_env_values() -> clap::Command {
        use clap::CommandFactory;
        hide_env_values(Self::command())
    }

    /// Parses `args`, exiting with clap's usage error or help as `parse`
    /// does.
    pub fn parse_args<I, T>(args: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        use clap::FromArgMatches;
        let mut command = Self::command_without_env_values();
        // Matched in place: cloning the whole command first showed in the
        // profile of a Lambda cold start.
        let mut matches = command
            .try_get_matches_from_mut(args)
            .unwrap_or_else(|e| e.exit());
        Self::from_arg_matches_mut(&mut matches).unwrap_or_else(|e| e.format(&mut command).exit())
    }

    /// The settings of a Lambda function: its variables (`SHOAL_*`), as
    /// `lambda` reads them, exiting with clap's error for a bad value.
    ///
    /// Under Lambda there is no command line. The command built here holds
    /// only the common and the Lambda settings, as one flat command: no
    /// other mode's arguments, no subcommand, nothing to propagate (the
    /// whole command line was a fifth of a cold start's instructions).
    #[cfg(feature = "lambda")]
    pub fn parse_lambda(argv0: std::ffi::OsString) -> Self {
        Self::try_parse_lambda_from([argv0]).unwrap_or_else(|e| e.exit())
    }

    /// [`Cli::parse_lambda`] over `args` (the first is the binary's name).
    #[cfg(feature = "lambda")]
    pub fn try_parse_lambda_from<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        use clap::FromArgMatches;
        let command = clap::Command::new("shoal");
        // Global arguments are for subcommands, and there is none here.
        let mut command = LambdaArgs::augment_args(CommonArgs::augment_args(command))
            .mut_args(|arg| arg.global(false));
        let mut matches = command.try_get_matches_from_mut(args)?;
        let common =
            CommonArgs::from_arg_matches_mut(&mut matches).map_err(|e| e.format(&mut command))?;
        let lambda =
            LambdaArgs::from_arg_matches_mut(&mut matches).map_err(|e| e.format(&mut command))?;
        Ok(Self {
            command: Command::Lambda(lambda),
            common,
        })
    }
}

fn hide_env_values(command: clap::Command) -> clap::Command {
    command
        .mut_args(|arg| arg.hide_env_values(true))
        .mut_subcommands(hide_env_values)
}

/// The modes of a handler binary; each exists when its cargo feature is
/// on (`local`: run and invoke; `sqs` or `amqp`: worker; `lambda`).
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Process every file of a folder on this machine (no cloud, no cluster).
    #[cfg(feature = "local")]
    Run(RunArgs),
    /// Consume an SQS or RabbitMQ queue until SIGTERM: what the operator's
    /// pods run.
    #[cfg(any(feature = "sqs", feature = "amqp"))]
    Worker(WorkerArgs),
    /// Serve the Lambda Runtime API (chosen automatically when
    /// AWS_LAMBDA_RUNTIME_API is set; configured by SHOAL_* variables).
    #[cfg(feature = "lambda")]
    #[command(hide = true)]
    Lambda(LambdaArgs),
    /// Run the handler once on one event (a chunk, an S3 event or an object
    /// reference such as {"key": "cat.jpg"}) and print the result.
    #[cfg(feature = "local")]
    Invoke(InvokeArgs),
}

impl Command {
    /// Whether this is Lambda mode (one invocation at a time, Lambda's own
    /// log lines).
    pub fn is_lambda(&self) -> bool {
        #[cfg(feature = "lambda")]
        return matches!(self, Self::Lambda(_));
        #[cfg(not(feature = "lambda"))]
        false
    }

    /// Whether a progress bar was asked for (`run` without
    /// `--no-progress`); it is drawn on a terminal only.
    pub fn wants_progress(&self) -> bool {
        #[cfg(feature = "local")]
        return matches!(self, Self::Run(args) if !args.no_progress);
        #[cfg(not(feature = "local"))]
        false
    }
}

/// Runtime settings shared by every mode.
#[derive(Debug, Args)]
pub struct CommonArgs {
    /// Invocations running at once [default: number of CPUs].
    #[arg(long, global = true, env = vars::CONCURRENCY, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub concurrency: Option<u32>,

    /// Per-invocation timeout in seconds, 0.001 to 43,200 (12 h, SQS's
    /// longest lease; leases are extended while items run). Lambda mode
    /// keeps Lambda's 900 s.
    #[arg(long, global = true, env = vars::TIMEOUT, default_value_t = 60.0, value_parser = parse_timeout)]
    pub timeout: f64,

    /// Attempts per item, the first included, before it is dead-lettered.
    #[arg(long, global = true, env = vars::MAX_ATTEMPTS, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub max_attempts: u32,

    /// First retry waits up to this many milliseconds; doubles per retry
    /// (full jitter), capped by --retry-max-delay-ms.
    #[arg(
        long,
        global = true,
        env = "SHOAL_RETRY_BASE_DELAY_MS",
        default_value_t = 200
    )]
    pub retry_base_delay_ms: u64,

    /// Upper bound of one retry wait, in milliseconds.
    #[arg(
        long,
        global = true,
        env = "SHOAL_RETRY_MAX_DELAY_MS",
        default_value_t = 30_000
    )]
    pub retry_max_delay_ms: u64,

    /// Memory size reported to the handler and in REPORT lines, in MiB
    /// (Lambda's memory setting; 128-10240).
    #[arg(long, global = true, env = vars::MEMORY_MIB, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(128..=10_240))]
    pub memory_mib: u32,

    /// Largest input object read whole, in MiB; a larger one is
    /// dead-lettered with its size [default: the memory one invocation may
    /// use: (memory - 64 MiB reserve) / concurrency].
    #[arg(long, global = true, env = "SHOAL_MAX_OBJECT_MIB", value_parser = clap::value_parser!(u64).range(1..=1_048_576))]
    pub max_object_mib: Option<u64>,

    /// Buckets an item or event may name, besides the --input bucket
    /// (comma-separated). An item naming another bucket is dead-lettered.
    /// Without it, a worker with an S3 --input reads only that bucket, one
    /// without --input (S3 events) any bucket its credentials reach.
    #[arg(
        long,
        global = true,
        env = vars::ALLOWED_BUCKETS,
        value_delimiter = ','
    )]
    pub allowed_buckets: Option<Vec<String>>,

    /// Function name reported to the handler [default: the binary's name].
    #[arg(long, global = true, env = vars::FUNCTION_NAME)]
    pub function_name: Option<String>,

    /// Serve /metrics, /healthz and /readyz on this address (e.g. 127.0.0.1:9090).
    #[arg(long, global = true, env = vars::METRICS_ADDR)]
    pub metrics_addr: Option<SocketAddr>,

    /// S3 path-style addressing [default: on with a custom S3 endpoint:
    /// AWS_ENDPOINT_URL[_S3], or endpoint_url in the AWS config file].
    #[arg(long, global = true, env = "SHOAL_S3_FORCE_PATH_STYLE")]
    pub s3_force_path_style: Option<bool>,

    /// Log format: human-readable text on a terminal, JSON otherwise.
    #[arg(long, global = true, env = vars::LOG_FORMAT, value_enum, default_value_t = LogFormat::Auto)]
    pub log_format: LogFormat,

    /// Which of Lambda's per-invocation lines to write: all three (START,
    /// END, REPORT), the REPORT line alone, or none. Under Lambda the
    /// service writes its own and shoal writes none.
    #[arg(long, global = true, env = "SHOAL_INVOCATION_LOGS", value_enum, default_value_t = InvocationLogs::Report)]
    pub invocation_logs: InvocationLogs,
}

impl CommonArgs {
    /// The timeout as a duration.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs_f64(self.timeout)
    }
}

/// Parses a number within `range`, naming `what` it should be.
fn parse_within(s: &str, range: std::ops::RangeInclusive<f64>, what: &str) -> Result<f64, String> {
    let value: f64 = s.parse().map_err(|_| format!("{s:?} is not {what}"))?;
    if !range.contains(&value) {
        return Err(format!(
            "{value} is outside {}-{}",
            range.start(),
            range.end()
        ));
    }
    Ok(value)
}

/// The longest `--timeout`: 12 h, as long as an SQS lease can be extended.
pub const MAX_TIMEOUT_SECONDS: f64 = 43_200.0;

/// The longest timeout in Lambda mode: Lambda's own limit.
pub const LAMBDA_MAX_TIMEOUT_SECONDS: f64 = 900.0;

/// The per-item timeout in Lambda mode: `configured` (`SHOAL_TIMEOUT`),
/// at most Lambda's 900 s; 900 s when unset (the invocation's deadline
/// bounds items then).
pub fn lambda_timeout(configured: Option<Duration>) -> Duration {
    let max = Duration::from_secs_f64(LAMBDA_MAX_TIMEOUT_SECONDS);
    configured.map_or(max, |t| t.min(max))
}

fn parse_timeout(s: &str) -> Result<f64, String> {
    parse_within(s, 0.001..=MAX_TIMEOUT_SECONDS, "a number of seconds")
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Text on a terminal, JSON otherwise.
    Auto,
    /// Human-readable text.
    Text,
    /// One JSON object per line.
    Json,
}

/// `run`: a whole batch over a local folder.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Folder or s3://bucket/prefix to read items from (every object below
    /// it, hidden ones excepted).
    #[arg(long, env = vars::INPUT)]
    pub input: Location,

    /// Folder or s3://bucket/prefix to write outputs to.
    #[arg(long, env = vars::OUTPUT)]
    pub output: Location,

    /// Items per chunk message on the embedded queue.
    #[arg(long, env = "SHOAL_ITEMS_PER_CHUNK", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub items_per_chunk: u32,

    /// Process only the keys this file lists (keys of --input, in the
    /// file's order, each once): `.csv` (a header row with a `key`
    /// column), `.jsonl`/`.ndjson` (`{"key": ...}` or a string per line),
    /// anything else one key per line. A key that is not an item of --input
    /// refuses the run before anything runs.
    #[arg(long, env = "SHOAL_INPUT_LIST")]
    pub input_list: Option<PathBuf>,

    /// Where the journal and dead letters live [default: OUTPUT/.shoal for
    /// a folder, ./.shoal-state/BUCKET/PREFIX for S3].
    #[arg(long, env = "SHOAL_STATE_DIR")]
    pub state_dir: Option<PathBuf>,

    /// Exit with status 3 when more than this percentage of the items is
    /// dead-lettered [default: dead letters are reported, exit status 0].
    #[arg(long, env = "SHOAL_TOLERATED_FAILURE_PERCENT", value_parser = parse_percent)]
    pub tolerated_failure_percent: Option<f64>,

    /// Exit with status 3 when any item is dead-lettered (the same as
    /// --tolerated-failure-percent 0).
    #[arg(
        long,
        env = "SHOAL_STRICT",
        conflicts_with = "tolerated_failure_percent"
    )]
    pub strict: bool,

    /// Process items that earlier runs dead-lettered again.
    #[arg(long, env = "SHOAL_RETRY_DEAD_LETTERS")]
    pub retry_dead_letters: bool,

    /// Do not draw a progress bar.
    #[arg(long, env = "SHOAL_NO_PROGRESS")]
    pub no_progress: bool,
}

#[cfg(feature = "local")]
impl RunArgs {
    /// The run these arguments ask for; `progress`: a progress bar can be
    /// drawn.
    pub fn options(&self, progress: bool) -> crate::local::RunOptions {
        crate::local::RunOptions {
            input: self.input.clone(),
            output: self.output.clone(),
            items_per_chunk: self.items_per_chunk as usize,
            input_list: self.input_list.clone(),
            state_dir: self.state_dir.clone(),
            tolerated_failure_percent: self.tolerance(),
            retry_dead_letters: self.retry_dead_letters,
            progress,
        }
    }

    /// The percentage of dead-lettered items above which the run exits
    /// with status 3; `None` when dead letters only get reported.
    pub fn tolerance(&self) -> Option<f64> {
        if self.strict {
            Some(0.0)
        } else {
            self.tolerated_failure_percent
        }
    }
}

fn parse_percent(s: &str) -> Result<f64, String> {
    parse_within(s, 0.0..=100.0, "a percentage")
}

/// `worker`: a long-lived queue consumer.
#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// Queue to consume: an SQS queue URL (standard or FIFO), or
    /// amqp[s]://user:password@host:port/vhost/queue for RabbitMQ.
    #[arg(long, env = vars::QUEUE)]
    pub queue: String,

    /// Folder or s3://bucket/prefix that object keys without a bucket are
    /// read from (S3 event items name their own bucket).
    #[arg(long, env = vars::INPUT)]
    pub input: Option<Location>,

    /// Folder or s3://bucket/prefix to write outputs to; without it outputs
    /// are discarded.
    #[arg(long, env = vars::OUTPUT)]
    pub output: Option<Location>,

    /// Dead-letter queue URL [default: the queue's redrive policy target].
    #[arg(long, env = "SHOAL_DEAD_LETTER_QUEUE")]
    pub dead_letter_queue: Option<String>,

    /// Lease of a received message in seconds [default: the queue's
    /// visibility timeout]; extended at half-time while items run.
    #[arg(long, env = "SHOAL_VISIBILITY_TIMEOUT", value_parser = clap::value_parser!(u32).range(1..=43_200))]
    pub visibility_timeout: Option<u32>,

    /// Long-poll wait per receive call, in seconds.
    #[arg(long, env = "SHOAL_WAIT_TIME", default_value_t = 20, value_parser = clap::value_parser!(u32).range(0..=20))]
    pub wait_time: u32,

    /// Messages held (received, not yet settled) at most [default: 10 per
    /// receive loop, at least twice the concurrency].
    #[arg(long, env = "SHOAL_MAX_MESSAGES_IN_FLIGHT", value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_messages_in_flight: Option<u32>,

    /// Receive loops polling at once; each receives 10 messages at a time
    /// [default: the concurrency, at most 8].
    #[arg(long, env = "SHOAL_RECEIVERS", value_parser = clap::value_parser!(u32).range(1..=64))]
    pub receivers: Option<u32>,

    /// Seconds that started invocations may run on after SIGTERM before
    /// they are cut short and their messages given back (keep it below the
    /// pod's terminationGracePeriodSeconds).
    #[arg(long, env = vars::SHUTDOWN_GRACE, default_value_t = 25.0, value_parser = parse_grace)]
    pub shutdown_grace: f64,

    /// Before settling a shoal chunk, write what became of its items (one
    /// JSON Lines part under `<output>/_shoal/results/parts/<RUN>/`) for
    /// the BatchJob's failure report; needs --output. The operator sets it
    /// to the job's uid.
    #[arg(
        long,
        env = vars::RECORD_RESULTS,
        value_name = "RUN",
        requires = "output"
    )]
    pub record_results: Option<String>,
}

fn parse_grace(s: &str) -> Result<f64, String> {
    parse_within(s, 0.0..=3600.0, "a number of seconds")
}

/// Lambda mode, configured from the function's environment.
#[derive(Debug, Args)]
pub struct LambdaArgs {
    /// Folder or s3://bucket/prefix that object keys without a bucket are
    /// read from (S3 event items name their own bucket).
    #[arg(long, env = vars::INPUT)]
    pub input: Option<Location>,

    /// s3://bucket/prefix to write outputs to; without it outputs are
    /// returned, not stored.
    #[arg(long, env = vars::OUTPUT)]
    pub output: Option<Location>,

    /// Prometheus Pushgateway (http(s)://host:port) to push the metrics to
    /// at the end of each invocation; Lambda has no scrape target.
    #[arg(long, env = "SHOAL_PUSHGATEWAY_URL")]
    pub pushgateway_url: Option<String>,

    /// `job` label of the pushed group.
    #[arg(long, env = "SHOAL_PUSHGATEWAY_JOB", default_value = "shoal")]
    pub pushgateway_job: String,

    /// Seconds a push may take before it is abandoned (the invocation
    /// still succeeds).
    #[arg(long, env = "SHOAL_PUSHGATEWAY_TIMEOUT", default_value = "2", value_parser = parse_push_timeout)]
    pub pushgateway_timeout: f64,
}

fn parse_push_timeout(s: &str) -> Result<f64, String> {
    parse_within(s, 0.001..=60.0, "a number of seconds")
}

/// `invoke`: one event, once.
#[derive(Debug, Args)]
pub struct InvokeArgs {
    /// JSON event file, or - for standard input.
    #[arg(long, env = "SHOAL_EVENT")]
    pub event: PathBuf,

    /// Folder or s3://bucket/prefix that object keys are read from.
    #[arg(long, env = vars::INPUT, default_value = ".")]
    pub input: Location,

    /// Folder or s3://bucket/prefix to write outputs to; without it outputs
    /// are described, not stored.
    #[arg(long, env = vars::OUTPUT)]
    pub output: Option<Location>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    /// Under Lambda the flat command reads what `lambda` reads, and
    /// refuses what it refuses.
    #[cfg(feature = "lambda")]
    #[test]
    fn lambda_settings_parse_as_the_lambda_command_does() {
        let settings = [
            "--timeout",
            "30",
            "--memory-mib",
            "2048",
            "--output",
            "s3://thumbs/out",
            "--allowed-buckets",
            "a,b",
            "--pushgateway-url",
            "http://gw:9091",
            "--invocation-logs",
            "none",
        ];
        let flat = Cli::try_parse_lambda_from(std::iter::once("t").chain(settings)).unwrap();
        let full = Cli::try_parse_from(["t", "lambda"].into_iter().chain(settings)).unwrap();
        assert_eq!(format!("{flat:?}"), format!("{full:?}"));
        assert!(flat.command.is_lambda());
        assert_eq!(flat.common.timeout(), Duration::from_secs(30));
        let defaults = Cli::try_parse_lambda_from(["t"]).unwrap();
        assert_eq!(
            format!("{defaults:?}"),
            format!("{:?}", Cli::try_parse_from(["t", "lambda"]).unwrap())
        );
        for (flag, bad) in [
            ("--timeout", "soon"),
            ("--memory-mib", "64"),
            ("--pushgateway-timeout", "61"),
            ("--log-format", "xml"),
        ] {
            let error = Cli::try_parse_lambda_from(["t", flag, bad]).unwrap_err();
            assert!(error.to_string().contains(bad), "{flag} {bad}: {error}");
        }
    }

    #[cfg(feature = "local")]
    #[test]
    fn flags_parse_and_validate() {
        let cli = Cli::try_parse_from([
            "t",
            "run",
            "--input",
            "in",
            "--output",
            "out",
            "--concurrency",
            "4",
            "--timeout",
            "2.5",
        ])
        .unwrap();
        assert_eq!(cli.common.concurrency, Some(4));
        assert_eq!(cli.common.timeout(), Duration::from_millis(2500));
        let with = |flag: &str, value: &str| {
            Cli::try_parse_from(["t", "run", "--input", "i", "--output", "o", flag, value])
        };
        assert!(
            with("--timeout", "3600").is_ok(),
            "items past Lambda's limit"
        );
        assert!(with("--timeout", "43201").is_err());
        // The same binary as a Lambda function keeps Lambda's limit.
        let secs = Duration::from_secs;
        assert_eq!(lambda_timeout(Some(secs(3600))), secs(900));
        assert_eq!(lambda_timeout(Some(secs(30))), secs(30));
        assert_eq!(lambda_timeout(None), secs(900));
        assert!(with("--timeout", "soon").is_err());
        assert!(with("--tolerated-failure-percent", "101").is_err());
        assert!(with("--tolerated-failure-percent", "12.5").is_ok());
        let strict = |extra: &[&str]| {
            let mut args = vec!["t", "run", "--input", "i", "--output", "o"];
            args.extend_from_slice(extra);
            Cli::try_parse_from(args).map(|cli| match cli.command {
                Command::Run(run) => run.tolerance(),
                _ => None,
            })
        };
        assert_eq!(
            strict(&[]).ok(),
            Some(None),
            "dead letters alone do not fail a run"
        );
        assert_eq!(strict(&["--strict"]).ok(), Some(Some(0.0)));
        assert_eq!(
            strict(&["--tolerated-failure-percent", "5"]).ok(),
            Some(Some(5.0))
        );
        assert!(strict(&["--strict", "--tolerated-failure-percent", "5"]).is_err());
    }
}
