//! [`Context`]: the clients and state every reconcile shares, and the
//! Events it publishes.

use std::sync::Arc;

use kube::{Client, Resource};

use super::Prober;
use crate::backend::Backends;
use crate::crd::BatchJob;
use crate::events::{Events, Note};
use crate::health;
use crate::metrics::Metrics;
use crate::plan;
use crate::s3::S3;

/// What every reconcile shares.
pub struct Context {
    /// Kubernetes client.
    pub client: Client,
    /// The queue servers (SQS, RabbitMQ).
    pub queues: Arc<dyn Backends>,
    /// S3 client (fan-out listings).
    pub s3: S3,
    /// Publishes Kubernetes Events about BatchJobs, beside the reconciles.
    pub events: Events,
    /// The operator's metrics.
    pub metrics: Arc<Metrics>,
    /// When each job's worker pods were last looked at (`WorkersHealthy`).
    pub pod_looks: health::Looks,
    /// Idle-first scale-in ([`crate::scale_in`]); `None`: off.
    pub scale_in: Option<Prober>,
    /// Image holding shoal's Lambda host (`handler.function` jobs).
    pub host_image: String,
    /// Queue counts, shared by the jobs on each queue.
    pub backlogs: super::Backlogs,
    /// The BatchJobs and worker Deployments as last seen.
    pub caches: super::Caches,
}

impl Context {
    /// Publishes an Event on `job` (see [`Context::announce`]).
    pub(crate) fn event(&self, job: &BatchJob, warning: bool, reason: &str, note: String) {
        self.announce(job, vec![Note::new(warning, reason, note)]);
    }

    /// Publishes `notes` as Events on `job`, in that order, without
    /// waiting for them to be written ([`crate::events`]); a failure is
    /// logged and counted, never fatal. Each note is cut to the 1,024
    /// bytes the API server takes (the status condition keeps the whole
    /// message).
    pub(crate) fn announce(&self, job: &BatchJob, notes: Vec<Note>) {
        let notes = notes
            .into_iter()
            .map(|n| Note {
                note: plan::event_note(n.note),
                ..n
            })
            .collect();
        self.events.publish(job.object_ref(&()), notes);
    }
}
