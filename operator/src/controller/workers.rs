//! The job's workers: its Deployment as observed and as applied, and
//! whether its pods can run (the `WorkersHealthy` condition, see
//! [`crate::health`]).

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams};

use super::{Context, MANAGER, job_key};
use crate::crd::BatchJob;
use crate::error::{Error, Result};
use crate::health::{self, Stuck};
use crate::workload::{self, Wiring};

/// The Deployment as observed: replicas, ready replicas, applied hash.
pub(super) struct ObservedDeployment {
    pub(super) replicas: Option<i32>,
    pub(super) ready: i32,
    pub(super) applied_hash: Option<String>,
    /// The spec is as the operator last left it: its `generation` is the
    /// one the last apply (or drift check) recorded, or the cache has not
    /// shown that apply yet. Otherwise someone may have edited it (or the
    /// operator restarted), and the live spec is compared before deciding
    /// not to apply (see [`crate::drift`]).
    pub(super) unchanged: bool,
    /// The cached object's `resourceVersion`.
    pub(super) version: Option<String>,
    /// Its ReplicaSet cannot make pods (`ReplicaFailure` is True).
    pub(super) cannot_make_pods: bool,
}

/// The job's Deployment, from the cache (see [`super::caches`]): no API
/// call.
pub(super) fn observe_deployment(
    job: &BatchJob,
    ctx: &Context,
    namespace: &str,
) -> ObservedDeployment {
    let name = workload::deployment_name(job);
    let seen = ctx.caches.deployment(namespace, &name);
    let existing = seen.object.as_deref();
    let ready = existing
        .and_then(|d| d.status.as_ref())
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0);
    let version = existing.and_then(|d| d.metadata.resource_version.clone());
    let cannot_make_pods = existing
        .and_then(|d| d.status.as_ref())
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| {
            c.iter()
                .any(|c| c.type_ == super::caches::REPLICA_FAILURE && c.status == "True")
        });
    if let Some((replicas, hash)) = seen.applied {
        return ObservedDeployment {
            replicas: Some(replicas),
            ready,
            applied_hash: Some(hash),
            unchanged: true,
            version,
            cannot_make_pods,
        };
    }
    let generation = existing.and_then(|d| d.metadata.generation);
    ObservedDeployment {
        replicas: existing
            .and_then(|d| d.spec.as_ref())
            .and_then(|s| s.replicas),
        ready,
        applied_hash: existing
            .and_then(|d| d.metadata.annotations.as_ref())
            .and_then(|a| a.get(workload::APPLIED_HASH))
            .cloned(),
        unchanged: existing.is_some() && ctx.caches.unchanged(namespace, &name, generation),
        version,
        cannot_make_pods,
    }
}

/// The worker pods that cannot run with the number of worker pods, looked
/// for only when fewer workers are ready than the Deployment asks for, at
/// most once per [`health::LOOK_EVERY`] per job and not before the job
/// has been short of workers that long, from the API server's cache.
/// `None` when no look was due, or the list failed (logged; a pod list
/// must never stop a reconcile from scaling): the job keeps the condition
/// it has.
pub(super) async fn observe_stuck_pods(
    job: &BatchJob,
    ctx: &Context,
    namespace: &str,
    observed: &ObservedDeployment,
    now: Timestamp,
) -> Option<(Vec<Stuck>, usize)> {
    let key = job_key(job);
    if observed.replicas.unwrap_or(0) <= observed.ready {
        ctx.pod_looks.forget(&key);
        return Some((Vec::new(), 0));
    }
    if !ctx.pod_looks.due(&key, std::time::Instant::now()) {
        return None;
    }
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    let selector = workload::pod_selector(job);
    match pods
        .list(&ListParams::default().labels(&selector).match_any())
        .await
    {
        Ok(list) => {
            let stuck = list
                .items
                .iter()
                .filter_map(|pod| health::stuck(pod, now))
                .collect();
            Some((stuck, list.items.len()))
        }
        Err(e) => {
            tracing::warn!(
                batchjob = %job.name_any(),
                namespace,
                error = %e,
                "cannot list the job's worker pods (does the operator's role allow `list` on pods?); WorkersHealthy left as it was"
            );
            None
        }
    }
}

/// The job's `WorkersHealthy` condition from what [`observe_stuck_pods`]
/// found (`None`: the one it had), with one Warning Event when it turns
/// False.
pub(super) async fn workers_condition(
    job: &BatchJob,
    ctx: &Context,
    looked: Option<(Vec<Stuck>, usize)>,
    previous: &[Condition],
    now: Timestamp,
) -> Option<Condition> {
    let workers = match looked {
        Some((stuck, pods)) => Some(health::workers_condition(
            previous,
            &stuck,
            pods,
            job.metadata.generation,
            now,
        )),
        None => health::kept(previous),
    };
    if let Some(workers) = &workers
        && health::turned_unhealthy(previous, workers)
    {
        ctx.event(job, true, "WorkersCannotRun", workers.message.clone());
    }
    workers
}

/// What the API server would say of `job`'s worker Deployment, asked with
/// a server-side dry run before any queue exists (after the operator's own
/// look at the template, [`workload::template_refusal`]): `Some(message)`
/// when it refuses it (an env name it does not take, a label value too long, an
/// image it cannot parse), so the job stops there with the reason instead
/// of creating queues and sending chunks for workers that can never start.
pub(super) async fn refused_deployment(
    job: &BatchJob,
    ctx: &Context,
    namespace: &str,
) -> Result<Option<String>> {
    if let Some(reason) = workload::template_refusal(job.spec.template.as_ref()) {
        return Ok(Some(reason));
    }
    let wiring = Wiring {
        queue: workload::WorkerQueue::Url("https://sqs.invalid/000000000000/validate".into()),
        output: crate::plan::output_location(job),
        input_bucket: None,
        replicas: 0,
        host_image: ctx.host_image.clone(),
    };
    let deployment = workload::deployment(job, &wiring);
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), namespace);
    let name = workload::deployment_name(job);
    match deployments
        .patch(
            &name,
            &PatchParams::apply(MANAGER).force().dry_run(),
            &Patch::Apply(&deployment),
        )
        .await
    {
        Ok(_) => Ok(None),
        Err(kube::Error::Api(status)) if matches!(status.code, 400 | 422) => Ok(Some(format!(
            "the worker Deployment would be refused: {}",
            status.message
        ))),
        Err(e) => Err(Error::Kube {
            what: format!("checking deployment {namespace}/{name} (dry run)"),
            source: e,
        }),
    }
}

/// Server-side applies the Deployment unless the Deployment in the cluster
/// was applied from the same content (and still has the replicas asked
/// for). The workers' ServiceAccount ([`workload::service_account`]) is
/// applied first when this process has not applied its content yet, when
/// the workers go up from none (pods are about to be made), and whenever the
/// Deployment says its ReplicaSet cannot make pods (a ServiceAccount deleted
/// by hand is made again then); any other change of replicas is one
/// request.
pub(super) async fn apply_deployment(
    job: &BatchJob,
    ctx: &Context,
    namespace: &str,
    wiring: &Wiring,
    observed: &ObservedDeployment,
) -> Result<()> {
    let mut deployment = workload::deployment(job, wiring);
    let hash = workload::content_hash(&deployment);
    let name = workload::deployment_name(job);
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), namespace);
    let account = workload::service_account(job);
    if observed.cannot_make_pods {
        ensure_account(ctx, namespace, &name, account.as_ref(), true).await?;
    }
    if observed.applied_hash.as_deref() == Some(hash.as_str())
        && observed.replicas == Some(wiring.replicas)
    {
        if observed.unchanged {
            return Ok(());
        }
        // Same content as applied, but the spec changed since (or the
        // operator does not know): compare the live spec.
        let live = deployments
            .get_opt(&name)
            .await
            .map_err(Error::kube(format!(
                "reading deployment {namespace}/{name}"
            )))?;
        let desired = deployment
            .spec
            .as_ref()
            .and_then(|s| serde_json::to_value(s).ok());
        let live_spec = live
            .as_ref()
            .and_then(|d| d.spec.as_ref())
            .and_then(|s| serde_json::to_value(s).ok());
        // A Deployment gone (deleted by hand) is made again below.
        if let (Some(live_spec), Some(desired)) = (live_spec, desired) {
            match crate::drift::difference(&live_spec, &desired) {
                None => {
                    let generation = live.as_ref().and_then(|d| d.metadata.generation);
                    ctx.caches.settled(namespace, &name, generation);
                    return Ok(());
                }
                Some(field) => tracing::info!(
                    batchjob = %job.name_any(),
                    deployment = %name,
                    field = %field,
                    "the worker Deployment was edited by hand: applying the BatchJob's again"
                ),
            }
        }
    }
    // Applied above already when the ReplicaSet cannot make pods.
    let from_none = observed.replicas.unwrap_or(0) == 0 && wiring.replicas > 0;
    let force = from_none && !observed.cannot_make_pods;
    ensure_account(ctx, namespace, &name, account.as_ref(), force).await?;
    deployment
        .metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(workload::APPLIED_HASH.to_owned(), hash.clone());
    let applied = deployments
        .patch(
            &name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&deployment),
        )
        .await
        .map_err(Error::kube(format!(
            "applying deployment {namespace}/{name}"
        )))?;
    ctx.caches.expect(
        namespace,
        &name,
        (observed.version.clone(), applied.metadata.generation),
        wiring.replicas,
        hash,
    );
    Ok(())
}

/// Server-side applies the workers' ServiceAccount `account` (`None`: the
/// handler names its own) of Deployment `name` when `force`d or when this
/// process has not applied that content yet, and records it.
async fn ensure_account(
    ctx: &Context,
    namespace: &str,
    name: &str,
    account: Option<&ServiceAccount>,
    force: bool,
) -> Result<()> {
    let Some(account) = account else {
        return Ok(());
    };
    let content = workload::content_hash(account);
    if !force && ctx.caches.account_applied(namespace, name, &content) {
        return Ok(());
    }
    let accounts: Api<ServiceAccount> = Api::namespaced(ctx.client.clone(), namespace);
    accounts
        .patch(
            name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(account),
        )
        .await
        .map_err(Error::kube(format!(
            "applying service account {namespace}/{name}"
        )))?;
    ctx.caches.account_applied_with(namespace, name, content);
    Ok(())
}
