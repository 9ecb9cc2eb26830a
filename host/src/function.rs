//! A hosted function as a shoal handler: the queue worker's runtime
//! (receiving, leases, retries, dead letters, timeouts, metrics, START/END/
//! REPORT lines, drain) feeds it, and it hands each invocation to an
//! execution environment as the event an AWS trigger would send.
//!
//! - An object reference (an item of a shoal chunk: the operator's fan-out
//!   over an S3 prefix) becomes an S3 `ObjectCreated:Put` notification with
//!   one record, as an S3 trigger sends one per object.
//! - From SQS, the messages of one receive become one SQS event of up to
//!   the batch size; the function's partial batch response
//!   (`batchItemFailures`) fails only the records it names, and an error
//!   fails them all.
//! - From RabbitMQ, each message body is the event itself, as a direct
//!   invoke (`aws lambda invoke --payload`): one message per invocation.
//!   Amazon MQ's event shape (base64 bodies grouped by queue) is not
//!   produced; functions written for it are not supported.
//!
//! An error the function reports, a timeout, a crash or an init failure
//! fails the items of that invocation with a retryable reason naming the
//! error type and message (`ValueError: cannot identify image file`), so
//! they are retried and dead-lettered with it as any handler's would be.

use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use bytes::Bytes;
use md5::{Digest, Md5};
use shoal_protocol::message::ItemBody;
use shoal_worker::handler::{Batching, Context, Handler, HandlerError, Item, Record};
use shoal_worker::payload::Payload;
use shoal_worker::store::ObjectStore;

use crate::events::{self, CreatedObject, QueueMessage};
use crate::{Environments, Failure, FunctionConfig};

/// SQS's limit on a batch without a batching window, and Lambda's default.
pub const MAX_SQS_BATCH: usize = 10;

/// Lambda's limit on a synchronous invoke's payload (6 MB): a larger
/// RabbitMQ message is dead-lettered without reaching the function.
pub const MAX_DIRECT_PAYLOAD: usize = 6 * 1024 * 1024;

/// Where the worker's messages come from, which decides the event shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// An SQS queue: messages as SQS events.
    Sqs {
        /// The queue's ARN (`eventSourceARN`).
        queue_arn: String,
        /// Its region (`awsRegion`).
        region: String,
        /// Messages per event at most (1 to 10).
        batch_size: usize,
    },
    /// A RabbitMQ queue: each message body is the event.
    Direct,
}

impl Source {
    /// The source for a worker consuming `queue` (an SQS queue URL or an
    /// `amqp(s)://` URL), `batch_size` messages per SQS event.
    pub fn for_queue(queue: &str, batch_size: usize) -> Self {
        if queue.starts_with("amqp://") || queue.starts_with("amqps://") {
            return Self::Direct;
        }
        let (region, queue_arn) = sqs_arn(queue);
        Self::Sqs {
            queue_arn,
            region,
            batch_size: batch_size.clamp(1, MAX_SQS_BATCH),
        }
    }
}

/// The region and ARN of the queue at `url`
/// (`https://sqs.REGION.amazonaws.com/ACCOUNT/NAME`; other hosts, such as a
/// local queue server, take the region from `AWS_REGION`).
fn sqs_arn(url: &str) -> (String, String) {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let mut parts = rest.split('/');
    let host = parts.next().unwrap_or_default();
    let account = parts.next().unwrap_or("000000000000");
    let name = parts.next().unwrap_or_default();
    let region = host
        .strip_prefix("sqs.")
        .and_then(|h| h.split('.').next())
        .filter(|r| !r.is_empty())
        .map(str::to_owned)
        .or_else(|| std::env::var("AWS_REGION").ok())
        .or_else(|| std::env::var("AWS_DEFAULT_REGION").ok())
        .unwrap_or_else(|| "us-east-1".to_owned());
    let arn = format!("arn:aws:sqs:{region}:{account}:{name}");
    (region, arn)
}

/// What one item hands the function.
#[derive(Debug, Clone)]
pub enum Invocation {
    /// An object in S3, by bucket and full key.
    Object {
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
        /// Size, if known.
        size: Option<u64>,
        /// Entity tag, if known.
        etag: Option<String>,
    },
    /// A message body.
    Body(Bytes),
}

impl Payload for Invocation {
    async fn decode(body: ItemBody, input: &dyn ObjectStore) -> Result<Self, HandlerError> {
        match body {
            ItemBody::Object(reference) => {
                let (bucket, key) = input.s3_address(&reference)?;
                Ok(Self::Object {
                    bucket,
                    key,
                    size: reference.size,
                    etag: reference.etag,
                })
            }
            ItemBody::Raw(bytes) => Ok(Self::Body(bytes)),
            ItemBody::Inline(value) => Ok(Self::Body(Bytes::from(value.to_string()))),
        }
    }
}

/// A Lambda function run by shoal's queue worker.
pub struct HostedFunction {
    template: FunctionConfig,
    source: Source,
    environments: OnceLock<Arc<Environments>>,
}

impl HostedFunction {
    /// The function `template` describes (its command, handler, task root,
    /// init timeout, env), fed from `source`. Its name, memory size,
    /// timeout and number of environments are the worker's
    /// (`--function-name`, `--memory-mib`, `--timeout`, `--concurrency`).
    pub fn new(template: FunctionConfig, source: Source) -> Self {
        Self {
            template,
            source,
            environments: OnceLock::new(),
        }
    }

    /// The environments, made on the first invocation from what the
    /// worker's context says.
    fn environments(&self, ctx: &Context) -> &Arc<Environments> {
        self.environments.get_or_init(|| {
            let mut config = self.template.clone();
            config.function_name.clone_from(&ctx.function_name);
            config.memory_mb = ctx.memory_limit_mib;
            config.timeout = ctx.remaining();
            Arc::new(Environments::new(
                config,
                usize::try_from(ctx.concurrency).unwrap_or(1),
            ))
        })
    }

    /// Ends every idle environment (at shutdown).
    pub async fn shutdown(&self) {
        if let Some(environments) = self.environments.get() {
            environments.shutdown().await;
        }
    }

    /// Runs `event` as the context's request, reporting what the
    /// environment measured to the context. Getting an environment (a cold
    /// start's init phase, bounded by its own init timeout) does not count
    /// against the invocation's timeout, as on Lambda. The invocation ends
    /// (and its environment with it) when the context is cancelled: the
    /// worker is stopping and gives its messages back.
    async fn invoke(&self, event: Bytes, ctx: &Context) -> Result<Bytes, Failure> {
        let environments = self.environments(ctx);
        let run = async {
            let paused = ctx.pause_deadline();
            let acquired = environments.acquire().await;
            drop(paused);
            let lease = match acquired {
                Ok(lease) => lease,
                Err(refused) => return refused.into_invoked(ctx.request_id.clone()).0,
            };
            if let Some(init) = lease.init_duration() {
                ctx.report_init_duration(init);
            }
            let (result, report) = lease
                .invoke(ctx.request_id.clone(), event, ctx.remaining())
                .await;
            if let Some(mb) = report.max_memory_used_mb {
                ctx.report_max_memory_used(mb);
            }
            result
        };
        tokio::select! {
            result = run => result,
            () = ctx.cancellation().cancelled() => Err(Failure::Exited(
                "the worker stopped the invocation".to_owned(),
            )),
        }
    }

    fn sqs_message(record: &Record<Invocation>, body: &Bytes) -> QueueMessage {
        let sent = record
            .sent_at
            .unwrap_or_else(SystemTime::now)
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let md5: String = Md5::digest(body)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        QueueMessage {
            id: record.item.id.clone(),
            // The worker settles the message; a function that deletes it
            // itself gets a handle no queue accepts.
            receipt_handle: format!("shoal-managed-{}", record.item.id),
            body: String::from_utf8_lossy(body).into_owned(),
            md5_of_body: md5,
            receive_count: record.attempt,
            sent_timestamp_ms: sent,
            attributes: std::collections::BTreeMap::new(),
        }
    }
}

/// The items' failure for an invocation that failed as a whole.
fn failed(failure: &Failure) -> HandlerError {
    HandlerError::retryable(failure.to_string())
}

impl Handler for HostedFunction {
    type Input = Invocation;
    type Output = ();

    fn batching(&self) -> Batching {
        match &self.source {
            Source::Sqs { batch_size, .. } => Batching::Records { max: *batch_size },
            Source::Direct => Batching::Records { max: 1 },
        }
    }

    async fn call(&self, item: Item<Invocation>, ctx: Context) -> Result<(), HandlerError> {
        let record = Record {
            item,
            attempt: ctx.attempt,
            sent_at: None,
        };
        let mut results = self.call_batch(vec![record], ctx).await;
        results
            .pop()
            .unwrap_or_else(|| Err(HandlerError::retryable("no result")))
    }

    async fn call_batch(
        &self,
        records: Vec<Record<Invocation>>,
        ctx: Context,
    ) -> Vec<Result<(), HandlerError>> {
        let n = records.len();
        // Object references come alone (see `Batching::Records`).
        if let [
            Record {
                item:
                    Item {
                        payload:
                            Invocation::Object {
                                bucket,
                                key,
                                size,
                                etag,
                            },
                        ..
                    },
                ..
            },
        ] = records.as_slice()
        {
            let object = CreatedObject {
                bucket,
                key,
                size: *size,
                etag: etag.as_deref(),
            };
            let region = match &self.source {
                Source::Sqs { region, .. } => region.as_str(),
                Source::Direct => self.template.region.as_str(),
            };
            let event = events::s3_event(vec![events::object_created(
                region,
                &object,
                &events::event_time(SystemTime::now()),
            )]);
            return vec![
                self.invoke(event, &ctx)
                    .await
                    .map(drop)
                    .map_err(|f| failed(&f)),
            ];
        }
        let mut bodies = Vec::with_capacity(n);
        for record in &records {
            match &record.item.payload {
                Invocation::Body(body) => bodies.push(body.clone()),
                Invocation::Object { .. } => {
                    return vec![
                        Err(HandlerError::permanent(
                            "an object reference in a batch of messages"
                        ));
                        n
                    ];
                }
            }
        }
        let (queue_arn, region) = match &self.source {
            Source::Direct => {
                let event = bodies.pop().unwrap_or_default();
                if event.len() > MAX_DIRECT_PAYLOAD {
                    return vec![
                        Err(HandlerError::permanent(format!(
                            "the message is {} bytes, over Lambda's {MAX_DIRECT_PAYLOAD}-byte limit on an invoke payload",
                            event.len()
                        )));
                        n
                    ];
                }
                let result = self.invoke(event, &ctx).await;
                return vec![result.map(drop).map_err(|f| failed(&f)); n];
            }
            Source::Sqs {
                queue_arn, region, ..
            } => (queue_arn, region),
        };
        let messages: Vec<QueueMessage> = records
            .iter()
            .zip(&bodies)
            .map(|(record, body)| Self::sqs_message(record, body))
            .collect();
        let event = events::sqs_event(queue_arn, region, &messages);
        let answer = match self.invoke(event, &ctx).await {
            Ok(answer) => answer,
            Err(failure) => return vec![Err(failed(&failure)); n],
        };
        let ids: Vec<&str> = records.iter().map(|r| r.item.id.as_str()).collect();
        match events::failed_records(&answer, &ids) {
            None => vec![
                Err(HandlerError::retryable(
                    "the function's partial batch response is invalid, which fails the whole batch"
                ));
                n
            ],
            Some(failed) => ids
                .iter()
                .map(|id| {
                    if failed.contains(*id) {
                        Err(HandlerError::retryable(
                            "the function reported this record in batchItemFailures",
                        ))
                    } else {
                        Ok(())
                    }
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_urls_name_the_event_source() {
        assert_eq!(
            Source::for_queue(
                "https://sqs.eu-west-1.amazonaws.com/123456789012/thumbnails",
                25
            ),
            Source::Sqs {
                queue_arn: "arn:aws:sqs:eu-west-1:123456789012:thumbnails".into(),
                region: "eu-west-1".into(),
                batch_size: 10,
            }
        );
        assert_eq!(
            Source::for_queue("amqps://user:secret@mq.example:5671/%2f", 10),
            Source::Direct
        );
        let Source::Sqs { queue_arn, .. } =
            Source::for_queue("http://127.0.0.1:9324/000000000000/jobs", 0)
        else {
            panic!("an SQS URL")
        };
        assert!(queue_arn.ends_with(":000000000000:jobs"), "{queue_arn}");
    }
}
