//! cargo-lambda's Runtime API emulator, as a Rust Lambda user runs it
//! locally: `cargo lambda watch --only-lambda-apis` serves the Runtime API,
//! the function binary runs beside it with the variables the emulator asks
//! for, and `cargo lambda invoke` sends the event. cargo-lambda comes from
//! PyPI (the test command installs it; `SHOAL_CARGO_LAMBDA`). Both
//! processes are killed when the handle drops.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::free_port;
use crate::process::Proc;

/// The emulator and the function it serves.
pub struct CargoLambda {
    tool: PathBuf,
    port: u16,
    dir: PathBuf,
    emulator: Proc,
    function: Proc,
}

fn tool() -> PathBuf {
    std::env::var_os("SHOAL_CARGO_LAMBDA")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            panic!("SHOAL_CARGO_LAMBDA is not set: run the tests through scripts/test-all.sh, which installs cargo-lambda")
        })
}

impl CargoLambda {
    /// Starts the emulator on a free loopback port, then `function` with
    /// `env` plus the variables the emulator names; logs go to `dir`.
    pub fn start(function: &str, env: &[(&str, String)], dir: &Path) -> Self {
        let tool = tool();
        let port = free_port();
        // It reads the workspace's metadata (no build: the function is ours
        // to start), as `cargo lambda watch` does in a project.
        let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml");
        let emulator = Proc::spawn(
            &tool.to_string_lossy(),
            &[
                "lambda",
                "watch",
                "--only-lambda-apis",
                "--invoke-address",
                "127.0.0.1",
                "--invoke-port",
                &port.to_string(),
                "--manifest-path",
                manifest,
                "--frozen",
            ],
            &[],
            &dir.join("cargo-lambda.log"),
        );
        crate::wait_for_port(port, "cargo lambda watch", Duration::from_secs(60), || {
            emulator.log_text()
        });
        // What `cargo lambda watch --only-lambda-apis` prints that the
        // function MUST have.
        let mut function_env = vec![
            (
                "AWS_LAMBDA_RUNTIME_API",
                format!("http://127.0.0.1:{port}/.rt"),
            ),
            ("AWS_LAMBDA_FUNCTION_NAME", "_".to_owned()),
            ("AWS_LAMBDA_FUNCTION_VERSION", "1".to_owned()),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "4096".to_owned()),
        ];
        function_env.extend(env.iter().cloned());
        let function = Proc::spawn(function, &[], &function_env, &dir.join("function.log"));
        Self {
            tool,
            port,
            dir: dir.to_owned(),
            emulator,
            function,
        }
    }

    /// `cargo lambda invoke` with `payload`: the function's answer, as
    /// JSON, or the error the tool printed.
    pub fn invoke(&self, payload: &serde_json::Value) -> Result<serde_json::Value, String> {
        let file = self.dir.join("payload.json");
        std::fs::write(&file, payload.to_string())
            .unwrap_or_else(|e| panic!("write {}: {e}", file.display()));
        let output = Command::new(&self.tool)
            .args([
                "lambda",
                "invoke",
                "--invoke-address",
                "127.0.0.1",
                "--invoke-port",
                &self.port.to_string(),
                "--output-format",
                "json",
                "--data-file",
            ])
            .arg(&file)
            .output()
            .unwrap_or_else(|e| panic!("cannot run cargo lambda invoke: {e}"));
        let stdout = String::from_utf8_lossy(&output.stdout);
        if !output.status.success() {
            return Err(format!(
                "{stdout}{}",
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        serde_json::from_str(&stdout).map_err(|e| format!("not JSON ({e}): {stdout}"))
    }

    /// What the emulator and the function logged so far.
    pub fn log_text(&self) -> String {
        format!(
            "--- cargo lambda watch\n{}\n--- function\n{}",
            self.emulator.log_text(),
            self.function.log_text()
        )
    }
}
