//! Queues the operator may use and delete for a job: those it created for
//! that job (an SQS tag, a RabbitMQ queue argument, holding the job's uid),
//! or those the spec names. Anything else is refused with a reason.

/// A queue exists under a name the operator derived for a job, but was not
/// created for that job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotOwned {
    /// The queue's URL or name.
    pub queue: String,
    /// The job uid it was created for (SQS tag, RabbitMQ argument), if any.
    pub owner: Option<String>,
}

/// Why a job's queues cannot be used: shown as the job's condition and an
/// Event, and looked at again later, rather than retried as an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unusable {
    /// See [`NotOwned`].
    NotOwned(NotOwned),
    /// The queue server refused to create a queue the spec asks for (e.g.
    /// a named SQS queue that exists with other attributes).
    Refused {
        /// The queue's name.
        queue: String,
        /// What the operator was doing.
        what: &'static str,
        /// The server's answer.
        reason: String,
    },
}

impl Unusable {
    /// The condition reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NotOwned(_) => "QueueNotOwned",
            Self::Refused { .. } => "QueueRefused",
        }
    }
}

impl std::fmt::Display for Unusable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotOwned(not_owned) => not_owned.fmt(f),
            Self::Refused {
                queue,
                what,
                reason,
            } => write!(f, "the queue server refused {what} {queue}: {reason}"),
        }
    }
}

impl From<NotOwned> for Unusable {
    fn from(not_owned: NotOwned) -> Self {
        Self::NotOwned(not_owned)
    }
}

impl std::fmt::Display for NotOwned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.owner {
            Some(owner) => write!(
                f,
                "queue {} was created for another BatchJob (uid {owner}); name queues explicitly in queue.name to share one",
                self.queue
            ),
            None => write!(
                f,
                "queue {} exists but was not created by shoal for this BatchJob; name it in queue.name to use it",
                self.queue
            ),
        }
    }
}
