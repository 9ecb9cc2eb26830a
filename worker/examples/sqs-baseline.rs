//! The peer of `bench/sqs-worker.sh`: the minimal consumer people write by
//! hand with aws-sdk-sqs. CONCURRENCY tasks each loop: receive up to 10
//! (long poll), run the no-op handler on each message, delete the batch.
//! No retries, no leases, no metrics, no logs.
//!
//!     sqs-baseline QUEUE_URL CONCURRENCY

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use aws_sdk_sqs::types::DeleteMessageBatchRequestEntry;

async fn noop(_body: &str) -> Result<(), String> {
    Ok(())
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

async fn consume(
    client: aws_sdk_sqs::Client,
    url: String,
    reported: Arc<AtomicBool>,
    started: Instant,
) -> Result<(), BoxError> {
    loop {
        let received = client
            .receive_message()
            .queue_url(&url)
            .max_number_of_messages(10)
            .wait_time_seconds(20)
            .send()
            .await?;
        // The first answer of any task (with few messages waiting, one
        // task takes them all and the others wait out their long poll).
        if !reported.swap(true, Ordering::Relaxed) {
            eprintln!(
                "first receive since_start_ms={:.1}",
                started.elapsed().as_secs_f64() * 1000.0
            );
        }
        let mut delete = client.delete_message_batch().queue_url(&url);
        let mut any = false;
        for (i, message) in received.messages().iter().enumerate() {
            if noop(message.body().unwrap_or_default()).await.is_ok() {
                delete = delete.entries(
                    DeleteMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(message.receipt_handle().unwrap_or_default())
                        .build()?,
                );
                any = true;
            }
        }
        if any {
            delete.send().await?;
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let started = Instant::now();
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .ok_or("usage: sqs-baseline QUEUE_URL CONCURRENCY")?;
    let concurrency: usize = args.next().ok_or("missing CONCURRENCY")?.parse()?;
    let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let client = aws_sdk_sqs::Client::new(&config);
    let mut tasks = tokio::task::JoinSet::new();
    let reported = Arc::new(AtomicBool::new(false));
    for _ in 0..concurrency {
        tasks.spawn(consume(
            client.clone(),
            url.clone(),
            reported.clone(),
            started,
        ));
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    Ok(())
}
