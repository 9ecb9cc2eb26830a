//! RabbitMQ (Debian's `rabbitmq-server`) for a test: its own node name,
//! loopback ports, data, logs, Erlang cookie and epmd, all in a temporary
//! folder; killed (with its epmd) when dropped. The management plugin
//! serves queue counts over HTTP (what the operator reads), refreshed at
//! RabbitMQ's defaults (about every 5 s).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lapin::options::ConfirmSelectOptions;
use lapin::{Channel, Connection, ConnectionProperties};

use crate::{free_port, wait_for_port};

const SERVER: &str = "/usr/lib/rabbitmq/bin/rabbitmq-server";
const CTL: &str = "/usr/lib/rabbitmq/bin/rabbitmqctl";

/// A running broker.
pub struct Rabbit {
    dir: tempfile::TempDir,
    port: u16,
    management_port: u16,
    epmd_port: u16,
    dist_port: u16,
    child: Option<Child>,
    epmd: Option<Child>,
}

impl Rabbit {
    /// Starts a broker and waits until it accepts AMQP connections.
    pub fn start() -> Self {
        assert!(
            Path::new(SERVER).exists(),
            "{SERVER} not found: install the rabbitmq-server package (.ci/run does)"
        );
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
        let mut rabbit = Self {
            dir,
            port: free_port(),
            management_port: free_port(),
            epmd_port: free_port(),
            dist_port: free_port(),
            child: None,
            epmd: None,
        };
        let config = format!(
            "listeners.tcp.1 = 127.0.0.1:{}\nmanagement.tcp.ip = 127.0.0.1\nmanagement.tcp.port = {}\nlog.console = true\nlog.file = false\n",
            rabbit.port, rabbit.management_port
        );
        let write = |name: &str, text: &str| {
            std::fs::write(rabbit.dir.path().join(name), text)
                .unwrap_or_else(|e| panic!("write {name}: {e}"));
        };
        write("rabbitmq.conf", &config);
        write("enabled_plugins", "[rabbitmq_management].\n");
        write("rabbitmq-env.conf", "");

        // The node's port mapper, owned here (the VM would otherwise start
        // a daemon that outlives the test).
        let epmd = Command::new("epmd")
            .args([
                "-port",
                &rabbit.epmd_port.to_string(),
                "-address",
                "127.0.0.1",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start epmd: {e}"));
        rabbit.epmd = Some(epmd);
        wait_for_port(
            rabbit.epmd_port,
            "epmd",
            Duration::from_secs(10),
            String::new,
        );
        rabbit.launch();
        rabbit
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        let dir = self.dir.path();
        let path = |name: &str| dir.join(name).to_string_lossy().into_owned();
        vec![
            ("HOME", path("")),
            ("RABBITMQ_NODENAME", format!("shoal{}@localhost", self.port)),
            ("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1".into()),
            ("RABBITMQ_NODE_PORT", self.port.to_string()),
            ("RABBITMQ_DIST_PORT", self.dist_port.to_string()),
            ("ERL_EPMD_PORT", self.epmd_port.to_string()),
            ("ERL_EPMD_ADDRESS", "127.0.0.1".into()),
            ("RABBITMQ_MNESIA_BASE", path("mnesia")),
            ("RABBITMQ_LOG_BASE", path("log")),
            ("RABBITMQ_CONFIG_FILE", path("rabbitmq.conf")),
            ("RABBITMQ_ENABLED_PLUGINS_FILE", path("enabled_plugins")),
            ("RABBITMQ_CONF_ENV_FILE", path("rabbitmq-env.conf")),
            ("RABBITMQ_PID_FILE", path("rabbitmq.pid")),
        ]
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// What the broker printed.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn launch(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap_or_else(|e| panic!("broker log: {e}"));
        let err = log
            .try_clone()
            .unwrap_or_else(|e| panic!("broker log: {e}"));
        let child = Command::new(SERVER)
            .envs(self.env())
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err))
            // Its own process group: the script, the Erlang VM and its
            // helpers are killed together.
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {SERVER}: {e}"));
        self.child = Some(child);
        wait_for_port(self.port, "rabbitmq", Duration::from_secs(120), || {
            self.log_text()
        });
    }

    /// kill -9 of the whole broker (a crash); its data stays.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // `--`: without it procps reads `-PGID` as an option and
            // signals every process (kill(-1)).
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", child.id())])
                .status();
            let _ = child.wait();
        }
    }

    /// Kills the broker and starts it again on the same ports and data;
    /// returns once its log says "Server startup complete" again.
    pub fn restart(&mut self) {
        let before = self.startups();
        self.kill();
        self.launch();
        let started = Instant::now();
        while self.startups() <= before {
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "the broker did not finish starting:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Closes every client connection from the broker's side (the broker
    /// keeps running): what a worker sees when its connection drops, and
    /// the broker requeues the deliveries it held.
    pub fn close_connections(&self) {
        self.ctl(&["close_all_connections", "closed by the test"]);
    }

    /// Adds user `user` with `password`, allowed everything on the default
    /// vhost and the management API; returns the broker's URL for it.
    pub fn add_user(&self, user: &str, password: &str) -> String {
        self.add_user_writing(user, password, ".*")
    }

    /// [`Rabbit::add_user`], allowed to write (publish, bind) only to the
    /// exchanges and queues `write` (a regular expression) matches.
    pub fn add_user_writing(&self, user: &str, password: &str, write: &str) -> String {
        self.ctl(&["add_user", user, password]);
        self.ctl(&["set_permissions", "-p", "/", user, ".*", write, ".*"]);
        self.ctl(&["set_user_tags", user, "management"]);
        format!("amqp://{user}:{password}@127.0.0.1:{}/%2f", self.port)
    }

    /// Runs `rabbitmqctl ARGS` against this broker; panics if it fails.
    fn ctl(&self, args: &[&str]) {
        let output = Command::new(CTL)
            .envs(self.env())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {CTL}: {e}"));
        assert!(
            output.status.success(),
            "rabbitmqctl {}: {}{}",
            args.first().copied().unwrap_or_default(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn startups(&self) -> usize {
        self.log_text().matches("Server startup complete").count()
    }

    /// Second of the day (UTC) at which the broker last finished starting,
    /// from its log.
    pub fn last_startup_second(&self) -> Option<f64> {
        let text = self.log_text();
        let line = text
            .lines()
            .rev()
            .find(|l| l.contains("Server startup complete"))?;
        // "2026-11-27 15:49:38.892314+00:00 [info] ..."
        second_of_day(line.get(11..26)?)
    }

    /// The connection URI (default vhost).
    pub fn uri(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// `127.0.0.1:PORT`, where it takes AMQP connections.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The worker's `--queue` URL for `queue`.
    pub fn queue_url(&self, queue: &str) -> String {
        format!("{}/{queue}", self.uri())
    }

    /// The management API's base URL (`http://127.0.0.1:port`).
    pub fn management_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.management_port)
    }

    /// A channel in confirm mode on a new connection.
    pub async fn channel(&self) -> (Connection, Channel) {
        let connection = Connection::connect(&self.uri(), ConnectionProperties::default())
            .await
            .unwrap_or_else(|e| panic!("connect to the broker: {e}"));
        let channel = connection
            .create_channel()
            .await
            .unwrap_or_else(|e| panic!("channel: {e}"));
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap_or_else(|e| panic!("confirm mode: {e}"));
        (connection, channel)
    }

    /// Publishes `bodies` to `queue` (default exchange) persistently,
    /// waiting for every confirm.
    pub async fn publish(&self, queue: &str, bodies: &[String]) {
        let (_connection, channel) = self.channel().await;
        let messages: Vec<(Option<&str>, &[u8])> =
            bodies.iter().map(|b| (None, b.as_bytes())).collect();
        shoal_clients::amqp::publish_confirmed(&channel, queue, &messages)
            .await
            .unwrap_or_else(|e| panic!("publish to {queue}: {e}"));
    }

    /// Messages ready in `queue` (0 if it does not exist).
    pub async fn ready(&self, queue: &str) -> u32 {
        self.passive(queue).await.unwrap_or(0)
    }

    /// Whether `queue` exists.
    pub async fn exists(&self, queue: &str) -> bool {
        self.passive(queue).await.is_some()
    }

    /// Messages ready in `queue`, from a passive declare; `None` if it
    /// does not exist.
    async fn passive(&self, queue: &str) -> Option<u32> {
        let (connection, _channel) = self.channel().await;
        shoal_clients::amqp::ready_count(&connection, queue)
            .await
            .ok()
    }
}

impl Drop for Rabbit {
    fn drop(&mut self) {
        self.kill();
        if let Some(mut epmd) = self.epmd.take() {
            let _ = epmd.kill();
            let _ = epmd.wait();
        }
    }
}

/// `HH:MM:SS.ffffff` as seconds since midnight.
pub fn second_of_day(clock: &str) -> Option<f64> {
    let mut parts = clock.split(':');
    let hours: f64 = parts.next()?.parse().ok()?;
    let minutes: f64 = parts.next()?.parse().ok()?;
    let seconds: f64 = parts.next()?.parse().ok()?;
    Some(hours * 3600.0 + minutes * 60.0 + seconds)
}
