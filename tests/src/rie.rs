//! The AWS Lambda Runtime Interface Emulator running a handler binary as
//! its bootstrap, on free loopback ports; stopped when the handle drops.
//! The emulator sets `AWS_LAMBDA_RUNTIME_API` for the binary, which is how
//! the binary knows it is a Lambda function.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::free_port;
use crate::process::Proc;

/// A running emulator and the function behind it.
pub struct Rie {
    process: Proc,
    port: u16,
}

impl Rie {
    /// Starts the emulator with `bootstrap` as the function, `env` added to
    /// its environment, logging to `log`.
    pub fn start(bootstrap: &str, env: &[(&str, String)], log: &Path) -> Self {
        let rie = std::env::var_os("SHOAL_LAMBDA_RIE")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                panic!("SHOAL_LAMBDA_RIE is not set: run the tests through scripts/test-all.sh, which builds the emulator")
            });
        let port = free_port();
        let api = format!("127.0.0.1:{}", free_port());
        let listen = format!("127.0.0.1:{port}");
        let rie = rie.to_string_lossy().into_owned();
        let process = Proc::spawn(
            &rie,
            &[
                "--runtime-interface-emulator-address",
                &listen,
                "--runtime-api-address",
                &api,
                bootstrap,
            ],
            env,
            log,
        );
        crate::wait_for_port(port, "the emulator", Duration::from_secs(30), || {
            process.log_text()
        });
        Self { process, port }
    }

    /// Invokes the function with `payload`: the HTTP status and the JSON
    /// the function (or the emulator, for an error) answered.
    pub fn invoke(&self, payload: &serde_json::Value) -> (u16, serde_json::Value) {
        let url = format!(
            "http://127.0.0.1:{}/2015-03-31/functions/function/invocations",
            self.port
        );
        let mut response = crate::prom::http_agent(Duration::from_secs(60))
            .post(&url)
            .send(payload.to_string())
            .unwrap_or_else(|e| panic!("POST {url}: {e}\nlog:\n{}", self.process.log_text()));
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .read_to_string()
            .unwrap_or_else(|e| panic!("POST {url}: body: {e}\nlog:\n{}", self.process.log_text()));
        let value = serde_json::from_str(&body).unwrap_or_else(|e| {
            panic!("not JSON ({e}): {body}\nlog:\n{}", self.process.log_text())
        });
        (status, value)
    }

    /// What the emulator and the function logged so far.
    pub fn log_text(&self) -> String {
        self.process.log_text()
    }
}
