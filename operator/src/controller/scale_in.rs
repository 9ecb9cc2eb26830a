//! Idle-first scale-in, the API side (the decisions are in
//! [`crate::scale_in`]): list the job's worker pods, ask the ready ones how
//! much they hold, write the counts as pod deletion costs. Every failure is
//! logged and skipped: a scale-in never waits for this step to succeed.

use std::collections::BTreeMap;

use bytes::Bytes;
use futures_util::{StreamExt, stream};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;

use super::{Context, MANAGER};
use crate::crd::BatchJob;
use crate::scale_in::{
    self, BODY_LIMIT, DELETION_COST, PROBE_TIMEOUT, PROBES_AT_ONCE, PROBES_DEADLINE,
};
use crate::workload::{self, METRICS_PORT};

/// Reads workers' metrics over plain HTTP on their pod IPs (built once).
#[derive(Clone)]
pub struct Prober {
    http: Client<HttpConnector, Empty<Bytes>>,
}

impl Default for Prober {
    fn default() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(PROBE_TIMEOUT));
        Self {
            http: Client::builder(TokioExecutor::new()).build(connector),
        }
    }
}

impl Prober {
    /// The worker's `shoal_messages_in_flight`, or why not.
    async fn in_flight(&self, ip: &str) -> Result<i64, String> {
        // An IPv6 pod IP goes in brackets.
        let host = if ip.contains(':') {
            format!("[{ip}]")
        } else {
            ip.to_owned()
        };
        let url = format!("http://{host}:{METRICS_PORT}/metrics");
        let request = http::Request::get(url.as_str())
            .body(Empty::<Bytes>::new())
            .map_err(|e| format!("building GET {url}: {e}"))?;
        let read = async {
            let response = self
                .http
                .request(request)
                .await
                .map_err(|e| format!("GET {url}: {e}"))?;
            if !response.status().is_success() {
                return Err(format!("GET {url} answered {}", response.status()));
            }
            Limited::new(response.into_body(), BODY_LIMIT)
                .collect()
                .await
                .map(|body| body.to_bytes())
                .map_err(|e| format!("reading {url} (at most {BODY_LIMIT} bytes): {e}"))
        };
        let body = tokio::time::timeout(PROBE_TIMEOUT, read)
            .await
            .map_err(|_| format!("GET {url}: no answer in {PROBE_TIMEOUT:?}"))??;
        scale_in::in_flight(&String::from_utf8_lossy(&body))
            .ok_or_else(|| format!("{url} has no {} sample", scale_in::IN_FLIGHT_METRIC))
    }
}

/// Before `job`'s workers go from `from` to fewer (not to none: then every
/// pod goes anyway): each ready worker's in-flight count as its pod's
/// deletion cost. Takes at most [`PROBES_DEADLINE`] for the probes, then
/// the patches (8 at once).
pub(super) async fn rank_idle_first(job: &BatchJob, ctx: &Context, namespace: &str, from: i32) {
    let Some(prober) = &ctx.scale_in else {
        return;
    };
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    let selector = workload::pod_selector(job);
    let list = match pods
        .list(&ListParams::default().labels(&selector).match_any())
        .await
    {
        Ok(list) => list.items,
        Err(e) => {
            tracing::warn!(batchjob = %job.name_any(), namespace, error = %e,
                "cannot list the job's worker pods: scaling in without deletion costs");
            return;
        }
    };
    // A Deployment mid-rollout can have more pods than replicas; never
    // more probes than a bounded multiple of them.
    let deployment = workload::deployment_name(job);
    let bound = usize::try_from(from).unwrap_or(0).saturating_mul(2).max(1);
    let targets: Vec<(String, String)> = list
        .iter()
        .filter_map(|pod| scale_in::probe_target(pod, &deployment))
        .take(bound)
        .collect();
    // Answers as they come, until the deadline: the scale-in waits at
    // most that long, however many workers are silent.
    let mut counts: BTreeMap<String, i64> = BTreeMap::new();
    let mut answers = stream::iter(targets)
        .map(|(name, ip)| async move {
            let count = prober.in_flight(&ip).await;
            (name, count)
        })
        .buffer_unordered(PROBES_AT_ONCE);
    let deadline = tokio::time::sleep(PROBES_DEADLINE);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            () = &mut deadline => {
                tracing::debug!(batchjob = %job.name_any(), answered = counts.len(),
                    "probe deadline: workers not heard from keep their deletion cost");
                break;
            }
            next = answers.next() => match next {
                Some((name, Ok(count))) => {
                    counts.insert(name, count);
                }
                Some((name, Err(why))) => tracing::debug!(batchjob = %job.name_any(), pod = %name, %why,
                    "no in-flight count: the pod keeps its deletion cost"),
                None => break,
            },
        }
    }
    let patches = scale_in::patches(&list, &counts);
    stream::iter(patches)
        .for_each_concurrent(PROBES_AT_ONCE, |(pod, cost)| {
            let pods = pods.clone();
            async move {
                let patch = json!({"metadata": {"annotations": {DELETION_COST: cost}}});
                let params = PatchParams {
                    field_manager: Some(MANAGER.to_owned()),
                    ..PatchParams::default()
                };
                match pods.patch(&pod, &params, &Patch::Merge(&patch)).await {
                    Ok(_) => tracing::debug!(batchjob = %job.name_any(), %pod, %cost, "deletion cost"),
                    Err(e) => tracing::warn!(batchjob = %job.name_any(), namespace, %pod, error = %e,
                        "cannot write the pod's deletion cost (does the operator's role allow `patch` on pods?)"),
                }
            }
        })
        .await;
}
