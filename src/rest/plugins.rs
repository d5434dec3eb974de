//! `/connector-plugins/…`: the connectors this worker runs, their options, and validation of a
//! config in Kafka Connect's shape (one entry per option, each with its errors).

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::{Api, ApiError, Reply, blocking, json_body, reply};
use crate::connector::options::OptionDef;
use crate::connector::{self, COMMON_OPTIONS, ConnectorConfig, ConnectorSpec, Plugin};
use crate::herder::VERSION;

pub async fn list(State(_): State<Api>) -> Reply {
    let list: Vec<Value> = connector::PLUGINS
        .iter()
        .map(|p| json!({"class": p.class, "type": "sink", "version": VERSION}))
        .collect();
    Ok(reply(StatusCode::OK, &list))
}

fn find(name: &str) -> Result<&'static Plugin, ApiError> {
    connector::plugin(name)
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("Unknown plugin {name}.")))
}

/// The documented options of `plugin`, with the group each is shown in (pattern entries such
/// as `consumer.override.<property>` left out: they are families, not keys).
fn options(plugin: &Plugin) -> Vec<(&'static OptionDef, &'static str)> {
    COMMON_OPTIONS
        .iter()
        .map(|d| (d, "Common"))
        .chain(
            connector::errors::OPTIONS
                .iter()
                .map(|d| (d, "Error Handling")),
        )
        .chain(plugin.options.iter().map(|d| (d, plugin.group)))
        .filter(|(d, _)| !d.name.contains('<'))
        .collect()
}

/// Kafka Connect's `ConfigKeyInfo` for an option. Types are not declared per option here:
/// every value is a string, secrets are `PASSWORD`.
fn definition(
    plugin: &Plugin,
    name: &str,
    def: Option<&OptionDef>,
    group: &str,
    order: usize,
) -> Value {
    let required = connector::REQUIRED.contains(&name) || plugin.required.contains(&name);
    json!({
        "name": name,
        "type": if connector::is_secret(name) { "PASSWORD" } else { "STRING" },
        "required": required,
        "default_value": def.and_then(|d| d.default),
        "importance": if required { "HIGH" } else { "MEDIUM" },
        "documentation": def.map_or("", |d| d.doc),
        "group": group,
        "width": "NONE",
        "display_name": name,
        "dependents": [],
        "order": order,
    })
}

pub async fn config(State(_): State<Api>, Path(plugin): Path<String>) -> Reply {
    let p = find(&plugin)?;
    let defs: Vec<Value> = options(p)
        .iter()
        .enumerate()
        .map(|(i, (d, g))| definition(p, d.name, Some(d), g, i + 1))
        .collect();
    Ok(reply(StatusCode::OK, &defs))
}

pub async fn validate(State(api): State<Api>, Path(plugin): Path<String>, body: Bytes) -> Reply {
    let p = find(&plugin)?;
    let Value::Object(map) = json_body(&body)? else {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "the config to validate must be a JSON object".into(),
        ));
    };
    // Values as a create takes them: numbers and booleans as their text, `null` as absent, and
    // an array or object refused, as a create refuses it (never dropped unnoticed).
    let mut values: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in map {
        match v {
            Value::String(s) => _ = values.insert(k, s),
            Value::Number(n) => _ = values.insert(k, n.to_string()),
            Value::Bool(b) => _ = values.insert(k, b.to_string()),
            Value::Null => {}
            Value::Array(_) | Value::Object(_) => {
                return Err(ApiError(
                    StatusCode::BAD_REQUEST,
                    format!("{k}: must be a string"),
                ));
            }
        }
    }
    // A config of another connector class is refused, as Kafka Connect refuses it.
    if let Some(class) = values.get("connector.class")
        && connector::plugin(class).is_none_or(|other| other.class != p.class)
    {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!("Included connector type {class} does not match request type {plugin}"),
        ));
    }
    values
        .entry("connector.class".into())
        .or_insert_with(|| plugin.clone());
    let config = ConnectorConfig {
        name: values.get("name").cloned().unwrap_or_default(),
        config: values,
    };
    // Placeholders read files: not on the async runtime's threads. A config valid in itself
    // is also checked as a create checks it: its Kafka clients, with this worker's settings.
    let errors = {
        let config = config.clone();
        let herder = api.herder.clone();
        blocking(move || {
            Ok(match ConnectorSpec::validate(&config) {
                Ok(spec) => crate::worker::check_clients(herder.settings(), &spec),
                Err(e) => e.0,
            })
        })
        .await?
    };

    // One entry per documented option, then one per other key given (unknown ones carry their
    // error). Each error names its key first (`key: message`).
    let documented = options(p);
    let mut keys: Vec<(String, Option<&OptionDef>, &str)> = documented
        .iter()
        .map(|(d, g)| (d.name.to_string(), Some(*d), *g))
        .collect();
    for k in config.config.keys() {
        if !keys.iter().any(|(n, _, _)| n == k) {
            keys.push((k.clone(), None, "Common"));
        }
    }
    let mut placed = vec![false; errors.len()];
    let mut configs = Vec::new();
    for (order, (name, def, group)) in keys.iter().enumerate() {
        let mine: Vec<&str> = errors
            .iter()
            .enumerate()
            .filter(|(_, e)| e.starts_with(&format!("{name}: ")))
            .map(|(i, e)| {
                placed[i] = true;
                e.as_str()
            })
            .collect();
        let value = config
            .config
            .get(name)
            .map(|v| connector::redact(name, v).into_owned())
            .or_else(|| def.and_then(|d| d.default).map(String::from));
        configs.push(json!({
                        "definition": definition(p, name, *def, group, order + 1),
            "value": {"name": name, "value": value, "recommended_values": [], "errors": mine, "visible": true},
        }));
    }
    // An error that names no listed key (e.g. a malformed placeholder) goes on `name`, so none
    // is lost from the count.
    let orphans: Vec<&String> = errors
        .iter()
        .zip(&placed)
        .filter(|(_, p)| !**p)
        .map(|(e, _)| e)
        .collect();
    if !orphans.is_empty()
        && let Some(first) = configs.first_mut()
        && let Some(list) = first["value"]["errors"].as_array_mut()
    {
        list.extend(orphans.into_iter().map(|e| json!(e)));
    }
    Ok(reply(
        StatusCode::OK,
        &json!({
            "name": plugin,
            "error_count": errors.len(),
            "groups": ["Common", "Error Handling", p.group],
            "configs": configs,
        }),
    ))
}
