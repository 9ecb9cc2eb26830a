//! Starting the controller: the watches and their caches, the shared
//! queue poller, and kube's `Controller` running [`super::reconcile`].

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use kube::runtime::controller::{self, Controller};
use kube::runtime::reflector;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};

use super::{
    Backlogs, Caches, Context, MANAGER, POLL_INTERVAL, Prober, backlogs, caches, error_policy,
    reconcile,
};
use crate::amqp::Amqp;
use crate::backend::Servers;
use crate::crd::BatchJob;
use crate::events::Events;
use crate::health;
use crate::metrics::Metrics;
use crate::s3::S3;
use crate::sqs::Sqs;

/// The operator's own settings a reconcile follows.
#[derive(Clone)]
pub struct Options {
    /// Idle-first scale-in ([`crate::scale_in`]); `None`: off.
    pub scale_in: Option<Prober>,
    /// Image holding shoal's Lambda host, for `handler.function` jobs
    /// naming none.
    pub host_image: String,
    /// Most reconciles running at once.
    pub concurrency: u16,
    /// How often each queue's counts are read (see [`backlogs`]).
    pub queue_poll_interval: Duration,
    /// Most queue-count reads a second.
    pub queue_polls_per_second: u32,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            scale_in: None,
            host_image: String::new(),
            concurrency: DEFAULT_CONCURRENCY,
            queue_poll_interval: POLL_INTERVAL,
            queue_polls_per_second: DEFAULT_QUEUE_POLLS_PER_SECOND,
        }
    }
}

/// Reconciles running at once unless told otherwise: enough to hide the
/// API server's and the queue's round trips on a few cores, few enough
/// that a burst of thousands of jobs queues in the controller instead of
/// in memory and open connections.
pub const DEFAULT_CONCURRENCY: u16 = 16;

/// Queue-count reads a second unless told otherwise: every queue twice a
/// second up to 500 queues, every second up to 1,000. (On SQS a read is one
/// billed request per queue, two for a job whose dead-letter queue the
/// operator made: 1,000 reads a second is 86 to 173 million a day.)
pub const DEFAULT_QUEUE_POLLS_PER_SECOND: u32 = 1000;

/// Runs the controller until SIGTERM or Ctrl-C, over BatchJobs in
/// `namespace`, or in every namespace when `None`.
pub async fn run(
    client: Client,
    sqs: Sqs,
    s3: S3,
    amqp: Amqp,
    metrics: Arc<Metrics>,
    namespace: Option<String>,
    options: Options,
) {
    let (jobs, deployments): (Api<BatchJob>, Api<Deployment>) = match &namespace {
        Some(ns) => (
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client.clone(), ns),
        ),
        None => (Api::all(client.clone()), Api::all(client.clone())),
    };
    let (job_store, job_writer) = reflector::store();
    let job_events = watcher(jobs, watcher::Config::default())
        .default_backoff()
        .modify(caches::strip)
        .reflect(job_writer)
        .applied_objects();
    // Only the Deployments the operator made (they carry the job label).
    let (deployment_store, deployment_writer) = reflector::store();
    let deployment_events = watcher(
        deployments,
        watcher::Config::default().labels(crate::workload::JOB_LABEL),
    )
    .default_backoff()
    .modify(caches::strip_deployment)
    .reflect(deployment_writer)
    .touched_objects();
    let (backlogs, wakes) =
        Backlogs::new(options.queue_poll_interval, options.queue_polls_per_second);
    let events = Events::start(&client, MANAGER, metrics.clone());
    let queues = Arc::new(Servers {
        client: client.clone(),
        sqs,
        amqp: Arc::new(amqp),
    });
    let ctx = Arc::new(Context {
        client,
        queues,
        s3,
        events,
        metrics,
        pod_looks: health::Looks::default(),
        scale_in: options.scale_in,
        host_image: options.host_image,
        backlogs,
        caches: Caches::new(job_store.clone(), deployment_store),
    });
    let poller = tokio::spawn(backlogs::poll_forever(ctx.clone()));
    let events = ctx.events.clone();
    let wakes = futures_util::stream::unfold(wakes, |mut wakes| async move {
        wakes.recv().await.map(|job| (job, wakes))
    });
    Controller::for_stream(job_events, job_store)
        .owns_stream(deployment_events)
        .reconcile_on(wakes)
        .with_config(controller::Config::default().concurrency(options.concurrency))
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "reconcile outcome");
            }
        })
        .await;
    poller.abort();
    // The last reconciles' Events, for as long as a pod's grace period
    // allows.
    if tokio::time::timeout(Duration::from_secs(5), events.flush())
        .await
        .is_err()
    {
        tracing::warn!("stopping with Events not yet written");
    }
}
