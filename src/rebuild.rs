//! `cdc-sink rebuild`: a connector's read model rebuilt from its topics into fresh physical
//! indices while the live connector keeps serving (and writing) the old ones through their
//! aliases; then each alias moves to the new index in one atomic `_aliases` request.
//! `--rollback` moves the aliases back to the indices the last rebuild replaced, after catching
//! those up on what changed since.
//!
//! The connector must write to aliases (`<alias>` → `<alias>-v<N>`): the live connector keeps
//! writing through them, so after the move it writes to the new index from its own offsets.
//!
//! One move: a task of its own (consumer group `connect-<connector>-rebuild-v<N>`, or
//! `…-rollback-…` starting from the offsets recorded when the target was replaced) writes every
//! topic into the target indices, at most one bulk request in flight (the live connector keeps
//! the rest of Elasticsearch). When it has written every partition up to the live connector's
//! committed offsets, the old indices are write-blocked (the live connector's writes to them
//! are refused and retried, as for any read-only index), the task writes everything in the
//! topics at that moment, the live connector's committed offsets are recorded in the old
//! indices' `_meta`, and the aliases move: the live connector's retried writes reach the new
//! indices, and a read through an alias never sees older data after the move than before.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value as Json, json};
use tracing::info;

use crate::connector::{ConnectorSpec, SinkSpec};
use crate::settings::Settings;
use crate::sink::elasticsearch::client::BulkClient;
use crate::sink::elasticsearch::config::EsConfig;
use crate::source;
use crate::worker::Worker;

const TIMEOUT: Duration = Duration::from_secs(10);
/// How often progress is looked at, and logged.
const TICK: Duration = Duration::from_secs(1);
const LOG_EVERY: Duration = Duration::from_secs(5);
/// How long the task may take to write what was in the topics at the move.
const AFTER_MOVE: Duration = Duration::from_secs(300);

type Offsets = BTreeMap<(String, i32), i64>;

/// One alias to move: from its current index to `to`.
#[derive(Debug, Clone)]
struct Move {
    alias: String,
    from: String,
    to: String,
}

/// Elasticsearch calls of a rebuild, on a runtime of its own.
struct Es {
    client: BulkClient,
    runtime: tokio::runtime::Runtime,
    wait: Duration,
}

impl Es {
    fn call(&self, method: Method, path: &str, body: Option<Json>) -> Result<(u16, Json), String> {
        let (status, bytes) = self
            .runtime
            .block_on(self.client.json(method, path, body.as_ref(), self.wait))
            .map_err(|e| e.message)?;
        Ok((status, serde_json::from_slice(&bytes).unwrap_or(Json::Null)))
    }

    fn ok(&self, method: Method, path: &str, body: Option<Json>) -> Result<Json, String> {
        match self.call(method, path, body)? {
            (200..=299, v) => Ok(v),
            (s, v) => Err(format!("{path} answered {s}: {v}")),
        }
    }

    /// The index alias `alias` points to.
    fn target(&self, alias: &str) -> Result<String, String> {
        match self.call(Method::GET, &format!("_alias/{alias}"), None)? {
            (200, Json::Object(m)) if m.len() == 1 => {
                Ok(m.keys().next().cloned().unwrap_or_default())
            }
            (200, v) => Err(format!("alias `{alias}` points to several indices: {v}")),
            _ => Err(format!(
                "`{alias}` is not an alias. A rebuild moves an alias from one index to another: \
                 write to an alias `{alias}` → `{alias}-v1` (see the README, \"Rebuilding an index\")"
            )),
        }
    }

    /// Every index `<alias>-v<N>` with its version and the `_meta` cdc-sink wrote on it.
    fn family(&self, alias: &str) -> Result<BTreeMap<u32, (String, Json)>, String> {
        let v = self.ok(Method::GET, &format!("{alias}-v*/_mapping"), None)?;
        Ok(v.as_object()
            .into_iter()
            .flatten()
            .filter_map(|(index, m)| {
                let n = version_of(alias, index)?;
                Some((
                    n,
                    (index.clone(), m["mappings"]["_meta"]["cdc_sink"].clone()),
                ))
            })
            .collect())
    }

    /// Creates `to` with the mappings and settings of `from`, unless it exists; returns
    /// its `index.uuid`, which tells this index from one of the same name deleted before.
    fn create_like(&self, from: &str, to: &str) -> Result<String, String> {
        if self.call(Method::HEAD, to, None)?.0 == 200 {
            info!(
                index = to,
                "the new index exists: the rebuild goes on where it was"
            );
            return self.uuid(to);
        }
        let v = self.ok(Method::GET, &format!("{from}?flat_settings=true"), None)?;
        let def = &v[from];
        let mut mappings = def["mappings"].clone();
        if let Some(m) = mappings.as_object_mut() {
            m.remove("_meta");
        }
        // Every setting of the old index (field limits, ingest pipelines, analysis, sorting,
        // refresh interval…) but those that name that index or its state.
        let settings: serde_json::Map<String, Json> = def["settings"]
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(k, _)| !NOT_COPIED.iter().any(|p| k.starts_with(p)))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        self.ok(
            Method::PUT,
            to,
            Some(json!({"settings": settings, "mappings": mappings})),
        )?;
        info!(index = to, like = from, "created");
        self.uuid(to)
    }

    fn uuid(&self, index: &str) -> Result<String, String> {
        let v = self.ok(Method::GET, &format!("{index}/_settings"), None)?;
        v[index]["settings"]["index"]["uuid"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("`{index}` has no index.uuid: {v}"))
    }
}

/// Settings of an index a rebuild does not give the new one: its identity, its history, and
/// its state (the old index is write-blocked by then).
const NOT_COPIED: &[&str] = &[
    "index.uuid",
    "index.creation_date",
    "index.provided_name",
    "index.version.",
    "index.history.",
    "index.blocks.",
    "index.verified_",
    "index.routing.allocation.initial_recovery.",
    "index.resize.",
    "index.shrink.",
    "index.frozen",
    "index.store.snapshot.",
    "index.lifecycle.indexing_complete",
    "index.downsample.",
    "index.recovery.type",
    "index.lifecycle.rollover_alias",
    "archived.",
];

/// `alias-v<N>` → N.
fn version_of(alias: &str, index: &str) -> Option<u32> {
    index.strip_prefix(alias)?.strip_prefix("-v")?.parse().ok()
}

/// Rebuilds (or, with `rollback`, rolls back) every index `spec` writes to.
/// `allow_truncated`: rebuild even from topics that no longer hold their records from offset 0.
pub fn run(
    settings: &Settings,
    spec: &ConnectorSpec,
    rollback: bool,
    allow_truncated: bool,
) -> Result<(), String> {
    let cfg = spec
        .sink
        .elasticsearch()
        .ok_or("this command works on Elasticsearch connectors only")?;
    let es = Es {
        client: BulkClient::new(cfg)?,
        runtime: tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?,
        wait: cfg.read_timeout * 4,
    };
    if !spec.transforms.routers.is_empty() {
        return Err("rebuild does not support RegexRouter/TimestampRouter connectors yet".into());
    }
    let consumer = source::plain_client(settings)?;
    let partitions = source::partitions_of(&consumer, &spec.subscription, TIMEOUT)?;
    if partitions.is_empty() {
        return Err("the connector's topics do not exist".into());
    }
    // A partition whose first records are gone (retention, DeleteRecords; compaction keeps
    // the start) cannot give the new index the rows only those records held: the alias would
    // move to an index missing them.
    let truncated: Vec<String> = partitions
        .iter()
        .filter(|(_, _, low, _)| *low > 0)
        .map(|(t, p, low, _)| format!("{t}/{p} starts at offset {low}"))
        .collect();
    if !rollback && !allow_truncated && !truncated.is_empty() {
        return Err(format!(
            "the topics no longer hold every record from their beginning ({}): the new index \
             would lack the rows whose only records were deleted (retention.ms, DeleteRecords). \
             Keep the topics compacted (cleanup.policy=compact), or, when the records kept hold \
             every row (a snapshot was taken since), pass --allow-truncated-topics",
            truncated.join(", ")
        ));
    }
    let low_of: BTreeMap<(String, i32), i64> = partitions
        .iter()
        .map(|(t, p, low, _)| ((t.clone(), *p), *low))
        .collect();
    // alias → topics writing to it.
    let mut aliases: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (topic, ..) in &partitions {
        let alias = cfg.index_of_topic(topic)?;
        let topics = aliases.entry(alias).or_default();
        if !topics.contains(topic) {
            topics.push(topic.clone());
        }
    }
    let mut moves = Vec::new();
    let mut unblock: Vec<String> = Vec::new();
    let mut start: Option<Offsets> = None;
    let mut group_suffix = String::new();
    for alias in aliases.keys() {
        let from = es.target(alias)?;
        let current = version_of(alias, &from).unwrap_or(1);
        let family = es.family(alias)?;
        let to = if rollback {
            // The index the current one replaced (its `replaced_by`): after a rollback and
            // another rebuild, the highest earlier version is the one rolled away from.
            let replaced = family
                .range(..current)
                .rev()
                .find(|(_, (_, meta))| meta["replaced_by"].as_str() == Some(from.as_str()));
            let (n, (index, meta)) = replaced
                .or_else(|| family.range(..current).next_back())
                .ok_or_else(|| format!("no earlier index of `{alias}` to roll back to"))?;
            let offsets = meta["offsets"].as_object().ok_or_else(|| {
                format!("`{index}` has no offsets recorded by a rebuild: it cannot catch up")
            })?;
            let at = start.get_or_insert_with(Offsets::new);
            for (k, v) in offsets {
                let (t, p) = k.rsplit_once('/').unwrap_or((k, "0"));
                let (key, offset) = (
                    (t.to_string(), p.parse().unwrap_or(0)),
                    v.as_i64().unwrap_or(0),
                );
                // The changes since the move must all still be there to catch it up.
                if let Some(low) = low_of.get(&key).filter(|low| offset < **low) {
                    return Err(format!(
                        "`{index}` was left at offset {offset} of {k}, but that partition now \
                         starts at {low} (retention.ms, DeleteRecords): the changes in between \
                         are gone, and it cannot be caught up; rebuild instead"
                    ));
                }
                at.insert(key, offset);
            }
            // Replaced indices are write-blocked; this one takes writes again, once every
            // alias's recorded offsets are known to be still in the topics (below).
            unblock.push(index.clone());
            group_suffix = format!(
                "rollback-v{n}-{}",
                meta["retired_at_ms"].as_i64().unwrap_or(0)
            );
            index.clone()
        } else {
            // A new index above the current one that no rebuild finished (no `_meta`): an
            // interrupted rebuild, continued; else the next version.
            let next = match family.range(current + 1..).next_back() {
                Some((n, (_, meta))) if meta.is_null() => *n,
                _ => {
                    family
                        .keys()
                        .next_back()
                        .copied()
                        .unwrap_or(current)
                        .max(current)
                        + 1
                }
            };
            let to = format!("{alias}-v{next}");
            // The group belongs to this very index: an index of the same name created again
            // (its predecessor deleted after a rollback, or by hand) is written from the
            // beginning, not from where the deleted one's group had got to.
            let uuid = es.create_like(&from, &to)?;
            // With several aliases, the group belongs to all their new indices together.
            group_suffix = if group_suffix.is_empty() {
                format!("rebuild-v{next}-{uuid}")
            } else {
                format!("{group_suffix}-{uuid}")
            };
            to
        };
        moves.push(Move {
            alias: alias.clone(),
            from,
            to,
        });
    }
    for index in &unblock {
        es.ok(
            Method::PUT,
            &format!("{index}/_settings"),
            Some(json!({"index": {"blocks": {"write": false}}})),
        )?;
    }
    let parts: Vec<(String, i32)> = partitions
        .iter()
        .map(|(t, p, ..)| (t.clone(), *p))
        .collect();
    let mut mover = spec.clone();
    mover.name = format!("{}-{group_suffix}", spec.name);
    // From the log's start, whatever the connector or the worker says: a partition with no
    // offset recorded for it starts where the index needs it, not at its end, which left an
    // index of the changes made during the rebuild to move the alias to.
    mover
        .consumer_overrides
        .insert("auto.offset.reset".into(), "earliest".into());
    let mut es_cfg: EsConfig = cfg.clone();
    // At most one bulk request at a time: the live connector keeps the rest of Elasticsearch.
    es_cfg.max_in_flight = 1;
    for (alias, topics) in &aliases {
        let to = &moves
            .iter()
            .find(|m| &m.alias == alias)
            .map(|m| m.to.clone());
        for t in topics {
            es_cfg
                .topic_index_map
                .insert(t.clone(), to.clone().unwrap_or_default());
        }
    }
    mover.sink = SinkSpec::Elasticsearch(Box::new(es_cfg));
    mover.tasks_max = 1;
    let group = mover.group_id();
    let clients = Clients {
        plain: consumer,
        live: source::group_client(settings, &spec.group_id())?,
        mover: source::group_client(settings, &group)?,
    };
    if let Some(at) = &start
        && source::committed_of(&clients.mover, &parts, TIMEOUT)?.is_empty()
    {
        source::commit_for(&clients.mover, at)?;
    }
    info!(moves = ?moves, group, "writing the topics into the new indices");
    let runtime = crate::worker::runtime()?;
    let mut worker = Worker::new(
        std::sync::Arc::new(settings.clone()),
        runtime.handle().clone(),
    );
    worker.start(mover, false)?;
    let result = follow(spec, &es, &worker, &moves, &parts, &clients);
    let ok = worker.stop();
    result?;
    if !ok {
        return Err("the rebuild's task failed (see the log)".into());
    }
    for m in &moves {
        retire_old(&es, &m.alias, &m.to, cfg.rebuild_retain)?;
    }
    Ok(())
}

/// The Kafka clients of a move, made once: metadata and watermarks, and the live connector's
/// and the move's groups (their committed offsets).
struct Clients {
    plain: rdkafka::consumer::BaseConsumer,
    live: rdkafka::consumer::BaseConsumer,
    mover: rdkafka::consumer::BaseConsumer,
}

/// Waits for the move's task to catch up with the live connector, moves the aliases, and waits
/// for the task to write what was in the topics then.
fn follow(
    spec: &ConnectorSpec,
    es: &Es,
    worker: &Worker,
    moves: &[Move],
    parts: &[(String, i32)],
    clients: &Clients,
) -> Result<(), String> {
    let consumer = &clients.plain;
    let started = Instant::now();
    let mut logged = Instant::now();
    // Phase 1: up to the live connector's committed offsets (its end offsets when it has none),
    // over the partitions there were at the start.
    loop {
        if let Some(f) = worker.failure() {
            return Err(format!("the rebuild's task failed: {f}"));
        }
        let bounds = bounds(consumer, spec, parts)?;
        let live = source::committed_of(&clients.live, parts, TIMEOUT)?;
        let target: Offsets = bounds
            .iter()
            .map(|(k, (_, high))| (k.clone(), live.get(k).copied().unwrap_or(*high)))
            .collect();
        let done = written(&clients.mover, parts, &bounds)?;
        let (have, want) = progress(&done, &target);
        if reached(&done, &target) {
            info!(records = have, "caught up with the live connector");
            break;
        }
        if logged.elapsed() >= LOG_EVERY {
            logged = Instant::now();
            let rate = have as f64 / started.elapsed().as_secs_f64().max(1.0);
            let eta = (want.saturating_sub(have)) as f64 / rate.max(1.0);
            info!(done = have, total = want, eta_s = eta as u64, "rebuilding");
        }
        std::thread::sleep(TICK);
    }
    // Phase 2: the old indices take no more writes (the live connector retries them, and after
    // the move they reach the new ones); the new ones catch up with everything the old ones
    // have, so a read through the alias never goes back.
    let mut blocked = Vec::new();
    let moved = (|| {
        for m in moves {
            es.ok(Method::PUT, &format!("{}/_block/write", m.from), None)?;
            blocked.push(m.from.as_str());
        }
        move_aliases(spec, es, worker, moves, parts, clients)
    })();
    if let Err(why) = moved {
        // The live connector's writes to the old indices must not wait for a rebuild that
        // gave up: they take writes again.
        let mut still = String::new();
        for index in blocked {
            let unblock = json!({"index": {"blocks": {"write": false}}});
            if let Err(e) = es.ok(Method::PUT, &format!("{index}/_settings"), Some(unblock)) {
                still.push_str(&format!("; `{index}` is still write-blocked ({e}): remove the block with PUT {index}/_settings {{\"index.blocks.write\": false}}"));
            }
        }
        if still.is_empty() {
            return Err(format!("{why}; the old indices take writes again"));
        }
        return Err(format!("{why}{still}"));
    }
    Ok(())
}

/// Phase 2, the old indices write-blocked: the new ones catch up with everything the old ones
/// have, so a read through the alias never goes back; then the aliases move.
fn move_aliases(
    spec: &ConnectorSpec,
    es: &Es,
    worker: &Worker,
    moves: &[Move],
    parts: &[(String, i32)],
    clients: &Clients,
) -> Result<(), String> {
    // Partitions added since the rebuild started: the live connector wrote their records to
    // the old indices, and this rebuild did not wait for them.
    let now_parts = source::partitions_of(&clients.plain, &spec.subscription, TIMEOUT)?;
    let added: Vec<String> = now_parts
        .iter()
        .filter(|(t, p, ..)| !parts.iter().any(|(pt, pp)| pt == t && pp == p))
        .map(|(t, p, ..)| format!("{t}/{p}"))
        .collect();
    if !added.is_empty() {
        return Err(format!(
            "partitions were added to the topics during the rebuild ({}); run it again",
            added.join(", ")
        ));
    }
    let live_at = source::committed_of(&clients.live, parts, TIMEOUT)?;
    let frozen = bounds(&clients.plain, spec, parts)?;
    wait_written(
        worker,
        &clients.mover,
        parts,
        &frozen,
        "the old index froze",
    )?;
    // The old indices keep the offsets they are complete up to, for a rollback.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let offsets: serde_json::Map<String, Json> = live_at
        .iter()
        .map(|((t, p), o)| (format!("{t}/{p}"), json!(o)))
        .collect();
    for m in moves {
        es.ok(
            Method::PUT,
            &format!("{}/_mapping", m.from),
            Some(json!({"_meta": {"cdc_sink": {"retired_at_ms": now, "connector": spec.name, "replaced_by": m.to, "offsets": offsets}}})),
        )?;
    }
    let actions: Vec<Json> = moves
        .iter()
        .flat_map(|m| {
            [
                json!({"remove": {"index": m.from, "alias": m.alias}}),
                json!({"add": {"index": m.to, "alias": m.alias}}),
            ]
        })
        .collect();
    // What the new indices hold must be searchable before readers see them.
    for m in moves {
        es.ok(Method::POST, &format!("{}/_refresh", m.to), None)?;
    }
    es.ok(Method::POST, "_aliases", Some(json!({"actions": actions})))?;
    for m in moves {
        info!(alias = m.alias, from = m.from, to = m.to, "alias moved");
    }
    Ok(())
}

/// Waits until the move's task has written every partition up to its end offset in `until`.
fn wait_written(
    worker: &Worker,
    mover: &rdkafka::consumer::BaseConsumer,
    parts: &[(String, i32)],
    until: &Bounds,
    what: &str,
) -> Result<(), String> {
    let deadline = Instant::now() + AFTER_MOVE;
    let ends: Offsets = until
        .iter()
        .map(|(k, (_, high))| (k.clone(), *high))
        .collect();
    loop {
        if let Some(f) = worker.failure() {
            return Err(format!("the rebuild's task failed: {f}"));
        }
        if reached(&written(mover, parts, until)?, &ends) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "the rebuild's task did not write what was in the topics when {what} within {AFTER_MOVE:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Each partition's first and end offsets.
type Bounds = BTreeMap<(String, i32), (i64, i64)>;

/// The first and end offsets of `parts` (the partitions of the move, known at its start).
fn bounds(
    consumer: &rdkafka::consumer::BaseConsumer,
    spec: &ConnectorSpec,
    parts: &[(String, i32)],
) -> Result<Bounds, String> {
    Ok(
        source::partitions_of(consumer, &spec.subscription, TIMEOUT)?
            .into_iter()
            .filter(|(t, p, ..)| parts.iter().any(|(pt, pp)| pt == t && pp == p))
            .map(|(t, p, low, high)| ((t, p), (low, high)))
            .collect(),
    )
}

/// How far the move's group has written each partition: its committed offset, or, with none,
/// the partition's first offset, where it starts (an empty partition, or one whose records all
/// expired, has nothing to write).
fn written(
    mover: &rdkafka::consumer::BaseConsumer,
    parts: &[(String, i32)],
    bounds: &Bounds,
) -> Result<Offsets, String> {
    let mut done = source::committed_of(mover, parts, TIMEOUT)?;
    for (k, (low, _)) in bounds {
        done.entry(k.clone()).or_insert(*low);
    }
    Ok(done)
}

/// Whether every partition of `target` is written up to its offset there.
fn reached(done: &Offsets, target: &Offsets) -> bool {
    target
        .iter()
        .all(|(k, t)| done.get(k).is_some_and(|d| d >= t))
}

/// Records written (summed over partitions) and to write.
fn progress(done: &Offsets, target: &Offsets) -> (u64, u64) {
    let have = target
        .iter()
        .map(|(k, t)| done.get(k).copied().unwrap_or(0).min(*t).max(0) as u64)
        .sum();
    let want = target.values().map(|t| (*t).max(0) as u64).sum();
    (have, want)
}

/// Deletes the indices of `alias`'s family replaced longer than `retain` ago (never `current`).
fn retire_old(es: &Es, alias: &str, current: &str, retain: Duration) -> Result<(), String> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    for (index, meta) in es.family(alias)?.into_values() {
        let Some(at) = meta["retired_at_ms"].as_i64() else {
            continue;
        };
        if index != current && now - at > retain.as_millis() as i64 {
            es.ok(Method::DELETE, &index, None)?;
            info!(
                index,
                "deleted: replaced longer than rebuild.retain.hours ago"
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_of_an_alias_family() {
        assert_eq!(version_of("orders", "orders-v3"), Some(3));
        assert_eq!(version_of("orders", "orders-v"), None);
        assert_eq!(version_of("orders", "orders-archive-v3"), None);
        assert_eq!(version_of("orders", "orders"), None);
    }

    #[test]
    fn progress_counts_only_up_to_the_target() {
        let k = |p| ("t".to_string(), p);
        let target = Offsets::from([(k(0), 10), (k(1), 5)]);
        let done = Offsets::from([(k(0), 12)]);
        assert_eq!(progress(&done, &target), (10, 15));
    }
}
