//! A real single-node Kubernetes cluster on this machine: etcd,
//! kube-apiserver, kube-controller-manager, kube-scheduler, kubelet and
//! kube-proxy (iptables mode) from the pinned Kubernetes module (one
//! all-in-one binary, `scripts/k8s-tools.sh`), containerd, runc and the
//! CNI plugins from Debian, all inside a network namespace of its own
//! ([`netns`]). Pods get addresses on a bridge in that namespace and reach
//! the node's address, where the test's servers listen; nothing can reach
//! or leave the machine. Images come from archives the repository's own
//! scripts write (`scripts/build-images.sh`): there is no registry.
//!
//! Start a node from inside the namespace ([`netns::Netns::run`]); stop it
//! with [`Node::stop`], which leaves the machine as it was ([`host`]): every
//! process stopped by pid, containers removed, mounts below its folder
//! unmounted, `kubepods` cgroups removed, kernel settings written back.

pub mod bed;
mod certs;
mod config;
pub mod host;
pub mod netns;
pub mod watch;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::kube::{ControlPlane, PlaneOptions, tool_from_env};
use crate::process::Proc;
use crate::{free_port, tool, wait_until};
use host::HostState;
pub use netns::{NODE_IP, Netns};

/// The node's name.
pub const NODE_NAME: &str = "shoal-node";
/// Pod addresses (the bridge's subnet).
pub const POD_CIDR: &str = "10.244.0.0/24";
/// The bridge's own address, the pods' gateway.
pub const POD_GATEWAY: &str = "10.244.0.1";
/// What kube-proxy takes as the cluster's pod range.
pub const CLUSTER_CIDR: &str = "10.244.0.0/16";
/// Service addresses.
pub const SERVICE_CIDR: &str = "10.96.0.0/24";
/// The `kubernetes` Service's address (first of [`SERVICE_CIDR`]).
pub const SERVICE_IP: &str = "10.96.0.1";
/// The API server's port on the node's address.
pub const APISERVER_PORT: u16 = 6443;
/// The sandbox image (built by `scripts/build-images.sh`).
pub const PAUSE_IMAGE: &str = "registry.k8s.io/pause:3.10";

/// Prefix of a node's folder (in the temporary folder).
const DIR_PREFIX: &str = "shoal-node-";
/// File in a node's folder holding the pid of the process that runs it.
const OWNER: &str = "owner";
/// File in a node's folder holding the [`HostState`] to restore.
const HOST_STATE: &str = "host-state.json";

/// Static tokens of the node's components: (name, user, groups).
const COMPONENTS: [(&str, &str, &str); 4] = [
    ("kubelet", "system:node:shoal-node", "system:nodes"),
    ("kube-proxy", "system:kube-proxy", ""),
    ("kube-scheduler", "system:kube-scheduler", ""),
    (
        "kube-controller-manager",
        "system:kube-controller-manager",
        "",
    ),
];

/// A running node; [`Node::stop`] tears it down (dropping it does too).
pub struct Node {
    dir: tempfile::TempDir,
    host: HostState,
    socket: PathBuf,
    plane: Option<ControlPlane>,
    controller_manager: Option<Proc>,
    scheduler: Option<Proc>,
    kube_proxy: Option<Proc>,
    kubelet: Option<Proc>,
    containerd: Option<Proc>,
    stopped: bool,
}

fn write(path: &Path, text: &str) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .unwrap_or_else(|e| panic!("mkdir {}: {e}", parent.display()));
    }
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

fn token(component: &str) -> String {
    format!("shoal-test-{component}-token")
}

impl Node {
    /// Starts the node, imports `images` (OCI archives) into its
    /// containerd, and waits until it is Ready and pods can get service
    /// account tokens. Must run inside the node's namespace.
    pub fn start(images: &[PathBuf]) -> Self {
        for problem in clean_stale() {
            eprintln!("cleaning up an earlier node: {problem}");
        }
        netns::remove_stale();
        let host = HostState::record();
        let dir = tempfile::Builder::new()
            .prefix(DIR_PREFIX)
            .tempdir()
            .unwrap_or_else(|e| panic!("temp dir: {e}"));
        let root = dir.path().to_owned();
        // What a later run needs to clean up after this one if this
        // process dies before its teardown.
        write(&root.join(OWNER), &std::process::id().to_string());
        write(
            &root.join(HOST_STATE),
            &serde_json::to_string(&host).unwrap_or_default(),
        );
        let socket = root.join("containerd.sock");
        let mut node = Self {
            dir,
            host,
            socket,
            plane: None,
            controller_manager: None,
            scheduler: None,
            kube_proxy: None,
            kubelet: None,
            containerd: None,
            stopped: false,
        };
        let tls = certs::make(&root.join("pki"), NODE_IP, SERVICE_IP);

        // The container runtime and the images.
        write(
            &root.join("containerd.toml"),
            &config::containerd(&root, PAUSE_IMAGE),
        );
        write(
            &root.join("cni/net.d/10-shoal.conflist"),
            &config::cni(&root),
        );
        let containerd = Proc::spawn(
            &tool("containerd", "containerd").to_string_lossy(),
            &["--config", &root.join("containerd.toml").to_string_lossy()],
            &[],
            &root.join("containerd.log"),
        );
        wait_until(
            Duration::from_secs(60),
            "containerd's socket",
            || node.socket.exists().then_some(()),
            || containerd.log_text(),
        );
        node.containerd = Some(containerd);
        for image in images {
            node.import(image);
        }

        // The control plane.
        let tokens = COMPONENTS
            .iter()
            .map(|(name, user, groups)| (token(name), (*user).to_owned(), (*groups).to_owned()))
            .collect();
        let plane = ControlPlane::start_with(&PlaneOptions {
            parent: Some(root.clone()),
            address: Some((NODE_IP.to_owned(), APISERVER_PORT)),
            tls: Some(tls.clone()),
            tokens,
            service_cidr: Some(SERVICE_CIDR.to_owned()),
            nodes: true,
        });
        let server = format!("https://{NODE_IP}:{APISERVER_PORT}");
        let kubeconfig = |name: &str| {
            let path = root.join(format!("{name}.kubeconfig"));
            write(&path, &config::kubeconfig(&server, &tls.ca, &token(name)));
            path.to_string_lossy().into_owned()
        };
        let log = |name: &str| root.join(format!("{name}.log"));

        node.controller_manager = Some(Proc::spawn(
            &tool_from_env("SHOAL_KUBE_CONTROLLER_MANAGER"),
            &[
                &format!("--kubeconfig={}", kubeconfig("kube-controller-manager")),
                &format!(
                    "--service-account-private-key-file={}",
                    plane.dir().join("sa.key").display()
                ),
                &format!("--root-ca-file={}", tls.ca.display()),
                "--use-service-account-credentials=true",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                &format!("--secure-port={}", free_port()),
                "--v=1",
            ],
            &[],
            &log("kube-controller-manager"),
        ));
        node.scheduler = Some(Proc::spawn(
            &tool_from_env("SHOAL_KUBE_SCHEDULER"),
            &[
                &format!("--kubeconfig={}", kubeconfig("kube-scheduler")),
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                &format!("--secure-port={}", free_port()),
                "--v=1",
            ],
            &[],
            &log("kube-scheduler"),
        ));

        // The node.
        let ports = config::Ports {
            kubelet_healthz: free_port(),
            proxy_healthz: free_port(),
            proxy_metrics: free_port(),
        };
        write(&root.join("resolv.conf"), "options ndots:1\n");
        write(
            &root.join("kubelet.yaml"),
            &config::kubelet(&root, NODE_IP, &tls.ca, &ports),
        );
        node.kubelet = Some(Proc::spawn(
            &tool_from_env("SHOAL_KUBELET"),
            &[
                &format!("--config={}", root.join("kubelet.yaml").display()),
                &format!("--kubeconfig={}", kubeconfig("kubelet")),
                &format!("--root-dir={}", root.join("kubelet").display()),
                &format!("--cert-dir={}", root.join("kubelet-pki").display()),
                &format!("--hostname-override={NODE_NAME}"),
                &format!("--node-ip={NODE_IP}"),
                "--v=1",
            ],
            &[],
            &log("kubelet"),
        ));
        let proxy_kubeconfig = kubeconfig("kube-proxy");
        write(
            &root.join("kube-proxy.yaml"),
            &config::kube_proxy(Path::new(&proxy_kubeconfig), &ports),
        );
        node.kube_proxy = Some(Proc::spawn(
            &tool_from_env("SHOAL_KUBE_PROXY"),
            &[
                &format!("--config={}", root.join("kube-proxy.yaml").display()),
                "--v=1",
            ],
            &[],
            &log("kube-proxy"),
        ));
        node.plane = Some(plane);
        node.wait_ready();
        node
    }

    fn wait_ready(&self) {
        let plane = self.plane();
        wait_until(
            Duration::from_secs(180),
            "the node Ready",
            || {
                let ready = plane.jsonpath(
                    &["node", NODE_NAME],
                    r#"{.status.conditions[?(@.type=="Ready")].status}"#,
                );
                (ready == "True").then_some(())
            },
            || self.logs(),
        );
        // Pods in `default` need its ServiceAccount and the CA ConfigMap
        // (both made by the controller manager).
        wait_until(
            Duration::from_secs(120),
            "the default ServiceAccount and kube-root-ca.crt",
            || {
                let account = plane.jsonpath(&["serviceaccount", "default"], "{.metadata.name}");
                let ca = plane.jsonpath(&["configmap", "kube-root-ca.crt"], "{.metadata.name}");
                (!account.is_empty() && !ca.is_empty()).then_some(())
            },
            || self.logs(),
        );
    }

    /// The API server (kubectl helpers, kubeconfig of the admin).
    pub fn plane(&self) -> &ControlPlane {
        self.plane
            .as_ref()
            .unwrap_or_else(|| panic!("the node's control plane is stopped"))
    }

    /// The node's folder (logs, configuration).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `ctr` against this node's containerd, in the CRI's namespace.
    fn ctr(&self, args: &[&str]) -> std::process::Output {
        Command::new(tool("ctr", "containerd"))
            .arg("--address")
            .arg(&self.socket)
            .args(["--namespace", "k8s.io"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run ctr: {e}"))
    }

    /// Imports an OCI image archive (its `io.containerd.image.name`
    /// annotation names it).
    pub fn import(&self, archive: &Path) {
        let out = self.ctr(&["images", "import", &archive.to_string_lossy()]);
        assert!(
            out.status.success(),
            "ctr images import {}: {}",
            archive.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Container ids containerd runs for the kubelet.
    /// Ids of containerd's `tasks` (containers with a process, running or
    /// not yet cleaned up) or `containers` in the CRI namespace.
    fn ids(&self, what: &str) -> Vec<String> {
        let out = self.ctr(&[what, "list", "--quiet"]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// The logs of every program of the node, for a failure message.
    pub fn logs(&self) -> String {
        let mut text = String::new();
        for name in [
            "containerd",
            "kubelet",
            "kube-proxy",
            "kube-scheduler",
            "kube-controller-manager",
        ] {
            let log =
                std::fs::read_to_string(self.dir().join(format!("{name}.log"))).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            text.push_str(&format!("--- {name} (last lines)\n"));
            for line in tail.iter().rev() {
                text.push_str(line);
                text.push('\n');
            }
        }
        if let Some(plane) = &self.plane {
            let log = plane.apiserver_log();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            text.push_str("--- kube-apiserver (last lines)\n");
            for line in tail.iter().rev() {
                text.push_str(line);
                text.push('\n');
            }
        }
        text
    }

    /// Stops everything and puts the machine back as it was; returns what
    /// could not be cleaned up (empty when all went well).
    pub fn stop(mut self) -> Vec<String> {
        self.teardown()
    }

    fn teardown(&mut self) -> Vec<String> {
        if self.stopped {
            return Vec::new();
        }
        self.stopped = true;
        let mut problems = Vec::new();
        // No new pods, then let the kubelet remove the ones there are (it
        // also tears their networks down through the CNI).
        self.controller_manager.take();
        self.scheduler.take();
        if let Some(plane) = &self.plane {
            let _ = plane.kubectl_output(&[
                "delete",
                "pods",
                "--all",
                "--all-namespaces",
                "--force",
                "--grace-period=0",
                "--wait=false",
            ]);
            // Stopped, not removed: the kubelet removes dead containers
            // only in its minute-long garbage collection; ctr does below.
            let started = Instant::now();
            while self.containerd.is_some()
                && !self.ids("tasks").is_empty()
                && started.elapsed() < Duration::from_secs(60)
            {
                std::thread::sleep(Duration::from_millis(500));
            }
        }
        self.kubelet.take();
        self.kube_proxy.take();
        // Whatever the kubelet left: kill and remove it through containerd.
        if self.containerd.is_some() {
            for id in self.ids("containers") {
                let _ = self.ctr(&["tasks", "kill", "--signal", "SIGKILL", &id]);
                let _ = self.ctr(&["tasks", "delete", "--force", &id]);
                let _ = self.ctr(&["containers", "delete", &id]);
            }
            let left = self.ids("containers");
            if !left.is_empty() {
                problems.push(format!("containers left in containerd: {left:?}"));
            }
        }
        self.plane.take();
        if let Some(mut containerd) = self.containerd.take() {
            containerd.signal("TERM");
            let started = Instant::now();
            while containerd.running() && started.elapsed() < Duration::from_secs(10) {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        problems.extend(kill_processes_using(self.dir.path(), Leftovers::Shims));
        problems.extend(self.host.restore(self.dir.path()));
        problems
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        for problem in self.teardown() {
            eprintln!("node teardown: {problem}");
        }
    }
}

/// The folder `scripts/build-images.sh` wrote its archives into:
/// `$SHOAL_IMAGES`. Panics with the way out when it is not set.
pub fn images_dir() -> PathBuf {
    std::env::var_os("SHOAL_IMAGES")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            panic!(
                "SHOAL_IMAGES is not set: run through scripts/test-all.sh, which builds the images"
            )
        })
}

/// The archive `scripts/build-images.sh` wrote for image `name` into
/// `$SHOAL_IMAGES`. Panics with the way out when it is missing.
pub fn image_archive(name: &str) -> PathBuf {
    let path = images_dir().join(format!("{name}.tar"));
    assert!(path.is_file(), "{} is missing", path.display());
    path
}

/// The image archives every node imports: the pause image, the operator,
/// the thumbnail worker, the Lambda host and the Python Lambda function.
pub fn image_archives() -> Vec<PathBuf> {
    [
        "pause",
        "shoal-operator",
        "shoal-thumbnail",
        "shoal-host",
        "python-thumbnails",
    ]
    .into_iter()
    .map(image_archive)
    .collect()
}

/// Starts a node with `images` in a network namespace of its own, runs
/// `body` inside it with a two-thread Tokio runtime, then stops the node
/// (printing its logs first when `body` panicked) and deletes the
/// namespace. Returns what the teardown could not undo; a panic of `body`
/// is resumed after the teardown, so the machine is cleaned either way.
pub fn with_node(
    images: Vec<PathBuf>,
    body: impl FnOnce(&Node, &tokio::runtime::Runtime) + Send + 'static,
) -> Vec<String> {
    let netns = Netns::create();
    let problems = netns.run(move || {
        let node = Node::start(&images);
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap_or_else(|e| panic!("cannot start a Tokio runtime: {e}"));
            body(&node, &runtime);
        }));
        if outcome.is_err() {
            eprintln!("node logs at the failure:\n{}", node.logs());
        }
        let problems = node.stop();
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
        problems
    });
    drop(netns);
    problems
}

/// Cleans up after nodes whose process died before their teardown (a
/// killed test run): their programs, containers, mounts and cgroups, the
/// kernel settings they changed, their folder. Returns what could not be
/// cleaned.
pub fn clean_stale() -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return Vec::new();
    };
    let mut problems = Vec::new();
    for entry in entries.flatten() {
        let dir = entry.path();
        let named = entry.file_name().to_string_lossy().starts_with(DIR_PREFIX);
        let Ok(owner) = std::fs::read_to_string(dir.join(OWNER)) else {
            continue;
        };
        if !named || Path::new("/proc").join(owner.trim()).exists() {
            continue;
        }
        problems.extend(kill_processes_using(&dir, Leftovers::All));
        let host: Option<HostState> = std::fs::read_to_string(dir.join(HOST_STATE))
            .ok()
            .and_then(|text| serde_json::from_str(&text).ok());
        match host {
            Some(host) => problems.extend(host.restore(&dir)),
            None => problems.extend(host::unmount_below(&dir)),
        }
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            problems.push(format!("{}: {e}", dir.display()));
        }
    }
    problems
}

/// Which processes naming a node's folder [`kill_processes_using`] kills.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Leftovers {
    /// containerd's shims only (a node's own programs are stopped by pid).
    Shims,
    /// Every one (a node whose test process died: nothing else stops them).
    All,
}

/// SIGKILLs the processes whose command line names `dir` (`which` of
/// them) and waits up to 5 s for them to go: returns those still alive.
fn kill_processes_using(dir: &Path, which: Leftovers) -> Vec<String> {
    let needle = dir.to_string_lossy().into_owned();
    let me = std::process::id().to_string();
    let find = || -> Vec<String> {
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| {
                let pid = e.file_name().to_string_lossy().into_owned();
                if pid == me || !pid.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
                let program = cmdline.split(|b| *b == 0).next().unwrap_or_default();
                let shim = Path::new(&*String::from_utf8_lossy(program))
                    .file_name()
                    .is_some_and(|name| name.to_string_lossy().starts_with("containerd-shim"));
                let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
                (cmdline.contains(&needle) && (shim || which == Leftovers::All))
                    .then(|| format!("{pid} {cmdline}"))
            })
            .collect()
    };
    for process in find() {
        if let Some(pid) = process.split(' ').next() {
            let _ = Command::new("kill").args(["-KILL", pid]).output();
        }
    }
    let started = Instant::now();
    loop {
        let left = find();
        if left.is_empty() || started.elapsed() > Duration::from_secs(5) {
            return left
                .into_iter()
                .map(|p| format!("process still running: {p}"))
                .collect();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
