//! The real servers, started once per test run by `scripts/servers` and shared by every test.
//!
//! A watchdog process stops them when this test process exits, whatever way it exits. Set
//! `CDCSINK_TEST_SERVERS=DIR` to use servers already started with `scripts/servers start DIR`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

pub struct Servers {
    /// Where `scripts/servers` keeps their state (and more servers may be started).
    pub dir: PathBuf,
    /// `host:port` of the Kafka broker.
    pub kafka: String,
    /// `http://host:port` of Elasticsearch.
    pub es: String,
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn read_env(dir: &Path, file: &str, key: &str) -> String {
    let text = std::fs::read_to_string(dir.join(file))
        .unwrap_or_else(|e| panic!("{}: {e}", dir.join(file).display()));
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("{key} not in {file}"))
        .trim()
        .to_string()
}

/// Starts `which` servers (`kafka`, `elasticsearch`) in a new directory with a watchdog that
/// stops them when this process exits; returns the directory.
pub fn start(which: &[&str]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cdc-sink-it-{}", std::process::id()));
    let status = Command::new(repo().join("scripts/servers"))
        .arg("start")
        .arg(&dir)
        .args(which)
        .stdout(Stdio::null())
        .status()
        .expect("running scripts/servers");
    // Stop them when this process exits, also if it is killed. The watchdog outlives us on
    // purpose: it is never waited for.
    #[allow(clippy::zombie_processes)]
    Command::new("setsid")
        .arg(repo().join("scripts/servers"))
        .args(["watch", &std::process::id().to_string()])
        .arg(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting the server watchdog");
    assert!(
        status.success(),
        "scripts/servers start failed (see its output above)"
    );
    dir
}

/// Kafka and Elasticsearch, started on first use.
pub fn servers() -> &'static Servers {
    static S: OnceLock<Servers> = OnceLock::new();
    S.get_or_init(|| {
        // The tests' own reqwest clients, built with no TLS set-up of their own (see
        // `cdc_sink::tls::install_default`).
        cdc_sink::tls::install_default();
        let dir = match std::env::var_os("CDCSINK_TEST_SERVERS") {
            Some(d) => PathBuf::from(d),
            None => start(&["kafka", "elasticsearch"]),
        };
        Servers {
            kafka: read_env(&dir, "kafka.env", "KAFKA_BOOTSTRAP"),
            es: read_env(&dir, "elasticsearch.env", "ES_URL"),
            dir,
        }
    })
}

/// The Kafka bootstrap address: of `CDCSINK_TEST_SERVERS` when set (benchmarks start only
/// Kafka there), else of [`servers`].
pub fn kafka() -> String {
    // Most tests meet Kafka before they build a reqwest client of their own.
    cdc_sink::tls::install_default();
    match std::env::var_os("CDCSINK_TEST_SERVERS") {
        Some(d) => read_env(Path::new(&d), "kafka.env", "KAFKA_BOOTSTRAP"),
        None => servers().kafka.clone(),
    }
}

/// A name no other test (or earlier run) uses: `prefix-<random>`, lower case.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{:08x}", fastrand::u32(..))
}
