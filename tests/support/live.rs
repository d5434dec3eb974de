//! The live pipeline's servers — PostgreSQL, MariaDB and Kafka Connect with Debezium — started
//! once per run beside the shared Kafka (in the same `scripts/servers` directory, so the same
//! watchdog stops them), and helpers to run SQL and register Debezium connectors.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::http;
use super::servers::{read_env, repo, servers};

pub struct Live {
    pub dir: PathBuf,
    pub pg_port: String,
    pub maria_port: String,
    pub maria_socket: String,
    pub connect: String,
}

/// The databases and Kafka Connect, started on first use.
pub fn live() -> &'static Live {
    static L: OnceLock<Live> = OnceLock::new();
    L.get_or_init(|| {
        let dir = servers().dir.clone();
        if !dir.join("connect.env").exists() {
            let status = Command::new(repo().join("scripts/servers"))
                .arg("start")
                .arg(&dir)
                .args(["postgres", "mariadb", "connect"])
                .stdout(Stdio::null())
                .status()
                .expect("running scripts/servers");
            assert!(
                status.success(),
                "starting PostgreSQL, MariaDB and Kafka Connect failed (see above)"
            );
        }
        Live {
            pg_port: read_env(&dir, "postgres.env", "PG_PORT"),
            maria_port: read_env(&dir, "mariadb.env", "MARIADB_PORT"),
            maria_socket: read_env(&dir, "mariadb.env", "MARIADB_SOCKET"),
            connect: read_env(&dir, "connect.env", "CONNECT_URL"),
            dir,
        }
    })
}

/// How many live tests run at once: each drives several servers (a database, Kafka Connect,
/// Kafka, Elasticsearch and a worker), but most of its time waits on them (Debezium's
/// snapshots, Kafka Connect's restarts): the live tests alone kept two cores about a third busy
/// two at a time. Three at a time, beside the other tests, took them 245 s instead of 303 (the
/// Druid test also no longer waiting out the broker's schema refresh), the two cores busy
/// throughout, while the others took as long as before (295 s against 304).
const LIVE_AT_ONCE: usize = 3;

/// The database a live test's changes come from.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Db {
    Postgres,
    MariaDb,
}

/// Live tests running (`shared`, PostgreSQL's among them `on_postgres`), one running alone,
/// one holding PostgreSQL alone; those waiting to run alone, who go first.
struct Places {
    shared: usize,
    on_postgres: usize,
    alone: bool,
    postgres_alone: bool,
    waiting_alone: usize,
    waiting_postgres_alone: usize,
}

static PLACES: (Mutex<Places>, Condvar) = (
    Mutex::new(Places {
        shared: 0,
        on_postgres: 0,
        alone: false,
        postgres_alone: false,
        waiting_alone: 0,
        waiting_postgres_alone: 0,
    }),
    Condvar::new(),
);

/// A place among the live tests running, kept until dropped.
pub enum LivePlace {
    Shared(Db),
    AloneOnPostgres,
    Alone,
}

impl Drop for LivePlace {
    fn drop(&mut self) {
        let mut p = PLACES.0.lock().unwrap_or_else(|p| p.into_inner());
        match self {
            LivePlace::Shared(db) => {
                p.shared -= 1;
                if *db == Db::Postgres {
                    p.on_postgres -= 1;
                }
            }
            LivePlace::AloneOnPostgres => {
                p.shared -= 1;
                p.on_postgres -= 1;
                p.postgres_alone = false;
            }
            LivePlace::Alone => p.alone = false,
        }
        PLACES.1.notify_all();
    }
}

fn wait_places(until: impl Fn(&Places) -> bool) -> std::sync::MutexGuard<'static, Places> {
    let mut p = PLACES.0.lock().unwrap_or_else(|p| p.into_inner());
    while !until(&p) {
        p = PLACES.1.wait(p).unwrap_or_else(|p| p.into_inner());
    }
    p
}

/// Waits until `until` holds, counted meanwhile in the `waiting` its kind of test keeps (those
/// waiting to run alone go first).
fn wait_in_line(
    waiting: fn(&mut Places) -> &mut usize,
    until: impl Fn(&Places) -> bool,
) -> std::sync::MutexGuard<'static, Places> {
    *waiting(&mut PLACES.0.lock().unwrap_or_else(|p| p.into_inner())) += 1;
    let mut p = wait_places(until);
    *waiting(&mut p) -= 1;
    p
}

/// Waits until fewer than [`LIVE_AT_ONCE`] live tests run, none of them alone, nor alone on
/// PostgreSQL when `db` is PostgreSQL.
pub fn live_place(db: Db) -> LivePlace {
    let mut p = wait_places(|p| {
        p.shared < LIVE_AT_ONCE
            && !p.alone
            && p.waiting_alone == 0
            && (db != Db::Postgres || (!p.postgres_alone && p.waiting_postgres_alone == 0))
    });
    p.shared += 1;
    if db == Db::Postgres {
        p.on_postgres += 1;
    }
    LivePlace::Shared(db)
}

/// Waits until no other live test on PostgreSQL runs, for a test that holds a transaction (or
/// a setting of the whole server) that another's replication slot would wait for. MariaDB's
/// live tests run beside it.
pub fn live_alone_on_postgres() -> LivePlace {
    let mut p = wait_in_line(
        |p| &mut p.waiting_postgres_alone,
        // (`on_postgres` counts one running alone on PostgreSQL too.)
        |p| p.shared < LIVE_AT_ONCE && !p.alone && p.waiting_alone == 0 && p.on_postgres == 0,
    );
    p.shared += 1;
    p.on_postgres += 1;
    p.postgres_alone = true;
    LivePlace::AloneOnPostgres
}

/// Waits until no other live test runs, for a test that stops Kafka Connect, which every
/// live test uses.
pub fn live_alone() -> LivePlace {
    let mut p = wait_in_line(|p| &mut p.waiting_alone, |p| p.shared == 0 && !p.alone);
    p.alone = true;
    LivePlace::Alone
}

fn run(mut cmd: Command, input: &str) -> String {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs `sql` in PostgreSQL database `db`; returns what it printed (unaligned, tuples only).
pub fn pg(db: &str, sql: &str) -> String {
    let mut c = psql(db);
    c.args(["-A", "-t"]);
    run(c, sql)
}

/// psql on database `db` that gives up after 5 s (connecting, and each statement): for cleanup
/// in drops, which a server that does not answer must not hold up.
pub fn bounded_psql(db: &str) -> Command {
    let mut c = psql(db);
    c.env("PGCONNECT_TIMEOUT", "5")
        .env("PGOPTIONS", "-c statement_timeout=5000");
    c
}

/// psql on database `db` of the test PostgreSQL, stopping at the first error.
fn psql(db: &str) -> Command {
    let mut c = Command::new("psql");
    c.args([
        "-h",
        "127.0.0.1",
        "-p",
        &live().pg_port,
        "-U",
        "postgres",
        "-d",
        db,
    ])
    .args(["-X", "-q", "-v", "ON_ERROR_STOP=1"]);
    c
}

/// Runs `sql` in MariaDB database `db` (empty: none); returns what it printed (batch, no headers).
pub fn maria(db: &str, sql: &str) -> String {
    let mut c = Command::new("mariadb");
    c.arg(format!("--socket={}", live().maria_socket))
        .args(["-N", "-B", "-r"]);
    if !db.is_empty() {
        c.arg(db);
    }
    run(c, sql)
}

/// The sample inventory SQL of `flavour` (`postgres` or `mariadb`).
pub fn inventory_sql(flavour: &str) -> String {
    std::fs::read_to_string(repo().join(format!("demo/sql/{flavour}-inventory.sql"))).unwrap()
}

/// Registers a Debezium connector on Kafka Connect and waits for its task to run.
pub fn register(name: &str, config: Value) {
    let url = format!("{}/connectors/{name}/config", live().connect);
    let put = || http().put(&url).json(&config).send().unwrap();
    let r = connect_call(put);
    assert!(
        r.status().is_success(),
        "registering {name}: {} {}",
        r.status(),
        r.text().unwrap_or_default()
    );
    let start = Instant::now();
    loop {
        let status: Value = http()
            .get(format!("{}/connectors/{name}/status", live().connect))
            .send()
            .and_then(|r| r.json())
            .unwrap_or(Value::Null);
        if status["tasks"][0]["state"] == "RUNNING" {
            return;
        }
        assert!(
            status["tasks"][0]["state"] != "FAILED",
            "Debezium connector {name} failed: {status}"
        );
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "Debezium connector {name} not running: {status}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

pub fn unregister(name: &str) {
    let url = format!("{}/connectors/{name}", live().connect);
    // Cleanup runs in drops, after failed tests too: it must not panic.
    let gone = http().delete(&url).send().map(|r| r.status());
    if gone.is_ok_and(|s| s == 409) {
        let _ = connect_call(|| http().delete(&url).send().unwrap());
    }
    // A PostgreSQL connector's replication slot (named after it) outlives it: dropped once its
    // task has let go of it, so that repeated runs do not use up `max_replication_slots`.
    let start = Instant::now();
    let slot =
        format!("SELECT count(*) FROM pg_replication_slots WHERE slot_name = '{name}' AND active;");
    let active = || {
        let out = bounded_psql("postgres")
            .args(["-A", "-t", "-c", &slot])
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim() != "0")
    };
    // Cleanup runs in drops, after failed tests too: it must not panic.
    while active() == Some(true) {
        if start.elapsed() > Duration::from_secs(30) {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut drop_slot = bounded_psql("postgres");
    drop_slot.args(["-c", &format!("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = '{name}' AND NOT active;")])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _ = drop_slot.status();
}

/// Sends a request to Kafka Connect again while it answers 409 (its group rebalancing after
/// another test's change: two live tests run at once), for up to a minute.
fn connect_call(send: impl Fn() -> reqwest::blocking::Response) -> reqwest::blocking::Response {
    let start = Instant::now();
    loop {
        let r = send();
        if r.status() != 409 || start.elapsed() > Duration::from_secs(60) {
            return r;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Kills Kafka Connect with SIGKILL and starts it again: Debezium then re-emits what came
/// after its last committed source offset, or snapshots again when none had reached Kafka.
pub fn crash_restart_connect() {
    let status = Command::new(repo().join("scripts/servers"))
        .arg("crash-restart")
        .arg(&live().dir)
        .arg("connect")
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "restarting Kafka Connect failed");
}

/// Forgets source connector `name`'s offsets through Kafka Connect's offsets API (KIP-875):
/// stops the connector, runs `meanwhile` while it is stopped, resets its offsets and resumes
/// it. Debezium then starts as if it had never stored an offset. Other connectors keep running:
/// Kafka Connect stays up.
pub fn forget_source_offsets(name: &str, meanwhile: impl FnOnce()) {
    let url = format!("{}/connectors/{name}", live().connect);
    let status = format!("/connectors/{name}/status");
    let wait = |done: &dyn Fn(&Value) -> bool| {
        super::rest::wait_for(&live().connect, &status, Duration::from_secs(120), done)
    };
    let r = connect_call(|| http().put(format!("{url}/stop")).send().unwrap());
    assert!(r.status().is_success(), "stopping {name}: {}", r.status());
    wait(&|s| {
        s["connector"]["state"] == "STOPPED" && s["tasks"].as_array().is_some_and(Vec::is_empty)
    });
    meanwhile();
    // Kafka Connect refuses a reset (400) until the connector is stopped with no tasks
    // (KIP-875); its status said so above, and a refusal is still asked again for a while.
    let start = Instant::now();
    loop {
        let r = connect_call(|| http().delete(format!("{url}/offsets")).send().unwrap());
        let status = r.status();
        if status.is_success() {
            break;
        }
        assert!(
            status == 400 && start.elapsed() < Duration::from_secs(60),
            "resetting the offsets of {name}: {status} {}",
            r.text().unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let r = connect_call(|| http().put(format!("{url}/resume")).send().unwrap());
    assert!(r.status().is_success(), "resuming {name}: {}", r.status());
    wait(&|s| s["tasks"][0]["state"] == "RUNNING");
}

/// `config` with the settings the demo's Debezium connector `file` takes for freshness
/// (`poll.interval.ms`, `producer.override.*`; README "Debezium's side of freshness"), read from
/// the demo's files so that tests and the live benchmark run what the demo runs.
fn with_demo_freshness(mut config: Value, file: &str) -> Value {
    let path = repo().join("demo/connect").join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    let json: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    let mut picked = 0;
    for (k, v) in json["config"].as_object().into_iter().flatten() {
        if k == "poll.interval.ms" || k.starts_with("producer.override.") {
            config[k] = v.clone();
            picked += 1;
        }
    }
    assert!(picked > 0, "{path:?} sets no freshness settings");
    config
}

/// A PostgreSQL Debezium connector for database `db` (schema `inventory`), topics `<db>.inventory.*`.
pub fn pg_debezium(db: &str) -> Value {
    let config = json!({
        "connector.class": "io.debezium.connector.postgresql.PostgresConnector",
        "tasks.max": "1",
        "database.hostname": "127.0.0.1",
        "database.port": live().pg_port,
        "database.user": "postgres",
        "database.password": "postgres",
        "database.dbname": db,
        "topic.prefix": db,
        "schema.include.list": "inventory",
        "plugin.name": "pgoutput",
        "slot.name": db,
        "publication.name": db,
        "publication.autocreate.mode": "filtered",
        "skipped.operations": "none",
    });
    with_demo_freshness(config, "inventory-postgres.json")
}

/// A MariaDB Debezium connector for database `db`, topics `<db>.<db>.*`.
pub fn maria_debezium(db: &str) -> Value {
    let config = json!({
        "connector.class": "io.debezium.connector.mariadb.MariaDbConnector",
        "tasks.max": "1",
        "database.hostname": "127.0.0.1",
        "database.port": live().maria_port,
        "database.user": "debezium",
        "database.password": "dbz",
        "database.server.id": (10_000 + fastrand::u32(..1_000_000)).to_string(),
        "database.ssl.mode": "disable",
        "topic.prefix": db,
        "database.include.list": db,
        "schema.history.internal.kafka.bootstrap.servers": servers().kafka,
        "schema.history.internal.kafka.topic": format!("{db}.schema-history"),
        "skipped.operations": "none",
        "bigint.unsigned.handling.mode": "precise",
    });
    with_demo_freshness(config, "inventory-mariadb.json")
}

/// A psql session kept open (to hold a transaction across other events).
pub struct PgSession {
    child: std::process::Child,
    db: String,
}

impl PgSession {
    pub fn open(db: &str) -> PgSession {
        let child = psql(db)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("psql");
        PgSession {
            child,
            db: db.to_string(),
        }
    }

    pub fn send(&mut self, sql: &str) {
        let stdin = self.child.stdin.as_mut().expect("psql stdin");
        writeln!(stdin, "{sql}").unwrap();
        stdin.flush().unwrap();
    }

    /// Waits until the session's transaction is open and its statements done.
    pub fn wait_idle_in_transaction(&self) {
        let start = Instant::now();
        let q = format!(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = '{}' AND state = 'idle in transaction';",
            self.db
        );
        while pg("postgres", &q).trim() != "1" {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the transaction did not open"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Ends the session (what was sent is done).
    pub fn close(mut self) {
        drop(self.child.stdin.take());
        let status = self.child.wait().unwrap();
        assert!(status.success(), "psql session failed");
    }
}

impl Drop for PgSession {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
