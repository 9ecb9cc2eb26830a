//! The operator's command line, built with the tests so they can start it
//! as a process (`CARGO_BIN_EXE_shoal-operator-e2e`).

fn main() -> std::process::ExitCode {
    shoal_operator::cli::main()
}
