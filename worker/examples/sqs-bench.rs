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

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_sqs::types::{QueueAttributeName, SendMessageBatchRequestEntry};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

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

fn first_receive_ms(log: &str) -> Option<f64> {
    let line = log.lines().find(|l| l.contains("first receive"))?;
    let rest = &line[line.find("since_start_ms")? + "since_start_ms".len()..];
    let number: String = rest
        .chars()
        .skip_while(|c| !c.is_ascii_digit())
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    number.parse().ok()
}

/// User + system CPU seconds of a running process (Linux `/proc`; the
/// clock tick is 100 Hz on every Linux this runs on).
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok());
    Some((ticks(11)? + ticks(12)?) / 100.0)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [endpoint, messages, rounds, log_dir, contenders @ ..] = args.as_slice() else {
        return Err("usage: sqs-bench ENDPOINT MESSAGES ROUNDS LOG_DIR NAME=COMMAND...".into());
    };
    let messages: usize = messages.parse()?;
    let rounds: usize = rounds.parse()?;
    let contenders: Vec<(&str, &str)> = contenders
        .iter()
        .map(|c| c.split_once('=').ok_or("contender must be NAME=COMMAND"))
        .collect::<Result<_, _>>()?;
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
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); contenders.len()];
    let mut firsts: Vec<Vec<f64>> = vec![Vec::new(); contenders.len()];
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
            let log = std::fs::File::create(&log_path)?;
            let started = Instant::now();
            let mut child = Command::new("sh")
                .args(["-c", command])
                .env("QUEUE", &url)
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()?;
            loop {
                tokio::time::sleep(Duration::from_millis(20)).await;
                if backlog(&client, &url).await? == 0 {
                    break;
                }
                if let Some(status) = child.try_wait()? {
                    return Err(format!(
                        "{name} exited early ({status}); see {}",
                        log_path.display()
                    )
                    .into());
                }
                if started.elapsed() > Duration::from_secs(600) {
                    let _ = child.kill();
                    return Err(format!("{name} did not drain the queue in 600 s").into());
                }
            }
            let elapsed = started.elapsed();
            let cpu = cpu_seconds(child.id());
            let _ = child.kill();
            let _ = child.wait();
            let rate = messages as f64 / elapsed.as_secs_f64();
            let first = first_receive_ms(&std::fs::read_to_string(&log_path)?);
            println!(
                "round {round}{} {name:>10}: {messages} messages in {:.2} s = {rate:.0} msg/s, {} µs CPU/msg, first receive {} ms",
                if round == 0 { " (warm-up)" } else { "" },
                elapsed.as_secs_f64(),
                cpu.map_or("?".into(), |s| format!("{:.0}", s * 1e6 / messages as f64)),
                first.map_or("?".into(), |ms| format!("{ms:.1}"))
            );
            if round > 0 {
                rates[index].push(rate);
                if let Some(ms) = first {
                    firsts[index].push(ms);
                }
            }
        }
    }
    println!();
    let best: Vec<f64> = rates
        .iter()
        .map(|r| r.iter().copied().fold(0.0, f64::max))
        .collect();
    for (index, (name, _)) in contenders.iter().enumerate() {
        println!(
            "{name:>10}: best {:.0} msg/s, median {:.0} msg/s, median start-to-first-receive {:.1} ms",
            best[index],
            median(rates[index].clone()),
            median(firsts[index].clone())
        );
    }
    // Every contender against the last one (the baseline).
    if let Some(((reference, _), others)) = contenders.split_last() {
        let last = contenders.len() - 1;
        for (index, (name, _)) in others.iter().enumerate() {
            println!(
                "ratio {name}/{reference} = {:.2}x (best), {:.2}x (median)",
                best[index] / best[last],
                median(rates[index].clone()) / median(rates[last].clone())
            );
        }
    }
    Ok(())
}
