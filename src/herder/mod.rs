//! The herder (Kafka Connect's word): the connectors this worker knows, their configs and
//! target states (RUNNING, PAUSED, STOPPED), kept in the state file, and carried out by the
//! worker. The REST API (`crate::rest`) is a thin layer over these operations.
//!
//! Standalone mode only: every connector runs all its tasks here. Operations are serialized by
//! one lock; each either applies completely or changes nothing (a config is validated and stored
//! before anything is stopped or started).

pub mod offsets;
pub mod store;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tracing::{info, warn};

use crate::connector::{ConnectorConfig, ConnectorSpec};
use crate::settings::Settings;
use crate::task::TaskStatus;
use crate::worker::Worker;
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

/// The version reported in `GET /` and in statuses.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

struct Entry {
    config: ConnectorConfig,
    spec: Arc<ConnectorSpec>,
    target: TargetState,
}

struct Inner {
    worker: Worker,
    connectors: BTreeMap<String, Entry>,
    store: Option<Store>,
}

pub struct Herder {
    settings: Arc<Settings>,
    worker_id: String,
    inner: Mutex<Inner>,
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
        let herder = Herder {
            worker_id: settings.worker_id(),
            settings,
            inner: Mutex::new(Inner {
                worker,
                connectors: BTreeMap::new(),
                store,
            }),
        };
        {
            let mut inner = herder.lock();
            for s in stored {
                let spec = ConnectorSpec::validate(&s.config).map_err(|e| {
                    format!(
                        "stored connector `{}` is no longer valid: {e} (fix or delete it in the state file)",
                        s.config.name
                    )
                })?;
                inner.launch(spec, s.config, s.state)?;
            }
        }
        Ok(herder)
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

    /// The target state of a connector, if it is known.
    pub fn target(&self, name: &str) -> Option<TargetState> {
        self.lock().connectors.get(name).map(|e| e.target)
    }

    pub fn names(&self) -> Vec<String> {
        self.lock().connectors.keys().cloned().collect()
    }

    /// Creates a connector (`POST /connectors`); a connector from a `--connector` file replaces
    /// a stored one of the same name when `replace`.
    pub fn create(
        &self,
        config: ConnectorConfig,
        initial: TargetState,
        replace: bool,
    ) -> Result<Value, Error> {
        let mut inner = self.lock();
        if inner.connectors.contains_key(&config.name) && !replace {
            return Err(Error::Conflict(format!(
                "Connector {} already exists",
                config.name
            )));
        }
        let spec = validate(&config)?;
        let name = config.name.clone();
        if let Some(old) = inner.connectors.get(&name) {
            if old.config == config && old.target == initial {
                return Ok(inner.info(&name));
            }
            inner.worker.stop_connector(&name);
            inner.connectors.remove(&name);
        }
        inner.save_with(Some((&config, initial)), None)?;
        inner
            .launch(spec, config, initial)
            .map_err(Error::Internal)?;
        Ok(inner.info(&name))
    }

    /// Creates or replaces a connector's config (`PUT /connectors/{n}/config`); true when created.
    pub fn put_config(
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
        let config = ConnectorConfig {
            name: name.to_string(),
            config: map,
        };
        let mut inner = self.lock();
        let spec = validate(&config)?;
        let target = match inner.connectors.get(name) {
            None => {
                inner.save_with(Some((&config, TargetState::Running)), None)?;
                inner
                    .launch(spec, config, TargetState::Running)
                    .map_err(Error::Internal)?;
                return Ok((inner.info(name), true));
            }
            Some(e) => e.target,
        };
        inner.save_with(Some((&config, target)), None)?;
        info!(connector = %name, "config changed: restarting its tasks");
        inner.worker.stop_connector(name);
        inner.connectors.remove(name);
        inner
            .launch(spec, config, target)
            .map_err(Error::Internal)?;
        Ok((inner.info(name), false))
    }

    /// Changes some keys of a connector's config (`PATCH /connectors/{n}/config`; a null value
    /// removes the key).
    pub fn patch_config(
        &self,
        name: &str,
        patch: BTreeMap<String, Option<String>>,
    ) -> Result<Value, Error> {
        let mut map = {
            let inner = self.lock();
            inner
                .connectors
                .get(name)
                .ok_or_else(|| not_found(name))?
                .config
                .config
                .clone()
        };
        for (k, v) in patch {
            match v {
                Some(v) => map.insert(k, v),
                None => map.remove(&k),
            };
        }
        self.put_config(name, map).map(|(info, _)| info)
    }

    /// Stops a connector's tasks (they commit what they wrote) and forgets it.
    pub fn delete(&self, name: &str) -> Result<(), Error> {
        let mut inner = self.lock();
        if !inner.connectors.contains_key(name) {
            return Err(not_found(name));
        }
        inner.save_with(None, Some(name))?;
        inner.worker.stop_connector(name);
        inner.connectors.remove(name);
        info!(connector = %name, "deleted");
        Ok(())
    }

    /// `{"name", "config", "tasks", "type"}`, secrets hidden.
    pub fn info(&self, name: &str) -> Result<Value, Error> {
        let inner = self.lock();
        inner.entry(name)?;
        Ok(inner.info(name))
    }

    /// The config, secrets hidden.
    pub fn config(&self, name: &str) -> Result<BTreeMap<String, String>, Error> {
        Ok(self.lock().entry(name)?.config.redacted())
    }

    /// `[{"id": {"connector", "task"}, "config"}]`.
    pub fn tasks(&self, name: &str) -> Result<Value, Error> {
        let inner = self.lock();
        let e = inner.entry(name)?;
        let tasks: Vec<Value> = inner
            .task_ids(name)
            .map(|id| json!({"id": {"connector": name, "task": id}, "config": e.config.redacted()}))
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
        inner
            .worker
            .statuses(name)
            .and_then(|s| s.into_iter().find(|s| s.id == id))
            .map(|s| self.task_json(&s, None))
            .ok_or_else(|| Error::NotFound(format!("No status found for task {name}-{id}")))
    }

    fn task_json(&self, s: &TaskStatus, state: Option<&str>) -> Value {
        let mut v = json!({"id": s.id, "state": state.unwrap_or(s.state), "worker_id": s.worker_id, "version": VERSION});
        if let Some(t) = &s.trace {
            v["trace"] = json!(t);
        }
        if let Some(t) = &s.trouble {
            v["trouble"] = json!(t);
        }
        v
    }

    /// The status JSON; `restarting` names tasks shown as RESTARTING instead of their state.
    fn status_of(
        &self,
        inner: &Inner,
        name: &str,
        restarting: impl Fn(&TaskStatus) -> Option<&'static str>,
    ) -> Value {
        let target = inner.connectors.get(name).map(|e| e.target);
        let state = match target {
            Some(TargetState::Paused) => "PAUSED",
            Some(TargetState::Stopped) => "STOPPED",
            _ => "RUNNING",
        };
        let tasks: Vec<Value> = inner
            .worker
            .statuses(name)
            .unwrap_or_default()
            .iter()
            .map(|s| self.task_json(s, restarting(s)))
            .collect();
        json!({
            "name": name,
            "connector": {"state": state, "worker_id": self.worker_id, "version": VERSION},
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
        let mut inner = self.lock();
        let e = inner.entry(name)?;
        if e.target == target {
            return Ok(());
        }
        let (config, spec) = (e.config.clone(), e.spec.clone());
        inner.save_with(Some((&config, target)), None)?;
        if let Some(e) = inner.connectors.get_mut(name) {
            e.target = target;
        }
        info!(connector = %name, ?target, "target state changed");
        match target {
            TargetState::Stopped => {
                inner.worker.stop_connector(name);
            }
            _ if !inner.worker.is_running(name) => {
                let paused = target == TargetState::Paused;
                inner
                    .worker
                    .start((*spec).clone(), paused)
                    .map_err(Error::Internal)?;
            }
            _ => inner.worker.set_paused(name, target == TargetState::Paused),
        }
        Ok(())
    }

    /// `POST /connectors/{n}/restart`: `None` for the plain form (the connector alone, which
    /// holds no state here: nothing to do), else the status with what restarts as RESTARTING,
    /// taken before the restart.
    pub fn restart(
        &self,
        name: &str,
        include_tasks: bool,
        only_failed: bool,
    ) -> Result<Option<Value>, Error> {
        let mut inner = self.lock();
        inner.entry(name)?;
        if !include_tasks && !only_failed {
            return Ok(None);
        }
        let chosen = |s: &TaskStatus| include_tasks && (!only_failed || s.state == "FAILED");
        let mut status = self.status_of(&inner, name, |s| chosen(s).then_some("RESTARTING"));
        if !only_failed && inner.connectors[name].target != TargetState::Stopped {
            status["connector"]["state"] = json!("RESTARTING");
        }
        let restarted = inner.worker.restart_tasks(name, chosen);
        info!(connector = %name, tasks = ?restarted, "restarted");
        Ok(Some(status))
    }

    pub fn restart_task(&self, name: &str, id: usize) -> Result<(), Error> {
        let mut inner = self.lock();
        inner.entry(name)?;
        if !inner.task_ids(name).any(|t| t == id) {
            return Err(Error::NotFound(format!("Unknown task: {name}-{id}")));
        }
        inner.worker.restart_tasks(name, |s| s.id == id);
        info!(connector = %name, task = id, "task restarted");
        Ok(())
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

    /// The offsets the connector's consumer group committed.
    pub fn offsets(&self, name: &str) -> Result<Vec<offsets::SinkOffset>, Error> {
        let spec = self.lock().entry(name)?.spec.clone();
        offsets::read(&self.settings, &spec).map_err(Error::Internal)
    }

    /// Commits `to` for the connector's group (`PATCH /connectors/{n}/offsets`); only when stopped.
    pub fn alter_offsets(&self, name: &str, to: &[offsets::SinkOffset]) -> Result<(), Error> {
        let inner = self.lock();
        let spec = inner.stopped(name)?;
        offsets::alter(&self.settings, &spec, to)
    }

    /// Deletes the connector's consumer group (`DELETE /connectors/{n}/offsets`); only when stopped.
    pub fn reset_offsets(&self, name: &str) -> Result<(), Error> {
        let inner = self.lock();
        let spec = inner.stopped(name)?;
        offsets::reset(&self.settings, &spec).map_err(Error::Internal)
    }

    /// Stops every task (each commits); false when a task had failed.
    pub fn shutdown(&self) -> bool {
        self.lock().worker.stop()
    }

    /// Logs every connector's task states and counters.
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
        Ok(e.spec.clone())
    }

    fn task_ids(&self, name: &str) -> impl Iterator<Item = usize> + use<> {
        let n = match self.connectors.get(name) {
            Some(e) if e.target != TargetState::Stopped => e.spec.tasks_max,
            _ => 0,
        };
        0..n
    }

    fn info(&self, name: &str) -> Value {
        let Some(e) = self.connectors.get(name) else {
            return Value::Null;
        };
        let tasks: Vec<Value> = self
            .task_ids(name)
            .map(|id| json!({"connector": name, "task": id}))
            .collect();
        json!({"name": name, "config": e.config.redacted(), "tasks": tasks, "type": "sink"})
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
                spec,
                target,
            },
        );
        Ok(())
    }

    /// Writes the state file as it will be with `set` applied and `remove` removed, before the
    /// change is made: a change that cannot be kept is not made.
    fn save_with(
        &mut self,
        set: Option<(&ConnectorConfig, TargetState)>,
        remove: Option<&str>,
    ) -> Result<(), Error> {
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
        if let Some((c, state)) = set {
            all.insert(
                &c.name,
                Stored {
                    config: c.clone(),
                    state,
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
