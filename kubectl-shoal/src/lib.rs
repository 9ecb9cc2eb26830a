//! `kubectl shoal`: a kubectl plugin for shoal's BatchJobs.
//!
//! Installed as `kubectl-shoal` on the `PATH`, kubectl runs it for
//! `kubectl shoal ...`. It talks to the API server with the kubeconfig
//! kubectl would use (`KUBECONFIG`, `--kubeconfig`, `--context`); only
//! `invoke` also talks to a queue, never to buckets.
//!
//! - [`progress`]: what a job's status says (rates, ETA), without API calls.
//! - [`cost`]: a job's cost on the cluster and on Lambda, from its status.
//! - [`commands`]: the commands, each a few API calls; [`cost_command`]
//!   for `cost`; [`invoke`] for `invoke`, the one command that talks to a
//!   queue (the one the job consumes).
//!
//! Exit codes: 0 done; 1 the cluster refused or could not be reached; 2 the
//! command line is wrong; 3 no such BatchJob; 4 `--wait` gave up.

pub mod commands;
pub mod cost;
pub mod cost_command;
pub mod invoke;
pub mod progress;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};

/// Why a command failed; each maps to an exit code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The BatchJob does not exist.
    #[error("batchjob {namespace}/{name} not found")]
    NotFound {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
    },
    /// An API call failed.
    #[error("{what}: {source}")]
    Kube {
        /// What was being done.
        what: String,
        /// The client's error.
        source: kube::Error,
    },
    /// The kubeconfig could not be read or used.
    #[error("kubeconfig: {0}")]
    Config(String),
    /// A request the operator's library made failed (its message says
    /// what and why).
    #[error("{0}")]
    Request(String),
    /// `--wait` ran out of time.
    #[error("{0}")]
    TimedOut(String),
    /// Writing the output failed.
    #[error("writing the output: {0}")]
    Output(String),
    /// An argument or a file it names is wrong.
    #[error("{0}")]
    Usage(String),
}

impl Error {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::NotFound { .. } => 3,
            Self::TimedOut(_) => 4,
            Self::Usage(_) => 2,
            Self::Kube { .. } | Self::Config(_) | Self::Request(_) | Self::Output(_) => 1,
        }
    }

    /// An API error while doing `what`.
    pub(crate) fn kube(what: impl Into<String>) -> impl FnOnce(kube::Error) -> Self {
        let what = what.into();
        move |source| Self::Kube { what, source }
    }
}

/// Result of the plugin's operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// shoal's BatchJobs from kubectl.
#[derive(Debug, Parser)]
#[command(name = "kubectl-shoal", bin_name = "kubectl shoal", version)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    global: Global,
}

/// Flags every command takes, as kubectl spells them.
#[derive(Debug, Clone, Args)]
pub struct Global {
    /// Namespace [default: the kubeconfig context's].
    #[arg(long, short = 'n', global = true)]
    pub namespace: Option<String>,
    /// Path of the kubeconfig [default: KUBECONFIG, else ~/.kube/config].
    #[arg(long, global = true)]
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context [default: its current context].
    #[arg(long, global = true)]
    pub context: Option<String>,
    /// Output format.
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = Output::Human)]
    pub output: Output,
}

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Tables and sentences.
    Human,
    /// One JSON document (JSON lines for `logs`).
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Jobs with their progress: chunks done, failures, workers, rate, ETA.
    Status(StatusArgs),
    /// One job: progress, conditions, redrive, results, recent events.
    Describe(NameArgs),
    /// Logs of a job's worker pods, each line after its pod's name.
    Logs(LogsArgs),
    /// Pause a job: the fan-out stops, workers drain and go (spec.suspend).
    Suspend(NameArgs),
    /// Resume a suspended job from where it stopped.
    Resume(NameArgs),
    /// Move a job's dead letters back to its work queue (spec.redrive).
    Redrive(RedriveArgs),
    /// Send one item to the queue a job consumes (source.sqs or
    /// source.amqp), as its producers would.
    Invoke(InvokeArgs),
    /// A job's cost on the cluster next to what the same work would have
    /// cost on Lambda.
    Cost(CostArgs),
    /// Print a completion script for SHELL (for `kubectl-shoal`).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Args)]
struct StatusArgs {
    /// One job; every job of the namespace when left out.
    name: Option<String>,
    /// Jobs of every namespace.
    #[arg(long, short = 'A', conflicts_with = "name")]
    all_namespaces: bool,
}

#[derive(Debug, Args)]
struct NameArgs {
    /// The BatchJob.
    name: String,
}

#[derive(Debug, Args)]
struct LogsArgs {
    /// The BatchJob.
    name: String,
    /// Lines from the end of each pod's log.
    #[arg(long, default_value_t = 100)]
    tail: i64,
    /// Keep following the logs until interrupted.
    #[arg(long, short = 'f')]
    follow: bool,
}

#[derive(Debug, Args)]
struct RedriveArgs {
    /// The BatchJob.
    name: String,
    /// Wait until the operator has moved them, and say how many.
    #[arg(long)]
    wait: bool,
    /// How long --wait waits.
    #[arg(long, default_value = "10m")]
    timeout: humantime::Duration,
}

#[derive(Debug, Args)]
struct InvokeArgs {
    /// The BatchJob.
    name: String,
    /// The item: an object in a bucket, sent as a one-item shoal chunk
    /// (what the fan-out sends).
    #[arg(long, value_name = "s3://BUCKET/KEY", conflicts_with_all = ["payload", "payload_file"])]
    object: Option<String>,
    /// The item: the message body as it is (a raw item, a shoal chunk, an
    /// S3 event...; see docs/handler.md, "Message formats").
    #[arg(long, short = 'p', conflicts_with = "payload_file")]
    payload: Option<String>,
    /// Read the message body from this file (- for standard input).
    #[arg(long)]
    payload_file: Option<PathBuf>,
    /// SQS message group (FIFO queues) [default: kubectl-shoal].
    #[arg(long)]
    group_id: Option<String>,
    /// SQS deduplication id (FIFO queues) [default: a fresh one, so each
    /// invoke is sent].
    #[arg(long)]
    deduplication_id: Option<String>,
    /// Reach the job's RabbitMQ broker at HOST:PORT instead of the
    /// address in its Secret (e.g. the local end of `kubectl
    /// port-forward`); credentials and vhost still come from the Secret.
    #[arg(long, value_name = "HOST:PORT")]
    amqp_address: Option<String>,
}

#[derive(Debug, Args)]
struct CostArgs {
    /// The BatchJob (or give -f).
    #[arg(required_unless_present = "filename")]
    name: Option<String>,
    /// Read the BatchJob from this YAML or JSON file (what `kubectl get
    /// bj NAME -o yaml` prints) instead of the cluster.
    #[arg(long, short = 'f', conflicts_with = "name")]
    filename: Option<PathBuf>,
    /// Region whose Lambda prices apply.
    #[arg(long, env = "AWS_REGION", default_value = "us-east-1")]
    region: String,
    /// Lambda architecture priced.
    #[arg(long, value_enum, default_value_t = Architecture::X86_64)]
    architecture: Architecture,
    /// Lambda price table (JSON: {"source", "regions": {REGION: {ARCH:
    /// {"gbSecond", "perMillionRequests"}}}}) [default: built-in list
    /// prices].
    #[arg(long)]
    prices: Option<PathBuf>,
    /// Price of one node, USD per hour [default: an m5.large's on-demand
    /// list price in us-east-1].
    #[arg(long, default_value_t = 0.096)]
    node_price: f64,
    /// Allocatable vCPUs of that node.
    #[arg(long, default_value_t = 2.0)]
    node_cpu: f64,
    /// Allocatable memory of that node, GiB.
    #[arg(long, default_value_t = 8.0)]
    node_memory: f64,
}

/// Lambda architectures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Architecture {
    /// x86_64.
    #[value(name = "x86_64")]
    X86_64,
    /// arm64 (Graviton).
    #[value(name = "arm64")]
    Arm64,
}

impl Architecture {
    fn as_str(self) -> &'static str {
        match self {
            Self::X86_64 => "x86_64",
            Self::Arm64 => "arm64",
        }
    }
}

/// Runs the command the process arguments name.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Completions { shell } = cli.command {
        let mut command = Cli::command();
        clap_complete::generate(shell, &mut command, "kubectl-shoal", &mut std::io::stdout());
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

async fn run(mut cli: Cli) -> Result<()> {
    if let Command::Cost(args) = &cli.command
        && let Some(path) = &args.filename
    {
        let job = cost_command::job_from_file(path)?;
        let mut stdout = std::io::stdout().lock();
        return cost_command::cost(&job, &cost_inputs(args)?, cli.global.output, &mut stdout);
    }
    // Checked before the kubeconfig is: a bad item is a usage error
    // wherever the command runs.
    let payload = match &mut cli.command {
        Command::Invoke(args) => invoke::payload(
            args.payload.take(),
            args.payload_file.as_deref(),
            args.object.as_deref(),
        )?,
        _ => String::new(),
    };
    let (client, default_namespace) = commands::client(&cli.global).await?;
    let namespace = cli.global.namespace.clone().unwrap_or(default_namespace);
    let out = cli.global.output;
    let mut stdout = std::io::stdout().lock();
    match cli.command {
        Command::Status(args) => {
            let scope = if args.all_namespaces {
                None
            } else {
                Some(namespace.as_str())
            };
            commands::status(&client, scope, args.name.as_deref(), out, &mut stdout).await
        }
        Command::Describe(args) => {
            commands::describe(&client, &namespace, &args.name, out, &mut stdout).await
        }
        Command::Logs(args) => {
            let how = commands::LogOptions {
                tail: args.tail,
                follow: args.follow,
            };
            commands::logs(&client, &namespace, &args.name, how, out, &mut stdout).await
        }
        Command::Suspend(args) => {
            commands::suspend(&client, &namespace, &args.name, true, out, &mut stdout).await
        }
        Command::Resume(args) => {
            commands::suspend(&client, &namespace, &args.name, false, out, &mut stdout).await
        }
        Command::Redrive(args) => {
            let wait = args.wait.then(|| Duration::from(args.timeout));
            commands::redrive(&client, &namespace, &args.name, wait, out, &mut stdout).await
        }
        Command::Invoke(args) => {
            let options = invoke::InvokeOptions {
                group_id: args.group_id,
                deduplication_id: args.deduplication_id,
                amqp_address: args.amqp_address,
            };
            invoke::invoke(
                &client,
                &namespace,
                &args.name,
                &payload,
                &options,
                out,
                &mut stdout,
            )
            .await
        }
        Command::Cost(args) => {
            let inputs = cost_inputs(&args)?;
            let name = args.name.unwrap_or_default();
            let job = commands::job(&client, &namespace, &name).await?;
            cost_command::cost(&job, &inputs, out, &mut stdout)
        }
        Command::Completions { .. } => Ok(()),
    }
}

/// The prices `args` name, checked.
fn cost_inputs(args: &CostArgs) -> Result<cost_command::CostInputs> {
    let table = match &args.prices {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| Error::Usage(format!("reading {}: {e}", path.display())))?;
            cost::PriceTable::parse(&text, &path.display().to_string())
        }
        None => cost::PriceTable::parse(cost::LIST_PRICES, "built-in"),
    }
    .map_err(Error::Usage)?;
    let architecture = args.architecture.as_str();
    let prices = table
        .prices(&args.region, architecture)
        .map_err(Error::Usage)?;
    let node = cost::Node {
        price_per_hour: args.node_price,
        cpu: args.node_cpu,
        memory_gib: args.node_memory,
    };
    node.validate().map_err(Error::Usage)?;
    Ok(cost_command::CostInputs {
        region: args.region.clone(),
        architecture,
        prices,
        node,
    })
}
