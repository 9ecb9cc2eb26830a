//! `shoal-operator`: prints the CRD, or runs the controller.

use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    match args.next().as_deref() {
        Some("crd") => match shoal_operator::crd::crd_yaml() {
            Ok(yaml) => {
                print!("{yaml}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("cannot render the CRD: {e}");
                ExitCode::FAILURE
            }
        },
        _ => {
            eprintln!("usage: shoal-operator crd");
            ExitCode::from(2)
        }
    }
}
