//! The `shoal-operator` command line: `crd` prints the CRD; `run` runs the
//! controller with the in-cluster or `KUBECONFIG` credentials and the
//! default AWS chain.

use std::process::ExitCode;

use tracing_subscriber::EnvFilter;

/// Runs the command named by the process arguments.
pub fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    match args.next().as_deref() {
        Some("crd") => match crate::crd::crd_yaml() {
            Ok(yaml) => {
                print!("{yaml}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("cannot render the CRD: {e}");
                ExitCode::FAILURE
            }
        },
        Some("run") => run(),
        _ => {
            eprintln!("usage: shoal-operator crd | run");
            ExitCode::from(2)
        }
    }
}

fn run() -> ExitCode {
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let client = match kube::Client::try_default().await {
            Ok(client) => client,
            Err(e) => {
                tracing::error!(error = %e, "no Kubernetes credentials (in-cluster or KUBECONFIG)");
                return ExitCode::FAILURE;
            }
        };
        let sqs = crate::sqs::Sqs::from_env().await;
        let s3 = crate::s3::S3::from_env().await;
        tracing::info!("operator started");
        crate::controller::run(client, sqs, s3).await;
        tracing::info!("operator stopped");
        ExitCode::SUCCESS
    })
}
