//! The dead-letter queue of an SQS queue. Its name is known at start
//! (`--dead-letter-queue`, or the ARN in the queue's redrive policy); its
//! URL, when only the ARN is known, is looked up in the background once
//! the first receive has its answer, so that receive neither waits for it
//! nor shares the server with it. A lookup that fails is
//! logged and tried again at the first dead letter; until one succeeds a
//! failed message stays in its queue, for the redrive policy.

use std::sync::Arc;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::DisplayErrorContext;
use tokio::sync::OnceCell;
use tracing::error;

use super::{is_fifo, queue_name};

#[derive(Debug)]
pub(super) struct DeadLetterQueue {
    pub(super) name: String,
    pub(super) fifo: bool,
    /// The ARN or URL it was named by.
    target: String,
    url: Arc<OnceCell<String>>,
}

impl DeadLetterQueue {
    /// The queue at `url`: nothing to look up.
    pub(super) fn from_url(url: &str) -> Self {
        Self {
            name: queue_name(url).to_owned(),
            fifo: is_fifo(url),
            target: url.to_owned(),
            url: Arc::new(OnceCell::new_with(Some(url.to_owned()))),
        }
    }

    /// The queue a redrive policy's `deadLetterTargetArn` names.
    pub(super) fn from_arn(arn: &str) -> Self {
        let name = arn.rsplit(':').next().unwrap_or(arn);
        Self {
            name: name.to_owned(),
            fifo: name.ends_with(".fifo"),
            target: arn.to_owned(),
            url: Arc::new(OnceCell::new()),
        }
    }

    /// Starts the URL lookup (when there is one to make) without waiting
    /// for it; a failure is logged as the error it is.
    pub(super) fn resolve_in_background(&self, client: &Client, queue: &str) {
        if self.url.initialized() {
            return;
        }
        let (client, queue) = (client.clone(), queue.to_owned());
        let (cell, name, target) = (self.url.clone(), self.name.clone(), self.target.clone());
        tokio::spawn(async move {
            if let Err(reason) = lookup(&cell, &client, &name, &target).await {
                error!(
                    queue = %queue,
                    dead_letter_queue = %target,
                    %reason,
                    "cannot find the dead-letter queue: failed messages stay in the queue (for its redrive policy) until it is found"
                );
            }
        });
    }

    /// Its URL, looked up once (again after a failed lookup).
    pub(super) async fn url(&self, client: &Client) -> Result<String, String> {
        lookup(&self.url, client, &self.name, &self.target).await
    }
}

async fn lookup(
    cell: &OnceCell<String>,
    client: &Client,
    name: &str,
    target: &str,
) -> Result<String, String> {
    cell.get_or_try_init(|| async {
        client
            .get_queue_url()
            .queue_name(name)
            .send()
            .await
            .map_err(|e| {
                format!(
                    "cannot find dead-letter queue {target}: {}",
                    DisplayErrorContext(e)
                )
            })?
            .queue_url()
            .map(str::to_owned)
            .ok_or_else(|| format!("no URL for dead-letter queue {target}"))
    })
    .await
    .cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_kinds_come_from_the_arn_or_the_url() {
        let dlq = DeadLetterQueue::from_arn("arn:aws:sqs:us-east-1:000000000000:jobs-dlq.fifo");
        assert_eq!(dlq.name, "jobs-dlq.fifo");
        assert!(dlq.fifo);
        assert!(!dlq.url.initialized());
        let dlq = DeadLetterQueue::from_url("http://127.0.0.1:9324/000000000000/jobs-dlq");
        assert_eq!(dlq.name, "jobs-dlq");
        assert!(!dlq.fifo);
        assert_eq!(
            dlq.url.get().map(String::as_str),
            Some("http://127.0.0.1:9324/000000000000/jobs-dlq")
        );
    }
}
