//! Redrive on RabbitMQ: dead letters moved from `<queue>.dlq` back to the
//! work queue (see [`crate::redrive`] for the contract).

use lapin::Confirmation;
use lapin::options::{BasicAckOptions, BasicGetOptions, BasicPublishOptions};
use lapin::types::FieldTable;

use super::{Amqp, Broker, topology};
use crate::error::Result;
use crate::redrive::keeps;

impl Amqp {
    /// Moves up to `limit` messages from `queue`'s dead-letter queue back
    /// to `queue`, each confirmed before it is acked; returns how many moved
    /// and whether the dead-letter queue is now empty.
    pub async fn redrive(
        &self,
        broker: &Broker,
        queue: &str,
        limit: usize,
    ) -> Result<(usize, bool)> {
        let dlq = topology::dead_letter_queue(queue);
        let fail = || Self::error(broker, queue, "redriving dead letters");
        let (_, channel) = self.channel(broker).await.map_err(fail())?;
        let moved = move_page(&channel, &dlq, queue, limit).await;
        let _ = channel.close(200, "redriven".into()).await;
        moved.map_err(fail())
    }
}

/// Whether `error` is the broker saying the queue does not exist.
fn not_found(error: &lapin::Error) -> bool {
    use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
    matches!(
        error.kind(),
        lapin::ErrorKind::ProtocolError(amqp)
            if *amqp.kind() == AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND)
    )
}

async fn move_page(
    channel: &lapin::Channel,
    dlq: &str,
    queue: &str,
    limit: usize,
) -> std::result::Result<(usize, bool), String> {
    let mut moved = 0;
    while moved < limit {
        let got = match channel
            .basic_get(dlq.into(), BasicGetOptions { no_ack: false })
            .await
        {
            Ok(Some(got)) => got,
            Ok(None) => return Ok((moved, true)),
            // A queue shoal did not declare may have no dead-letter queue:
            // nothing to redrive.
            Err(e) if not_found(&e) => return Ok((moved, true)),
            Err(e) => return Err(format!("basic.get from {dlq}: {e}")),
        };
        let delivery = got.delivery;
        let mut properties = delivery.properties.clone();
        if let Some(headers) = delivery.properties.headers() {
            let mut kept = FieldTable::default();
            for (name, value) in headers.inner() {
                if keeps(name.as_str()) {
                    kept.insert(name.clone(), value.clone());
                }
            }
            properties = properties.with_headers(kept);
        }
        let options = BasicPublishOptions {
            mandatory: true,
            ..BasicPublishOptions::default()
        };
        let confirm = channel
            .basic_publish("".into(), queue.into(), options, &delivery.data, properties)
            .await
            .map_err(|e| format!("publishing to {queue}: {e}"))?
            .await
            .map_err(|e| format!("publishing to {queue}: {e}"))?;
        match confirm {
            Confirmation::Ack(None) => {}
            // Not acked: the dead letter goes back to its queue when the
            // channel closes.
            Confirmation::Ack(Some(_)) => return Err(format!("no queue {queue}: returned")),
            Confirmation::Nack(_) => {
                return Err(format!("the broker refused a message for {queue}"));
            }
            Confirmation::NotRequested => {
                return Err("the channel is not in confirm mode".to_owned());
            }
        }
        delivery
            .acker
            .ack(BasicAckOptions::default())
            .await
            .map_err(|e| {
                format!("acking a redriven dead letter on {dlq} (it is on {queue} too and may run twice): {e}")
            })?;
        moved += 1;
    }
    Ok((moved, false))
}
