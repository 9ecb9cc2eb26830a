//! The operator's side of RabbitMQ: the broker named by a BatchJob's
//! Secret, the queues it declares and deletes, chunks published with
//! publisher confirms, and the backlog read from the management API.
//!
//! Contract:
//! - The broker URL (with its password) is only held in memory: status,
//!   events, logs and the worker Deployment carry [`Broker::public`] URLs
//!   without credentials; the pods read the Secret themselves.
//! - Declaring is idempotent and uses the worker's own declaration
//!   ([`shoal_clients::amqp::declare`]), so operator and workers
//!   agree on the topology: quorum queue `Q` (delivery limit = max
//!   attempts, dead-lettering to `Q.dlx`), fanout `Q.dlx`, quorum `Q.dlq`,
//!   retry queues `Q.retry.<n>s` declared by the workers as needed.
//! - A publish returns once the broker has confirmed every message; a nack
//!   or a lost connection fails the whole batch (the fan-out sends it again
//!   after its checkpoint, see [`crate::fanout`]).
//! - Counts come from the management API, which RabbitMQ refreshes every
//!   `collect_statistics_interval` (5 s by default): they can be that old.
//!   See [`crate::plan::settle`] for how completion allows for it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use lapin::options::{ConfirmSelectOptions, ExchangeDeleteOptions, QueueDeleteOptions};
use lapin::{Channel, Connection, ConnectionProperties};
use shoal_protocol::topology;
use tokio::sync::Mutex;

use crate::error::{Error, Result};
use crate::ownership::{NotOwned, Unusable};

mod broker;
mod management;
mod redrive;
mod secret;
pub use broker::{Broker, encode_queue};
pub use management::Counts;
pub use secret::from_secret;

/// How long connecting to a broker may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// RabbitMQ clients shared by every reconcile: one AMQP connection per
/// broker (reopened when lost) and an HTTP client for the management API.
pub struct Amqp {
    connections: Mutex<HashMap<String, Arc<Connection>>>,
    http: Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>,
    stats_interval: Duration,
    /// Counts the management API requests, when set.
    requests: Option<prometheus::IntCounter>,
}

impl Amqp {
    /// Clients for brokers whose management statistics are refreshed every
    /// `stats_interval` (RabbitMQ's `collect_statistics_interval`).
    pub fn new(stats_interval: Duration) -> Result<Self> {
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()
            .map_err(|e| {
                Error::Config(format!("no TLS roots for the RabbitMQ management API: {e}"))
            })?
            .https_or_http()
            .enable_http1()
            .build();
        Ok(Self {
            connections: Mutex::new(HashMap::new()),
            http: Client::builder(TokioExecutor::new()).build(connector),
            stats_interval,
            requests: None,
        })
    }

    /// The same clients, counting each management API request in
    /// `counter`.
    pub fn counted(mut self, counter: prometheus::IntCounter) -> Self {
        self.requests = Some(counter);
        self
    }

    /// How old the management API's counts can be.
    pub fn stats_interval(&self) -> Duration {
        self.stats_interval
    }

    fn error(broker: &Broker, queue: &str, what: &'static str) -> impl FnOnce(String) -> Error {
        let queue = broker.queue_url(queue);
        move |reason| Error::Queue {
            queue,
            what,
            reason,
        }
    }

    /// The broker's connection (opened again when lost) and a new channel
    /// on it in confirm mode.
    async fn channel(
        &self,
        broker: &Broker,
    ) -> std::result::Result<(Arc<Connection>, Channel), String> {
        let cached = self.connections.lock().await.get(&broker.uri).cloned();
        let connection = match cached {
            Some(connection) if connection.status().connected() => connection,
            _ => {
                // Not under the lock: a broker that does not answer must
                // not hold up the others.
                let connect = Connection::connect(&broker.uri, ConnectionProperties::default());
                let connection = tokio::time::timeout(CONNECT_TIMEOUT, connect)
                    .await
                    .map_err(|_| {
                        format!(
                            "no connection to {} within {CONNECT_TIMEOUT:?}",
                            broker.public
                        )
                    })?
                    .map_err(|e| format!("cannot connect to {}: {e}", broker.public))?;
                let connection = Arc::new(connection);
                self.connections
                    .lock()
                    .await
                    .insert(broker.uri.clone(), connection.clone());
                connection
            }
        };
        let channel = connection
            .create_channel()
            .await
            .map_err(|e| e.to_string())?;
        if let Err(e) = channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
        {
            let _ = channel.close(200, "unused".into()).await;
            return Err(e.to_string());
        }
        Ok((connection, channel))
    }

    /// Declares `queue` and its dead-letter exchange and queue when missing
    /// (see the module contract).
    ///
    /// With `owner` (the job's uid, for queues whose names the operator
    /// derived), the queues declared carry it in
    /// [`topology::OWNER_ARGUMENT`], and a queue of the family that exists
    /// without it is [`NotOwned`]: looked for before declaring anything,
    /// and again after (someone may have declared it in between). A
    /// declaration the broker refuses (`PRECONDITION_FAILED`: that name
    /// with other arguments; `ACCESS_REFUSED`) is [`Unusable::Refused`].
    pub async fn ensure_queues(
        &self,
        broker: &Broker,
        queue: &str,
        max_attempts: u32,
        owner: Option<&str>,
    ) -> Result<std::result::Result<(), Unusable>> {
        if let Some(owner) = owner
            && let Some(not_owned) = self.foreign(broker, queue, owner).await?
        {
            return Ok(Err(not_owned.into()));
        }
        let fail = || Self::error(broker, queue, "declaring the queues");
        let (connection, channel) = self.channel(broker).await.map_err(fail())?;
        let declared =
            shoal_clients::amqp::declare(&connection, &channel, queue, max_attempts, owner).await;
        let _ = channel.close(200, "declared".into()).await;
        if let Err(e) = declared {
            return match refusal(&e) {
                Some(reason) => Ok(Err(Unusable::Refused {
                    queue: broker.queue_url(queue),
                    what: "declaring",
                    reason,
                })),
                None => Err(fail()(e.to_string())),
            };
        }
        if let Some(owner) = owner
            && let Some(not_owned) = self.foreign(broker, queue, owner).await?
        {
            return Ok(Err(not_owned.into()));
        }
        Ok(Ok(()))
    }

    /// Whether `queue`'s family, where it exists, carries `owner` (see
    /// [`Amqp::ensure_queues`]).
    pub async fn owned(
        &self,
        broker: &Broker,
        queue: &str,
        owner: &str,
    ) -> Result<std::result::Result<(), Unusable>> {
        Ok(match self.foreign(broker, queue, owner).await? {
            Some(not_owned) => Err(not_owned.into()),
            None => Ok(()),
        })
    }

    /// The first queue of `queue`'s family that exists without `owner`.
    async fn foreign(&self, broker: &Broker, queue: &str, owner: &str) -> Result<Option<NotOwned>> {
        Ok(self
            .owners(broker, queue)
            .await?
            .into_iter()
            .find(|(_, found)| found.as_deref() != Some(owner))
            .map(|(name, found)| NotOwned {
                queue: broker.queue_url(&name),
                owner: found,
            }))
    }

    /// Publishes `bodies` (`(chunk id, body)`) to `queue` through the
    /// default exchange, persistent, with the chunk id as message id;
    /// returns once the broker has confirmed every one.
    pub async fn publish(
        &self,
        broker: &Broker,
        queue: &str,
        bodies: &[(String, String)],
    ) -> Result<()> {
        let fail = || Self::error(broker, queue, "publishing chunks");
        let (_, channel) = self.channel(broker).await.map_err(fail())?;
        let messages: Vec<(Option<&str>, &[u8])> = bodies
            .iter()
            .map(|(chunk, body)| (Some(chunk.as_str()), body.as_bytes()))
            .collect();
        let published = shoal_clients::amqp::publish_confirmed(&channel, queue, &messages).await;
        let _ = channel.close(200, "published".into()).await;
        published.map_err(fail())
    }

    /// Deletes `queue`, its retry queues, its dead-letter queue and
    /// exchange when they were declared for `owner` (the work queue, or
    /// while it is gone its dead-letter queue, carries it); ones already
    /// gone are fine. Returns `None` when neither queue exists, else
    /// whether it deleted them.
    pub async fn delete_owned(
        &self,
        broker: &Broker,
        queue: &str,
        owner: &str,
    ) -> Result<Option<bool>> {
        let owners = self.owners(broker, queue).await?;
        if owners.is_empty() {
            return Ok(None);
        }
        let ours = |name: &str| {
            owners
                .iter()
                .any(|(n, found)| n == name && found.as_deref() == Some(owner))
        };
        let work_exists = owners.iter().any(|(n, _)| n == queue);
        let ours = if work_exists {
            ours(queue)
        } else {
            ours(&topology::dead_letter_queue(queue))
        };
        if !ours {
            return Ok(Some(false));
        }
        let fail = || Self::error(broker, queue, "deleting the queues");
        let (_, channel) = self.channel(broker).await.map_err(fail())?;
        let deleted = delete_all(&channel, queue).await;
        let _ = channel.close(200, "deleted".into()).await;
        deleted.map_err(fail())?;
        Ok(Some(true))
    }
}

/// The broker's reason when `error` is a refusal that declaring again will
/// not fix.
fn refusal(error: &lapin::Error) -> Option<String> {
    use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
    let lapin::ErrorKind::ProtocolError(amqp) = error.kind() else {
        return None;
    };
    matches!(
        amqp.kind(),
        AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED | AMQPSoftError::ACCESSREFUSED)
    )
    .then(|| amqp.get_message().to_string())
}

/// Deletes `queue`'s family on `channel` (see [`Amqp::delete_queues`]).
async fn delete_all(channel: &Channel, queue: &str) -> std::result::Result<(), String> {
    let mut names = vec![queue.to_owned(), topology::dead_letter_queue(queue)];
    names.extend(topology::retry_queues(queue));
    for name in &names {
        channel
            .queue_delete(name.as_str().into(), QueueDeleteOptions::default())
            .await
            .map_err(|e| format!("{name}: {e}"))?;
    }
    let exchange = topology::dead_letter_exchange(queue);
    channel
        .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
        .await
        .map_err(|e| format!("{exchange}: {e}"))?;
    Ok(())
}
