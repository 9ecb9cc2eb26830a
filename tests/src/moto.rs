//! A real moto server (S3 and SQS over HTTP) on a free loopback port,
//! started by the test and stopped when the handle drops.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};

use crate::{free_port, tool};

/// A running `moto_server`; killed on drop.
pub struct Moto {
    child: Child,
    endpoint: String,
}

impl Moto {
    /// Starts a server and waits until it accepts connections.
    ///
    /// The binary is `$SHOAL_MOTO_SERVER` (set by `scripts/test-all.sh`,
    /// which installs moto into a cached virtualenv) or `moto_server` on PATH.
    pub fn start() -> Self {
        Self::start_at("127.0.0.1")
    }

    /// [`Moto::start`] bound to `address`, e.g. a real node's address that
    /// its pods reach.
    pub fn start_at(address: &str) -> Self {
        let server = std::env::var_os("SHOAL_MOTO_SERVER")
            .map(PathBuf::from)
            .unwrap_or_else(|| tool("moto_server", "moto[server] from PyPI"));
        let port = free_port();
        let child = Command::new(&server)
            .args(["-H", address, "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", server.display()));
        let moto = Self {
            child,
            endpoint: format!("http://{address}:{port}"),
        };
        crate::wait_for_addr(
            &format!("{address}:{port}"),
            "moto",
            Duration::from_secs(60),
            String::new,
        );
        moto
    }

    /// Sends a signal by name with kill(1): `STOP` makes S3 unavailable
    /// (connections are accepted, nothing answers) with its objects kept;
    /// `CONT` brings it back.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap_or_else(|e| panic!("cannot run kill: {e}"));
        assert!(status.success(), "kill -{name} moto failed");
    }

    /// `http://ADDRESS:PORT`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Environment for a process that should use this server through the
    /// AWS default chain.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ]
    }

    /// An SQS client for the test itself.
    pub fn sqs(&self) -> aws_sdk_sqs::Client {
        crate::sqs::client(&self.endpoint)
    }

    /// An S3 client for the test itself.
    pub fn s3(&self) -> aws_sdk_s3::Client {
        let config = aws_sdk_s3::config::Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(&self.endpoint)
            .credentials_provider(Credentials::new("testing", "testing", None, None, "moto"))
            .force_path_style(true)
            .build();
        aws_sdk_s3::Client::from_conf(config)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
