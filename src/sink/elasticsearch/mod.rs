//! The Elasticsearch sink: map → batch → bulk → ack.
//!
//! Documents are spread over `max.in.flight.requests` lanes by a hash of (index, id). Each lane
//! sends one bulk request at a time and retries its failed items before sending the next, so
//! the writes of one document stay in order while lanes run in parallel. A batch is acked (all
//! its records, superseded ones included) only when every item in it is written or stale.

pub mod batch;
pub mod client;
pub mod config;
pub mod deletes;
pub mod mapping;
pub mod reconcile;
pub mod retry;
pub mod scopes;
pub mod stale;
pub mod stall;

use std::collections::VecDeque;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::runtime::Handle;
use tracing::{debug, warn};

use self::batch::{Batch, Origin, Sealed};
use self::client::{Answer, BulkClient};
use self::config::EsConfig;
use self::mapping::{Mapped, Mapper, SnapshotEnd};
use self::retry::{ItemOutcome, RequestOutcome};
use super::{Ack, Outcome, PassedKey, Rejected, Sink, SinkError, SinkRecord, TopicWait};
use crate::decode::Value;
use crate::metrics::{Metrics, now_ms};

/// How long [`Sink::abandon`] waits for the aborted writes to be gone: a write is aborted at
/// its next await point, which comes at once unless it is compressing a body.
const ABANDON_WAIT: Duration = Duration::from_secs(5);

struct Lane {
    open: Batch,
    sealed: VecDeque<Sealed>,
    busy: bool,
    /// The batch being written (and retried), aborted when the sink gives up its writes or is
    /// dropped: a write left retrying behind a stopped task could land after the partition's
    /// next owner wrote newer changes (unversioned, it would overwrite them; versioned, a delete
    /// older than `index.gc_deletes` would be forgotten and the document come back).
    writing: Option<tokio::task::AbortHandle>,
}

impl Lane {
    /// The open batch goes out when it has lingered: nothing else of the lane is waiting to be
    /// sent or being sent (see `dispatch`).
    fn waiting_for_linger(&self) -> bool {
        !self.open.is_empty() && !self.busy && self.sealed.is_empty()
    }
}

/// A finished batch, reported back to the task thread.
struct Done {
    lane: usize,
    records: usize,
    result: Result<Written, SinkError>,
}

/// A batch's outcome: the acks of records written (or stale, or skipped), and the records
/// rejected for the dead-letter queue.
type Written = (Vec<Ack>, Vec<Rejected>);

/// What the lanes and reconciliations report back to the task thread.
enum Event {
    Batch(Done),
    /// The reconciliation after the snapshot record `Ack` is over.
    Reconciled(Ack),
}

/// The record that ended a table's snapshot: its ack comes back once the record is written,
/// the task has seen its whole topic written up to it, and the index is reconciled.
struct Reconciliation {
    ack: Ack,
    end: SnapshotEnd,
    written: bool,
    caught_up: bool,
    running: bool,
    /// The record's partition left the task: its ack must never come back (whoever reads the
    /// record next reconciles), and a running reconciliation stops.
    abandoned: bool,
    cancel: Arc<std::sync::atomic::AtomicBool>,
}

/// Shared by the lanes' requests.
struct Shared {
    cfg: Arc<EsConfig>,
    client: BulkClient,
    metrics: Arc<Metrics>,
    /// Why requests are failing right now, for status.
    trouble: Mutex<Option<String>>,
    /// Stale writes per partition, and the warning when they dominate.
    stale: Mutex<stale::StaleWatch>,
    /// Bulk responses wait `read.timeout.ms` × 2^this: raised by each timeout (up to 4), lowered
    /// by each prompt response.
    slow: AtomicU32,
    /// Set by [`Sink::abandon`]: no request is sent after it (checked before each attempt).
    abandoned: AtomicBool,
    /// Holds the bulk requests for a while after the process stood still (`stall.rs`).
    clock: stall::StallClock,
}

pub struct ElasticsearchSink {
    shared: Arc<Shared>,
    ticker: tokio::task::AbortHandle,
    mapper: Mapper,
    lanes: Vec<Lane>,
    hasher: foldhash::fast::RandomState,
    runtime: Handle,
    done_tx: mpsc::Sender<Event>,
    done_rx: mpsc::Receiver<Event>,
    /// Snapshot ends waiting to be (or being) reconciled.
    reconciliations: Vec<Reconciliation>,
    /// Records taken and not yet acked.
    pending: usize,
    /// Every open batch is sent as soon as its lane is free.
    flushing: bool,
    topics: crate::FastMap<String, Arc<str>>,
    /// The topic of the last record put, compared before `topics` is hashed: records come in
    /// runs of one partition.
    last_topic: Option<Arc<str>>,
    /// Rejected for the dead-letter queue, not yet taken by the task.
    rejected: Vec<Rejected>,
    /// Acks of writes done before one that failed, taken by the poll that returned the
    /// failure: the next poll hands them out (the task's drain after a failure makes it), so
    /// that what was written before the failure is committed.
    carried: Vec<Ack>,
    /// A poll has returned a write's failure: later ones are logged, not returned, and the
    /// polls of the failing task's drain go on taking the acks of the writes that succeed.
    failed: bool,
}

impl ElasticsearchSink {
    /// `stall_after`: how long the process may stand still before writes are held
    /// (`stall::threshold` of the consumer's session).
    pub fn new(
        cfg: Arc<EsConfig>,
        metrics: Arc<Metrics>,
        runtime: Handle,
        stall_after: Duration,
    ) -> Result<Self, String> {
        let client = BulkClient::new(&cfg)?;
        let (done_tx, done_rx) = mpsc::channel();
        let lanes = (0..cfg.max_in_flight)
            .map(|_| Lane {
                open: Batch::new(!cfg.fail_on_malformed),
                sealed: VecDeque::new(),
                busy: false,
                writing: None,
            })
            .collect();
        let stalls = metrics.stalls();
        let shared = Arc::new(Shared {
            cfg: cfg.clone(),
            client,
            metrics,
            trouble: Mutex::new(None),
            slow: AtomicU32::new(0),
            abandoned: AtomicBool::new(false),
            clock: stall::StallClock::new(stall_after, stalls),
            stale: Mutex::new(stale::StaleWatch::default()),
        });
        // The clock of `stall.rs`, ticking for as long as the sink lives.
        let weak = Arc::downgrade(&shared);
        let ticker = runtime
            .spawn(async move {
                let mut every = tokio::time::interval(stall::TICK);
                every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    every.tick().await;
                    let Some(shared) = weak.upgrade() else { break };
                    shared.clock.tick();
                }
            })
            .abort_handle();
        Ok(ElasticsearchSink {
            mapper: Mapper::new(cfg),
            shared,
            ticker,
            lanes,
            hasher: Default::default(),
            runtime,
            done_tx,
            done_rx,
            reconciliations: Vec::new(),
            pending: 0,
            flushing: false,
            topics: Default::default(),
            last_topic: None,
            rejected: Vec::new(),
            carried: Vec::new(),
            failed: false,
        })
    }

    fn lane_of(&self, index: &str, id: &str) -> usize {
        let mut h = self.hasher.build_hasher();
        index.hash(&mut h);
        id.hash(&mut h);
        (h.finish() % self.lanes.len() as u64) as usize
    }

    /// Seals batches that are full, lingered, or flushed; starts a request on each free lane.
    /// A lingering batch is sealed only when its lane is free: while a request is out, its
    /// batch keeps filling, so a busy pipeline sends full batches whatever `linger.ms` says
    /// (sealing it anyway queued one small request per linger behind the busy one, and a
    /// pipeline at 1 000 changes/s fell 30 s behind with `linger.ms=1`).
    fn dispatch(&mut self, now: Instant) {
        let linger = self.shared.cfg.linger;
        for i in 0..self.lanes.len() {
            let lane = &mut self.lanes[i];
            if !lane.open.is_empty()
                && (self.flushing
                    || (lane.waiting_for_linger()
                        && now.duration_since(lane.open.opened) >= linger))
            {
                let b = lane.open.take();
                lane.sealed.push_back(b.seal());
            }
            if lane.busy {
                continue;
            }
            let Some(batch) = lane.sealed.pop_front() else {
                continue;
            };
            lane.busy = true;
            let shared = self.shared.clone();
            let tx = self.done_tx.clone();
            let records = batch.acks.len();
            // In a task of its own: a panic (a bug, or one in a library) fails the sink with a
            // reason instead of leaving the lane busy forever; and it can be aborted.
            let writing = self
                .runtime
                .spawn(async move { write(&shared, batch).await });
            lane.writing = Some(writing.abort_handle());
            self.runtime.spawn(async move {
                let result = writing.await.unwrap_or_else(|e| {
                    Err(SinkError::Fatal(format!(
                        "a bulk request failed unexpectedly: {e}"
                    )))
                });
                // The task thread may be gone (shutdown): nothing left to report to.
                let _ = tx.send(Event::Batch(Done {
                    lane: i,
                    records,
                    result,
                }));
            });
        }
    }

    fn finish(&mut self, event: Event, acks: &mut Vec<Ack>) -> Result<(), SinkError> {
        if self.given_up() {
            // A write that outlived `ABANDON_WAIT`: its batch is no longer counted.
            if let Event::Batch(done) = event {
                self.lanes[done.lane].busy = false;
            }
            return Ok(());
        }
        match event {
            Event::Batch(done) => {
                self.lanes[done.lane].busy = false;
                self.lanes[done.lane].writing = None;
                self.pending -= done.records;
                let (written, rejected) = done.result?;
                self.rejected.extend(rejected);
                for ack in written {
                    match self.reconciliations.iter_mut().find(|r| r.ack == ack) {
                        Some(r) => r.written = true,
                        None => acks.push(ack),
                    }
                }
                self.reconciliations
                    .retain(|r| !(r.abandoned && r.written && !r.running));
                self.start_reconciliations();
            }
            Event::Reconciled(ack) => {
                if let Some(i) = self.reconciliations.iter().position(|r| r.ack == ack) {
                    if !self.reconciliations[i].abandoned {
                        acks.push(ack);
                    }
                    self.reconciliations.remove(i);
                }
            }
        }
        Ok(())
    }

    /// [`finish`](Self::finish); on the first failure, the acks taken so far are kept for
    /// the next poll rather than dropped with it; a failure after that is logged, and the
    /// acks keep coming (several lanes may fail at one mapping conflict).
    fn finish_or_carry(&mut self, event: Event, acks: &mut Vec<Ack>) -> Result<(), SinkError> {
        match self.finish(event, acks) {
            Err(e) if self.failed => {
                warn!("another write failed after the first failure: {e}");
                Ok(())
            }
            Err(e) => {
                self.failed = true;
                self.carried.append(acks);
                Err(e)
            }
            Ok(()) => Ok(()),
        }
    }

    /// Whether the sink gave up its writes ([`Sink::abandon`], or dropped): it takes nothing
    /// more, and drops what comes back.
    fn given_up(&self) -> bool {
        self.shared.abandoned.load(Ordering::Relaxed)
    }

    /// Stops everything the sink has running: no write is sent again (the shared flag, checked
    /// before each attempt), the lanes' writes are aborted, the reconciliations cancelled, the
    /// clock stopped.
    fn halt(&mut self) {
        self.shared.abandoned.store(true, Ordering::SeqCst);
        // A last look at the clock: a task that learns of its loss on waking, before the
        // ticker or a write has run, still logs how long the process stood still.
        self.shared.clock.tick();
        self.ticker.abort();
        for r in &self.reconciliations {
            r.cancel.store(true, Ordering::Relaxed);
        }
        for lane in &mut self.lanes {
            if let Some(w) = lane.writing.take() {
                w.abort();
            }
        }
    }

    /// Starts each reconciliation whose record is written and whose topic has caught up.
    fn start_reconciliations(&mut self) {
        for r in &mut self.reconciliations {
            if r.running || r.abandoned || !r.written || !r.caught_up {
                continue;
            }
            r.running = true;
            let (shared, tx, ack, end, cancel) = (
                self.shared.clone(),
                self.done_tx.clone(),
                r.ack,
                r.end.clone(),
                r.cancel.clone(),
            );
            self.runtime.spawn(async move {
                reconcile::run(&shared, &end, &cancel).await;
                let _ = tx.send(Event::Reconciled(ack));
            });
        }
    }

    /// The shared name of `topic`, borrowed from `last` (the topic of the record before): not
    /// cloned and dropped per record, two locked instructions per record (docs/performance-log.md,
    /// "Locked instructions and the clock").
    fn topic<'s>(
        last: &'s mut Option<Arc<str>>,
        topics: &mut crate::FastMap<String, Arc<str>>,
        topic: &str,
    ) -> &'s Arc<str> {
        if last.as_ref().is_some_and(|t| **t != *topic) {
            *last = None;
        }
        last.get_or_insert_with(|| match topics.get(topic) {
            Some(t) => t.clone(),
            None => {
                let t: Arc<str> = topic.into();
                topics.insert(topic.to_string(), t.clone());
                t
            }
        })
    }
}

impl Sink for ElasticsearchSink {
    fn put(&mut self, rec: SinkRecord<'_>, ack: Ack) -> Result<Outcome, SinkError> {
        if self.given_up() {
            return Err(SinkError::Rewind(
                "the sink gave up its writes and takes no more".into(),
            ));
        }
        let action = match self.mapper.map_assigned(&rec, ack.epoch) {
            Ok(Mapped::Write(a)) => a,
            Ok(Mapped::Skip(why)) => return Ok(Outcome::Skipped(why)),
            Err(e) => {
                return Err(SinkError::Record(format!(
                    "topic {} partition {} offset {}: {e}",
                    rec.topic, rec.partition, rec.offset
                )));
            }
        };
        let (batch_size, bulk_bytes) =
            (self.shared.cfg.batch_size, self.shared.cfg.bulk_size_bytes);
        let source_ts_ms = match rec.value {
            Value::Change(ev) => ev.source.as_ref().and_then(|s| s.ts_ms),
            _ => None,
        };
        let origin = Origin {
            partition: rec.partition,
            offset: rec.offset,
            source_ts_ms,
            kafka_ts_ms: rec.timestamp_ms,
            received_ms: rec.received_ms,
        };
        if let Some(end) = self.mapper.snapshot_end(&rec, &action) {
            self.reconciliations.push(Reconciliation {
                ack,
                end,
                written: false,
                caught_up: false,
                running: false,
                abandoned: false,
                cancel: Default::default(),
            });
        }
        let lane = self.lane_of(&action.index, &action.id);
        let topic = Self::topic(&mut self.last_topic, &mut self.topics, rec.kafka_topic);
        let lane = &mut self.lanes[lane];
        if !lane.open.is_empty() && lane.open.body_len() >= bulk_bytes {
            let b = lane.open.take();
            lane.sealed.push_back(b.seal());
        }
        lane.open.push(action, topic, origin, ack);
        if lane.open.actions() >= batch_size || lane.open.body_len() >= bulk_bytes {
            let b = lane.open.take();
            lane.sealed.push_back(b.seal());
        }
        self.pending += 1;
        Ok(Outcome::Buffered)
    }

    fn poll(&mut self, wait: Duration) -> Result<Vec<Ack>, SinkError> {
        self.dispatch(Instant::now());
        let mut acks = std::mem::take(&mut self.carried);
        let mut got = false;
        while let Ok(done) = self.done_rx.try_recv() {
            got = true;
            self.finish_or_carry(done, &mut acks)?;
        }
        if !got && self.pending() > 0 && !wait.is_zero() {
            // Wake in time for the next linger deadline.
            let wait = self
                .lanes
                .iter()
                .filter(|l| l.waiting_for_linger())
                .map(|l| {
                    (l.open.opened + self.shared.cfg.linger)
                        .saturating_duration_since(Instant::now())
                })
                .min()
                .map_or(wait, |d| d.min(wait));
            if let Ok(done) = self.done_rx.recv_timeout(wait) {
                got = true;
                self.finish_or_carry(done, &mut acks)?;
                while let Ok(done) = self.done_rx.try_recv() {
                    self.finish_or_carry(done, &mut acks)?;
                }
            }
        }
        if got || self.flushing {
            self.dispatch(Instant::now());
        }
        if self.pending() == 0 {
            self.flushing = false;
        }
        Ok(acks)
    }

    fn take_rejected(&mut self) -> Vec<Rejected> {
        std::mem::take(&mut self.rejected)
    }

    fn flush(&mut self) {
        self.flushing = true;
    }

    fn consumer_polled(&self, began: Instant) {
        self.shared.clock.polled(began);
    }

    fn held(&self) -> bool {
        self.shared.clock.held().is_some()
    }

    /// Every lane's write is aborted, and waited for until its request is dropped (at most
    /// `ABANDON_WAIT`): aborting a tokio task only asks it to stop at its next await point, and
    /// a write waking from its backoff could still send once more. The shared flag, checked
    /// before each attempt and again once its body is ready to go, stops a write the abort did
    /// not reach in time. Reconciliations are cancelled, and their delete pages checked against
    /// the same flag; a page already sent is harmless, each delete being conditional on the
    /// document not having been written since its scan.
    fn abandon(&mut self) -> &'static str {
        self.halt();
        let mut busy = 0;
        for lane in &mut self.lanes {
            busy += usize::from(lane.busy);
            lane.open = Batch::new(!self.shared.cfg.fail_on_malformed);
            lane.sealed.clear();
        }
        let deadline = Instant::now() + ABANDON_WAIT;
        while busy > 0 {
            match self
                .done_rx
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(Event::Batch(done)) => {
                    self.lanes[done.lane].busy = false;
                    busy -= 1;
                }
                Ok(Event::Reconciled(_)) => {}
                Err(_) => {
                    warn!(
                        "{busy} bulk request(s) not stopped within {ABANDON_WAIT:?} of being abandoned"
                    );
                    break;
                }
            }
        }
        self.reconciliations.clear();
        // `carried` stays: those writes are done, and a failing task still commits them (a
        // task starting over commits nothing, and builds a new sink).
        self.pending = 0;
        "every unfinished write dropped"
    }

    /// Records in batches. A reconciliation is not waited for: stopping or losing the
    /// partition leaves its record uncommitted, and whoever reads it next reconciles again.
    fn pending(&self) -> usize {
        self.pending
    }

    fn capacity(&self) -> usize {
        self.shared.cfg.max_buffered_records
    }

    fn next_deadline(&self) -> Option<Instant> {
        let linger = self.shared.cfg.linger;
        self.lanes
            .iter()
            .filter(|l| l.waiting_for_linger())
            .map(|l| l.open.opened + linger)
            .min()
    }

    fn trouble(&self) -> Option<String> {
        self.shared.trouble.lock().ok().and_then(|t| t.clone())
    }

    fn holds(&self, record: &SinkRecord<'_>) -> bool {
        self.mapper.holds(record)
    }

    fn awaits_topic(&self, record: &SinkRecord<'_>) -> bool {
        self.mapper.ends_snapshot(record)
    }

    fn passed_over(&mut self, topic: &str, partition: i32, key: PassedKey<'_>) {
        self.mapper.passed_over(topic, partition, key);
    }

    fn topic_caught_up(&mut self, ack: Ack, wait: TopicWait) {
        if wait == TopicWait::CaughtUp {
            if let Some(r) = self.reconciliations.iter_mut().find(|r| r.ack == ack) {
                r.caught_up = true;
            }
            self.start_reconciliations();
        } else if let TopicWait::Never(why) = wait {
            // Not started (it waits to be caught up): the record's write acks it, or has.
            if let Some(i) = self.reconciliations.iter().position(|r| r.ack == ack) {
                let r = self.reconciliations.remove(i);
                warn!(index = %r.end.index, topic = %r.end.topic,
                    "reconciliation after the snapshot skipped: {why}. Documents of rows deleted meanwhile stay, until a later snapshot is reconciled (docs/reconcile.md)");
                if r.written {
                    self.carried.push(ack);
                }
            }
        } else if let Some(r) = self.reconciliations.iter_mut().find(|r| r.ack == ack) {
            // Its partition is gone: the record is read again by the next owner, who
            // reconciles. Its ack is swallowed when its write comes back, and a running
            // reconciliation stops.
            r.abandoned = true;
            r.cancel.store(true, std::sync::atomic::Ordering::Relaxed);
            if r.running {
                tracing::info!(index = %r.end.index, topic = %r.end.topic,
                    "reconciliation after the snapshot cancelled: its record's partition left the task, whose next owner reads the record again and reconciles");
            }
            self.reconciliations
                .retain(|r| !(r.abandoned && r.written && !r.running));
        }
    }
}

impl Drop for ElasticsearchSink {
    /// A stopped task leaves no write and no reconciliation running behind it: what it had
    /// not written is read again from the committed offsets by whoever reads them next.
    fn drop(&mut self) {
        self.halt();
    }
}

/// Writes one batch: sends it, then only its failed items, until every item is written or
/// stale. Retries back off exponentially with jitter; `max.retries` bounds them when set.
async fn write(shared: &Shared, batch: Sealed) -> Result<Written, SinkError> {
    let cfg = &shared.cfg;
    let m = &shared.metrics;
    let mut todo: Vec<usize> = (0..batch.items.len()).collect();
    let mut body = batch.body.clone();
    let mut attempt = 0u32;
    // Attempts counted against `max.retries`: not those refused only by a write block (a
    // rebuild's, which lasts until its alias moves; a disk's flood stage), which clears.
    let mut counted = 0u32;
    let mut rejected = Vec::new();
    // (topic, partition) → (written, stale), for the stale watch.
    let mut tally: Vec<(Arc<str>, i32, u64, u64)> = Vec::new();
    let mut count = |topic: &Arc<str>, o: &batch::Origin, stale: bool| {
        let i = match tally
            .iter()
            .position(|(t, p, _, _)| *p == o.partition && Arc::ptr_eq(t, topic))
        {
            Some(i) => i,
            None => {
                tally.push((topic.clone(), o.partition, 0, 0));
                tally.len() - 1
            }
        };
        if stale {
            tally[i].3 += 1;
        } else {
            tally[i].2 += 1;
        }
    };
    while !todo.is_empty() {
        if shared.abandoned.load(Ordering::SeqCst) {
            return Err(SinkError::Rewind("the sink's writes were abandoned".into()));
        }
        // The process stood still: the partitions may be another member's now (`stall.rs`).
        if let Some(held) = shared.clock.held() {
            tokio::time::sleep(held).await;
            continue;
        }
        // Each timeout doubles the time later requests wait for their response (up to 16×): a
        // slow Elasticsearch executes every copy it is sent, so resending at the same pace
        // floods it. A prompt response brings the wait back down step by step.
        let wait = cfg.read_timeout * (1 << shared.slow.load(Ordering::Relaxed).min(4));
        let sent = Instant::now();
        let may_send = || !shared.abandoned.load(Ordering::SeqCst) && shared.clock.held().is_none();
        let result = shared.client.bulk(body.clone(), wait, &may_send).await;
        if let Err(e) = &result
            && e.not_sent
        {
            // Given up or held since the attempt began: the loop's checks say which.
            continue;
        }
        m.bulk(sent.elapsed().as_secs_f64(), todo.len());
        if result.is_ok() && sent.elapsed() < wait / 4 {
            let _ = shared
                .slow
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |s| s.checked_sub(1));
        }
        let mut blocked = false;
        let problem: String = match result {
            Err(e) if e.certificate_refused => {
                // As wrong credentials: not the record's fault, and no wait mends it.
                return Err(SinkError::Fatal(format!(
                    "Elasticsearch's certificate was refused (every node's, at its last request): {}",
                    e.message
                )));
            }
            Err(e) => {
                if e.timed_out {
                    let _ = shared
                        .slow
                        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |s| {
                            Some((s + 1).min(4))
                        });
                    m.retry("timeout", todo.len() as u64);
                } else {
                    m.retry("transport", todo.len() as u64);
                }
                format!("Elasticsearch unreachable: {}", e.message)
            }
            Ok(Answer {
                status,
                body: resp,
                url,
            }) => match retry::request(
                status,
                &String::from_utf8_lossy(&resp[..resp.len().min(512)]),
            ) {
                RequestOutcome::Fail(msg) => {
                    return Err(SinkError::Fatal(format!("POST {url}: {msg}")));
                }
                RequestOutcome::Retry(msg) => {
                    m.retry(
                        if status == 429 {
                            "http_429"
                        } else {
                            "http_5xx"
                        },
                        todo.len() as u64,
                    );
                    msg
                }
                RequestOutcome::Items => match client::parse_items(&resp, todo.len()) {
                    Err(e) => {
                        // Nothing in it can be trusted: send the same items again.
                        m.retry("bad_response", todo.len() as u64);
                        e
                    }
                    Ok(results) => {
                        let now = now_ms();
                        // Added to the shared histograms when dropped, after this response.
                        let fresh = m.freshness();
                        let Some(results) = results else {
                            let mut deletes = 0;
                            for &i in &todo {
                                let item = &batch.items[i];
                                deletes += u64::from(item.is_delete);
                                let o = &item.origin;
                                fresh.observe(now, o.source_ts_ms, o.kafka_ts_ms, o.received_ms);
                                count(batch.topic(item), o, false);
                            }
                            m.written(action(true), deletes);
                            m.written(action(false), todo.len() as u64 - deletes);
                            break;
                        };
                        let mut again = Vec::new();
                        let mut first_reason = None;
                        blocked = true;
                        let outcomes: Vec<ItemOutcome> = todo
                            .iter()
                            .zip(&results)
                            .map(|(&i, r)| {
                                retry::item(
                                    batch.items[i].is_delete,
                                    r.status,
                                    r.error_type.as_deref(),
                                    r.reason.as_deref(),
                                )
                            })
                            .collect();
                        let resend = retry::resend_in_order(
                            todo.iter().map(|&i| {
                                let item = &batch.items[i];
                                (&**batch.index_of(item), batch.id(item))
                            }),
                            &outcomes,
                        );
                        for ((&i, r), (outcome, resend)) in todo
                            .iter()
                            .zip(&results)
                            .zip(outcomes.into_iter().zip(resend))
                        {
                            let item = &batch.items[i];
                            match outcome {
                                // Written after a retried write of its document: sent again
                                // after it (see `resend_in_order`), counted when it lands.
                                ItemOutcome::Written if resend => again.push(i),
                                ItemOutcome::Written => {
                                    m.written(action(item.is_delete), 1);
                                    let o = &item.origin;
                                    fresh.observe(
                                        now,
                                        o.source_ts_ms,
                                        o.kafka_ts_ms,
                                        o.received_ms,
                                    );
                                    count(batch.topic(item), o, false);
                                }
                                ItemOutcome::Stale => {
                                    m.stale(batch.topic(item), item.origin.partition, 1);
                                    count(batch.topic(item), &item.origin, true);
                                }
                                ItemOutcome::Retry(why) => {
                                    m.retry(
                                        if r.status == 429 {
                                            "item_429"
                                        } else {
                                            "item_5xx"
                                        },
                                        1,
                                    );
                                    blocked &= retry::write_block(r.error_type.as_deref());
                                    first_reason.get_or_insert(why);
                                    again.push(i);
                                }
                                ItemOutcome::Malformed(why) => {
                                    let msg = format!(
                                        "Elasticsearch rejected document `{}` of index `{}` ({}): {why}",
                                        batch.id(item),
                                        batch.index_of(item),
                                        batch.origin(item)
                                    );
                                    if cfg.fail_on_malformed {
                                        return Err(SinkError::Record(msg));
                                    }
                                    m.failed("TASK_PUT");
                                    if cfg.dead_letters {
                                        if cfg.warn_on_malformed {
                                            warn!(
                                                "{msg} (to the dead-letter queue: behavior.on.malformed.documents)"
                                            );
                                        }
                                        rejected.push(Rejected {
                                            ack: item.ack,
                                            topic: batch.topic(item).clone(),
                                            partition: item.origin.partition,
                                            offset: item.origin.offset,
                                            reason: msg,
                                        });
                                    } else if cfg.log_skipped {
                                        // As the task logs a record it drops (`errors.log.enable`).
                                        tracing::error!(
                                            "error tolerated (dropped), where the consumed record is {{topic={}, partition={}, offset={}}}: {msg} (skipped: behavior.on.malformed.documents)",
                                            batch.topic(item),
                                            item.origin.partition,
                                            item.origin.offset
                                        );
                                    } else if cfg.warn_on_malformed {
                                        warn!("{msg} (skipped: behavior.on.malformed.documents)");
                                    } else {
                                        tracing::debug!(
                                            "{msg} (skipped: behavior.on.malformed.documents=ignore)"
                                        );
                                    }
                                }
                                ItemOutcome::Fail(why) => {
                                    return Err(SinkError::Record(format!(
                                        "Elasticsearch refused to write document `{}` of index `{}` ({}): {why}",
                                        batch.id(item),
                                        batch.index_of(item),
                                        batch.origin(item)
                                    )));
                                }
                            }
                        }
                        if again.is_empty() {
                            break;
                        }
                        body = batch.body_of(&again);
                        todo = again;
                        format!(
                            "bulk items rejected, retrying: {}",
                            first_reason.unwrap_or_default()
                        )
                    }
                },
            },
        };
        attempt += 1;
        counted += u32::from(!blocked);
        if let Some(max) = cfg.max_retries
            && counted > max
        {
            return Err(SinkError::Fatal(format!(
                "gave up after {max} retries: {problem}"
            )));
        }
        let delay = crate::backoff::delay(attempt, cfg.retry_backoff, cfg.max_retry_backoff);
        debug!(attempt, ?delay, items = todo.len(), "{problem}");
        if attempt >= 3 {
            warn!(attempt, items = todo.len(), "{problem}");
        }
        if let Ok(mut t) = shared.trouble.lock() {
            *t = Some(problem);
        }
        tokio::time::sleep(delay).await;
    }
    if attempt > 0
        && let Ok(mut t) = shared.trouble.lock()
    {
        *t = None;
    }
    if let Ok(mut watch) = shared.stale.lock() {
        let now = Instant::now();
        for (topic, partition, written, stale) in &tally {
            if let Some(warning) = watch.record(topic, *partition, *written, *stale, now) {
                warn!("{warning}");
            }
        }
    }
    let mut acks = batch.acks;
    if !rejected.is_empty() {
        acks.retain(|a| !rejected.iter().any(|r: &Rejected| r.ack == *a));
    }
    Ok((acks, rejected))
}

/// The `action` label of a written item.
fn action(is_delete: bool) -> &'static str {
    if is_delete { "delete" } else { "index" }
}
