//! Fake nodes beside a [`ControlPlane`]: kube-controller-manager (the
//! Deployment, ReplicaSet, garbage-collector and node-lifecycle
//! controllers: the last lifts the `not-ready` taint a new Node is
//! given),
//! kube-scheduler and kwok, so Deployments become ReplicaSets and Pods
//! that are scheduled onto nodes and turn Running and Ready, with no
//! container runtime and no container started.
//!
//! What it is for: the operator at scale (thousands of Deployments, tens
//! of thousands of pods, the watch traffic they make), on a real API
//! server and etcd. What it does not show: anything a worker does. Pods
//! never run a process; they are Ready as soon as kwok's `pod-ready` stage
//! plays.
//!
//! Addresses: kwok gives each node `127.0.0.1` and each pod an address
//! from its node's `podCIDR`, a loopback `/20` in 127.64.0.0/10 (4,094
//! pods a node before kwok's pool runs past it, still on loopback).
//! Anything that dials a pod (the operator's scale-in probe, on the
//! workers' metrics port 9090) reaches loopback and gets a refusal, unless
//! something on this machine listens on that port on every address; never
//! another host.
//!
//! Dropping it stops kwok, the scheduler and the controller manager
//! (by pid); the nodes are objects of the plane and go with it.

use std::fmt::Write as _;
use std::time::Duration;

use crate::free_port;
use crate::kube::{ControlPlane, tool_from_env};
use crate::process::Proc;

/// The annotation kwok selects the nodes it plays by.
pub const NODE_ANNOTATION: &str = "kwok.x-k8s.io/node";

/// Most fake nodes (each has a `/20` of 127.64.0.0/10).
pub const MAX_NODES: usize = 1024;

/// Node `n`'s pod addresses: the `n`th `/20` of 127.64.0.0/10.
fn pod_cidr(n: usize) -> String {
    format!("127.{}.{}.0/20", 64 + n / 16, (n % 16) * 16)
}

/// kube-controller-manager, kube-scheduler and kwok, and `nodes` Nodes.
pub struct FakeNodes {
    // Dropped in field order: kwok first, so nothing plays pods whose
    // controllers are gone.
    kwok: Proc,
    scheduler: Proc,
    controller_manager: Proc,
    nodes: usize,
}

impl FakeNodes {
    /// Starts the three beside `plane`, creates `nodes` fake Nodes
    /// (`fake-0`, ...), and waits until every one is Ready.
    ///
    /// # Panics
    /// When a tool is missing (`SHOAL_KUBE_CONTROLLER_MANAGER`,
    /// `SHOAL_KUBE_SCHEDULER`, `SHOAL_KWOK`, `SHOAL_KWOK_STAGES`: source
    /// `scripts/k8s-tools.sh`), `nodes` is 0 or above [`MAX_NODES`], or the
    /// nodes are not Ready within two minutes.
    pub fn start(plane: &ControlPlane, nodes: usize) -> Self {
        assert!(
            (1..=MAX_NODES).contains(&nodes),
            "fake nodes: 1 to {MAX_NODES}, not {nodes}"
        );
        let kubeconfig = plane.kubeconfig().to_string_lossy().into_owned();
        let dir = plane.dir();
        // The clients' rate limits are raised: at 10,000 Deployments the
        // defaults (20 and 50 requests/s) would measure the controllers'
        // queues, not the operator.
        let controller_manager = Proc::spawn(
            &tool_from_env("SHOAL_KUBE_CONTROLLER_MANAGER"),
            &[
                &format!("--kubeconfig={kubeconfig}"),
                "--controllers=deployment-controller,replicaset-controller,garbage-collector-controller,node-lifecycle-controller",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                &format!("--secure-port={}", free_port()),
                "--kube-api-qps=1000",
                "--kube-api-burst=2000",
                "--v=1",
            ],
            &[],
            &dir.join("kube-controller-manager.log"),
        );
        let scheduler_config = dir.join("kube-scheduler.yaml");
        std::fs::write(
            &scheduler_config,
            format!(
                "apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
clientConnection:
  kubeconfig: {kubeconfig}
  qps: 1000
  burst: 2000
leaderElection:
  leaderElect: false
"
            ),
        )
        .unwrap_or_else(|e| panic!("write {}: {e}", scheduler_config.display()));
        let scheduler = Proc::spawn(
            &tool_from_env("SHOAL_KUBE_SCHEDULER"),
            &[
                &format!("--config={}", scheduler_config.display()),
                "--bind-address=127.0.0.1",
                &format!("--secure-port={}", free_port()),
                "--v=1",
            ],
            &[],
            &dir.join("kube-scheduler.log"),
        );
        let kwok = Proc::spawn(
            &tool_from_env("SHOAL_KWOK"),
            &[
                &format!("--kubeconfig={kubeconfig}"),
                &format!("--config={}", tool_from_env("SHOAL_KWOK_STAGES")),
                "--manage-all-nodes=false",
                &format!("--manage-nodes-with-annotation-selector={NODE_ANNOTATION}=fake"),
                "--node-ip=127.0.0.1",
                // Unused: every node has a podCIDR.
                "--cidr=127.128.0.0/16",
                "--node-lease-duration-seconds=40",
                &format!("--server-address=127.0.0.1:{}", free_port()),
            ],
            &[],
            &dir.join("kwok.log"),
        );
        let fake = Self {
            kwok,
            scheduler,
            controller_manager,
            nodes,
        };
        let mut yaml = String::new();
        for n in 0..nodes {
            let cidr = pod_cidr(n);
            let _ = write!(
                yaml,
                "---
apiVersion: v1
kind: Node
metadata:
  name: fake-{n}
  annotations:
    {NODE_ANNOTATION}: fake
  labels:
    type: kwok
spec:
  podCIDR: {cidr}
  podCIDRs: [{cidr}]
"
            );
        }
        plane.apply_yaml(&yaml);
        crate::wait_until(
            Duration::from_secs(120),
            &format!("{nodes} fake nodes Ready"),
            || {
                let ready = plane.jsonpath(
                    &["nodes", "-l", "type=kwok"],
                    "{range .items[*]}{.status.conditions[?(@.type==\"Ready\")].status}{\"\\n\"}{end}",
                );
                (ready.lines().filter(|l| *l == "True").count() == nodes).then_some(())
            },
            || fake.logs(),
        );
        fake
    }

    /// How many nodes there are.
    pub fn nodes(&self) -> usize {
        self.nodes
    }

    /// The last lines of the three logs, for a failure message.
    pub fn logs(&self) -> String {
        let tail = |name: &str, text: String| {
            let lines: Vec<&str> = text.lines().collect();
            let from = lines.len().saturating_sub(30);
            format!("--- {name}\n{}\n", lines[from..].join("\n"))
        };
        tail(
            "kube-controller-manager",
            self.controller_manager.log_text(),
        ) + &tail("kube-scheduler", self.scheduler.log_text())
            + &tail("kwok", self.kwok.log_text())
    }
}
