//! Times the thumbnail pipeline on one file, N times, in this process.
//!
//! `cargo run --release -p thumbnail --example decode-bench -- FILE [N]`
//! (`THUMBNAIL_MAX_EDGE`, `THUMBNAIL_QUALITY` and `THUMBNAIL_CHROMA` apply).

use std::process::ExitCode;
use std::time::Instant;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(path) = args.first() else {
        eprintln!("usage: decode-bench FILE [N]");
        return ExitCode::from(2);
    };
    let n: u32 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(5);
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("cannot read {path}: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The settings the handler reads from the environment.
    let config = match thumbnail::Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let started = Instant::now();
    for _ in 0..n {
        if let Err(e) = thumbnail::make_thumbnail(&bytes, &config, u64::MAX) {
            eprintln!("{path}: {e}");
            return ExitCode::FAILURE;
        }
    }
    let per = started.elapsed().as_secs_f64() * 1000.0 / f64::from(n);
    println!("{path}: {per:.1} ms per thumbnail");
    ExitCode::SUCCESS
}
