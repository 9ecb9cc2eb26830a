//! The handler contract: one item in, one result out.
//!
//! A handler is a plain `async fn(Item<I>, Context) -> Result<O, HandlerError>`
//! wrapped with [`handler_fn`], or any type implementing [`Handler`]. Batching,
//! retries, timeouts, concurrency and I/O belong to the runtime; the same
//! handler serves every mode (`run`, `worker`, Lambda) unchanged.

use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;

pub use crate::failure::{ErrorKind, HandlerError};
use crate::payload::{Output, Payload};

/// Part of the memory limit kept for the runtime itself (clients, buffers,
/// the allocator's slack) before the rest is shared among invocations.
const RUNTIME_RESERVE_MIB: u64 = 64;

/// One unit of work handed to a handler.
#[derive(Debug, Clone)]
pub struct Item<T> {
    /// Stable identity of the item: the object key for object items,
    /// `<chunkId>/<index>` for inline items. Output keys derive from it.
    pub id: String,
    /// The decoded payload.
    pub payload: T,
}

/// What a handler knows about the invocation it runs in.
#[derive(Debug, Clone)]
pub struct Context {
    /// Unique id of this invocation attempt (a UUID, as Lambda's request id).
    pub request_id: String,
    /// 1 for the first attempt, 2 for the first retry, and so on.
    pub attempt: u32,
    /// Function name (`--function-name`, or the Lambda function's name).
    pub function_name: String,
    /// Configured memory limit in MiB (`--memory-mib`; Lambda's memory size).
    pub memory_limit_mib: u32,
    /// Invocations this process runs at once (`--concurrency`; 1 under
    /// Lambda). They share the memory limit.
    pub concurrency: u32,
    deadline: Arc<Deadline>,
    cancel: CancellationToken,
    /// The concurrency slot this invocation runs in: held by every clone of
    /// the context and by work started with [`Context::spawn_blocking`].
    slot: Option<Arc<OwnedSemaphorePermit>>,
    measured: Arc<Measured>,
}

/// An invocation's deadline, as a monotonic instant and a wall-clock
/// time, which stops running while paused ([`Context::pause_deadline`]).
#[derive(Debug)]
pub(crate) struct Deadline {
    state: std::sync::Mutex<DeadlineState>,
    resumed: tokio::sync::Notify,
}

#[derive(Debug, Clone, Copy)]
struct DeadlineState {
    at: Instant,
    wall: SystemTime,
    paused_since: Option<Instant>,
}

impl Deadline {
    fn after(timeout: Duration) -> Self {
        Self {
            state: std::sync::Mutex::new(DeadlineState {
                at: Instant::now() + timeout,
                wall: SystemTime::now() + timeout,
                paused_since: None,
            }),
            resumed: tokio::sync::Notify::new(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, DeadlineState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The deadline now (while paused, as if the pause ended now), and
    /// whether it is paused.
    pub(crate) fn at(&self) -> (Instant, SystemTime, bool) {
        let state = *self.state();
        let paused = state
            .paused_since
            .map_or(Duration::ZERO, |since| since.elapsed());
        (
            state.at + paused,
            state.wall + paused,
            state.paused_since.is_some(),
        )
    }

    /// Resolves once a pause under way ends.
    pub(crate) async fn resumed(&self) {
        self.resumed.notified().await;
    }

    fn pause(&self) {
        let mut state = self.state();
        if state.paused_since.is_none() {
            state.paused_since = Some(Instant::now());
        }
    }

    fn resume(&self) {
        let mut state = self.state();
        if let Some(since) = state.paused_since.take() {
            let paused = since.elapsed();
            state.at += paused;
            state.wall += paused;
        }
        drop(state);
        self.resumed.notify_one();
    }
}

/// Holds an invocation's deadline still until dropped; see
/// [`Context::pause_deadline`].
#[derive(Debug)]
pub struct DeadlinePause(Arc<Deadline>);

impl Drop for DeadlinePause {
    fn drop(&mut self) {
        self.0.resume();
    }
}

/// What a handler that runs the work elsewhere (a hosted Lambda function's
/// process) measured, for the invocation's REPORT line. 0: not reported.
#[derive(Debug, Default)]
pub(crate) struct Measured {
    init_micros: AtomicU64,
    max_memory_mib: AtomicU64,
}

impl Measured {
    /// The init duration reported, if any.
    pub(crate) fn init_duration(&self) -> Option<Duration> {
        match self.init_micros.load(Ordering::Relaxed) {
            0 => None,
            micros => Some(Duration::from_micros(micros)),
        }
    }

    /// The peak memory reported, if any.
    pub(crate) fn max_memory_mib(&self) -> Option<u64> {
        match self.max_memory_mib.load(Ordering::Relaxed) {
            0 => None,
            mib => Some(mib),
        }
    }
}

impl Context {
    /// Builds a context whose deadline is `timeout` from now.
    pub fn new(
        request_id: String,
        attempt: u32,
        function_name: String,
        memory_limit_mib: u32,
        timeout: Duration,
        cancel: CancellationToken,
    ) -> Self {
        Self {
            request_id,
            attempt,
            function_name,
            memory_limit_mib,
            concurrency: 1,
            deadline: Arc::new(Deadline::after(timeout)),
            cancel,
            slot: None,
            measured: Arc::default(),
        }
    }

    /// The deadline, shared with the runtime that enforces it.
    pub(crate) fn deadline_handle(&self) -> Arc<Deadline> {
        self.deadline.clone()
    }

    /// Stops the invocation's clock until the returned guard is dropped,
    /// for what its timeout does not cover: a hosted function's init phase,
    /// which Lambda bounds by its own init timeout, not the function's
    /// timeout. The deadline moves by the time paused; the queue's lease
    /// is extended while the invocation runs, as always. Whatever is done
    /// while paused must bound itself.
    pub fn pause_deadline(&self) -> DeadlinePause {
        self.deadline.pause();
        DeadlinePause(self.deadline.clone())
    }

    /// What [`Context::report_init_duration`] and
    /// [`Context::report_max_memory_used`] recorded.
    pub(crate) fn measured(&self) -> Arc<Measured> {
        self.measured.clone()
    }

    /// Reports the init phase the invocation paid for (a fresh execution
    /// environment of a hosted function): the REPORT line then carries
    /// `Init Duration`, as Lambda's does on an environment's first
    /// invocation.
    pub fn report_init_duration(&self, duration: Duration) {
        let micros = u64::try_from(duration.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        self.measured.init_micros.store(micros, Ordering::Relaxed);
    }

    /// Reports the peak memory, in MiB, of the process that did the work
    /// when it is not this one (a hosted function's): the REPORT line's
    /// `Max Memory Used` is then that figure instead of this process's.
    pub fn report_max_memory_used(&self, mib: u64) {
        self.measured
            .max_memory_mib
            .store(mib.max(1), Ordering::Relaxed);
    }

    /// The same context, for one of `concurrency` invocations running at
    /// once.
    pub fn with_concurrency(mut self, concurrency: u32) -> Self {
        self.concurrency = concurrency.max(1);
        self
    }

    /// The same context, holding the concurrency slot `slot`.
    pub(crate) fn holding(mut self, slot: Arc<OwnedSemaphorePermit>) -> Self {
        self.slot = Some(slot);
        self
    }

    /// The memory one invocation may use, in bytes: the memory limit, less
    /// a reserve for the runtime (64 MiB, or a quarter of a small limit),
    /// shared equally by the invocations that run at once. Handlers that
    /// allocate according to their input (decoders, decompressors) check
    /// what the input asks for against this before allocating.
    pub fn memory_budget_bytes(&self) -> u64 {
        memory_budget_bytes(self.memory_limit_mib, self.concurrency)
    }

    /// Runs blocking work (decoding, compression) on the blocking thread
    /// pool, holding this invocation's concurrency slot until `f` returns.
    ///
    /// Blocking code cannot be stopped from outside: when the invocation
    /// times out, the runtime reports the timeout at once, but the slot
    /// stays taken while `f` still runs, so a retry never runs beside the
    /// abandoned attempt and `--concurrency` holds. `f` should check
    /// [`Context::is_cancelled`] where it can and return early.
    pub fn spawn_blocking<F, R>(&self, f: F) -> tokio::task::JoinHandle<R>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        let slot = self.slot.clone();
        tokio::task::spawn_blocking(move || {
            let _slot = slot;
            f()
        })
    }

    /// The instant after which the runtime abandons this invocation.
    pub fn deadline(&self) -> Instant {
        self.deadline.at().0
    }

    /// The deadline as wall-clock time (what Lambda reports as `deadline_ms`).
    pub fn deadline_wall_clock(&self) -> SystemTime {
        self.deadline.at().1
    }

    /// Time left before the deadline (zero once it has passed).
    pub fn remaining(&self) -> Duration {
        self.deadline().saturating_duration_since(Instant::now())
    }

    /// Cancelled when the invocation times out or the worker shuts down.
    /// Long-running or blocking work should check it and stop early.
    pub fn cancellation(&self) -> &CancellationToken {
        &self.cancel
    }

    /// Shorthand for `self.cancellation().is_cancelled()`.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }
}

/// The memory one of `concurrency` invocations may use under a limit of
/// `limit_mib`; see [`Context::memory_budget_bytes`].
pub fn memory_budget_bytes(limit_mib: u32, concurrency: u32) -> u64 {
    let limit = u64::from(limit_mib);
    let usable = limit - RUNTIME_RESERVE_MIB.min(limit / 4);
    usable * 1024 * 1024 / u64::from(concurrency.max(1))
}

/// How the runtime hands a queue worker's items to a handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Batching {
    /// One call per item (the default). Message bodies are read as shoal
    /// chunks, S3 event notifications (also inside SNS) or raw items.
    PerItem,
    /// Messages as records, as a Lambda event source mapping hands them
    /// over: a message that is not a shoal chunk is one item whose body is
    /// the message body, untouched (an S3 notification in it stays a
    /// message). Items that are not object references and were received
    /// together go to [`Handler::call_batch`] up to `max` at a time, one
    /// attempt for the batch; object references from chunks still go one
    /// per call, as an S3 trigger sends one record per object.
    Records {
        /// The most items one call takes (at least 1).
        max: usize,
    },
}

/// One item of a [`Handler::call_batch`] call, with what its message says
/// about it.
#[derive(Debug, Clone)]
pub struct Record<T> {
    /// The item.
    pub item: Item<T>,
    /// Its attempt number (1: the first delivery).
    pub attempt: u32,
    /// When its message was sent, if the broker says.
    pub sent_at: Option<SystemTime>,
}

/// A batch handler: turns one item into one output.
///
/// Implementations must be cheap to share: the runtime wraps the handler in an
/// `Arc` and calls it concurrently. Build shared clients once, in the
/// constructor, and reuse them across calls.
pub trait Handler: Send + Sync + 'static {
    /// The item type; see [`Payload`] for what the runtime can decode.
    type Input: Payload;
    /// The output type; see [`Output`] for what the runtime can store.
    type Output: Output;

    /// Handles one item.
    fn call(
        &self,
        item: Item<Self::Input>,
        ctx: Context,
    ) -> impl Future<Output = Result<Self::Output, HandlerError>> + Send;

    /// How a queue worker hands this handler its items; see [`Batching`].
    fn batching(&self) -> Batching {
        Batching::PerItem
    }

    /// Handles several items in one invocation (under
    /// [`Batching::Records`]): one result per record, in order. A result
    /// missing from the answer fails its record. The default calls
    /// [`Handler::call`] for each record in turn.
    fn call_batch(
        &self,
        records: Vec<Record<Self::Input>>,
        ctx: Context,
    ) -> impl Future<Output = Vec<Result<Self::Output, HandlerError>>> + Send {
        async move {
            let mut results = Vec::with_capacity(records.len());
            for record in records {
                results.push(self.call(record.item, ctx.clone()).await);
            }
            results
        }
    }
}

/// A [`Handler`] made from a plain async function; see [`handler_fn`].
pub struct HandlerFn<F, I, O> {
    f: F,
    _types: PhantomData<fn(I) -> O>,
}

/// Wraps `async fn(Item<I>, Context) -> Result<O, HandlerError>` as a
/// [`Handler`].
pub fn handler_fn<F, Fut, I, O>(f: F) -> HandlerFn<F, I, O>
where
    F: Fn(Item<I>, Context) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<O, HandlerError>> + Send,
    I: Payload,
    O: Output,
{
    HandlerFn {
        f,
        _types: PhantomData,
    }
}

impl<F, Fut, I, O> Handler for HandlerFn<F, I, O>
where
    F: Fn(Item<I>, Context) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<O, HandlerError>> + Send,
    I: Payload,
    O: Output,
{
    type Input = I;
    type Output = O;

    fn call(
        &self,
        item: Item<I>,
        ctx: Context,
    ) -> impl Future<Output = Result<O, HandlerError>> + Send {
        (self.f)(item, ctx)
    }
}
