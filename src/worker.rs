//! The worker: runs the tasks of its connectors — starts, pauses, restarts and stops them — on
//! one async runtime shared by their sinks. What runs, and in which state, is decided by the
//! herder (`crate::herder`); the worker only carries it out.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use tracing::{error, info};

use crate::connector::{ConnectorConfig, ConnectorSpec, SinkSpec};
use crate::metrics::{Latency, Registry};
use crate::settings::Settings;
use crate::task::{self, Control, Progress, TaskHandle, TaskStatus};

/// A connector and its running tasks.
struct RunningConnector {
    spec: Arc<ConnectorSpec>,
    control: Arc<Control>,
    tasks: Vec<TaskHandle>,
    /// Some of a running connector's tasks, stopped to be restarted: not the connector.
    restarting: bool,
}

impl RunningConnector {
    fn statuses(&self) -> Vec<TaskStatus> {
        self.tasks.iter().map(TaskHandle::status).collect()
    }
}

/// Connectors stopped whose tasks have not finished yet. A task told to stop finishes its
/// writes first, for up to `flush.timeout.ms` (3 minutes by default) while Elasticsearch is down
/// or slow, and that wait is not made under the herder's lock: every REST request and every
/// other connector's change would wait behind it, on every worker of a cluster (each applies
/// the change). The herder has them finished by a thread of their own
/// ([`Stopping::finish_in_background`]); a connector started again by the same name, its
/// offsets changed, or the worker shut down, waits for them first ([`Stopping::wait_for`]), so
/// a connector's old and new tasks never run side by side.
#[derive(Clone, Default)]
pub struct Stopping(Arc<(Mutex<StoppingState>, Condvar)>);

#[derive(Default)]
struct StoppingState {
    next: u64,
    /// By id: the connector's name, and its tasks until a thread takes them to wait for them.
    stopped: BTreeMap<u64, (String, Option<RunningConnector>)>,
}

impl Stopping {
    fn state(&self) -> std::sync::MutexGuard<'_, StoppingState> {
        self.0.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Tells `c`'s tasks to stop, and keeps them until they are waited for.
    fn add(&self, c: RunningConnector) {
        for t in &c.tasks {
            t.signal_stop();
        }
        let mut st = self.state();
        let id = st.next;
        st.next += 1;
        st.stopped.insert(id, (c.spec.name.clone(), Some(c)));
    }

    /// Waits for the stopped connectors `which` selects: those no thread waits for yet are
    /// waited for here, the others until their thread is done.
    fn wait(&self, metrics: &Registry, which: impl Fn(&str) -> bool) {
        let mut st = self.state();
        loop {
            let Some(id) = st
                .stopped
                .iter()
                .find(|(_, (name, _))| which(name))
                .map(|(id, _)| *id)
            else {
                return;
            };
            let taken = st.stopped.get_mut(&id).and_then(|(_, c)| c.take());
            match taken {
                Some(c) => {
                    drop(st);
                    // Forgotten however the wait ends (a panic too): a name left taken would
                    // hold every later start of that connector for good.
                    let done = Done(self, id);
                    stop_connector(c, metrics);
                    drop(done);
                    st = self.state();
                }
                None => st = self.0.1.wait(st).unwrap_or_else(|p| p.into_inner()),
            }
        }
    }

    /// Forgets stopped connector `id`, and wakes whoever waits for it.
    fn done(&self, id: u64) {
        self.state().stopped.remove(&id);
        self.0.1.notify_all();
    }

    /// Waits until no task of connector `name` is still stopping.
    pub fn wait_for(&self, name: &str, metrics: &Registry) {
        self.wait(metrics, |n| n == name);
    }

    /// Waits for the tasks of every stopped connector no thread waits for yet, on a thread of
    /// their own; returns at once.
    pub fn finish_in_background(&self, metrics: &Registry) {
        if !self.state().stopped.values().any(|(_, c)| c.is_some()) {
            return;
        }
        let (this, metrics) = (self.clone(), metrics.clone());
        let spawned = std::thread::Builder::new()
            .name("cdc-sink-stopping".into())
            .spawn(move || this.wait(&metrics, |_| true));
        if let Err(e) = spawned {
            // No thread to spare: waited for by the next change or the shutdown instead.
            error!("cannot start a thread to wait for stopping tasks: {e}");
        }
    }
}

/// Forgets its stopped connector when dropped (see [`Stopping::wait`]).
struct Done<'a>(&'a Stopping, u64);

impl Drop for Done<'_> {
    fn drop(&mut self) {
        self.0.done(self.1);
    }
}

/// A task's report before: when, its records consumed, its freshness histogram.
type LastReport = (Instant, u64, Latency);

pub struct Worker {
    settings: Arc<Settings>,
    runtime: tokio::runtime::Handle,
    connectors: BTreeMap<String, RunningConnector>,
    /// Connectors stopped whose tasks are still finishing their writes.
    stopping: Stopping,
    /// The metrics of every task this worker runs (`GET /metrics`).
    metrics: Registry,
    /// Each task's records consumed and freshness histogram at the last report, for its rate
    /// and its freshness since.
    last_report: Mutex<BTreeMap<(String, usize), LastReport>>,
}

/// Reads and validates a connector file.
pub fn load_connector(path: &std::path::Path) -> Result<ConnectorSpec, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let config =
        ConnectorConfig::from_json(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    ConnectorSpec::validate(&config)
        .map_err(|e| format!("{}: connector `{}`: {e}", path.display(), config.name))
}

/// What librdkafka refuses in the Kafka clients `spec`'s tasks would create with `settings`
/// (each a `key: message` error, as validation words them): properties each valid alone may not
/// be together, which librdkafka checks only as it creates a client, so that a config is refused
/// when posted or loaded rather than failing each task as it starts.
pub fn check_clients(settings: &Settings, spec: &ConnectorSpec) -> Vec<String> {
    // Each error keyed by the option it comes through, as the validate endpoint places them.
    let mut errors = crate::source::check_consumer(settings, spec);
    if let SinkSpec::Druid(cfg) = &spec.sink
        && let Err(e) = crate::sink::druid::check_producer(cfg, settings)
    {
        errors.push(format!("producer.override.<property>: {e}"));
    }
    // (The Druid connector's queue producer takes the worker's properties only.)
    if let Some(cfg) = &spec.errors.dead_letter
        && let Err(e) = crate::dead_letter::check_producer(cfg, settings)
    {
        errors.push(format!("errors.deadletterqueue.topic.name: {e}"));
    }
    errors
}

/// `spec`, loaded from `path`, when [`check_clients`] finds nothing; its errors otherwise, worded
/// as [`load_connector`]'s.
pub fn checked_clients(
    settings: &Settings,
    spec: ConnectorSpec,
    path: &std::path::Path,
) -> Result<ConnectorSpec, String> {
    match check_clients(settings, &spec).as_slice() {
        [] => Ok(spec),
        errors => Err(format!(
            "{}: connector `{}`: {}",
            path.display(),
            spec.name,
            errors.join("; ")
        )),
    }
}

/// The async runtime the sinks' requests and the REST API run on.
pub fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("cdc-sink-io")
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))
}

impl Worker {
    pub fn new(settings: Arc<Settings>, runtime: tokio::runtime::Handle) -> Worker {
        Worker {
            settings,
            runtime,
            connectors: BTreeMap::new(),
            stopping: Stopping::default(),
            metrics: Registry::new(),
            last_report: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The connectors stopped whose tasks are still finishing, shared.
    pub fn stopping(&self) -> Stopping {
        self.stopping.clone()
    }

    /// The metrics registry of every task this worker runs.
    pub fn metrics(&self) -> &Registry {
        &self.metrics
    }

    /// Starts the tasks of a validated connector, paused if `paused`, once the tasks of a
    /// connector of that name stopped before have finished.
    pub fn start(&mut self, spec: ConnectorSpec, paused: bool) -> Result<(), String> {
        if self.connectors.contains_key(&spec.name) {
            return Err(format!("connector `{}` is already running", spec.name));
        }
        self.stopping.wait_for(&spec.name, &self.metrics);
        let spec = Arc::new(spec);
        info!(connector = %spec.name, config = ?spec.config.redacted(), paused, "starting connector");
        let control = Arc::new(Control::default());
        control.paused.store(paused, Ordering::Relaxed);
        let mut running = RunningConnector {
            spec,
            control,
            tasks: Vec::new(),
            restarting: false,
        };
        running.tasks = (0..running.spec.tasks_max)
            .map(|id| self.spawn(&running, id))
            .collect();
        self.connectors.insert(running.spec.name.clone(), running);
        Ok(())
    }

    fn spawn(&self, c: &RunningConnector, id: usize) -> TaskHandle {
        task::spawn(
            c.spec.clone(),
            id,
            self.settings.clone(),
            self.runtime.clone(),
            Arc::new(self.metrics.task(&c.spec.name, id)),
            c.control.clone(),
        )
    }

    /// How many tasks of `name` run here; `None` when it does not run here.
    pub fn task_count(&self, name: &str) -> Option<usize> {
        self.connectors.get(name).map(|c| c.tasks.len())
    }

    pub fn is_running(&self, name: &str) -> bool {
        self.connectors.contains_key(name)
    }

    /// The states of a connector's tasks; `None` when it is not running here.
    pub fn statuses(&self, name: &str) -> Option<Vec<TaskStatus>> {
        self.connectors.get(name).map(RunningConnector::statuses)
    }

    /// The topics a connector's tasks were assigned partitions of.
    pub fn topics(&self, name: &str) -> BTreeSet<String> {
        self.connectors
            .get(name)
            .and_then(|c| c.control.topics.lock().ok().map(|t| t.clone()))
            .unwrap_or_default()
    }

    pub fn reset_topics(&self, name: &str) {
        if let Some(c) = self.connectors.get(name)
            && let Ok(mut t) = c.control.topics.lock()
        {
            t.clear();
        }
    }

    /// Pauses (or resumes) a connector's tasks: they keep their partitions and consume nothing.
    pub fn set_paused(&self, name: &str, paused: bool) {
        if let Some(c) = self.connectors.get(name) {
            c.control.paused.store(paused, Ordering::Relaxed);
        }
    }

    /// Restarts the tasks of `name` that `which` selects and those [`Worker::stop_for_restart`]
    /// stopped: each finishes its writes, commits and leaves the group (those already stopped
    /// have), and a new one takes its place, run with `spec` (the config validated again; the
    /// others keep theirs) or, when it no longer validates, FAILED with the reason. Returns the
    /// ids restarted.
    pub fn restart_tasks(
        &mut self,
        name: &str,
        which: impl Fn(&TaskStatus) -> bool,
        spec: Result<ConnectorSpec, String>,
    ) -> Vec<usize> {
        let Some(mut c) = self.connectors.remove(name) else {
            return Vec::new();
        };
        let chosen: Vec<usize> = c
            .tasks
            .iter()
            .filter(|t| t.is_restarting() || which(&t.status()))
            .map(|t| t.status().id)
            .collect();
        // Stop them all first, so they leave the group together: one rebalance, not one each.
        for t in c.tasks.iter().filter(|t| chosen.contains(&t.status().id)) {
            t.signal_stop();
        }
        let failed = match spec {
            Ok(spec) if !chosen.is_empty() => {
                c.spec = Arc::new(spec);
                None
            }
            Ok(_) => None,
            Err(why) => Some(why),
        };
        let mut tasks = Vec::with_capacity(c.tasks.len());
        for (id, t) in std::mem::take(&mut c.tasks).into_iter().enumerate() {
            if chosen.contains(&id) {
                t.join();
                tasks.push(match &failed {
                    None => self.spawn(&c, id),
                    Some(why) => TaskHandle::failed(id, self.settings.worker_id(), why.clone()),
                });
            } else {
                tasks.push(t);
            }
        }
        c.tasks = tasks;
        self.connectors.insert(name.to_string(), c);
        chosen
    }

    /// Tells the tasks of `name` that `which` selects to stop, and has them waited for as a
    /// stopped connector's are (see [`Stopping`]), so that their writes do not finish under the
    /// herder's lock; each leaves a RESTARTING stand-in that [`Worker::restart_tasks`] replaces.
    /// Returns the ids.
    pub fn stop_for_restart(
        &mut self,
        name: &str,
        which: impl Fn(&TaskStatus) -> bool,
    ) -> Vec<usize> {
        let Some(c) = self.connectors.get_mut(name) else {
            return Vec::new();
        };
        let worker_id = self.settings.worker_id();
        let mut old = Vec::new();
        for t in c.tasks.iter_mut() {
            let s = t.status();
            if !t.is_restarting() && which(&s) {
                old.push(std::mem::replace(
                    t,
                    TaskHandle::restarting(s.id, worker_id.clone()),
                ));
            }
        }
        let ids = old.iter().map(|t| t.status().id).collect();
        if !old.is_empty() {
            self.stopping.add(RunningConnector {
                spec: c.spec.clone(),
                control: c.control.clone(),
                tasks: old,
                restarting: true,
            });
        }
        ids
    }

    /// Tells a connector's tasks to stop (each finishes its writes and commits) and forgets it;
    /// they are waited for later (see [`Stopping`]).
    pub fn stop_connector(&mut self, name: &str) {
        if let Some(c) = self.connectors.remove(name) {
            self.stopping.add(c);
        }
    }

    /// The trace of a failed task, if one failed.
    pub fn failure(&self) -> Option<String> {
        self.connectors
            .values()
            .flat_map(RunningConnector::statuses)
            .find(|s| s.state == "FAILED")
            .map(|s| s.trace.unwrap_or_default())
    }

    /// Every metric of the tasks this worker runs, with their states, in Prometheus' text
    /// format.
    pub fn metrics_text(&self) -> String {
        let states: Vec<(&str, TaskStatus)> = self
            .connectors
            .values()
            .flat_map(|c| c.statuses().into_iter().map(|s| (c.spec.name.as_str(), s)))
            .collect();
        self.metrics.encode(Registry::task_states(
            states.iter().map(|(c, s)| (*c, s.id, s.state)),
        ))
    }

    /// Sets each task's progress (shown in status), logs it for connectors catching up, and
    /// logs every connector's task states and counters. Called every 30 s.
    pub fn report(&self) {
        let now = Instant::now();
        let mut last = self.last_report.lock().unwrap_or_else(|p| p.into_inner());
        for c in self.connectors.values() {
            let name = c.spec.name.as_str();
            let (mut lag, mut rate) = (0, 0);
            let (total, by_task) = self.metrics.summaries(name);
            for t in &c.tasks {
                let id = t.status().id;
                let s = by_task.get(&id).cloned().unwrap_or_default();
                let before = last.insert(
                    (name.to_string(), id),
                    (now, s.consumed, s.kafka_to_ack.clone()),
                );
                let fresh = match &before {
                    Some((_, _, earlier)) => s.kafka_to_ack.since(earlier),
                    None => s.kafka_to_ack.clone(),
                };
                let per_second = before
                    .map(|(at, n, _)| {
                        let secs = now.duration_since(at).as_secs_f64().max(0.001);
                        (s.consumed.saturating_sub(n) as f64 / secs).round() as u64
                    })
                    .unwrap_or(0);
                lag += s.lag;
                rate += per_second;
                if let Ok(mut st) = t.status.lock() {
                    st.progress = Some(Progress {
                        lag: s.lag,
                        records_per_second: per_second,
                        eta_seconds: eta(s.lag, per_second),
                        freshness_p99_ms: fresh.p99_seconds.map(|p| (p * 1000.0).round() as u64),
                    });
                }
            }
            if lag > 0 {
                let eta =
                    eta(lag, rate).map_or("unknown (not moving)".to_string(), |s| format!("{s} s"));
                info!(connector = %name, lag, records_per_second = rate, "catching up: {lag} records behind, ETA {eta}");
            }
            let tasks = serde_json::to_string(&c.statuses()).unwrap_or_default();
            info!(connector = %name, tasks = %tasks, metrics = %total, "status");
        }
    }

    /// Stops every task and waits for them; false when a task had failed.
    pub fn stop(&mut self) -> bool {
        for c in self.connectors.values() {
            for t in &c.tasks {
                t.signal_stop();
            }
        }
        let mut ok = true;
        for (_, c) in std::mem::take(&mut self.connectors) {
            ok &= stop_connector(c, &self.metrics);
        }
        // And those stopped before, whose writes may still be finishing.
        self.stopping.wait(&self.metrics, |_| true);
        ok
    }
}

fn stop_connector(c: RunningConnector, metrics: &Registry) -> bool {
    for t in &c.tasks {
        t.signal_stop();
    }
    let mut failed = Vec::new();
    for t in c.tasks {
        // Read after the join: a task can fail while it finishes its writes.
        let status = t.status.clone();
        t.join();
        let s = status.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if s.state == "FAILED" {
            failed.push(s);
        }
    }
    for s in &failed {
        error!(connector = %c.spec.name, task = s.id, trace = s.trace.as_deref().unwrap_or(""), "task had failed");
    }
    if c.restarting {
        info!(connector = %c.spec.name, "tasks to restart stopped");
    } else {
        info!(connector = %c.spec.name, metrics = %metrics.summary(&c.spec.name), "connector stopped");
    }
    failed.is_empty()
}

/// Seconds until `lag` records are consumed at `per_second`; `None` when caught up or stalled.
fn eta(lag: u64, per_second: u64) -> Option<u64> {
    (lag > 0 && per_second > 0).then(|| lag.div_ceil(per_second))
}
