//! [`Context`]: the clients and state every reconcile shares, and the
//! Events it publishes.

use std::sync::Arc;

use kube::runtime::events::{Event as KubeEvent, EventType, Recorder};
use kube::{Client, Resource, ResourceExt};

use super::Prober;
use crate::backend::Backends;
use crate::crd::BatchJob;
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
    /// Publishes Kubernetes Events about BatchJobs.
    pub recorder: Recorder,
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
    /// Publishes an Event on `job`; a failure is logged, never fatal. The
    /// note is cut to the 1,024 bytes the API server takes (the status
    /// condition keeps the whole message).
    pub(crate) async fn event(&self, job: &BatchJob, warning: bool, reason: &str, note: String) {
        let note = plan::event_note(note);
        let event = KubeEvent {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.to_owned(),
            note: Some(note),
            action: "Reconcile".to_owned(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, &job.object_ref(&())).await {
            tracing::warn!(batchjob = %job.name_any(), reason, error = %e, "cannot publish event");
        }
    }
}
