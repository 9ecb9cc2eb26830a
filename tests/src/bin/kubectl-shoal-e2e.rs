//! The kubectl plugin's command line, built with the tests so they run the
//! plugin of this build (`CARGO_BIN_EXE_kubectl-shoal-e2e`).

fn main() -> std::process::ExitCode {
    kubectl_shoal::main()
}
