//! A handler binary running as a separate process, its output in a file.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A child process whose stdout and stderr go to a log file; killed on drop.
pub struct Proc {
    child: Child,
    log: PathBuf,
}

impl Proc {
    /// Starts `bin args` with `env` added (without the caller's own
    /// `RUST_LOG` and `AWS_PROFILE`), logging to `log`.
    pub fn spawn(bin: &str, args: &[&str], env: &[(&str, String)], log: &Path) -> Self {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", log.display()));
        let err = file
            .try_clone()
            .unwrap_or_else(|e| panic!("cannot share {}: {e}", log.display()));
        // The caller's `env` comes last: a `RUST_LOG` it names is kept.
        let child = Command::new(bin)
            .args(args)
            .env_remove("AWS_PROFILE")
            .env_remove("RUST_LOG")
            .env("SHOAL_LOG_FORMAT", "json")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::from(file))
            .stderr(Stdio::from(err))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
        Self {
            child,
            log: log.to_owned(),
        }
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Peak resident memory (VmHWM) since the start or the last
    /// [`Proc::reset_peak_memory`], in KiB.
    pub fn peak_memory_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.id()))
            .unwrap_or_else(|e| panic!("cannot read the status of {}: {e}", self.id()));
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no VmHWM in the status of {}", self.id()))
    }

    /// Starts measuring the peak resident memory anew (clear_refs 5).
    pub fn reset_peak_memory(&self) {
        std::fs::write(format!("/proc/{}/clear_refs", self.id()), "5")
            .unwrap_or_else(|e| panic!("cannot reset the peak memory of {}: {e}", self.id()));
    }

    /// Sends a signal by name (`TERM`, `KILL`) with kill(1).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.id().to_string())
            .status()
            .unwrap_or_else(|e| panic!("cannot run kill: {e}"));
        assert!(status.success(), "kill -{name} {} failed", self.id());
    }

    /// Waits for the exit, or panics after `limit`.
    pub fn wait(&mut self, limit: Duration) -> ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self
                .child
                .try_wait()
                .unwrap_or_else(|e| panic!("cannot wait: {e}"))
            {
                return status;
            }
            assert!(
                started.elapsed() < limit,
                "process {} still running after {limit:?}; log:\n{}",
                self.id(),
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether the process has not exited yet.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// kill -9 and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Everything written so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}
