//! Support for shoal's end-to-end tests: the external tools and servers
//! they drive. The binary under test is `thumbnail-e2e` (see `src/bin`),
//! which cargo builds with the tests.

pub mod cargo_lambda;
pub mod elasticmq;
pub mod fake_nodes;
pub mod helm;
pub mod kube;
pub mod moto;
pub mod node;
pub mod operator;
pub mod photos;
pub mod pods;
pub mod process;
pub mod prom;
pub mod rabbitmq;
pub mod rie;
pub mod sqs;
pub mod stack;

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The repository's root folder.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Path of an external tool, or a panic naming the package that provides it
/// (the README test command installs them all).
pub fn tool(name: &str, package: &str) -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    });
    match found {
        Some(path) => path,
        None => panic!("{name} not found on PATH: install the {package} package (.ci/run does)"),
    }
}

/// Lowest port handed out by [`free_port`].
const LOWEST_PORT: u16 = 10_000;

/// The first port of the kernel's ephemeral range (where outgoing
/// connections get their local ports), 32768 when unknown.
fn ephemeral_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse().ok())
        .filter(|start| *start > LOWEST_PORT + 1000)
        .unwrap_or(32_768)
}

/// A port nobody listens on right now, on any address, and that no other
/// caller of this function in any test process on the machine holds. Taken
/// at random below the kernel's ephemeral range: a port from that range
/// (what binding port 0 gives) can be taken as the local end of any
/// outgoing connection in the time between this check and the server's own
/// bind, and a broker that boots for seconds (RabbitMQ's distribution port)
/// then fails to start. Below it, only another explicit bind can take it.
///
/// Test binaries run side by side (the real-node test beside the operator
/// tests), each starting servers that bind some time after the port was
/// chosen; two draws of the same port in that window made etcd fail with
/// "address already in use". So each port handed out is also reserved: an
/// exclusive lock on `shoal-test-ports/PORT` in the temporary directory,
/// held until the process exits (the kernel drops it then, whatever the
/// exit). A port whose lock another process holds is skipped, and this
/// process never hands out the same port twice.
pub fn free_port() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU64, Ordering};
    static DRAWS: AtomicU64 = AtomicU64::new(0);
    static HELD: Mutex<Vec<std::fs::File>> = Mutex::new(Vec::new());
    let dir = std::env::temp_dir().join("shoal-test-ports");
    if let Err(e) = std::fs::create_dir_all(&dir) {
        panic!(
            "cannot create the port reservation folder {}: {e}",
            dir.display()
        );
    }
    let span = u64::from(ephemeral_start() - LOWEST_PORT);
    for _ in 0..10_000 {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u32(std::process::id());
        hasher.write_u64(DRAWS.fetch_add(1, Ordering::Relaxed));
        let offset = u16::try_from(hasher.finish() % span).unwrap_or(0);
        let port = LOWEST_PORT + offset;
        let path = dir.join(port.to_string());
        let lock = match std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
        {
            Ok(file) => file,
            Err(e) => panic!("cannot open the port reservation {}: {e}", path.display()),
        };
        // Held by another process, or by this one (a lock taken through
        // another open file conflicts too).
        if lock.try_lock().is_err() {
            continue;
        }
        if TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).is_ok() {
            HELD.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(lock);
            return port;
        }
    }
    panic!("no free port below {}", ephemeral_start())
}

/// Waits until something listens on loopback `port`; after `limit`, panics
/// with `what` and the text `log` gives (the server's log so far).
pub fn wait_for_port(port: u16, what: &str, limit: Duration, log: impl Fn() -> String) {
    wait_for_socket(
        SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        what,
        limit,
        log,
    );
}

/// [`wait_for_port`] at `addr` (`ip:port`).
pub fn wait_for_addr(addr: &str, what: &str, limit: Duration, log: impl Fn() -> String) {
    let addr: SocketAddr = addr
        .parse()
        .unwrap_or_else(|e| panic!("{what}: bad address {addr}: {e}"));
    // A server bound to every address answers on loopback too.
    let addr = if addr.ip().is_unspecified() {
        SocketAddr::from((Ipv4Addr::LOCALHOST, addr.port()))
    } else {
        addr
    };
    wait_for_socket(addr, what, limit, log);
}

fn wait_for_socket(addr: SocketAddr, what: &str, limit: Duration, log: impl Fn() -> String) {
    let started = Instant::now();
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(
            started.elapsed() < limit,
            "{what} did not listen on {addr} within {limit:?}; log:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Polls `probe` until it returns `Some`, for at most `limit`; then panics
/// with `what` and the last text `context` gives.
pub fn wait_until<T>(
    limit: Duration,
    what: &str,
    mut probe: impl FnMut() -> Option<T>,
    context: impl Fn() -> String,
) -> T {
    let started = Instant::now();
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(
            started.elapsed() < limit,
            "{what}: not within {limit:?}\n{}",
            context()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
