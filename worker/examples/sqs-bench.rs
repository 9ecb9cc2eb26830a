//! Driver of `bench/sqs-worker.sh`: for each contender and round, fills a
//! fresh queue with MESSAGES small messages, starts the contender, and
//! times it from start until the queue is empty (no visible and no
//! in-flight message). Prints each round (with the contender's CPU time per
//! message), the best and median rate of each contender, each one's ratio
//! to the last contender, and the median start-to-first-receive time.
//!
//!     sqs-bench ENDPOINT MESSAGES ROUNDS LOG_DIR NAME=COMMAND...
//!
//! Each COMMAND is run through `sh -c` with `$QUEUE` set to the queue URL.

use std::time::Duration;

use aws_sdk_sqs::types::{QueueAttributeName, SendMessageBatchRequestEntry};

mod bench;
use bench::{BoxError, Report, Run};

async fn fill(client: &aws_sdk_sqs::Client, url: &str, messages: usize) -> Result<(), BoxError> {
    let mut sends = tokio::task::JoinSet::new();
    for batch in 0..messages.div_ceil(10) {
        let (client, url) = (client.clone(), url.to_owned());
        let size = (messages - batch * 10).min(10);
        sends.spawn(async move {
            let mut call = client.send_message_batch().queue_url(&url);
            for i in 0..size {
                call = call.entries(
                    SendMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .message_body(format!("{{\"n\":{}}}", batch * 10 + i))
                        .build()?,
                );
            }
            call.send().await?;
            Ok::<(), BoxError>(())
        });
        if sends.len() >= 16
            && let Some(done) = sends.join_next().await
        {
            done??;
        }
    }
    while let Some(done) = sends.join_next().await {
        done??;
    }
    Ok(())
}

async fn backlog(client: &aws_sdk_sqs::Client, url: &str) -> Result<u64, BoxError> {
    let output = client
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await?;
    let attrs = output.attributes().cloned().unwrap_or_default();
    Ok(attrs.values().filter_map(|v| v.parse::<u64>().ok()).sum())
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [endpoint, messages, rounds, log_dir, contenders @ ..] = args.as_slice() else {
        return Err("usage: sqs-bench ENDPOINT MESSAGES ROUNDS LOG_DIR NAME=COMMAND...".into());
    };
    let messages: usize = messages.parse()?;
    let rounds: usize = rounds.parse()?;
    let contenders = bench::contenders(contenders)?;
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint.as_str())
        .load()
        .await;
    let client = aws_sdk_sqs::Client::new(&config);
    let dlq_arn = {
        let url = client
            .create_queue()
            .queue_name("bench-dlq")
            .send()
            .await?
            .queue_url()
            .unwrap_or_default()
            .to_owned();
        client
            .get_queue_attributes()
            .queue_url(&url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await?
            .attributes()
            .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
            .ok_or("no dead-letter queue ARN")?
    };
    let mut report = Report::new(&contenders);
    // Round 0 warms the server up and is not counted.
    for round in 0..=rounds {
        for (index, (name, command)) in contenders.iter().enumerate() {
            let queue = format!("bench-{name}-{round}");
            let url = client
                .create_queue()
                .queue_name(&queue)
                .attributes(QueueAttributeName::VisibilityTimeout, "30")
                .attributes(
                    QueueAttributeName::RedrivePolicy,
                    format!(r#"{{"deadLetterTargetArn":"{dlq_arn}","maxReceiveCount":"5"}}"#),
                )
                .send()
                .await?
                .queue_url()
                .unwrap_or_default()
                .to_owned();
            fill(&client, &url, messages).await?;
            let log_path = std::path::Path::new(log_dir).join(format!("{queue}.log"));
            let mut run = Run::start(name, command, &url, log_path.clone())?;
            loop {
                tokio::time::sleep(Duration::from_millis(20)).await;
                if backlog(&client, &url).await? == 0 {
                    break;
                }
                run.check()?;
            }
            let measured = run.measure();
            run.stop();
            let log = std::fs::read_to_string(&log_path)?;
            report.round(round, index, messages, &measured, &log);
        }
    }
    report.print();
    Ok(())
}
