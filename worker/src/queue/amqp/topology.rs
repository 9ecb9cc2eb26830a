//! The AMQP side of a `--queue` URL and the topology shoal declares: the
//! quorum queue, its dead-letter exchange and queue, and retry queues with
//! one TTL each; and the two broker calls the operator, the test harness
//! and the benchmark share with the worker (a passive count, confirmed
//! publishes).

use std::time::Duration;

use lapin::options::{
    BasicPublishOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ExchangeKind};
use tracing::warn;

/// Retry queue TTLs: powers of two seconds up to this.
pub const MAX_RETRY_S: u64 = 1024;

/// Where to connect and what to consume, from a `--queue` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The connection URI (scheme, credentials, host, port, vhost).
    pub uri: String,
    /// The queue's name.
    pub queue: String,
}

/// Splits `amqp[s]://…/vhost/queue` into connection URI and queue name.
pub fn parse_target(url: &str) -> std::result::Result<Target, String> {
    let rest = url
        .strip_prefix("amqp://")
        .or_else(|| url.strip_prefix("amqps://"))
        .ok_or_else(|| "not an amqp:// or amqps:// URL".to_owned())?;
    let scheme_len = url.len() - rest.len();
    let (authority, path) = rest
        .split_once('/')
        .ok_or_else(|| "no queue name: expected amqp://host/vhost/queue".to_owned())?;
    let (vhost, queue) = match path.rsplit_once('/') {
        Some((vhost, queue)) => (Some(vhost), queue),
        None => (None, path),
    };
    let queue = percent_encoding::percent_decode_str(queue)
        .decode_utf8()
        .map_err(|e| format!("queue name is not UTF-8: {e}"))?
        .into_owned();
    if queue.is_empty() {
        return Err("no queue name: expected amqp://host/vhost/queue".into());
    }
    let mut uri = format!("{}{authority}", &url[..scheme_len]);
    if let Some(vhost) = vhost {
        uri.push('/');
        uri.push_str(vhost);
    }
    Ok(Target { uri, queue })
}

/// Name of the retry queue of `queue` whose messages wait `bucket` seconds.
pub fn retry_queue(queue: &str, bucket: u64) -> String {
    format!("{queue}.retry.{bucket}s")
}

/// Every retry queue `queue` may have (one per bucket, 1 s to
/// [`MAX_RETRY_S`]).
pub fn retry_queues(queue: &str) -> Vec<String> {
    std::iter::successors(Some(1_u64), |b| (*b < MAX_RETRY_S).then_some(b * 2))
        .map(|bucket| retry_queue(queue, bucket))
        .collect()
}

/// Name of the dead-letter exchange of `queue`.
pub fn dead_letter_exchange(queue: &str) -> String {
    format!("{queue}.dlx")
}

/// Name of the dead-letter queue of `queue`.
pub fn dead_letter_queue(queue: &str) -> String {
    format!("{queue}.dlq")
}

/// The retry queue for `delay`: its TTL in seconds (a power of two).
pub fn retry_bucket(delay: Duration) -> u64 {
    let secs = delay.as_secs() + u64::from(delay.subsec_nanos() > 0);
    secs.max(1).next_power_of_two().min(MAX_RETRY_S)
}

pub(super) fn table(entries: &[(&str, AMQPValue)]) -> FieldTable {
    let mut table = FieldTable::default();
    for (name, value) in entries {
        table.insert(ShortString::from(*name), value.clone());
    }
    table
}

pub(super) fn long_string(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value))
}

/// Messages ready in `queue`, from a passive declare on a channel of its
/// own (an error closes the channel it happens on); an error if `queue`
/// does not exist.
pub async fn ready_count(connection: &Connection, queue: &str) -> lapin::Result<u32> {
    let probe = connection.create_channel().await?;
    let declared = probe
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await;
    let _ = probe.close(200, "probed".into()).await;
    declared.map(|q| q.message_count())
}

/// Publishes `messages` (`(message id, body)`) to `queue` through the
/// default exchange, persistent and mandatory, and waits for every confirm
/// (the channel must be in confirm mode). Fails on a nack, and on a
/// message no queue took (returned: the queue does not exist), instead of
/// letting it vanish.
pub async fn publish_confirmed(
    channel: &Channel,
    queue: &str,
    messages: &[(Option<&str>, &[u8])],
) -> std::result::Result<(), String> {
    let mut confirms = Vec::with_capacity(messages.len());
    for &(id, body) in messages {
        let mut properties = BasicProperties::default().with_delivery_mode(2);
        if let Some(id) = id {
            properties = properties.with_message_id(id.into());
        }
        let options = BasicPublishOptions {
            mandatory: true,
            ..BasicPublishOptions::default()
        };
        let confirm = channel
            .basic_publish("".into(), queue.into(), options, body, properties)
            .await
            .map_err(|e| format!("message {}: {e}", id.unwrap_or("?")))?;
        confirms.push((id, confirm));
    }
    for (id, confirm) in confirms {
        let id = id.unwrap_or("?");
        match confirm.await.map_err(|e| format!("message {id}: {e}"))? {
            Confirmation::Ack(None) => {}
            Confirmation::Ack(Some(_)) => {
                return Err(format!(
                    "message {id} was returned: no queue {queue} (deleted, or another broker or vhost?)"
                ));
            }
            Confirmation::Nack(_) => return Err(format!("the broker refused message {id} (nack)")),
            Confirmation::NotRequested => {
                return Err(format!("message {id}: the channel is not in confirm mode"));
            }
        }
    }
    Ok(())
}

/// Queue argument naming the uid of the BatchJob the operator declared a
/// queue for. RabbitMQ keeps arguments it does not know and leaves them out
/// of its equivalence check, so a worker declaring the queue without it is
/// still equivalent.
pub const OWNER_ARGUMENT: &str = "x-shoal-batchjob-uid";

/// Declares `queue` (quorum, dead-lettering to `queue.dlx`), the exchange
/// and the dead-letter queue; an existing `queue` declared with other
/// arguments (`PRECONDITION_FAILED`) is used as it is, and `false` is
/// returned: that queue may have no dead-letter exchange, so a message
/// rejected from it is gone. Idempotent. The worker calls it when it
/// connects; the operator calls it before it publishes chunks, with the
/// job's uid as `owner` ([`OWNER_ARGUMENT`] on both queues).
pub async fn declare(
    connection: &Connection,
    channel: &Channel,
    queue: &str,
    max_attempts: u32,
    owner: Option<&str>,
) -> lapin::Result<bool> {
    let dlx = dead_letter_exchange(queue);
    let dlq = dead_letter_queue(queue);
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    let quorum = || long_string("quorum");
    channel
        .exchange_declare(
            dlx.as_str().into(),
            ExchangeKind::Fanout,
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    let owned = |mut arguments: Vec<(&'static str, AMQPValue)>| {
        if let Some(owner) = owner {
            arguments.push((OWNER_ARGUMENT, long_string(owner)));
        }
        table(&arguments)
    };
    channel
        .queue_declare(
            dlq.as_str().into(),
            durable,
            owned(vec![("x-queue-type", quorum())]),
        )
        .await?;
    channel
        .queue_bind(
            dlq.as_str().into(),
            dlx.as_str().into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let arguments = owned(vec![
        ("x-queue-type", quorum()),
        ("x-dead-letter-exchange", long_string(&dlx)),
        (
            "x-delivery-limit",
            AMQPValue::LongInt(i32::try_from(max_attempts).unwrap_or(i32::MAX)),
        ),
    ]);
    match channel
        .queue_declare(queue.into(), durable, arguments)
        .await
    {
        Ok(_) => Ok(true),
        Err(e) if precondition_failed(&e) => {
            // PRECONDITION_FAILED closes the channel: look with a new one.
            warn!(queue, error = %e, "the queue exists with other arguments; using it as it is");
            ready_count(connection, queue).await?;
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

/// Whether `error` is the broker saying a queue exists with other
/// arguments.
fn precondition_failed(error: &lapin::Error) -> bool {
    use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
    matches!(
        error.kind(),
        lapin::ErrorKind::ProtocolError(amqp)
            if *amqp.kind() == AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_urls_split_into_connection_and_queue() {
        assert_eq!(
            parse_target("amqp://shoal:secret@127.0.0.1:5672/%2f/thumbnails"),
            Ok(Target {
                uri: "amqp://shoal:secret@127.0.0.1:5672/%2f".into(),
                queue: "thumbnails".into(),
            })
        );
        assert_eq!(
            parse_target("amqps://broker/jobs"),
            Ok(Target {
                uri: "amqps://broker".into(),
                queue: "jobs".into(),
            })
        );
        assert_eq!(
            parse_target("amqp://u@h/media/photo%20jobs").map(|t| t.queue),
            Ok("photo jobs".to_owned())
        );
        assert!(parse_target("https://sqs/jobs").is_err());
        assert!(parse_target("amqp://host").is_err());
        assert!(parse_target("amqp://host/vhost/").is_err());
    }

    #[test]
    fn retry_delays_round_up_to_a_power_of_two_seconds() {
        assert_eq!(retry_bucket(Duration::from_millis(200)), 1);
        assert_eq!(retry_bucket(Duration::from_secs(1)), 1);
        assert_eq!(retry_bucket(Duration::from_millis(1500)), 2);
        assert_eq!(retry_bucket(Duration::from_secs(5)), 8);
        assert_eq!(retry_bucket(Duration::from_secs(5000)), MAX_RETRY_S);
        let names = retry_queues("jobs");
        assert_eq!(names.len(), 11);
        assert_eq!(names.first().map(String::as_str), Some("jobs.retry.1s"));
        assert_eq!(names.last().map(String::as_str), Some("jobs.retry.1024s"));
    }
}
