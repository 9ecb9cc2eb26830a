//! The thumbnail handler binary, built inside this package so the
//! end-to-end tests get it from the same cargo invocation
//! (`CARGO_BIN_EXE_thumbnail-e2e`). Identical to `examples/thumbnail`'s main.

fn main() -> std::process::ExitCode {
    shoal_worker::main_with(thumbnail::Thumbnailer::from_env)
}
