//! Driver of `bench/sqs-worker.sh`: for each contender and round, fills a
//! fresh queue with MESSAGES small messages, starts the contender, and
//! times it from start until the queue is empty (no visible and no
//! in-flight message). Prints each round (with the contender's CPU time per
//! message), the best and median rate of each contender, each one's ratio
//! to the last contender, and the median start-to-first-receive time.
//!
//!     sqs-bench ENDPOINT MESSAGES ROUNDS LOG_DIR NAME=COMMAND...
//!     sqs-bench startup ENDPOINT STARTS LOG_DIR NAME=COMMAND...
//!
//! Each COMMAND is run through `sh -c` with `$QUEUE` set to the queue URL.
//!
//! `startup` times start-up alone: STARTS times per contender (taking
//! turns, the order swapped every start), a fresh queue holding 10
//! messages, the contender started, and the time from the spawn until its
//! "first receive" line reaches the driver through a pipe (so it counts
//! exec, the dynamic loader and everything the contender does before its
//! first receive is answered); then the contender is killed. The server
//! is warmed up first with a few thousand calls of each kind the
//! contenders make at start-up.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_sqs::types::{QueueAttributeName, SendMessageBatchRequestEntry};
use futures_util::{StreamExt, TryStreamExt};

mod bench;
use bench::{BoxError, Report, Run};

/// Runs `call(i)` for every `i` in `0..n`, 16 at a time; the first error
/// ends it.
async fn concurrently<F, Fut>(n: usize, call: F) -> Result<(), BoxError>
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = Result<(), BoxError>>,
{
    futures_util::stream::iter(0..n)
        .map(Ok)
        .try_for_each_concurrent(16, call)
        .await
}

async fn fill(client: &aws_sdk_sqs::Client, url: &str, messages: usize) -> Result<(), BoxError> {
    concurrently(messages.div_ceil(10), |batch| async move {
        let size = (messages - batch * 10).min(10);
        let mut call = client.send_message_batch().queue_url(url);
        for i in 0..size {
            call = call.entries(
                SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(format!("{{\"n\":{}}}", batch * 10 + i))
                    .build()?,
            );
        }
        call.send().await?;
        Ok(())
    })
    .await
}

/// Calls of every kind a contender makes at start-up, a few thousand
/// times, so that the server's JIT compiler has done its work before the
/// first timed start (a fresh JVM answers the first calls of a kind many
/// times slower).
async fn warm_up(client: &aws_sdk_sqs::Client, dlq_arn: &str) -> Result<(), BoxError> {
    let url = create_queue(client, "startup-warm-up", dlq_arn).await?;
    let url = url.as_str();
    concurrently(3000, |i| async move {
        match i % 3 {
            0 => drop(
                client
                    .get_queue_attributes()
                    .queue_url(url)
                    .attribute_names(QueueAttributeName::VisibilityTimeout)
                    .attribute_names(QueueAttributeName::RedrivePolicy)
                    .send()
                    .await?,
            ),
            1 => drop(
                client
                    .get_queue_url()
                    .queue_name("startup-warm-up")
                    .send()
                    .await?,
            ),
            _ => drop(
                client
                    .receive_message()
                    .queue_url(url)
                    .max_number_of_messages(10)
                    .send()
                    .await?,
            ),
        }
        Ok(())
    })
    .await?;
    client.delete_queue().queue_url(url).send().await?;
    Ok(())
}

/// A fresh queue with a redrive policy to `dlq_arn`.
async fn create_queue(
    client: &aws_sdk_sqs::Client,
    name: &str,
    dlq_arn: &str,
) -> Result<String, BoxError> {
    Ok(client
        .create_queue()
        .queue_name(name)
        .attributes(QueueAttributeName::VisibilityTimeout, "30")
        .attributes(
            QueueAttributeName::RedrivePolicy,
            format!(r#"{{"deadLetterTargetArn":"{dlq_arn}","maxReceiveCount":"5"}}"#),
        )
        .send()
        .await?
        .queue_url()
        .unwrap_or_default()
        .to_owned())
}

/// The ARN of a (new or existing) queue `name`, for redrive policies.
async fn dead_letter_arn(client: &aws_sdk_sqs::Client, name: &str) -> Result<String, BoxError> {
    let url = client
        .create_queue()
        .queue_name(name)
        .send()
        .await?
        .queue_url()
        .unwrap_or_default()
        .to_owned();
    Ok(client
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await?
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
        .ok_or("no dead-letter queue ARN")?)
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
    if let [mode, endpoint, starts, log_dir, contenders @ ..] = args.as_slice()
        && mode == "startup"
    {
        let client = client(endpoint).await;
        return startup(
            &client,
            starts.parse()?,
            log_dir,
            &bench::contenders(contenders)?,
        )
        .await;
    }
    let [endpoint, messages, rounds, log_dir, contenders @ ..] = args.as_slice() else {
        return Err("usage: sqs-bench ENDPOINT MESSAGES ROUNDS LOG_DIR NAME=COMMAND...\n       sqs-bench startup ENDPOINT STARTS LOG_DIR NAME=COMMAND...".into());
    };
    let messages: usize = messages.parse()?;
    let rounds: usize = rounds.parse()?;
    let contenders = bench::contenders(contenders)?;
    let client = client(endpoint).await;
    let dlq_arn = dead_letter_arn(&client, "bench-dlq").await?;
    let mut report = Report::new(&contenders);
    // Round 0 warms the server up and is not counted.
    for round in 0..=rounds {
        for (index, (name, command)) in contenders.iter().enumerate() {
            let queue = format!("bench-{name}-{round}");
            let url = create_queue(&client, &queue, &dlq_arn).await?;
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

async fn client(endpoint: &str) -> aws_sdk_sqs::Client {
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .load()
        .await;
    aws_sdk_sqs::Client::new(&config)
}

/// The start-up trial (see the module's documentation). Prints one
/// `sample startup-ms START NAME MS` line per start for
/// `bench/lib/paired.py`, and the contender's own view (`since_start_ms`,
/// from its `main`) beside it.
async fn startup(
    client: &aws_sdk_sqs::Client,
    starts: usize,
    log_dir: &str,
    contenders: &[(&str, &str)],
) -> Result<(), BoxError> {
    let dlq_arn = dead_letter_arn(client, "startup-dlq").await?;
    warm_up(client, &dlq_arn).await?;
    let mut order: Vec<usize> = (0..contenders.len()).collect();
    // Start 0 warms the page cache up and is not counted.
    for start in 0..=starts {
        for &index in &order {
            let (name, command) = contenders[index];
            let queue = format!("startup-{name}-{start}");
            let url = create_queue(client, &queue, &dlq_arn).await?;
            fill(client, &url, 10).await?;
            let log_path = std::path::Path::new(log_dir).join(format!("{queue}.log"));
            let (spawn_to_first, own) = time_to_line(command, &url, "first receive", &log_path)?;
            let ms = spawn_to_first.as_secs_f64() * 1000.0;
            println!(
                "start {start}{} {name:>10}: first receive {ms:.1} ms after the spawn ({} ms by its own clock)",
                if start == 0 { " (warm-up)" } else { "" },
                own.map_or("?".into(), |v| format!("{v:.1}")),
            );
            if start > 0 {
                println!("sample startup-ms {start} {name} {ms:.2}");
                if let Some(own) = own {
                    println!("sample own-clock-ms {start} {name} {own:.2}");
                }
            }
            client.delete_queue().queue_url(&url).send().await?;
        }
        order.reverse();
    }
    Ok(())
}

/// Starts `command` through `sh -c` with `$QUEUE` set, and waits (up to
/// 30 s) for a line of its output containing `needle`: the time from the
/// spawn until that line reached this process (through a pipe, read as it
/// comes), and the line's `since_start_ms`. The contender is killed then;
/// its whole output goes to `log_path`.
fn time_to_line(
    command: &str,
    queue: &str,
    needle: &str,
    log_path: &std::path::Path,
) -> Result<(Duration, Option<f64>), BoxError> {
    use std::io::{BufRead, Write};
    let (reader, writer) = std::io::pipe()?;
    let mut log = std::fs::File::create(log_path)?;
    let mut spawn = Command::new("sh");
    spawn
        .args(["-c", command])
        .env("QUEUE", queue)
        .stdin(Stdio::null())
        .stdout(writer.try_clone()?)
        .stderr(writer);
    let started = Instant::now();
    let mut child = spawn.spawn()?;
    // The write ends now live in the child alone: the reader sees the end
    // of the output when the child dies.
    drop(spawn);
    let (found, seen) = std::sync::mpsc::channel();
    let wanted = needle.to_owned();
    let copier = std::thread::spawn(move || {
        let mut found = Some(found);
        for line in std::io::BufReader::new(reader).lines() {
            let Ok(line) = line else { break };
            if line.contains(&wanted)
                && let Some(found) = found.take()
            {
                let _ = found.send((Instant::now(), bench::first_receive_ms(&line)));
            }
            let _ = writeln!(log, "{line}");
        }
    });
    let result = seen.recv_timeout(Duration::from_secs(30));
    let _ = child.kill();
    let _ = child.wait();
    let _ = copier.join();
    let (at, own) = result.map_err(|_| {
        format!(
            "{} printed no \"{needle}\" line within 30 s; see {}",
            program(command),
            log_path.display()
        )
    })?;
    Ok((at.duration_since(started), own))
}

/// The program a command runs, for messages.
fn program(command: &str) -> &str {
    command
        .split_whitespace()
        .find(|w| w.starts_with('/'))
        .unwrap_or(command)
}
