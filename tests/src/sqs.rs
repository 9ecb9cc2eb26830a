//! SQS helpers for tests: clients, queues with a redrive policy, counts.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_sqs::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_sqs::types::{Message, MessageSystemAttributeName, QueueAttributeName};

/// An SQS client for `endpoint` with the test credentials.
pub fn client(endpoint: &str) -> aws_sdk_sqs::Client {
    let config = aws_sdk_sqs::config::Builder::new()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new("testing", "testing", None, None, "test"))
        .build();
    aws_sdk_sqs::Client::from_conf(config)
}

/// A work queue and its dead-letter queue.
#[derive(Debug, Clone)]
pub struct Queues {
    /// The work queue.
    pub url: String,
    /// Its dead-letter queue.
    pub dead_letter_url: String,
}

/// Creates `NAME-dlq`, then `NAME` redriving to it after `max_receive`
/// receives, with the given visibility timeout. A `NAME` ending in `.fifo`
/// makes both FIFO queues (`STEM-dlq.fifo`).
pub async fn create_queues(
    sqs: &aws_sdk_sqs::Client,
    name: &str,
    visibility_s: u32,
    max_receive: u32,
) -> Queues {
    let fifo = name.strip_suffix(".fifo");
    let dead_letter_name = match fifo {
        Some(stem) => format!("{stem}-dlq.fifo"),
        None => format!("{name}-dlq"),
    };
    let fifo_attribute =
        |call: aws_sdk_sqs::operation::create_queue::builders::CreateQueueFluentBuilder| {
            if fifo.is_some() {
                call.attributes(QueueAttributeName::FifoQueue, "true")
            } else {
                call
            }
        };
    let dead_letter_url = fifo_attribute(sqs.create_queue().queue_name(&dead_letter_name))
        .send()
        .await
        .unwrap_or_else(|e| panic!("create {dead_letter_name}: {e:?}"))
        .queue_url()
        .unwrap_or_default()
        .to_owned();
    let arn = attribute(sqs, &dead_letter_url, QueueAttributeName::QueueArn).await;
    let redrive = format!(r#"{{"deadLetterTargetArn":"{arn}","maxReceiveCount":"{max_receive}"}}"#);
    let url = fifo_attribute(sqs.create_queue().queue_name(name))
        .attributes(
            QueueAttributeName::VisibilityTimeout,
            visibility_s.to_string(),
        )
        .attributes(QueueAttributeName::RedrivePolicy, redrive)
        .send()
        .await
        .unwrap_or_else(|e| panic!("create {name}: {e:?}"))
        .queue_url()
        .unwrap_or_default()
        .to_owned();
    Queues {
        url,
        dead_letter_url,
    }
}

/// One attribute of a queue.
pub async fn attribute(sqs: &aws_sdk_sqs::Client, url: &str, name: QueueAttributeName) -> String {
    sqs.get_queue_attributes()
        .queue_url(url)
        .attribute_names(name.clone())
        .send()
        .await
        .unwrap_or_else(|e| panic!("attributes of {url}: {e:?}"))
        .attributes()
        .and_then(|a| a.get(&name).cloned())
        .unwrap_or_else(|| panic!("{url} has no attribute {name:?}"))
}

/// (visible, in flight, delayed) messages of a queue.
pub async fn counts(sqs: &aws_sdk_sqs::Client, url: &str) -> (u64, u64, u64) {
    let output = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::All)
        .send()
        .await
        .unwrap_or_else(|e| panic!("attributes of {url}: {e:?}"));
    let attrs = output.attributes().cloned().unwrap_or_default();
    let get = |name| attrs.get(&name).and_then(|v| v.parse().ok()).unwrap_or(0);
    (
        get(QueueAttributeName::ApproximateNumberOfMessages),
        get(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
        get(QueueAttributeName::ApproximateNumberOfMessagesDelayed),
    )
}

/// Sends every body, 10 per `SendMessageBatch`; to a FIFO queue each in a
/// message group of its own.
pub async fn send_all(sqs: &aws_sdk_sqs::Client, url: &str, bodies: &[String]) {
    let fifo = url.ends_with(".fifo");
    for (batch_index, batch) in bodies.chunks(10).enumerate() {
        let mut call = sqs.send_message_batch().queue_url(url);
        for (i, body) in batch.iter().enumerate() {
            let id = format!("m{batch_index}-{i}");
            let entry = aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder()
                .id(&id)
                .message_body(body);
            let entry = if fifo {
                entry.message_group_id(&id).message_deduplication_id(&id)
            } else {
                entry
            };
            call = call.entries(entry.build().unwrap_or_else(|e| panic!("batch entry: {e}")));
        }
        let output = call
            .send()
            .await
            .unwrap_or_else(|e| panic!("send to {url}: {e:?}"));
        assert!(
            output.failed().is_empty(),
            "some sends failed: {:?}",
            output.failed()
        );
    }
}

/// Sends one message with string attributes `attributes`, as any client
/// with send rights may.
pub async fn send_with_attributes(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
    body: &str,
    attributes: &[(&str, &str)],
) {
    let mut call = sqs.send_message().queue_url(url).message_body(body);
    if url.ends_with(".fifo") {
        call = call
            .message_group_id("forged")
            .message_deduplication_id("forged");
    }
    for (name, value) in attributes {
        let value = aws_sdk_sqs::types::MessageAttributeValue::builder()
            .data_type("String")
            .string_value(*value)
            .build()
            .unwrap_or_else(|e| panic!("attribute {name}: {e}"));
        call = call.message_attributes(*name, value);
    }
    call.send()
        .await
        .unwrap_or_else(|e| panic!("send to {url}: {e:?}"));
}

/// Every message of a queue, received (and left invisible for a minute),
/// with its user attributes as strings.
pub async fn take_all(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
) -> Vec<(Message, HashMap<String, String>)> {
    let mut all = Vec::new();
    let mut empty = 0;
    while empty < 2 {
        let output = sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .visibility_timeout(60)
            .message_attribute_names("All")
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await
            .unwrap_or_else(|e| panic!("receive from {url}: {e:?}"));
        if output.messages().is_empty() {
            empty += 1;
            continue;
        }
        for message in output.messages() {
            let attrs = message
                .message_attributes()
                .map(|a| {
                    a.iter()
                        .map(|(k, v)| (k.clone(), v.string_value().unwrap_or_default().to_owned()))
                        .collect()
                })
                .unwrap_or_default();
            all.push((message.clone(), attrs));
        }
    }
    all
}

/// Waits until `check` returns true, polling every 250 ms, or panics with
/// `what` after `limit`.
pub async fn wait_for<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = std::time::Instant::now();
    while !check().await {
        assert!(
            started.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Every message in the queue at `url`, received (and kept invisible)
/// until the queue answers empty three times in a row.
pub async fn drain(sqs: &aws_sdk_sqs::Client, url: &str) -> Vec<String> {
    let mut bodies = Vec::new();
    let mut empty = 0;
    while empty < 3 {
        let got = sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .visibility_timeout(600)
            .wait_time_seconds(1)
            .send()
            .await
            .unwrap_or_else(|e| panic!("receive from {url}: {e:?}"));
        let messages = got.messages();
        if messages.is_empty() {
            empty += 1;
        } else {
            empty = 0;
        }
        bodies.extend(messages.iter().filter_map(|m| m.body().map(str::to_owned)));
    }
    bodies
}
