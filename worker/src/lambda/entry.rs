//! The `lambda` command, chosen on its own under Lambda: the function's
//! settings come from Lambda's variables, then the Runtime API is served
//! until the environment is shut down.

use std::sync::Arc;
use std::time::Duration;

use super::{Pushgateway, instance_id, run};
use crate::app::exit;
use crate::cli::{LambdaArgs, lambda_timeout};
use crate::engine::Engine;
use crate::error::Result;
use crate::handler::Handler;
use crate::setup::Setup;

/// Runs `handler` as a Lambda function with `args` (the setup already
/// took the function's name from Lambda's variables; see `crate::setup`).
pub(crate) async fn lambda_mode<H: Handler>(
    handler: Arc<H>,
    mut setup: Setup,
    args: &LambdaArgs,
) -> Result<u8> {
    let config = &mut setup.config;
    // The invocation's deadline bounds each item; SHOAL_TIMEOUT only if
    // set.
    let set = std::env::var_os(shoal_protocol::env::TIMEOUT).is_some();
    let timeout = lambda_timeout(set.then_some(config.timeout));
    if set && timeout < config.timeout {
        tracing::warn!(
            timeout_s = config.timeout.as_secs_f64(),
            "SHOAL_TIMEOUT is above Lambda's 900 s; items are bounded by 900 s in Lambda mode"
        );
    }
    config.timeout = timeout;
    if let Some(mib) = std::env::var("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        config.memory_mib = mib;
    }
    let mut stores = setup.stores();
    let input = stores
        .input_or_any_bucket(args.input.as_ref(), false)
        .await?;
    let output = stores.open_optional(args.output.as_ref()).await?;
    tracing::debug!(
        init_ms = setup.started.elapsed().as_secs_f64() * 1000.0,
        "lambda init done"
    );
    let push = match &args.pushgateway_url {
        Some(url) => Some(Pushgateway::new(
            url,
            &args.pushgateway_job,
            &setup.config.function_name,
            &instance_id(),
            Duration::from_secs_f64(args.pushgateway_timeout),
        )?),
        None => None,
    };
    let engine = Engine::new(handler, input, output, setup.config, setup.metrics);
    setup.ready.set(true);
    run(engine, push).await?;
    Ok(exit::OK)
}
