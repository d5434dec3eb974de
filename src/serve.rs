//! `cdc-sink run`: the worker process. Standalone mode: connectors come from the state file
//! (what was posted before), then from `--connector` files, then over the REST API.
//! Distributed mode: they come from the cluster's config topic, `--connector` files and the
//! REST API of any worker. The process runs until SIGINT or SIGTERM; then every task finishes
//! its writes and commits.

use std::sync::Arc;
use std::time::Duration;

use tracing::info;

use crate::connector::ConnectorSpec;
use crate::herder::cluster::Cluster;
use crate::herder::store::Store;
use crate::herder::{Herder, TargetState};
use crate::settings::Settings;
use crate::worker::{self, Worker};

/// Runs a worker until a signal; Ok(false) when a task had failed.
pub fn run(mut settings: Settings, files: Vec<ConnectorSpec>) -> Result<bool, String> {
    let runtime = worker::runtime()?;
    let listener = runtime.block_on(crate::rest::bind(&settings.rest.listen))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("rest.listen: {e}"))?;
    // Port 0 picks a free port: the worker id and status show the one bound.
    settings.rest.listen = addr.to_string();
    let settings = Arc::new(settings);
    let worker = Worker::new(settings.clone(), runtime.handle().clone());
    let (herder, cluster) = if settings.distributed() {
        let herder = Arc::new(Herder::new(worker, None, Vec::new())?);
        let cluster = match Cluster::start(&settings, runtime.handle().clone(), herder.clone()) {
            Ok(c) => c,
            Err(e) => {
                herder.shutdown();
                return Err(e);
            }
        };
        (herder, Some(cluster))
    } else {
        let (store, stored) = Store::open(&settings.worker.state_dir)?;
        info!(state = %store.path().display(), connectors = stored.len(), "standalone mode");
        (Arc::new(Herder::new(worker, Some(store), stored)?), None)
    };
    let stop = |herder: &Herder| {
        let ok = herder.shutdown();
        if let Some(c) = &cluster {
            c.shutdown();
        }
        ok
    };
    for spec in files {
        // A file's config replaces a known one of the same name; a pause or stop made over
        // REST is kept.
        let target = herder.target(&spec.name).unwrap_or(TargetState::Running);
        if let Err(e) = herder.create(spec.config, target, true) {
            stop(&herder);
            return Err(e.to_string());
        }
    }

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let rest = runtime.spawn(crate::rest::serve(listener, herder.clone(), async move {
        let _ = stop_rx.await;
    }));
    info!(worker_id = %herder.worker_id(), mode = %settings.worker.mode, "REST API listening on http://{addr}");

    let failed_rest = runtime.block_on(async {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        let mut report = tokio::time::interval(Duration::from_secs(30));
        report.tick().await;
        let mut rest = rest;
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break None,
                _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => break None,
                _ = report.tick() => { let h = herder.clone(); let _ = tokio::task::spawn_blocking(move || h.report()).await; }
                r = &mut rest => break Some(match r { Ok(Ok(())) => "the REST API stopped".to_string(), Ok(Err(e)) => e, Err(e) => e.to_string() }),
            }
        }
    });
    info!("shutting down: finishing in-flight writes and committing offsets");
    let _ = stop_tx.send(());
    let ok = stop(&herder);
    match failed_rest {
        Some(e) => Err(e),
        None => Ok(ok),
    }
}
