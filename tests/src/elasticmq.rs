//! A real ElasticMQ server (SQS protocol, JVM) on a free loopback port,
//! with its queues and messages persisted on disk so a test can kill and
//! restart it. Stopped when the handle drops.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{free_port, tool};

/// A running ElasticMQ; killed on drop.
pub struct ElasticMq {
    child: Option<Child>,
    address: String,
    port: u16,
    state: tempfile::TempDir,
    /// Started by [`ElasticMq::start_beside_a_benchmark`].
    background: bool,
}

fn classpath() -> String {
    let lib = std::env::var_os("SHOAL_ELASTICMQ_LIB")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            panic!("SHOAL_ELASTICMQ_LIB is not set: run the tests through scripts/test-all.sh, which installs ElasticMQ")
        });
    assert!(
        lib.is_dir(),
        "SHOAL_ELASTICMQ_LIB={} is not a folder",
        lib.display()
    );
    format!("{}/*", lib.display())
}

impl ElasticMq {
    /// Starts a server on loopback and waits until it answers.
    pub fn start() -> Self {
        Self::start_at("127.0.0.1")
    }

    /// Starts a server bound to `address` (queue URLs name it too), e.g.
    /// a real node's address that its pods reach.
    pub fn start_at(address: &str) -> Self {
        Self::launch(address, false)
    }

    /// Starts a server on loopback that stands in for a service that runs
    /// elsewhere in production (SQS), beside a benchmark of something
    /// else: at `nice` 10, so it takes the CPU what is measured leaves
    /// (on a small machine it would otherwise starve the API server the
    /// operator waits on), and with the JVM's full JIT, which costs a
    /// slower start and serves each request with less CPU.
    pub fn start_beside_a_benchmark() -> Self {
        Self::launch("127.0.0.1", true)
    }

    fn launch(address: &str, background: bool) -> Self {
        let mut server = Self {
            child: None,
            address: address.to_owned(),
            port: free_port(),
            state: tempfile::tempdir().unwrap_or_else(|e| panic!("no temp dir: {e}")),
            background,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let java = tool("java", "a Java runtime (OpenJDK)");
        let dir = self.state.path();
        let config = dir.join("elasticmq.conf");
        let (address, port) = (self.address.as_str(), self.port);
        std::fs::write(
            &config,
            format!(
                r#"include classpath("application.conf")
node-address {{ protocol = http, host = "{address}", port = {port}, context-path = "" }}
rest-sqs {{ enabled = true, bind-port = {port}, bind-hostname = "{address}", sqs-limits = strict }}
rest-stats {{ enabled = false }}
queues-storage {{ enabled = true, path = "{queues}" }}
messages-storage {{ enabled = true, uri = "jdbc:h2:{messages}" }}
"#,
                queues = dir.join("queues.conf").display(),
                messages = dir.join("messages").display(),
            ),
        )
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", config.display()));
        let log = std::fs::File::create(dir.join("elasticmq.log"))
            .unwrap_or_else(|e| panic!("cannot create the ElasticMQ log: {e}"));
        let mut command = if self.background {
            let mut nice = Command::new("nice");
            nice.args(["-n", "10"]).arg(java);
            nice
        } else {
            let mut java = Command::new(java);
            // A quick start: tests make few requests each.
            java.arg("-XX:TieredStopAtLevel=1");
            java
        };
        let child = command
            .args(["-Xmx256m", "-XX:+UseSerialGC"])
            .arg(format!("-Dconfig.file={}", config.display()))
            .args(["-cp", &classpath(), "org.elasticmq.server.Main"])
            .stdin(Stdio::null())
            .stdout(Stdio::from(
                log.try_clone()
                    .unwrap_or_else(|e| panic!("cannot share the log: {e}")),
            ))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start ElasticMQ: {e}"));
        self.child = Some(child);
        crate::wait_for_addr(
            &format!("{address}:{port}"),
            "ElasticMQ",
            Duration::from_secs(90),
            || std::fs::read_to_string(dir.join("elasticmq.log")).unwrap_or_default(),
        );
    }

    /// `http://ADDRESS:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}:{}", self.address, self.port)
    }

    /// Kills the server (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server (SIGTERM, waiting for it to exit, so its message
    /// store is closed cleanly), runs `while_down`, and starts it again on
    /// the same port with the same stored state: it returns once the
    /// server serves every queue it served before (it answers on its port
    /// a moment before it has loaded them back).
    pub fn restart_after(&mut self, while_down: impl FnOnce()) {
        let queues = self.queue_urls().unwrap_or_else(|| {
            panic!(
                "ElasticMQ at {} lists no queues before its restart",
                self.endpoint()
            )
        });
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
        while_down();
        self.spawn();
        crate::wait_until(
            Duration::from_secs(90),
            "ElasticMQ serving its queues again",
            || {
                let now = self.queue_urls()?;
                queues.iter().all(|q| now.contains(q)).then_some(())
            },
            || {
                format!(
                    "before the restart: {queues:?}; now: {:?}",
                    self.queue_urls()
                )
            },
        );
    }

    /// The URLs of the queues the server lists (`ListQueues` over the query
    /// protocol); `None` while it does not answer, or answers an error.
    fn queue_urls(&self) -> Option<Vec<String>> {
        let url = format!("{}/?Action=ListQueues", self.endpoint());
        let mut response = crate::prom::http_agent(Duration::from_secs(5))
            .get(&url)
            .call()
            .ok()?;
        if response.status() != 200 {
            return None;
        }
        let body = response.body_mut().read_to_string().ok()?;
        Some(
            body.split("<QueueUrl>")
                .skip(1)
                .filter_map(|rest| rest.split_once("</QueueUrl>"))
                .map(|(queue, _)| queue.to_owned())
                .collect(),
        )
    }
}

impl Drop for ElasticMq {
    fn drop(&mut self) {
        self.kill();
    }
}
