//! Driver of `bench/amqp-worker.sh`: for each contender and round, declares
//! a fresh queue with shoal's topology (quorum queue, dead-letter exchange
//! and queue: the same queue for every contender), publishes MESSAGES
//! small messages with confirms, starts the contender, and times it from
//! start until no message is ready. It then lets the contender run half a
//! second more, kills it and checks that the broker gives back no message
//! (an unacknowledged one returns to the queue when its connection
//! closes) and that none was dead-lettered, so a contender is only timed
//! on messages it processed and acknowledged.
//!
//!     amqp-bench AMQP_URI MESSAGES ROUNDS LOG_DIR NAME=COMMAND...
//!
//! Each COMMAND is run through `sh -c` with `$QUEUE` set to
//! `AMQP_URI/<queue>`.

use std::time::Duration;

use lapin::options::ConfirmSelectOptions;
use lapin::{Channel, Connection, ConnectionProperties};

mod bench;
use bench::{BoxError, Report, Run};

async fn fill(channel: &Channel, queue: &str, messages: usize) -> Result<(), BoxError> {
    let bodies: Vec<String> = (0..messages).map(|n| format!("{{\"n\":{n}}}")).collect();
    for window in bodies.chunks(1000) {
        let window: Vec<(Option<&str>, &[u8])> =
            window.iter().map(|b| (None, b.as_bytes())).collect();
        shoal_clients::amqp::publish_confirmed(channel, queue, &window).await?;
    }
    Ok(())
}

async fn ready(connection: &Connection, queue: &str) -> Result<u32, BoxError> {
    Ok(shoal_clients::amqp::ready_count(connection, queue).await?)
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [uri, messages, rounds, log_dir, contenders @ ..] = args.as_slice() else {
        return Err("usage: amqp-bench AMQP_URI MESSAGES ROUNDS LOG_DIR NAME=COMMAND...".into());
    };
    let messages: usize = messages.parse()?;
    let rounds: usize = rounds.parse()?;
    let contenders = bench::contenders(contenders)?;
    let connection = Connection::connect(uri, ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let mut report = Report::new(&contenders);
    // Round 0 warms the broker up and is not counted.
    for round in 0..=rounds {
        for (index, (name, command)) in contenders.iter().enumerate() {
            let queue = format!("bench-{name}-{round}");
            shoal_clients::amqp::declare(&connection, &channel, &queue, 5, None).await?;
            fill(&channel, &queue, messages).await?;
            let log_path = std::path::Path::new(log_dir).join(format!("{queue}.log"));
            let mut run = Run::start(name, command, &format!("{uri}/{queue}"), log_path.clone())?;
            loop {
                tokio::time::sleep(Duration::from_millis(20)).await;
                if ready(&connection, &queue).await? == 0 {
                    break;
                }
                run.check()?;
            }
            let measured = run.measure();
            tokio::time::sleep(Duration::from_millis(500)).await;
            run.stop();
            tokio::time::sleep(Duration::from_millis(500)).await;
            let returned = ready(&connection, &queue).await?;
            let dead = ready(
                &connection,
                &shoal_protocol::topology::dead_letter_queue(&queue),
            )
            .await?;
            if returned > 0 || dead > 0 {
                return Err(format!(
                    "{name} left {returned} messages unacknowledged and dead-lettered {dead}; see {}",
                    log_path.display()
                )
                .into());
            }
            let log = std::fs::read_to_string(&log_path)?;
            report.round(round, index, messages, &measured, &log);
        }
    }
    report.print();
    Ok(())
}
