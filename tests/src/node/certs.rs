//! The node's certificates, made with the openssl command: a CA, the API
//! server's serving certificate (valid for the node's address, the
//! `kubernetes` Service IP and names, so pods verify it with the CA that
//! `kube-root-ca.crt` carries), and the client certificate the API server
//! shows kubelets (`kubectl logs`).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::kube::Tls;

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run openssl: {e}"));
    assert!(
        out.status.success(),
        "openssl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Signs `name.crt` for `subject` with the CA in `dir`, with `extensions`
/// (an openssl extension section, or empty).
fn issue(dir: &Path, name: &str, subject: &str, extensions: &str) -> (PathBuf, PathBuf) {
    let key = format!("{name}.key");
    let csr = format!("{name}.csr");
    let crt = format!("{name}.crt");
    openssl(dir, &["genrsa", "-out", &key, "2048"]);
    openssl(
        dir,
        &["req", "-new", "-key", &key, "-subj", subject, "-out", &csr],
    );
    let ext = format!("{name}.ext");
    std::fs::write(dir.join(&ext), extensions).unwrap_or_else(|e| panic!("write {ext}: {e}"));
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "7",
            "-sha256",
            "-extfile",
            &ext,
            "-out",
            &crt,
        ],
    );
    (dir.join(crt), dir.join(key))
}

/// Makes the CA and certificates in `dir`, for an API server at `node_ip`
/// whose `kubernetes` Service has `service_ip`.
pub fn make(dir: &Path, node_ip: &str, service_ip: &str) -> Tls {
    std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
    openssl(dir, &["genrsa", "-out", "ca.key", "2048"]);
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            "ca.key",
            "-subj",
            "/CN=shoal-test-node-ca",
            "-days",
            "7",
            "-sha256",
            "-out",
            "ca.crt",
        ],
    );
    let serving = issue(
        dir,
        "apiserver",
        "/CN=kube-apiserver",
        &format!(
            "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n\
             extendedKeyUsage=serverAuth\nsubjectAltName=IP:{node_ip},IP:{service_ip},IP:127.0.0.1,\
             DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,\
             DNS:kubernetes.default.svc.cluster.local,DNS:localhost\n"
        ),
    );
    let kubelet_client = issue(
        dir,
        "apiserver-kubelet-client",
        "/O=system:masters/CN=kube-apiserver-kubelet-client",
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n",
    );
    Tls {
        ca: dir.join("ca.crt"),
        serving,
        kubelet_client,
    }
}
