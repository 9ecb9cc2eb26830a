//! `thumbnail`: the seed story's handler as a shoal binary.

fn main() -> std::process::ExitCode {
    shoal_worker::main_with(thumbnail::Thumbnailer::from_env)
}
