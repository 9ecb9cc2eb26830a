//! `shoal-host serve -- COMMAND...`: a Lambda function's command behind
//! shoal's Runtime API host, invoked through Lambda's Invoke API (see
//! [`shoal_host::invoke`]).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use shoal_host::{Environments, FunctionConfig};

#[derive(Debug, Parser)]
#[command(
    name = "shoal-host",
    version,
    about = "Existing Lambda functions behind shoal's Runtime API"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve Lambda's Invoke API (POST /2015-03-31/functions/NAME/invocations)
    /// for the function COMMAND, in up to --concurrency environments.
    Serve(ServeArgs),
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Where the Invoke API listens.
    #[arg(long, default_value = "127.0.0.1:9000")]
    listen: String,
    /// Execution environments at most (invocations at once).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
    concurrency: u32,
    /// The function's name.
    #[arg(long, env = "AWS_LAMBDA_FUNCTION_NAME", default_value = "function")]
    function_name: String,
    /// Memory size, MB (what the function is told).
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u32).range(128..=10_240))]
    memory_mb: u32,
    /// Seconds one invocation may take.
    #[arg(long, default_value_t = 3.0)]
    timeout: f64,
    /// Seconds the init phase may take.
    #[arg(long, default_value_t = 10.0)]
    init_timeout: f64,
    /// `_HANDLER` for the function's runtime.
    #[arg(long, env = "_HANDLER")]
    handler: Option<String>,
    /// Working directory of the function (`LAMBDA_TASK_ROOT`).
    #[arg(long, env = "LAMBDA_TASK_ROOT")]
    task_root: Option<PathBuf>,
    /// AWS region the function is told.
    #[arg(long, env = "AWS_REGION", default_value = "us-east-1")]
    region: String,
    /// The function's command and its arguments.
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

fn seconds(value: f64, what: &str) -> Result<Duration, String> {
    Duration::try_from_secs_f64(value)
        .ok()
        .filter(|d| !d.is_zero() && *d <= Duration::from_secs(12 * 3600))
        .ok_or_else(|| format!("--{what} {value}: expected seconds above 0, at most 43200"))
}

fn main() -> ExitCode {
    let Command::Serve(args) = Cli::parse().command;
    let config = match (
        seconds(args.timeout, "timeout"),
        seconds(args.init_timeout, "init-timeout"),
    ) {
        (Ok(timeout), Ok(init_timeout)) => FunctionConfig {
            command: args.command,
            task_root: args.task_root,
            handler: args.handler,
            function_name: args.function_name,
            memory_mb: args.memory_mb,
            timeout,
            init_timeout,
            region: args.region,
            max_response_bytes: shoal_host::MAX_RESPONSE_BYTES,
            env: Vec::new(),
        },
        (Err(why), _) | (_, Err(why)) => {
            eprintln!("error: {why}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(&args.listen, config, args.concurrency)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(listen: &str, config: FunctionConfig, concurrency: u32) -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let address = listener
        .local_addr()
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let environments = Arc::new(Environments::new(
        config,
        usize::try_from(concurrency).unwrap_or(1),
    ));
    eprintln!(
        "shoal-host: Invoke API on http://{address}/2015-03-31/functions/function/invocations"
    );
    let shutdown = async {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    let served = shoal_host::invoke::serve(listener, environments.clone(), shutdown).await;
    environments.shutdown().await;
    served.map_err(|e| format!("serving on {address}: {e}"))
}
