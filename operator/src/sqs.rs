//! The operator's view of an SQS queue: its backlog, read with
//! `GetQueueAttributes` (approximate counts, as every SQS scaler reads them).

use aws_sdk_sqs::types::QueueAttributeName;

use crate::error::{Error, Result};
pub use crate::ownership::{NotOwned, Unusable};

/// Messages waiting and messages received but not yet deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Backlog {
    /// `ApproximateNumberOfMessages` plus `ApproximateNumberOfMessagesDelayed`
    /// (waiting, now or after a retry delay).
    pub visible: i64,
    /// `ApproximateNumberOfMessagesNotVisible`.
    pub in_flight: i64,
}

impl Backlog {
    /// What the scaler counts: every message not yet done.
    pub fn total(&self) -> i64 {
        self.visible.saturating_add(self.in_flight)
    }
}

/// Whether `err` says the queue does not exist.
fn is_missing<E, R>(err: &aws_sdk_sqs::error::SdkError<E, R>) -> bool
where
    E: aws_sdk_sqs::error::ProvideErrorMetadata,
{
    err.as_service_error().is_some_and(|s| {
        matches!(
            s.code(),
            Some("AWS.SimpleQueueService.NonExistentQueue" | "QueueDoesNotExist")
        )
    })
}

/// Whether `err` says a queue of that name exists with other attributes:
/// someone else made it.
fn exists_otherwise<E, R>(err: &aws_sdk_sqs::error::SdkError<E, R>) -> bool
where
    E: aws_sdk_sqs::error::ProvideErrorMetadata,
{
    err.as_service_error().is_some_and(|s| {
        matches!(
            s.code(),
            Some(
                "QueueAlreadyExists" | "QueueNameExists" | "AWS.SimpleQueueService.QueueNameExists"
            )
        )
    })
}

/// Whether `err` is SQS refusing the request itself (a client error such
/// as an invalid name or attribute, a name that exists with other
/// attributes, or access denied), which the same request sent again will
/// not fix; throttling is not a refusal.
fn refused<E>(
    err: &aws_sdk_sqs::error::SdkError<E, aws_sdk_sqs::config::http::HttpResponse>,
) -> bool
where
    E: aws_sdk_sqs::error::ProvideErrorMetadata,
{
    let Some(service) = err.as_service_error() else {
        return false;
    };
    let client_error = err
        .raw_response()
        .map(|r| r.status().as_u16())
        .is_some_and(|code| (400..500).contains(&code) && code != 429);
    let throttled = service
        .code()
        .is_some_and(|c| c.contains("Throttl") || c.contains("OverLimit"));
    client_error && !throttled
}

/// SQS's own words for a refusal: its error code and message (the full
/// error chain is for logs; it is too long for an Event).
fn service_message<E, R>(err: &aws_sdk_sqs::error::SdkError<E, R>) -> String
where
    E: aws_sdk_sqs::error::ProvideErrorMetadata,
{
    match err.as_service_error() {
        Some(service) => format!(
            "{} ({})",
            service.message().unwrap_or("no message"),
            service.code().unwrap_or("no code")
        ),
        None => "no answer".to_owned(),
    }
}

/// An SQS client shared by every reconcile.
#[derive(Debug, Clone)]
pub struct Sqs {
    pub(crate) client: aws_sdk_sqs::Client,
}

impl Sqs {
    /// A client from the default AWS chain (environment, profile, IRSA).
    pub async fn from_env() -> Self {
        let config = crate::aws::config().await;
        Self {
            client: aws_sdk_sqs::Client::new(&config),
        }
    }

    /// The same client, counting each request it sends (every attempt,
    /// retries included) in `counter`.
    pub fn counted(self, counter: prometheus::IntCounter) -> Self {
        let config = self
            .client
            .config()
            .to_builder()
            .interceptor(Counting(counter))
            .build();
        Self {
            client: aws_sdk_sqs::Client::from_conf(config),
        }
    }

    /// Wraps a client built elsewhere.
    pub fn from_client(client: aws_sdk_sqs::Client) -> Self {
        Self { client }
    }

    /// The backlog of the queue at `url`.
    ///
    /// `None`: the queue does not exist (deleted behind the operator).
    pub async fn backlog(&self, url: &str) -> Result<Option<Backlog>> {
        let answer = match self
            .client
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
            .send()
            .await
        {
            Ok(answer) => answer,
            Err(e) if is_missing(&e) => return Ok(None),
            Err(e) => {
                return Err(Error::Queue {
                    queue: url.to_owned(),
                    what: "reading the backlog",
                    reason: aws_sdk_sqs::error::DisplayErrorContext(e).to_string(),
                });
            }
        };
        let attributes = answer.attributes();
        let count = |name: &QueueAttributeName| -> i64 {
            attributes
                .and_then(|a| a.get(name))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        Ok(Some(Backlog {
            visible: count(&QueueAttributeName::ApproximateNumberOfMessages).saturating_add(count(
                &QueueAttributeName::ApproximateNumberOfMessagesDelayed,
            )),
            in_flight: count(&QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
        }))
    }
}

/// Counts the requests an SQS client sends.
#[derive(Debug)]
struct Counting(prometheus::IntCounter);

impl aws_sdk_sqs::config::Intercept for Counting {
    fn name(&self) -> &'static str {
        "CountRequests"
    }

    fn read_before_transmit(
        &self,
        _context: &aws_sdk_sqs::config::interceptors::BeforeTransmitInterceptorContextRef<'_>,
        _components: &aws_sdk_sqs::config::RuntimeComponents,
        _cfg: &mut aws_sdk_sqs::config::ConfigBag,
    ) -> std::result::Result<(), aws_sdk_sqs::error::BoxError> {
        self.0.inc();
        Ok(())
    }
}

/// Queues the operator creates for a BatchJob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queues {
    /// The work queue.
    pub url: String,
    /// Its dead-letter queue.
    pub dead_letter_url: String,
}

/// How to create the work queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSettings {
    /// Work queue name.
    pub name: String,
    /// Dead-letter queue name.
    pub dead_letter_name: String,
    /// Both are FIFO queues (names end in `.fifo`).
    pub fifo: bool,
    /// Deliveries before a message is dead-lettered.
    pub max_receive_count: u32,
    /// Visibility timeout in seconds.
    pub visibility_timeout: u32,
    /// The BatchJob these queues are for (`namespace/name`) and its uid:
    /// tagged on the queues the operator creates ([`OWNER_TAG`]).
    pub job: String,
    /// The job's uid.
    pub owner: String,
    /// The spec names the work queue: it may exist already, whoever made
    /// it, and is never deleted by the operator.
    pub name_given: bool,
    /// The same for the dead-letter queue.
    pub dead_letter_name_given: bool,
}

/// Tag with the uid of the BatchJob a queue was created for. A queue the
/// spec does not name is used, and deleted, only when it carries its job's
/// uid: never a queue another job or a person made.
pub const OWNER_TAG: &str = "shoal.dev/batchjob-uid";
/// Tag with the `namespace/name` of that BatchJob, for people.
pub const JOB_TAG: &str = "shoal.dev/batchjob";

impl Sqs {
    pub(crate) fn error(queue: &str, what: &'static str) -> impl FnOnce(String) -> Error {
        let queue = queue.to_owned();
        move |reason| Error::Queue {
            queue,
            what,
            reason,
        }
    }

    /// Creates the dead-letter queue and the work queue with its redrive
    /// policy; returns both URLs. Idempotent: SQS answers an existing queue
    /// with the same attributes with its URL. FIFO queues deduplicate by
    /// the id each chunk is sent with (not by content) and use
    /// high-throughput mode (deduplication and throughput limit per message
    /// group, one group per chunk).
    ///
    /// A queue whose name the operator derived (not given by the spec)
    /// must carry the job's uid in [`OWNER_TAG`]; one that does not is
    /// [`NotOwned`], and the work queue is then not created. A creation SQS
    /// refuses (see [`refused`]) is [`Unusable::Refused`], with SQS's
    /// message; when it is the dead-letter queue, the work queue is not
    /// created either.
    pub async fn ensure_queues(
        &self,
        settings: &QueueSettings,
    ) -> Result<std::result::Result<Queues, Unusable>> {
        let mut dlq = self
            .client
            .create_queue()
            .queue_name(&settings.dead_letter_name)
            .tags(OWNER_TAG, &settings.owner)
            .tags(JOB_TAG, &settings.job)
            .attributes(QueueAttributeName::MessageRetentionPeriod, "1209600");
        if settings.fifo {
            dlq = dlq.attributes(QueueAttributeName::FifoQueue, "true");
        }
        let dlq = match dlq.send().await {
            Ok(created) => created,
            Err(e) if !settings.dead_letter_name_given && exists_otherwise(&e) => {
                return Ok(Err(NotOwned {
                    queue: settings.dead_letter_name.clone(),
                    owner: None,
                }
                .into()));
            }
            Err(e) if refused(&e) => {
                return Ok(Err(Unusable::Refused {
                    queue: settings.dead_letter_name.clone(),
                    what: "creating the dead-letter queue",
                    reason: service_message(&e),
                }));
            }
            Err(e) => {
                return Err(Self::error(
                    &settings.dead_letter_name,
                    "creating the dead-letter queue",
                )(
                    aws_sdk_sqs::error::DisplayErrorContext(e).to_string()
                ));
            }
        };
        let dead_letter_url = dlq.queue_url().unwrap_or_default().to_owned();
        if !settings.dead_letter_name_given
            && let Err(not_owned) = self.owned(&dead_letter_url, &settings.owner).await?
        {
            return Ok(Err(not_owned.into()));
        }
        let arn = self
            .client
            .get_queue_attributes()
            .queue_url(&dead_letter_url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .map_err(|e| aws_sdk_sqs::error::DisplayErrorContext(e).to_string())
            .map_err(Self::error(
                &dead_letter_url,
                "reading the dead-letter queue's ARN",
            ))?
            .attributes()
            .and_then(|a| a.get(&QueueAttributeName::QueueArn))
            .cloned()
            .unwrap_or_default();
        let redrive = serde_json::json!({
            "deadLetterTargetArn": arn,
            "maxReceiveCount": settings.max_receive_count.to_string(),
        });
        let mut queue = self
            .client
            .create_queue()
            .queue_name(&settings.name)
            .tags(OWNER_TAG, &settings.owner)
            .tags(JOB_TAG, &settings.job)
            .attributes(QueueAttributeName::RedrivePolicy, redrive.to_string())
            .attributes(
                QueueAttributeName::VisibilityTimeout,
                settings.visibility_timeout.to_string(),
            );
        if settings.fifo {
            queue = queue
                .attributes(QueueAttributeName::FifoQueue, "true")
                .attributes(QueueAttributeName::DeduplicationScope, "messageGroup")
                .attributes(QueueAttributeName::FifoThroughputLimit, "perMessageGroupId");
        }
        let queue = match queue.send().await {
            Ok(created) => created,
            Err(e) if !settings.name_given && exists_otherwise(&e) => {
                return Ok(Err(NotOwned {
                    queue: settings.name.clone(),
                    owner: None,
                }
                .into()));
            }
            Err(e) if refused(&e) => {
                return Ok(Err(Unusable::Refused {
                    queue: settings.name.clone(),
                    what: "creating the work queue",
                    reason: service_message(&e),
                }));
            }
            Err(e) => {
                return Err(Self::error(&settings.name, "creating the work queue")(
                    aws_sdk_sqs::error::DisplayErrorContext(e).to_string(),
                ));
            }
        };
        let url = queue.queue_url().unwrap_or_default().to_owned();
        if !settings.name_given
            && let Err(not_owned) = self.owned(&url, &settings.owner).await?
        {
            return Ok(Err(not_owned.into()));
        }
        Ok(Ok(Queues {
            url,
            dead_letter_url,
        }))
    }

    /// Whether the queue at `url` carries `owner` in [`OWNER_TAG`].
    async fn owned(&self, url: &str, owner: &str) -> Result<std::result::Result<(), NotOwned>> {
        let tags = self
            .client
            .list_queue_tags()
            .queue_url(url)
            .send()
            .await
            .map_err(|e| aws_sdk_sqs::error::DisplayErrorContext(e).to_string())
            .map_err(Self::error(url, "reading the queue's tags"))?;
        let tagged = tags.tags().and_then(|t| t.get(OWNER_TAG)).cloned();
        Ok(if tagged.as_deref() == Some(owner) {
            Ok(())
        } else {
            Err(NotOwned {
                queue: url.to_owned(),
                owner: tagged,
            })
        })
    }

    /// The URL of queue `name` if it exists and carries `owner` in
    /// [`OWNER_TAG`]: what the finalizer may delete.
    pub async fn owned_queue(&self, name: &str, owner: &str) -> Result<Option<String>> {
        let url = match self.client.get_queue_url().queue_name(name).send().await {
            Ok(found) => found.queue_url().unwrap_or_default().to_owned(),
            Err(e) if is_missing(&e) => return Ok(None),
            Err(e) => {
                return Err(Error::Queue {
                    queue: name.to_owned(),
                    what: "looking up",
                    reason: aws_sdk_sqs::error::DisplayErrorContext(e).to_string(),
                });
            }
        };
        Ok(self.owned(&url, owner).await?.ok().map(|()| url))
    }

    /// Deletes the queue at `url`; a queue already gone is fine.
    pub async fn delete_queue(&self, url: &str) -> Result<()> {
        match self.client.delete_queue().queue_url(url).send().await {
            Ok(_) => Ok(()),
            Err(e) if is_missing(&e) => Ok(()),
            Err(e) => Err(Error::Queue {
                queue: url.to_owned(),
                what: "deleting",
                reason: aws_sdk_sqs::error::DisplayErrorContext(e).to_string(),
            }),
        }
    }

    /// Sends `bodies` (`(chunk id, body)`, at most 10) in one
    /// `SendMessageBatch`; fails unless every one was accepted. To a FIFO
    /// queue each goes with its chunk id as message group and deduplication
    /// id, so sending a chunk again within SQS's five-minute deduplication
    /// interval is accepted and dropped.
    pub async fn send_batch(&self, url: &str, bodies: &[(String, String)]) -> Result<()> {
        let fifo = url.ends_with(".fifo");
        let entries = bodies
            .iter()
            .enumerate()
            .map(|(i, (chunk, body))| {
                let entry = aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(body);
                if fifo {
                    entry
                        .message_group_id(chunk)
                        .message_deduplication_id(chunk)
                } else {
                    entry
                }
                .build()
                .map_err(|e| e.to_string())
            })
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(Self::error(url, "building a batch of chunks"))?;
        let answer = self
            .client
            .send_message_batch()
            .queue_url(url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| aws_sdk_sqs::error::DisplayErrorContext(e).to_string())
            .map_err(Self::error(url, "sending chunks"))?;
        if let Some(failed) = answer.failed().first() {
            let index: usize = failed.id().parse().unwrap_or(0);
            let chunk = bodies.get(index).map_or("?", |(id, _)| id.as_str());
            return Err(Error::Queue {
                queue: url.to_owned(),
                what: "sending chunks",
                reason: format!(
                    "chunk {chunk} refused: {} ({})",
                    failed.message().unwrap_or_default(),
                    failed.code()
                ),
            });
        }
        Ok(())
    }
}
