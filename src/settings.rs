//! Worker settings, layered with figment: built-in defaults → the TOML file → environment
//! variables `CDC_SINK_<SECTION>__<KEY>` (later wins). Unknown keys are errors naming the key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// Everything a worker is configured with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub kafka: KafkaSettings,
    pub rest: RestSettings,
    pub worker: WorkerSettings,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSettings {
    /// `host:port` list of Kafka brokers.
    pub bootstrap_servers: String,
    /// Any librdkafka property, for every client the worker makes (SASL, TLS…).
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestSettings {
    /// Address of the REST API (`host:port`; port 0 picks a free one, logged at start).
    pub listen: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerSettings {
    /// `standalone` (connectors kept in `state_dir`) or `distributed` (connectors shared by the
    /// workers of `group` through Kafka topics).
    pub mode: String,
    /// Distributed mode: the cluster this worker belongs to; workers with the same group share
    /// their connectors.
    #[serde(default = "default_group")]
    pub group: String,
    /// Distributed mode: the compacted topic of connector configs (default `<group>-configs`).
    #[serde(default)]
    pub config_topic: Option<String>,
    /// Distributed mode: the compacted topic of task states (default `<group>-status`).
    #[serde(default)]
    pub status_topic: Option<String>,
    /// Distributed mode: replication factor of the two topics when the worker creates them
    /// (-1: the broker's default).
    #[serde(default = "default_rf")]
    pub topic_replication_factor: i32,
    /// Shown in task status and logs; defaults to `hostname:port` of `rest.listen`.
    #[serde(default)]
    pub id: Option<String>,
    /// Standalone mode: where connectors posted over REST are kept (`connectors.json`).
    pub state_dir: PathBuf,
    /// How often each task commits the offsets of written records, in milliseconds.
    pub offset_flush_interval_ms: u64,
}

fn default_group() -> String {
    "cdc-sink".into()
}

fn default_rf() -> i32 {
    -1
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            kafka: KafkaSettings {
                bootstrap_servers: "localhost:9092".into(),
                properties: BTreeMap::new(),
            },
            rest: RestSettings {
                listen: "127.0.0.1:8083".into(),
            },
            worker: WorkerSettings {
                mode: "standalone".into(),
                group: default_group(),
                config_topic: None,
                status_topic: None,
                topic_replication_factor: default_rf(),
                id: None,
                state_dir: "./cdc-sink-state".into(),
                offset_flush_interval_ms: 5_000,
            },
        }
    }
}

impl Settings {
    /// Defaults, then `file` (if given), then the environment.
    pub fn load(file: Option<&Path>) -> Result<Settings, String> {
        let mut fig = Figment::from(Serialized::defaults(Settings::default()));
        if let Some(f) = file {
            if !f.exists() {
                return Err(format!("config file `{}` does not exist", f.display()));
            }
            fig = fig.merge(Toml::file(f));
        }
        // Only `CDC_SINK_<SECTION>__<KEY>`: every setting has a section, and a variable without
        // one (the demo's `CDC_SINK_URL`, a script's own) is not meant for the worker. An
        // unknown key within a section is still an error that names it.
        fig = fig.merge(
            Env::prefixed("CDC_SINK_")
                .filter(|k| k.as_str().contains("__"))
                .split("__"),
        );
        let s: Settings = fig.extract().map_err(|e| {
            e.into_iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("; ")
        })?;
        s.validate()?;
        Ok(s)
    }

    fn validate(&self) -> Result<(), String> {
        // Empty, the state file's directory would be "", which cannot be synced after a save.
        if self.worker.mode == "standalone" && self.worker.state_dir.as_os_str().is_empty() {
            return Err(
                "worker.state_dir: empty; name a directory (`.` for the current one)".into(),
            );
        }
        match self.worker.mode.as_str() {
            "standalone" | "distributed" => {}
            m => {
                return Err(format!(
                    "worker.mode: `{m}` is not standalone or distributed"
                ));
            }
        }
        if self.kafka.bootstrap_servers.trim().is_empty() {
            return Err("kafka.bootstrap_servers: must not be empty".into());
        }
        Ok(())
    }

    pub fn distributed(&self) -> bool {
        self.worker.mode == "distributed"
    }

    /// The config and status topics of distributed mode.
    pub fn cluster_topics(&self) -> (String, String) {
        let w = &self.worker;
        (
            w.config_topic
                .clone()
                .unwrap_or_else(|| format!("{}-configs", w.group)),
            w.status_topic
                .clone()
                .unwrap_or_else(|| format!("{}-status", w.group)),
        )
    }

    /// The worker id shown in status: `worker.id`, else `hostname:port`.
    pub fn worker_id(&self) -> String {
        if let Some(id) = &self.worker.id {
            return id.clone();
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "localhost".into());
        let port = self.rest.listen.rsplit(':').next().unwrap_or("8083");
        format!("{host}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::result_large_err)]
    fn layers_apply_in_order_and_unknown_keys_are_named() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "w.toml",
                "[kafka]\nbootstrap_servers = \"file:9092\"\n[kafka.properties]\n\"security.protocol\" = \"ssl\"\n",
            )?;
            let s = Settings::load(Some(Path::new("w.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(s.kafka.bootstrap_servers, "file:9092");
            assert_eq!(s.kafka.properties["security.protocol"], "ssl");
            assert_eq!(s.worker.offset_flush_interval_ms, 5000);

            jail.set_env("CDC_SINK_KAFKA__BOOTSTRAP_SERVERS", "env:9092");
            let s = Settings::load(Some(Path::new("w.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(s.kafka.bootstrap_servers, "env:9092");

            jail.create_file("bad.toml", "[kafka]\nbootstrap_server = \"x\"\n")?;
            let err = Settings::load(Some(Path::new("bad.toml"))).unwrap_err();
            assert!(err.contains("bootstrap_server"), "{err}");

            // Variables that are not settings (no section): left to whoever set them.
            jail.set_env("CDC_SINK_URL", "http://127.0.0.1:8083");
            jail.set_env("CDC_SINK_DEMO_DIR", "/tmp/x");
            Settings::load(None).map_err(|e| e.to_string())?;

            jail.set_env("CDC_SINK_WORKER__STATE_DIR", "");
            let err = Settings::load(None).unwrap_err();
            assert!(err.contains("worker.state_dir: empty"), "{err}");
            jail.set_env("CDC_SINK_WORKER__STATE_DIR", ".");

            jail.set_env("CDC_SINK_WORKER__MODEE", "x");
            let err = Settings::load(None).unwrap_err();
            assert!(err.contains("modee"), "{err}");
            Ok(())
        });
    }
}
