//! Support for shoal's end-to-end tests: the binaries under test, built by
//! cargo with the same profile as the tests, and the external tools they
//! drive.

use std::path::PathBuf;
use std::sync::OnceLock;

/// Path of the `thumbnail` example binary, built once per test process.
///
/// Panics with the build output when cargo cannot build it: a test cannot
/// go on without its binary.
pub fn thumbnail_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let built = escargot::CargoBuild::new()
            .package("thumbnail")
            .bin("thumbnail")
            .run();
        match built {
            Ok(run) => run.path().to_owned(),
            Err(e) => panic!("cannot build the thumbnail binary: {e}"),
        }
    })
    .clone()
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
