//! Queue counts, read once per queue per interval in one place and shared
//! by every job on that queue.
//!
//! Contract:
//! - A reconcile asks [`Backlogs::read`] for its queue's counts. A reading
//!   younger than the poller's period (the interval, or longer when the
//!   budget below stretches it) is answered from memory; an older one (or
//!   none) is made there and then, and kept. The job is recorded as a
//!   reader of the queue.
//! - The poller ([`poll_forever`]) reads every queue that has readers once
//!   per interval (skipping those a reconcile has just read) and wakes the
//!   readers of each queue whose counts changed. A job whose backlog stays
//!   the same is not reconciled for it: the cost grows with change, not
//!   with the number of jobs.
//! - At most `polls_per_second` reads are made (each read is a request
//!   the queue's owner may pay for). With more queues than the budget
//!   covers at the interval, a queue with a backlog (or unknown counts) is
//!   still due every interval, an idle one every `queues / budget`
//!   intervals; the reads go to the queues most past their due time, so
//!   busy queues are read sooner and idle ones are never starved.
//! - A job stops being a reader when it finishes or is deleted
//!   ([`Backlogs::forget`]), or when it has not read for [`FORGET_AFTER`];
//!   a queue without readers is no longer polled.
//! - Counts are shared only between jobs that reach the queue the same way:
//!   the same SQS URLs (one operator identity), or the same RabbitMQ
//!   broker, user and password ([`crate::amqp::Broker::identity`]).
//! - A failed poll is logged and wakes nobody; the reconciles, which read
//!   themselves once the reading is stale, report the error.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use kube::runtime::reflector::ObjectRef;
use tokio::sync::mpsc;

use super::Context;
use crate::backend::{Reading, WorkQueue};
use crate::crd::BatchJob;
use crate::error::Result;

/// How long a job stays a reader of its queue without reading it.
/// (Longer than [`crate::cadence::IDLE`] twice: an idle job reads at
/// least that often.)
pub const FORGET_AFTER: Duration = Duration::from_secs(660);

/// Most queues polled at the same time.
const POLL_CONCURRENCY: usize = 64;

/// One queue: how to read it, its last reading, and who reads it.
struct Entry {
    queue: Arc<dyn WorkQueue>,
    reading: Option<(Reading, Instant)>,
    /// When the poller last tried and failed: a failing queue waits its
    /// turn like the others instead of heading every tick.
    failed: Option<Instant>,
    /// The reading is known to be out of date (see
    /// [`Backlogs::invalidate`]); kept to compare the next one with.
    stale: bool,
    readers: HashMap<ObjectRef<BatchJob>, Instant>,
}

/// Every queue some job reads, by [`WorkQueue::key`].
pub struct Backlogs {
    interval: Duration,
    /// Most queues read per interval.
    budget: usize,
    entries: Mutex<HashMap<String, Entry>>,
    wake: mpsc::UnboundedSender<ObjectRef<BatchJob>>,
}

/// The jobs to reconcile because their queue's counts changed.
pub type Wakes = mpsc::UnboundedReceiver<ObjectRef<BatchJob>>;

impl Backlogs {
    /// Counts kept for `interval`, at most `polls_per_second` queue reads
    /// by the poller; the returned receiver yields the jobs whose queue
    /// changed (hand it to the controller).
    pub fn new(interval: Duration, polls_per_second: u32) -> (Self, Wakes) {
        let (wake, wakes) = mpsc::unbounded_channel();
        let per_interval = u128::from(polls_per_second.max(1)) * interval.as_millis() / 1000;
        let backlogs = Self {
            interval,
            budget: usize::try_from(per_interval).unwrap_or(usize::MAX).max(1),
            entries: Mutex::new(HashMap::new()),
            wake,
        };
        (backlogs, wakes)
    }

    /// How often each queue is read.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// The counts of `queue` for `job`, from memory when read within the
    /// interval, else read now.
    pub(super) async fn read(
        &self,
        queue: &Arc<dyn WorkQueue>,
        job: ObjectRef<BatchJob>,
    ) -> Result<Reading> {
        let key = queue.key();
        let now = Instant::now();
        if let Some(reading) = self.remembered(&key, queue, &job, now) {
            return Ok(reading);
        }
        let reading = queue.poll().await?;
        if let Ok(mut entries) = self.entries.lock() {
            let entry = entries.entry(key).or_insert_with(|| Entry {
                queue: queue.clone(),
                reading: None,
                failed: None,
                stale: false,
                readers: HashMap::new(),
            });
            entry.readers.insert(job.clone(), now);
            // The other jobs on the queue hear of a change read here too.
            self.record(entry, reading, Some(&job));
        }
        Ok(reading)
    }

    /// Keeps `reading` in `entry`; when it differs from the one before (a
    /// first reading wakes nobody: whoever made it decides from it), wakes
    /// the entry's readers but `except`. Returns how many were woken.
    fn record(
        &self,
        entry: &mut Entry,
        reading: Reading,
        except: Option<&ObjectRef<BatchJob>>,
    ) -> usize {
        let before = entry.reading.replace((reading, Instant::now()));
        entry.failed = None;
        entry.stale = false;
        if before.is_none_or(|(old, _)| old == reading) {
            return 0;
        }
        let mut woken = 0;
        for job in entry.readers.keys().filter(|j| Some(*j) != except) {
            // The controller gone means the process is stopping.
            let _ = self.wake.send(job.clone());
            woken += 1;
        }
        woken
    }

    /// The fresh reading of `key`, with `job` recorded as a reader
    /// (`None`: none, or too old).
    fn remembered(
        &self,
        key: &str,
        queue: &Arc<dyn WorkQueue>,
        job: &ObjectRef<BatchJob>,
        now: Instant,
    ) -> Option<Reading> {
        let mut entries = self.entries.lock().ok()?;
        // A reading as old as the poller's period for an idle queue is still
        // the poller's latest, not a stale one to read again here.
        let period = self.idle_every(entries.len());
        let entry = entries.get_mut(key)?;
        // The same key with other settings (a job's spec changed how the
        // queue is reached): read with the new ones.
        entry.queue = queue.clone();
        entry.readers.insert(job.clone(), now);
        let (reading, at) = entry.reading?;
        (!entry.stale && now.saturating_duration_since(at) < period).then_some(reading)
    }

    /// How often an idle queue is read with `queues` to read: every
    /// interval while the budget covers them all, else once per as many
    /// intervals as it takes the budget to go round.
    fn idle_every(&self, queues: usize) -> Duration {
        let rounds = u32::try_from(queues.div_ceil(self.budget)).unwrap_or(u32::MAX);
        self.interval.saturating_mul(rounds.max(1))
    }

    /// Marks the reading of `queue` out of date: the next read asks the
    /// server (after chunks were sent, or the queue was made again), and
    /// what it finds is compared with this one to wake the other jobs.
    pub(super) fn invalidate(&self, queue: &dyn WorkQueue) {
        if let Ok(mut entries) = self.entries.lock()
            && let Some(entry) = entries.get_mut(&queue.key())
        {
            entry.stale = true;
        }
    }

    /// `job` reads no queue any more (finished or deleted).
    pub fn forget(&self, job: &ObjectRef<BatchJob>) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.retain(|_, entry| {
                entry.readers.remove(job);
                !entry.readers.is_empty()
            });
        }
    }

    /// How many queues are polled.
    pub fn queues(&self) -> usize {
        self.entries.lock().map_or(0, |e| e.len())
    }

    /// The queues to poll now: those with readers and no reading from the
    /// last half interval, within the budget (the most past their due
    /// time first, see the module's contract). Readers silent for
    /// [`FORGET_AFTER`] and queues left without readers are dropped first.
    fn due(&self, now: Instant) -> Vec<(String, Arc<dyn WorkQueue>)> {
        let Ok(mut entries) = self.entries.lock() else {
            return Vec::new();
        };
        entries.retain(|_, entry| {
            entry
                .readers
                .retain(|_, read| now.saturating_duration_since(*read) < FORGET_AFTER);
            !entry.readers.is_empty()
        });
        let fresh = self.interval / 2;
        let idle_every = self.idle_every(entries.len());
        // (how far past its due time, due time, key, entry)
        let mut due: Vec<(f64, &String, &Entry)> = entries
            .iter()
            .filter_map(|(key, e)| {
                let Some((reading, at)) = e.reading.filter(|_| !e.stale) else {
                    return Some((f64::INFINITY, key, e));
                };
                let at = e.failed.map_or(at, |failed| failed.max(at));
                let age = now.saturating_duration_since(at);
                let idle = matches!(
                    reading,
                    Reading::Known(work, dead) if work.total() == 0 && dead.total() == 0
                );
                let every = if idle { idle_every } else { self.interval };
                (age >= fresh).then_some((age.as_secs_f64() - every.as_secs_f64(), key, e))
            })
            .collect();
        if due.len() > self.budget {
            due.sort_unstable_by(|a, b| b.0.total_cmp(&a.0));
            due.truncate(self.budget);
        }
        due.into_iter()
            .map(|(_, key, e)| (key.clone(), e.queue.clone()))
            .collect()
    }

    /// Keeps `reading` of `key`; wakes its readers when it differs from the
    /// one before (a first reading wakes nobody: the reconcile that
    /// registered the reader had its own).
    fn store(&self, key: &str, reading: Reading) -> usize {
        let Ok(mut entries) = self.entries.lock() else {
            return 0;
        };
        let Some(entry) = entries.get_mut(key) else {
            return 0;
        };
        self.record(entry, reading, None)
    }

    /// The poller could not read `key` now.
    fn failed(&self, key: &str) {
        if let Ok(mut entries) = self.entries.lock()
            && let Some(entry) = entries.get_mut(key)
        {
            entry.failed = Some(Instant::now());
        }
    }
}

/// Longest a poll by the poller may take: one slow queue server (a
/// tenant's broker that does not answer) holds up a tick at most this long.
const POLL_TIMEOUT: Duration = Duration::from_secs(2);

/// Reads `queue` (known as `key`), within [`POLL_TIMEOUT`].
async fn poll_one(key: String, queue: Arc<dyn WorkQueue>) -> (String, Result<Reading>) {
    let reading = match tokio::time::timeout(POLL_TIMEOUT, queue.poll()).await {
        Ok(reading) => reading,
        Err(_) => Err(crate::error::Error::Queue {
            queue: queue.url(),
            what: "reading the backlog",
            reason: format!("no answer in {} s", POLL_TIMEOUT.as_secs()),
        }),
    };
    (key, reading)
}

/// Polls every queue some job reads, once per interval, until the process
/// stops; wakes the readers of the queues whose counts changed.
pub async fn poll_forever(ctx: Arc<Context>) {
    let mut ticks = tokio::time::interval(ctx.backlogs.interval());
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        // Futures made up front: a stream adapter over a closure here
        // trips the compiler's `Send` inference for the spawned task.
        let polls: Vec<_> = ctx
            .backlogs
            .due(Instant::now())
            .into_iter()
            .map(|(key, queue)| poll_one(key, queue))
            .collect();
        let mut polls = futures_util::stream::iter(polls).buffer_unordered(POLL_CONCURRENCY);
        while let Some((key, reading)) = polls.next().await {
            match reading {
                Ok(reading) => {
                    ctx.backlogs.store(&key, reading);
                }
                Err(e) => {
                    ctx.backlogs.failed(&key);
                    tracing::debug!(error = %e, "polling a queue failed");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        reason = "test code: a panic is how a test reports failure"
    )]

    use super::*;
    use crate::backend::Backlog;
    use crate::backend::memory::MemoryQueue;

    fn queue(name: &str) -> Arc<dyn WorkQueue> {
        MemoryQueue::new(name)
    }

    fn backlogs_with(readers: &[(&str, &str)]) -> (Backlogs, Wakes) {
        let (backlogs, wakes) = Backlogs::new(Duration::from_secs(1), 2);
        let now = Instant::now();
        for (url, job) in readers {
            let q = queue(url);
            let mut entries = backlogs.entries.lock().unwrap();
            let entry = entries.entry(q.key()).or_insert_with(|| Entry {
                queue: q.clone(),
                reading: None,
                failed: None,
                stale: false,
                readers: HashMap::new(),
            });
            entry.readers.insert(ObjectRef::new(job).within("ns"), now);
        }
        (backlogs, wakes)
    }

    fn known(visible: i64) -> Reading {
        Reading::Known(
            Backlog {
                visible,
                in_flight: 0,
            },
            Backlog::default(),
        )
    }

    #[test]
    fn one_poll_per_queue_and_only_a_change_wakes_its_readers() {
        let (b, mut wakes) = backlogs_with(&[("q1", "a"), ("q1", "b"), ("q2", "c")]);
        let due = b.due(Instant::now());
        assert_eq!(due.len(), 2, "two queues, three jobs: two polls");
        assert_eq!(b.store(&queue("q1").key(), known(0)), 0, "first reading");
        assert_eq!(b.store(&queue("q1").key(), known(0)), 0, "no change");
        assert!(wakes.try_recv().is_err());
        assert_eq!(b.store(&queue("q1").key(), known(5)), 2, "a change");
        let mut woken = vec![
            wakes.try_recv().unwrap().name,
            wakes.try_recv().unwrap().name,
        ];
        woken.sort();
        assert_eq!(woken, ["a", "b"], "only q1's readers");
        assert!(wakes.try_recv().is_err());
        assert_eq!(b.store(&queue("q2").key(), Reading::Missing), 0);
        assert_eq!(b.store(&queue("q2").key(), known(0)), 1, "missing → known");
    }

    #[test]
    fn a_fresh_reading_is_not_polled_again_and_silent_readers_are_dropped() {
        let (b, _wakes) = backlogs_with(&[("q1", "a"), ("q2", "b")]);
        b.store(&queue("q1").key(), known(1));
        let due = b.due(Instant::now());
        assert_eq!(due.len(), 1, "q1 was just read");
        assert_eq!(due[0].0, queue("q2").key());
        let later = Instant::now() + FORGET_AFTER + Duration::from_secs(1);
        assert!(b.due(later).is_empty(), "nobody read for too long");
        assert_eq!(b.queues(), 0);
    }

    #[test]
    fn past_the_budget_queues_with_a_backlog_go_first_then_the_longest_unread() {
        let (b, _wakes) = backlogs_with(&[("idle", "a"), ("busy", "b"), ("never", "c")]);
        b.store(&queue("idle").key(), known(0));
        b.store(&queue("busy").key(), known(3));
        let later = Instant::now() + Duration::from_secs(5);
        let mut due: Vec<String> = b.due(later).into_iter().map(|(k, _)| k).collect();
        due.sort();
        let mut expected = vec![queue("busy").key(), queue("never").key()];
        expected.sort();
        assert_eq!(due, expected, "a budget of 2: the idle queue waits");
    }

    #[test]
    fn busy_queues_past_the_budget_never_starve_an_idle_one() {
        let names: Vec<String> = (0..6).map(|n| format!("busy{n}")).collect();
        let mut readers: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "x")).collect();
        readers.push(("idle", "y"));
        let (b, _wakes) = backlogs_with(&readers);
        // Budget 2 a tick, six busy queues always due, one idle queue.
        for name in &names {
            b.store(&queue(name).key(), known(1));
        }
        b.store(&queue("idle").key(), known(0));
        let mut polled_idle = false;
        for tick in 1..=12u64 {
            let now = Instant::now() + Duration::from_secs(tick);
            for (key, _) in b.due(now) {
                if let Some(entry) = b.entries.lock().unwrap().get_mut(&key) {
                    entry.reading = entry.reading.map(|(r, _)| (r, now));
                }
                polled_idle |= key == queue("idle").key();
            }
        }
        assert!(polled_idle, "the idle queue was read within 12 ticks");
    }

    #[test]
    fn past_the_budget_a_reconcile_takes_the_pollers_reading_as_it_is() {
        let (b, _wakes) = backlogs_with(&[("q1", "a"), ("q2", "b"), ("q3", "c")]);
        b.store(&queue("q1").key(), known(4));
        let job = ObjectRef::new("a").within("ns");
        // Budget 2 a second, 3 queues: each is read every 2 s.
        let later = Instant::now() + Duration::from_millis(1500);
        assert_eq!(
            b.remembered(&queue("q1").key(), &queue("q1"), &job, later),
            Some(known(4))
        );
        let much_later = Instant::now() + Duration::from_secs(3);
        assert_eq!(
            b.remembered(&queue("q1").key(), &queue("q1"), &job, much_later),
            None
        );
    }

    #[tokio::test]
    async fn a_reconciles_own_read_wakes_the_other_jobs_and_invalidate_reads_again() {
        let (b, mut wakes) = Backlogs::new(Duration::from_secs(60), 100);
        let memory = MemoryQueue::new("shared");
        let q: Arc<dyn WorkQueue> = memory.clone();
        let (a, c) = (
            ObjectRef::new("a").within("ns"),
            ObjectRef::new("c").within("ns"),
        );
        assert_eq!(b.read(&q, a.clone()).await.unwrap(), known(0));
        assert_eq!(
            b.read(&q, c.clone()).await.unwrap(),
            known(0),
            "from memory"
        );
        memory.set_counts(7, 0, 0);
        assert_eq!(
            b.read(&q, a.clone()).await.unwrap(),
            known(0),
            "fresh for a minute: not read again"
        );
        b.invalidate(q.as_ref());
        assert_eq!(b.read(&q, a.clone()).await.unwrap(), known(7), "read again");
        assert_eq!(wakes.try_recv().unwrap(), c, "the other job hears of it");
        assert!(wakes.try_recv().is_err(), "not the one that read");
    }

    #[test]
    fn a_queue_that_cannot_be_read_waits_its_turn() {
        let (b, _wakes) = backlogs_with(&[("dead", "a"), ("q1", "b"), ("q2", "c")]);
        for name in ["dead", "q1", "q2"] {
            b.store(&queue(name).key(), known(0));
        }
        // Budget 2, three idle queues, all as old: the failed one goes last.
        let later = Instant::now() + Duration::from_secs(3);
        b.failed(&queue("dead").key());
        let due: Vec<String> = b.due(later).into_iter().map(|(k, _)| k).collect();
        assert!(!due.contains(&queue("dead").key()), "{due:?}");
    }

    #[test]
    fn forgetting_a_job_stops_polling_a_queue_only_it_read() {
        let (b, _wakes) = backlogs_with(&[("q1", "a"), ("q1", "b"), ("q2", "c")]);
        b.forget(&ObjectRef::new("c").within("ns"));
        b.forget(&ObjectRef::new("a").within("ns"));
        assert_eq!(b.queues(), 1);
        assert_eq!(b.due(Instant::now())[0].0, queue("q1").key());
    }
}
