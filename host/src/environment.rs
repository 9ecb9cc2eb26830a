//! One execution environment: the function's process, started with the
//! Runtime API of its own, through its init phase, then one invocation at
//! a time until it ends.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot};

use crate::api::{self, Event, Init, Pending, Shared};
use crate::{Failure, FunctionConfig, FunctionError, Report};

/// A live execution environment.
pub struct Environment {
    number: u64,
    config: Arc<FunctionConfig>,
    child: Child,
    pid: Option<u32>,
    shared: Arc<Shared>,
    events: mpsc::Sender<Event>,
    server: tokio::task::JoinHandle<()>,
    init_duration: Option<Duration>,
    /// Its process group was killed and the process reaped.
    ended: bool,
}

/// An init failure of type `error_type`.
fn init_failure(error_type: &str, message: String) -> Failure {
    Failure::Init(FunctionError {
        error_type: error_type.to_owned(),
        message,
        trace: Vec::new(),
    })
}

impl Environment {
    /// Starts environment `number` of `config`'s function and waits for
    /// its init phase to end: the first request for an event, or why it
    /// never came (an init error the function reported, its exit, the init
    /// timeout, a command that cannot start).
    pub async fn start(config: Arc<FunctionConfig>, number: u64) -> Result<Self, Failure> {
        let (events, receiver) = mpsc::channel(1);
        let (init_sender, init) = oneshot::channel();
        let shared = Arc::new(Shared {
            max_response: config.max_response_bytes,
            function_arn: config.function_arn(),
            events: tokio::sync::Mutex::new(receiver),
            pending: Mutex::new(None),
            init: Mutex::new(Some(init_sender)),
        });
        let (address, server) = api::serve(shared.clone()).await.map_err(|e| {
            init_failure(
                "Runtime.StartError",
                format!("cannot serve the Runtime API: {e}"),
            )
        })?;
        let Some((program, args)) = config.command.split_first() else {
            server.abort();
            return Err(init_failure(
                "Runtime.InvalidEntrypoint",
                "the function has no command".to_owned(),
            ));
        };
        let mut command = Command::new(program);
        command
            .args(args)
            .stdin(std::process::Stdio::null())
            .process_group(0)
            .kill_on_drop(true);
        if let Some(root) = &config.task_root {
            command.current_dir(root);
        }
        for (name, _) in std::env::vars_os().filter(|(name, _)| {
            name.to_string_lossy()
                .starts_with(shoal_protocol::env::PREFIX)
        }) {
            command.env_remove(name);
        }
        command.envs(config.env.iter().map(|(k, v)| (k, v)));
        command.envs(lambda_variables(&config, &address.to_string(), number));
        let started = Instant::now();
        let child = match command.spawn() {
            Ok(child) => child,
            Err(e) => {
                server.abort();
                return Err(init_failure(
                    "Runtime.InvalidEntrypoint",
                    format!("cannot start {program}: {e}"),
                ));
            }
        };
        // From here on the environment owns the process and the server: a
        // start abandoned half-way (its caller gone) ends both on drop.
        let mut environment = Self {
            number,
            pid: child.id(),
            child,
            config,
            shared,
            events,
            server,
            init_duration: None,
            ended: false,
        };
        let init_timeout = environment.config.init_timeout;
        let ended = tokio::select! {
            biased;
            how = init => match how {
                Ok(Init::Ready) => None,
                Ok(Init::Failed(error)) => Some(Failure::Init(error)),
                Err(_) => Some(init_failure("Runtime.Unknown", "the Runtime API server stopped".to_owned())),
            },
            status = environment.child.wait() => Some(init_failure(
                "Runtime.ExitError",
                format!("the runtime exited before asking for an event: {}", describe(status)),
            )),
            () = tokio::time::sleep(init_timeout) => Some(init_failure(
                "Sandbox.Timedout",
                format!("init did not finish within {:.2} seconds", init_timeout.as_secs_f64()),
            )),
        };
        environment.init_duration = Some(started.elapsed());
        if let Some(failure) = ended {
            environment.end().await;
            return Err(failure);
        }
        Ok(environment)
    }

    /// Which environment this is.
    pub fn number(&self) -> u64 {
        self.number
    }

    /// Whether its process has exited (it is of no use then).
    pub fn has_exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    /// Runs one invocation of `event`; returns its outcome, what it
    /// measured, and whether the environment lives on (it ends on a
    /// timeout, an exit, a response over the limit).
    /// The invocation's request id is `request_id` and it may take
    /// `timeout`.
    pub async fn invoke(
        &mut self,
        request_id: String,
        event: Bytes,
        timeout: Duration,
    ) -> (Result<Bytes, Failure>, Report, bool) {
        let deadline = SystemTime::now() + timeout;
        let deadline_ms = deadline
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let (done, outcome) = oneshot::channel();
        if let Ok(mut pending) = self.shared.pending.lock() {
            *pending = Some(Pending {
                request_id: request_id.clone(),
                done,
            });
        }
        let started = Instant::now();
        let handed = self
            .events
            .send(Event {
                request_id: request_id.clone(),
                body: event,
                deadline_ms,
                trace_id: trace_id(),
            })
            .await;
        let result = if handed.is_err() {
            Err(Failure::Exited("the Runtime API server stopped".to_owned()))
        } else {
            tokio::select! {
                biased;
                answer = outcome => answer.unwrap_or_else(|_| Err(Failure::Exited("the Runtime API server stopped".to_owned()))),
                status = self.child.wait() => Err(Failure::Exited(describe(status))),
                () = tokio::time::sleep(timeout) => Err(Failure::Timeout(timeout)),
            }
        };
        let duration = started.elapsed();
        let report = Report {
            request_id,
            duration,
            init_duration: self.init_duration.take(),
            max_memory_used_mb: self.pid.and_then(peak_memory_mb),
            environment: self.number,
        };
        let alive = matches!(result, Ok(_) | Err(Failure::Function(_)));
        if !alive {
            self.end().await;
        }
        (result, report, alive)
    }

    /// Ends the environment: kills the function's process group, waits
    /// for the process, stops the server.
    pub async fn end(&mut self) {
        self.kill_group();
        let _ = self.child.wait().await;
        self.server.abort();
        self.ended = true;
    }

    fn kill_group(&self) {
        if let Some(pid) = self.pid.and_then(|p| i32::try_from(p).ok()) {
            // The group may be gone already: nothing to do then.
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

impl Drop for Environment {
    fn drop(&mut self) {
        // However it ends (a cancelled invocation or start, a host shutting
        // down, a process that exited while idle): the function's other
        // processes go too, not only the first. Not after `end`: with every
        // member gone, the group's id could be another group's by now.
        if !self.ended {
            self.kill_group();
        }
        self.server.abort();
    }
}

/// How a process ended, as Lambda words it.
fn describe(status: std::io::Result<std::process::ExitStatus>) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Ok(status) => match (status.code(), status.signal()) {
            (Some(code), _) => format!("exit status {code}"),
            (None, Some(signal)) => format!("signal {signal}"),
            (None, None) => status.to_string(),
        },
        Err(e) => format!("cannot wait for it: {e}"),
    }
}

/// Peak resident memory (`VmHWM`) of process `pid`, in MB.
fn peak_memory_mb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib.div_ceil(1024))
}

/// An X-Ray trace header for one invocation (not sampled).
fn trace_id() -> String {
    let seconds = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let random = uuid::Uuid::new_v4().simple().to_string();
    let parent = uuid::Uuid::new_v4().simple().to_string();
    format!(
        "Root=1-{seconds:08x}-{};Parent={};Sampled=0",
        &random[..24],
        &parent[..16]
    )
}

/// The environment variables Lambda sets for environment `number` of
/// `config`'s function whose Runtime API is at `api` (`host:port`):
/// `AWS_LAMBDA_RUNTIME_API`, `AWS_LAMBDA_FUNCTION_NAME`,
/// `AWS_LAMBDA_FUNCTION_MEMORY_SIZE`, `AWS_LAMBDA_FUNCTION_VERSION`,
/// `AWS_LAMBDA_LOG_GROUP_NAME`, `AWS_LAMBDA_LOG_STREAM_NAME`,
/// `AWS_REGION`, `AWS_DEFAULT_REGION`, `LAMBDA_TASK_ROOT`, `TZ`, and
/// `_HANDLER` when the function has one.
pub fn lambda_variables(config: &FunctionConfig, api: &str, number: u64) -> Vec<(String, String)> {
    let root = config
        .task_root
        .clone()
        .or_else(|| std::env::current_dir().ok())
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let (year, month, day) = civil_date(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() / 86_400),
    );
    let mut variables = vec![
        ("AWS_LAMBDA_RUNTIME_API", api.to_owned()),
        ("AWS_LAMBDA_FUNCTION_NAME", config.function_name.clone()),
        (
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
            config.memory_mb.to_string(),
        ),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".to_owned()),
        (
            "AWS_LAMBDA_LOG_GROUP_NAME",
            format!("/aws/lambda/{}", config.function_name),
        ),
        (
            "AWS_LAMBDA_LOG_STREAM_NAME",
            format!("{year:04}/{month:02}/{day:02}/[$LATEST]{number:032x}"),
        ),
        ("AWS_REGION", config.region.clone()),
        ("AWS_DEFAULT_REGION", config.region.clone()),
        ("LAMBDA_TASK_ROOT", root),
        ("TZ", ":UTC".to_owned()),
    ];
    if let Some(handler) = &config.handler {
        variables.push(("_HANDLER", handler.clone()));
    }
    variables
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
}

/// The date of day `days` since 1970-01-01 (proleptic Gregorian).
fn civil_date(days: u64) -> (i64, u32, u32) {
    // Howard Hinnant's days-to-civil algorithm.
    let z = i64::try_from(days).unwrap_or(0) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (
        year,
        u32::try_from(month).unwrap_or(1),
        u32::try_from(day).unwrap_or(1),
    )
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        reason = "test code: a panic is how a test reports failure"
    )]

    use super::*;

    #[test]
    fn dates_of_log_streams() {
        assert_eq!(civil_date(0), (1970, 1, 1));
        assert_eq!(civil_date(11_016), (2000, 2, 29));
        assert_eq!(civil_date(20_790), (2026, 12, 3));
    }

    #[test]
    fn the_variables_lambda_sets() {
        let mut config = FunctionConfig::new("thumbs", vec!["bootstrap".into()]);
        config.handler = Some("app.handler".into());
        config.memory_mb = 512;
        config.region = "eu-west-1".into();
        let vars: std::collections::HashMap<String, String> =
            lambda_variables(&config, "127.0.0.1:9001", 7)
                .into_iter()
                .collect();
        assert_eq!(vars["AWS_LAMBDA_RUNTIME_API"], "127.0.0.1:9001");
        assert_eq!(vars["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"], "512");
        assert_eq!(vars["AWS_LAMBDA_LOG_GROUP_NAME"], "/aws/lambda/thumbs");
        assert!(
            vars["AWS_LAMBDA_LOG_STREAM_NAME"]
                .ends_with("[$LATEST]00000000000000000000000000000007")
        );
        assert_eq!(vars["_HANDLER"], "app.handler");
        assert_eq!(vars["AWS_REGION"], "eu-west-1");
        assert_eq!(
            config.function_arn(),
            "arn:aws:lambda:eu-west-1:000000000000:function:thumbs"
        );
    }

    #[test]
    fn trace_headers_have_xrays_shape() {
        let id = trace_id();
        let root = id.strip_prefix("Root=1-").unwrap();
        let (time, rest) = root.split_once('-').unwrap();
        assert_eq!(time.len(), 8);
        assert_eq!(rest.split(';').next().unwrap().len(), 24);
        assert!(id.ends_with(";Sampled=0"));
    }
}
