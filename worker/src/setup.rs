//! What every mode of a handler binary starts from, built from the
//! command line's shared settings.

use std::time::{Duration, Instant};

use crate::cli::CommonArgs;
use crate::engine::EngineConfig;
use crate::handler::memory_budget_bytes;
use crate::http::Readiness;
use crate::metrics::Metrics;
use crate::retry::RetryPolicy;
use crate::store::{StoreLimits, Stores};

/// What every mode starts from: the engine's settings, the metrics, the
/// readiness flag, and how to open stores.
pub(crate) struct Setup {
    /// The engine's settings (a mode may adjust them before it starts).
    pub config: EngineConfig,
    /// The process's metrics.
    pub metrics: Metrics,
    /// Readiness, served on `/readyz`.
    pub ready: Readiness,
    /// When the process started (the queue worker and Lambda mode report
    /// their start-up time).
    #[cfg_attr(
        not(any(feature = "sqs", feature = "amqp", feature = "lambda")),
        expect(dead_code, reason = "`run` and `invoke` report no start-up time")
    )]
    pub started: Instant,
    force_path_style: Option<bool>,
    max_object_mib: Option<u64>,
    allowed_buckets: Option<Vec<String>>,
}

impl Setup {
    /// The setup `common` describes, for Lambda mode when `lambda`.
    pub fn new(
        common: &CommonArgs,
        lambda: bool,
        metrics: Metrics,
        ready: Readiness,
        started: Instant,
    ) -> Self {
        Self {
            config: engine_config(common, lambda),
            metrics,
            ready,
            started,
            force_path_style: common.s3_force_path_style,
            max_object_mib: common.max_object_mib,
            allowed_buckets: common.allowed_buckets.clone(),
        }
    }

    /// Stores opened under the limits of the current [`Setup::config`]:
    /// objects are read whole up to `--max-object-mib`, else up to the
    /// memory one invocation may use (Lambda mode sets the memory from the
    /// function's before it opens its stores).
    pub fn stores(&self) -> Stores {
        let max_object_bytes = self.max_object_mib.map_or_else(
            || {
                memory_budget_bytes(
                    self.config.memory_mib,
                    u32::try_from(self.config.concurrency).unwrap_or(u32::MAX),
                )
            },
            |mib| mib.saturating_mul(1024 * 1024),
        );
        Stores::new(StoreLimits::new(
            self.force_path_style,
            max_object_bytes,
            self.allowed_buckets.as_deref(),
        ))
    }
}

fn engine_config(common: &CommonArgs, lambda: bool) -> EngineConfig {
    let concurrency = common.concurrency.map(|c| c as usize).unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    // Under Lambda the function's own name (set by Lambda) is the default;
    // elsewhere the binary's.
    let lambda_name = || {
        lambda
            .then(|| std::env::var("AWS_LAMBDA_FUNCTION_NAME").ok())
            .flatten()
    };
    let function_name = common
        .function_name
        .clone()
        .or_else(lambda_name)
        .unwrap_or_else(|| {
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
        invocation_logs: common.invocation_logs,
        retry: RetryPolicy {
            max_attempts: common.max_attempts,
            base_delay: Duration::from_millis(common.retry_base_delay_ms),
            max_delay: Duration::from_millis(common.retry_max_delay_ms),
        },
    }
}

// The tests parse a `run` command line.
#[cfg(all(test, feature = "local"))]
mod tests {
    #![allow(
        clippy::unwrap_used,
        reason = "test code: a panic is how a test reports failure"
    )]

    use super::*;
    use crate::cli::Cli;

    fn setup(args: &[&str]) -> Setup {
        use clap::Parser;
        let mut argv = vec!["t"];
        argv.extend_from_slice(args);
        argv.extend_from_slice(&["run", "--input", "i", "--output", "o"]);
        let cli = Cli::try_parse_from(argv).unwrap();
        Setup::new(
            &cli.common,
            false,
            Metrics::new().unwrap(),
            Readiness::default(),
            Instant::now(),
        )
    }

    #[test]
    fn objects_are_bounded_by_the_memory_of_one_invocation_as_the_mode_sets_it() {
        let mut setup = setup(&["--memory-mib", "1024", "--concurrency", "2"]);
        assert_eq!(
            setup.stores().limits().max_object_bytes,
            memory_budget_bytes(1024, 2)
        );
        // Lambda mode takes the function's memory before it opens stores.
        setup.config.memory_mib = 3008;
        assert_eq!(
            setup.stores().limits().max_object_bytes,
            memory_budget_bytes(3008, 2)
        );
        assert!(memory_budget_bytes(3008, 2) > memory_budget_bytes(1024, 2));
        // An explicit limit wins over memory.
        let setup = setup_with_limit();
        assert_eq!(setup.stores().limits().max_object_bytes, 5 * 1024 * 1024);
    }

    fn setup_with_limit() -> Setup {
        setup(&[
            "--max-object-mib",
            "5",
            "--allowed-buckets",
            " photos , ,thumbs",
        ])
    }

    #[test]
    fn blank_bucket_names_are_not_allowed_buckets() {
        let limits = setup_with_limit().stores().limits().clone();
        assert_eq!(
            limits.allowed_buckets,
            Some(vec!["photos".to_owned(), "thumbs".to_owned()])
        );
    }
}
