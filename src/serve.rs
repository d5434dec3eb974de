//! `cdc-sink run`: the worker process. Standalone mode: connectors come from the state file
//! (what was posted before), then from `--connector` files, then over the REST API.
//! Distributed mode: they come from the cluster's config topic, `--connector` files and the
//! REST API of any worker. The process runs until SIGINT or SIGTERM; then every task finishes
//! its writes and commits.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use tracing::{info, warn};

use crate::connector::ConnectorSpec;
use crate::herder::cluster::Cluster;
use crate::herder::store::Store;
use crate::herder::{Herder, TargetState};
use crate::settings::Settings;
use crate::worker::{self, Worker};

/// Runs a worker until a signal; Ok(false) when a task had failed.
pub fn run(mut settings: Settings, files: Vec<ConnectorSpec>) -> Result<bool, String> {
    let runtime = worker::runtime()?;
    // Signals from the very start. The first stops the worker: at once while it runs; while it
    // is starting (creating its connectors, joining a cluster: a SIGTERM then had ended the
    // process by its default action, exit by signal), as soon as it has started; while it
    // stops, it exits at once, as a second signal always does.
    let phase = Arc::new(AtomicU8::new(STARTING));
    let mut first_signal = {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let mut signals = runtime.block_on(async { Signals::new() });
        let phase = phase.clone();
        runtime.spawn(async move {
            signals.next().await;
            match phase.load(Ordering::SeqCst) {
                STOPPING => exit_at_once(),
                STARTING => warn!(
                    "a signal while the worker starts: it stops as soon as it has started (a second signal exits at once)"
                ),
                _ => {}
            }
            let _ = tx.send(());
            signals.next().await;
            exit_at_once();
        });
        rx
    };
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
        // Distributed: a file creates a connector the cluster does not know, and leaves a known
        // one as the cluster has it. Replacing it would revert, at every start of any worker
        // (a rolling deploy), a config changed over the REST API since, on every worker.
        // (A connector deleted over the REST API comes back with it: delete the file too.)
        if settings.distributed() {
            let differs = |known: Option<crate::connector::ConnectorConfig>| {
                if known.is_some_and(|k| k.config != spec.config.config) {
                    warn!(connector = %spec.name, "the connector file's config differs from the cluster's, which is kept: change a running cluster's connectors over the REST API");
                }
            };
            match herder.create(spec.config.clone(), TargetState::Running, false) {
                Ok(_) => {}
                // Created meanwhile through another worker, or known already.
                Err(crate::herder::Error::Conflict(_)) => differs(herder.config_of(&spec.name)),
                Err(e) => {
                    stop(&herder);
                    return Err(e.to_string());
                }
            }
            continue;
        }
        // Standalone: a file's config replaces a known one of the same name; a pause or stop
        // made over REST is kept.
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

    // (A signal arriving while the periodic report runs is kept for the next turn of the loop.)
    phase.store(RUNNING, Ordering::SeqCst);
    let failed_rest = runtime.block_on(async {
        let mut report = tokio::time::interval(Duration::from_secs(30));
        report.tick().await;
        let mut rest = rest;
        loop {
            tokio::select! {
                _ = &mut first_signal => break None,
                _ = report.tick() => { let h = herder.clone(); let _ = tokio::task::spawn_blocking(move || h.report()).await; }
                r = &mut rest => break Some(match r { Ok(Ok(())) => "the REST API stopped".to_string(), Ok(Err(e)) => e, Err(e) => e.to_string() }),
            }
        }
    });
    info!(
        "shutting down: finishing in-flight writes and committing offsets (a second SIGTERM or Ctrl-C exits at once)"
    );
    // A signal while the tasks finish (an unreachable Elasticsearch can hold a drain for
    // flush.timeout.ms) exits at once (above). Nothing is committed past an unwritten record at
    // any time, so that is a crash's outcome: what was written and not committed is read again.
    phase.store(STOPPING, Ordering::SeqCst);
    let _ = stop_tx.send(());
    let ok = stop(&herder);
    match failed_rest {
        Some(e) => Err(e),
        None => Ok(ok),
    }
}

/// The exit code after a second signal: 128 + SIGTERM's number, as a shell reports a process
/// ended by it.
const EXIT_INTERRUPTED: i32 = 143;

/// Where the worker is, for what a signal does (`run`).
const STARTING: u8 = 0;
const RUNNING: u8 = 1;
const STOPPING: u8 = 2;

/// Exits without finishing: on a second signal, or one while the worker stops.
fn exit_at_once() -> ! {
    warn!(
        "a second signal, or one while stopping: exiting at once, without finishing; records not committed are read again"
    );
    std::process::exit(EXIT_INTERRUPTED);
}

/// SIGTERM and SIGINT (Ctrl-C), each listened for once for the whole run.
struct Signals {
    term: Option<tokio::signal::unix::Signal>,
    int: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    /// Needs a Tokio runtime.
    fn new() -> Signals {
        use tokio::signal::unix::{SignalKind, signal};
        Signals {
            term: signal(SignalKind::terminate()).ok(),
            int: signal(SignalKind::interrupt()).ok(),
        }
    }

    /// The next SIGTERM or SIGINT.
    async fn next(&mut self) {
        async fn recv(s: &mut Option<tokio::signal::unix::Signal>) {
            match s {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            _ = recv(&mut self.term) => {}
            _ = recv(&mut self.int) => {}
        }
    }
}
