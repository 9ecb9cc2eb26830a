//! `shoal-operator`: see [`shoal_operator::cli`].

fn main() -> std::process::ExitCode {
    shoal_operator::cli::main()
}
