//! The delete batcher: concurrent deletes gathered into
//! `DeleteMessageBatch` calls of up to 10 entries.

use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::DeleteMessageBatchRequestEntry;
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

use super::{DELETE_LINGER, DeleteRequest, queue_name};
use crate::queue::MAX_BATCH;
use crate::queue::transport::TransportError;

/// Gathers deletes into `DeleteMessageBatch` calls: a call goes out when 10
/// deletes are waiting or [`DELETE_LINGER`] after the first one, so a busy
/// worker deletes in full batches and an idle one with little delay.
pub(super) async fn delete_batcher(
    client: Client,
    url: String,
    mut requests: mpsc::UnboundedReceiver<DeleteRequest>,
) {
    let mut batch: Vec<DeleteRequest> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = requests.recv().await {
        batch.push(first);
        let linger = tokio::time::sleep(DELETE_LINGER);
        tokio::pin!(linger);
        while batch.len() < MAX_BATCH {
            tokio::select! {
                request = requests.recv() => match request {
                    Some(request) => batch.push(request),
                    None => break,
                },
                () = &mut linger => break,
            }
        }
        let entries: Vec<DeleteRequest> = std::mem::take(&mut batch);
        tokio::spawn(delete_batch(client.clone(), url.clone(), entries));
    }
}

async fn delete_batch(client: Client, url: String, entries: Vec<DeleteRequest>) {
    let mut call = client.delete_message_batch().queue_url(&url);
    for (id, (receipt, _)) in entries.iter().enumerate() {
        match DeleteMessageBatchRequestEntry::builder()
            .id(id.to_string())
            .receipt_handle(receipt)
            .build()
        {
            Ok(entry) => call = call.entries(entry),
            Err(e) => warn!(error = %e, "cannot build a delete entry"),
        }
    }
    let name = queue_name(&url);
    match call.send().await {
        Ok(output) => {
            let mut replies: Vec<Option<oneshot::Sender<_>>> =
                entries.into_iter().map(|(_, reply)| Some(reply)).collect();
            for failed in output.failed() {
                let index: Option<usize> = failed.id().parse().ok();
                if let Some(reply) = index
                    .and_then(|i| replies.get_mut(i))
                    .and_then(Option::take)
                {
                    let _ = reply.send(Err(TransportError {
                        operation: "delete",
                        queue: name.to_owned(),
                        source: format!(
                            "{}: {}",
                            failed.code(),
                            failed.message().unwrap_or("no message")
                        )
                        .into(),
                    }));
                }
            }
            for reply in replies.into_iter().flatten() {
                let _ = reply.send(Ok(()));
            }
        }
        Err(e) => {
            let reason = DisplayErrorContext(e).to_string();
            for (_, reply) in entries {
                let _ = reply.send(Err(TransportError {
                    operation: "delete",
                    queue: name.to_owned(),
                    source: reason.clone().into(),
                }));
            }
        }
    }
}
