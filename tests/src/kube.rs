//! A real Kubernetes control plane for tests: etcd and kube-apiserver
//! (built from their Go modules by `scripts/k8s-tools.sh`) on free loopback
//! ports, with data in a temp dir; stopped when the handle drops. By itself
//! there is no kubelet, scheduler or controller-manager: objects are stored
//! and validated, pods never run. [`crate::node`] starts one with
//! [`PlaneOptions`] for a real node, which adds them.
//!
//! The test gets a kubeconfig (admin token, `system:masters`) of its own:
//! nothing here reads or touches the kubeconfig of the machine.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::free_port;
use crate::process::Proc;

/// The admin's bearer token (test-only).
const ADMIN_TOKEN: &str = "shoal-test-admin-token";

/// The path in environment variable `var` (set by scripts/k8s-tools.sh),
/// or a panic saying how to get it.
pub fn tool_from_env(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!("{var} is not set: run the tests through scripts/test-all.sh, which builds the Kubernetes test bed; a test binary that needs it must be in the script's k8s_tests")
    })
}

fn wait_for_port(port: u16, what: &str, log: &Proc) {
    crate::wait_for_port(port, what, Duration::from_secs(60), || log.log_text());
}

/// How the API server of a [`ControlPlane`] differs from the default
/// (loopback, self-signed, no node).
#[derive(Debug, Clone, Default)]
pub struct PlaneOptions {
    /// Folder to make the control plane's own folder in (default: the
    /// temporary folder).
    pub parent: Option<PathBuf>,
    /// Address bound and advertised, and the port; default 127.0.0.1 and
    /// a free port.
    pub address: Option<(String, u16)>,
    /// Serving certificate and key, and the CA that signed them (also the
    /// CA of client certificates); default: self-signed.
    pub tls: Option<Tls>,
    /// More static bearer tokens: `(token, user, comma-separated groups)`.
    pub tokens: Vec<(String, String, String)>,
    /// Service IP range; default 10.0.0.0/24.
    pub service_cidr: Option<String>,
    /// A cluster with nodes: the ServiceAccount admission plugin (pods get
    /// tokens) and the Node authorizer on.
    pub nodes: bool,
}

/// Certificates of an API server that kubelets and pods trust.
#[derive(Debug, Clone)]
pub struct Tls {
    /// The CA certificate.
    pub ca: PathBuf,
    /// The serving certificate and key.
    pub serving: (PathBuf, PathBuf),
    /// The client certificate and key the API server shows kubelets.
    pub kubelet_client: (PathBuf, PathBuf),
}

/// A running etcd + kube-apiserver pair.
pub struct ControlPlane {
    // Dropped in field order: the API server before etcd.
    apiserver: Proc,
    etcd: Proc,
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
    url: String,
    /// How each was started, for [`ControlPlane::restart_after`].
    etcd_args: Vec<String>,
    apiserver_args: Vec<String>,
    address: String,
    ports: (u16, u16),
}

impl ControlPlane {
    /// Starts etcd and the API server and waits until `/readyz` answers.
    pub fn start() -> Self {
        Self::start_with(&PlaneOptions::default())
    }

    /// [`ControlPlane::start`] with `options`.
    pub fn start_with(options: &PlaneOptions) -> Self {
        let etcd_bin = tool_from_env("SHOAL_ETCD");
        let apiserver_bin = tool_from_env("SHOAL_KUBE_APISERVER");
        let dir = match &options.parent {
            Some(parent) => tempfile::tempdir_in(parent),
            None => tempfile::tempdir(),
        }
        .unwrap_or_else(|e| panic!("temp dir: {e}"));
        let root = dir.path();

        let client = free_port();
        let peer = free_port();
        let client_url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let etcd_args: Vec<String> = vec![
            "--data-dir".into(),
            root.join("etcd").to_string_lossy().into_owned(),
            "--listen-client-urls".into(),
            client_url.clone(),
            "--advertise-client-urls".into(),
            client_url.clone(),
            "--listen-peer-urls".into(),
            peer_url.clone(),
            "--initial-advertise-peer-urls".into(),
            peer_url.clone(),
            "--initial-cluster".into(),
            format!("default={peer_url}"),
            "--unsafe-no-fsync".into(),
            "--log-level".into(),
            "warn".into(),
        ];
        let etcd = Proc::spawn(
            &etcd_bin,
            &etcd_args.iter().map(String::as_str).collect::<Vec<_>>(),
            &[],
            &root.join("etcd.log"),
        );
        wait_for_port(client, "etcd", &etcd);

        // Service account signing keys and the admin token.
        let key = root.join("sa.key");
        let public = root.join("sa.pub");
        run_ok(
            Command::new("openssl")
                .args(["genrsa", "-out"])
                .arg(&key)
                .arg("2048"),
        );
        run_ok(
            Command::new("openssl")
                .args(["rsa", "-pubout", "-in"])
                .arg(&key)
                .arg("-out")
                .arg(&public),
        );
        let tokens = root.join("tokens.csv");
        let mut token_lines = format!("{ADMIN_TOKEN},shoal-admin,1,\"system:masters\"\n");
        for (n, (token, user, groups)) in options.tokens.iter().enumerate() {
            token_lines.push_str(&format!("{token},{user},{},\"{groups}\"\n", n + 2));
        }
        write(&tokens, &token_lines);

        let (address, port) = options
            .address
            .clone()
            .unwrap_or_else(|| ("127.0.0.1".to_owned(), free_port()));
        let mut args = vec![
            format!("--etcd-servers={client_url}"),
            format!("--secure-port={port}"),
            format!("--bind-address={address}"),
            format!("--advertise-address={address}"),
            format!(
                "--service-cluster-ip-range={}",
                options.service_cidr.as_deref().unwrap_or("10.0.0.0/24")
            ),
            "--service-account-issuer=https://kubernetes.default.svc".to_owned(),
            format!("--service-account-key-file={}", public.display()),
            format!("--service-account-signing-key-file={}", key.display()),
            format!("--token-auth-file={}", tokens.display()),
            "--allow-privileged=true".to_owned(),
            "--enable-priority-and-fairness=false".to_owned(),
            "--v=1".to_owned(),
        ];
        match &options.tls {
            Some(tls) => args.extend([
                format!("--tls-cert-file={}", tls.serving.0.display()),
                format!("--tls-private-key-file={}", tls.serving.1.display()),
                format!("--client-ca-file={}", tls.ca.display()),
                format!(
                    "--kubelet-client-certificate={}",
                    tls.kubelet_client.0.display()
                ),
                format!("--kubelet-client-key={}", tls.kubelet_client.1.display()),
                "--kubelet-preferred-address-types=InternalIP".to_owned(),
            ]),
            None => args.push(format!("--cert-dir={}", root.join("certs").display())),
        }
        if options.nodes {
            args.extend([
                "--authorization-mode=Node,RBAC".to_owned(),
                "--enable-admission-plugins=NodeRestriction".to_owned(),
            ]);
        } else {
            args.extend([
                "--authorization-mode=RBAC".to_owned(),
                "--disable-admission-plugins=ServiceAccount".to_owned(),
            ]);
        }
        let apiserver_args = args;
        let args: Vec<&str> = apiserver_args.iter().map(String::as_str).collect();
        let apiserver = Proc::spawn(&apiserver_bin, &args, &[], &root.join("kube-apiserver.log"));
        crate::wait_for_addr(
            &format!("{address}:{port}"),
            "kube-apiserver",
            Duration::from_secs(60),
            || apiserver.log_text(),
        );
        let url = format!("https://{address}:{port}");
        let kubeconfig = root.join("kubeconfig");
        write(
            &kubeconfig,
            &format!(
                "apiVersion: v1
kind: Config
clusters:
- name: test
  cluster:
    server: {url}
    insecure-skip-tls-verify: true
users:
- name: admin
  user:
    token: {ADMIN_TOKEN}
contexts:
- name: test
  context:
    cluster: test
    user: admin
    namespace: default
current-context: test
"
            ),
        );
        let plane = Self {
            apiserver,
            etcd,
            dir,
            kubeconfig,
            url,
            etcd_args,
            apiserver_args,
            address,
            ports: (client, port),
        };
        plane.wait_ready();
        plane
    }

    /// Kills the API server and etcd (SIGKILL, as a crash would), runs
    /// `while_down`, and starts both again on the same ports with etcd's
    /// data kept; returns once `/readyz` answers.
    pub fn restart_after(&mut self, while_down: impl FnOnce()) {
        self.apiserver.kill();
        self.etcd.kill();
        while_down();
        let root = self.dir.path();
        let etcd_args: Vec<&str> = self.etcd_args.iter().map(String::as_str).collect();
        self.etcd = Proc::spawn(
            &tool_from_env("SHOAL_ETCD"),
            &etcd_args,
            &[],
            &root.join("etcd.log"),
        );
        wait_for_port(self.ports.0, "etcd", &self.etcd);
        let args: Vec<&str> = self.apiserver_args.iter().map(String::as_str).collect();
        self.apiserver = Proc::spawn(
            &tool_from_env("SHOAL_KUBE_APISERVER"),
            &args,
            &[],
            &root.join("kube-apiserver.log"),
        );
        crate::wait_for_addr(
            &format!("{}:{}", self.address, self.ports.1),
            "kube-apiserver",
            Duration::from_secs(60),
            || self.apiserver.log_text(),
        );
        self.wait_ready();
    }

    fn wait_ready(&self) {
        let plane = self;
        let started = Instant::now();
        loop {
            let out = plane.kubectl_output(&["get", "--raw", "/readyz"]);
            if out.status.success() {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(90),
                "kube-apiserver not ready: {}\nlog:\n{}",
                String::from_utf8_lossy(&out.stderr),
                plane.apiserver.log_text()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The kubeconfig file of the admin user.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// A kubeconfig that acts as `user` (impersonation by the admin, as
    /// `kubectl --as` does), e.g. `system:serviceaccount:ns:name`, whose
    /// requests the API server authorizes with that account's RBAC.
    pub fn kubeconfig_as(&self, user: &str) -> PathBuf {
        let text = std::fs::read_to_string(&self.kubeconfig)
            .unwrap_or_else(|e| panic!("read {}: {e}", self.kubeconfig.display()));
        let text = text.replace(
            &format!("    token: {ADMIN_TOKEN}\n"),
            &format!("    token: {ADMIN_TOKEN}\n    as: {user}\n"),
        );
        let path = self
            .dir()
            .join(format!("kubeconfig-{}", user.replace(':', "-")));
        write(&path, &text);
        path
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A scratch folder that lives as long as the control plane.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Runs kubectl against this control plane; returns its output whatever
    /// the exit status.
    pub fn kubectl_output(&self, args: &[&str]) -> Output {
        self.kubectl_with_input(args, None)
    }

    /// kubectl with `input` on its standard input.
    pub fn kubectl_with_input(&self, args: &[&str], input: Option<&str>) -> Output {
        use std::io::Write;
        let kubectl = tool_from_env("SHOAL_KUBECTL");
        let mut child = Command::new(&kubectl)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {kubectl}: {e}"));
        if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
            stdin
                .write_all(text.as_bytes())
                .unwrap_or_else(|e| panic!("kubectl stdin: {e}"));
        }
        child
            .wait_with_output()
            .unwrap_or_else(|e| panic!("kubectl {args:?}: {e}"))
    }

    /// kubectl in the background (`kubectl wait`, say); its output goes to
    /// `<log>.log` in the plane's folder.
    pub fn kubectl_spawn(&self, args: &[&str], log: &str) -> crate::process::Proc {
        let kubectl = tool_from_env("SHOAL_KUBECTL");
        let kubeconfig = self.kubeconfig.to_string_lossy();
        let mut all = vec!["--kubeconfig", kubeconfig.as_ref()];
        all.extend_from_slice(args);
        crate::process::Proc::spawn(
            &kubectl,
            &all,
            &[],
            &self.dir.path().join(format!("{log}.log")),
        )
    }

    /// `kubectl apply` of `yaml`; panics with kubectl's message unless it
    /// is accepted.
    pub fn apply_yaml(&self, yaml: &str) {
        let out = self.kubectl_with_input(&["apply", "-f", "-"], Some(yaml));
        assert!(
            out.status.success(),
            "kubectl apply refused:\n{yaml}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `kubectl apply` of `yaml`, which must be refused; returns the
    /// refusal (kubectl's standard error). Panics if it was accepted.
    pub fn refusal(&self, yaml: &str) -> String {
        let out = self.kubectl_with_input(&["apply", "-f", "-"], Some(yaml));
        assert!(
            !out.status.success(),
            "accepted, but should have been refused:\n{yaml}\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// Runs kubectl and panics unless it succeeds; returns its stdout.
    pub fn kubectl(&self, args: &[&str]) -> String {
        let out = self.kubectl_output(args);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Applies the BatchJob CRD from `crds/` and waits until it is served.
    pub fn install_crds(&self) {
        let crd = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../crds/batchjob.yaml");
        self.kubectl(&["apply", "--server-side", "-f", &crd.to_string_lossy()]);
        self.wait_established("batchjobs.shoal.dev");
    }

    /// Waits (60 s at most) until CustomResourceDefinition `name` is
    /// Established. Polled rather than `kubectl wait`, which fails at once
    /// instead of waiting when it reads the CRD before the API server has
    /// given it any condition (seen on a loaded machine).
    pub fn wait_established(&self, name: &str) {
        crate::wait_until(
            Duration::from_secs(60),
            &format!("CRD {name} Established"),
            || {
                (self.jsonpath(
                    &["crd", name],
                    r#"{.status.conditions[?(@.type=="Established")].status}"#,
                ) == "True")
                    .then_some(())
            },
            || self.jsonpath(&["crd", name], "{.status}"),
        );
    }

    /// `kubectl get` with a JSONPath template; empty when the object does
    /// not exist (yet).
    pub fn jsonpath(&self, resource: &[&str], template: &str) -> String {
        let mut args = vec!["get"];
        args.extend_from_slice(resource);
        let output = format!("jsonpath={template}");
        args.extend(["-o", output.as_str(), "--ignore-not-found"]);
        let out = self.kubectl_output(&args);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// What the API server logged so far.
    pub fn apiserver_log(&self) -> String {
        self.apiserver.log_text()
    }
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

fn run_ok(command: &mut Command) {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(
        out.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
