//! The worker: runs the tasks of its connectors, and stops them all on shutdown.
//!
//! Standalone mode: connectors come from `--connector` files. (The REST API and distributed
//! mode are not available yet.)

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tracing::{error, info};

use crate::connector::{ConnectorConfig, ConnectorSpec};
use crate::metrics::Metrics;
use crate::settings::Settings;
use crate::task::{self, TaskHandle, TaskStatus};

/// A connector and its running tasks.
pub struct RunningConnector {
    pub spec: Arc<ConnectorSpec>,
    pub metrics: Arc<Metrics>,
    tasks: Vec<TaskHandle>,
}

impl RunningConnector {
    pub fn statuses(&self) -> Vec<TaskStatus> {
        self.tasks
            .iter()
            .filter_map(|t| t.status.lock().ok().map(|s| s.clone()))
            .collect()
    }
}

pub struct Worker {
    settings: Arc<Settings>,
    runtime: tokio::runtime::Runtime,
    shutdown: Arc<AtomicBool>,
    connectors: Vec<RunningConnector>,
}

/// Reads and validates a connector file.
pub fn load_connector(path: &std::path::Path) -> Result<ConnectorSpec, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let config =
        ConnectorConfig::from_json(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    ConnectorSpec::validate(&config)
        .map_err(|e| format!("{}: connector `{}`: {e}", path.display(), config.name))
}

impl Worker {
    pub fn new(settings: Settings) -> Result<Worker, String> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("cdc-sink-io")
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the async runtime: {e}"))?;
        Ok(Worker {
            settings: Arc::new(settings),
            runtime,
            shutdown: Arc::new(AtomicBool::new(false)),
            connectors: Vec::new(),
        })
    }

    /// Starts the tasks of a validated connector.
    pub fn start(&mut self, spec: ConnectorSpec) -> Result<(), String> {
        if self.connectors.iter().any(|c| c.spec.name == spec.name) {
            return Err(format!("connector `{}` is already running", spec.name));
        }
        let spec = Arc::new(spec);
        info!(connector = %spec.name, config = ?spec.config.redacted(), "starting connector");
        let metrics = Arc::new(Metrics::default());
        let tasks = (0..spec.tasks_max)
            .map(|id| {
                task::spawn(
                    spec.clone(),
                    id,
                    self.settings.clone(),
                    self.runtime.handle().clone(),
                    metrics.clone(),
                    self.shutdown.clone(),
                )
            })
            .collect();
        self.connectors.push(RunningConnector {
            spec,
            metrics,
            tasks,
        });
        Ok(())
    }

    /// The trace of a failed task, if one failed.
    pub fn failure(&self) -> Option<String> {
        self.connectors
            .iter()
            .flat_map(RunningConnector::statuses)
            .find(|s| s.state == "FAILED")
            .map(|s| s.trace.unwrap_or_default())
    }

    /// Runs until SIGINT or SIGTERM, then stops every task (each flushes and commits). Returns
    /// false when a task had failed.
    pub fn run_until_signal(self) -> bool {
        self.runtime.block_on(async {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            let mut report = tokio::time::interval(std::time::Duration::from_secs(30));
            report.tick().await;
            loop {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => break,
                    _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => break,
                    _ = report.tick() => self.report(),
                }
            }
        });
        info!("shutting down: finishing in-flight writes and committing offsets");
        self.stop()
    }

    fn report(&self) {
        for c in &self.connectors {
            let tasks = serde_json::to_string(&c.statuses()).unwrap_or_default();
            info!(connector = %c.spec.name, tasks = %tasks, metrics = %c.metrics.snapshot(), "status");
        }
    }

    /// Stops every task and waits for them; false when a task had failed.
    pub fn stop(self) -> bool {
        self.shutdown.store(true, Ordering::Relaxed);
        let mut ok = true;
        for c in self.connectors {
            let statuses: Vec<_> = c.tasks.iter().map(|t| t.status.clone()).collect();
            for t in c.tasks {
                t.join();
            }
            let failed: Vec<TaskStatus> = statuses
                .iter()
                .filter_map(|s| s.lock().ok().map(|s| s.clone()))
                .filter(|s| s.state == "FAILED")
                .collect();
            for s in &failed {
                error!(connector = %c.spec.name, task = s.id, trace = s.trace.as_deref().unwrap_or(""), "task had failed");
            }
            ok &= failed.is_empty();
            info!(connector = %c.spec.name, metrics = %c.metrics.snapshot(), "connector stopped");
        }
        ok
    }
}
