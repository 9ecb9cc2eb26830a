//! The connection under an [`super::AmqpQueue`]: connecting and
//! consuming, the supervisor that feeds deliveries to the runner and
//! reconnects, revoking the deliveries of a lost connection, and the
//! bound on every broker call.

use std::collections::HashSet;
use std::sync::{Arc, Mutex as SyncMutex};
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicQosOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection, ConnectionProperties};
use tokio::sync::{Mutex, RwLock, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::acks::{Unacked, receipt};
use super::{AmqpOptions, CALL_TIMEOUT, LOST};
use crate::queue::headers::{ATTEMPTS, PENDING, decode_indices};
use crate::queue::transport::{Delivery, TransportError};
use shoal_clients::amqp::declare;
use shoal_protocol::topology::Target;

/// A header as text, whatever its AMQP type.
fn header_text(headers: Option<&FieldTable>, name: &str) -> Option<String> {
    let value = headers?.inner().get(name)?;
    Some(match value {
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        AMQPValue::ShortString(s) => s.as_str().to_owned(),
        AMQPValue::ShortShortInt(n) => n.to_string(),
        AMQPValue::ShortShortUInt(n) => n.to_string(),
        AMQPValue::ShortInt(n) => n.to_string(),
        AMQPValue::ShortUInt(n) => n.to_string(),
        AMQPValue::LongInt(n) => n.to_string(),
        AMQPValue::LongUInt(n) => n.to_string(),
        AMQPValue::LongLongInt(n) => n.to_string(),
        _ => return None,
    })
}

/// The connection in use: its publishing channel, and the token cancelled
/// when that connection is lost.
#[derive(Clone)]
pub(super) struct Live {
    pub(super) connection: Arc<Connection>,
    pub(super) publisher: Channel,
    pub(super) lost: CancellationToken,
}

pub(super) struct Shared {
    pub(super) target: Target,
    pub(super) options: AmqpOptions,
    pub(super) live: RwLock<Option<Live>>,
    pub(super) unacked: SyncMutex<Unacked>,
    pub(super) retry_queues: Mutex<HashSet<u64>>,
    /// The queue was declared with shoal's arguments, so a rejected message
    /// goes to `Q.dlx`; false for a queue found with other arguments.
    pub(super) dead_letters_on_reject: std::sync::atomic::AtomicBool,
}

pub(super) fn amqp_error(
    operation: &'static str,
    queue: &str,
    e: impl std::fmt::Display,
) -> TransportError {
    TransportError {
        operation,
        queue: queue.to_owned(),
        source: e.to_string().into(),
    }
}

/// Runs one broker call, failing it after [`CALL_TIMEOUT`] or as soon as
/// `lost` (its connection is gone) is cancelled: lapin does not always
/// answer a call made on a connection that died under it.
pub(super) async fn bounded<T, E: std::fmt::Display>(
    operation: &'static str,
    queue: &str,
    lost: &CancellationToken,
    call: impl std::future::Future<Output = std::result::Result<T, E>>,
) -> Result<T, TransportError> {
    tokio::select! {
        biased;
        outcome = tokio::time::timeout(CALL_TIMEOUT, call) => match outcome {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(amqp_error(operation, queue, e)),
            Err(_) => Err(amqp_error(
                operation,
                queue,
                format!("no answer from the broker within {} s", CALL_TIMEOUT.as_secs()),
            )),
        },
        () = lost.cancelled() => Err(amqp_error(operation, queue, LOST)),
    }
}

/// A connection with its consumer, ready to deliver.
pub(super) struct Session {
    _connection: Arc<Connection>,
    consumer: lapin::Consumer,
    generation: u64,
    /// Cancelled when this connection is gone: revokes its deliveries.
    lost: CancellationToken,
}

/// Connects, opens a consuming and a publishing (confirm mode) channel,
/// declares the topology and starts the consumer.
pub(super) async fn session_start(shared: &Shared, generation: u64) -> lapin::Result<Session> {
    let queue = &shared.target.queue;
    if let Ok(mut unacked) = shared.unacked.lock() {
        unacked.reset(generation);
    }
    let connection = Arc::new(
        Connection::connect(
            &shared.target.uri,
            ConnectionProperties::default().with_connection_name("shoal-worker".into()),
        )
        .await?,
    );
    let publisher = publishing_channel(&connection).await?;
    let own = declare(
        &connection,
        &publisher,
        queue,
        shared.options.max_attempts,
        None,
    )
    .await?;
    shared
        .dead_letters_on_reject
        .store(own, std::sync::atomic::Ordering::Relaxed);
    let consumer_channel = connection.create_channel().await?;
    consumer_channel
        .basic_qos(shared.options.prefetch.max(1), BasicQosOptions::default())
        .await?;
    let consumer = consumer_channel
        .basic_consume(
            queue.as_str().into(),
            "shoal-worker".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    shared.retry_queues.lock().await.clear();
    let lost = CancellationToken::new();
    *shared.live.write().await = Some(Live {
        connection: connection.clone(),
        publisher,
        lost: lost.clone(),
    });
    Ok(Session {
        _connection: connection,
        consumer,
        generation,
        lost,
    })
}

/// A new channel on `connection` in confirm mode, for publishing.
pub(super) async fn publishing_channel(connection: &Connection) -> lapin::Result<Channel> {
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    Ok(channel)
}

/// Feeds deliveries to the runner and reconnects when the connection
/// drops, until the runner is gone.
pub(super) async fn supervise(shared: Arc<Shared>, tx: mpsc::Sender<Delivery>, first: Session) {
    let mut session = Some(first);
    let mut generation = 1;
    let mut failures: u32 = 0;
    loop {
        if let Some(mut current) = session.take() {
            failures = 0;
            while let Some(next) = current.consumer.next().await {
                match next {
                    Ok(message) => {
                        let delivery =
                            to_delivery(&shared, current.generation, &current.lost, message);
                        if tx.send(delivery).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        warn!(queue = %shared.target.queue, error = %e, "connection lost; reconnecting");
                        break;
                    }
                }
            }
            // The broker requeues every unacked delivery of a lost
            // connection: revoke them here (the runner lets them go, calls
            // waiting on them fail) before anything else can block.
            current.lost.cancel();
            if let Ok(mut unacked) = shared.unacked.lock() {
                // Generation 0 is never a connection's.
                unacked.reset(0);
            }
            *shared.live.write().await = None;
        }
        if tx.is_closed() {
            return;
        }
        tokio::time::sleep(reconnect_delay(failures)).await;
        generation += 1;
        match session_start(&shared, generation).await {
            Ok(next) => {
                info!(queue = %shared.target.queue, "reconnected");
                session = Some(next);
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                if failures == 1 || failures.is_multiple_of(10) {
                    warn!(queue = %shared.target.queue, error = %e, failures, "cannot reconnect yet");
                }
            }
        }
    }
}

/// Wait before the next connection attempt after `failures` failed ones:
/// 100 ms doubling, never more than 1 s, so a broker that is back is used
/// again within about a second.
fn reconnect_delay(failures: u32) -> Duration {
    Duration::from_millis(100)
        .saturating_mul(1 << failures.min(4))
        .min(Duration::from_secs(1))
}

fn to_delivery(
    shared: &Shared,
    generation: u64,
    lost: &CancellationToken,
    message: lapin::message::Delivery,
) -> Delivery {
    let receipt = receipt(generation, message.delivery_tag);
    let headers = message.properties.headers().as_ref();
    let earlier = header_text(headers, "x-delivery-count").and_then(|v| v.parse::<u32>().ok());
    let receive_count = match earlier {
        Some(n) => n.saturating_add(1),
        None if message.redelivered => 2,
        None => 1,
    };
    let message_id = message
        .properties
        .message_id()
        .as_ref()
        .map_or_else(|| receipt.clone(), |id| id.as_str().to_owned());
    let sent_at = message
        .properties
        .timestamp()
        .map(|secs| UNIX_EPOCH + Duration::from_secs(secs));
    let pending = header_text(headers, PENDING).and_then(|v| decode_indices(&v));
    let carried_attempts = header_text(headers, ATTEMPTS)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if let Ok(mut unacked) = shared.unacked.lock() {
        unacked.insert(generation, message.delivery_tag, message.acker);
    }
    Delivery {
        message_id,
        body: Bytes::from(message.data),
        receipt,
        receive_count,
        sent_at,
        pending,
        carried_attempts,
        group: None,
        revoked: lost.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnect_attempts_double_from_100_ms_and_never_wait_more_than_1_s() {
        let delays: Vec<u64> = (0..8)
            .map(|n| reconnect_delay(n).as_millis() as u64)
            .collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000, 1000, 1000]);
        assert_eq!(reconnect_delay(u32::MAX), Duration::from_secs(1));
    }

    #[tokio::test]
    async fn a_call_waiting_on_a_lost_connection_fails_at_once() {
        let lost = CancellationToken::new();
        lost.cancel();
        let never = std::future::pending::<std::result::Result<(), String>>();
        let err = bounded("delete", "jobs", &lost, never)
            .await
            .expect_err("a lost connection fails the call");
        assert_eq!(err.operation, "delete");
        assert!(err.to_string().contains("connection was lost"), "{err}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_the_broker_never_answers_fails_after_the_call_timeout() {
        let alive = CancellationToken::new();
        let never = std::future::pending::<std::result::Result<(), String>>();
        let err = bounded("dead_letter", "jobs", &alive, never)
            .await
            .expect_err("no answer is an error");
        assert!(
            err.to_string().contains("no answer from the broker"),
            "{err}"
        );
    }

    fn amqp_value() -> impl proptest::strategy::Strategy<Value = AMQPValue> {
        use proptest::prelude::*;
        prop_oneof![
            any::<String>().prop_map(|s| AMQPValue::LongString(s.into())),
            prop::collection::vec(any::<u8>(), 0..64)
                .prop_map(|b| AMQPValue::LongString(lapin::types::LongString::from(b))),
            any::<i8>().prop_map(AMQPValue::ShortShortInt),
            any::<u8>().prop_map(AMQPValue::ShortShortUInt),
            any::<i16>().prop_map(AMQPValue::ShortInt),
            any::<u16>().prop_map(AMQPValue::ShortUInt),
            any::<i32>().prop_map(AMQPValue::LongInt),
            any::<u32>().prop_map(AMQPValue::LongUInt),
            any::<i64>().prop_map(AMQPValue::LongLongInt),
            any::<f64>().prop_map(AMQPValue::Double),
            any::<bool>().prop_map(AMQPValue::Boolean),
            Just(AMQPValue::Void),
        ]
    }

    proptest::proptest! {
        /// Control headers of any AMQP type, set by whoever publishes,
        /// read as text or ignored; never a panic.
        #[test]
        fn fuzz_control_headers_of_any_type_read_or_are_ignored(
            values in proptest::collection::vec(amqp_value(), 3),
        ) {
            let mut table = FieldTable::default();
            for (name, value) in [PENDING, ATTEMPTS, "x-delivery-count"].into_iter().zip(values) {
                table.insert(name.into(), value);
            }
            for name in [PENDING, ATTEMPTS, "x-delivery-count"] {
                if let Some(text) = header_text(Some(&table), name) {
                    let _ = decode_indices(&text);
                    let _ = text.parse::<u32>();
                }
            }
        }
    }
}
