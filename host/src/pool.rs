//! Up to `concurrency` execution environments of one function, each
//! running one invocation at a time and kept warm between invocations.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::Semaphore;

use crate::environment::Environment;
use crate::{Failure, FunctionConfig, Invoked, Report};

/// The execution environments of one function.
pub struct Environments {
    config: Arc<FunctionConfig>,
    idle: Mutex<Vec<Environment>>,
    slots: Semaphore,
    started: AtomicU64,
}

impl Environments {
    /// At most `concurrency` environments of `config`'s function, started
    /// when invocations need them.
    pub fn new(config: FunctionConfig, concurrency: usize) -> Self {
        Self {
            config: Arc::new(config),
            idle: Mutex::new(Vec::new()),
            slots: Semaphore::new(concurrency.max(1)),
            started: AtomicU64::new(0),
        }
    }

    /// The function run.
    pub fn config(&self) -> &FunctionConfig {
        &self.config
    }

    /// How many environments have been started so far.
    pub fn started(&self) -> u64 {
        self.started.load(Ordering::Relaxed)
    }

    /// Runs `event` in a warm environment, or a fresh one when none is
    /// idle, waiting while `concurrency` invocations run. An environment
    /// that cannot start fails the invocation with
    /// [`Failure::Init`](crate::Failure::Init); the next invocation tries a
    /// fresh one again.
    pub async fn invoke(&self, event: Bytes) -> Invoked {
        let request_id = uuid::Uuid::new_v4().to_string();
        self.invoke_as(request_id, event, self.config.timeout).await
    }

    /// Like [`Environments::invoke`], as request `request_id` (what the
    /// function sees and the report names), bounded by `timeout` instead of
    /// the function's configured timeout.
    pub async fn invoke_as(&self, request_id: String, event: Bytes, timeout: Duration) -> Invoked {
        match self.acquire().await {
            Ok(lease) => lease.invoke(request_id, event, timeout).await,
            Err(refused) => refused.into_invoked(request_id),
        }
    }

    /// An environment for one invocation: a warm one, or a fresh one
    /// started now (its init phase bounded by the init timeout), waiting
    /// while `concurrency` invocations run. The wait and the init are what
    /// a caller may keep out of the invocation's own timeout, as Lambda
    /// does; [`Lease::init_duration`] says how long the init took.
    pub async fn acquire(&self) -> Result<Lease<'_>, InitFailed> {
        // The semaphore is never closed.
        let slot = self.slots.acquire().await.ok();
        if let Some(environment) = self.take_idle() {
            return Ok(Lease {
                pool: self,
                environment,
                init_duration: None,
                _slot: slot,
            });
        }
        let number = self.started.fetch_add(1, Ordering::Relaxed) + 1;
        let started = Instant::now();
        match Environment::start(self.config.clone(), number).await {
            Ok(environment) => Ok(Lease {
                pool: self,
                environment,
                init_duration: Some(started.elapsed()),
                _slot: slot,
            }),
            Err(failure) => Err(InitFailed {
                failure,
                init_duration: started.elapsed(),
                environment: number,
            }),
        }
    }

    /// A warm environment whose process still runs.
    fn take_idle(&self) -> Option<Environment> {
        let mut idle = self.idle.lock().ok()?;
        while let Some(mut environment) = idle.pop() {
            if !environment.has_exited() {
                return Some(environment);
            }
        }
        None
    }

    /// Ends every idle environment (running invocations keep theirs until
    /// they finish; dropping them ends them too).
    pub async fn shutdown(&self) {
        let idle: Vec<Environment> = self
            .idle
            .lock()
            .map(|mut idle| idle.drain(..).collect())
            .unwrap_or_default();
        for mut environment in idle {
            environment.end().await;
        }
    }
}

/// An environment held for one invocation (see [`Environments::acquire`]).
pub struct Lease<'a> {
    pool: &'a Environments,
    environment: Environment,
    init_duration: Option<Duration>,
    _slot: Option<tokio::sync::SemaphorePermit<'a>>,
}

impl Lease<'_> {
    /// The init phase of a fresh environment; `None` for a warm one.
    pub fn init_duration(&self) -> Option<Duration> {
        self.init_duration
    }

    /// Runs `event` as request `request_id`, bounded by `timeout`; the
    /// environment goes back to the warm ones unless the invocation ended
    /// it.
    pub async fn invoke(mut self, request_id: String, event: Bytes, timeout: Duration) -> Invoked {
        let (result, report, alive) = self.environment.invoke(request_id, event, timeout).await;
        if alive && let Ok(mut idle) = self.pool.idle.lock() {
            idle.push(self.environment);
        }
        (result, report)
    }
}

/// An environment that could not start.
#[derive(Debug)]
pub struct InitFailed {
    /// Why ([`Failure::Init`] and its kin).
    pub failure: Failure,
    /// How long the attempt took.
    pub init_duration: Duration,
    /// Which environment it was to be.
    pub environment: u64,
}

impl InitFailed {
    /// The failure as the invocation `request_id`'s result.
    pub fn into_invoked(self, request_id: String) -> Invoked {
        let report = Report {
            request_id,
            duration: Duration::ZERO,
            init_duration: Some(self.init_duration),
            max_memory_used_mb: None,
            environment: self.environment,
        };
        (Err(self.failure), report)
    }
}
