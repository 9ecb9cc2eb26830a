//! `shoal-host serve -- COMMAND...`: a Lambda function's command behind
//! shoal's Runtime API host, invoked through Lambda's Invoke API (see
//! [`crate::invoke`]).
//!
//! `shoal-host worker [WORKER OPTIONS] -- COMMAND...`: the function as the
//! handler of shoal's queue worker (see [`crate::function`]); the
//! worker options are a shoal worker's (`SHOAL_*` variables included).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use crate::function::{HostedFunction, Source};
use crate::{Environments, FunctionConfig};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "shoal-host",
    version,
    about = "Existing Lambda functions behind shoal's Runtime API",
    after_help = WORKER_HELP
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
    /// Copy this executable to DEST (what the operator's init container
    /// runs to put the host into a function's pod).
    Install {
        /// Where the copy goes (its folder must exist).
        dest: PathBuf,
    },
}

/// Copies the running executable to `dest`, executable by anyone, through
/// a temporary file renamed into place.
fn install(dest: &std::path::Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let me = std::env::current_exe().map_err(|e| format!("cannot find this executable: {e}"))?;
    let name = dest
        .file_name()
        .ok_or_else(|| format!("{}: not a file name", dest.display()))?;
    let partial = dest.with_file_name(format!(".{}.partial", name.to_string_lossy()));
    std::fs::copy(&me, &partial)
        .map_err(|e| format!("copy {} to {}: {e}", me.display(), partial.display()))?;
    std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| format!("make {} executable: {e}", partial.display()))?;
    std::fs::rename(&partial, dest)
        .map_err(|e| format!("rename {} to {}: {e}", partial.display(), dest.display()))
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

const WORKER_HELP: &str = "\
Queue worker:
  shoal-host worker [WORKER OPTIONS] -- COMMAND...
      Consume a queue with the function COMMAND as the handler; the options
      are a shoal worker's (shoal-host worker --help). The function's own
      settings come from its environment: _HANDLER, LAMBDA_TASK_ROOT,
      SHOAL_BATCH_SIZE (SQS messages per event, 1-10, default 10) and
      SHOAL_INIT_TIMEOUT (seconds, default 10).";

/// A variable of the host's environment, parsed; exit 2 when unreadable.
fn setting<T: std::str::FromStr>(
    name: &str,
    default: T,
    ok: impl Fn(&T) -> bool,
) -> Result<T, String> {
    match std::env::var(name) {
        Err(std::env::VarError::NotPresent) => Ok(default),
        Ok(text) => text
            .trim()
            .parse::<T>()
            .ok()
            .filter(|value| ok(value))
            .ok_or_else(|| format!("{name}={text:?} is out of range")),
        Err(std::env::VarError::NotUnicode(_)) => Err(format!("{name} is not UTF-8")),
    }
}

/// `shoal-host worker ...`: `args` are those after `worker`.
fn worker(argv0: std::ffi::OsString, args: Vec<std::ffi::OsString>) -> ExitCode {
    let split = args.iter().position(|a| a == "--");
    let (options, command) = match split {
        Some(at) => (&args[..at], &args[at + 1..]),
        None => (&args[..], &[][..]),
    };
    let worker_argv = [argv0, "worker".into()]
        .into_iter()
        .chain(options.iter().cloned());
    let cli = shoal_worker::cli::Cli::parse_args(worker_argv);
    let command: Vec<String> = match command
        .iter()
        .map(|a| a.clone().into_string())
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(command) if !command.is_empty() => command,
        Ok(_) => {
            eprintln!(
                "error: the function's command is missing: shoal-host worker [OPTIONS] -- COMMAND..."
            );
            return ExitCode::from(2);
        }
        Err(_) => {
            eprintln!("error: the function's command is not UTF-8");
            return ExitCode::from(2);
        }
    };
    let shoal_worker::cli::Command::Worker(worker_args) = &cli.command else {
        return ExitCode::from(2);
    };
    let settings = (
        setting(shoal_protocol::env::BATCH_SIZE, 10usize, |n| {
            (1..=10).contains(n)
        }),
        setting(shoal_protocol::env::INIT_TIMEOUT, 10.0f64, |s| {
            *s > 0.0 && *s <= 43_200.0
        }),
    );
    let (batch_size, init_timeout) = match settings {
        (Ok(batch), Ok(init)) => (batch, Duration::from_secs_f64(init)),
        (Err(why), _) | (_, Err(why)) => {
            eprintln!("error: {why}");
            return ExitCode::from(2);
        }
    };
    let source = Source::for_queue(&worker_args.queue, batch_size);
    let mut template = FunctionConfig::new("function", command);
    template.handler = std::env::var("_HANDLER").ok().filter(|h| !h.is_empty());
    template.task_root = std::env::var_os("LAMBDA_TASK_ROOT").map(PathBuf::from);
    template.init_timeout = init_timeout;
    if let Ok(region) = std::env::var("AWS_REGION") {
        template.region = region;
    }
    shoal_worker::main_parsed(cli, move || {
        Ok::<_, std::convert::Infallible>(HostedFunction::new(template, source))
    })
}

fn seconds(value: f64, what: &str) -> Result<Duration, String> {
    Duration::try_from_secs_f64(value)
        .ok()
        .filter(|d| !d.is_zero() && *d <= Duration::from_secs(12 * 3600))
        .ok_or_else(|| format!("--{what} {value}: expected seconds above 0, at most 43200"))
}

/// Makes this process non-dumpable, so the function's processes (the same
/// user) can neither read its environment through `/proc` (the queue's
/// URL, which may hold a broker password) nor trace it. Children are
/// dumpable again after their `exec`, as usual.
fn protect_from_the_function() {
    if let Err(e) = nix::sys::prctl::set_dumpable(false) {
        eprintln!(
            "warning: cannot make shoal-host non-dumpable ({e}): the function's processes may read its environment"
        );
    }
}

/// The `shoal-host` command line: parses the arguments and runs the
/// command.
pub fn main() -> ExitCode {
    protect_from_the_function();
    let mut argv = std::env::args_os();
    let argv0 = argv.next().unwrap_or_else(|| "shoal-host".into());
    let rest: Vec<std::ffi::OsString> = argv.collect();
    if rest.first().is_some_and(|a| a == "worker") {
        return worker(argv0, rest[1..].to_vec());
    }
    let args = match Cli::parse().command {
        Command::Serve(args) => args,
        Command::Install { dest } => {
            return match install(&dest) {
                Ok(()) => ExitCode::SUCCESS,
                Err(why) => {
                    eprintln!("error: {why}");
                    ExitCode::FAILURE
                }
            };
        }
    };
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
            max_response_bytes: crate::MAX_RESPONSE_BYTES,
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
    let served = crate::invoke::serve(listener, environments.clone(), shutdown).await;
    environments.shutdown().await;
    served.map_err(|e| format!("serving on {address}: {e}"))
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        reason = "test code: a panic is how a test reports failure"
    )]

    #[test]
    fn the_host_is_not_dumpable_so_its_environment_is_not_readable_by_the_function() {
        super::protect_from_the_function();
        assert_eq!(nix::sys::prctl::get_dumpable(), Ok(false));
        // Owned by root now, whoever runs it (a pod's uid 65532 cannot
        // read it).
        use std::os::unix::fs::MetadataExt;
        let environ = std::fs::metadata("/proc/self/environ").unwrap();
        assert_eq!(environ.uid(), 0);
    }
}
