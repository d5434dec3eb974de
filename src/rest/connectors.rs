//! `/connectors/…`: create, read, change, pause, stop, restart and delete connectors, and their
//! offsets.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::{Api, ApiError, Reply, blocking, json_body, query_flag, query_pairs, reply};
use crate::connector::ConnectorConfig;
use crate::herder::{Error, TargetState, offsets};

fn no_content(code: StatusCode) -> Response {
    code.into_response()
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}

/// A config object's values as strings, as Kafka Connect takes them (numbers and booleans as
/// their text); `null` kept as `None` (PATCH removes those keys).
fn config_values(v: &Value) -> Result<BTreeMap<String, Option<String>>, ApiError> {
    let Value::Object(map) = v else {
        return Err(bad("the connector config must be a JSON object"));
    };
    map.iter()
        .map(|(k, v)| {
            let s = match v {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                Value::Bool(b) => Some(b.to_string()),
                Value::Null => None,
                _ => return Err(bad(format!("{k}: must be a string"))),
            };
            Ok((k.clone(), s))
        })
        .collect()
}

pub async fn list(State(api): State<Api>, RawQuery(q): RawQuery) -> Reply {
    let pairs = query_pairs(q.as_deref());
    let expand: Vec<String> = pairs
        .into_iter()
        .filter(|(k, _)| k == "expand")
        .map(|(_, v)| v)
        .collect();
    let h = api.herder.clone();
    let body = blocking(move || {
        let names = h.names();
        if expand.is_empty() {
            return Ok(json!(names));
        }
        let mut out = Map::new();
        for n in names {
            let mut e = Map::new();
            // A connector deleted meanwhile is left out.
            if expand.iter().any(|x| x == "status") {
                let Ok(s) = h.status(&n) else { continue };
                e.insert("status".into(), s);
            }
            if expand.iter().any(|x| x == "info") {
                let Ok(i) = h.info(&n) else { continue };
                e.insert("info".into(), i);
            }
            out.insert(n, Value::Object(e));
        }
        Ok(Value::Object(out))
    })
    .await?;
    Ok(reply(StatusCode::OK, &body))
}

fn created(info: &Value, name: &str) -> Response {
    let mut r = reply(StatusCode::CREATED, info);
    if let Ok(v) = HeaderValue::from_str(&format!("/connectors/{name}")) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

pub async fn create(State(api): State<Api>, body: Bytes) -> Reply {
    let v = json_body(&body)?;
    let initial = match v.get("initial_state") {
        None | Some(Value::Null) => TargetState::Running,
        // Any case, as Kafka Connect reads it (`InitialState.forValue` upper-cases it).
        Some(Value::String(s)) => {
            serde_json::from_value(Value::String(s.to_uppercase())).map_err(|_| {
                bad(format!(
                    "initial_state: {s:?} is not one of RUNNING, PAUSED and STOPPED"
                ))
            })?
        }
        Some(s) => serde_json::from_value(s.clone()).map_err(|_| {
            bad(format!(
                "initial_state: {s} is not one of RUNNING, PAUSED and STOPPED"
            ))
        })?,
    };
    if !v.get("config").is_some_and(Value::is_object) {
        return Err(bad(
            "the request must be {\"name\": …, \"config\": {…}}: `config` is missing or not an object",
        ));
    }
    let config = ConnectorConfig::from_json(&String::from_utf8_lossy(&body)).map_err(|e| {
        ApiError::from(Error::BadRequest(format!(
            "Connector configuration is invalid and contains the following {} error(s):\n{}",
            e.0.len(),
            e.0.join("\n")
        )))
    })?;
    let name = config.name.clone();
    let h = api.herder.clone();
    let info = blocking(move || h.create(config, initial, false)).await?;
    Ok(created(&info, &name))
}

pub async fn info(State(api): State<Api>, Path(name): Path<String>) -> Reply {
    let h = api.herder.clone();
    let v = blocking(move || h.info(&name)).await?;
    Ok(reply(StatusCode::OK, &v))
}

pub async fn delete(State(api): State<Api>, Path(name): Path<String>) -> Reply {
    let h = api.herder.clone();
    blocking(move || h.delete(&name)).await?;
    Ok(no_content(StatusCode::NO_CONTENT))
}

pub async fn config(State(api): State<Api>, Path(name): Path<String>) -> Reply {
    let h = api.herder.clone();
    let v = blocking(move || h.config(&name)).await?;
    Ok(reply(StatusCode::OK, &v))
}

pub async fn put_config(State(api): State<Api>, Path(name): Path<String>, body: Bytes) -> Reply {
    let values = config_values(&json_body(&body)?)?;
    let map: BTreeMap<String, String> = values
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect();
    let h = api.herder.clone();
    let n = name.clone();
    let (info, was_created) = blocking(move || h.put_config(&n, map)).await?;
    Ok(if was_created {
        created(&info, &name)
    } else {
        reply(StatusCode::OK, &info)
    })
}

pub async fn patch_config(State(api): State<Api>, Path(name): Path<String>, body: Bytes) -> Reply {
    let patch = config_values(&json_body(&body)?)?;
    let h = api.herder.clone();
    let info = blocking(move || h.patch_config(&name, patch)).await?;
    Ok(reply(StatusCode::OK, &info))
}

pub async fn status(State(api): State<Api>, Path(name): Path<String>) -> Reply {
    let h = api.herder.clone();
    let v = blocking(move || h.status(&name)).await?;
    Ok(reply(StatusCode::OK, &v))
}

pub async fn tasks(State(api): State<Api>, Path(name): Path<String>) -> Reply {
    let h = api.herder.clone();
    let v = blocking(move || h.tasks(&name)).await?;
    Ok(reply(StatusCode::OK, &v))
}

fn task_id(name: &str, task: &str) -> Result<usize, ApiError> {
    task.parse().map_err(|_| {
        ApiError(
            StatusCode::NOT_FOUND,
            format!("No status found for task {name}-{task}"),
        )
    })
}

pub async fn task_status(
    State(api): State<Api>,
    Path((name, task)): Path<(String, String)>,
) -> Reply {
    let id = task_id(&name, &task)?;
    let h = api.herder.clone();
    let v = blocking(move || h.task_status(&name, id)).await?;
    Ok(reply(StatusCode::OK, &v))
}

pub async fn restart_task(
    State(api): State<Api>,
    Path((name, task)): Path<(String, String)>,
) -> Reply {
    let id = task_id(&name, &task)?;
    let h = api.herder.clone();
    blocking(move || h.restart_task(&name, id)).await?;
    Ok(no_content(StatusCode::NO_CONTENT))
}

pub async fn restart(
    State(api): State<Api>,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
) -> Reply {
    let pairs = query_pairs(q.as_deref());
    let (include_tasks, only_failed) = (
        query_flag(&pairs, "includeTasks"),
        query_flag(&pairs, "onlyFailed"),
    );
    let h = api.herder.clone();
    let status = blocking(move || h.restart(&name, include_tasks, only_failed)).await?;
    Ok(match status {
        None => no_content(StatusCode::NO_CONTENT),
        Some(s) => reply(StatusCode::ACCEPTED, &s),
    })
}

pub async fn pause(State(api): State<Api>, Path(name): Path<String>) -> Reply {
    let h = api.herder.clone();
    blocking(move || h.pause(&name)).await?;
    Ok(no_content(StatusCode::ACCEPTED))
}

pub async fn resume(State(api): State<Api>, Path(name): Path<String>) -> Reply {
    let h = api.herder.clone();
    blocking(move || h.resume(&name)).await?;
    Ok(no_content(StatusCode::ACCEPTED))
}

pub async fn stop(State(api): State<Api>, Path(name): Path<String>) -> Reply {
    let h = api.herder.clone();
    blocking(move || h.stop(&name)).await?;
    Ok(no_content(StatusCode::NO_CONTENT))
}

pub async fn topics(State(api): State<Api>, Path(name): Path<String>) -> Reply {
    let h = api.herder.clone();
    let n = name.clone();
    let topics = blocking(move || h.topics(&n)).await?;
    Ok(reply(StatusCode::OK, &json!({ name: {"topics": topics} })))
}

pub async fn reset_topics(State(api): State<Api>, Path(name): Path<String>) -> Reply {
    let h = api.herder.clone();
    blocking(move || h.reset_topics(&name)).await?;
    Ok(no_content(StatusCode::ACCEPTED))
}

/// `GET /connectors/{n}/druid-spec` (cdc-sink's own): Druid supervisor specs.
pub async fn druid_spec(State(api): State<Api>, Path(name): Path<String>) -> Reply {
    let h = api.herder.clone();
    let v = blocking(move || h.druid_spec(&name)).await?;
    Ok(reply(StatusCode::OK, &v))
}

pub async fn offsets(State(api): State<Api>, Path(name): Path<String>) -> Reply {
    let h = api.herder.clone();
    let list = blocking(move || h.offsets(&name)).await?;
    let list: Vec<Value> = list.iter().map(offsets::SinkOffset::to_json).collect();
    Ok(reply(StatusCode::OK, &json!({ "offsets": list })))
}

pub async fn alter_offsets(State(api): State<Api>, Path(name): Path<String>, body: Bytes) -> Reply {
    let to = offsets::parse(&json_body(&body)?)?;
    let h = api.herder.clone();
    blocking(move || h.alter_offsets(&name, &to)).await?;
    Ok(reply(
        StatusCode::OK,
        &json!({"message": "The offsets for this connector have been altered successfully"}),
    ))
}

pub async fn reset_offsets(State(api): State<Api>, Path(name): Path<String>) -> Reply {
    let h = api.herder.clone();
    blocking(move || h.reset_offsets(&name)).await?;
    Ok(reply(
        StatusCode::OK,
        &json!({"message": "The offsets for this connector have been reset successfully"}),
    ))
}
