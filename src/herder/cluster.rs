//! Distributed mode: the workers of a cluster (`worker.group`) share their connectors through
//! two compacted Kafka topics, as Kafka Connect's do. Kafka is the only coordination service.
//!
//! * The **config topic** (one partition, so one order): every change — a config with its
//!   target state, a delete (a tombstone), a restart request — is a record. Every worker reads
//!   it from the beginning and applies each change in order, so all of them end with the same
//!   connectors in the same states, whichever worker a request reached; conflicting requests
//!   are decided by the log's order. A worker answers a request once it has read its own record
//!   back and applied it.
//! * The **status topic**: every worker publishes its tasks' states per connector (on change,
//!   and every few seconds as a heartbeat) and removes them when it stops; every worker reads
//!   them all, so `GET /connectors/{n}/status` on any worker shows every worker's tasks.
//!   States not refreshed for [`STALE`] are those of a worker that died: left out.
//!
//! Each worker runs `tasks.max` tasks of every connector; their consumer group spreads the
//! partitions over every worker's tasks, and moves a dead worker's partitions to the others.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::{Client, ClientContext, DefaultClientContext};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tracing::{error, info, warn};

use super::{Change, Error, Herder, TargetState};
use crate::connector::ConnectorConfig;
use crate::metrics::now_ms;
use crate::settings::Settings;
use crate::source::client_config;
use crate::task::{Progress, TaskStatus};

/// How often a worker republishes its task states.
const HEARTBEAT: Duration = Duration::from_secs(2);
/// Task states older than this are a dead worker's.
pub const STALE: Duration = Duration::from_secs(10);
/// How long a request waits for its change to come back from the config topic.
const APPLY_TIMEOUT: Duration = Duration::from_secs(60);
const KAFKA_TIMEOUT: Duration = Duration::from_secs(30);
/// Partitions of the status topic (Kafka Connect's default).
const STATUS_PARTITIONS: i32 = 5;

/// A task state as the status topic carries it.
#[derive(Serialize, Deserialize)]
struct WireTask {
    id: usize,
    state: String,
    worker_id: String,
    #[serde(default)]
    trace: Option<String>,
    #[serde(default)]
    trouble: Option<String>,
    #[serde(default)]
    progress: Option<Progress>,
}

#[derive(Serialize, Deserialize)]
struct WireStatus {
    at_ms: i64,
    tasks: Vec<WireTask>,
    /// Why the connector failed on this worker (its config does not validate there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    failed: Option<String>,
    /// The publishing process (see [`Cluster::instance`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    instance: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct WirePut {
    config: BTreeMap<String, String>,
    #[serde(default)]
    state: Option<TargetState>,
}

#[derive(Serialize, Deserialize)]
struct WireTarget {
    state: TargetState,
}

#[derive(Serialize, Deserialize)]
struct WireRestart {
    only_failed: bool,
    worker: Option<String>,
    task: Option<usize>,
    /// Makes every request a new record (compaction keeps only the last per key).
    at_ms: i64,
}

fn state_name(s: &str) -> &'static str {
    match s {
        "RUNNING" => "RUNNING",
        "PAUSED" => "PAUSED",
        "FAILED" => "FAILED",
        "STOPPED" => "STOPPED",
        "RESTARTING" => "RESTARTING",
        _ => "UNASSIGNED",
    }
}

/// The records of a change, in the order written: key and value (`None`: a tombstone).
/// A state is also a `target` record of its own, and a delete removes both, as in Kafka
/// Connect: once the topic is compacted, a connector's last config record may be one without
/// a state (a later config change), and its state must survive in the target record; and a
/// deleted connector's state must not outlive it into a connector created later by that name.
fn encode(change: &Change) -> Vec<(String, Option<String>)> {
    let target = |name: &str, state: TargetState| {
        (
            json!(["target", name]).to_string(),
            Some(json!(WireTarget { state }).to_string()),
        )
    };
    match change {
        // The target first, as Kafka Connect writes them: a worker that dies between the two
        // leaves a target record without a connector, which nothing applies (every create
        // carries a state of its own). Written after, a connector record whose state was not
        // followed by its target record kept that state only until a later config record
        // (without one) compacted it away: a worker started after that read the connector as
        // running while the others had it stopped.
        Change::Put { config, target: t } => {
            let mut out: Vec<_> = t.map(|t| target(&config.name, t)).into_iter().collect();
            out.push((
                json!(["connector", config.name]).to_string(),
                Some(
                    json!(WirePut {
                        config: config.config.clone(),
                        state: *t,
                    })
                    .to_string(),
                ),
            ));
            out
        }
        Change::Target { name, target: t } => vec![target(name, *t)],
        Change::Delete { name } => vec![
            (json!(["connector", name]).to_string(), None),
            (json!(["target", name]).to_string(), None),
        ],
        Change::Restart {
            name,
            only_failed,
            tasks,
            worker,
            task,
        } => vec![(
            // The connector alone is a kind of its own: a worker of an older version ignores
            // it rather than restarting every task.
            json!([
                if *tasks {
                    "restart"
                } else {
                    "restart-connector"
                },
                name
            ])
            .to_string(),
            Some(
                json!(WireRestart {
                    only_failed: *only_failed,
                    worker: worker.clone(),
                    task: *task,
                    at_ms: now_ms(),
                })
                .to_string(),
            ),
        )],
    }
}

fn decode(key: &[u8], value: Option<&[u8]>) -> Result<Option<Change>, String> {
    let (kind, name): (String, String) =
        serde_json::from_slice(key).map_err(|e| format!("key: {e}"))?;
    Ok(match (kind.as_str(), value) {
        ("connector", None) => Some(Change::Delete { name }),
        ("connector", Some(v)) => {
            let put: WirePut = serde_json::from_slice(v).map_err(|e| format!("value: {e}"))?;
            Some(Change::Put {
                config: ConnectorConfig {
                    name,
                    config: put.config,
                },
                target: put.state,
            })
        }
        ("target", Some(v)) => {
            let t: WireTarget = serde_json::from_slice(v).map_err(|e| format!("value: {e}"))?;
            Some(Change::Target {
                name,
                target: t.state,
            })
        }
        (kind @ ("restart" | "restart-connector"), Some(v)) => {
            let r: WireRestart = serde_json::from_slice(v).map_err(|e| format!("value: {e}"))?;
            Some(Change::Restart {
                name,
                only_failed: r.only_failed,
                tasks: kind == "restart",
                worker: r.worker,
                task: r.task,
            })
        }
        _ => None,
    })
}

/// The history of the config topic folded: each connector's last config and target state.
#[derive(Default)]
struct Replay(BTreeMap<String, (Option<ConnectorConfig>, Option<TargetState>)>);

impl Replay {
    fn fold(&mut self, change: Change) {
        match change {
            Change::Put { config, target } => {
                let e = self.0.entry(config.name.clone()).or_default();
                e.0 = Some(config);
                if target.is_some() {
                    e.1 = target;
                }
            }
            // A target may come before the config it applies to once the topic is compacted.
            Change::Target { name, target } => self.0.entry(name).or_default().1 = Some(target),
            Change::Delete { name } => {
                self.0.remove(&name);
            }
            Change::Restart { .. } => {}
        }
    }
}

/// Applies a change; a bug in doing so is logged, and the reader goes on.
fn apply(herder: &Herder, change: &Change, read_ahead: bool) {
    let done = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        herder.apply(change, read_ahead)
    }));
    if done.is_err() {
        error!("applying a change to the connectors panicked: {change:?}");
    }
}

/// Does at once what of a change stops tasks; a bug in doing so is logged, and the reader goes
/// on (the change is still applied in its turn).
fn stop_ahead(herder: &Herder, change: &Change) {
    let done = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| herder.stop_ahead(change)));
    if done.is_err() {
        error!("stopping the tasks a change replaces panicked: {change:?}");
    }
}

/// Changes to apply, and the config topic's offset they are applied up to.
/// Changes, the offset they are applied up to, and whether they were read live (each seen
/// by `Herder::stop_ahead`), not folded history.
type Applied = (Vec<Change>, i64, bool);

/// Hands the folded history to the applier, as applied up to `offset`.
fn finish_replay(to_apply: &Sender<Applied>, replay: Option<Replay>, offset: i64) {
    let changes = replay.map_or_else(Vec::new, |r| {
        r.0.into_iter()
            .filter_map(|(name, (config, target))| match (config, target) {
                (Some(config), target) => {
                    debug_assert_eq!(config.name, name);
                    Some(Change::Put { config, target })
                }
                // A state with no config (yet): kept for the config, as live.
                (None, Some(target)) => Some(Change::Target { name, target }),
                (None, None) => None,
            })
            .collect()
    });
    let _ = to_apply.send((changes, offset, false));
}

/// Other workers' task states: connector → worker → (states, when published).
/// Per connector, per worker: its task states, why the connector failed there, when published.
type Statuses = BTreeMap<String, BTreeMap<String, (Vec<TaskStatus>, Option<String>, i64)>>;

pub struct Cluster {
    worker_id: String,
    /// This process among the cluster's: its pid and start time. Two live workers publishing
    /// states under one worker id would each overwrite the other's; this tells them apart.
    instance: String,
    config_topic: String,
    status_topic: String,
    producer: FutureProducer,
    runtime: tokio::runtime::Handle,
    /// The offset of the last config record applied here (-1: none).
    applied: Mutex<i64>,
    applied_cv: Condvar,
    statuses: Mutex<Statuses>,
    stop: AtomicBool,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

/// Creates the config and status topics if missing (compacted, as Kafka Connect's are).
fn ensure_topics(
    settings: &Settings,
    runtime: &tokio::runtime::Handle,
    config_topic: &str,
    status_topic: &str,
) -> Result<(), String> {
    let admin: AdminClient<DefaultClientContext> = client_config(settings)
        .create()
        .map_err(|e| format!("cannot create a Kafka admin client: {e}"))?;
    let rf = settings.worker.topic_replication_factor;
    let topics = [
        NewTopic::new(config_topic, 1, TopicReplication::Fixed(rf))
            .set("cleanup.policy", "compact"),
        NewTopic::new(status_topic, STATUS_PARTITIONS, TopicReplication::Fixed(rf))
            .set("cleanup.policy", "compact"),
    ];
    let opts = AdminOptions::new().operation_timeout(Some(KAFKA_TIMEOUT));
    let results = runtime
        .block_on(admin.create_topics(&topics, &opts))
        .map_err(|e| format!("cannot create the cluster's topics: {e}"))?;
    for r in results {
        match r {
            Ok(t) => info!(topic = %t, "created"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            // As Kafka Connect: a principal without CREATE (its administrators made the topics),
            // a creation policy, an old broker. The broker checks the permission before it
            // looks whether the topic exists, so the topic may well be there: checked now.
            Err((
                t,
                e @ (RDKafkaErrorCode::TopicAuthorizationFailed
                | RDKafkaErrorCode::ClusterAuthorizationFailed
                | RDKafkaErrorCode::PolicyViolation
                | RDKafkaErrorCode::UnsupportedVersion),
            )) => {
                let meta = admin
                    .inner()
                    .fetch_metadata(Some(&t), KAFKA_TIMEOUT)
                    .map_err(|m| format!("cannot create topic {t} ({e}), nor look it up: {m}"))?;
                let found = meta.topics().iter().find(|m| m.name() == t);
                match found.and_then(|m| m.error()) {
                    None if found.is_some_and(|m| !m.partitions().is_empty()) => {}
                    // Not there, or not visible to this principal: said as the broker says it.
                    why => {
                        let why = why.map_or("it does not exist".to_string(), |w| {
                            format!("looking it up: {w:?}")
                        });
                        return Err(format!(
                            "topic {t} cannot be used: this worker may not create it ({e}), and {why}; create it (cleanup.policy=compact), or let the worker's principal create and describe topics"
                        ));
                    }
                }
                info!(topic = %t, "not created ({e}), but it exists");
            }
            Err((t, e)) => return Err(format!("cannot create topic {t}: {e}")),
        }
    }
    // A topic made beforehand may delete old records: Kafka would drop connector configs after
    // `retention.ms`, and a worker started later would not know those connectors. Kafka
    // Connect refuses to start on such a topic too.
    let resources = [
        ResourceSpecifier::Topic(config_topic),
        ResourceSpecifier::Topic(status_topic),
    ];
    // A principal without DescribeConfigs, or a broker that does not know a topic just made:
    // the policy cannot be verified, which is said and not held against the worker (Kafka
    // Connect does the same).
    let described = match runtime.block_on(admin.describe_configs(&resources, &opts)) {
        Ok(d) => d,
        Err(e) => {
            warn!("cannot verify the cleanup.policy of the cluster's topics: {e}");
            return Ok(());
        }
    };
    for (r, topic) in described.into_iter().zip([config_topic, status_topic]) {
        let policy = match r {
            Ok(r) => r.get("cleanup.policy").and_then(|e| e.value.clone()),
            Err(e) => {
                warn!(topic, "cannot verify the topic's cleanup.policy: {e}");
                continue;
            }
        };
        if let Some(policy) = policy {
            only_compact(topic, &policy)?;
        }
    }
    Ok(())
}

/// The end offset of partition 0 of `topic`. A partition just created may have no leader yet:
/// the broker then answers NotLeaderForPartition or LeaderNotAvailable for a moment (a worker
/// starting a new cluster exited on it, on a busy machine), which is waited out for up to
/// [`KAFKA_TIMEOUT`], as Kafka Connect waits for its topics' partitions.
fn end_offset<C: ClientContext>(client: &Client<C>, topic: &str) -> Result<i64, String> {
    let started = Instant::now();
    loop {
        match client.fetch_watermarks(topic, 0, KAFKA_TIMEOUT) {
            Ok((_, high)) => return Ok(high),
            Err(KafkaError::MetadataFetch(
                RDKafkaErrorCode::NotLeaderForPartition
                | RDKafkaErrorCode::LeaderNotAvailable
                | RDKafkaErrorCode::UnknownTopicOrPartition,
            )) if started.elapsed() < KAFKA_TIMEOUT => {
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => return Err(format!("cannot read the end of topic {topic}: {e}")),
        }
    }
}

/// Refuses a cluster topic whose `cleanup.policy` is not exactly `compact`.
fn only_compact(topic: &str, policy: &str) -> Result<(), String> {
    if policy.split(',').map(str::trim).eq(["compact"]) {
        return Ok(());
    }
    Err(format!(
        "topic {topic} has cleanup.policy={policy}: the cluster's topics must be compacted only \
         (cleanup.policy=compact), or Kafka deletes old connector configs and states; change it \
         (kafka-configs.sh --alter --entity-type topics --entity-name {topic} --add-config \
         cleanup.policy=compact), or name other topics with worker.config_topic and \
         worker.status_topic"
    ))
}

impl Cluster {
    /// Joins the cluster: creates its topics if needed, reads the config topic up to its end
    /// (applying every change to `herder`), then keeps reading both topics and publishing this
    /// worker's task states until [`Cluster::shutdown`].
    pub fn start(
        settings: &Settings,
        runtime: tokio::runtime::Handle,
        herder: Arc<Herder>,
    ) -> Result<Arc<Cluster>, String> {
        let (config_topic, status_topic) = settings.cluster_topics();
        ensure_topics(settings, &runtime, &config_topic, &status_topic)?;
        let producer: FutureProducer = client_config(settings)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            // librdkafka retries a record for 5 minutes by default: with Kafka unreachable, a
            // REST change would hang that long (Kafka Connect answers within 90 s), and so
            // would each status record at shutdown.
            .set("message.timeout.ms", KAFKA_TIMEOUT.as_millis().to_string())
            .create()
            .map_err(|e| format!("cannot create a Kafka producer: {e}"))?;
        // Consumers that read by assignment and never commit: the group id only names them.
        let assigned_consumer = |group: String| -> Result<BaseConsumer, String> {
            client_config(settings)
                .set("enable.auto.commit", "false")
                .set("group.id", group)
                .create()
                .map_err(|e| format!("cannot create a Kafka consumer: {e}"))
        };
        let tail = assigned_consumer(format!("cdc-sink-tail-{}", herder.worker_id()))?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&config_topic, 0, Offset::Beginning)
            .map_err(|e| e.to_string())?;
        // A topic just created may take a moment to show its partitions.
        let partitions = |topic: &str| -> Result<i32, String> {
            let started = Instant::now();
            loop {
                let meta = tail
                    .fetch_metadata(Some(topic), KAFKA_TIMEOUT)
                    .map_err(|e| format!("cannot read topic {topic}: {e}"))?;
                let n = meta.topics().first().map_or(0, |t| t.partitions().len());
                if n > 0 || started.elapsed() > KAFKA_TIMEOUT {
                    break Ok(n as i32);
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        };
        // Changes are read from partition 0 alone, in one order: a config topic made beforehand
        // with more partitions would take changes no worker ever applies (Kafka Connect refuses
        // to start on one too).
        match partitions(&config_topic)? {
            1 => {}
            n => {
                return Err(format!(
                    "topic {config_topic} has {n} partitions; the config topic must have exactly \
                     one: delete it, or name another with worker.config_topic"
                ));
            }
        }
        let status_partitions = partitions(&status_topic)?;
        if status_partitions == 0 {
            return Err(format!("topic {status_topic} has no partitions"));
        }
        tail.assign(&tpl)
            .map_err(|e| format!("cannot read the cluster's topics: {e}"))?;
        // The states on a consumer and a thread of their own: applying a change may wait for a
        // connector's old tasks to finish their writes (up to flush.timeout.ms), and other
        // workers' states read meanwhile keep them from going stale here.
        let status_tail = assigned_consumer(format!("cdc-sink-states-{}", herder.worker_id()))?;
        let mut status_tpl = TopicPartitionList::new();
        for p in 0..status_partitions {
            status_tpl
                .add_partition_offset(&status_topic, p, Offset::Beginning)
                .map_err(|e| e.to_string())?;
        }
        status_tail
            .assign(&status_tpl)
            .map_err(|e| format!("cannot read topic {status_topic}: {e}"))?;
        let end = end_offset(tail.client(), &config_topic)?;
        let cluster = Arc::new(Cluster {
            worker_id: herder.worker_id().to_string(),
            instance: format!(
                "{}-{}",
                std::process::id(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos())
            ),
            config_topic,
            status_topic,
            producer,
            runtime,
            applied: Mutex::new(-1),
            applied_cv: Condvar::new(),
            statuses: Mutex::new(BTreeMap::new()),
            stop: AtomicBool::new(false),
            threads: Mutex::new(Vec::new()),
        });
        herder.set_cluster(cluster.clone());
        info!(
            config_topic = %cluster.config_topic,
            status_topic = %cluster.status_topic,
            changes = end,
            "distributed mode: reading the cluster's connectors"
        );
        // The reader hands each change to the applier, which applies them one after another;
        // the reader goes on reading meanwhile, and stops at once the tasks a change stops
        // (`Herder::stop_ahead`) while an earlier change waits for old tasks.
        let (to_apply, changes) = std::sync::mpsc::channel();
        let reader = {
            let (c, h) = (cluster.clone(), herder.clone());
            std::thread::Builder::new()
                .name("cluster-read".into())
                .spawn(move || c.read(tail, &h, end, &to_apply))
                .map_err(|e| e.to_string())?
        };
        let applier = {
            let (c, h) = (cluster.clone(), herder.clone());
            std::thread::Builder::new()
                .name("cluster-apply".into())
                .spawn(move || c.apply_in_order(&changes, &h))
                .map_err(|e| e.to_string())?
        };
        let states = {
            let c = cluster.clone();
            std::thread::Builder::new()
                .name("cluster-states".into())
                .spawn(move || c.read_statuses(status_tail))
                .map_err(|e| e.to_string())?
        };
        let publisher = {
            let (c, h) = (cluster.clone(), herder);
            std::thread::Builder::new()
                .name("cluster-status".into())
                .spawn(move || c.publish_statuses(&h))
                .map_err(|e| e.to_string())?
        };
        cluster
            .lock_threads()
            .extend([reader, applier, states, publisher]);
        if end > 0 {
            cluster
                .wait_applied(end - 1)
                .map_err(|e| format!("reading the cluster's connectors: {e}"))?;
        }
        Ok(cluster)
    }

    fn lock_threads(&self) -> std::sync::MutexGuard<'_, Vec<JoinHandle<()>>> {
        self.threads.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads the config topic until stopped, handing each change to [`Cluster::apply_in_order`]
    /// with its offset, after doing at once what of it stops tasks (`Herder::stop_ahead`).
    /// Config records before `replay_end` are history: they are folded into each connector's
    /// last config and state, which are then applied at once (a worker joining a cluster starts
    /// each connector once, not once per past version, and replays no restart).
    fn read(
        &self,
        tail: BaseConsumer,
        herder: &Herder,
        replay_end: i64,
        to_apply: &Sender<Applied>,
    ) {
        let mut replay: Option<Replay> = (replay_end > 0).then(Replay::default);
        while !self.stop.load(Ordering::Relaxed) {
            let Some(msg) = tail.poll(Duration::from_millis(100)) else {
                // The history may end before `replay_end` (records compacted away).
                if replay.is_some() {
                    let position = tail.position().ok().and_then(|tpl| {
                        tpl.find_partition(&self.config_topic, 0)
                            .and_then(|p| p.offset().to_raw())
                    });
                    if position.is_some_and(|p| p >= replay_end) {
                        finish_replay(to_apply, replay.take(), replay_end - 1);
                    }
                }
                continue;
            };
            let m = match msg {
                Ok(m) => m,
                Err(e) => {
                    warn!("reading the cluster's config topic: {e}");
                    continue;
                }
            };
            let offset = m.offset();
            // The history is applied before any change after it, also when its last records
            // were compacted away and no empty poll came between.
            if replay.is_some() && offset >= replay_end {
                finish_replay(to_apply, replay.take(), replay_end - 1);
            }
            let change = match decode(m.key().unwrap_or_default(), m.payload()) {
                Ok(change) => change,
                Err(e) => {
                    error!(topic = %self.config_topic, offset, "unreadable change, skipped: {e}");
                    None
                }
            };
            match replay.as_mut() {
                Some(r) => {
                    if let Some(change) = change {
                        r.fold(change);
                    }
                    if offset >= replay_end - 1 {
                        finish_replay(to_apply, replay.take(), offset);
                    }
                }
                None => {
                    if let Some(change) = &change {
                        stop_ahead(herder, change);
                    }
                    if to_apply
                        .send((change.into_iter().collect(), offset, true))
                        .is_err()
                    {
                        error!(
                            "the applier of the cluster's changes is gone: changes are no longer applied on this worker"
                        );
                        return;
                    }
                }
            }
        }
    }

    /// Applies the changes [`Cluster::read`] hands over, in order, each batch then counted as
    /// applied up to its offset; until the reader stops.
    fn apply_in_order(&self, changes: &Receiver<Applied>, herder: &Herder) {
        while let Ok((batch, offset, read_ahead)) = changes.recv() {
            if self.stop.load(Ordering::Relaxed) {
                return;
            }
            for change in &batch {
                apply(herder, change, read_ahead);
            }
            self.set_applied(offset);
        }
    }

    /// Reads other workers' task states until stopped.
    fn read_statuses(&self, tail: BaseConsumer) {
        let mut duplicate_said: Option<Instant> = None;
        // Connectors whose states this process has read back under its worker id. A state of
        // another process under that id read after one of ours (one key, so one partition, in
        // the order written) is a live duplicate's; one read before is an earlier process's
        // (this worker before a restart). No clock is compared.
        let mut ours_read: std::collections::BTreeSet<String> = Default::default();
        while !self.stop.load(Ordering::Relaxed) {
            let Some(msg) = tail.poll(Duration::from_millis(100)) else {
                continue;
            };
            let m = match msg {
                Ok(m) => m,
                Err(e) => {
                    warn!("reading the cluster's task states: {e}");
                    continue;
                }
            };
            let key = m.key().unwrap_or_default();
            if let Ok((connector, worker)) = serde_json::from_slice::<(String, String)>(key) {
                let status = m
                    .payload()
                    .and_then(|v| serde_json::from_slice::<WireStatus>(v).ok());
                if worker == self.worker_id
                    && let Some(instance) = status.as_ref().and_then(|s| s.instance.as_deref())
                {
                    if instance == self.instance {
                        ours_read.insert(connector.clone());
                    } else if ours_read.contains(&connector)
                        && duplicate_said.is_none_or(|at| at.elapsed() >= Duration::from_secs(60))
                    {
                        duplicate_said = Some(Instant::now());
                        error!(
                            "another live worker publishes task states as worker id `{}` too (connector {connector}, \
                             process {instance}; this one is {}): worker ids must be unique in a cluster, or the two \
                             overwrite each other's task states in status. Give each worker its own `worker.id` \
                             (or its own host and `rest.listen` port, which the default id is made of)",
                            self.worker_id, self.instance
                        );
                    }
                }
                let mut all = self.statuses.lock().unwrap_or_else(|p| p.into_inner());
                match status {
                    Some(s) => {
                        let tasks = s
                            .tasks
                            .into_iter()
                            .map(|t| TaskStatus {
                                id: t.id,
                                state: state_name(&t.state),
                                worker_id: t.worker_id,
                                trace: t.trace,
                                trouble: t.trouble,
                                progress: t.progress,
                            })
                            .collect();
                        all.entry(connector)
                            .or_default()
                            .insert(worker, (tasks, s.failed, s.at_ms));
                    }
                    None => {
                        if let Some(w) = all.get_mut(&connector) {
                            w.remove(&worker);
                        }
                    }
                }
            }
        }
    }

    fn set_applied(&self, offset: i64) {
        let mut applied = self.applied.lock().unwrap_or_else(|p| p.into_inner());
        *applied = (*applied).max(offset);
        self.applied_cv.notify_all();
    }

    /// Publishes this worker's task states on change and every [`HEARTBEAT`]; removes them
    /// when a connector is gone and when the worker stops.
    fn publish_statuses(&self, herder: &Herder) {
        let mut last: BTreeMap<String, (String, Instant)> = BTreeMap::new();
        loop {
            let stopping = self.stop.load(Ordering::Relaxed);
            let now = if stopping {
                BTreeMap::new()
            } else {
                herder.local_statuses()
            };
            for (connector, (failed, tasks)) in &now {
                let body: Vec<WireTask> = tasks
                    .iter()
                    .map(|t| WireTask {
                        id: t.id,
                        state: t.state.to_string(),
                        worker_id: t.worker_id.clone(),
                        trace: t.trace.clone(),
                        trouble: t.trouble.clone(),
                        progress: t.progress.clone(),
                    })
                    .collect();
                let text = serde_json::to_string(&(&body, failed)).unwrap_or_default();
                let due = last
                    .get(connector)
                    .is_none_or(|(t, at)| *t != text || at.elapsed() >= HEARTBEAT);
                if due {
                    let value = json!(WireStatus {
                        at_ms: now_ms(),
                        tasks: body,
                        failed: failed.clone(),
                        instance: Some(self.instance.clone()),
                    })
                    .to_string();
                    if self.send_status(connector, Some(&value)) {
                        last.insert(connector.clone(), (text, Instant::now()));
                    }
                }
            }
            let gone: Vec<String> = last
                .keys()
                .filter(|c| !now.contains_key(*c))
                .cloned()
                .collect();
            for c in gone {
                if self.send_status(&c, None) {
                    last.remove(&c);
                }
            }
            if stopping {
                return;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    fn send_status(&self, connector: &str, value: Option<&str>) -> bool {
        let key = json!([connector, self.worker_id]).to_string();
        let mut record = FutureRecord::to(&self.status_topic).key(&key);
        if let Some(v) = value {
            record = record.payload(v);
        }
        match self
            .runtime
            .block_on(self.producer.send(record, KAFKA_TIMEOUT))
        {
            Ok(_) => true,
            Err((e, _)) => {
                warn!("cannot publish the task states of {connector}: {e}");
                false
            }
        }
    }

    /// Publishes `change` to the config topic; returns its offset.
    /// Writes a change's records in order; the offset of the last.
    pub fn publish(&self, change: &Change) -> Result<i64, Error> {
        let mut last = -1;
        for (key, value) in encode(change) {
            let mut record = FutureRecord::to(&self.config_topic).key(&key);
            if let Some(v) = &value {
                record = record.payload(v);
            }
            last = self
                .runtime
                .block_on(self.producer.send(record, KAFKA_TIMEOUT))
                .map(|d| d.offset)
                .map_err(|(e, _)| {
                    // Timed out, the record may still have been written, and then applies.
                    let maybe = match e.rdkafka_error_code() {
                        Some(RDKafkaErrorCode::MessageTimedOut) => {
                            " (it may have been written all the same, and then applies)"
                        }
                        _ => "",
                    };
                    Error::Internal(format!(
                        "cannot write the change to topic {}{maybe}: {e}",
                        self.config_topic
                    ))
                })?;
        }
        Ok(last)
    }

    /// Waits until every config record written so far has been applied here: a check made
    /// on this worker's view (a connector stopped before its offsets are changed) then sees
    /// what another worker has already answered for.
    pub fn catch_up(&self) -> Result<(), Error> {
        let high =
            end_offset(self.producer.client(), &self.config_topic).map_err(Error::Internal)?;
        self.wait_until_applied(high - 1, || {
            format!(
                "nothing was written: this worker has not applied the cluster's earlier changes (topic {} up to offset {}) within {APPLY_TIMEOUT:?} (it may be waiting for tasks still finishing their writes); retry",
                self.config_topic,
                high - 1
            )
        })
    }

    /// Waits until the config record at `offset` has been applied here.
    pub fn wait_applied(&self, offset: i64) -> Result<(), Error> {
        self.wait_until_applied(offset, || {
            format!(
                "the change was written to topic {} (offset {offset}) but not read back within {APPLY_TIMEOUT:?}",
                self.config_topic
            )
        })
    }

    /// Waits until the config record at `offset` has been applied here; else the error `late`
    /// describes.
    fn wait_until_applied(&self, offset: i64, late: impl Fn() -> String) -> Result<(), Error> {
        let deadline = Instant::now() + APPLY_TIMEOUT;
        let mut applied = self.applied.lock().unwrap_or_else(|p| p.into_inner());
        while *applied < offset {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::Internal(late()));
            }
            applied = self
                .applied_cv
                .wait_timeout(applied, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        Ok(())
    }

    /// The task states other live workers published for `connector`.
    pub fn others(&self, connector: &str) -> Vec<(String, Vec<TaskStatus>)> {
        let all = self.statuses.lock().unwrap_or_else(|p| p.into_inner());
        self.live_others(&all, connector)
            .map(|(id, (tasks, _, _))| (id.clone(), tasks.clone()))
            .collect()
    }

    /// Another live worker on which `connector` failed, and why (the first by worker id).
    pub fn failed_elsewhere(&self, connector: &str) -> Option<(String, String)> {
        let all = self.statuses.lock().unwrap_or_else(|p| p.into_inner());
        self.live_others(&all, connector)
            .find_map(|(id, (_, failed, _))| failed.clone().map(|why| (id.clone(), why)))
    }

    /// What the other workers heard from within [`STALE`] published for `connector`.
    fn live_others<'a>(
        &self,
        all: &'a Statuses,
        connector: &str,
    ) -> impl Iterator<Item = (&'a String, &'a (Vec<TaskStatus>, Option<String>, i64))> {
        let fresh_after = now_ms() - STALE.as_millis() as i64;
        let me = self.worker_id.clone();
        all.get(connector)
            .into_iter()
            .flatten()
            .filter(move |(id, (_, _, at))| **id != me && *at >= fresh_after)
    }

    /// Stops reading and publishing; this worker's task states are removed. Call after the
    /// tasks have stopped.
    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::Relaxed);
        let threads: Vec<JoinHandle<()>> = self.lock_threads().drain(..).collect();
        for t in threads {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_compact_cleanup_policy_is_taken() {
        assert!(only_compact("t", "compact").is_ok());
        for policy in ["delete", "compact,delete", "delete,compact", ""] {
            let e = only_compact("t", policy).unwrap_err();
            assert!(e.contains(&format!("cleanup.policy={policy}:")), "{e}");
        }
    }

    #[test]
    fn changes_round_trip_through_their_records() {
        let put = Change::Put {
            config: ConnectorConfig {
                name: "a:b".into(),
                config: BTreeMap::from([("topics".into(), "t".into())]),
            },
            target: Some(TargetState::Paused),
        };
        let target = Change::Target {
            name: "a".into(),
            target: TargetState::Stopped,
        };
        let delete = Change::Delete { name: "a".into() };
        let restart = Change::Restart {
            name: "a".into(),
            only_failed: true,
            tasks: false,
            worker: Some("w:1".into()),
            task: Some(2),
        };
        let read = |records: Vec<(String, Option<String>)>| -> Vec<Option<Change>> {
            records
                .iter()
                .map(|(k, v)| decode(k.as_bytes(), v.as_deref().map(str::as_bytes)).unwrap())
                .collect()
        };
        // A state goes in a record of its own too, first; a delete removes it.
        assert_eq!(
            read(encode(&put)),
            vec![
                Some(Change::Target {
                    name: "a:b".into(),
                    target: TargetState::Paused
                }),
                Some(put.clone()),
            ]
        );
        assert_eq!(read(encode(&delete)), vec![Some(delete.clone()), None]);
        for c in [target, restart] {
            assert_eq!(read(encode(&c)), vec![Some(c)]);
        }
        assert!(decode(b"not json", None).is_err());
        // A restart of the connector alone is a record a worker of an older version ignores
        // (`decode` of an unknown kind: nothing), not one it reads as a restart of its tasks.
        let alone = encode(&Change::Restart {
            name: "a".into(),
            only_failed: false,
            tasks: false,
            worker: None,
            task: None,
        });
        assert!(
            alone[0].0.starts_with(r#"["restart-connector""#),
            "{alone:?}"
        );
        // A restart written before the connector could restart alone restarted tasks.
        let old = br#"{"only_failed":false,"worker":null,"task":null,"at_ms":1}"#;
        assert_eq!(
            decode(br#"["restart","a"]"#, Some(old)).unwrap(),
            Some(Change::Restart {
                name: "a".into(),
                only_failed: false,
                tasks: true,
                worker: None,
                task: None,
            })
        );
    }

    /// Histories of creates (with a state or none), state changes, config changes and
    /// deletes fold to the same connectors whole and compacted (each key's last record kept,
    /// its tombstone kept or already gone), also when a config with a state was cut short
    /// after its first record.
    #[test]
    fn every_history_folds_alike_whole_and_compacted() {
        let states = [
            TargetState::Running,
            TargetState::Paused,
            TargetState::Stopped,
        ];
        let mut seed = 7u64;
        let mut next = |n: u64| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) % n
        };
        for _ in 0..2_000 {
            let mut records = Vec::new();
            for step in 0..next(12) + 1 {
                let name = ["a", "b"][next(2) as usize].to_string();
                let state = states[next(3) as usize];
                let config = ConnectorConfig {
                    name: name.clone(),
                    config: BTreeMap::from([("batch.size".into(), step.to_string())]),
                };
                let change = match next(4) {
                    0 => Change::Put {
                        config,
                        target: Some(state),
                    },
                    1 => Change::Put {
                        config,
                        target: None,
                    },
                    2 => Change::Target {
                        name,
                        target: state,
                    },
                    _ => Change::Delete { name },
                };
                let mut written = encode(&change);
                // A worker killed between the two records of a config with a state. (A delete
                // cut short leaves a state without a connector, which a create overrides: every
                // create carries a state.)
                if matches!(
                    change,
                    Change::Put {
                        target: Some(_),
                        ..
                    }
                ) && next(4) == 0
                {
                    written.truncate(1);
                }
                records.extend(written);
            }
            let fold = |records: &[(String, Option<String>)]| {
                let mut r = Replay::default();
                for (k, v) in records {
                    if let Some(c) = decode(k.as_bytes(), v.as_deref().map(str::as_bytes)).unwrap()
                    {
                        r.fold(c);
                    }
                }
                r.0
            };
            let whole = fold(&records);
            for keep_tombstones in [true, false] {
                let compacted: Vec<_> = records
                    .iter()
                    .enumerate()
                    .filter(|(i, (k, v))| {
                        !records[i + 1..].iter().any(|(later, _)| later == k)
                            && (keep_tombstones || v.is_some())
                    })
                    .map(|(_, r)| r.clone())
                    .collect();
                // A state left for a connector that is gone changes nothing a worker runs.
                let mut got = fold(&compacted);
                got.retain(|_, (config, _)| config.is_some());
                let mut want = whole.clone();
                want.retain(|_, (config, _)| config.is_some());
                assert_eq!(got, want, "{records:?}");
            }
        }
    }

    #[test]
    fn a_compacted_history_folds_to_each_connectors_last_config_and_state() {
        let config = |batch: &str| ConnectorConfig {
            name: "c".into(),
            config: BTreeMap::from([("batch.size".into(), batch.into())]),
        };
        let mut r = Replay::default();
        // Compaction kept the pause (an older offset) and the last config (a newer one).
        r.fold(Change::Target {
            name: "c".into(),
            target: TargetState::Paused,
        });
        r.fold(Change::Put {
            config: config("2"),
            target: None,
        });
        assert_eq!(r.0["c"], (Some(config("2")), Some(TargetState::Paused)));
        r.fold(Change::Delete { name: "c".into() });
        assert!(r.0.is_empty());
        r.fold(Change::Put {
            config: config("3"),
            target: Some(TargetState::Running),
        });
        assert_eq!(r.0["c"], (Some(config("3")), Some(TargetState::Running)));
    }
}
