//! Support for shoal's end-to-end tests: the external tools and servers
//! they drive. The binary under test is `thumbnail-e2e` (see `src/bin`),
//! which cargo builds with the tests.

pub mod cargo_lambda;
pub mod elasticmq;
pub mod helm;
pub mod kube;
pub mod moto;
pub mod node;
pub mod operator;
pub mod pods;
pub mod process;
pub mod prom;
pub mod rabbitmq;
pub mod rie;
pub mod sqs;
pub mod stack;

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

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

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free loopback port: {e}"))
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
