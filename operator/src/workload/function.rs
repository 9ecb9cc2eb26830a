//! `handler.function`: an existing Lambda function's image as the worker,
//! unchanged. An init container copies shoal's host (`shoal-host install`)
//! from the host image into an `emptyDir`; the worker container runs the
//! function's image with the host as its command, and the host runs the
//! function's own command as its handler (`shoal-host worker -- COMMAND`).
//! Both containers keep the restricted security profile: the host needs no
//! privilege, and the function runs as the pod's non-root user.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Container, EmptyDirVolumeSource, EnvVar, PodSpec, ResourceRequirements, SecurityContext,
    Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use shoal_protocol::env as vars;

use crate::crd::FunctionSpec;

/// Where the host is copied to, in both containers.
pub const HOST_DIR: &str = "/opt/shoal";
/// The host's path in the worker container.
pub const HOST_BIN: &str = "/opt/shoal/shoal-host";
/// The host's path in the host image.
pub const HOST_IMAGE_BIN: &str = "/usr/local/bin/shoal-host";
/// The volume holding the host.
pub const HOST_VOLUME: &str = "shoal-host";
/// The init container copying it.
pub const INSTALLER: &str = "shoal-host";
/// Memory the host itself is given in a function's pod, besides its
/// environments'.
pub const HOST_MEMORY_MIB: u32 = 64;
/// The entrypoint of AWS's Lambda base images.
pub const DEFAULT_ENTRYPOINT: &str = "/lambda-entrypoint.sh";

/// The worker container's command and arguments: the host, then the
/// function's command with its handler last.
pub fn command(function: &FunctionSpec) -> (Vec<String>, Vec<String>) {
    let mut args = vec!["worker".to_owned(), "--".to_owned()];
    if function.command.is_empty() {
        args.push(DEFAULT_ENTRYPOINT.to_owned());
    } else {
        args.extend(function.command.iter().cloned());
    }
    args.extend(function.handler.iter().cloned());
    (vec![HOST_BIN.to_owned()], args)
}

/// The host's settings for the function.
pub fn env(function: &FunctionSpec) -> Vec<EnvVar> {
    let var = |name: &str, value: String| EnvVar {
        name: name.to_owned(),
        value: Some(value),
        value_from: None,
    };
    let mut vars = vec![
        var(
            vars::BATCH_SIZE,
            function.batch_size.unwrap_or(10).clamp(1, 10).to_string(),
        ),
        var(
            vars::INIT_TIMEOUT,
            function.init_timeout_seconds.unwrap_or(10).to_string(),
        ),
    ];
    if let Some(handler) = &function.handler {
        vars.push(var("_HANDLER", handler.clone()));
    }
    vars
}

/// Adds the host's volume, its init container (`host_image`, unless the
/// function names its own) and its mount in the worker container (the
/// first, read-only) to `pod`. `security` is the worker container's
/// security context, which the init container shares.
pub fn add_host(
    function: &FunctionSpec,
    host_image: &str,
    security: Option<SecurityContext>,
    pod: &mut PodSpec,
) {
    let mount = |read_only| VolumeMount {
        name: HOST_VOLUME.to_owned(),
        mount_path: HOST_DIR.to_owned(),
        read_only: Some(read_only),
        ..VolumeMount::default()
    };
    // The pod's own init process (the pause container) reaps what the
    // function's processes leave behind when an environment is ended, and
    // the host is not PID 1.
    pod.share_process_namespace = Some(true);
    // The name and path are the host's: a template's volume or mount
    // taking them is left out, as the `tmp` volume's are.
    let volumes = pod.volumes.get_or_insert_with(Vec::new);
    volumes.retain(|v| v.name != HOST_VOLUME);
    volumes.push(Volume {
        name: HOST_VOLUME.to_owned(),
        empty_dir: Some(EmptyDirVolumeSource {
            medium: None,
            size_limit: Some(Quantity("128Mi".to_owned())),
        }),
        ..Volume::default()
    });
    if let Some(worker) = pod.containers.first_mut() {
        let mounts = worker.volume_mounts.get_or_insert_with(Vec::new);
        mounts.retain(|m| m.name != HOST_VOLUME && m.mount_path != HOST_DIR);
        mounts.push(mount(true));
    }
    let small = BTreeMap::from([
        ("cpu".to_owned(), Quantity("100m".to_owned())),
        ("memory".to_owned(), Quantity("64Mi".to_owned())),
    ]);
    pod.init_containers
        .get_or_insert_with(Vec::new)
        .push(Container {
            name: INSTALLER.to_owned(),
            image: Some(
                function
                    .host_image
                    .clone()
                    .unwrap_or_else(|| host_image.to_owned()),
            ),
            command: Some(vec![
                HOST_IMAGE_BIN.to_owned(),
                "install".to_owned(),
                HOST_BIN.to_owned(),
            ]),
            resources: Some(ResourceRequirements {
                requests: Some(small.clone()),
                limits: Some(small),
                ..ResourceRequirements::default()
            }),
            security_context: security,
            volume_mounts: Some(vec![mount(false)]),
            ..Container::default()
        });
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::expect_used,
        reason = "test code: a panic is how a test reports failure"
    )]

    use super::*;
    use crate::crd::{BatchJob, HandlerSpec};
    use crate::workload::{Wiring, WorkerQueue, deployment};

    /// The builder tests' job (an SQS source), its handler a function.
    fn function_job(function: FunctionSpec) -> BatchJob {
        let mut job = super::super::tests::job();
        job.spec.handler = HandlerSpec {
            function: Some(function),
            ..HandlerSpec::image("123456789012.dkr.ecr.eu-west-1.amazonaws.com/thumbs:3")
        };
        job
    }

    fn pod(job: &BatchJob) -> PodSpec {
        let wiring = Wiring {
            queue: WorkerQueue::Url("http://127.0.0.1:9324/000000000000/jobs".into()),
            output: None,
            input_bucket: None,
            replicas: 1,
            host_image: "shoal-host:0.1.0".into(),
        };
        deployment(job, &wiring)
            .spec
            .unwrap()
            .template
            .spec
            .unwrap()
    }

    fn env_value<'a>(container: &'a Container, name: &str) -> Option<&'a str> {
        container
            .env
            .iter()
            .flatten()
            .find(|v| v.name == name)
            .and_then(|v| v.value.as_deref())
    }

    #[test]
    fn an_aws_base_image_runs_behind_the_host_copied_in_by_an_init_container() {
        let pod = pod(&function_job(FunctionSpec {
            command: vec![],
            handler: Some("app.handler".into()),
            batch_size: None,
            init_timeout_seconds: Some(30),
            host_image: None,
        }));
        let worker = &pod.containers[0];
        assert_eq!(
            worker.image.as_deref(),
            Some("123456789012.dkr.ecr.eu-west-1.amazonaws.com/thumbs:3")
        );
        assert_eq!(worker.command.as_deref(), Some(&[HOST_BIN.to_owned()][..]));
        assert_eq!(
            worker.args.as_deref().unwrap(),
            ["worker", "--", "/lambda-entrypoint.sh", "app.handler"]
        );
        assert_eq!(env_value(worker, "_HANDLER"), Some("app.handler"));
        assert_eq!(env_value(worker, "SHOAL_BATCH_SIZE"), Some("10"));
        assert_eq!(env_value(worker, "SHOAL_INIT_TIMEOUT"), Some("30"));
        let mount = worker
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| m.mount_path == HOST_DIR)
            .unwrap();
        assert_eq!(
            (mount.name.as_str(), mount.read_only),
            (HOST_VOLUME, Some(true))
        );

        let init = &pod.init_containers.as_ref().unwrap()[0];
        assert_eq!(init.image.as_deref(), Some("shoal-host:0.1.0"));
        assert_eq!(
            init.command.as_deref().unwrap(),
            [HOST_IMAGE_BIN, "install", HOST_BIN]
        );
        assert_eq!(
            init.security_context, worker.security_context,
            "the init container is as restricted as the worker"
        );
        assert_eq!(pod.share_process_namespace, Some(true));
        let volume = pod
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == HOST_VOLUME)
            .unwrap();
        assert!(volume.empty_dir.is_some());
    }

    #[test]
    fn each_execution_environment_gets_the_memory_it_is_told() {
        let mut job = function_job(FunctionSpec {
            command: vec![],
            handler: Some("app.handler".into()),
            batch_size: None,
            init_timeout_seconds: None,
            host_image: None,
        });
        job.spec.handler.memory_mib = Some(512);
        job.spec.handler.concurrency = Some(4);
        let pod = pod(&job);
        let limits = pod.containers[0]
            .resources
            .as_ref()
            .unwrap()
            .limits
            .as_ref()
            .unwrap();
        // 4 environments of 512 MiB plus the host's 64; CPU for 4 x 512.
        assert_eq!(limits["memory"], Quantity("2112Mi".into()));
        assert_eq!(limits["cpu"], Quantity("1160m".into()));
        assert_eq!(
            env_value(&pod.containers[0], "SHOAL_MEMORY_MIB"),
            Some("512")
        );
    }

    #[test]
    fn a_function_names_its_command_batch_and_host_image() {
        let pod = pod(&function_job(FunctionSpec {
            command: vec![
                "/usr/bin/python3".into(),
                "-m".into(),
                "awslambdaric".into(),
            ],
            handler: None,
            batch_size: Some(3),
            init_timeout_seconds: None,
            host_image: Some("registry.local/shoal-host@sha256:abc".into()),
        }));
        let worker = &pod.containers[0];
        assert_eq!(
            worker.args.as_deref().unwrap(),
            ["worker", "--", "/usr/bin/python3", "-m", "awslambdaric"]
        );
        assert_eq!(env_value(worker, "_HANDLER"), None);
        assert_eq!(env_value(worker, "SHOAL_BATCH_SIZE"), Some("3"));
        assert_eq!(env_value(worker, "SHOAL_INIT_TIMEOUT"), Some("10"));
        assert_eq!(
            pod.init_containers.as_ref().unwrap()[0].image.as_deref(),
            Some("registry.local/shoal-host@sha256:abc")
        );
    }
}
