//! The `shoal-operator` command line: `crd` prints the CRD; `run` runs the
//! controller with the in-cluster or `KUBECONFIG` credentials and the
//! default AWS chain, serving `/metrics`, `/healthz` and `/readyz`.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use std::time::Duration;

use clap::{Parser, Subcommand};
use kube::Api;
use tracing_subscriber::EnvFilter;

use crate::http::{self, Health};
use crate::leader::LeaseLock;
use crate::metrics::Metrics;

/// shoal's Kubernetes operator.
#[derive(Debug, Parser)]
#[command(name = "shoal-operator", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the BatchJob CustomResourceDefinition (YAML).
    Crd,
    /// Run the controller until SIGTERM.
    Run(RunArgs),
    /// Move a BatchJob's dead letters back to its work queue (sets
    /// spec.redrive; the operator does the move and records it in
    /// status.redrive).
    Redrive(RedriveArgs),
}

#[derive(Debug, clap::Args)]
struct RedriveArgs {
    /// The BatchJob.
    name: String,
    /// Its namespace [default: the kubeconfig context's].
    #[arg(long, short = 'n')]
    namespace: Option<String>,
    /// Wait until the operator has moved them, and say how many.
    #[arg(long)]
    wait: bool,
    /// How long --wait waits.
    #[arg(long, default_value = "10m")]
    timeout: humantime::Duration,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Serve /metrics, /healthz and /readyz on this address.
    #[arg(
        long,
        env = "SHOAL_OPERATOR_METRICS_ADDR",
        default_value = "0.0.0.0:8080"
    )]
    metrics_addr: SocketAddr,
    /// Compete for a Lease and reconcile only while holding it (for more
    /// than one replica).
    #[arg(long, env = "SHOAL_OPERATOR_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    leader_election: bool,
    /// Namespace of the Lease (the operator's own).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    /// Name of the Lease.
    #[arg(long, env = "SHOAL_OPERATOR_LEASE", default_value = "shoal-operator")]
    lease_name: String,
    /// Watch BatchJobs (and their Deployments) in this namespace only;
    /// every namespace when unset.
    #[arg(long, env = "SHOAL_OPERATOR_WATCH_NAMESPACE")]
    watch_namespace: Option<String>,
    /// Seconds a Lease stays valid without renewal.
    #[arg(long, env = "SHOAL_OPERATOR_LEASE_SECONDS", default_value_t = 15, value_parser = clap::value_parser!(u64).range(3..=300))]
    lease_seconds: u64,
    /// How old RabbitMQ's management API counts can be: its
    /// `collect_statistics_interval` plus, for quorum queues, the
    /// `quorum_tick_interval` (5 s each by default). A job on RabbitMQ whose
    /// queues look drained is Succeeded after twice this.
    #[arg(
        long,
        env = "SHOAL_OPERATOR_AMQP_STATS_INTERVAL",
        default_value = "10s"
    )]
    amqp_stats_interval: humantime::Duration,
    /// BatchJobs with `shoal_batchjob_*` series (ten each) at most; a job
    /// past the limit counts only in the sums until another is deleted.
    #[arg(
        long,
        env = "SHOAL_OPERATOR_PER_JOB_METRICS_LIMIT",
        default_value_t = crate::metrics::DEFAULT_PER_JOB_LIMIT
    )]
    per_job_metrics_limit: usize,
    /// Before lowering a job's workers, write each ready worker's in-flight
    /// count as its pod's `controller.kubernetes.io/pod-deletion-cost`, so
    /// idle workers go first. Needs `patch` on pods, and the worker pods'
    /// metrics port reachable from the operator.
    #[arg(long, env = "SHOAL_OPERATOR_IDLE_FIRST_SCALE_IN", default_value_t = true, action = clap::ArgAction::Set)]
    idle_first_scale_in: bool,
    /// Image holding shoal's Lambda host (`/usr/local/bin/shoal-host`),
    /// copied into the pods of jobs whose handler is a Lambda function's
    /// image (`handler.function`) unless the job names its own.
    #[arg(long, env = "SHOAL_OPERATOR_HOST_IMAGE", default_value = concat!("shoal-host:", env!("CARGO_PKG_VERSION")))]
    host_image: String,
    /// Most BatchJob reconciles running at once.
    #[arg(
        long,
        env = "SHOAL_OPERATOR_CONCURRENCY",
        default_value_t = crate::controller::DEFAULT_CONCURRENCY,
        value_parser = clap::value_parser!(u16).range(1..)
    )]
    concurrency: u16,
    /// How often each queue's counts are read: how soon a job's workers
    /// follow its backlog. On SQS each read is a billed request
    /// (`GetQueueAttributes`; twice a second is about 5 million a month per
    /// queue).
    #[arg(
        long,
        env = "SHOAL_OPERATOR_QUEUE_POLL_INTERVAL",
        default_value = "500ms"
    )]
    queue_poll_interval: humantime::Duration,
    /// Most queue-count reads a second, over every queue. Past it, a queue
    /// with a backlog is still read every interval and an idle one every
    /// `queues / this` seconds (a job scaling up from zero reacts that
    /// late).
    #[arg(
        long,
        env = "SHOAL_OPERATOR_QUEUE_POLLS_PER_SECOND",
        default_value_t = crate::controller::DEFAULT_QUEUE_POLLS_PER_SECOND,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    queue_polls_per_second: u32,
}

/// Runs the command named by the process arguments.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => match crate::crd::crd_yaml() {
            Ok(yaml) => {
                print!("{yaml}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("cannot render the CRD: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Run(args) => run(args),
        Command::Redrive(args) => redrive(args),
    }
}

fn redrive(args: RedriveArgs) -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let client = match kube::Client::try_default().await {
            Ok(client) => client,
            Err(e) => {
                eprintln!("no Kubernetes credentials (in-cluster or KUBECONFIG): {e}");
                return ExitCode::FAILURE;
            }
        };
        let namespace = args
            .namespace
            .clone()
            .unwrap_or_else(|| client.default_namespace().to_owned());
        let name = &args.name;
        let round = match crate::redrive::request(client.clone(), &namespace, name).await {
            Ok(round) => round,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
        };
        if !args.wait {
            println!("batchjob {namespace}/{name}: redrive {round} requested");
            return ExitCode::SUCCESS;
        }
        match crate::redrive::wait(client, &namespace, name, round, args.timeout.into()).await {
            Ok(moved) => {
                println!("batchjob {namespace}/{name}: redrive {round} moved {moved} dead letters back to the work queue");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        }
    })
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        if let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// This replica's name in the Lease: the pod name, else host and pid.
fn identity() -> String {
    std::env::var("POD_NAME").unwrap_or_else(|_| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "shoal-operator".into());
        format!("{host}-{}", std::process::id())
    })
}

fn run(args: RunArgs) -> ExitCode {
    let metrics_addr = args.metrics_addr;
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Fail points named in FAILPOINTS (only with the `failpoints` feature,
    // for crash tests); kept for the life of the process.
    let _failpoints = fail::FailScenario::setup();
    runtime.block_on(async {
        let metrics = match Metrics::new(args.per_job_metrics_limit) {
            Ok(m) => Arc::new(m),
            Err(e) => {
                tracing::error!(error = %e, "cannot register metrics");
                return ExitCode::FAILURE;
            }
        };
        let ready = Arc::new(AtomicBool::new(false));
        let health = Health {
            metrics: metrics.clone(),
            ready: ready.clone(),
        };
        let server = match http::serve(metrics_addr, health).await {
            Ok(server) => server,
            Err(e) => {
                tracing::error!(error = %e, "cannot serve metrics");
                return ExitCode::FAILURE;
            }
        };
        let client = match crate::api_client::measured_client(metrics.clone()).await {
            Ok(client) => client,
            Err(e) => {
                tracing::error!(error = %e, "no Kubernetes credentials (in-cluster or KUBECONFIG)");
                return ExitCode::FAILURE;
            }
        };
        let sqs = crate::sqs::Sqs::from_env()
            .await
            .counted(metrics.queue_requests.with_label_values(&["sqs"]));
        let s3 = crate::s3::S3::from_env().await;
        let amqp = match crate::amqp::Amqp::new(args.amqp_stats_interval.into()) {
            Ok(amqp) => amqp.counted(metrics.queue_requests.with_label_values(&["amqp"])),
            Err(e) => {
                tracing::error!(error = %e, "cannot set up the RabbitMQ clients");
                return ExitCode::FAILURE;
            }
        };
        tracing::info!(
            metrics = %metrics_addr,
            namespace = args.watch_namespace.as_deref().unwrap_or("(all)"),
            "operator started"
        );
        // Followers are ready too: a rolling update must not wait for a
        // replica that cannot lead until the old one is gone.
        ready.store(true, Ordering::Relaxed);
        let scope = args.watch_namespace.clone();
        if Duration::from(args.queue_poll_interval).is_zero() {
            tracing::error!("--queue-poll-interval must be longer than zero");
            return ExitCode::FAILURE;
        }
        let options = crate::controller::Options {
            scale_in: args
                .idle_first_scale_in
                .then(crate::controller::Prober::default),
            host_image: args.host_image.clone(),
            concurrency: args.concurrency,
            queue_poll_interval: args.queue_poll_interval.into(),
            queue_polls_per_second: args.queue_polls_per_second,
        };
        let code = if args.leader_election {
            let lock = LeaseLock::new(
                Api::namespaced(client.clone(), &args.lease_namespace),
                &args.lease_name,
                &identity(),
                Duration::from_secs(args.lease_seconds),
            );
            tokio::select! {
                () = lock.acquire() => {}
                () = shutdown_signal() => {
                    server.abort();
                    tracing::info!("operator stopped before leading");
                    return ExitCode::SUCCESS;
                }
            }
            metrics.leader.set(1);
            let code = tokio::select! {
                () = crate::controller::run(client, sqs, s3, amqp, metrics.clone(), scope, options.clone()) => ExitCode::SUCCESS,
                lost = lock.keep() => {
                    tracing::error!(error = %lost, "stopped leading; exiting");
                    ExitCode::FAILURE
                }
            };
            metrics.leader.set(0);
            lock.release().await;
            code
        } else {
            metrics.leader.set(1);
            crate::controller::run(client, sqs, s3, amqp, metrics.clone(), scope, options.clone()).await;
            metrics.leader.set(0);
            ExitCode::SUCCESS
        };
        ready.store(false, Ordering::Relaxed);
        server.abort();
        tracing::info!("operator stopped");
        code
    })
}
