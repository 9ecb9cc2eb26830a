//! What a node changes on the machine outside its network namespace and
//! its own folder, recorded before it starts and put back after it stops:
//! kernel settings the kubelet writes, folders the kubelet, containerd and
//! its shims create at fixed paths whatever their configuration says, the
//! `kubepods` cgroup trees, and mounts below the node's folder.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Kernel settings the kubelet sets (`protectKernelDefaults: false`).
const SYSCTLS: [&str; 5] = [
    "vm/overcommit_memory",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
];

/// Fixed paths the node's programs may create.
const PATHS: [&str; 8] = [
    "/var/lib/kubelet",
    "/var/log/containers",
    "/var/log/pods",
    "/run/containerd",
    "/var/lib/containerd",
    "/var/lib/cni",
    "/etc/cni",
    "/opt/cni",
];

/// The cgroup v1 hierarchies (and the v2 mount) the kubelet creates
/// `kubepods` in.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// The machine as it was before the node started. Saved in the node's
/// folder too, so that a node whose test process died is cleaned up by the
/// next one ([`super::clean_stale`]).
#[derive(Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HostState {
    sysctls: Vec<(String, String)>,
    absent_paths: Vec<String>,
    absent_cgroups: Vec<PathBuf>,
}

fn sysctl_path(name: &str) -> PathBuf {
    Path::new("/proc/sys").join(name)
}

impl HostState {
    /// Records the settings, paths and cgroups that the node may change.
    pub fn record() -> Self {
        let sysctls = SYSCTLS
            .iter()
            .filter_map(|name| {
                let value = std::fs::read_to_string(sysctl_path(name)).ok()?;
                Some(((*name).to_owned(), value.trim().to_owned()))
            })
            .collect();
        let absent_paths = PATHS
            .iter()
            .filter(|p| !Path::new(p).exists())
            .map(|p| (*p).to_owned())
            .collect();
        let absent_cgroups = kubepods_cgroups()
            .into_iter()
            .filter(|p| !p.exists())
            .collect();
        Self {
            sysctls,
            absent_paths,
            absent_cgroups,
        }
    }

    /// Puts everything back: run once every process of the node is gone.
    /// Returns what could not be restored (empty when all went well).
    pub fn restore(&self, node_dir: &Path) -> Vec<String> {
        let mut problems = Vec::new();
        // Container processes the kubelet and containerd left (they outlive
        // their shims) are in the kubepods cgroups.
        for cgroup in &self.absent_cgroups {
            kill_cgroup_processes(cgroup);
        }
        problems.extend(unmount_below(node_dir));
        for cgroup in &self.absent_cgroups {
            if let Err(e) = remove_cgroup_tree(cgroup) {
                problems.push(format!("cgroup {}: {e}", cgroup.display()));
            }
        }
        for (name, value) in &self.sysctls {
            let path = sysctl_path(name);
            let now = std::fs::read_to_string(&path).unwrap_or_default();
            if now.trim() != value
                && let Err(e) = std::fs::write(&path, value)
            {
                problems.push(format!("sysctl {name}: cannot write back {value}: {e}"));
            }
        }
        for path in &self.absent_paths {
            let path = Path::new(path.as_str());
            if path.exists() {
                problems.extend(unmount_below(path));
                if let Err(e) = std::fs::remove_dir_all(path) {
                    problems.push(format!("{}: {e}", path.display()));
                }
            }
        }
        problems
    }
}

/// SIGKILLs every process in `root` and the cgroups below it, and waits
/// (up to 10 s) until they are gone.
fn kill_cgroup_processes(root: &Path) {
    let pids = |root: &Path| -> Vec<String> {
        let mut found = Vec::new();
        let mut dirs = vec![root.to_owned()];
        while let Some(dir) = dirs.pop() {
            if let Ok(text) = std::fs::read_to_string(dir.join("cgroup.procs")) {
                found.extend(text.lines().map(str::to_owned));
            }
            if let Ok(entries) = std::fs::read_dir(&dir) {
                dirs.extend(
                    entries
                        .flatten()
                        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                        .map(|e| e.path()),
                );
            }
        }
        found
    };
    let started = std::time::Instant::now();
    loop {
        let left = pids(root);
        if left.is_empty() || started.elapsed() > std::time::Duration::from_secs(10) {
            return;
        }
        for pid in &left {
            let _ = Command::new("kill").args(["-KILL", pid]).output();
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// `<hierarchy>/kubepods` of every mounted cgroup hierarchy.
fn kubepods_cgroups() -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(CGROUP_ROOT) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path().join("kubepods"))
        .collect();
    found.sort();
    found
}

/// Removes a cgroup and every cgroup below it, deepest first (a cgroup
/// directory is removed with rmdir, once it holds no process).
fn remove_cgroup_tree(root: &Path) -> std::io::Result<()> {
    if !root.exists() {
        return Ok(());
    }
    let mut dirs = vec![root.to_owned()];
    let mut i = 0;
    while i < dirs.len() {
        if let Ok(entries) = std::fs::read_dir(&dirs[i]) {
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    dirs.push(entry.path());
                }
            }
        }
        i += 1;
    }
    let mut last = Ok(());
    for dir in dirs.iter().rev() {
        if let Err(e) = std::fs::remove_dir(dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            last = Err(e);
        }
    }
    last
}

/// Unmounts every mount point at or below `dir`, deepest first (lazily
/// when busy). Returns what stayed mounted.
pub fn unmount_below(dir: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    for _ in 0..3 {
        let points = mount_points_below(dir);
        if points.is_empty() {
            return problems;
        }
        for point in points.iter().rev() {
            let ok = Command::new("umount")
                .arg(point)
                .output()
                .is_ok_and(|o| o.status.success());
            if !ok {
                let _ = Command::new("umount").arg("-l").arg(point).output();
            }
        }
    }
    for point in mount_points_below(dir) {
        problems.push(format!("still mounted: {point}"));
    }
    problems
}

/// Mount points at or below `dir`, in mount order, from
/// `/proc/self/mountinfo` (its fifth field, octal escapes decoded).
fn mount_points_below(dir: &Path) -> Vec<String> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let prefix = dir.to_string_lossy().trim_end_matches('/').to_owned();
    text.lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(unescape)
        .filter(|point| point == &prefix || point.starts_with(&format!("{prefix}/")))
        .collect()
}

fn unescape(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut chars = field.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' {
            let code: String = chars.by_ref().take(3).collect();
            match u8::from_str_radix(&code, 8) {
                Ok(byte) => out.push(char::from(byte)),
                Err(_) => {
                    out.push('\\');
                    out.push_str(&code);
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::unescape;

    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(unescape(r"/tmp/a\040b"), "/tmp/a b");
        assert_eq!(unescape("/plain"), "/plain");
    }
}
