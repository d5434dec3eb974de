//! A connector's offsets, as Kafka Connect shows and changes a sink connector's: the committed
//! offsets of its consumer group `connect-<name>`, in the shape
//! `{"partition": {"kafka_topic", "kafka_partition"}, "offset": {"kafka_offset"}}`.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;
use serde_json::{Value, json};

use super::Error;
use crate::connector::ConnectorSpec;
use crate::settings::Settings;
use crate::source;

const TIMEOUT: Duration = Duration::from_secs(10);
/// How long a change of offsets waits for the group to have no members: a stop is answered at
/// once, and the tasks (on every worker) leave the group once their writes are finished.
const MEMBERS_WAIT: Duration = Duration::from_secs(30);

/// Waits until the connector's consumer group has no members and this worker closes none of
/// its consumers any more; else the error Kafka Connect gives in that case (`what`: "alter" or
/// "reset").
fn wait_no_members(
    client: &rdkafka::consumer::BaseConsumer,
    spec: &ConnectorSpec,
    what: &str,
) -> Result<(), String> {
    use rdkafka::consumer::Consumer as _;
    let group = spec.group_id();
    let start = std::time::Instant::now();
    loop {
        let members = client
            .fetch_group_list(Some(&group), TIMEOUT)
            .map_err(|e| format!("cannot describe consumer group {group}: {e}"))?
            .groups()
            .iter()
            .filter(|g| g.name() == group)
            .map(|g| g.members().len())
            .sum::<usize>();
        // This worker's consumers of the group still closing (`source::close`) count too: one
        // may still send its last offset commit.
        let members = members + source::close::closing(&group);
        if members == 0 {
            return Ok(());
        }
        if start.elapsed() >= MEMBERS_WAIT {
            return Err(format!(
                "Failed to {what} consumer group offsets for connector {} either because its tasks haven't stopped completely yet or the connector was resumed before the request to {what} its offsets could be successfully completed (consumer group {group} still has {members} member(s) after {MEMBERS_WAIT:?}). If the connector is in a stopped state, this operation can be safely retried.",
                spec.name
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// One partition's committed offset (`None`: none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkOffset {
    pub topic: String,
    pub partition: i32,
    pub offset: Option<i64>,
}

impl SinkOffset {
    pub fn to_json(&self) -> Value {
        json!({
            "partition": {"kafka_topic": self.topic, "kafka_partition": self.partition},
            "offset": self.offset.map(|o| json!({"kafka_offset": o})),
        })
    }
}

/// Reads `{"offsets": [...]}` as `PATCH /connectors/{n}/offsets` takes it.
pub fn parse(body: &Value) -> Result<Vec<SinkOffset>, Error> {
    let bad = |m: &str| Error::BadRequest(m.to_string());
    let list = body
        .get("offsets")
        .and_then(Value::as_array)
        .filter(|l| !l.is_empty())
        .ok_or_else(|| {
            bad("Partitions / offsets need to be provided for an alter offsets request")
        })?;
    let mut out = Vec::new();
    for item in list {
        let partition = item.get("partition");
        let (Some(topic), Some(p)) = (
            partition.and_then(|p| p.get("kafka_topic")),
            partition.and_then(|p| p.get("kafka_partition")),
        ) else {
            return Err(bad(
                "The partition for a sink connector offset must contain the keys 'kafka_topic' and 'kafka_partition'",
            ));
        };
        let topic = topic
            .as_str()
            .ok_or_else(|| bad("Kafka topic names must be valid strings"))?;
        let p = integer(p)
            .and_then(|p| i32::try_from(p).ok())
            .filter(|p| *p >= 0)
            .ok_or_else(|| bad("Kafka partitions must be valid integers and be non-negative"))?;
        let offset = match item.get("offset") {
            None | Some(Value::Null) => None,
            Some(o) => Some(
                o.get("kafka_offset")
                    .ok_or_else(|| {
                        bad("The offset for a sink connector should either be null or contain the key 'kafka_offset'")
                    })
                    .map(integer)?
                    .filter(|o| *o >= 0)
                    .ok_or_else(|| bad("Kafka offsets must be valid integers and be non-negative"))?,
            ),
        };
        out.push(SinkOffset {
            topic: topic.to_string(),
            partition: p,
            offset,
        });
    }
    Ok(out)
}

/// A partition or an offset: a JSON integer, or a string holding one (`"10"`), as Kafka
/// Connect takes both (it parses the value's text).
fn integer(v: &Value) -> Option<i64> {
    match v {
        Value::String(s) => s.parse().ok(),
        v => v.as_i64(),
    }
}

/// The offsets the group committed, for the partitions of the topics the connector reads.
pub fn read(settings: &Settings, spec: &ConnectorSpec) -> Result<Vec<SinkOffset>, String> {
    let client = source::group_client(settings, &spec.group_id())?;
    let parts: Vec<(String, i32)> = source::partitions_of(&client, &spec.subscription, TIMEOUT)?
        .into_iter()
        .map(|(t, p, _, _)| (t, p))
        .collect();
    let committed = source::committed_of(&client, &parts, TIMEOUT)?;
    Ok(committed
        .into_iter()
        .map(|((topic, partition), o)| SinkOffset {
            topic,
            partition,
            offset: Some(o),
        })
        .collect())
}

/// Commits `to` for the connector's group, which must have no members (the connector stopped).
pub fn alter(settings: &Settings, spec: &ConnectorSpec, to: &[SinkOffset]) -> Result<(), Error> {
    if to.iter().any(|o| o.offset.is_none()) {
        // Kafka Connect deletes that partition's committed offset; librdkafka's Rust binding
        // has no call for deleting one partition's offset of a group.
        return Err(Error::BadRequest(
            "A null offset (reset one partition) is not supported: reset all with DELETE /connectors/{name}/offsets, or give the offset to start from".into(),
        ));
    }
    let offsets: BTreeMap<(String, i32), i64> = to
        .iter()
        .filter_map(|o| o.offset.map(|off| ((o.topic.clone(), o.partition), off)))
        .collect();
    let client = source::group_client(settings, &spec.group_id()).map_err(Error::Internal)?;
    wait_no_members(&client, spec, "alter").map_err(Error::Internal)?;
    source::commit_for(&client, &offsets).map_err(|e| {
        Error::Internal(format!(
            "Failed to alter consumer group offsets for connector {}: {e}",
            spec.name
        ))
    })
}

/// Deletes the connector's consumer group: it starts again from `auto.offset.reset`.
pub fn reset(settings: &Settings, spec: &ConnectorSpec) -> Result<(), String> {
    let mut config = rdkafka::ClientConfig::new();
    config.set("bootstrap.servers", &settings.kafka.bootstrap_servers);
    for (k, v) in &settings.kafka.properties {
        config.set(k, v);
    }
    let admin: AdminClient<DefaultClientContext> = config
        .create()
        .map_err(|e| format!("cannot create a Kafka admin client: {e}"))?;
    let group = spec.group_id();
    wait_no_members(&source::plain_client(settings)?, spec, "reset")?;
    let runtime = tokio::runtime::Handle::try_current()
        .map_err(|_| "resetting offsets needs the async runtime".to_string())?;
    let opts = AdminOptions::new().request_timeout(Some(TIMEOUT));
    let results = runtime
        .block_on(admin.delete_groups(&[group.as_str()], &opts))
        .map_err(|e| format!("cannot delete consumer group {group}: {e}"))?;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::GroupIdNotFound)) => {}
            Err((g, code)) => {
                return Err(format!(
                    "Failed to reset consumer group offsets for connector {}: group {g}: {code}",
                    spec.name
                ));
            }
        }
    }
    Ok(())
}
