//! RabbitMQ's management API, as the operator reads it: the backlog of a
//! job's queues and who declared them ([`topology::OWNER_ARGUMENT`]). Read
//! with the broker's own credentials, only from the management URL
//! [`Broker::parse`] allowed.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use shoal_protocol::topology;
use std::time::Duration;

use super::{Amqp, Broker};
use crate::error::Result;
use crate::sqs::Backlog;

/// One queue's counts in the management API; absent until the broker
/// first publishes the queue's statistics (seconds after it is declared).
#[derive(Debug, Deserialize)]
struct QueueCounts {
    name: String,
    messages_ready: Option<i64>,
    messages_unacknowledged: Option<i64>,
}

/// What the management API says of a queue and its family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counts {
    /// The work queue's backlog (with its retry queues) and the
    /// dead-letter queue's.
    Known(Backlog, Backlog),
    /// Some member has no counts yet (declared seconds ago): unknown.
    NotYet,
    /// The work queue does not exist (deleted behind the operator's back).
    Missing,
}

/// Sums the counts of `queue`'s family into the work queue's backlog (the
/// queue and its retry queues: messages waiting for a retry are waiting
/// work, as SQS counts delayed messages) and the dead-letter queue's.
/// An unknown backlog must never read as an empty one.
fn backlogs(queue: &str, items: &[QueueCounts]) -> Counts {
    if !items.iter().any(|item| item.name == queue) {
        return Counts::Missing;
    }
    let dead_letter = topology::dead_letter_queue(queue);
    let retry_prefix = format!("{queue}.retry.");
    let mut work = Backlog::default();
    let mut dead = Backlog::default();
    for item in items {
        let target = if item.name == queue || item.name.starts_with(&retry_prefix) {
            &mut work
        } else if item.name == dead_letter {
            &mut dead
        } else {
            continue;
        };
        let (Some(ready), Some(unacked)) = (item.messages_ready, item.messages_unacknowledged)
        else {
            return Counts::NotYet;
        };
        target.visible = target.visible.saturating_add(ready);
        target.in_flight = target.in_flight.saturating_add(unacked);
    }
    Counts::Known(work, dead)
}

/// The most bytes read of one management API answer.
const MAX_ANSWER: usize = 4 * 1024 * 1024;

/// A queue's name and arguments in the management API.
#[derive(Debug, Deserialize)]
struct QueueArguments {
    name: String,
    #[serde(default)]
    arguments: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Deserialize)]
struct Page<T> {
    items: Vec<T>,
}

impl Amqp {
    /// GETs `path_and_query` (after `/api/`) from `broker`'s management
    /// API, with its credentials, within 10 s; errors name `queue` and
    /// `what` was being done.
    async fn management_get<T: DeserializeOwned>(
        &self,
        broker: &Broker,
        path_and_query: &str,
        (queue, what): (&str, &'static str),
    ) -> Result<T> {
        let fail = || Self::error(broker, queue, what);
        let url = format!("{}/api/{path_and_query}", broker.management);
        let credentials = base64_encode(format!("{}:{}", broker.user, broker.password).as_bytes());
        let request = http::Request::get(url.as_str())
            .header(http::header::AUTHORIZATION, format!("Basic {credentials}"))
            .body(Empty::<Bytes>::new())
            .map_err(|e| fail()(format!("building GET {}: {e}", broker.management)))?;
        if let Some(counter) = &self.requests {
            counter.inc();
        }
        let response = tokio::time::timeout(Duration::from_secs(10), self.http.request(request))
            .await
            .map_err(|_| {
                fail()(format!(
                    "GET {}/api/queues: no answer in 10 s",
                    broker.management
                ))
            })?
            .map_err(|e| fail()(format!("GET {}/api/queues: {e}", broker.management)))?;
        let status = response.status();
        // A page is at most 500 queues of a few short columns: a broker
        // answering more is not one to trust with the operator's memory.
        let body = Limited::new(response.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| {
                fail()(format!(
                    "reading the management API's answer (at most {MAX_ANSWER} bytes): {e}"
                ))
            })?
            .to_bytes();
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body);
            return Err(fail()(format!(
                "GET {}/api/queues answered {status}: {}",
                broker.management,
                text.trim()
            )));
        }
        serde_json::from_slice(&body)
            .map_err(|e| fail()(format!("unexpected management API answer: {e}")))
    }

    /// The queues of `queue`'s family matching `suffixes` (a regex
    /// alternation after the name), asking for `columns`.
    fn family_query(broker: &Broker, queue: &str, suffixes: &str, columns: &str) -> String {
        let pattern = format!("^{}({suffixes})?$", regex_escape(queue));
        format!(
            "queues/{}?page=1&page_size=500&use_regex=true&name={}&columns={columns}",
            utf8_percent_encode(&broker.vhost, NON_ALPHANUMERIC),
            utf8_percent_encode(&pattern, NON_ALPHANUMERIC),
        )
    }

    /// The backlog of `queue` (ready + unacknowledged, its retry queues
    /// included) and of its dead-letter queue, from one management API
    /// call.
    pub async fn backlog(&self, broker: &Broker, queue: &str) -> Result<Counts> {
        let query = Self::family_query(
            broker,
            queue,
            "\\.dlq|\\.retry\\.[0-9]+s",
            "name,messages_ready,messages_unacknowledged",
        );
        let page: Page<QueueCounts> = self
            .management_get(broker, &query, (queue, "reading the backlog"))
            .await?;
        Ok(backlogs(queue, &page.items))
    }

    /// Who declared `queue` and its dead-letter queue, for those that
    /// exist: the [`topology::OWNER_ARGUMENT`] each carries (`None`: made
    /// by someone else, or by a shoal older than the argument).
    pub async fn owners(
        &self,
        broker: &Broker,
        queue: &str,
    ) -> Result<Vec<(String, Option<String>)>> {
        let query = Self::family_query(broker, queue, "\\.dlq", "name,arguments");
        let page: Page<QueueArguments> = self
            .management_get(broker, &query, (queue, "reading who declared the queues"))
            .await?;
        let dead_letter = topology::dead_letter_queue(queue);
        Ok(page
            .items
            .into_iter()
            // The API matches names without regard to case: keep the
            // family's own.
            .filter(|q| q.name == queue || q.name == dead_letter)
            .map(|q| {
                let owner = q
                    .arguments
                    .get(topology::OWNER_ARGUMENT)
                    .and_then(|v| v.as_str())
                    .map(str::to_owned);
                (q.name, owner)
            })
            .collect())
    }
}

/// `text` with every regex metacharacter escaped.
fn regex_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backlog_counts_retry_queues_as_waiting_and_keeps_the_dlq_apart() {
        let item = |name: &str, ready, unacked| QueueCounts {
            name: name.into(),
            messages_ready: Some(ready),
            messages_unacknowledged: Some(unacked),
        };
        let items = [
            item("jobs", 7, 3),
            item("jobs.retry.4s", 2, 0),
            item("jobs.dlq", 1, 0),
            item("jobs-other", 50, 50),
        ];
        let Counts::Known(work, dead) = backlogs("jobs", &items) else {
            panic!("counts known");
        };
        assert_eq!((work.visible, work.in_flight), (9, 3));
        assert_eq!(dead.total(), 1);
        // Counts not published yet, or no queue: unknown, not empty.
        let fresh = [
            item("jobs", 0, 0),
            QueueCounts {
                name: "jobs.retry.1s".into(),
                messages_ready: None,
                messages_unacknowledged: None,
            },
        ];
        assert_eq!(backlogs("jobs", &fresh), Counts::NotYet);
        assert_eq!(backlogs("jobs", &[]), Counts::Missing);
        assert_eq!(regex_escape("a.b-c"), "a\\.b-c");
    }
}
