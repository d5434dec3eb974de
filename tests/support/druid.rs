//! The real Apache Druid (ZooKeeper, coordinator/overlord, broker, historical, indexer), started
//! once per run beside the shared Kafka by `scripts/servers start DIR druid`, and helpers to
//! submit supervisors and run SQL.

use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::rest::call;
use super::servers::{read_env, repo, servers};

pub struct Druid {
    /// The broker: SQL.
    pub url: String,
    /// The coordinator, which is also the overlord: supervisors.
    pub overlord: String,
}

/// Druid, started on first use.
pub fn druid() -> &'static Druid {
    static D: OnceLock<Druid> = OnceLock::new();
    D.get_or_init(|| {
        let dir = servers().dir.clone();
        if !dir.join("druid.env").exists() {
            let status = Command::new(repo().join("scripts/servers"))
                .arg("start")
                .arg(&dir)
                .arg("druid")
                .stdout(Stdio::null())
                .status()
                .expect("running scripts/servers");
            assert!(status.success(), "starting Druid failed (see above)");
        }
        Druid {
            url: read_env(&dir, "druid.env", "DRUID_URL"),
            overlord: read_env(&dir, "druid.env", "DRUID_OVERLORD_URL"),
        }
    })
}

/// A running supervisor (its id is its datasource); terminated when dropped, and its tasks
/// shut down, which frees their indexer slots (a terminated supervisor's tasks otherwise run
/// on until their `taskDuration`, an hour).
pub struct Supervisor {
    pub id: String,
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        let overlord = &druid().overlord;
        let path = format!("/druid/indexer/v1/supervisor/{}/terminate", self.id);
        let _ = call(overlord, "POST", &path, None);
        for list in ["runningTasks", "pendingTasks"] {
            let (_, tasks) = call(overlord, "GET", &format!("/druid/indexer/v1/{list}"), None);
            for t in tasks.as_array().into_iter().flatten() {
                if t["dataSource"] == self.id.as_str()
                    && let Some(task) = t["id"].as_str()
                {
                    let path = format!("/druid/indexer/v1/task/{task}/shutdown");
                    let _ = call(overlord, "POST", &path, None);
                }
            }
        }
    }
}

/// Submits a Kafka supervisor spec (as `cdc-sink druid-spec` prints it).
pub fn submit(spec: &Value) -> Supervisor {
    let (code, body) = call(
        &druid().overlord,
        "POST",
        "/druid/indexer/v1/supervisor",
        Some(spec),
    );
    assert_eq!(code, 200, "submitting the supervisor: {body}");
    Supervisor {
        id: body["id"].as_str().expect("a supervisor id").to_string(),
    }
}

/// Runs `query` on the broker: the rows as JSON objects, or the error Druid answered.
pub fn sql(query: &str) -> Result<Vec<Value>, String> {
    let (code, body) = call(
        &druid().url,
        "POST",
        "/druid/v2/sql",
        Some(&json!({"query": query})),
    );
    match (code, body) {
        (200, Value::Array(rows)) => Ok(rows),
        (code, body) => Err(format!("{code}: {body}")),
    }
}

/// Runs `query` until `ok` holds for its rows (a datasource is unknown to the broker until
/// its first rows are ingested); panics with the last answer after `timeout`.
pub fn wait_sql(query: &str, timeout: Duration, ok: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let start = Instant::now();
    loop {
        let answer = sql(query);
        if let Ok(rows) = &answer
            && ok(rows)
        {
            return answer.unwrap();
        }
        if start.elapsed() > timeout {
            let last = match answer {
                Ok(rows) => format!("{} rows, first {:?}", rows.len(), rows.first()),
                Err(e) => e,
            };
            panic!("Druid SQL: condition not met after {timeout:?}: {query}\nlast: {last}");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The latest row of every key that is not deleted — the query the README gives for a read
/// model on Druid: each key's rows with the highest `__version`, of those the one with the
/// highest `__kafka_offset` (changes of one row in one transaction share a version), dropped
/// when it is a delete. `DISTINCT`: a record written twice (at least once) is two equal rows.
/// `key` are the key columns, `columns` the columns returned.
pub fn latest_query(datasource: &str, key: &[&str], columns: &[&str]) -> String {
    let q = |c: &str| format!("\"{c}\"");
    let keys: Vec<String> = key.iter().map(|k| q(k)).collect();
    let x_keys: Vec<String> = key.iter().map(|k| format!("x.{}", q(k))).collect();
    let on = |a: &str, b: &str| -> String {
        key.iter()
            .map(|k| format!("{a}.{} = {b}.{}", q(k), q(k)))
            .collect::<Vec<_>>()
            .join(" AND ")
    };
    let cols: Vec<String> = columns.iter().map(|c| format!("t.{}", q(c))).collect();
    format!(
        "SELECT DISTINCT {cols} FROM \"{datasource}\" t \
         JOIN (SELECT {x_keys}, x.\"__version\" AS \"v\", MAX(COALESCE(x.\"__kafka_offset\", -1)) AS \"o\" \
               FROM \"{datasource}\" x \
               JOIN (SELECT {keys}, MAX(\"__version\") AS \"v\" FROM \"{datasource}\" GROUP BY {keys}) m \
               ON {xm} AND x.\"__version\" = m.\"v\" \
               GROUP BY {x_keys}, x.\"__version\") n \
         ON {tn} AND t.\"__version\" = n.\"v\" AND COALESCE(t.\"__kafka_offset\", -1) = n.\"o\" \
         WHERE t.\"__deleted\" = 'false'",
        cols = cols.join(", "),
        keys = keys.join(", "),
        x_keys = x_keys.join(", "),
        xm = on("x", "m"),
        tn = on("t", "n"),
    )
}

/// Runs `cdc-sink druid-spec ARGS… FILE` against the shared Kafka.
pub fn druid_spec_cli(args: &[&str], file: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_cdc-sink"))
        .arg("druid-spec")
        .args(args)
        .arg(file)
        .env("CDC_SINK_KAFKA__BOOTSTRAP_SERVERS", super::servers::kafka())
        .output()
        .unwrap()
}

/// `out`'s standard output, after asserting it succeeded.
fn succeeded(out: std::process::Output) -> Vec<u8> {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// What `cdc-sink druid-spec FILE` prints for the connector file: a supervisor spec per topic.
pub fn spec_of(file: &std::path::Path) -> Value {
    serde_json::from_slice(&succeeded(druid_spec_cli(&[], file))).unwrap()
}

/// `cdc-sink druid-spec --submit OVERLORD FILE`: the supervisors it submitted.
pub fn submit_cli(file: &std::path::Path) -> Vec<Supervisor> {
    let out = succeeded(druid_spec_cli(&["--submit", &druid().overlord], file));
    String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| Supervisor {
            id: l
                .strip_prefix("submitted the supervisor of ")
                .unwrap_or_else(|| panic!("unexpected output: {l}"))
                .to_string(),
        })
        .collect()
}
