//! The Lambda function host's command line, built with the tests so they
//! run the host of this build (`CARGO_BIN_EXE_shoal-host-e2e`).

fn main() -> std::process::ExitCode {
    shoal_host::cli::main()
}
