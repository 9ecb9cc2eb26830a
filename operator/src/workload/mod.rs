//! The worker Deployment of a BatchJob, built from the BatchJob alone (no
//! API calls), so every field is unit-tested.
//!
//! The pods run the handler image with `worker` appended to its arguments
//! and are configured through the same `SHOAL_*` variables as the CLI. They
//! run under the `restricted` Pod Security Standard: non-root, read-only
//! root filesystem (an `emptyDir` at `/tmp`), no privilege escalation, all
//! capabilities dropped, seccomp `RuntimeDefault`. The BatchJob's worker
//! template (scheduling, pull secrets, volumes, labels, extended resources)
//! is merged in by [`template`], the operator's settings winning.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction,
    PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile,
    SecretKeySelector, SecurityContext, ServiceAccount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};

use shoal_protocol::env as vars;

use crate::crd::{BatchJob, HandlerSpec, MIB_PER_CPU};

pub mod function;
mod template;

pub use template::refusal as template_refusal;

/// Port of `/metrics`, `/healthz` and `/readyz` in worker pods.
pub const METRICS_PORT: i32 = 9090;
/// Label naming the BatchJob a worker belongs to.
pub const JOB_LABEL: &str = "shoal.dev/batchjob";
/// Name of the worker container.
pub const CONTAINER: &str = "worker";

/// Defaults of the handler spec.
pub const DEFAULT_MEMORY_MIB: u32 = 1024;
/// Per-item timeout when the spec sets none.
pub const DEFAULT_TIMEOUT_SECONDS: u32 = 60;

/// Longest drain a worker is given after SIGTERM (`SHOAL_SHUTDOWN_GRACE`,
/// which the worker takes up to an hour): items longer than this are given
/// back to the queue when their pod is removed.
pub const MAX_SHUTDOWN_GRACE: i64 = 3600;
/// Items one worker runs at once when the spec sets none.
pub const DEFAULT_CONCURRENCY: u32 = 1;

/// Annotation holding [`content_hash`] of what the operator last applied:
/// an unchanged Deployment is not applied again.
pub const APPLIED_HASH: &str = "shoal.dev/applied-hash";

/// A short hash of an object's content (a Deployment: as built, before the
/// annotation).
pub fn content_hash(object: &impl serde::Serialize) -> String {
    use sha2::{Digest, Sha256};
    let bytes = serde_json::to_vec(object).unwrap_or_default();
    Sha256::digest(&bytes)
        .iter()
        .take(12)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `mib` MiB written as the API server stores it (`1024` -> `1Gi`), so
/// the live Deployment holds what was applied (see [`crate::drift`]).
fn canonical_mebibytes(mib: u32) -> String {
    if mib > 0 && mib.is_multiple_of(1024) {
        format!("{}Gi", mib / 1024)
    } else {
        format!("{mib}Mi")
    }
}

/// `millis` thousandths of a CPU as the API server stores them (`2000m`
/// -> `2`).
fn canonical_millicores(millis: u32) -> String {
    if millis > 0 && millis.is_multiple_of(1000) {
        format!("{}", millis / 1000)
    } else {
        format!("{millis}m")
    }
}

/// Name of the worker Deployment of `job`.
pub fn deployment_name(job: &BatchJob) -> String {
    format!("{}-workers", job.name_any())
}

/// The ServiceAccount the operator creates for the workers of `job` when
/// its handler names none: `<name>-workers`, owned by the BatchJob, with
/// no token mounted and no role bound, so a worker pod holds no
/// Kubernetes permission at all.
pub fn service_account(job: &BatchJob) -> Option<ServiceAccount> {
    if job.spec.handler.service_account_name.is_some() {
        return None;
    }
    Some(ServiceAccount {
        metadata: ObjectMeta {
            name: Some(deployment_name(job)),
            namespace: job.namespace(),
            labels: Some(selector_labels(job)),
            owner_references: job.controller_owner_ref(&()).map(|r| vec![r]),
            ..ObjectMeta::default()
        },
        automount_service_account_token: Some(false),
        ..ServiceAccount::default()
    })
}

/// Labels of the worker pods (also the Deployment's selector).
pub fn selector_labels(job: &BatchJob) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "app.kubernetes.io/name".to_owned(),
            "shoal-worker".to_owned(),
        ),
        (JOB_LABEL.to_owned(), job.name_any()),
    ])
}

/// [`selector_labels`] as a label selector (`k=v,k=v`), for listing the
/// job's worker pods.
pub fn pod_selector(job: &BatchJob) -> String {
    selector_labels(job)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// CPU for `memory_mib`, as Lambda allots it (1,769 MiB = 1 CPU), in
/// millicores, at least 50m.
pub fn cpu_millis(memory_mib: u32) -> u32 {
    let millis = (u64::from(memory_mib) * 1000).div_ceil(u64::from(MIB_PER_CPU));
    u32::try_from(millis).unwrap_or(u32::MAX).max(50)
}

/// Memory (MiB) and CPU (millicores) of one worker pod, request = limit.
/// A shoal handler's invocations share `memoryMiB` (CPU follows it, as
/// Lambda allots it); a hosted Lambda function's `concurrency` execution
/// environments are each told `memoryMiB`, so the pod holds that much
/// (and its CPU) per environment, plus 64 MiB for the host.
pub fn pod_resources(handler: &HandlerSpec) -> (u32, u32) {
    let memory = handler.memory_mib.unwrap_or(DEFAULT_MEMORY_MIB);
    if handler.function.is_none() {
        return (memory, cpu_millis(memory));
    }
    let environments = handler.concurrency.unwrap_or(DEFAULT_CONCURRENCY).max(1);
    (
        memory
            .saturating_mul(environments)
            .saturating_add(function::HOST_MEMORY_MIB),
        cpu_millis(memory).saturating_mul(environments),
    )
}

/// The queue a worker consumes, as its pod learns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkerQueue {
    /// An SQS queue URL (`SHOAL_QUEUE`).
    Url(String),
    /// A RabbitMQ queue: the broker URL comes from the Secret into
    /// `SHOAL_AMQP_URL` (`secretKeyRef`, so it never appears in the
    /// Deployment), and `SHOAL_QUEUE` is `$(SHOAL_AMQP_URL)/<queue>`,
    /// expanded by the kubelet.
    Amqp {
        /// Secret holding the broker URL.
        secret: String,
        /// Its key.
        key: String,
        /// The queue's name.
        queue: String,
        /// Deliveries before a message is dead-lettered.
        max_attempts: u32,
    },
}

/// Where the worker finds its queue and output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wiring {
    /// The work queue.
    pub queue: WorkerQueue,
    /// `s3://bucket/prefix` of outputs, if any.
    pub output: Option<String>,
    /// The bucket a fan-out job's items come from: the only one its
    /// workers may read (`SHOAL_ALLOWED_BUCKETS`), whatever a message says.
    pub input_bucket: Option<String>,
    /// Replicas to run.
    pub replicas: i32,
    /// Image holding shoal's Lambda host, for `handler.function` jobs
    /// naming none.
    pub host_image: String,
}

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.into()),
        value_from: None,
    }
}

/// The variables naming the worker's queue (see [`WorkerQueue`]).
fn queue_env(queue: &WorkerQueue) -> Vec<EnvVar> {
    match queue {
        WorkerQueue::Url(url) => vec![env(vars::QUEUE, url.clone())],
        WorkerQueue::Amqp {
            secret,
            key,
            queue,
            max_attempts,
        } => vec![
            EnvVar {
                name: vars::AMQP_URL.to_owned(),
                value: None,
                value_from: Some(EnvVarSource {
                    secret_key_ref: Some(SecretKeySelector {
                        name: secret.clone(),
                        key: key.clone(),
                        optional: Some(false),
                    }),
                    ..EnvVarSource::default()
                }),
            },
            env(
                vars::QUEUE,
                format!("$({})/{}", vars::AMQP_URL, crate::amqp::encode_queue(queue)),
            ),
            // The worker's own limit goes up to 100 deliveries.
            env(
                vars::MAX_ATTEMPTS,
                (*max_attempts).clamp(1, 100).to_string(),
            ),
        ],
    }
}

/// The worker Deployment, owned by `job` (garbage-collected with it).
pub fn deployment(job: &BatchJob, wiring: &Wiring) -> Deployment {
    let handler = &job.spec.handler;
    let memory = handler.memory_mib.unwrap_or(DEFAULT_MEMORY_MIB);
    let timeout = handler.timeout_seconds.unwrap_or(DEFAULT_TIMEOUT_SECONDS);
    let concurrency = handler.concurrency.unwrap_or(DEFAULT_CONCURRENCY);
    // In-flight items get their full timeout after SIGTERM, plus time to
    // settle, up to an hour (a longer item is given back to the queue and
    // runs again elsewhere); Kubernetes waits a little longer before
    // SIGKILL.
    let shutdown_grace = (i64::from(timeout) + 5).min(MAX_SHUTDOWN_GRACE);
    let termination_grace = shutdown_grace + 10;

    let labels = selector_labels(job);
    let mut env_vars = queue_env(&wiring.queue);
    env_vars.extend([
        env(vars::CONCURRENCY, concurrency.to_string()),
        env(vars::TIMEOUT, timeout.to_string()),
        env(vars::MEMORY_MIB, memory.to_string()),
        env(vars::FUNCTION_NAME, job.name_any()),
        env(vars::METRICS_ADDR, format!("0.0.0.0:{METRICS_PORT}")),
        env(vars::SHUTDOWN_GRACE, shutdown_grace.to_string()),
        env(vars::LOG_FORMAT, "json"),
    ]);
    if let Some(output) = &wiring.output {
        env_vars.push(env(vars::OUTPUT, output.clone()));
    }
    if let Some(bucket) = &wiring.input_bucket {
        env_vars.push(env(vars::ALLOWED_BUCKETS, bucket.clone()));
        if wiring.output.is_some() {
            // A fan-out job's items end in its failure report.
            // Its parts are the run's: its uid keeps apart the jobs (or a
            // deleted job's namesake) that share the output prefix.
            let run = job.metadata.uid.clone().unwrap_or_else(|| job.name_any());
            env_vars.push(env(vars::RECORD_RESULTS, run));
        }
    }
    if let Some(function) = &handler.function {
        env_vars.extend(function::env(function));
    }
    // The user's variables win: ours of the same name are left out (a
    // container's env is a list-map by name, and server-side apply refuses
    // a Deployment that names a variable twice).
    env_vars.retain(|ours| handler.env.iter().all(|theirs| theirs.name != ours.name));
    env_vars.extend(handler.env.iter().cloned());

    let (command, args) = match &handler.function {
        Some(function) => {
            let (command, args) = function::command(function);
            (Some(command), args)
        }
        None => {
            let mut args = handler.args.clone();
            args.push("worker".to_owned());
            (
                (!handler.command.is_empty()).then(|| handler.command.clone()),
                args,
            )
        }
    };

    let (pod_memory, pod_cpu) = pod_resources(handler);
    let memory_quantity = Quantity(canonical_mebibytes(pod_memory));
    let cpu_quantity = Quantity(canonical_millicores(pod_cpu));
    let probe = |path: &str, period: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::Int(METRICS_PORT),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(3),
        ..Probe::default()
    };

    let mut container = Container {
        name: CONTAINER.to_owned(),
        image: Some(handler.image.clone()),
        command,
        args: Some(args),
        env: Some(env_vars),
        ports: Some(vec![ContainerPort {
            name: Some("metrics".to_owned()),
            container_port: METRICS_PORT,
            protocol: Some("TCP".to_owned()),
            ..ContainerPort::default()
        }]),
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".to_owned(), cpu_quantity.clone()),
                ("memory".to_owned(), memory_quantity.clone()),
            ])),
            limits: Some(BTreeMap::from([
                ("cpu".to_owned(), cpu_quantity),
                ("memory".to_owned(), memory_quantity),
            ])),
            ..ResourceRequirements::default()
        }),
        liveness_probe: Some(probe("/healthz", 10)),
        readiness_probe: Some(probe("/readyz", 5)),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_owned()]),
                add: None,
            }),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".to_owned(),
                localhost_profile: None,
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(template::volume_mounts(handler)),
        ..Container::default()
    };
    template::add_container_settings(handler, &mut container);
    let user_template = job.spec.template.as_ref();

    let mut pod = PodSpec {
        containers: vec![container],
        service_account_name: Some(
            handler
                .service_account_name
                .clone()
                .unwrap_or_else(|| deployment_name(job)),
        ),
        // Workers never call the Kubernetes API. (IRSA and EKS Pod Identity
        // mount their own token, unaffected by this.)
        automount_service_account_token: Some(false),
        termination_grace_period_seconds: Some(termination_grace),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(65532),
            run_as_group: Some(65532),
            fs_group: Some(65532),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".to_owned(),
                localhost_profile: None,
            }),
            ..PodSecurityContext::default()
        }),
        volumes: Some(template::volumes(user_template)),
        ..PodSpec::default()
    };
    template::add_pod_settings(user_template, &mut pod);
    if let Some(function) = &handler.function {
        let security = pod
            .containers
            .first()
            .and_then(|c| c.security_context.clone());
        function::add_host(function, &wiring.host_image, security, &mut pod);
    }
    let user_metadata = user_template
        .and_then(|t| t.metadata.clone())
        .unwrap_or_default();

    Deployment {
        metadata: ObjectMeta {
            name: Some(deployment_name(job)),
            namespace: job.namespace(),
            labels: Some(labels.clone()),
            owner_references: job.controller_owner_ref(&()).map(|r| vec![r]),
            ..ObjectMeta::default()
        },
        spec: Some(DeploymentSpec {
            replicas: Some(wiring.replicas),
            selector: LabelSelector {
                match_labels: Some(labels.clone()),
                match_expressions: None,
            },
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".to_owned()),
                rolling_update: None,
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(template::merged(&user_metadata.labels, labels)),
                    annotations: Some(template::merged(
                        &user_metadata.annotations,
                        BTreeMap::from([
                            ("prometheus.io/scrape".to_owned(), "true".to_owned()),
                            ("prometheus.io/port".to_owned(), METRICS_PORT.to_string()),
                        ]),
                    )),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod),
            },
            ..DeploymentSpec::default()
        }),
        status: None,
    }
}

#[cfg(test)]
mod tests;
