//! The `worker` command: connect to the queue `--queue` names (SQS or
//! RabbitMQ), then consume until a signal drains the worker.

use std::sync::Arc;
use std::time::Duration;

use super::{MAX_BATCH, Settings, Shutdown, Transport};
use crate::app::exit;
use crate::cli::WorkerArgs;
use crate::engine::Engine;
use crate::error::Result;
use crate::handler::Handler;
use crate::metrics::QueueMetrics;
use crate::setup::Setup;
use crate::signals::Interrupts;

/// Runs `handler` as a queue worker with `args`.
pub(crate) async fn worker_mode<H: Handler>(
    handler: Arc<H>,
    setup: Setup,
    args: &WorkerArgs,
) -> Result<u8> {
    // A queue this binary cannot consume is refused before anything else
    // (no AWS configuration loaded for nothing).
    let amqp = is_amqp(&args.queue);
    #[cfg(not(feature = "amqp"))]
    if amqp {
        return Err(without("RabbitMQ", "amqp"));
    }
    #[cfg(not(feature = "sqs"))]
    if !amqp {
        return Err(without("SQS", "sqs"));
    }
    let mut stores = setup.stores();
    let input = stores
        .input_or_any_bucket(args.input.as_ref(), true)
        .await?;
    let output = stores.open_optional(args.output.as_ref()).await?;
    let config = setup.config;
    let wait = Duration::from_secs(u64::from(args.wait_time));
    // Receiving is latency-bound: one receive loop per concurrent
    // invocation (up to 8), each with a batch of 10 in flight, keeps the
    // invocations fed without holding much more than that.
    let receivers = args
        .receivers
        .map_or(config.concurrency.clamp(1, 8), |n| n as usize);
    let max_in_flight = args
        .max_messages_in_flight
        .map_or((2 * config.concurrency).max(receivers * MAX_BATCH), |n| {
            n as usize
        });
    let settings = Settings {
        receivers,
        max_in_flight,
        grace: Duration::from_secs_f64(args.shutdown_grace),
        started: setup.started,
        record_results: args.record_results.clone(),
        metrics: QueueMetrics::register(&setup.metrics)
            .map_err(|e| crate::error::Error::Metrics(e.to_string()))?,
    };
    #[cfg(feature = "amqp")]
    if amqp {
        if config.timeout > Duration::from_secs(1800) {
            tracing::warn!(
                timeout_s = config.timeout.as_secs_f64(),
                "items may run past RabbitMQ's default consumer_timeout (30 min): unless the broker's is raised, it closes the channel and redelivers the message"
            );
        }
        let transport = super::AmqpQueue::connect(super::AmqpOptions {
            url: args.queue.clone(),
            prefetch: u16::try_from(config.concurrency).unwrap_or(u16::MAX),
            wait_time: wait,
            max_attempts: config.retry.max_attempts,
        })
        .await?;
        let engine = Engine::new(handler, input, output, config, setup.metrics);
        return consume(engine, transport, settings, setup.ready).await;
    }
    #[cfg(feature = "sqs")]
    {
        let sqs = sqs_client(&stores.aws().await, wait);
        let transport = super::SqsQueue::connect(
            sqs,
            super::SqsOptions {
                queue_url: args.queue.clone(),
                dead_letter_queue: args.dead_letter_queue.clone(),
                visibility: args
                    .visibility_timeout
                    .map(|s| Duration::from_secs(u64::from(s))),
                wait_time: wait,
                max_attempts: config.retry.max_attempts,
            },
        )
        .await?;
        if transport.visibility() < config.timeout.saturating_mul(6) {
            tracing::info!(
                visibility_s = transport.visibility().as_secs_f64(),
                timeout_s = config.timeout.as_secs_f64(),
                "the visibility timeout is below 6x the invocation timeout (AWS's advice); leases are extended while items run"
            );
        }
        let engine = Engine::new(handler, input, output, config, setup.metrics);
        consume(engine, transport, settings, setup.ready).await
    }
    // (Refused above already.)
    #[cfg(not(feature = "sqs"))]
    Err(without("SQS", "sqs"))
}

/// The error for a queue of a kind this binary was built without.
#[cfg(not(all(feature = "sqs", feature = "amqp")))]
fn without(kind: &str, feature: &str) -> crate::error::Error {
    crate::error::Error::without_feature(&format!("--queue names a {kind} queue"), kind, feature)
}

/// An SQS client whose calls outlast a long poll of `wait`.
#[cfg(feature = "sqs")]
fn sqs_client(config: &aws_config::SdkConfig, wait: Duration) -> aws_sdk_sqs::Client {
    let timeouts = aws_sdk_sqs::config::timeout::TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(5))
        .operation_attempt_timeout(wait + Duration::from_secs(10))
        .build();
    let config = aws_sdk_sqs::config::Builder::from(config)
        .timeout_config(timeouts)
        .build();
    aws_sdk_sqs::Client::from_conf(config)
}

/// Whether `--queue` names an AMQP queue rather than an SQS queue URL.
fn is_amqp(queue: &str) -> bool {
    queue.starts_with("amqp://") || queue.starts_with("amqps://")
}

/// Runs the queue worker on `transport` until a signal drains it.
async fn consume<H: Handler, T: Transport>(
    engine: Engine<H>,
    transport: T,
    settings: Settings,
    ready: crate::http::Readiness,
) -> Result<u8> {
    let shutdown = Shutdown::default();
    let mut signals = Interrupts::listen()?;
    let watch = shutdown.clone();
    let not_ready = ready.clone();
    let listener = tokio::spawn(async move {
        signals.next().await;
        not_ready.set(false);
        tracing::warn!("shutdown signal: draining (send it again to stop now)");
        watch.drain.cancel();
        signals.next().await;
        tracing::warn!("second signal: stopping now");
        watch.stop.cancel();
    });
    ready.set(true);
    super::run(engine, Arc::new(transport), settings, shutdown).await;
    ready.set(false);
    listener.abort();
    Ok(exit::OK)
}
