//! An in-memory backend for the reconciler's unit tests: one queue whose
//! counts the test sets, recording what is sent to it.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a poisoned lock is a failed test"
)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use super::{Backends, Backlog, Created, Deleted, Reading, Redriven, Resolved, Warning, WorkQueue};
use crate::crd::{BatchJob, BatchJobStatus};
use crate::error::Result;
use crate::workload::WorkerQueue;

/// A queue named `name`, with the counts a test sets.
pub struct MemoryQueue {
    name: String,
    state: Mutex<State>,
}

struct State {
    reading: Reading,
    sent: Vec<(String, String)>,
    remade: usize,
}

impl MemoryQueue {
    /// An empty queue.
    pub fn new(name: &str) -> Arc<Self> {
        Arc::new(Self {
            name: name.to_owned(),
            state: Mutex::new(State {
                reading: Reading::Known(Backlog::default(), Backlog::default()),
                sent: Vec::new(),
                remade: 0,
            }),
        })
    }

    /// What the next poll reads.
    pub fn set(&self, reading: Reading) {
        self.state.lock().unwrap().reading = reading;
    }

    /// `visible` waiting, `in_flight` leased, `dead` dead-lettered.
    pub fn set_counts(&self, visible: i64, in_flight: i64, dead: i64) {
        self.set(Reading::Known(
            Backlog { visible, in_flight },
            Backlog {
                visible: dead,
                in_flight: 0,
            },
        ));
    }

    /// Every chunk sent so far.
    pub fn sent(&self) -> Vec<(String, String)> {
        self.state.lock().unwrap().sent.clone()
    }

    /// How many times the queue was made again.
    pub fn remade(&self) -> usize {
        self.state.lock().unwrap().remade
    }
}

#[async_trait]
impl WorkQueue for MemoryQueue {
    fn url(&self) -> String {
        format!("memory://{}", self.name)
    }

    fn key(&self) -> String {
        format!("memory {}", self.name)
    }

    fn lag(&self) -> Duration {
        Duration::ZERO
    }

    fn worker_queue(&self) -> WorkerQueue {
        WorkerQueue::Url(self.url())
    }

    async fn send(&self, bodies: Vec<(String, String)>) -> Result<()> {
        self.state.lock().unwrap().sent.extend(bodies);
        Ok(())
    }

    async fn poll(&self) -> Result<Reading> {
        Ok(self.state.lock().unwrap().reading)
    }

    async fn remake(&self) -> Result<Warning> {
        let mut state = self.state.lock().unwrap();
        state.remade += 1;
        state.reading = Reading::Known(Backlog::default(), Backlog::default());
        Ok(("QueueRecreated", format!("{} made again", self.name)))
    }

    async fn redrive(&self, _round: i64) -> Result<Redriven> {
        Ok(Redriven::Moved {
            moved: 0,
            done: true,
        })
    }
}

/// Every job's queue is `queue`; made (and said so) when status has none.
pub struct MemoryBackends {
    /// The queue.
    pub queue: Arc<MemoryQueue>,
}

#[async_trait]
impl Backends for MemoryBackends {
    async fn resolve(
        &self,
        _job: &BatchJob,
        _namespace: &str,
        previous: &BatchJobStatus,
    ) -> Result<Resolved> {
        let created = previous.queue_url.is_none().then(|| Created {
            dead_letter_url: format!("{}-dlq", self.queue.url()),
            reason: "QueuesCreated",
            note: format!("work queue {}", self.queue.url()),
        });
        Ok(Resolved::Ready(self.queue.clone(), created))
    }

    /// Deleted when status recorded it.
    async fn delete_created(&self, job: &BatchJob) -> Result<Deleted> {
        Ok(Deleted {
            any: job.status.as_ref().is_some_and(|s| s.queue_url.is_some()),
            warning: None,
        })
    }
}
