//! `shoal-host`: see [`shoal_host::cli`].

fn main() -> std::process::ExitCode {
    shoal_host::cli::main()
}
