//! # shoal-protocol
//!
//! What shoal's parts say to each other, with no I/O: the messages on a
//! queue ([`message`]), the `shoal.*` headers of a retried or dead-lettered
//! message ([`headers`]), the per-item results the workers write and the
//! operator merges ([`results`]), the names of a RabbitMQ queue's topology
//! ([`topology`]), why an invocation failed or an item was dead-lettered
//! ([`category`]), and the `SHOAL_*` variables that configure a worker
//! ([`env`]).
//!
//! The worker, the operator, `shoal-host` and the kubectl plugin depend on
//! this crate, never on each other for these. Every decoder here takes
//! untrusted bytes: it returns a value or an error, never panics, and never
//! allocates more than a bounded multiple of its input.

pub mod category;
pub mod env;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod headers;
pub mod message;
pub mod results;
pub mod topology;
