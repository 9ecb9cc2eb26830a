//! The configuration files of the node's programs, as text. Each setting
//! that differs from the program's default says why (most come from
//! `shared/real-node.md`: what works on these machines).

use std::path::Path;

use super::{CLUSTER_CIDR, NODE_NAME, POD_CIDR, POD_GATEWAY};

/// containerd 1.6 (Debian's): every path below `dir`, the CRI plugin with
/// our pause image, runc with cgroupfs, the bridge CNI from Debian's
/// plugins.
pub fn containerd(dir: &Path, sandbox_image: &str) -> String {
    let d = dir.display();
    format!(
        r#"version = 2
root = "{d}/containerd/root"
state = "{d}/containerd/state"
# Only what a CRI node needs.
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
]

[grpc]
  address = "{d}/containerd.sock"

[ttrpc]
  address = "{d}/containerd.sock.ttrpc"

[debug]
  level = "warn"

[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/containerd/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{sandbox_image}"
  # The sandbox cannot lower oom_score_adj (no CAP_SYS_RESOURCE): without
  # this every pod sandbox fails to start.
  restrict_oom_score_adj = true
  # Pod network namespaces below the state folder, not /var/run/netns.
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        # PID 1 is not systemd.
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{d}/cni/net.d"
    max_conf_num = 1
"#
    )
}

/// The pod network: one bridge with the node as gateway, addresses from
/// host-local (its state below `dir`), masquerade out of the pod range.
pub fn cni(dir: &Path) -> String {
    let ipam = dir.join("cni/ipam");
    serde_json::json!({
        "cniVersion": "0.4.0",
        "name": "shoal",
        "plugins": [
            {
                "type": "bridge",
                "bridge": "cni0",
                "isGateway": true,
                "ipMasq": true,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": POD_CIDR, "gateway": POD_GATEWAY}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": ipam,
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": true}},
        ],
    })
    .to_string()
}

/// A kubeconfig for `token` against `server`, trusting `ca`.
pub fn kubeconfig(server: &str, ca: &Path, token: &str) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: node
  cluster:
    server: {server}
    certificate-authority: {}
users:
- name: user
  user:
    token: {token}
contexts:
- name: node
  context:
    cluster: node
    user: user
current-context: node
",
        ca.display()
    )
}

/// Ports the kubelet and kube-proxy serve on loopback (health, metrics).
pub struct Ports {
    /// kubelet `/healthz`.
    pub kubelet_healthz: u16,
    /// kube-proxy `/healthz`.
    pub proxy_healthz: u16,
    /// kube-proxy `/metrics`.
    pub proxy_metrics: u16,
}

/// The kubelet's configuration file.
pub fn kubelet(dir: &Path, node_ip: &str, ca: &Path, ports: &Ports) -> String {
    let d = dir.display();
    format!(
        "apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# PID 1 is not systemd; this machine has cgroup v1, which 1.34 accepts.
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: unix://{d}/containerd.sock
imageServiceEndpoint: unix://{d}/containerd.sock
# No registry: images are imported, and the pause image is never pulled
# again. containerd 1.6 does not pin it, so image GC stays off.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
# Keep out of the iptables of the namespace: kube-proxy owns them.
makeIPTablesUtilChains: false
# Negative OOM scores cannot be set here (no CAP_SYS_RESOURCE).
oomScoreAdj: 0
address: {node_ip}
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: {}
podLogsDir: {d}/pod-logs
volumePluginDir: {d}/volume-plugins
resolvConf: {d}/resolv.conf
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: false
  x509:
    clientCAFile: {}
authorization:
  mode: AlwaysAllow
# A busy CI disk must not evict the test's pods.
evictionHard:
  memory.available: 50Mi
  nodefs.available: 1%
  nodefs.inodesFree: 1%
  imagefs.available: 1%
serializeImagePulls: false
protectKernelDefaults: false
",
        ports.kubelet_healthz,
        ca.display()
    )
}

/// kube-proxy's configuration file (iptables mode, no conntrack tuning:
/// those settings are machine-wide).
pub fn kube_proxy(kubeconfig: &Path, ports: &Ports) -> String {
    format!(
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: {}
mode: iptables
clusterCIDR: {CLUSTER_CIDR}
hostnameOverride: {NODE_NAME}
healthzBindAddress: 127.0.0.1:{}
metricsBindAddress: 127.0.0.1:{}
oomScoreAdj: 0
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
iptables:
  minSyncPeriod: 0s
  syncPeriod: 30s
",
        kubeconfig.display(),
        ports.proxy_healthz,
        ports.proxy_metrics
    )
}
