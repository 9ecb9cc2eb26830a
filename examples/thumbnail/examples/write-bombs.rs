//! Writes the hostile sample images into a folder, for trying a build by
//! hand: `cargo run -p thumbnail --example write-bombs -- DIR`.

use std::process::ExitCode;

fn main() -> ExitCode {
    let Some(dir) = std::env::args().nth(1) else {
        eprintln!("usage: write-bombs DIR");
        return ExitCode::from(2);
    };
    for (name, bytes) in thumbnail::bombs::all() {
        let path = std::path::Path::new(&dir).join(name);
        if let Err(e) = std::fs::write(&path, bytes) {
            eprintln!("cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
