//! `invoke`: one item sent to the queue a job consumes, as its producers
//! would send it.
//!
//! Contract:
//! - Only jobs that consume a queue (`source.sqs`, `source.amqp`) take
//!   items this way. A fan-out job's queue carries chunks the operator
//!   counts: an extra message would break its progress, so it is refused
//!   (exit 2) before anything is sent.
//! - The item is the message body, unchanged (see docs/handler.md,
//!   "Message formats"): UTF-8 text of at most [`MAX_PAYLOAD`] bytes, not
//!   empty; a worse one is refused (exit 2) before anything is sent.
//! - SQS: sent with the AWS default chain (`AWS_ENDPOINT_URL[_SQS]`,
//!   credentials, region, else the region in the queue URL). To a FIFO
//!   queue with a message group and a deduplication id (a fresh one unless
//!   given, so invoking twice sends twice).
//! - RabbitMQ: the broker URL comes from the job's Secret (the caller needs
//!   `get` on it) and is never printed; the message is persistent, sent
//!   mandatory to the default exchange, and acknowledged by the broker
//!   (publisher confirms) before the command succeeds. A queue that does
//!   not exist fails the command instead of dropping the message.

use std::io::{Read, Write};
use std::path::Path;

use kube::Client;
use serde_json::json;
use shoal_operator::amqp::{Amqp, Broker};
use shoal_operator::crd::{AmqpConnection, BatchJob};

use crate::commands::{write_json, write_text};
use crate::{Error, Output, Result};

/// The largest item `invoke` sends, in bytes. Larger inputs belong in a
/// bucket, with the item naming them.
pub const MAX_PAYLOAD: usize = 1 << 20;

/// Where a job's items go.
#[derive(Debug, PartialEq)]
pub enum Target<'a> {
    /// An SQS queue.
    Sqs {
        /// The queue's URL.
        url: &'a str,
    },
    /// A RabbitMQ queue on the broker `connection` names.
    Amqp {
        /// The broker's Secret.
        connection: &'a AmqpConnection,
        /// The queue.
        queue: &'a str,
    },
}

/// The queue `job` consumes, or why items cannot be sent to it.
pub fn target(job: &BatchJob) -> Result<Target<'_>> {
    let source = &job.spec.source;
    if let Some(sqs) = &source.sqs {
        return Ok(Target::Sqs {
            url: &sqs.queue_url,
        });
    }
    if let Some(amqp) = &source.amqp {
        return Ok(Target::Amqp {
            connection: &amqp.connection,
            queue: &amqp.queue,
        });
    }
    let field = if source.s3.is_some() {
        "source.s3"
    } else {
        "source.batchJob"
    };
    Err(Error::Usage(format!(
        "batchjob {}/{} fans out its input ({field}): its queue carries the operator's chunks \
         and counts them, so it takes no items from outside; invoke sends to jobs that \
         consume a queue (source.sqs or source.amqp)",
        job.metadata.namespace.as_deref().unwrap_or_default(),
        job.metadata.name.as_deref().unwrap_or_default(),
    )))
}

/// The message body: a one-item shoal chunk for `object`
/// (`s3://BUCKET/KEY`), else the payload given inline or read from `file`
/// (`-`: standard input), checked: UTF-8, not empty, at most
/// [`MAX_PAYLOAD`] bytes. At most one byte more than that is ever read.
pub fn payload(
    inline: Option<String>,
    file: Option<&Path>,
    object: Option<&str>,
) -> Result<String> {
    let (bytes, what) = match (inline, file, object) {
        (None, None, Some(url)) => return object_chunk(url),
        (Some(text), None, None) => (text.into_bytes(), "--payload".to_owned()),
        (None, Some(path), None) => {
            let what = path.display().to_string();
            let limit = MAX_PAYLOAD as u64 + 1;
            let mut bytes = Vec::new();
            let read = if path == Path::new("-") {
                std::io::stdin().lock().take(limit).read_to_end(&mut bytes)
            } else {
                std::fs::File::open(path).and_then(|f| f.take(limit).read_to_end(&mut bytes))
            };
            read.map_err(|e| Error::Usage(format!("reading {what}: {e}")))?;
            (bytes, what)
        }
        _ => {
            return Err(Error::Usage(
                "give the item with one of --object s3://BUCKET/KEY, --payload TEXT or \
                 --payload-file PATH (- for standard input)"
                    .into(),
            ));
        }
    };
    if bytes.is_empty() {
        return Err(Error::Usage(format!(
            "{what} is empty: a queue message needs a body"
        )));
    }
    if bytes.len() > MAX_PAYLOAD {
        return Err(Error::Usage(format!(
            "{what} is over {MAX_PAYLOAD} bytes: put large inputs in a bucket and send an item naming them ({{\"bucket\": ..., \"key\": ...}})"
        )));
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        Error::Usage(format!(
            "{what} is not UTF-8 text (invalid byte at offset {}): queue bodies are text; encode binary data (base64) or put it in a bucket",
            e.utf8_error().valid_up_to()
        ))
    })?;
    if let Some((offset, c)) = text.char_indices().find(|(_, c)| !sqs_allows(*c)) {
        return Err(Error::Usage(format!(
            "{what} holds U+{:04X} at byte {offset}: SQS refuses control characters other than tab, line feed and carriage return",
            u32::from(c)
        )));
    }
    Ok(text)
}

/// A shoal chunk holding one object reference (docs/handler.md, "Message
/// formats"), with a fresh chunk id: what the handler gets as an object
/// item, its bytes fetched from the bucket.
fn object_chunk(url: &str) -> Result<String> {
    let refused = |why: &str| Err(Error::Usage(format!("--object {url:?}: {why}")));
    let Some((bucket, key)) = url.strip_prefix("s3://").and_then(|r| r.split_once('/')) else {
        return refused("expected s3://BUCKET/KEY");
    };
    let bucket_ok = (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-');
    if !bucket_ok {
        return refused("not a bucket name (3 to 63 of a-z, 0-9, '.', '-')");
    }
    if key.is_empty() || key.len() > 1024 {
        return refused("the key must be 1 to 1024 bytes");
    }
    if let Some(c) = key.chars().find(|c| !sqs_allows(*c)) {
        return refused(&format!("the key holds U+{:04X}", u32::from(c)));
    }
    let chunk = json!({
        "chunkId": format!("c-invoke-{}", uuid::Uuid::new_v4().simple()),
        "items": [{"bucket": bucket, "key": key}],
    });
    Ok(chunk.to_string())
}

/// Whether SQS accepts `c` in a message body (`#x9 | #xA | #xD | #x20 to
/// #xD7FF | #xE000 to #xFFFD | #x10000 to #x10FFFF`; Rust's `char` has no
/// surrogates). The same rule keeps RabbitMQ jobs' items portable.
fn sqs_allows(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// How `invoke` sends.
#[derive(Debug, Default)]
pub struct InvokeOptions {
    /// FIFO message group [default: `kubectl-shoal`].
    pub group_id: Option<String>,
    /// FIFO deduplication id [default: a fresh one].
    pub deduplication_id: Option<String>,
    /// `host:port` to reach the RabbitMQ broker at instead of its URL's.
    pub amqp_address: Option<String>,
}

/// What was sent where.
struct Sent {
    queue: String,
    message_id: String,
}

/// `invoke`: sends `payload` to the queue job `namespace/name` consumes.
pub async fn invoke(
    client: &Client,
    namespace: &str,
    name: &str,
    payload: &str,
    options: &InvokeOptions,
    output: Output,
    out: &mut impl Write,
) -> Result<()> {
    let job = crate::commands::job(client, namespace, name).await?;
    let sent = match target(&job)? {
        Target::Sqs { url } => send_sqs(url, payload, options).await?,
        Target::Amqp { connection, queue } => {
            if options.group_id.is_some() || options.deduplication_id.is_some() {
                return Err(Error::Usage(
                    "--group-id and --deduplication-id are for SQS FIFO queues; this job consumes RabbitMQ".into(),
                ));
            }
            let broker = broker(client, namespace, connection).await?;
            let broker = match &options.amqp_address {
                Some(address) => broker
                    .at(address)
                    .map_err(|why| Error::Usage(format!("--amqp-address: {why}")))?,
                None => broker,
            };
            send_amqp(&broker, queue, payload).await?
        }
    };
    let suspended = job.spec.suspend == Some(true);
    match output {
        Output::Json => write_json(
            out,
            &json!({
                "namespace": namespace,
                "name": name,
                "queue": sent.queue,
                "messageId": sent.message_id,
                "bytes": payload.len(),
                "suspended": suspended,
            }),
        ),
        Output::Human => {
            let note = if suspended {
                " (the job is suspended: the item waits until it is resumed)"
            } else {
                ""
            };
            write_text(
                out,
                &format!(
                    "sent {} bytes to batchjob {namespace}/{name} on {}: message {}{note}\n",
                    payload.len(),
                    sent.queue,
                    sent.message_id
                ),
            )
        }
    }
}

/// Sends `payload` to the SQS queue at `url`.
async fn send_sqs(url: &str, payload: &str, options: &InvokeOptions) -> Result<Sent> {
    let fifo = url.ends_with(".fifo");
    if !fifo && options.deduplication_id.is_some() {
        return Err(Error::Usage(format!(
            "--deduplication-id is for FIFO queues; {url} is a standard queue"
        )));
    }
    let mut config = aws_config::load_from_env().await;
    if config.region().is_none() {
        let Some(region) = region_of(url) else {
            return Err(Error::Usage(format!(
                "no AWS region: set AWS_REGION (the queue URL {url} names none)"
            )));
        };
        config = config
            .into_builder()
            .region(aws_config::Region::new(region.to_owned()))
            .build();
    }
    let client = aws_sdk_sqs::Client::new(&config);
    let mut send = client.send_message().queue_url(url).message_body(payload);
    if fifo || options.group_id.is_some() {
        send = send.message_group_id(options.group_id.as_deref().unwrap_or("kubectl-shoal"));
    }
    if fifo {
        let id = options
            .deduplication_id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        send = send.message_deduplication_id(id);
    }
    let answer = send.send().await.map_err(|e| {
        Error::Request(format!(
            "sending to {url}: {}",
            aws_sdk_sqs::error::DisplayErrorContext(e)
        ))
    })?;
    Ok(Sent {
        queue: url.to_owned(),
        message_id: answer.message_id().unwrap_or("?").to_owned(),
    })
}

/// The region an AWS queue URL names (`https://sqs.REGION.amazonaws.com/…`
/// or the legacy `https://REGION.queue.amazonaws.com/…`).
fn region_of(url: &str) -> Option<&str> {
    let host = url.split_once("://")?.1.split(['/', ':']).next()?;
    let mut labels = host.split('.');
    match (labels.next()?, labels.next()?, labels.next()?) {
        ("sqs", region, "amazonaws") | (region, "queue", "amazonaws") if !region.is_empty() => {
            Some(region)
        }
        _ => None,
    }
}

/// The broker the job's Secret names.
async fn broker(client: &Client, namespace: &str, connection: &AmqpConnection) -> Result<Broker> {
    let found = shoal_operator::amqp::from_secret(client, namespace, connection)
        .await
        .map_err(|e| Error::Request(e.to_string()))?;
    found.map_err(|(reason, message)| {
        if reason == "BrokerSecretForbidden" {
            Error::Request(format!(
                "you may not read secret {namespace}/{}, which holds the job's broker URL: invoke needs get on it",
                connection.secret_name
            ))
        } else {
            Error::Request(message)
        }
    })
}

/// Publishes `payload` to `queue` and waits for the broker's confirm.
async fn send_amqp(broker: &Broker, queue: &str, payload: &str) -> Result<Sent> {
    let amqp =
        Amqp::new(std::time::Duration::from_secs(5)).map_err(|e| Error::Request(e.to_string()))?;
    let message_id = format!("invoke-{}", uuid::Uuid::new_v4());
    amqp.publish(broker, queue, &[(message_id.clone(), payload.to_owned())])
        .await
        .map_err(|e| Error::Request(e.to_string()))?;
    Ok(Sent {
        queue: broker.queue_url(queue),
        message_id,
    })
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        reason = "test code: a panic is how a test reports failure"
    )]

    use super::*;

    fn job(source: &str) -> BatchJob {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "shoal.dev/v1alpha1",
            "kind": "BatchJob",
            "metadata": {"name": "thumbs", "namespace": "media"},
            "spec": {
                "handler": {"image": "thumbnail:1"},
                "source": serde_json::from_str::<serde_json::Value>(source).unwrap(),
            }
        }))
        .unwrap()
    }

    #[test]
    fn only_jobs_consuming_a_queue_take_items() {
        let sqs = job(r#"{"sqs": {"queueUrl": "https://sqs.eu-west-1.amazonaws.com/1/q"}}"#);
        assert_eq!(
            target(&sqs).unwrap(),
            Target::Sqs {
                url: "https://sqs.eu-west-1.amazonaws.com/1/q"
            }
        );
        let amqp = job(r#"{"amqp": {"connection": {"secretName": "rabbit"}, "queue": "orders"}}"#);
        assert!(matches!(
            target(&amqp).unwrap(),
            Target::Amqp { queue: "orders", connection } if connection.secret_name == "rabbit"
        ));
        for (source, field) in [
            (r#"{"s3": {"bucket": "photos"}}"#, "source.s3"),
            (r#"{"batchJob": {"name": "before"}}"#, "source.batchJob"),
        ] {
            let error = target(&job(source)).unwrap_err();
            assert_eq!(error.exit_code(), 2);
            let message = error.to_string();
            assert!(message.starts_with("batchjob media/thumbs fans out its input"));
            assert!(message.contains(field), "{message}");
        }
    }

    #[test]
    fn payloads_are_checked_before_anything_is_sent() {
        assert_eq!(
            payload(Some("{\"key\": \"a.jpg\"}".into()), None, None).unwrap(),
            "{\"key\": \"a.jpg\"}"
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("item.json");
        std::fs::write(&file, "caf\u{e9}\tline\r\n").unwrap();
        assert_eq!(
            payload(None, Some(&file), None).unwrap(),
            "caf\u{e9}\tline\r\n"
        );

        let rejected = |inline: Option<&str>, bytes: Option<&[u8]>| {
            let path = dir.path().join("bad");
            if let Some(bytes) = bytes {
                std::fs::write(&path, bytes).unwrap();
            }
            let error = payload(
                inline.map(str::to_owned),
                bytes.map(|_| path.as_path()),
                None,
            )
            .unwrap_err();
            assert_eq!(error.exit_code(), 2, "{error}");
            error.to_string()
        };
        assert!(rejected(None, None).contains("one of --object s3://BUCKET/KEY, --payload TEXT"));
        assert!(rejected(Some(""), None).contains("is empty"));
        assert!(rejected(None, Some(b"")).contains("is empty"));
        assert!(
            rejected(None, Some(&[b'{', 0xff, b'}']))
                .contains("not UTF-8 text (invalid byte at offset 1)")
        );
        assert!(rejected(Some("a\u{0}b"), None).contains("U+0000 at byte 1"));
        assert!(rejected(Some("\u{1b}[2J"), None).contains("U+001B at byte 0"));
        let big = vec![b'x'; MAX_PAYLOAD + 1];
        assert!(rejected(None, Some(&big)).contains("is over 1048576 bytes"));
        let just = "x".repeat(MAX_PAYLOAD);
        assert_eq!(payload(Some(just.clone()), None, None).unwrap(), just);
        let missing = payload(None, Some(&dir.path().join("nope")), None).unwrap_err();
        assert!(missing.to_string().starts_with("reading "), "{missing}");
    }

    #[test]
    fn an_object_is_sent_as_a_one_item_chunk() {
        let body = payload(None, None, Some("s3://photos/2026/cat one.jpg")).unwrap();
        let chunk: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            chunk["items"],
            serde_json::json!([{"bucket": "photos", "key": "2026/cat one.jpg"}])
        );
        let id = chunk["chunkId"].as_str().unwrap();
        assert!(id.starts_with("c-invoke-") && id.len() == 41, "{id}");
        let again = payload(None, None, Some("s3://photos/2026/cat one.jpg")).unwrap();
        assert_ne!(body, again, "each invoke is a new chunk");
        for (url, why) in [
            ("photos/cat.jpg", "expected s3://BUCKET/KEY"),
            ("s3://photos", "expected s3://BUCKET/KEY"),
            ("s3://photos/", "1 to 1024 bytes"),
            ("s3://Photos/cat.jpg", "not a bucket name"),
            ("s3://ph/cat.jpg", "not a bucket name"),
            ("s3://photos/a\u{0}b", "U+0000"),
        ] {
            let error = payload(None, None, Some(url)).unwrap_err();
            assert_eq!(error.exit_code(), 2);
            assert!(error.to_string().contains(why), "{url}: {error}");
        }
        let long = format!("s3://photos/{}", "k".repeat(1025));
        assert!(payload(None, None, Some(&long)).is_err());
    }

    #[test]
    fn regions_come_from_aws_queue_urls_only() {
        assert_eq!(
            region_of("https://sqs.eu-west-1.amazonaws.com/1/q"),
            Some("eu-west-1")
        );
        assert_eq!(
            region_of("https://us-east-2.queue.amazonaws.com/1/q.fifo"),
            Some("us-east-2")
        );
        assert_eq!(region_of("http://127.0.0.1:9324/000000000000/q"), None);
        assert_eq!(region_of("http://elasticmq:9324/q"), None);
        assert_eq!(region_of("not a url"), None);
    }
}
