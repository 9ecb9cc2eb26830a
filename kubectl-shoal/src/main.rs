//! `kubectl shoal`: see the crate's library for the commands.

fn main() -> std::process::ExitCode {
    kubectl_shoal::main()
}
