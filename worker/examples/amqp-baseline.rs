//! The peer of `bench/amqp-worker.sh`: the minimal RabbitMQ consumer people
//! write by hand with lapin. One consumer with prefetch CONCURRENCY; each
//! delivery goes through the no-op handler and is acknowledged. No retries,
//! no dead letters, no metrics, no logs.
//!
//!     amqp-baseline AMQP_URL/QUEUE CONCURRENCY

use std::time::Instant;

use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

async fn noop(_body: &[u8]) -> Result<(), String> {
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let started = Instant::now();
    let mut args = std::env::args().skip(1);
    let target = args
        .next()
        .ok_or("usage: amqp-baseline AMQP_URL/QUEUE CONCURRENCY")?;
    let prefetch: u16 = args.next().ok_or("missing CONCURRENCY")?.parse()?;
    let (uri, queue) = target.rsplit_once('/').ok_or("no queue in the URL")?;
    let connection = Connection::connect(uri, ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    channel
        .basic_qos(prefetch, BasicQosOptions::default())
        .await?;
    let mut consumer = channel
        .basic_consume(
            queue.into(),
            "baseline".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let mut first = true;
    while let Some(delivery) = consumer.next().await {
        let delivery = delivery?;
        if first {
            eprintln!(
                "first receive since_start_ms={:.1}",
                started.elapsed().as_secs_f64() * 1000.0
            );
            first = false;
        }
        if noop(&delivery.data).await.is_ok() {
            delivery.ack(BasicAckOptions::default()).await?;
        }
    }
    Ok(())
}
