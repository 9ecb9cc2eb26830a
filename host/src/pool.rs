//! Up to `concurrency` execution environments of one function, each
//! running one invocation at a time and kept warm between invocations.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::Semaphore;

use crate::environment::Environment;
use crate::{FunctionConfig, Invoked, Report};

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
        // The semaphore is never closed.
        let _slot = self.slots.acquire().await;
        let mut environment = match self.take_idle() {
            Some(environment) => environment,
            None => {
                let number = self.started.fetch_add(1, Ordering::Relaxed) + 1;
                let started = Instant::now();
                match Environment::start(self.config.clone(), number).await {
                    Ok(environment) => environment,
                    Err(failure) => {
                        let report = Report {
                            request_id,
                            duration: Duration::ZERO,
                            init_duration: Some(started.elapsed()),
                            max_memory_used_mb: None,
                            environment: number,
                        };
                        return (Err(failure), report);
                    }
                }
            }
        };
        let (result, report, alive) = environment.invoke(request_id, event, timeout).await;
        if alive && let Ok(mut idle) = self.idle.lock() {
            idle.push(environment);
        }
        (result, report)
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
