//! `docker-compose.yml` and the `Dockerfile` stay true without Docker: the YAML parses, every
//! file it mounts or builds from exists, the connector configs it uses are valid, and every
//! `${env:…}` the Debezium configs need is set on Kafka Connect.

use std::collections::BTreeSet;
use std::path::Path;

use yaml_rust2::{Yaml, YamlLoader};

use cdc_sink::connector::{ConnectorConfig, ConnectorSpec};

fn repo() -> std::path::PathBuf {
    crate::support::servers::repo()
}

fn compose() -> Yaml {
    let text = std::fs::read_to_string(repo().join("docker-compose.yml")).unwrap();
    YamlLoader::load_from_str(&text)
        .expect("docker-compose.yml is YAML")
        .remove(0)
}

fn strings(y: &Yaml) -> Vec<String> {
    match y {
        Yaml::Array(a) => a
            .iter()
            .filter_map(|v| v.as_str().map(String::from))
            .collect(),
        Yaml::String(s) => vec![s.clone()],
        _ => vec![],
    }
}

/// `KEY: value` pairs of a service's `environment` (map form, with `<<:` merged maps).
fn env(service: &Yaml) -> Vec<(String, String)> {
    fn pairs(h: &Yaml, out: &mut Vec<(String, String)>) {
        let Yaml::Hash(h) = h else { return };
        for (k, v) in h {
            let k = k.as_str().unwrap_or("");
            if k == "<<" {
                pairs(v, out);
                continue;
            }
            let v = match v {
                Yaml::String(s) => s.clone(),
                Yaml::Integer(i) => i.to_string(),
                other => format!("{other:?}"),
            };
            out.push((k.to_string(), v));
        }
    }
    let mut out = Vec::new();
    pairs(&service["environment"], &mut out);
    out
}

/// The host an address names: `kafka:9092`, `http://elasticsearch:9200`,
/// `jdbc:postgresql://druid-metadata:5432/druid` → the service name.
fn host_of(address: &str) -> &str {
    let rest = address.rsplit_once("://").map_or(address, |(_, r)| r);
    rest.split([':', '/']).next().unwrap_or("")
}

#[test]
fn docker_compose_uses_only_files_that_exist_and_pinned_images() {
    let doc = compose();
    let services = doc["services"].as_hash().expect("services");
    let names: BTreeSet<&str> = services.keys().filter_map(|k| k.as_str()).collect();
    for want in [
        "kafka",
        "postgres",
        "mariadb",
        "connect",
        "register",
        "elasticsearch",
        "cdc-sink",
        "druid-zookeeper",
        "druid-metadata",
        "druid-coordinator",
        "druid-broker",
        "druid-historical",
        "druid-indexer",
        "druid-supervisors",
        "prometheus",
        "grafana",
    ] {
        assert!(names.contains(want), "service {want} is missing");
    }
    for (name, svc) in services {
        let name = name.as_str().unwrap();
        if let Some(image) = svc["image"].as_str() {
            let tag = image.rsplit_once(':').map(|(_, t)| t).unwrap_or("");
            assert!(
                !tag.is_empty() && tag != "latest",
                "{name}: image {image} is not pinned"
            );
        }
        if let Some(ctx) = svc["build"].as_str() {
            assert!(
                repo().join(ctx).join("Dockerfile").is_file(),
                "{name}: no Dockerfile in {ctx}"
            );
        }
        for volume in strings(&svc["volumes"]) {
            let host = volume.split(':').next().unwrap();
            if host.starts_with('.') {
                assert!(
                    repo().join(host).exists(),
                    "{name}: mounts {host}, which does not exist"
                );
            } else if !host.starts_with('/') {
                assert!(
                    !doc["volumes"][host].is_badvalue(),
                    "{name}: named volume {host} is not declared under top-level volumes"
                );
            }
        }
        let deps: Vec<String> = match &svc["depends_on"] {
            Yaml::Hash(deps) => deps
                .keys()
                .filter_map(|k| k.as_str().map(String::from))
                .collect(),
            other => strings(other),
        };
        for d in &deps {
            assert!(
                names.contains(d.as_str()),
                "{name} depends on unknown service {d}"
            );
        }
        // Druid's services run only with the `druid` profile, Prometheus and Grafana only with
        // `monitoring`, the rest always.
        let profiles = strings(&svc["profiles"]);
        let expected: Vec<&str> = if name.starts_with("druid-") {
            vec!["druid"]
        } else if name == "prometheus" || name == "grafana" {
            vec!["monitoring"]
        } else {
            vec![]
        };
        assert_eq!(profiles, expected, "{name}: profiles");
        // Addresses of other services (`kafka:9092`, `http://elasticsearch:9200`, a JDBC URL,
        // a `…_host`) name services.
        for (k, v) in env(svc) {
            let host = host_of(&v);
            let address = v.contains(':') || k.ends_with("_host");
            if address
                && !host.is_empty()
                && host.chars().all(|c| c.is_ascii_lowercase() || c == '-')
                && host != "env"
                && !v.starts_with('[')
            {
                assert!(names.contains(host), "{name}: {k}={v} names no service");
            }
        }
    }
}

#[test]
fn docker_compose_connector_files_are_valid_and_their_env_is_set() {
    let doc = compose();
    let s = &doc["services"];

    // cdc-sink's connectors: mounted from ./connectors, valid with the service's environment;
    // the druid one is the one whose supervisors druid-supervisors submits to the coordinator.
    let command = strings(&s["cdc-sink"]["command"]);
    let paths: Vec<&String> = command
        .iter()
        .filter(|a| a.starts_with("/etc/cdc-sink/connectors/"))
        .collect();
    assert_eq!(paths.len(), 2, "both connectors in {command:?}");
    let es_url = env(&s["cdc-sink"])
        .into_iter()
        .find(|(k, _)| k == "ES_URL")
        .expect("ES_URL")
        .1;
    let mut classes = Vec::new();
    for path in paths {
        let file = repo()
            .join("connectors")
            .join(path.trim_start_matches("/etc/cdc-sink/connectors/"));
        let text = std::fs::read_to_string(&file).unwrap();
        let config = ConnectorConfig::from_json(&text.replace("${env:ES_URL}", &es_url)).unwrap();
        ConnectorSpec::validate(&config).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        classes.push(config.config["connector.class"].clone());
    }
    assert_eq!(classes, ["elasticsearch", "druid"]);
    let submit = strings(&s["druid-supervisors"]["command"]);
    assert_eq!(submit[..2], ["druid-spec", "--submit"]);
    assert_eq!(host_of(&submit[2]), "druid-coordinator");
    assert!(
        command.contains(&submit[3]),
        "{submit:?} submits a connector cdc-sink does not run"
    );

    // Debezium's connectors: registered by `register` from ./demo/connect.
    let connect_env: BTreeSet<String> = env(&s["connect"]).into_iter().map(|(k, _)| k).collect();
    let entrypoint = strings(&s["register"]["entrypoint"]);
    let files: Vec<&String> = entrypoint
        .iter()
        .filter(|a| a.starts_with("/connect/"))
        .collect();
    assert_eq!(files.len(), 2, "both Debezium connectors are registered");
    for f in files {
        let path = repo()
            .join("demo/connect")
            .join(f.trim_start_matches("/connect/"));
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert!(
            json["name"].is_string() && json["config"]["connector.class"].is_string(),
            "{}",
            path.display()
        );
        for v in json["config"]
            .as_object()
            .unwrap()
            .values()
            .filter_map(|v| v.as_str())
        {
            if let Some(var) = v.strip_prefix("${env:").and_then(|r| r.strip_suffix('}')) {
                assert!(
                    connect_env.contains(var),
                    "{}: ${{env:{var}}} is not set on connect",
                    path.display()
                );
            }
        }
    }
}

#[test]
fn dockerfile_copies_only_what_exists() {
    let text = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    let mut copies = 0;
    for line in text
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from"))
    {
        let parts: Vec<&str> = line.split_whitespace().skip(1).collect();
        for src in &parts[..parts.len() - 1] {
            assert!(
                Path::new(&repo().join(src)).exists(),
                "Dockerfile copies {src}, which does not exist"
            );
            copies += 1;
        }
    }
    assert!(copies >= 4);
    // The image's connector is the one docker-compose mounts over it.
    assert!(text.contains("/etc/cdc-sink/connectors/inventory-elasticsearch.json"));
}

#[test]
fn monitoring_scrapes_cdc_sink_and_provisions_the_dashboard() {
    let doc = compose();
    let load = |path: &str| {
        let text = std::fs::read_to_string(repo().join(path)).unwrap();
        YamlLoader::load_from_str(&text)
            .unwrap_or_else(|e| panic!("{path}: {e}"))
            .remove(0)
    };
    // Prometheus scrapes cdc-sink's REST listener, a service of the stack, at /metrics.
    let prom = load("ops/prometheus/prometheus.yml");
    let job = &prom["scrape_configs"][0];
    assert_eq!(job["metrics_path"].as_str(), Some("/metrics"));
    let targets = strings(&job["static_configs"][0]["targets"]);
    assert_eq!(targets, ["cdc-sink:8083"]);
    let listen = env(&doc["services"]["cdc-sink"])
        .into_iter()
        .find(|(k, _)| k == "CDC_SINK_REST__LISTEN")
        .map(|(_, v)| v)
        .unwrap();
    assert!(listen.ends_with(":8083"), "{listen}");
    // Grafana's data source is that Prometheus; its dashboard provider reads the folder the
    // dashboard file is mounted into.
    let ds = load("ops/grafana/provisioning/datasources/prometheus.yml");
    assert_eq!(ds["datasources"][0]["type"].as_str(), Some("prometheus"));
    assert_eq!(
        ds["datasources"][0]["url"].as_str(),
        Some("http://prometheus:9090")
    );
    let provider = load("ops/grafana/provisioning/dashboards/cdc-sink.yml");
    let folder = provider["providers"][0]["options"]["path"]
        .as_str()
        .unwrap()
        .to_string();
    let mounts = strings(&doc["services"]["grafana"]["volumes"]);
    assert!(
        mounts
            .iter()
            .any(|m| m.starts_with("./ops/grafana/cdc-sink.json:")
                && m.contains(&format!(":{folder}/"))),
        "{mounts:?}"
    );
    assert!(
        mounts
            .iter()
            .any(|m| m.starts_with("./ops/grafana/provisioning:/etc/grafana/provisioning")),
        "{mounts:?}"
    );
}
