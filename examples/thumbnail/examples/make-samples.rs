//! Writes sample images for trying shoal out or benchmarking it.
//!
//! `cargo run -p thumbnail --example make-samples -- DIR [PHOTOS] [WIDTHxHEIGHT] [--no-extras]`

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: make-samples DIR [PHOTOS] [WIDTHxHEIGHT] [--no-extras]";
    let Some(dir) = args.first() else {
        eprintln!("{usage}");
        return ExitCode::from(2);
    };
    let extras = !args.iter().any(|a| a == "--no-extras");
    let positional: Vec<&String> = args
        .iter()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let photos = match positional.first().map(|s| s.parse::<usize>()) {
        None => 8,
        Some(Ok(n)) => n,
        Some(Err(_)) => {
            eprintln!("PHOTOS must be a number\n{usage}");
            return ExitCode::from(2);
        }
    };
    let size = positional.get(1).map(|s| s.split_once('x'));
    let (width, height) = match size {
        None => (1600, 1067),
        Some(Some((w, h))) => match (w.parse(), h.parse()) {
            (Ok(w), Ok(h)) => (w, h),
            _ => {
                eprintln!("size must look like 1600x1067\n{usage}");
                return ExitCode::from(2);
            }
        },
        Some(None) => {
            eprintln!("size must look like 1600x1067\n{usage}");
            return ExitCode::from(2);
        }
    };
    match thumbnail::samples::write_set(std::path::Path::new(dir), photos, width, height, extras) {
        Ok(files) => {
            println!("wrote {} files to {dir}", files.len());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("cannot write samples to {dir}: {e}");
            ExitCode::FAILURE
        }
    }
}
