//! Names of the `SHOAL_*` variables that configure a worker. The worker's
//! command line reads them (each is also a flag); the operator's Deployment
//! builder and `shoal-host` set or read them. One name per setting, spelled
//! once here, so the two sides cannot drift apart.

/// The queue to consume: an SQS queue URL or an `amqp[s]://…/queue` URL.
pub const QUEUE: &str = "SHOAL_QUEUE";
/// A RabbitMQ connection URL; `SHOAL_QUEUE` is `$(SHOAL_AMQP_URL)/<queue>`
/// in an operator-made pod, so the credentials stay in a Secret.
pub const AMQP_URL: &str = "SHOAL_AMQP_URL";
/// Where objects named by messages are read from.
pub const INPUT: &str = "SHOAL_INPUT";
/// Where outputs are written.
pub const OUTPUT: &str = "SHOAL_OUTPUT";
/// Buckets a worker may read, whatever a message says (comma-separated).
pub const ALLOWED_BUCKETS: &str = "SHOAL_ALLOWED_BUCKETS";
/// Invocations at a time in one process.
pub const CONCURRENCY: &str = "SHOAL_CONCURRENCY";
/// Seconds one invocation may run.
pub const TIMEOUT: &str = "SHOAL_TIMEOUT";
/// Attempts per item before it is dead-lettered.
pub const MAX_ATTEMPTS: &str = "SHOAL_MAX_ATTEMPTS";
/// Memory of one invocation, in MiB (Lambda's memory setting).
pub const MEMORY_MIB: &str = "SHOAL_MEMORY_MIB";
/// The function name in log lines and metrics.
pub const FUNCTION_NAME: &str = "SHOAL_FUNCTION_NAME";
/// Address of the metrics and readiness server.
pub const METRICS_ADDR: &str = "SHOAL_METRICS_ADDR";
/// Seconds a worker drains after SIGTERM.
pub const SHUTDOWN_GRACE: &str = "SHOAL_SHUTDOWN_GRACE";
/// `text`, `json` or `auto`.
pub const LOG_FORMAT: &str = "SHOAL_LOG_FORMAT";
/// The run whose per-item results a worker records (a BatchJob's uid).
pub const RECORD_RESULTS: &str = "SHOAL_RECORD_RESULTS";
/// Records per invocation of a hosted Lambda function.
pub const BATCH_SIZE: &str = "SHOAL_BATCH_SIZE";
/// Seconds a hosted Lambda function's init may take.
pub const INIT_TIMEOUT: &str = "SHOAL_INIT_TIMEOUT";
/// The prefix of every variable above: what a hosted function's process
/// does not inherit.
pub const PREFIX: &str = "SHOAL_";
