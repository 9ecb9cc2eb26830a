//! The peer of `bench/lambda.sh`: the Lambda function people write by hand
//! with a bare `lambda_runtime::service_fn`, doing the work of shoal's
//! no-op handler: read each item's object from the input folder
//! (`SHOAL_INPUT`), do nothing with it, answer. SQS batches get a partial
//! batch response, a direct `{"key": ...}` invoke its key back. No
//! timeouts, no metrics, no logs, no panic isolation. With `SHOAL_OUTPUT`
//! set it builds an S3 client at init, as a function that writes its
//! results to S3 does (the client is not used: the work is a no-op). It
//! runs on tokio's single-threaded scheduler, as shoal's Lambda mode does.

use std::path::{Path, PathBuf};

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::{Value, json};

#[derive(serde::Deserialize)]
struct ItemRef {
    key: String,
}

#[derive(serde::Deserialize)]
struct Chunk {
    items: Vec<ItemRef>,
}

async fn noop(_body: Vec<u8>) -> Result<(), String> {
    Ok(())
}

async fn item(dir: &Path, key: &str) -> Result<(), String> {
    let body = tokio::fs::read(dir.join(key))
        .await
        .map_err(|e| format!("{key}: {e}"))?;
    noop(body).await
}

async fn handle(dir: &Path, payload: Value) -> Result<Value, Error> {
    if payload.get("Records").is_none() {
        let one: ItemRef = serde_json::from_value(payload)?;
        item(dir, &one.key).await?;
        return Ok(json!({ "succeeded": [one.key] }));
    }
    let event: SqsEvent = serde_json::from_value(payload)?;
    let mut response = SqsBatchResponse::default();
    for record in event.records {
        let id = record.message_id.unwrap_or_default();
        let ok = match serde_json::from_str::<Chunk>(record.body.as_deref().unwrap_or_default()) {
            Ok(chunk) => {
                let mut ok = true;
                for one in &chunk.items {
                    ok &= item(dir, &one.key).await.is_ok();
                }
                ok
            }
            Err(_) => false,
        };
        if !ok {
            let mut failure = BatchItemFailure::default();
            failure.item_identifier = id;
            response.batch_item_failures.push(failure);
        }
    }
    Ok(serde_json::to_value(response)?)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    let _s3 = match std::env::var_os("SHOAL_OUTPUT") {
        Some(_) => Some(aws_sdk_s3::Client::new(
            &aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await,
        )),
        None => None,
    };
    let dir = PathBuf::from(std::env::var("SHOAL_INPUT").unwrap_or_else(|_| ".".into()));
    let dir = &dir;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        handle(dir, event.payload).await
    }))
    .await
}
