//! Prometheus metrics of the runtime. Names follow `docs/metrics.md`, which
//! maps each to its CloudWatch counterpart. Labels are bounded enums only.

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

pub use shoal_protocol::category::{DeadLetterCause, ErrorCategory};

/// Every runtime metric, registered in one registry.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// `shoal_invocations_total{outcome}`.
    pub invocations: IntCounterVec,
    /// `shoal_invocations_total{outcome="success"}`, resolved once (the
    /// hot path skips the label lookup).
    pub invocations_succeeded: IntCounter,
    /// `shoal_invocations_total{outcome="error"}`, resolved once.
    pub invocations_failed: IntCounter,
    /// `shoal_invocation_errors_total{category}`.
    pub errors: IntCounterVec,
    /// `shoal_invocation_duration_seconds`.
    pub duration: Histogram,
    /// `shoal_concurrent_executions`.
    pub concurrent: IntGauge,
    /// `shoal_throttles_total`.
    pub throttles: IntCounter,
    /// `shoal_retries_total`.
    pub retries: IntCounter,
    /// `shoal_dead_letters_total{cause}`.
    pub dead_letters: IntCounterVec,
    /// `shoal_dead_letter_errors_total`.
    pub dead_letter_errors: IntCounter,
    /// `shoal_batch_items{state}` (local mode progress).
    pub batch_items: IntGaugeVec,
}

/// Metrics of the queue consumer: what SQS's CloudWatch metrics say about a
/// queue, seen from the consumer. Only `worker` registers them (see
/// [`QueueMetrics::register`]): a Lambda function or a local run has no
/// queue of its own to report on.
#[derive(Clone)]
pub struct QueueMetrics {
    /// `shoal_messages_received_total`.
    pub received: IntCounter,
    /// `shoal_empty_receives_total`.
    pub empty_receives: IntCounter,
    /// `shoal_messages_deleted_total`.
    pub deleted: IntCounter,
    /// `shoal_messages_released_total`.
    pub released: IntCounter,
    /// `shoal_messages_requeued_total`.
    pub requeued: IntCounter,
    /// `shoal_messages_dead_lettered_total`.
    pub dead_lettered: IntCounter,
    /// `shoal_messages_revoked_total`.
    pub revoked: IntCounter,
    /// `shoal_messages_in_flight`.
    pub in_flight: IntGauge,
    /// `shoal_message_age_seconds`.
    pub age: Histogram,
    /// `shoal_queue_errors_total{operation}`.
    pub errors: IntCounterVec,
}

/// Broker operations, the `operation` label of `shoal_queue_errors_total`.
pub const QUEUE_OPERATIONS: [&str; 8] = [
    "receive",
    "delete",
    "extend",
    "release",
    "requeue",
    "dead_letter",
    "surrender",
    "record_results",
];

/// Seconds: 10 ms to 14 days, SQS's longest retention.
const AGE_BUCKETS: [f64; 14] = [
    0.01,
    0.05,
    0.1,
    0.5,
    1.0,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    900.0,
    3600.0,
    86_400.0,
    1_209_600.0,
];

impl QueueMetrics {
    /// Creates the queue consumer's metrics in `metrics`' registry.
    ///
    /// # Errors
    /// When they are registered there already.
    pub fn register(metrics: &Metrics) -> Result<Self, prometheus::Error> {
        let queue = Self::new()?;
        for collector in queue.collectors() {
            metrics.registry.register(collector)?;
        }
        Ok(queue)
    }

    fn new() -> Result<Self, prometheus::Error> {
        let counter = |name: &str, help: &str| IntCounter::new(name, help);
        let metrics = Self {
            received: counter(
                "shoal_messages_received_total",
                "Messages received from the queue.",
            )?,
            empty_receives: counter(
                "shoal_empty_receives_total",
                "Receive calls that returned no message.",
            )?,
            deleted: counter(
                "shoal_messages_deleted_total",
                "Messages deleted after all their items were done.",
            )?,
            released: counter(
                "shoal_messages_released_total",
                "Messages made visible again (retry backoff or shutdown).",
            )?,
            requeued: counter(
                "shoal_messages_requeued_total",
                "Messages re-sent with only their unfinished items.",
            )?,
            dead_lettered: counter(
                "shoal_messages_dead_lettered_total",
                "Messages (or parts of them) sent to the dead-letter queue.",
            )?,
            revoked: counter(
                "shoal_messages_revoked_total",
                "Messages the broker took back before they were settled (connection lost); delivered again.",
            )?,
            in_flight: IntGauge::new(
                "shoal_messages_in_flight",
                "Messages received and not yet settled.",
            )?,
            age: Histogram::with_opts(
                HistogramOpts::new(
                    "shoal_message_age_seconds",
                    "Time from send to receive of each message (IteratorAge).",
                )
                .buckets(AGE_BUCKETS.to_vec()),
            )?,
            errors: IntCounterVec::new(
                Opts::new(
                    "shoal_queue_errors_total",
                    "Failed calls to the queue, by operation.",
                ),
                &["operation"],
            )?,
        };
        for operation in QUEUE_OPERATIONS {
            metrics.errors.with_label_values(&[operation]);
        }
        Ok(metrics)
    }

    /// Counts a failed call to the queue: `operation` is one of
    /// [`QUEUE_OPERATIONS`].
    pub fn failed(&self, operation: &str) {
        self.errors.with_label_values(&[operation]).inc();
    }

    fn collectors(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        vec![
            Box::new(self.received.clone()),
            Box::new(self.empty_receives.clone()),
            Box::new(self.deleted.clone()),
            Box::new(self.released.clone()),
            Box::new(self.requeued.clone()),
            Box::new(self.dead_lettered.clone()),
            Box::new(self.revoked.clone()),
            Box::new(self.in_flight.clone()),
            Box::new(self.age.clone()),
            Box::new(self.errors.clone()),
        ]
    }
}

impl std::fmt::Debug for QueueMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueMetrics").finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// Seconds: 1 ms to 12 h, the span of a worker's timeout (Lambda's ends
/// at 900 s).
const DURATION_BUCKETS: [f64; 18] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0,
    900.0, 3600.0, 43_200.0,
];

impl Metrics {
    /// Creates and registers the metrics of every mode (the queue
    /// consumer's are [`QueueMetrics::register`]ed by `worker`).
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let invocations = IntCounterVec::new(
            Opts::new(
                "shoal_invocations_total",
                "Handler invocations (attempts), by outcome.",
            ),
            &["outcome"],
        )?;
        let errors = IntCounterVec::new(
            Opts::new(
                "shoal_invocation_errors_total",
                "Failed invocations, by fixed error category.",
            ),
            &["category"],
        )?;
        let duration = Histogram::with_opts(
            HistogramOpts::new(
                "shoal_invocation_duration_seconds",
                "Time from invocation start to result, including input fetch and output store.",
            )
            .buckets(DURATION_BUCKETS.to_vec()),
        )?;
        let concurrent = IntGauge::new(
            "shoal_concurrent_executions",
            "Invocations running right now.",
        )?;
        let throttles = IntCounter::new(
            "shoal_throttles_total",
            "Invocations that waited because every concurrency slot was busy.",
        )?;
        let retries = IntCounter::new(
            "shoal_retries_total",
            "Attempts scheduled again after a retryable failure.",
        )?;
        let dead_letters = IntCounterVec::new(
            Opts::new(
                "shoal_dead_letters_total",
                "Items sent to the dead-letter destination, by cause.",
            ),
            &["cause"],
        )?;
        let dead_letter_errors = IntCounter::new(
            "shoal_dead_letter_errors_total",
            "Failures to write an item to the dead-letter destination.",
        )?;
        let batch_items = IntGaugeVec::new(
            Opts::new(
                "shoal_batch_items",
                "Items of the current local batch, by state.",
            ),
            &["state"],
        )?;
        let build_info = IntGaugeVec::new(
            Opts::new(
                "shoal_build_info",
                "1, labelled with the version of the shoal runtime the handler is built with.",
            ),
            &["component", "version"],
        )?;
        build_info
            .with_label_values(&["worker", env!("CARGO_PKG_VERSION")])
            .set(1);
        for collector in [
            Box::new(build_info) as Box<dyn prometheus::core::Collector>,
            Box::new(invocations.clone()),
            Box::new(errors.clone()),
            Box::new(duration.clone()),
            Box::new(concurrent.clone()),
            Box::new(throttles.clone()),
            Box::new(retries.clone()),
            Box::new(dead_letters.clone()),
            Box::new(dead_letter_errors.clone()),
            Box::new(batch_items.clone()),
        ] {
            registry.register(collector)?;
        }
        // Pre-create every label value so dashboards see zeros, not gaps.
        let invocations_succeeded = invocations.with_label_values(&["success"]);
        let invocations_failed = invocations.with_label_values(&["error"]);
        for category in ErrorCategory::ALL {
            errors.with_label_values(&[category.as_str()]);
        }
        for cause in [DeadLetterCause::Permanent, DeadLetterCause::Exhausted] {
            dead_letters.with_label_values(&[cause.as_str()]);
        }
        Ok(Self {
            registry,
            invocations,
            invocations_succeeded,
            invocations_failed,
            errors,
            duration,
            concurrent,
            throttles,
            retries,
            dead_letters,
            dead_letter_errors,
            batch_items,
        })
    }

    /// The registry, for adapters that add their own metrics.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The text exposition format, as served on `/metrics`.
    pub fn encode(&self) -> Result<String, prometheus::Error> {
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf)?;
        String::from_utf8(buf).map_err(|e| prometheus::Error::Msg(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_series_is_exposed_with_shoal_prefix() {
        let metrics = Metrics::new().unwrap();
        let without_queue = metrics.encode().unwrap();
        assert!(
            !without_queue.contains("shoal_messages_received_total"),
            "only a queue worker reports on a queue:\n{without_queue}"
        );
        QueueMetrics::register(&metrics).unwrap();
        assert!(
            QueueMetrics::register(&metrics).is_err(),
            "registered twice"
        );
        metrics.duration.observe(0.01);
        let text = metrics.encode().unwrap();
        for name in [
            "shoal_invocations_total{outcome=\"success\"} 0",
            "shoal_invocation_errors_total{category=\"timeout\"} 0",
            "shoal_invocation_duration_seconds_count 1",
            "shoal_concurrent_executions 0",
            "shoal_dead_letters_total{cause=\"permanent\"} 0",
            "shoal_messages_received_total 0",
            "shoal_empty_receives_total 0",
            "shoal_queue_errors_total{operation=\"receive\"} 0",
            "shoal_message_age_seconds_count 0",
        ] {
            assert!(text.contains(name), "missing {name} in\n{text}");
        }
    }
}
