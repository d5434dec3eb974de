//! A connector task: one thread that polls its consumer, decodes each record, hands it to the
//! sink, and commits the offsets of what the sink has written (docs/design.md).
//!
//! The thread owns everything; rebalance callbacks run on it too (inside `poll`), so they can
//! finish in-flight writes and commit before partitions move. A task stops on shutdown (flush,
//! commit, exit) or fails on a record it cannot handle: it then writes what came before, commits
//! up to (never past) that record, and reports FAILED with the reason.

use std::collections::{BTreeSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::Message;
use rdkafka::consumer::CommitMode;
use rdkafka::consumer::Consumer as _;
use rdkafka::message::OwnedMessage;
use serde::Serialize;
use tokio::runtime::Handle;
use tracing::{debug, error, info, warn};

use crate::connector::errors::Stage;
use crate::connector::{ConnectorSpec, SinkSpec};
use crate::dead_letter::{self, DeadLetterQueue};
use crate::decode::{Decoder, Row};
use crate::metrics::{Metrics, now_ms};
use crate::settings::Settings;
use crate::sink::druid::{self, DruidSink};
use crate::sink::elasticsearch::{ElasticsearchSink, stall};
use crate::sink::{Ack, Outcome, PassedKey, Rejected, Sink, SinkError, SinkRecord, TopicWait};
use crate::source::barriers::Barriers;
use crate::source::headers::Record;
use crate::source::offsets::Offsets;
use crate::source::pause::{self, Paused};
use crate::source::{self, Consumer, RebalanceHandler};

/// How long one consumer poll waits when there is nothing else to do.
const POLL: Duration = Duration::from_millis(50);
/// Records taken from the consumer between two looks at the sink (acks, linger, commits).
const BURST: usize = 256;

/// Records already handled, freed together rather than each as soon as it is handled.
///
/// librdkafka allocates every message with glibc's `calloc` on its fetch thread, and the
/// task thread frees it: two threads taking one glibc arena's lock by turns, record after
/// record, while both run. glibc does not spin on that lock: each collision is a `futex`
/// wait on one side and a wake on the other, which counting instructions does not show. In
/// the end-to-end benchmark without schema (474 784 records, the worker's system calls
/// traced) that was 94 000 `futex` calls, nearly all on that lock; freed in runs, 45 000, and
/// the worker's CPU (untraced, six alternated runs each) 1.00–1.16 s → 0.84–0.94 s
/// (docs/performance-log.md). A handled record is never read again; held, it only keeps its
/// memory (at most [`Handled::BYTES`] of keys and payloads) a little longer.
struct Handled<M> {
    messages: Vec<M>,
    bytes: usize,
}

impl<M: Message> Handled<M> {
    const RECORDS: usize = 1024;
    const BYTES: usize = 1 << 20;

    fn new() -> Self {
        Handled {
            messages: Vec::with_capacity(Self::RECORDS),
            bytes: 0,
        }
    }

    /// Keeps `m` until the run is full.
    fn keep(&mut self, m: M) {
        self.bytes += m.payload().map_or(0, <[u8]>::len) + m.key().map_or(0, <[u8]>::len);
        self.messages.push(m);
        if self.messages.len() >= Self::RECORDS || self.bytes >= Self::BYTES {
            self.free();
        }
    }

    /// Frees every record kept.
    fn free(&mut self) {
        self.messages.clear();
        self.bytes = 0;
    }
}

/// How long a full sink (`Sink::capacity`) holds the consumer before it is paused. Holding
/// takes no records and keeps librdkafka's prefetch; pausing purges it, and the refetch after
/// every resume left bulk requests half full: a task fed a real Elasticsearch reached 40% of
/// the rate it reaches now (docs/performance-log.md). A pause, which keeps the consumer in its
/// group while nothing is read, is for a sink that stays full (Elasticsearch down).
const HOLD: Duration = Duration::from_secs(1);
/// Records a task remembers (about 16 bytes each), per record its sink holds
/// (`Sink::capacity`: `max.buffered.records`), before it stops reading the partitions they pile
/// up in (`source::pause`): behind a record that cannot be committed yet (its dead-letter copy
/// refused, a snapshot's end waiting for the other partitions), every record read after it is
/// remembered until it is.
const TRACKED_PER_HELD: usize = 64;
/// The most records a task remembers before it reads less, whatever its sink holds: 16 MiB.
const MAX_TRACKED: usize = 1 << 20;
/// The first and the longest wait before a task starts over from its committed offsets.
const REWIND_BACKOFF: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(30));
/// First and largest delay between two attempts at a stalled record.
/// The first delay before a stalled record is tried again; the longest is
/// `errors.retry.delay.max.ms`.
const STALL_FIRST_RETRY: Duration = Duration::from_millis(200);

/// A task's state, as Kafka Connect reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TaskStatus {
    pub id: usize,
    /// `UNASSIGNED`, `RUNNING`, `PAUSED`, `FAILED`, or `STOPPED` once it has exited.
    pub state: &'static str,
    pub worker_id: String,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace: Option<String>,
    /// Why a running task is not making progress (Elasticsearch or the schema registry failing).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trouble: Option<String>,
    /// How far behind it is, as of the worker's last 30-second report.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,
}

/// A task's progress through its backlog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Progress {
    /// Records of its partitions not yet committed.
    pub lag: u64,
    /// Records consumed per second since the previous report.
    pub records_per_second: u64,
    /// When the lag would be gone at that rate; absent when caught up or not moving.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eta_seconds: Option<u64>,
    /// 99th percentile of cdc-sink's share of freshness (Kafka timestamp → acknowledged), in
    /// milliseconds, over the records acknowledged since the previous report (as the rate is):
    /// a backlog caught up at start no longer shows once caught up. Absent without samples or
    /// beyond 10 minutes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub freshness_p99_ms: Option<u64>,
}

/// What a connector's tasks share with the worker that runs them.
#[derive(Debug, Default)]
pub struct Control {
    /// Paused by the user (`PUT /connectors/{n}/pause`): the tasks keep their partitions and
    /// stay in the group, consume nothing, and commit what they wrote.
    pub paused: AtomicBool,
    /// The topics the tasks were assigned partitions of (`GET /connectors/{n}/topics`).
    pub topics: Mutex<BTreeSet<String>>,
}

/// A running task, seen from the worker.
pub struct TaskHandle {
    pub status: Arc<Mutex<TaskStatus>>,
    stop: Arc<AtomicBool>,
    /// None for a task that could not start.
    thread: Option<JoinHandle<()>>,
}

impl TaskHandle {
    /// Asks the task to finish its writes, commit and leave its group.
    pub fn signal_stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// A task that could not start: FAILED with `why`, and nothing running.
    pub fn failed(id: usize, worker_id: String, why: String) -> TaskHandle {
        TaskHandle {
            status: Arc::new(Mutex::new(TaskStatus {
                id,
                state: "FAILED",
                worker_id,
                trace: Some(why),
                trouble: None,
                progress: None,
            })),
            stop: Arc::new(AtomicBool::new(true)),
            thread: None,
        }
    }

    /// What stands in for task `id` while the task it restarts finishes its writes: RESTARTING,
    /// and nothing running.
    pub fn restarting(id: usize, worker_id: String) -> TaskHandle {
        TaskHandle {
            status: Arc::new(Mutex::new(TaskStatus {
                id,
                state: "RESTARTING",
                worker_id,
                trace: None,
                trouble: None,
                progress: None,
            })),
            stop: Arc::new(AtomicBool::new(true)),
            thread: None,
        }
    }

    /// Whether this is what stands in for a task being restarted ([`TaskHandle::restarting`]).
    pub fn is_restarting(&self) -> bool {
        self.thread.is_none() && self.status().state == "RESTARTING"
    }

    /// Waits for the task's thread to exit (after [`TaskHandle::signal_stop`], or once failed).
    pub fn join(self) {
        if self.thread.is_some_and(|t| t.join().is_err()) {
            error!("a task thread panicked");
        }
    }

    pub fn status(&self) -> TaskStatus {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// What the task thread and its rebalance callbacks share.
struct State {
    offsets: Offsets,
    sink: Box<dyn Sink>,
    /// What the consumer was last told to read.
    paused: Paused,
    /// A failure found inside a callback, reported by the poll loop.
    failure: Option<End>,
    /// Records waiting for something decoding needs (the schema registry), in read order.
    stall: Option<Stall>,
    /// The task has finished its final drain and commit: a revocation while the consumer
    /// closes has nothing left to write or commit.
    closed: bool,
    /// Records whose sink work waits for their whole topic to be written (`Sink::awaits_topic`).
    barriers: Barriers,
    metrics: Arc<Metrics>,
    /// Where tolerated records go (`errors.deadletterqueue.topic.name`).
    dlq: Option<DeadLetterQueue>,
    /// Records the sink rejected whose reading again for the dead-letter queue a drain's
    /// deadline cut short: read at the next `collect` if their partitions stay.
    rejected_later: Vec<Rejected>,
    /// A dropped record was announced in this run's log.
    warned_drop: bool,
    spec: Arc<ConnectorSpec>,
}

impl State {
    /// A task's state as it starts: nothing read, nothing paused, nothing failed.
    fn new(
        spec: Arc<ConnectorSpec>,
        sink: Box<dyn Sink>,
        metrics: Arc<Metrics>,
        dlq: Option<DeadLetterQueue>,
    ) -> State {
        State {
            offsets: Offsets::default(),
            sink,
            paused: Paused::No,
            failure: None,
            stall: None,
            closed: false,
            barriers: Barriers::default(),
            metrics,
            dlq,
            rejected_later: Vec::new(),
            warned_drop: false,
            spec,
        }
    }
}

/// Records that could not be decoded yet, not for what they are but because the schema registry
/// is unavailable: retried in order, with backoff, while the consumer is paused. Nothing after
/// them is processed and nothing is skipped.
struct Stall {
    /// Each with its leader epoch (`source::leader_epoch`), which a detached record loses.
    queue: VecDeque<(OwnedMessage, Option<i32>)>,
    attempt: u32,
    next: Instant,
    why: String,
    /// When the first record in the queue first failed (`errors.retry.timeout`).
    since: Instant,
}

/// Why a record could not be handled.
enum Failure {
    /// The record (or the config) is wrong: the task fails.
    Fatal(String),
    /// Something needed is unavailable: try the record again later.
    Wait(String),
    /// The sink discarded what it wrote since the last commit: the task starts over from the
    /// committed offsets.
    Rewind(String),
}

/// Why a record was not handed to the sink.
enum Refused {
    Failure(Failure),
    /// The record cannot be decoded or mapped: the task fails, unless the connector tolerates
    /// it (`errors.tolerance`, `drop.invalid.message`). `ack`: the record's, once tracked.
    Record {
        stage: Stage,
        why: String,
        ack: Option<Ack>,
        read: Read,
    },
}

/// A refused record as far as it was read, for what the sink remembers across it
/// (`Sink::passed_over`).
enum Read {
    /// Its key could not be decoded.
    KeyUnread,
    /// Its key; the record may be a delete event (its value unread, or read as one or as a
    /// tombstone).
    Key(Option<Row>),
    /// Read whole, and no delete event: passing it over changes nothing the sink remembers.
    NotADelete,
}

impl Read {
    fn whole(key: &Option<Row>, value: &crate::decode::Value) -> Read {
        use crate::decode::{Op, Value};
        match value {
            Value::Change(ev) if ev.op != Op::Delete => Read::NotADelete,
            Value::Skipped(_) => Read::NotADelete,
            Value::Change(_) | Value::Tombstone => Read::Key(key.clone()),
        }
    }
}

impl From<SinkError> for Failure {
    fn from(e: SinkError) -> Failure {
        match e {
            SinkError::Rewind(m) => Failure::Rewind(m),
            e => Failure::Fatal(e.to_string()),
        }
    }
}

impl From<End> for Failure {
    fn from(e: End) -> Failure {
        match e {
            End::Failed(m) => Failure::Fatal(m),
            End::Rewind(m) => Failure::Rewind(m),
        }
    }
}

/// How a run of a task ended, when not by being stopped.
#[derive(Debug)]
enum End {
    /// The task fails (shown as FAILED with this trace) until restarted.
    Failed(String),
    /// Nothing past the committed offsets is written: the task runs again from there, after a
    /// backoff, with a new consumer and sink (a transaction aborted, a row not delivered).
    Rewind(String),
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            End::Failed(m) | End::Rewind(m) => f.write_str(m),
        }
    }
}

impl From<String> for End {
    fn from(e: String) -> End {
        End::Failed(e)
    }
}

impl From<SinkError> for End {
    fn from(e: SinkError) -> End {
        match e {
            SinkError::Rewind(m) => End::Rewind(m),
            e => End::Failed(e.to_string()),
        }
    }
}

/// Closes the task, whose consumer is about to close: that close revokes the partitions, and
/// the revocation must not drain again. The sink and the dead-letter producer end here, on the
/// task's thread; the consumer's close may go on after the task has ended (`source::close`),
/// and the revocation it serves touches neither.
fn let_go(mut st: MutexGuard<'_, State>) {
    st.closed = true;
    st.metrics.forget_all();
    let sink = std::mem::replace(&mut st.sink, Box::new(crate::sink::Ended));
    let dlq = st.dlq.take();
    drop(st);
    drop(sink);
    drop(dlq);
}

/// What a task unwinding from a panic (a bug) does before its consumer is dropped. Dropping
/// the consumer closes it, and the close leaves the group: the partitions go to their next
/// owner at once. Writes of them still retrying (Elasticsearch answering 429 or 503) must not
/// land after that owner's, so they are given up first, and a bulk request already sent is
/// waited for, as when partitions are lost (`Sink::abandon`); then the sink is dropped, and
/// nothing of the task writes any more. Nothing is committed: the failure is not the records'.
fn ended_by_panic(handler: &Handler) {
    let mut st = handler.lock();
    let what = st.sink.abandon();
    error!(task = %handler.label, "the task is ending on a panic, before its consumer closes: {what}");
    let_go(st);
}

/// Calls its closure when dropped while the thread unwinds from a panic.
struct OnUnwind<F: FnMut()>(F);

impl<F: FnMut()> Drop for OnUnwind<F> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            (self.0)();
        }
    }
}

struct Handler {
    state: Mutex<State>,
    flush_timeout: Duration,
    label: String,
    control: Arc<Control>,
}

impl Handler {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock is a bug; keep going with the state as it is.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The task must start over from the committed offsets (`why`): its sink gives up its
    /// unfinished writes now, inside the rebalance callback, not when it is dropped after the
    /// consumer has closed (which can take seconds, while a write retrying behind Elasticsearch
    /// coming back would land after the next owner's). A failure recorded before stays: a task
    /// that failed stays failed.
    fn give_up(&self, st: &mut State, why: String) {
        let what = st.sink.abandon();
        if st.failure.is_none() {
            warn!(task = %self.label, "{why}: {what}; starting over from the committed offsets");
            st.failure = Some(End::Rewind(why));
        } else {
            warn!(task = %self.label, "{why}: {what}");
        }
    }
}

impl RebalanceHandler for Handler {
    fn assigned(&self, consumer: &Consumer<Self>, partitions: &[(String, i32)]) {
        let mut st = self.lock();
        // Served by a close that may go on after the task has ended (`source::close`): the
        // consumer reads nothing more, and what it shares with a new task is left alone.
        if st.closed {
            return;
        }
        st.metrics.rebalance("assigned");
        for (t, p) in partitions {
            st.offsets.assign(t, *p);
        }
        if let Ok(mut topics) = self.control.topics.lock() {
            topics.extend(partitions.iter().map(|(t, _)| t.clone()));
        }
        // New partitions are read unless the consumer reads nothing now: none has anything
        // piled up yet.
        st.paused.forget(partitions);
        pause::assigned(consumer, partitions, &st.paused);
    }

    fn revoking(&self, consumer: &Consumer<Self>, partitions: &[(String, i32)], lost: bool) {
        let mut st = self.lock();
        st.metrics.rebalance(if lost { "lost" } else { "revoked" });
        // A record waiting for its topic leaves with its partition: whoever reads it next
        // does the work.
        for ack in st.barriers.revoke(partitions) {
            st.sink.topic_caught_up(ack, TopicWait::Revoked);
        }
        st.paused.forget(partitions);
        let done = |st: &State| {
            partitions
                .iter()
                .all(|(t, p)| st.offsets.in_flight_of(t, *p) == 0)
        };
        // Records on their way to the dead-letter queue, or whose reading again for it the
        // drain left for later (`rejected_later`), are no writes of the sink's: their next owner
        // copies them again.
        let unfinished = |st: &State| {
            st.sink.pending() > 0
                && partitions.iter().any(|(t, p)| {
                    let of = |ack| st.offsets.is_of(ack, t, *p);
                    let later = st.rejected_later.iter().filter(|r| of(r.ack)).count();
                    let copies = st.dlq.as_ref().map_or(0, |d| d.pending_of(of));
                    st.offsets.in_flight_of(t, *p) > later + copies
                })
        };
        // Writes of these partitions that are not finished must not land after the next
        // owner's: an unversioned write, or two changes sharing a version, would undo the newer
        // state; a delete forgotten after `index.gc_deletes` would let an older write bring a
        // document back. The sink gives them up (`give_up`) and the task starts over from the
        // committed offsets; if it had failed already, it stays failed.
        let mut gave_up = false;
        if lost && !st.closed {
            // The group moved on without this task. A sink that commits offsets in its
            // transaction holds rows of these partitions in it, which must never be committed.
            if st.sink.commits_offsets() {
                self.give_up(
                    &mut st,
                    "partitions lost while their rows were in an open transaction".into(),
                );
                gave_up = true;
            } else if unfinished(&st) {
                self.give_up(
                    &mut st,
                    "partitions lost (the group moved on without this task) while writes of them were unfinished".into(),
                );
                gave_up = true;
            }
        }
        if !lost && !st.closed {
            let failed_before = st.failure.is_some();
            // Writes held after the process stood still wait for a poll to return, and this
            // callback runs inside one: waiting for them would only run out flush.timeout.ms,
            // and hold up the group's rebalance as long. What is acknowledged already is taken.
            let held_before = held(&st);
            let timeout = if held_before {
                Duration::ZERO
            } else {
                self.flush_timeout
            };
            if !failed_before && let Err(e) = drain(&mut st, timeout, Some(partitions), done) {
                st.failure = Some(e);
            }
            if unfinished(&st) {
                // Still queued or retrying after `flush.timeout.ms` (Elasticsearch down), held,
                // or left so by a failure, which would otherwise have them retried while the
                // task finishes.
                let why = match (st.failure.is_some(), held_before || held(&st)) {
                    (true, _) => "writes of revoked partitions unfinished when the task failed".into(),
                    (false, true) => "writes of revoked partitions held since the process stood still (they would wait for this very poll)".into(),
                    (false, false) => format!(
                        "writes of revoked partitions not finished within flush.timeout.ms ({} ms)",
                        self.flush_timeout.as_millis()
                    ),
                };
                self.give_up(&mut st, why);
                gave_up = true;
            }
            // What is written of the leaving partitions is committed, unless the commit is a
            // transaction the sink has just given up.
            let mut transaction_given_up = gave_up && st.sink.commits_offsets();
            if failed_before && st.sink.commits_offsets() && !transaction_given_up {
                // Not committed here (the task failed), the transaction would be by the
                // failing task's last commit, with these partitions' rows and without their
                // offsets: their next owner would write those rows again.
                self.give_up(
                    &mut st,
                    "the transaction holds rows of revoked partitions and the task failed".into(),
                );
                transaction_given_up = true;
            }
            if !failed_before && !transaction_given_up {
                skip_undelivered(consumer, &mut st);
                let marks = st.offsets.watermarks(Some(partitions));
                match commit(
                    consumer,
                    &mut st,
                    marks,
                    CommitMode::Sync,
                    self.flush_timeout,
                ) {
                    Ok(()) => {}
                    Err(Failure::Fatal(e)) => {
                        let sink_commits = st.sink.commits_offsets();
                        st.failure.get_or_insert(End::Failed(e.clone()));
                        if sink_commits {
                            // As when the commit must wait (`Failure::Wait`): the rows of the
                            // leaving partitions must not be committed later, by the failing
                            // task's last commit.
                            self.give_up(&mut st, format!(
                                "the transaction could not be committed before its partitions were revoked: {e}"
                            ));
                        }
                    }
                    Err(Failure::Rewind(e)) => self.give_up(&mut st, e),
                    Err(Failure::Wait(e)) if st.sink.commits_offsets() => {
                        // The transaction holds rows of partitions that leave now: it must not
                        // commit later under another owner's feet.
                        self.give_up(&mut st, format!(
                            "the transaction could not be committed before its partitions were revoked: {e}"
                        ));
                    }
                    Err(Failure::Wait(e)) => {
                        warn!(task = %self.label, "commit on revocation failed: {e}");
                    }
                }
            }
        }
        for (t, p) in partitions {
            st.offsets.revoke(t, *p);
            // A closed task's were forgotten as it ended: this revocation may come from a
            // close that goes on after a new task of the same id has taken them again.
            if !st.closed {
                st.metrics.forget_partition(t, *p);
            }
        }
        // Their copies on the way to the dead-letter queue are the new owner's to make.
        let st = &mut *st;
        if let Some(dlq) = st.dlq.as_mut() {
            dlq.forget(|ack| st.offsets.counts(ack));
        }
        st.rejected_later.retain(|r| st.offsets.counts(r.ack));
        // Stalled records of these partitions are the new owner's now.
        if let Some(stall) = st.stall.as_mut() {
            stall.queue.retain(|(m, _)| {
                !partitions
                    .iter()
                    .any(|(t, p)| t == m.topic() && *p == m.partition())
            });
            if stall.queue.is_empty() {
                st.stall = None;
            }
        }
    }

    fn offset_reset(&self, topic: &str, partition: i32, at: Option<i64>, message: &str) {
        self.lock().offsets.reset(topic, partition, at, message);
    }

    fn commit_failed(&self, offsets: &[(String, i32, i64)]) {
        self.lock().offsets.commit_failed(offsets);
    }

    fn commit_confirmed(&self, offsets: &[(String, i32, i64)]) {
        let st = self.lock();
        if st.closed {
            return;
        }
        for (t, p, o) in offsets {
            // Only partitions this task holds: a revoked one's series are gone.
            if st.offsets.committed_of(t, *p).is_some() {
                st.metrics.partition(t, *p, Some(*o), None);
            }
        }
    }

    fn partition_ends(&self, ends: &[source::PartitionEnd]) {
        let st = self.lock();
        // A closed task's series are gone, and a new task of the same id may have them again.
        if st.closed {
            return;
        }
        for e in ends {
            // Only partitions this task holds: a revoked one's series are gone.
            if let Some(ours) = st.offsets.committed_of(&e.topic, e.partition) {
                // The consumer's commits are the offsets librdkafka knows confirmed (`ours` is
                // what was sent); a transaction's are `ours`, confirmed when it committed.
                let committed = if st.sink.commits_offsets() {
                    ours.or(e.committed)
                } else {
                    e.committed
                };
                st.metrics
                    .partition(&e.topic, e.partition, committed, Some(e.end));
            }
        }
    }
}

/// Commits `marks` through the consumer; or, when the sink commits offsets with its writes (a
/// transaction), through the sink, once every write in flight is acknowledged — then the
/// offsets of every partition are committed, since the transaction holds rows of all of them.
/// `Fatal`: the transaction failed and the task must stop; `Wait`: not committed this time.
fn commit<H: RebalanceHandler>(
    consumer: &Consumer<H>,
    st: &mut State,
    marks: Vec<(Arc<str>, i32, i64)>,
    mode: CommitMode,
    flush_timeout: Duration,
) -> Result<(), Failure> {
    if !st.sink.commits_offsets() {
        source::commit(consumer, &marks, mode).map_err(|e| Failure::Wait(e.to_string()))?;
        match mode {
            CommitMode::Sync => committed(st, &marks),
            // Sent, not confirmed: Kafka's answer comes with a later poll (`commit_confirmed`,
            // `commit_failed`).
            CommitMode::Async => st.offsets.committed(&marks),
        }
        return Ok(());
    }
    // Copies on their way to the dead-letter queue too: the transaction holds rows of records
    // after them, which must not commit while the offsets stop before them.
    drain(st, flush_timeout, None, |st| pending(st) == 0)?;
    if pending(st) > 0 {
        return Err(Failure::Wait(format!(
            "{} writes still in flight: the transaction is committed later",
            pending(st)
        )));
    }
    let marks = st.offsets.watermarks(None);
    let group = consumer
        .group_metadata()
        .ok_or_else(|| Failure::Fatal("the consumer has no group metadata".into()))?;
    st.sink.commit_offsets(&marks, &group)?;
    committed(st, &marks);
    Ok(())
}

/// Notes offsets Kafka confirmed committed, in the watermarks and the metrics.
fn committed(st: &mut State, marks: &[(Arc<str>, i32, i64)]) {
    st.offsets.committed(marks);
    for (t, p, o) in marks {
        st.metrics.partition(t, *p, Some(*o), None);
    }
}

/// Sends everything buffered and collects acks until `done` or `timeout`. Records the sink
/// rejected are read again for the dead-letter queue until then, only those of `only` when it
/// is given (a revocation's partitions).
fn drain(
    st: &mut State,
    timeout: Duration,
    only: Option<&[(String, i32)]>,
    done: impl Fn(&State) -> bool,
) -> Result<(), End> {
    let deadline = Instant::now() + timeout;
    let reread = Some(Reread {
        until: deadline,
        only,
    });
    st.sink.flush();
    // At least once: acks already reported are taken even when `done` holds from the start.
    collect(st, Duration::ZERO, reread)?;
    while !done(st) && Instant::now() < deadline {
        let left = deadline.saturating_duration_since(Instant::now());
        collect(st, left.min(Duration::from_millis(100)), reread)?;
        if pending(st) == 0 && !done(st) {
            // Nothing left in the sink: what remains is a record that never reached it.
            break;
        }
        if held(st) {
            // Writes held since the process stood still wait for a poll of the consumer, and
            // whoever drains polls nothing: its caller gives them up.
            break;
        }
    }
    Ok(())
}

/// Whether the sink has writes held since the process stood still: they wait for a poll of the
/// consumer (copies on their way to the dead-letter queue do not).
fn held(st: &State) -> bool {
    st.sink.pending() > 0 && st.sink.held()
}

/// Passes the offsets the consumer never handed out (`source::skip_undelivered`), unless records
/// wait for the schema registry: those were polled but are not tracked yet.
fn skip_undelivered<H: RebalanceHandler>(consumer: &Consumer<H>, st: &mut State) {
    if st.stall.is_none() {
        source::skip_undelivered(consumer, &mut st.offsets);
    }
}

/// How many records a task remembers before it reads less, for a sink of `capacity`.
fn tracked_bound(capacity: usize) -> usize {
    capacity.saturating_mul(TRACKED_PER_HELD).min(MAX_TRACKED)
}

/// The partitions to stop reading while the task remembers too many records, for a sink of
/// `capacity`, when it stopped reading as `was` says: those where records pile up
/// (`Offsets::piling_up`). One stopped stays so until what it remembers is down to half the
/// threshold (no pause and resume, and refetch, at every record), not until the whole task's
/// is: records pile up for a while behind a slow write in a partition that flows (one bulk
/// lane retrying while the others go on), and a snapshot's end may be waiting for that
/// partition.
fn stop_reading(was: &Paused, offsets: &Offsets, capacity: usize) -> Vec<(String, i32)> {
    let pile = capacity + BURST;
    let mut these: Vec<(String, i32)> = match was {
        Paused::These(these) => these
            .iter()
            .filter(|(t, p)| offsets.remembered_of(t, *p) > pile / 2)
            .cloned()
            .collect(),
        _ => Vec::new(),
    };
    for tp in offsets.piling_up(pile, tracked_bound(capacity) / 2) {
        if !these.contains(&tp) {
            these.push(tp);
        }
    }
    these
}

/// Why the consumer reads less than its whole assignment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pause {
    /// It reads everything.
    No,
    /// Paused by the user, a record waiting, the sink full for a while: it reads nothing.
    Full,
    /// Too many records remembered: it reads all but the partitions they pile up in.
    Remembering,
}

/// Whether the consumer reads less: `now` (paused by the user, a record waiting, the sink full
/// for a while), or too many records remembered. A consumer that reads nothing goes on so
/// until the sink's `pending` writes are down to half its capacity; one that reads less, until
/// the records remembered are down to half their bound.
fn must_pause(
    now: bool,
    paused: &Paused,
    (pending, capacity): (usize, usize),
    tracked: usize,
) -> Pause {
    let bound = tracked_bound(capacity);
    if now || (paused.all() && pending > capacity / 2) {
        Pause::Full
    } else if tracked > bound || (*paused != Paused::No && tracked > bound / 2) {
        Pause::Remembering
    } else {
        Pause::No
    }
}

/// Writes in flight: in the sink, copies on their way to the dead-letter queue, and rejected
/// records whose copy waits for them to be read again.
fn pending(st: &State) -> usize {
    st.sink.pending()
        + st.dlq.as_ref().map_or(0, DeadLetterQueue::pending)
        + st.rejected_later.len()
}

/// How far a drain's [`collect`] reads records the sink rejected again for the dead-letter
/// queue: until its deadline, and only those of `only` when it is given (a revocation's
/// partitions; the others wait for the task's next `collect`).
#[derive(Clone, Copy)]
struct Reread<'a> {
    until: Instant,
    only: Option<&'a [(String, i32)]>,
}

/// Takes the acks of what the sink wrote (waiting up to `wait` for some) and of copies the
/// dead-letter queue wrote; records the sink rejected are copied to the queue, read again
/// from Kafka, as far as a drain's `reread` allows: what it does not read waits for the next
/// call.
fn collect(st: &mut State, wait: Duration, reread: Option<Reread<'_>>) -> Result<(), End> {
    // The sink waits only while it has writes out; with none, the wait is the dead-letter
    // queue's, or a drain waiting for its copies alone would spin.
    let sink_waits = st.sink.pending() > 0;
    for a in st.sink.poll(wait)? {
        st.offsets.ack(a);
    }
    let rejected = st.sink.take_rejected();
    if !rejected.is_empty() || !st.rejected_later.is_empty() {
        let spec = st.spec.clone();
        let class_name = class_name(&spec, Stage::TaskPut);
        if spec.errors.log {
            for r in &rejected {
                error!(connector = %spec.name, stage = Stage::TaskPut.name(), class = class_name, "error tolerated (sent to the dead-letter queue), where the consumed record is {{topic={}, partition={}, offset={}}}: {}", r.topic, r.partition, r.offset, r.reason);
            }
        }
        // (Those of partitions revoked since were left to their next owner by `revoking`.)
        let mut todo = std::mem::take(&mut st.rejected_later);
        todo.extend(rejected);
        let only = reread.and_then(|r| r.only);
        let (todo, mut later): (Vec<Rejected>, Vec<Rejected>) = todo.into_iter().partition(|r| {
            only.is_none_or(|ps| ps.iter().any(|(t, p)| **t == *r.topic && *p == r.partition))
        });
        let dlq = st.dlq.as_mut().ok_or_else(|| {
            End::Failed("the sink rejected records but there is no dead-letter queue".into())
        })?;
        later.extend(
            dlq.send_again_from_kafka(&todo, class_name, reread.map(|r| r.until))
                .map_err(End::Rewind)?,
        );
        st.rejected_later = later;
    }
    if let Some(dlq) = st.dlq.as_mut() {
        let wait = if sink_waits { Duration::ZERO } else { wait };
        for a in dlq.poll(wait).map_err(End::Rewind)? {
            st.offsets.ack(a);
        }
    }
    Ok(())
}

/// Starts task `id` of a connector on its own thread.
pub fn spawn(
    spec: Arc<ConnectorSpec>,
    id: usize,
    settings: Arc<Settings>,
    runtime: Handle,
    metrics: Arc<Metrics>,
    control: Arc<Control>,
) -> TaskHandle {
    let stop = Arc::new(AtomicBool::new(false));
    let shutdown = stop.clone();
    let status = Arc::new(Mutex::new(TaskStatus {
        id,
        state: "UNASSIGNED",
        worker_id: settings.worker_id(),
        trace: None,
        trouble: None,
        progress: None,
    }));
    let st = status.clone();
    // A thread's name may not hold a NUL (the standard library panics); names are validated,
    // but a connector saved by an older version may still have one.
    let thread_name = format!("{}-{id}", spec.name).replace('\0', "?");
    let worker_id = settings.worker_id();
    let thread = std::thread::Builder::new()
        .name(thread_name)
        .spawn(move || {
            let label = format!("{}-{id}", spec.name);
            let set = |state: &'static str, trace: Option<String>| {
                if let Ok(mut s) = st.lock() {
                    s.state = state;
                    s.trace = trace;
                    s.trouble = None;
                }
            };
            let mut rewinds = 0u32;
            // Why the last run ended in a start over, while the runs keep ending that way.
            let mut rewound: Option<String> = None;
            let ran = loop {
                let started = Instant::now();
                // A task that keeps starting over says so through its next run too, until the
                // run outlasts the span after which a start over counts as a first one again:
                // shown only while it waited, a task starting over for ever showed RUNNING
                // without trouble for most of each run.
                let carried = rewound.as_ref().map(|why| {
                    let trouble = format!(
                        "started over from the committed offsets {rewinds} time(s) in a row, the last time because: {why}"
                    );
                    (trouble, started + REWIND_BACKOFF.1 * 2)
                });
                // State and trouble in one step: a status read between two would see a bare
                // RUNNING.
                if let Ok(mut s) = st.lock() {
                    s.state = if control.paused.load(Ordering::Relaxed) {
                        "PAUSED"
                    } else {
                        "RUNNING"
                    };
                    s.trace = None;
                    s.trouble = carried.as_ref().map(|(t, _)| t.clone());
                }
                let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    run(
                        &spec,
                        id,
                        &settings,
                        runtime.clone(),
                        metrics.clone(),
                        &shutdown,
                        control.clone(),
                        &st,
                        carried.as_ref().map(|(t, until)| (t.as_str(), *until)),
                    )
                }));
                let Ok(Err(End::Rewind(why))) = ran else {
                    break ran;
                };
                // Start over from the committed offsets, with a backoff that grows while the
                // runs keep ending this way.
                if started.elapsed() > REWIND_BACKOFF.1 * 2 {
                    rewinds = 0;
                }
                rewinds += 1;
                let wait = crate::backoff::delay(rewinds, REWIND_BACKOFF.0, REWIND_BACKOFF.1);
                // The status first: whoever reads the log line finds it already says so.
                if let Ok(mut s) = st.lock() {
                    s.trouble = Some(format!("starting over from the committed offsets: {why}"));
                }
                warn!(task = %label, attempt = rewinds, "starting over from the committed offsets in {wait:?}: {why}");
                rewound = Some(why);
                let until = Instant::now() + wait;
                while Instant::now() < until && !shutdown.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(50));
                }
                if shutdown.load(Ordering::Relaxed) {
                    break Ok(Ok(()));
                }
            };
            match ran {
                Ok(Ok(())) => {
                    info!(task = %label, "task stopped");
                    set("STOPPED", None);
                }
                Ok(Err(e)) => {
                    error!(task = %label, "task failed: {e}");
                    set("FAILED", Some(e.to_string()));
                }
                Err(panic) => {
                    // A bug; the offsets committed are still only those of written records.
                    let why = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "unknown panic".into());
                    error!(task = %label, "task failed: panicked: {why}");
                    set("FAILED", Some(format!("panicked: {why}")));
                }
            }
        });
    match thread {
        Ok(thread) => TaskHandle {
            status,
            stop,
            thread: Some(thread),
        },
        Err(e) => TaskHandle::failed(id, worker_id, format!("could not start a thread: {e}")),
    }
}

#[allow(clippy::too_many_arguments)]
fn run(
    spec: &Arc<ConnectorSpec>,
    id: usize,
    settings: &Settings,
    runtime: Handle,
    metrics: Arc<Metrics>,
    shutdown: &AtomicBool,
    control: Arc<Control>,
    status: &Mutex<TaskStatus>,
    // Why the runs before this one started over, shown as its trouble until the instant given
    // while it has none of its own.
    carried: Option<(&str, Instant)>,
) -> Result<(), End> {
    let label = format!("{}-{id}", spec.name);
    let config = source::consumer_config(settings, spec, id);
    let (sink, flush_timeout): (Box<dyn Sink>, Duration) = match &spec.sink {
        SinkSpec::Elasticsearch(cfg) => {
            let cfg = Arc::new((**cfg).clone());
            let flush = cfg.flush_timeout;
            (
                Box::new(ElasticsearchSink::new(
                    cfg,
                    metrics.clone(),
                    runtime.clone(),
                    stall::threshold(source::session_gap(&config)),
                )?),
                flush,
            )
        }
        SinkSpec::Druid(cfg) => {
            let txn_id = druid::transactional_id(&spec.name, &settings.worker_id(), id);
            let sink = DruidSink::new(
                Arc::new((**cfg).clone()),
                settings,
                metrics.clone(),
                Some(txn_id),
                shutdown,
            )
            .map_err(End::from)?;
            // Told to stop while its producer waited for a transaction coordinator: nothing
            // was read yet.
            let Some(sink) = sink else {
                return Ok(());
            };
            (Box::new(sink), cfg.flush_timeout)
        }
    };
    source::check_poll_interval(&config, flush_timeout).map_err(End::Failed)?;
    source::check_no_static_membership(&config).map_err(End::Failed)?;
    let crcs_checked = source::crcs_checked(&config);
    let dlq = match &spec.errors.dead_letter {
        None => None,
        Some(cfg) => {
            // The re-reading consumer only assigns and never commits: it keeps the task's
            // group, the one the connector's principal may use (one of its own was refused by
            // brokers that grant groups by the `connect-` prefix, and the task started over for
            // good; librdkafka's consumer without a group reports `Unknown group` on each poll).
            let mut fetch = config.clone();
            fetch
                .remove("group.instance.id")
                .set("enable.auto.commit", "false")
                .set("statistics.interval.ms", "0");
            Some(
                DeadLetterQueue::open(
                    cfg,
                    settings,
                    fetch,
                    &spec.name,
                    id,
                    metrics.clone(),
                    &runtime,
                )
                .map_err(|p| match p {
                    dead_letter::Problem::Config(e) => End::Failed(e),
                    dead_letter::Problem::Unavailable(e) => End::Rewind(e),
                })?,
            )
        }
    };
    let handler = Handler {
        state: Mutex::new(State::new(spec.clone(), sink, metrics.clone(), dlq)),
        flush_timeout,
        label: label.clone(),
        control,
    };
    let (consumer, mut subscribed) =
        source::create(&config, handler, label.clone(), &spec.subscription)?;
    let handler = &consumer.context().handler;
    // Should a bug's panic unwind this run, the task is closed before its consumer is dropped:
    // the consumer's close runs the revocation callback, whose drain and commit would pass a
    // record polled and never tracked (a panic while decoding it). Dropped before `consumer`,
    // declared after it.
    let closed_on_panic = OnUnwind(|| ended_by_panic(handler));
    let mut decoder = Decoder::new(spec)?;
    let commit_every = Duration::from_millis(settings.worker.offset_flush_interval_ms);
    let mut last_commit = Instant::now();
    // (`spawn` shows the carried trouble, and logged why the task started over.)
    let mut trouble_logged: Option<String> = carried.map(|(t, _)| t.to_string());
    // Paused by the user, as last seen; and a commit due as soon as the sink is idle.
    let mut user_paused = false;
    let mut commit_soon = false;
    // Since when the sink has been full, while it is (see `HOLD`).
    let mut full_since: Option<Instant> = None;
    let mut handled = Handled::new();

    let outcome = 'run: loop {
        if shutdown.load(Ordering::Relaxed) {
            break Ok(());
        }
        let (paused, stalled, sink_idle, first_wait) = {
            let st = handler.lock();
            // Wait for records at most until the sink has a lingering batch to send.
            let until = st
                .sink
                .next_deadline()
                .map(|d| d.saturating_duration_since(Instant::now()));
            (
                st.paused.all(),
                st.stall.is_some(),
                st.sink.pending() == 0,
                until.map_or(POLL, |d| d.min(POLL)),
            )
        };
        // Whether the consumer was polled through (every event queued before the first poll
        // began served, `source::went_through`: the last poll's answer says) this time round,
        // and when the first poll began.
        let mut polled = true;
        let began = Instant::now();
        if stalled {
            // Still poll, paused: the consumer stays in its group while the records wait.
            let served = consumer.context().served();
            let msg = consumer.poll(first_wait);
            polled = source::went_through(&msg, (served, consumer.context().served()));
            let mut st = handler.lock();
            match msg {
                Some(Ok(m)) => {
                    metrics.consumed(1);
                    if let Some(stall) = st.stall.as_mut() {
                        stall
                            .queue
                            .push_back((m.detach(), source::leader_epoch(&m)));
                    }
                }
                Some(Err(e)) => {
                    if let Some(end) = consumer_error(&e, settings, crcs_checked, &label) {
                        break 'run Err(end);
                    }
                }
                None => {}
            }
            // Not after a rebalance callback gave up the sink's writes: the task ends now.
            if st.failure.is_none()
                && let Err(e) = retry_stall(&mut st, &mut decoder, spec, &metrics, &label)
            {
                break 'run Err(e);
            }
        } else if handler.control.paused.load(Ordering::Relaxed) && !paused {
            // Paused by the user: the consumer is paused below before anything more is read.
            polled = false;
        } else if full_since.is_some() && !paused {
            // Full: records wait in the consumer's prefetch until the sink takes them.
            polled = false;
        } else {
            // A burst of records: the first poll may wait, the rest take what is already
            // fetched. Each record is handled before the next poll, which may run a rebalance
            // callback. Paused, the task waits on the sink's acks below instead, unless there
            // are none to wait for: then here, or it would spin.
            let mut consumed = Consumed {
                metrics: &metrics,
                n: 0,
            };
            // When the burst's records were taken, for the sink's part of freshness (see `put`).
            let mut clock = None;
            for i in 0..BURST {
                let wait = if i == 0 && (!paused || sink_idle) {
                    first_wait
                } else {
                    Duration::ZERO
                };
                let served = consumer.context().served();
                let msg = consumer.poll(wait);
                polled = source::went_through(&msg, (served, consumer.context().served()));
                let Some(msg) = msg else {
                    if !wait.is_zero() {
                        // Waited and nothing came: the fetch thread had nothing to hand over
                        // either, so it is not busy allocating.
                        handled.free();
                    }
                    break;
                };
                let mut st = handler.lock();
                if st.failure.is_some() {
                    // The poll ran a rebalance callback that ends the task (and may have given
                    // up the sink's writes): this record is not handled, nor tracked, and the
                    // task ends without committing past it.
                    break;
                }
                match msg {
                    Err(e) => {
                        if let Some(end) = consumer_error(&e, settings, crcs_checked, &label) {
                            break 'run Err(end);
                        }
                    }
                    Ok(m) => {
                        consumed.n += 1;
                        match handle(
                            &mut st,
                            &mut decoder,
                            spec,
                            &metrics,
                            &m,
                            source::leader_epoch(&m),
                            &mut clock,
                        ) {
                            Ok(()) => {}
                            Err(Failure::Fatal(e)) => break 'run Err(End::Failed(e)),
                            Err(Failure::Rewind(e)) => break 'run Err(End::Rewind(e)),
                            Err(Failure::Wait(why))
                                if spec.errors.retry_timeout == Some(Duration::ZERO) =>
                            {
                                // Kafka Connect's errors.retry.timeout=0: no retry at all.
                                break 'run Err(End::Failed(format!(
                                    "not retried (errors.retry.timeout=0): {why}"
                                )));
                            }
                            Err(Failure::Wait(why)) => {
                                warn!(task = %label, "waiting, consumption paused: {why}");
                                let now = Instant::now();
                                st.stall = Some(Stall {
                                    queue: VecDeque::from([(m.detach(), source::leader_epoch(&m))]),
                                    attempt: 1,
                                    // The last attempt when the time is up, if that is sooner.
                                    next: now
                                        + spec
                                            .errors
                                            .retry_timeout
                                            .map_or(STALL_FIRST_RETRY, |t| {
                                                t.min(STALL_FIRST_RETRY)
                                            }),
                                    why,
                                    since: now,
                                });
                            }
                        }
                        handled.keep(m);
                    }
                }
                if st.paused.all()
                    || st.stall.is_some()
                    || st.failure.is_some()
                    || handler.control.paused.load(Ordering::Relaxed)
                {
                    break;
                }
            }
        }
        // A `topics.regex` looked up again when due: a metadata request, made without the
        // state's lock (nothing else takes it, but nothing should wait on a network call).
        if let Err(e) = subscribed.refresh(&consumer) {
            break Err(End::Failed(e));
        }
        let mut st = handler.lock();
        if polled {
            st.sink.consumer_polled(began);
        }
        if let Some(f) = st.failure.take() {
            break Err(f);
        }
        let wait = if (st.paused.all() && st.stall.is_none()) || full_since.is_some() {
            POLL
        } else {
            Duration::ZERO
        };
        if let Err(e) = collect(&mut st, wait, None) {
            break Err(e);
        }
        // Not while records wait for the schema registry: they were read (the consumer's
        // position is past them) but are not tracked, so a snapshot's end would pass over them
        // and its clean-up remove the documents they are about to write.
        if st.stall.is_none() {
            let State {
                barriers,
                offsets,
                sink,
                ..
            } = &mut *st;
            for (ack, wait) in barriers.check(&consumer, offsets, &label) {
                sink.topic_caught_up(ack, wait);
            }
        }
        let paused_now = handler.control.paused.load(Ordering::Relaxed);
        if paused_now != user_paused {
            user_paused = paused_now;
            commit_soon = paused_now;
            info!(task = %label, "{}", if paused_now { "paused" } else { "resumed" });
            if let Ok(mut s) = status.lock() {
                s.state = if paused_now { "PAUSED" } else { "RUNNING" };
            }
        }
        let (pending, capacity) = (pending(&st), st.sink.capacity());
        full_since = match full_since {
            _ if pending < capacity => None,
            None => Some(Instant::now()),
            since => since,
        };
        let pause = match must_pause(
            user_paused || st.stall.is_some() || full_since.is_some_and(|t| t.elapsed() >= HOLD),
            &st.paused,
            (pending, capacity),
            st.offsets.tracked(),
        ) {
            Pause::No => Paused::No,
            Pause::Full => Paused::All,
            Pause::Remembering => {
                let these = stop_reading(&st.paused, &st.offsets, capacity);
                let tracked = st.offsets.tracked();
                if !matches!(&st.paused, Paused::These(was) if these.iter().all(|tp| was.contains(tp)))
                {
                    info!(task = %label, tracked,
                        "too many records remembered: not reading the partitions they pile up in, {these:?}, until half as many");
                }
                Paused::These(these)
            }
        };
        if pause != st.paused && pause::apply(&consumer, &st.paused, &pause) {
            st.paused = pause;
        }
        let own = st
            .stall
            .as_ref()
            .map(|s| s.why.clone())
            .or_else(|| st.sink.trouble())
            .or_else(|| st.dlq.as_ref().and_then(DeadLetterQueue::trouble));
        let trouble = shown_trouble(own, carried, Instant::now());
        if trouble != trouble_logged {
            match &trouble {
                Some(t) => warn!(task = %label, "not making progress: {t}"),
                None => info!(task = %label, "making progress again"),
            }
            if let Ok(mut s) = status.lock() {
                s.trouble = trouble.clone();
            }
            trouble_logged = trouble;
        }
        if last_commit.elapsed() >= commit_every
            || (commit_soon && st.sink.pending() == 0)
            || st.sink.commit_due()
        {
            commit_soon = false;
            skip_undelivered(&consumer, &mut st);
            let marks = st.offsets.committable();
            match commit(&consumer, &mut st, marks, CommitMode::Async, flush_timeout) {
                Ok(()) => {}
                Err(Failure::Fatal(e)) => break Err(End::Failed(e)),
                Err(Failure::Rewind(e)) => break Err(End::Rewind(e)),
                Err(Failure::Wait(e)) => warn!(task = %label, "offset commit failed: {e}"),
            }
            last_commit = Instant::now();
        }
    };

    // librdkafka wants every message freed before its consumer is.
    drop(handled);
    // Stopping or failing: write what was taken before, commit up to there, leave the group.
    // Rewinding: the sink discarded its uncommitted writes, so nothing more is committed.
    let mut st = handler.lock();
    if !finishes(&outcome, st.failure.as_ref()) {
        // Before the consumer closes: nothing of what the task gives up is sent meanwhile.
        let what = st.sink.abandon();
        debug!(task = %label, "starting over: {what}");
    }
    if finishes(&outcome, st.failure.as_ref()) {
        // The drain stops early when writes are held since the process stood still: they
        // would wait for a poll that is not coming, and the group may have moved on meanwhile.
        // What the sink still has then, or after flush.timeout.ms (Elasticsearch down), or
        // after a failure, is dealt with before the consumer closes and its partitions go to
        // another member, so that no retry lands after the next owner's writes; their records
        // are read again by whoever owns the partitions next. Copies on their way to the
        // dead-letter queue are still waited for, as long as the time left allows.
        let deadline = Instant::now() + flush_timeout;
        if let Err(e) = drain(&mut st, flush_timeout, None, |st| pending(st) == 0) {
            warn!(task = %label, "while finishing in-flight writes: {e}");
        }
        if st.sink.pending() > 0 {
            let held = st.sink.held();
            let what = st.sink.abandon();
            if held {
                warn!(task = %label, "writes held since the process stood still given up as the task ends (they would wait for a poll of the consumer): {what}");
            } else {
                warn!(task = %label, "writes still unfinished as the task ends (flush.timeout.ms: {} ms), dealt with before its consumer closes: {what}", flush_timeout.as_millis());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if let Err(e) = drain(&mut st, left, None, |st| pending(st) == 0) {
                warn!(task = %label, "while finishing dead-letter copies: {e}");
            }
        }
        // Only after a clean stop: a task that failed took a record it never tracked (the
        // one that failed), and the position is past it.
        if outcome.is_ok() {
            skip_undelivered(&consumer, &mut st);
        }
        // Asynchronous: the consumer's close waits for its answer (`source::close`), as long as
        // a task waits for that close. A synchronous commit would wait up to
        // `socket.timeout.ms` (60 s) when the coordinator holds it behind a JoinGroup of a
        // group that rebalances; the close's wait is bounded.
        let marks = st.offsets.watermarks(None);
        if let Err(Failure::Fatal(e) | Failure::Wait(e) | Failure::Rewind(e)) =
            commit(&consumer, &mut st, marks, CommitMode::Async, flush_timeout)
        {
            warn!(task = %label, "final offset commit failed: {e}");
        }
    }
    if st.offsets.in_flight() > 0 && outcome.is_ok() {
        warn!(task = %label, records = st.offsets.in_flight(), "stopped with unwritten records; they will be read again");
    }
    let_go(st);
    drop(closed_on_panic);
    source::close::close(
        consumer,
        &spec.group_id(),
        &label,
        source::close::CLOSE_WAIT,
    );
    outcome
}

/// Whether a task that ended with `outcome` writes what it took and commits up to there. Not
/// when it rewinds (its sink discarded its uncommitted writes), nor when a rebalance callback
/// asked for a rewind (`recorded`) that the loop had not taken yet because it ended another way
/// first (a failure, a stop): that callback found writes or a transaction holding records of
/// partitions that left, which must never be written or committed now.
fn finishes(outcome: &Result<(), End>, recorded: Option<&End>) -> bool {
    !matches!(outcome, Err(End::Rewind(_))) && !matches!(recorded, Some(End::Rewind(_)))
}

/// The records a burst took from the consumer, added to their metric once, when the burst ends
/// however it ends: an atomic add per record was a locked instruction per record on the task
/// thread.
struct Consumed<'m> {
    metrics: &'m Metrics,
    n: u64,
}

impl Drop for Consumed<'_> {
    fn drop(&mut self) {
        self.metrics.consumed(self.n);
    }
}

/// A consumer error: the end of the task when Kafka refuses this worker for good, hands it
/// records it cannot read, or stops a partition for `auto.offset.reset=error`; else logged.
fn consumer_error(
    e: &rdkafka::error::KafkaError,
    settings: &Settings,
    crcs_checked: bool,
    label: &str,
) -> Option<End> {
    if let Some(why) = source::refused(e) {
        return Some(End::Failed(format!(
            "Kafka ({}) refused this worker: {why}",
            settings.kafka.bootstrap_servers
        )));
    }
    if let Some(what) = source::unreadable(e, crcs_checked) {
        return Some(End::Failed(format!(
            "Kafka handed the task {what} ({e}): librdkafka would skip it or stand still on it, \
             so the task stops rather than commit past records it could not read (the committed \
             offsets say where it stopped: GET /connectors/NAME/offsets)"
        )));
    }
    if source::no_offset_to_start_from(e) {
        return Some(End::Failed(format!(
            "a partition has no committed offset, or its committed offset is out of range (or \
             librdkafka found its log cut below the position), and auto.offset.reset=error asks \
             to stop there ({e}): librdkafka reads that partition no more. Set the offsets (stop \
             the connector, PATCH /connectors/NAME/offsets) or another \
             consumer.override.auto.offset.reset, and resume"
        )));
    }
    warn!(task = %label, "consumer error: {e}");
    None
}

/// Retries the stalled records in order once their backoff is over.
fn retry_stall(
    st: &mut State,
    decoder: &mut Decoder,
    spec: &ConnectorSpec,
    metrics: &Metrics,
    label: &str,
) -> Result<(), End> {
    let Some(mut stall) = st.stall.take() else {
        return Ok(());
    };
    if Instant::now() < stall.next {
        st.stall = Some(stall);
        return Ok(());
    }
    while let Some((m, leader_epoch)) = stall.queue.front() {
        match handle(st, decoder, spec, metrics, m, *leader_epoch, &mut None) {
            Ok(()) => {
                stall.queue.pop_front();
                stall.since = Instant::now();
            }
            Err(Failure::Fatal(e)) => return Err(End::Failed(e)),
            Err(Failure::Rewind(e)) => return Err(End::Rewind(e)),
            Err(Failure::Wait(why)) => {
                if let Some(limit) = spec.errors.retry_timeout
                    && stall.since.elapsed() >= limit
                {
                    return Err(End::Failed(format!(
                        "gave up after errors.retry.timeout={} ms: {why}",
                        limit.as_millis()
                    )));
                }
                stall.attempt += 1;
                stall.next = Instant::now()
                    + crate::backoff::delay(
                        stall.attempt,
                        STALL_FIRST_RETRY,
                        spec.errors.retry_delay_max.max(STALL_FIRST_RETRY),
                    );
                // The last attempt is made when the time is up, not a whole backoff after.
                if let Some(limit) = spec.errors.retry_timeout {
                    stall.next = stall.next.min(stall.since + limit);
                }
                if stall.attempt % 10 == 0 {
                    warn!(task = %label, attempt = stall.attempt, "still waiting: {why}");
                }
                stall.why = why;
                st.stall = Some(stall);
                return Ok(());
            }
        }
    }
    info!(task = %label, attempts = stall.attempt, "going on; waited for: {}", stall.why);
    Ok(())
}

/// Decodes one record and hands it to the sink; a record that cannot be decoded or mapped
/// fails the task or, when the connector tolerates it, goes to the dead-letter queue (or is
/// dropped, counted and logged).
fn handle(
    st: &mut State,
    decoder: &mut Decoder,
    spec: &ConnectorSpec,
    metrics: &Metrics,
    m: &impl Record,
    leader_epoch: Option<i32>,
    clock: &mut Option<i64>,
) -> Result<(), Failure> {
    match put(st, decoder, spec, metrics, m, leader_epoch, clock) {
        Ok(()) => Ok(()),
        Err(Refused::Failure(f)) => Err(f),
        Err(Refused::Record {
            stage,
            why,
            ack,
            read,
        }) => {
            if !spec.errors.tolerates(stage) {
                return Err(Failure::Fatal(why));
            }
            let ack = ack.unwrap_or_else(|| {
                st.offsets
                    .track(m.topic(), m.partition(), m.offset(), leader_epoch)
            });
            if !st.offsets.counts(ack) {
                read_again(st, m.topic(), m.partition(), m.offset())?;
                metrics.skip("read_again");
                return Ok(());
            }
            match &read {
                Read::KeyUnread => st
                    .sink
                    .passed_over(m.topic(), m.partition(), PassedKey::Unread),
                Read::Key(k) => {
                    st.sink
                        .passed_over(m.topic(), m.partition(), PassedKey::Read(k.as_ref()))
                }
                Read::NotADelete => {}
            }
            tolerate(st, spec, metrics, m, ack, stage, &why);
            Ok(())
        }
    }
}

/// A record read at an offset below what its partition's task had read: taken for one
/// delivered again, unless librdkafka reset the partition's position for an error before it
/// (the log restarted below what was read: the topic deleted and created again, or records
/// lost in an unclean leader election). Those are other records, which would never be written
/// while later offsets are committed past them: the task fails instead.
///
/// Or a record read past a reset of the position (`Offsets::gap_of`): the partition's log
/// starts above the offset the task was to read, and the records between were removed
/// (`retention.ms`, DeleteRecords) before it wrote them. Their changes would be missing from
/// the target while the offsets moved past them without a word: the task fails instead, until
/// the connector's offsets are moved past the gap.
fn read_again(st: &State, topic: &str, partition: i32, offset: i64) -> Result<(), Failure> {
    if let Some((from, why)) = st.offsets.gap_of(topic, partition) {
        return Err(Failure::Fatal(format!(
            "topic {topic} partition {partition}: offsets {from} to {} are no longer in the log \
             (removed by retention.ms or DeleteRecords before the task wrote them; librdkafka: \
             {why}): up to {} records whose changes are missing from the target. The task stops \
             rather than commit past them. To go on from offset {offset}, stop the connector and \
             move its offsets there (PATCH /connectors/NAME/offsets); the lost changes come back \
             only with a new snapshot of their tables (README, \"Records removed before they \
             were written\")",
            offset - 1,
            offset - from
        )));
    }
    if let Some(why) = st.offsets.reset_of(topic, partition) {
        return Err(Failure::Fatal(format!(
            "topic {topic} partition {partition} offset {offset}: the partition's log starts again below \
             what the task had read (the topic deleted and created again, or records lost in an unclean \
             leader election; librdkafka: {why}). Its records there are not the ones written, and would \
             be taken for them and never written: the task stops instead. Restarting it reads the \
             partition again from the committed offset, or from the log's start when that is past its \
             end; move the offsets first (PATCH /connectors/NAME/offsets) to read the new log from \
             elsewhere"
        )));
    }
    if let Some((at, epoch, read)) = st.offsets.rewritten_of(topic, partition) {
        return Err(Failure::Fatal(format!(
            "topic {topic} partition {partition} offset {at}: a record written by leader epoch \
             {epoch} at an offset the task had read records of epochs up to {read} from: the \
             partition's log was cut below what the task had read and written again (an unclean \
             leader election). Its records there are not the ones written, and would be taken \
             for them and never written: the task stops instead. The records Kafka lost are \
             missing from the target; rebuild the index (cdc-sink rebuild), or move the offsets \
             (PATCH /connectors/NAME/offsets) to {at} to write the new records and go on"
        )));
    }
    Ok(())
}

/// A record that failed at `stage` and is tolerated: copied to the dead-letter queue (acked
/// once the copy is), or else dropped and acked now; counted, and logged as configured.
fn tolerate(
    st: &mut State,
    spec: &ConnectorSpec,
    metrics: &Metrics,
    m: &impl Record,
    ack: Ack,
    stage: Stage,
    why: &str,
) {
    metrics.failed(stage.name());
    let policy = &spec.errors;
    let class_name = class_name(spec, stage);
    match st.dlq.as_mut() {
        Some(dlq) if policy.tolerate => dlq.send(
            ack,
            m,
            &dead_letter::Failure {
                stage,
                class_name,
                exception_class: dead_letter::DATA_EXCEPTION,
                message: why,
            },
        ),
        _ => st.offsets.ack(ack),
    }
    let dropped = st.dlq.is_none() || !policy.tolerate;
    if policy.log || (dropped && stage == Stage::TaskPut && policy.drop_invalid) {
        // Record contents only under errors.log.enable, as in Kafka Connect: the line a drop
        // under drop.invalid.message logs anyway names where the record is.
        let content = if policy.log && policy.log_messages {
            format!(
                ", key {:?}, value {:?}, headers {:?}",
                m.key().map(String::from_utf8_lossy),
                m.payload().map(String::from_utf8_lossy),
                source::headers::text(m),
            )
        } else {
            String::new()
        };
        let fate = if dropped {
            "dropped"
        } else {
            "sent to the dead-letter queue"
        };
        error!(connector = %spec.name, stage = stage.name(), class = class_name, "error tolerated ({fate}), where the consumed record is {{topic={}, partition={}, offset={}, timestamp={:?}}}{content}: {why}", m.topic(), m.partition(), m.offset(), m.timestamp().to_millis());
    } else if dropped && !st.warned_drop {
        // Kafka Connect drops such records silently; say so once per run.
        st.warned_drop = true;
        warn!(connector = %spec.name, stage = stage.name(), "errors.tolerance=all without a dead-letter queue: a record that failed is dropped (counted in cdc_sink_records_failed_total; errors.log.enable=true logs each): topic {} partition {} offset {}: {why}", m.topic(), m.partition(), m.offset());
    }
}

/// The class whose operation failed at `stage`, for the dead-letter queue's headers.
fn class_name(spec: &ConnectorSpec, stage: Stage) -> &str {
    match stage {
        Stage::KeyConverter => spec.key_converter.class_name(),
        Stage::ValueConverter => spec.value_converter.class_name(),
        Stage::Transformation => "org.apache.kafka.connect.transforms.TimestampRouter",
        // As Kafka Connect's errant record reporter names it, whatever the connector.
        Stage::TaskPut => "org.apache.kafka.connect.sink.SinkTask",
    }
}

/// Decodes one record and hands it to the sink.
fn put(
    st: &mut State,
    decoder: &mut Decoder,
    spec: &ConnectorSpec,
    metrics: &Metrics,
    m: &impl Record,
    leader_epoch: Option<i32>,
    clock: &mut Option<i64>,
) -> Result<(), Refused> {
    let (topic, partition, offset) = (m.topic(), m.partition(), m.offset());
    let at = || format!("topic {topic} partition {partition} offset {offset}");
    let fail = |stage: Stage, what: &str, e: crate::decode::DecodeError, read| {
        let why = format!("{}: {what}{e}", at());
        if e.retry {
            Refused::Failure(Failure::Wait(why))
        } else if e.refused {
            Refused::Failure(Failure::Fatal(why))
        } else {
            Refused::Record {
                stage,
                why,
                ack: None,
                read,
            }
        }
    };
    let key = decoder
        .key(topic, m.key())
        .map_err(|e| fail(Stage::KeyConverter, "key: ", e, Read::KeyUnread))?;
    let value = decoder
        .value(topic, m.payload())
        .map_err(|e| fail(Stage::ValueConverter, "", e, Read::Key(key.clone())))?;
    let ack = st.offsets.track(topic, partition, offset, leader_epoch);
    if !st.offsets.counts(ack) {
        // Delivered again (or of a partition no longer assigned): its first read is the one
        // that is written and committed; writing it twice would be a second row for a Druid
        // transaction.
        read_again(st, topic, partition, offset).map_err(Refused::Failure)?;
        metrics.skip("read_again");
        return Ok(());
    }
    // The time the sink is handed the record: read once the first record of a burst is
    // decoded, and again after a record whose decoding waited for the schema registry, not for
    // every record (reading the clock for each took 1.6% of the worker's samples; a burst
    // without such a wait takes well under a millisecond). A rebalance callback ends a burst.
    if decoder.waited() {
        *clock = None;
    }
    let received_ms = *clock.get_or_insert_with(now_ms);
    let timestamp_ms = m.timestamp().to_millis();
    let routed = spec
        .transforms
        .route(topic, timestamp_ms)
        .map_err(|e| Refused::Record {
            stage: Stage::Transformation,
            why: format!("{}: {e}", at()),
            ack: Some(ack),
            read: Read::whole(&key, &value),
        })?;
    let record = SinkRecord {
        topic: routed.as_deref().unwrap_or(topic),
        kafka_topic: topic,
        partition,
        offset,
        timestamp_ms,
        key: key.as_ref(),
        value: &value,
        received_ms,
    };
    // Before the record can be acked (a skipped one is acked at once).
    if st.sink.holds(&record) {
        st.offsets.hold(ack);
    }
    if st.sink.awaits_topic(&record) && st.offsets.counts(ack) {
        st.barriers
            .add(ack, topic, partition, offset, m.timestamp());
    }
    match st.sink.put(record, ack) {
        Ok(Outcome::Buffered) => {}
        Ok(Outcome::Skipped(why)) => {
            metrics.skip(why);
            st.offsets.ack(ack);
        }
        Err(SinkError::Record(why)) => {
            return Err(Refused::Record {
                stage: Stage::TaskPut,
                why,
                ack: Some(ack),
                read: Read::whole(&key, &value),
            });
        }
        Err(e) => return Err(Refused::Failure(Failure::from(e))),
    }
    Ok(())
}

/// The trouble a run shows at `now`: its own, else the one carried from the runs before it
/// until the instant that comes with it.
fn shown_trouble(
    own: Option<String>,
    carried: Option<(&str, Instant)>,
    now: Instant,
) -> Option<String> {
    own.or_else(|| {
        carried
            .filter(|(_, until)| now < *until)
            .map(|(t, _)| t.to_string())
    })
}

#[cfg(test)]
mod tests {
    use rdkafka::Timestamp;

    use super::*;

    /// A run shows the trouble carried from the runs that started over before it while it has
    /// none of its own, and only until the instant carried with it (60 s after the run began:
    /// a run lasting that long counts as a healthy one).
    #[test]
    fn a_carried_trouble_is_shown_until_its_instant_and_an_own_one_wins() {
        let now = Instant::now();
        let carried = Some((
            "started over 2 time(s) in a row",
            now + Duration::from_secs(60),
        ));
        assert_eq!(
            shown_trouble(None, carried, now).as_deref(),
            Some("started over 2 time(s) in a row")
        );
        assert_eq!(
            shown_trouble(None, carried, now + Duration::from_millis(59_999)).as_deref(),
            Some("started over 2 time(s) in a row")
        );
        assert_eq!(
            shown_trouble(None, carried, now + Duration::from_secs(60)),
            None
        );
        assert_eq!(
            shown_trouble(Some("Elasticsearch unreachable".into()), carried, now).as_deref(),
            Some("Elasticsearch unreachable")
        );
        assert_eq!(shown_trouble(None, None, now), None);
    }

    fn record(payload: usize) -> OwnedMessage {
        OwnedMessage::new(
            Some(vec![b'x'; payload]),
            Some(b"k".to_vec()),
            "t".into(),
            Timestamp::NotAvailable,
            0,
            0,
            None,
        )
    }

    /// A sink that says what is done to it, in `order`, and hands back `rejected` once.
    struct Watched(Arc<Mutex<Vec<&'static str>>>, Vec<Rejected>);

    impl Sink for Watched {
        fn put(&mut self, _: SinkRecord<'_>, _: Ack) -> Result<Outcome, SinkError> {
            Ok(Outcome::Skipped("watched"))
        }
        fn poll(&mut self, _: Duration) -> Result<Vec<Ack>, SinkError> {
            Ok(Vec::new())
        }
        fn take_rejected(&mut self) -> Vec<Rejected> {
            std::mem::take(&mut self.1)
        }
        fn flush(&mut self) {}
        fn abandon(&mut self) -> &'static str {
            self.0.lock().unwrap().push("writes given up");
            "every unfinished write dropped"
        }
        fn pending(&self) -> usize {
            1
        }
        fn capacity(&self) -> usize {
            1
        }
        fn trouble(&self) -> Option<String> {
            None
        }
        fn next_deadline(&self) -> Option<Instant> {
            None
        }
    }

    impl Drop for Watched {
        fn drop(&mut self) {
            // Also while a failed assertion unwinds (the lock poisoned then).
            let mut order = self.0.lock().unwrap_or_else(|p| p.into_inner());
            order.push("sink dropped");
        }
    }

    fn handler_of(sink: Box<dyn Sink>) -> Handler {
        let config = crate::connector::ConnectorConfig::from_json(
            r#"{"name":"c","config":{"connector.class":"io.confluent.connect.elasticsearch.ElasticsearchSinkConnector","topics":"t","connection.url":"http://127.0.0.1:9200"}}"#,
        )
        .unwrap();
        let spec = Arc::new(ConnectorSpec::validate(&config).unwrap());
        Handler {
            state: Mutex::new(State::new(
                spec,
                sink,
                Arc::new(crate::metrics::Registry::new().task("c", 0)),
                None,
            )),
            flush_timeout: Duration::from_secs(1),
            label: "c-0".into(),
            control: Arc::default(),
        }
    }

    /// A revocation's drain reads again, for the dead-letter queue, only the rejected records of
    /// the partitions it revokes, in the time it has: those of partitions the task keeps wait
    /// for its next `collect`, outside the rebalance. Here Kafka is where nobody listens, so a
    /// reading would take the whole time given.
    #[test]
    fn a_revocation_reads_again_only_the_rejected_records_of_its_partitions() {
        let kept = |partition: i32| Rejected {
            ack: Ack {
                slot: 0,
                epoch: 1,
                offset: 7,
            },
            topic: "t".into(),
            partition,
            offset: 7,
            reason: "mapper_parsing_exception".into(),
        };
        let handler = handler_of(Box::new(Watched(Arc::default(), vec![kept(0), kept(2)])));
        let mut st = handler.lock();
        st.dlq = Some(DeadLetterQueue::nowhere());
        let revoked = [("t".to_string(), 1)];
        let began = Instant::now();
        let reread = Reread {
            until: began + Duration::from_secs(20),
            only: Some(&revoked),
        };
        assert!(collect(&mut st, Duration::ZERO, Some(reread)).is_ok());
        let took = began.elapsed();
        assert_eq!(st.rejected_later, [kept(0), kept(2)]);
        assert!(took < Duration::from_secs(5), "read for {took:?}");
        assert_eq!(pending(&st), st.sink.pending() + 2, "still waited for");
    }

    /// A task unwinding from a panic gives up its sink's unfinished writes and drops the sink
    /// before its consumer's close leaves the group, and is closed by then: neither a retry
    /// nor the revocation the close runs comes after the next owner's writes.
    #[test]
    fn a_task_unwinding_from_a_panic_ends_its_sink_before_its_consumer_goes() {
        let order = Arc::new(Mutex::new(Vec::new()));
        struct Consumer<'a>(&'a Handler, Arc<Mutex<Vec<&'static str>>>);
        impl Drop for Consumer<'_> {
            fn drop(&mut self) {
                assert!(self.0.lock().closed, "closed before its consumer");
                self.1.lock().unwrap().push("consumer closed");
            }
        }
        let handler = handler_of(Box::new(Watched(order.clone(), Vec::new())));
        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _consumer = Consumer(&handler, order.clone());
            let _closed_on_panic = OnUnwind(|| ended_by_panic(&handler));
            panic!("a bug while decoding");
        }));
        assert!(ran.is_err());
        assert_eq!(
            *order.lock().unwrap(),
            ["writes given up", "sink dropped", "consumer closed"]
        );
        // Nothing of the task is left to write: its sink now is `Ended`, which holds nothing.
        let st = handler.lock();
        assert!(st.closed);
        assert_eq!((st.sink.pending(), st.sink.capacity()), (0, 0));
        drop(st);
        // Not on a normal end.
        let calm = std::sync::atomic::AtomicBool::new(false);
        drop(OnUnwind(|| calm.store(true, Ordering::Relaxed)));
        assert!(!calm.load(Ordering::Relaxed));
    }

    /// The consumer stops reading while too many records are remembered behind one that
    /// cannot be committed, as it does for a full sink, and goes on at half.
    #[test]
    fn a_rewind_a_callback_asked_for_forbids_finishing_however_the_loop_ended() {
        let rewind = || End::Rewind("partitions lost".into());
        let failed = || End::Failed("the registry".into());
        assert!(finishes(&Ok(()), None));
        assert!(finishes(&Err(failed()), None));
        assert!(finishes(&Err(failed()), Some(&failed())));
        assert!(!finishes(&Err(rewind()), None));
        assert!(!finishes(&Err(failed()), Some(&rewind())));
        assert!(!finishes(&Ok(()), Some(&rewind())));
    }

    /// A partition that flows (a snapshot's end may wait for it) is read again once the pile
    /// behind its slow write is gone, while the partition held behind the end stays stopped.
    #[test]
    fn a_partition_stops_while_records_pile_up_in_it_not_while_the_task_remembers_many() {
        let mut o = Offsets::default();
        let tp = |p: i32| ("t".to_string(), p);
        // Records written behind one that is not, in a partition: `n` in all.
        let pile = |o: &mut Offsets, p: i32, from: i64, n: i64| {
            let acks: Vec<Ack> = (from..from + n)
                .map(|off| o.track("t", p, off, None))
                .collect();
            acks[1..].iter().for_each(|a| o.ack(*a));
            acks[0]
        };
        o.assign("t", 0);
        o.assign("t", 1);
        // Capacity 10: a pile is over 266 records, the bound 640.
        pile(&mut o, 0, 0, 401);
        let slow = pile(&mut o, 1, 0, 301);
        let both = stop_reading(&Paused::No, &o, 10);
        assert_eq!(both, vec![tp(0), tp(1)]);
        // Partition 1's slow write lands: its pile is gone, it is read again.
        o.ack(slow);
        let was = Paused::These(both);
        assert_eq!(stop_reading(&was, &o, 10), vec![tp(0)]);
        // Above half a pile, one stopped stays stopped.
        pile(&mut o, 1, 301, 200);
        assert_eq!(stop_reading(&was, &o, 10), vec![tp(0), tp(1)]);
    }

    #[test]
    fn too_many_records_remembered_pause_the_consumer() {
        let sink = (0, 1000);
        let bound = tracked_bound(1000);
        assert_eq!(bound, 64_000);
        assert_eq!(tracked_bound(20_000), MAX_TRACKED);
        let (no, all) = (&Paused::No, &Paused::All);
        let some = &Paused::These(vec![("t".into(), 0)]);
        assert_eq!(must_pause(false, no, sink, bound), Pause::No);
        assert_eq!(must_pause(false, no, sink, bound + 1), Pause::Remembering);
        assert_eq!(
            must_pause(false, all, sink, bound / 2 + 1),
            Pause::Remembering
        );
        assert_eq!(
            must_pause(false, some, sink, bound / 2 + 1),
            Pause::Remembering
        );
        assert_eq!(must_pause(false, all, sink, bound / 2), Pause::No);
        assert_eq!(must_pause(false, all, (501, 1000), 0), Pause::Full);
        assert_eq!(must_pause(false, no, (501, 1000), 0), Pause::No);
        // The partitions still read fill the sink: they are not paused for it.
        assert_eq!(
            must_pause(false, some, (501, 1000), bound),
            Pause::Remembering
        );
        assert_eq!(must_pause(true, some, sink, bound), Pause::Full);
    }

    /// Handled records are held for freeing together, but never more than a run's worth: a
    /// run that never ended would hold every record the task read.
    #[test]
    fn handled_records_are_freed_in_runs_of_1024_or_1_mib() {
        type H = Handled<OwnedMessage>;
        let mut h = H::new();
        for _ in 1..H::RECORDS {
            h.keep(record(10));
        }
        assert_eq!(
            (h.messages.len(), h.bytes),
            (H::RECORDS - 1, 11 * (H::RECORDS - 1))
        );
        h.keep(record(10));
        assert_eq!(
            (h.messages.len(), h.bytes),
            (0, 0),
            "freed at {} records",
            H::RECORDS
        );
        // Fewer, bigger records: freed by their bytes (key and payload).
        h.keep(record(H::BYTES / 2));
        assert_eq!(h.messages.len(), 1);
        h.keep(record(H::BYTES / 2));
        assert_eq!(
            (h.messages.len(), h.bytes),
            (0, 0),
            "freed at {} bytes",
            H::BYTES
        );
        h.keep(record(1));
        h.free();
        assert_eq!((h.messages.len(), h.bytes), (0, 0));
    }
}
