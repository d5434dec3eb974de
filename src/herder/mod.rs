//! The herder (Kafka Connect's word): the connectors this worker knows, their configs and
//! target states (RUNNING, PAUSED, STOPPED), and what the worker runs for them. The REST API
//! (`crate::rest`) is a thin layer over these operations.
//!
//! Every operation that changes something is a [`Change`], validated first, then:
//! * standalone: kept in the state file (`store.rs`), then applied here;
//! * distributed: published to the config topic and applied by every worker — this one
//!   included — when it reads it back (`cluster.rs`); the operation answers once this worker
//!   has applied it. All workers apply the same changes in the log's order, so they agree.
//!
//! Each worker runs `tasks.max` tasks of every connector; the consumer group spreads the
//! partitions over all of them.

pub mod cluster;
pub mod offsets;
pub mod store;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tracing::{error, info, warn};

use crate::connector::{self, ConnectorConfig, ConnectorSpec, SinkSpec};
use crate::metrics::Registry;
use crate::settings::Settings;
use crate::task::TaskStatus;
use crate::worker::{Stopping, Worker};
use cluster::Cluster;
use store::{Store, Stored};

/// What a connector should be doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum TargetState {
    Running,
    Paused,
    Stopped,
}

/// Why an operation was refused; the REST API maps each to its status code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Internal(String),
}

/// A change to the connectors, as the config topic carries it. A config and a target state are
/// separate changes (as in Kafka Connect), so a pause never carries an older config with it and
/// a config change never undoes a pause.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Create or replace a connector's config; `target` sets its state too (a new connector
    /// without one runs; a known one keeps its state).
    Put {
        config: ConnectorConfig,
        target: Option<TargetState>,
    },
    /// Set a known connector's target state.
    Target {
        name: String,
        target: TargetState,
    },
    Delete {
        name: String,
    },
    /// Restart the connector (if `only_failed`, only when it is FAILED) and, if `tasks`, its
    /// tasks (all, or the failed ones) on every worker; or task `task` of `worker`.
    Restart {
        name: String,
        only_failed: bool,
        tasks: bool,
        worker: Option<String>,
        task: Option<usize>,
    },
}

/// The version reported in `GET /` and in statuses.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

struct Entry {
    config: ConnectorConfig,
    /// `Err`: the config does not validate on this worker (distributed mode: a placeholder not
    /// set here, an option this version does not know); the connector shows FAILED with it.
    spec: Result<Arc<ConnectorSpec>, String>,
    target: TargetState,
}

impl Entry {
    fn spec(&self) -> Result<Arc<ConnectorSpec>, Error> {
        self.spec.clone().map_err(|e| {
            Error::BadRequest(format!(
                "Connector {} is not valid on this worker: {e}",
                self.config.name
            ))
        })
    }
}

/// A task as the cluster sees it.
struct ClusterTask {
    /// Its number across the cluster: workers in the order of their ids, each worker's tasks
    /// after the previous worker's.
    id: usize,
    /// Its number on its worker.
    local: usize,
    status: TaskStatus,
}

struct Inner {
    worker: Worker,
    connectors: BTreeMap<String, Entry>,
    store: Option<Store>,
    /// Target states read (distributed mode) for connectors not known here: the next config
    /// of that name that brings no state of its own takes it. A worker replaying the compacted
    /// config topic folds them so (a state's record may come before its connector's once
    /// compacted), and workers reading the topic live must end as it does: a pause checked
    /// before a delete landed can land after it, and a config checked before it too.
    targets_ahead: BTreeMap<String, TargetState>,
    /// Stops and deletes of a connector read from the config topic ([`Herder::stop_ahead`])
    /// and not yet applied, by connector: a change applied before them starts none of its
    /// tasks. Started, they would run until the stop's turn, on a worker whose applier waits,
    /// and could commit over offsets another worker changed meanwhile.
    halts_read: BTreeMap<String, usize>,
}

/// The connector `change` stops or deletes, if it does whatever the state before it (a config
/// that sets no state stops nothing by itself).
fn halted_by(change: &Change) -> Option<&str> {
    match change {
        Change::Target {
            name,
            target: TargetState::Stopped,
        }
        | Change::Delete { name } => Some(name),
        Change::Put {
            config,
            target: Some(TargetState::Stopped),
        } => Some(&config.name),
        _ => None,
    }
}

pub struct Herder {
    settings: Arc<Settings>,
    worker_id: String,
    inner: Mutex<Inner>,
    /// Distributed mode: the config and status topics.
    cluster: OnceLock<Arc<Cluster>>,
    /// Shut down: changes read from the config topic are no longer applied.
    closed: AtomicBool,
    /// Held by a REST change that reads a config and writes one made from it (create, PUT,
    /// PATCH), from the read to the write applied: two PATCHes at once each keep the other's
    /// keys. (Across workers the config topic's order decides, as in the README.) Restarts
    /// hold it too, one at a time from their tasks' stop to their start.
    writing: Mutex<()>,
    /// The worker's connectors stopped whose tasks are still finishing (waited for without
    /// `inner`'s lock), and the metrics their end is logged with.
    stopping: Stopping,
    metrics: Registry,
}

/// The connector a change is about.
fn subject(change: &Change) -> &str {
    match change {
        Change::Put { config, .. } => &config.name,
        Change::Target { name, .. } | Change::Delete { name } | Change::Restart { name, .. } => {
            name
        }
    }
}

/// The message of a 400 for an invalid config, as Kafka Connect words it.
fn invalid(errors: &[String]) -> Error {
    Error::BadRequest(format!(
        "Connector configuration is invalid and contains the following {} error(s):\n{}\nYou can also find the above list of errors at the endpoint `/connector-plugins/{{connectorType}}/config/validate`",
        errors.len(),
        errors.join("\n")
    ))
}

fn validate(config: &ConnectorConfig) -> Result<ConnectorSpec, Error> {
    ConnectorSpec::validate(config).map_err(|e| invalid(&e.0))
}

/// A config as [`validate`] takes it, whose Kafka clients librdkafka also creates with this
/// worker's settings: properties each valid alone may not be together, which librdkafka checks
/// only as it creates a client (otherwise each task would fail as it starts).
fn validate_with(settings: &Settings, config: &ConnectorConfig) -> Result<ConnectorSpec, Error> {
    let spec = validate(config)?;
    let errors = crate::worker::check_clients(settings, &spec);
    match errors.is_empty() {
        true => Ok(spec),
        false => Err(invalid(&errors)),
    }
}

fn not_found(name: &str) -> Error {
    Error::NotFound(format!("Connector {name} not found"))
}

impl Herder {
    /// A herder over `worker`, with connectors kept in `store` (none: nothing is kept).
    /// Connectors already in the store are started in their target state.
    pub fn new(
        worker: Worker,
        store: Option<Store>,
        stored: Vec<Stored>,
    ) -> Result<Herder, String> {
        let settings = Arc::new(worker.settings().clone());
        let (stopping, metrics) = (worker.stopping(), worker.metrics().clone());
        let herder = Herder {
            worker_id: settings.worker_id(),
            settings,
            inner: Mutex::new(Inner {
                worker,
                connectors: BTreeMap::new(),
                store,
                targets_ahead: BTreeMap::new(),
                halts_read: BTreeMap::new(),
            }),
            cluster: OnceLock::new(),
            closed: AtomicBool::new(false),
            writing: Mutex::new(()),
            stopping,
            metrics,
        };
        {
            let mut inner = herder.lock();
            // A stored connector that no longer validates here (a placeholder's variable or
            // file gone) is FAILED with the reason, as a change read in distributed mode is:
            // the others run, and a restart validates it again once it is mended. Refusing to
            // start would stop every connector of the worker for one.
            for s in stored {
                let name = s.config.name.clone();
                let change = Change::Put {
                    config: s.config,
                    target: Some(s.state),
                };
                if let Err(e) = inner.apply(&change, &herder.worker_id) {
                    error!(connector = %name, "cannot start the stored connector: {e}");
                }
            }
        }
        Ok(herder)
    }

    fn writing(&self) -> MutexGuard<'_, ()> {
        self.writing.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn worker_id(&self) -> &str {
        &self.worker_id
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Distributed mode: the config and status topics this herder publishes to.
    pub fn set_cluster(&self, cluster: Arc<Cluster>) {
        let _ = self.cluster.set(cluster);
    }

    /// The target state of a connector, if it is known.
    pub fn target(&self, name: &str) -> Option<TargetState> {
        self.lock().connectors.get(name).map(|e| e.target)
    }

    /// The config of a connector as posted, if it is known.
    pub fn config_of(&self, name: &str) -> Option<ConnectorConfig> {
        self.lock().connectors.get(name).map(|e| e.config.clone())
    }

    pub fn names(&self) -> Vec<String> {
        self.lock().connectors.keys().cloned().collect()
    }

    /// Creates a connector (`POST /connectors`); a connector from a `--connector` file replaces
    /// a known one of the same name when `replace`.
    pub fn create(
        &self,
        mut config: ConnectorConfig,
        initial: TargetState,
        replace: bool,
    ) -> Result<Value, Error> {
        let name = config.name.clone();
        let _writing = self.writing_for(&name);
        self.catch_up()?;
        {
            let inner = self.lock();
            if let Some(old) = inner.connectors.get(&name) {
                if !replace {
                    return Err(Error::Conflict(format!("Connector {name} already exists")));
                }
                if old.config == config && old.target == initial {
                    return Ok(self.info_of(&inner, &name));
                }
            }
            let stored = inner.connectors.get(&name).map(|old| &old.config.config);
            restore_hidden(&mut config.config, stored)?;
        }
        validate_with(&self.settings, &config)?;
        self.submit(Change::Put {
            config,
            target: Some(initial),
        })?;
        self.info(&name)
    }

    /// Creates or replaces a connector's config (`PUT /connectors/{n}/config`); true when created.
    pub fn put_config(
        &self,
        name: &str,
        map: BTreeMap<String, String>,
    ) -> Result<(Value, bool), Error> {
        let _writing = self.writing_for(name);
        self.catch_up()?;
        self.put_config_held(name, map)
    }

    /// [`Herder::put_config`], `writing` held.
    fn put_config_held(
        &self,
        name: &str,
        mut map: BTreeMap<String, String>,
    ) -> Result<(Value, bool), Error> {
        if let Some(n) = map.get("name")
            && n != name
        {
            return Err(Error::BadRequest(format!(
                "Connector name configuration ({n}) doesn't match connector name in the URL ({name})"
            )));
        }
        map.insert("name".into(), name.to_string());
        restore_hidden(&mut map, self.config_of(name).as_ref().map(|c| &c.config))?;
        let config = ConnectorConfig {
            name: name.to_string(),
            config: map,
        };
        validate_with(&self.settings, &config)?;
        let existing = self.target(name);
        // A new connector runs (whatever an older one of the same name was set to).
        self.submit(Change::Put {
            config,
            target: existing.is_none().then_some(TargetState::Running),
        })?;
        Ok((self.info(name)?, existing.is_none()))
    }

    /// Changes some keys of a connector's config (`PATCH /connectors/{n}/config`; a null value
    /// removes the key).
    pub fn patch_config(
        &self,
        name: &str,
        patch: BTreeMap<String, Option<String>>,
    ) -> Result<Value, Error> {
        let _writing = self.writing_for(name);
        self.catch_up()?;
        let mut map = self.config_of(name).ok_or_else(|| not_found(name))?.config;
        for (k, v) in patch {
            match v {
                Some(v) => map.insert(k, v),
                None => map.remove(&k),
            };
        }
        self.put_config_held(name, map).map(|(info, _)| info)
    }

    /// Stops a connector's tasks (they commit what they wrote) and forgets it. Taken in turn
    /// with the other changes of configs (`writing`): a PATCH read before a delete and
    /// published after it would bring the connector back.
    pub fn delete(&self, name: &str) -> Result<(), Error> {
        let _writing = self.writing();
        self.catch_up()?;
        self.lock().entry(name)?;
        self.submit(Change::Delete {
            name: name.to_string(),
        })
    }

    /// `{"name", "config", "tasks", "type"}`, secrets hidden.
    pub fn info(&self, name: &str) -> Result<Value, Error> {
        let inner = self.lock();
        inner.entry(name)?;
        Ok(self.info_of(&inner, name))
    }

    fn info_of(&self, inner: &Inner, name: &str) -> Value {
        let Some(e) = inner.connectors.get(name) else {
            return Value::Null;
        };
        let tasks: Vec<Value> = (0..self.task_count(inner, name))
            .map(|id| json!({"connector": name, "task": id}))
            .collect();
        json!({"name": name, "config": e.config.redacted(), "tasks": tasks, "type": "sink"})
    }

    /// How many tasks a connector has across the cluster (none when stopped).
    fn task_count(&self, inner: &Inner, name: &str) -> usize {
        match inner.connectors.get(name) {
            Some(e) if e.target != TargetState::Stopped => {
                let all = self.all_tasks(inner, name).len();
                match &e.spec {
                    Ok(spec) if all == 0 => spec.tasks_max,
                    _ => all,
                }
            }
            _ => 0,
        }
    }

    /// The config, secrets hidden.
    pub fn config(&self, name: &str) -> Result<BTreeMap<String, String>, Error> {
        Ok(self.lock().entry(name)?.config.redacted())
    }

    /// `[{"id": {"connector", "task"}, "config"}]`, every worker's tasks.
    pub fn tasks(&self, name: &str) -> Result<Value, Error> {
        let inner = self.lock();
        let config = inner.entry(name)?.config.redacted();
        let tasks: Vec<Value> = (0..self.task_count(&inner, name))
            .map(|id| json!({"id": {"connector": name, "task": id}, "config": config}))
            .collect();
        Ok(Value::Array(tasks))
    }

    pub fn status(&self, name: &str) -> Result<Value, Error> {
        let inner = self.lock();
        if !inner.connectors.contains_key(name) {
            return Err(Error::NotFound(format!(
                "No status found for connector {name}"
            )));
        }
        Ok(self.status_of(&inner, name, |_| None))
    }

    pub fn task_status(&self, name: &str, id: usize) -> Result<Value, Error> {
        let inner = self.lock();
        self.all_tasks(&inner, name)
            .into_iter()
            .find(|t| t.id == id)
            .map(|t| self.task_json(&t, None))
            .ok_or_else(|| Error::NotFound(format!("No status found for task {name}-{id}")))
    }

    /// The tasks of `name` on every worker, numbered across the cluster.
    fn all_tasks(&self, inner: &Inner, name: &str) -> Vec<ClusterTask> {
        let mut by_worker: BTreeMap<String, Vec<TaskStatus>> = BTreeMap::new();
        if let Some(c) = self.cluster.get() {
            for (w, tasks) in c.others(name) {
                by_worker.insert(w, tasks);
            }
        }
        if let Some(local) = inner.worker.statuses(name) {
            by_worker.insert(self.worker_id.clone(), local);
        }
        let mut out = Vec::new();
        for tasks in by_worker.into_values() {
            let base = out.len();
            for t in tasks {
                out.push(ClusterTask {
                    id: base + t.id,
                    local: t.id,
                    status: t,
                });
            }
        }
        out
    }

    fn task_json(&self, t: &ClusterTask, state: Option<&str>) -> Value {
        let s = &t.status;
        let mut v = json!({"id": t.id, "state": state.unwrap_or(s.state), "worker_id": s.worker_id, "version": VERSION});
        if let Some(t) = &s.trace {
            v["trace"] = json!(t);
        }
        if let Some(t) = &s.trouble {
            v["trouble"] = json!(t);
        }
        if let Some(p) = &s.progress {
            v["progress"] = json!(p);
        }
        v
    }

    /// Where and why the connector failed: on this worker (its config does not validate here),
    /// else on another live one that says so (in distributed mode each worker validates a
    /// config itself, and any worker shows the failure, as Kafka Connect's status does).
    fn failed_where(&self, inner: &Inner, name: &str) -> Option<(String, String)> {
        let entry = inner.connectors.get(name)?;
        // Not while stopped, as nothing runs then: the other workers (which read this worker's
        // published state, `local_statuses`) show it STOPPED too, until a resume.
        if let Err(why) = &entry.spec
            && entry.target != TargetState::Stopped
        {
            return Some((self.worker_id.clone(), why.clone()));
        }
        self.cluster.get().and_then(|c| c.failed_elsewhere(name))
    }

    /// The status JSON; `restarting` names tasks shown as RESTARTING instead of their state.
    fn status_of(
        &self,
        inner: &Inner,
        name: &str,
        restarting: impl Fn(&TaskStatus) -> Option<&'static str>,
    ) -> Value {
        let entry = inner.connectors.get(name);
        let failed = self.failed_where(inner, name);
        let state = match entry.map(|e| e.target) {
            _ if failed.is_some() => "FAILED",
            Some(TargetState::Paused) => "PAUSED",
            Some(TargetState::Stopped) => "STOPPED",
            _ => "RUNNING",
        };
        let tasks: Vec<Value> = self
            .all_tasks(inner, name)
            .iter()
            .map(|t| self.task_json(t, restarting(&t.status)))
            .collect();
        let worker = failed.as_ref().map_or(&self.worker_id, |(w, _)| w);
        let mut connector = json!({"state": state, "worker_id": worker, "version": VERSION});
        if let Some((_, why)) = failed {
            connector["trace"] = json!(why);
        }
        json!({
            "name": name,
            "connector": connector,
            "tasks": tasks,
            "type": "sink",
        })
    }

    pub fn pause(&self, name: &str) -> Result<(), Error> {
        self.set_target(name, TargetState::Paused)
    }

    pub fn resume(&self, name: &str) -> Result<(), Error> {
        self.set_target(name, TargetState::Running)
    }

    /// Stops the tasks (they commit and release their partitions); config and offsets stay.
    pub fn stop(&self, name: &str) -> Result<(), Error> {
        self.set_target(name, TargetState::Stopped)
    }

    fn set_target(&self, name: &str, target: TargetState) -> Result<(), Error> {
        let _writing = if target == TargetState::Stopped {
            self.writing()
        } else {
            self.writing_for(name)
        };
        self.catch_up()?;
        {
            let inner = self.lock();
            if inner.entry(name)?.target == target {
                return Ok(());
            }
        }
        self.submit(Change::Target {
            name: name.to_string(),
            target,
        })
    }

    /// `POST /connectors/{n}/restart`: `None` for the plain form (the connector alone), else
    /// the status with what restarts as RESTARTING, taken before the restart. Restarting the
    /// connector here is validating its config again, its placeholders read again, on each
    /// worker where it had failed (where it runs, there is nothing more to restart: its tasks
    /// keep running, as in Kafka Connect); restarting a task reads them again too.
    pub fn restart(
        &self,
        name: &str,
        include_tasks: bool,
        only_failed: bool,
    ) -> Result<Option<Value>, Error> {
        // One change at a time (standalone: another restart between this one's stop of its
        // tasks and their start would have its own stand-ins started while its old tasks still
        // finish their writes).
        let _writing = self.writing();
        self.catch_up()?;
        let status = {
            let inner = self.lock();
            let entry = inner.entry(name)?;
            let plain = !include_tasks && !only_failed;
            let connector = (!only_failed || self.failed_where(&inner, name).is_some())
                && entry.target != TargetState::Stopped;
            let chosen = |s: &TaskStatus| include_tasks && (!only_failed || s.state == "FAILED");
            let mut status = self.status_of(&inner, name, |s| chosen(s).then_some("RESTARTING"));
            if connector {
                status["connector"]["state"] = json!("RESTARTING");
            }
            (!plain).then_some(status)
        };
        self.submit(Change::Restart {
            name: name.to_string(),
            only_failed,
            tasks: include_tasks,
            worker: None,
            task: None,
        })?;
        Ok(status)
    }

    pub fn restart_task(&self, name: &str, id: usize) -> Result<(), Error> {
        let _writing = self.writing();
        self.catch_up()?;
        let task = {
            let inner = self.lock();
            inner.entry(name)?;
            self.all_tasks(&inner, name)
                .into_iter()
                .find(|t| t.id == id)
        };
        let Some(task) = task else {
            return Err(Error::NotFound(format!("Unknown task: {name}-{id}")));
        };
        self.submit(Change::Restart {
            name: name.to_string(),
            only_failed: false,
            tasks: true,
            worker: Some(task.status.worker_id),
            task: Some(task.local),
        })
    }

    /// Makes `change` happen: kept and applied here (standalone), or published for every worker
    /// and applied here once read back (distributed).
    fn submit(&self, change: Change) -> Result<(), Error> {
        if let Some(c) = self.cluster.get() {
            let offset = c.publish(&change)?;
            return c.wait_applied(offset);
        }
        {
            let mut inner = self.lock();
            if self.closed.load(Ordering::Relaxed) {
                return Err(Error::Internal("the worker is shutting down".into()));
            }
            inner.save(&change)?;
        }
        self.settle(&change);
        let mut inner = self.lock();
        if self.closed.load(Ordering::Relaxed) {
            return Err(Error::Internal("the worker is shutting down".into()));
        }
        let applied = inner
            .apply(&change, &self.worker_id)
            .map_err(Error::Internal);
        drop(inner);
        self.stopping.finish_in_background(&self.metrics);
        applied
    }

    /// Applies a change read from the config topic; `read_ahead`: [`Herder::stop_ahead`] saw
    /// it as it was read (not a change of the history a worker folds as it starts). A change
    /// that a stop or delete of its connector read after it will undo starts none of the
    /// connector's tasks ([`Inner::held_back`]): started, they would run until that change's
    /// turn, on a worker whose applier may wait, and could join the group and commit over
    /// offsets another worker changed meanwhile.
    pub fn apply(&self, change: &Change, read_ahead: bool) {
        let held = {
            let mut inner = self.lock();
            // Before anything that may fail: a count left behind would hold the connector
            // stopped here for good.
            if read_ahead {
                inner.count_applied(change);
            }
            inner.held_back(change)
        };
        if !held {
            self.settle(change);
        }
        let mut inner = self.lock();
        if self.closed.load(Ordering::Relaxed) {
            return;
        }
        let applied = if inner.held_back(change) {
            info!(connector = %subject(change), "a later stop or delete of the connector was read: this earlier change starts none of its tasks");
            inner.apply_held_back(change, &self.worker_id)
        } else {
            inner.apply(change, &self.worker_id)
        };
        if let Err(e) = applied {
            error!("cannot apply a change to the connectors: {e}");
        }
        drop(inner);
        // Tasks the change stopped finish their writes (up to `flush.timeout.ms`) on a thread
        // of their own, not under the lock every REST request takes.
        self.stopping.finish_in_background(&self.metrics);
    }

    /// What of `change` is done at once when it is read, in distributed mode, while an earlier
    /// change may still wait for old tasks ([`Herder::settle`]: the config topic's changes are
    /// applied one after another): the tasks it stops are told to stop, the ones it pauses are
    /// paused. Left running until the change's turn, they would write and commit under a
    /// config or state the cluster has replaced for as long as that wait lasts (up to another
    /// connector's `flush.timeout.ms`). Anything the change starts waits for its turn; a later
    /// change that starts the tasks again starts them then.
    pub fn stop_ahead(&self, change: &Change) {
        if self.closed.load(Ordering::Relaxed) {
            return;
        }
        let mut inner = self.lock();
        match change {
            Change::Put { config, target } => {
                let name = &config.name;
                let replaced = inner
                    .connectors
                    .get(name)
                    .is_some_and(|e| e.config != *config);
                match inner.target_of_put(name, *target) {
                    TargetState::Stopped => inner.worker.stop_connector(name),
                    _ if replaced => inner.worker.stop_connector(name),
                    TargetState::Paused => inner.worker.set_paused(name, true),
                    TargetState::Running => {}
                }
            }
            Change::Target {
                name,
                target: TargetState::Stopped,
            }
            | Change::Delete { name } => inner.worker.stop_connector(name),
            Change::Target {
                name,
                target: TargetState::Paused,
            } => inner.worker.set_paused(name, true),
            Change::Target { .. } | Change::Restart { .. } => {}
        }
        if let Some(name) = halted_by(change) {
            *inner.halts_read.entry(name.to_string()).or_default() += 1;
        }
        drop(inner);
        self.stopping.finish_in_background(&self.metrics);
    }

    /// Before `change` is applied: a new config for a connector running here stops its tasks,
    /// a restart of tasks running here stops them, and they (or tasks of that connector stopped
    /// before) are waited for without `inner`'s lock, so that the REST API answers meanwhile
    /// (and, in distributed mode, this worker keeps publishing its task states); the change
    /// then starts the new ones.
    fn settle(&self, change: &Change) {
        // Only a change that may start the connector's tasks here waits: a stop, a delete, a
        // new config of a stopped connector, a restart of a stopped connector or one meant for
        // another worker starts nothing, and waiting would hold the config topic's applier
        // (every later change, on every connector) for nothing.
        let may_start = match change {
            Change::Put { config, target } => {
                let mut inner = self.lock();
                let to = inner.target_of_put(&config.name, *target);
                if inner
                    .connectors
                    .get(&config.name)
                    .is_some_and(|e| e.config != *config)
                {
                    inner.worker.stop_connector(&config.name);
                }
                to != TargetState::Stopped
            }
            Change::Target { target, .. } => *target != TargetState::Stopped,
            Change::Delete { .. } => false,
            Change::Restart {
                name,
                only_failed,
                tasks,
                worker,
                task,
            } => {
                let mine = worker.as_deref().is_none_or(|w| w == self.worker_id);
                let mut inner = self.lock();
                if mine && *tasks {
                    inner.stop_for_restart(name, *only_failed, *task);
                }
                // A stopped connector's restart starts nothing, nor does a restart of the
                // connector alone where it runs (see `Inner::apply`).
                mine && inner.connectors.get(name).is_some_and(|e| {
                    e.target != TargetState::Stopped && (*tasks || e.spec.is_err())
                })
            }
        };
        if may_start {
            self.stopping.wait_for(subject(change), &self.metrics);
        }
    }

    /// The `writing` lock, taken once the old tasks of connector `name` (stopped or deleted
    /// before) have ended, so that a change of `name` waiting for them does not hold every
    /// other connector's changes behind it. ([`Herder::settle`] waits again should another stop
    /// have come in between.)
    fn writing_for(&self, name: &str) -> MutexGuard<'_, ()> {
        self.stopping.wait_for(name, &self.metrics);
        self.writing()
    }

    /// This worker's task states, per connector (for the status topic).
    /// Per connector: why it failed on this worker (its config does not validate here; not
    /// when stopped, as nothing runs then), and this worker's task states.
    pub fn local_statuses(&self) -> BTreeMap<String, (Option<String>, Vec<TaskStatus>)> {
        let inner = self.lock();
        inner
            .connectors
            .iter()
            .map(|(n, e)| {
                let failed = match &e.spec {
                    Err(why) if e.target != TargetState::Stopped => Some(why.clone()),
                    _ => None,
                };
                (
                    n.clone(),
                    (failed, inner.worker.statuses(n).unwrap_or_default()),
                )
            })
            .collect()
    }

    /// The topics the connector's tasks read (were assigned partitions of).
    pub fn topics(&self, name: &str) -> Result<BTreeSet<String>, Error> {
        let inner = self.lock();
        inner.entry(name)?;
        Ok(inner.worker.topics(name))
    }

    /// Forgets the topics recorded so far (`PUT /connectors/{n}/topics/reset`).
    pub fn reset_topics(&self, name: &str) -> Result<(), Error> {
        let inner = self.lock();
        inner.entry(name)?;
        inner.worker.reset_topics(name);
        Ok(())
    }

    /// Druid supervisor specs for a `druid` connector's output topics.
    pub fn druid_spec(&self, name: &str) -> Result<Value, Error> {
        let spec = self.lock().entry(name)?.spec()?;
        if !matches!(spec.sink, SinkSpec::Druid(_)) {
            return Err(Error::BadRequest(format!(
                "Connector {name} is not a druid connector"
            )));
        }
        crate::druid_spec::run(&self.settings, &spec)
            .map(Value::from)
            .map_err(Error::BadRequest)
    }

    /// The offsets the connector's consumer group committed.
    pub fn offsets(&self, name: &str) -> Result<Vec<offsets::SinkOffset>, Error> {
        let spec = self.lock().entry(name)?.spec()?;
        offsets::read(&self.settings, &spec).map_err(Error::Internal)
    }

    /// Commits `to` for the connector's group (`PATCH /connectors/{n}/offsets`); only when stopped.
    pub fn alter_offsets(&self, name: &str, to: &[offsets::SinkOffset]) -> Result<(), Error> {
        self.catch_up()?;
        self.stopping.wait_for(name, &self.metrics);
        let spec = self.lock().stopped(name)?;
        offsets::alter(&self.settings, &spec, to)
    }

    /// Deletes the connector's consumer group (`DELETE /connectors/{n}/offsets`); only when stopped.
    pub fn reset_offsets(&self, name: &str) -> Result<(), Error> {
        self.catch_up()?;
        // Its tasks stopped here leave the group once their writes are finished.
        self.stopping.wait_for(name, &self.metrics);
        let spec = self.lock().stopped(name)?;
        offsets::reset(&self.settings, &spec).map_err(Error::Internal)
    }

    /// In distributed mode, waits until this worker has applied every change another worker
    /// may have answered for (Kafka Connect refreshes its config snapshot likewise before it
    /// checks that a connector is stopped): a connector resumed through another worker must
    /// not have its offsets reset here as though still stopped. Every change asked for over
    /// REST checks against this view too: a resume sent to a worker that had not yet read the
    /// pause another answered for was taken as already done, and nothing was written (two
    /// workers behind one load balancer); a delete of a connector just created elsewhere was a
    /// 404.
    fn catch_up(&self) -> Result<(), Error> {
        match self.cluster.get() {
            Some(c) => c.catch_up(),
            None => Ok(()),
        }
    }

    /// Stops every task (each commits); false when a task had failed.
    pub fn shutdown(&self) -> bool {
        let mut inner = self.lock();
        self.closed.store(true, Ordering::Relaxed);
        inner.worker.stop()
    }

    /// Logs every connector's task states and counters.
    /// `GET /metrics`: the metrics of the tasks running on this worker.
    pub fn metrics_text(&self) -> String {
        self.lock().worker.metrics_text()
    }

    pub fn report(&self) {
        self.lock().worker.report();
    }
}

impl Inner {
    fn entry(&self, name: &str) -> Result<&Entry, Error> {
        self.connectors.get(name).ok_or_else(|| not_found(name))
    }

    /// The spec of a stopped connector; refused otherwise, as Kafka Connect refuses.
    fn stopped(&self, name: &str) -> Result<Arc<ConnectorSpec>, Error> {
        let e = self.entry(name)?;
        if e.target != TargetState::Stopped {
            return Err(Error::BadRequest(format!(
                "Connectors must be in the STOPPED state before their offsets can be modified. This can be done for the specified connector by issuing a 'PUT' request to the '/connectors/{name}/stop' endpoint"
            )));
        }
        e.spec()
    }

    /// Registers a validated connector and starts it in `target`.
    fn launch(
        &mut self,
        spec: ConnectorSpec,
        config: ConnectorConfig,
        target: TargetState,
    ) -> Result<(), String> {
        let spec = Arc::new(spec);
        if target != TargetState::Stopped {
            self.worker
                .start((*spec).clone(), target == TargetState::Paused)?;
        }
        self.connectors.insert(
            config.name.clone(),
            Entry {
                config,
                spec: Ok(spec),
                target,
            },
        );
        Ok(())
    }

    /// Before a restart of connector `name`'s tasks is applied ([`Herder::settle`]): the tasks it
    /// restarts are told to stop, to be waited for without the lock; all of them when the
    /// config, validated again, gives another task count.
    fn stop_for_restart(&mut self, name: &str, only_failed: bool, task: Option<usize>) {
        let Some(e) = self.connectors.get(name) else {
            return;
        };
        let Ok(spec) = &e.spec else {
            return;
        };
        let count = ConnectorSpec::validate(&e.config).map_or(spec.tasks_max, |s| s.tasks_max);
        if self.worker.task_count(name).is_some_and(|n| n != count) {
            self.worker.stop_connector(name);
            return;
        }
        self.worker
            .stop_for_restart(name, restarts(only_failed, task));
    }

    /// The state a config of connector `name` carrying `target` leaves it in: its own, else the
    /// connector's, else one kept for it ([`Inner::targets_ahead`]), else running.
    fn target_of_put(&self, name: &str, target: Option<TargetState>) -> TargetState {
        target
            .or(self.connectors.get(name).map(|e| e.target))
            .or(self.targets_ahead.get(name).copied())
            .unwrap_or(TargetState::Running)
    }

    /// Counts `change`, read from the config topic after [`Herder::stop_ahead`] counted it, as
    /// applied: a stop or delete is no longer ahead.
    fn count_applied(&mut self, change: &Change) {
        if let Some(name) = halted_by(change)
            && let Some(n) = self.halts_read.get_mut(name)
        {
            *n -= 1;
            if *n == 0 {
                self.halts_read.remove(name);
            }
        }
    }

    /// Whether `change` is to start none of its connector's tasks: a stop or delete of the
    /// connector read after it is still to be applied (it is not one itself).
    fn held_back(&self, change: &Change) -> bool {
        halted_by(change).is_none() && self.halts_read.contains_key(subject(change))
    }

    /// Carries out a change [`Inner::held_back`]: as far as it starts nothing, leaving the
    /// connector stopped here until the stop or delete read after it is applied.
    fn apply_held_back(&mut self, change: &Change, me: &str) -> Result<(), String> {
        match change {
            Change::Put { config, .. } => self.apply(
                &Change::Put {
                    config: config.clone(),
                    target: Some(TargetState::Stopped),
                },
                me,
            ),
            Change::Target { name, .. } => self.set_target(name, TargetState::Stopped),
            Change::Delete { .. } | Change::Restart { .. } => Ok(()),
        }
    }

    /// Carries out a change on this worker (`me`).
    fn apply(&mut self, change: &Change, me: &str) -> Result<(), String> {
        match change {
            Change::Put { config, target } => {
                let name = &config.name;
                let known = self
                    .connectors
                    .get(name)
                    .map(|e| (e.config == *config, e.target));
                let target = self.target_of_put(name, *target);
                self.targets_ahead.remove(name);
                match known {
                    Some((true, t)) if t == target => Ok(()),
                    Some((true, _)) => self.set_target(name, target),
                    known => {
                        if known.is_some() {
                            info!(connector = %name, "config changed: restarting its tasks");
                            self.worker.stop_connector(name);
                            self.connectors.remove(name);
                        }
                        match ConnectorSpec::validate(config) {
                            Ok(spec) => self.launch(spec, config.clone(), target),
                            Err(e) => {
                                // Known, and FAILED: a pause, stop or delete still applies.
                                let why = format!("the config is not valid on this worker: {e}");
                                error!(connector = %name, "{why}");
                                self.connectors.insert(
                                    name.clone(),
                                    Entry {
                                        config: config.clone(),
                                        spec: Err(why),
                                        target,
                                    },
                                );
                                Ok(())
                            }
                        }
                    }
                }
            }
            Change::Target { name, target } => self.set_target(name, *target),
            Change::Delete { name } => {
                self.targets_ahead.remove(name);
                self.worker.stop_connector(name);
                if self.connectors.remove(name).is_some() {
                    info!(connector = %name, "deleted");
                }
                Ok(())
            }
            Change::Restart {
                name,
                only_failed,
                tasks,
                worker,
                task,
            } => {
                if worker.as_deref().is_some_and(|w| w != me) {
                    return Ok(());
                }
                let Some(e) = self.connectors.get(name) else {
                    return Ok(());
                };
                // A connector that runs here has nothing to restart alone.
                if !tasks && e.spec.is_ok() {
                    return Ok(());
                }
                let (config, target) = (e.config.clone(), e.target);
                // The config is validated again, its placeholders read again: a connector
                // that did not validate on this worker (a placeholder it could not resolve)
                // starts if it now does; restarted tasks take what the placeholders give now
                // (a rotated password), as Kafka Connect resolves them at each task's start.
                let now = ConnectorSpec::validate(&config)
                    .map_err(|err| format!("the config is not valid on this worker: {err}"));
                if e.spec.is_err() {
                    if task.is_some() {
                        return Ok(());
                    }
                    return match now {
                        Ok(spec) => {
                            info!(connector = %name, "its config now validates: started");
                            self.connectors.remove(name);
                            self.launch(spec, config, target)
                        }
                        Err(why) => {
                            error!(connector = %name, "{why}");
                            if let Some(e) = self.connectors.get_mut(name) {
                                e.spec = Err(why);
                            }
                            Ok(())
                        }
                    };
                }
                match &now {
                    Err(why) => {
                        error!(connector = %name, "the restarted tasks cannot start: {why}");
                        // All stopped for another task count, which it no longer validates
                        // to: FAILED with the reason, as a config invalid here is.
                        if !self.worker.is_running(name) && target != TargetState::Stopped {
                            if let Some(e) = self.connectors.get_mut(name) {
                                e.spec = Err(why.clone());
                            }
                            return Ok(());
                        }
                    }
                    // Its tasks start from this config from now on (a resume after a stop too).
                    Ok(spec) => {
                        let spec = Arc::new(spec.clone());
                        if let Some(e) = self.connectors.get_mut(name) {
                            e.spec = Ok(spec.clone());
                        }
                        // `tasks.max` given by a placeholder that changed: all start again
                        // (stopped before the lock was taken, see `stop_for_restart`).
                        if !self.worker.is_running(name) && target != TargetState::Stopped {
                            info!(connector = %name, tasks = spec.tasks_max, "restarted with another task count");
                            return self
                                .worker
                                .start((*spec).clone(), target == TargetState::Paused);
                        }
                        if self
                            .worker
                            .task_count(name)
                            .is_some_and(|n| n != spec.tasks_max)
                        {
                            info!(connector = %name, tasks = spec.tasks_max, "restarted with another task count");
                            self.worker.stop_connector(name);
                            return self
                                .worker
                                .start((*spec).clone(), target == TargetState::Paused);
                        }
                    }
                }
                let restarted = self
                    .worker
                    .restart_tasks(name, restarts(*only_failed, *task), now);
                if !restarted.is_empty() {
                    info!(connector = %name, tasks = ?restarted, "restarted");
                }
                Ok(())
            }
        }
    }

    /// Moves a known connector to `target`; an unknown one's is kept for its next config.
    fn set_target(&mut self, name: &str, target: TargetState) -> Result<(), String> {
        let Some(e) = self.connectors.get_mut(name) else {
            self.targets_ahead.insert(name.to_string(), target);
            return Ok(());
        };
        let was = std::mem::replace(&mut e.target, target);
        info!(connector = %name, ?target, "target state changed");
        // A failed config is validated again by a restart; and by a resume from STOPPED, which
        // reads the placeholders again (as STOPPED showed nothing of the failure, a mended file
        // is taken then).
        if e.spec.is_err() && (was != TargetState::Stopped || target == TargetState::Stopped) {
            return Ok(());
        }
        match target {
            TargetState::Stopped => {
                self.worker.stop_connector(name);
            }
            _ if !self.worker.is_running(name) => {
                // Its tasks start: the placeholders are read again, as Kafka Connect reads them
                // at each task's start.
                match ConnectorSpec::validate(&e.config) {
                    Ok(now) => {
                        e.spec = Ok(Arc::new(now.clone()));
                        self.worker.start(now, target == TargetState::Paused)?;
                    }
                    Err(err) => {
                        let why = format!("the config is not valid on this worker: {err}");
                        error!(connector = %name, "{why}");
                        e.spec = Err(why);
                    }
                }
            }
            _ => self.worker.set_paused(name, target == TargetState::Paused),
        }
        Ok(())
    }

    /// Writes the state file as it will be with `change` made, before it is made: a change
    /// that cannot be kept is not made.
    fn save(&mut self, change: &Change) -> Result<(), Error> {
        let (set, remove) = match change {
            Change::Put { config, target } => {
                let known = self.connectors.get(&config.name).map(|e| e.target);
                let t = target.or(known).unwrap_or(TargetState::Running);
                (Some((config.clone(), t)), None)
            }
            Change::Target { name, target } => match self.connectors.get(name) {
                Some(e) => (Some((e.config.clone(), *target)), None),
                None => return Ok(()),
            },
            Change::Delete { name } => (None, Some(name.as_str())),
            Change::Restart { .. } => return Ok(()),
        };
        let Some(store) = &self.store else {
            return Ok(());
        };
        let mut all: BTreeMap<&str, Stored> = self
            .connectors
            .iter()
            .map(|(n, e)| {
                (
                    n.as_str(),
                    Stored {
                        config: e.config.clone(),
                        state: e.target,
                    },
                )
            })
            .collect();
        if let Some((c, state)) = &set {
            all.insert(
                &c.name,
                Stored {
                    config: c.clone(),
                    state: *state,
                },
            );
        }
        if let Some(n) = remove {
            all.remove(n);
        }
        let all: Vec<Stored> = all.into_values().collect();
        store.save(&all).map_err(|e| {
            warn!("cannot keep the connectors: {e}");
            Error::Internal(format!("cannot keep the connectors: {e}"))
        })
    }
}

/// Which of a connector's tasks on this worker a restart restarts: the failed ones only when
/// `only_failed`, the one numbered `task` here when given.
fn restarts(only_failed: bool, task: Option<usize>) -> impl Fn(&TaskStatus) -> bool {
    move |s| (!only_failed || s.state == "FAILED") && task.is_none_or(|t| t == s.id)
}

/// A config sent back as `GET …/config` shows it has `[hidden]` for each secret: each keeps the
/// value stored for it (`stored`), and one with nothing stored is refused rather than stored
/// as that text (the tasks would then log in with it).
fn restore_hidden(
    map: &mut BTreeMap<String, String>,
    stored: Option<&BTreeMap<String, String>>,
) -> Result<(), Error> {
    for (k, v) in map.iter_mut() {
        if !v.contains(connector::HIDDEN) {
            continue;
        }
        // The stored value, if this is how it was shown (a secret, a URL's password).
        match stored.and_then(|s| s.get(k)) {
            Some(old) if connector::redact(k, old) == v.as_str() => v.clone_from(old),
            _ if connector::is_secret(k) || v.contains(&format!(":{}@", connector::HIDDEN)) => {
                return Err(Error::BadRequest(format!(
                    "{k}: `{}` is how this API shows a secret; send the value itself",
                    connector::HIDDEN
                )));
            }
            _ => {}
        }
    }
    Ok(())
}
