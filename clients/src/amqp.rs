//! The broker calls the worker, the operator, the kubectl plugin and the
//! test harness share: declaring a queue's topology (named by
//! [`shoal_protocol::topology`]), a passive count, confirmed publishes.

use lapin::options::{
    BasicPublishOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ExchangeKind};
use shoal_protocol::topology::{OWNER_ARGUMENT, dead_letter_exchange, dead_letter_queue};
use tracing::warn;

/// An AMQP argument table of `entries`.
pub fn table(entries: &[(&str, AMQPValue)]) -> FieldTable {
    let mut table = FieldTable::default();
    for (name, value) in entries {
        table.insert(ShortString::from(*name), value.clone());
    }
    table
}

/// An AMQP long-string value.
pub fn long_string(value: &str) -> AMQPValue {
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
