//! The network namespace the whole node lives in. Created with iproute2,
//! given a veth pair whose inner end carries the node's address and default
//! route (kubelet finds its address from the default route; no packet can
//! leave: the other end is in the namespace too, without an address), and
//! deleted on drop, which takes every interface, bridge, route and iptables
//! rule made inside it along.
//!
//! Code runs inside it through [`Netns::run`]: a thread that joins the
//! namespace (`setns`) before it starts a Tokio runtime, so its worker
//! threads and every process they spawn are inside too.

use std::fs::File;
use std::path::PathBuf;
use std::process::Command;

use nix::sched::{CloneFlags, setns};

/// Prefix of the namespaces this module creates (`<prefix><pid>`).
pub const PREFIX: &str = "shoal-node-";

/// The node's address, on the inner veth end.
pub const NODE_IP: &str = "10.200.0.2";

/// A network namespace, deleted when dropped.
pub struct Netns {
    name: String,
    /// `/run/netns` did not exist before: removed with the namespace.
    made_run_dir: bool,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run ip (iproute2): {e}"));
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Netns {
    /// Creates `shoal-node-<pid>` (after deleting namespaces of earlier
    /// runs whose process is gone) with loopback up and the node's veth.
    pub fn create() -> Self {
        remove_stale();
        let name = format!("{PREFIX}{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "delete", &name]).output();
        let made_run_dir = !PathBuf::from("/run/netns").exists();
        ip(&["netns", "add", &name]);
        let netns = Self { name, made_run_dir };
        let n = netns.name.as_str();
        ip(&["-n", n, "link", "set", "lo", "up"]);
        ip(&[
            "-n", n, "link", "add", "node0", "type", "veth", "peer", "name", "node1",
        ]);
        ip(&[
            "-n",
            n,
            "addr",
            "add",
            &format!("{NODE_IP}/24"),
            "dev",
            "node0",
        ]);
        ip(&["-n", n, "link", "set", "node0", "up"]);
        ip(&["-n", n, "link", "set", "node1", "up"]);
        ip(&[
            "-n",
            n,
            "route",
            "add",
            "default",
            "via",
            "10.200.0.1",
            "dev",
            "node0",
        ]);
        netns
    }

    /// Its name (`ip netns` lists it).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/run/netns/<name>`, what `nsenter --net=` takes.
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// Runs `body` on a new thread inside the namespace and returns its
    /// result; a panic in `body` is resumed here.
    pub fn run<T: Send + 'static>(&self, body: impl FnOnce() -> T + Send + 'static) -> T {
        let path = self.path();
        let thread = std::thread::Builder::new()
            .name(format!("in-{}", self.name))
            .spawn(move || {
                let file =
                    File::open(&path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
                setns(&file, CloneFlags::CLONE_NEWNET)
                    .unwrap_or_else(|e| panic!("setns {}: {e}", path.display()));
                body()
            })
            .unwrap_or_else(|e| panic!("cannot start a thread: {e}"));
        match thread.join() {
            Ok(value) => value,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .output();
        // `ip netns add` bind-mounts /run/netns on itself; put it back as
        // it was, unless another namespace appeared there since.
        let empty = std::fs::read_dir("/run/netns").is_ok_and(|mut d| d.next().is_none());
        if self.made_run_dir && empty {
            let _ = Command::new("umount").arg("/run/netns").output();
            let _ = std::fs::remove_dir("/run/netns");
        }
    }
}

/// Deletes `shoal-node-<pid>` namespaces whose process no longer runs (a
/// test killed before its teardown).
pub fn remove_stale() {
    let Ok(entries) = std::fs::read_dir("/run/netns") else {
        return;
    };
    let mut removed = false;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix(PREFIX) else {
            continue;
        };
        if !PathBuf::from("/proc").join(pid).exists() {
            let _ = Command::new("ip").args(["netns", "delete", &name]).output();
            removed = true;
        }
    }
    // As in `drop`: the folder `ip netns add` made, now empty.
    let empty = std::fs::read_dir("/run/netns").is_ok_and(|mut d| d.next().is_none());
    if removed && empty {
        let _ = Command::new("umount").arg("/run/netns").output();
        let _ = std::fs::remove_dir("/run/netns");
    }
}
