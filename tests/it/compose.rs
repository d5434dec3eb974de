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

/// `KEY: value` pairs of a service's `environment` (map form).
fn env(service: &Yaml) -> Vec<(String, String)> {
    match &service["environment"] {
        Yaml::Hash(h) => h
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    Yaml::String(s) => s.clone(),
                    Yaml::Integer(i) => i.to_string(),
                    other => format!("{other:?}"),
                };
                (k.as_str().unwrap_or("").to_string(), v)
            })
            .collect(),
        _ => vec![],
    }
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
        if let Yaml::Hash(deps) = &svc["depends_on"] {
            for d in deps.keys().filter_map(|k| k.as_str()) {
                assert!(names.contains(d), "{name} depends on unknown service {d}");
            }
        }
        // Addresses of other services (`kafka:9092`, `http://elasticsearch:9200`) name services.
        for (k, v) in env(svc) {
            if let Some(host) = v.trim_start_matches("http://").split(':').next()
                && v.contains(':')
                && host.chars().all(|c| c.is_ascii_lowercase() || c == '-')
                && !host.is_empty()
                && host != "env"
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

    // cdc-sink's connector: mounted from ./connectors, valid with the service's environment.
    let command = strings(&s["cdc-sink"]["command"]);
    let path = command
        .iter()
        .find(|a| a.starts_with("/etc/cdc-sink/connectors/"))
        .expect("connector in command");
    let file = repo()
        .join("connectors")
        .join(path.trim_start_matches("/etc/cdc-sink/connectors/"));
    let text = std::fs::read_to_string(&file).unwrap();
    let es_url = env(&s["cdc-sink"])
        .into_iter()
        .find(|(k, _)| k == "ES_URL")
        .expect("ES_URL")
        .1;
    let config = ConnectorConfig::from_json(&text.replace("${env:ES_URL}", &es_url)).unwrap();
    ConnectorSpec::validate(&config).unwrap_or_else(|e| panic!("{}: {e}", file.display()));

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
