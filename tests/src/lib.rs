//! Support for shoal's end-to-end tests: the external tools and servers
//! they drive. The binary under test is `thumbnail-e2e` (see `src/bin`),
//! which cargo builds with the tests.

pub mod elasticmq;
pub mod moto;
pub mod process;
pub mod prom;
pub mod rie;
pub mod sqs;
pub mod stack;

use std::net::{Ipv4Addr, TcpListener};
use std::path::PathBuf;

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
