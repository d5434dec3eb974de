//! A client for the REST API of Kafka Connect and of cdc-sink: status code and JSON body.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::http as client;

/// Sends `method path` with an optional JSON body; returns the status and the body (`Null` when
/// empty, a string when not JSON).
pub fn call(base: &str, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = client().request(m, format!("{base}{path}"));
    if let Some(b) = body {
        req = req
            .header("Content-Type", "application/json")
            .body(serde_json::to_vec(b).unwrap());
    }
    let resp = req
        .send()
        .unwrap_or_else(|e| panic!("{method} {base}{path}: {e}"));
    let status = resp.status().as_u16();
    let text = resp.text().unwrap_or_default();
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    (status, body)
}

/// Polls `GET path` until `ok` holds for the body; panics with the last body after `timeout`.
pub fn wait_for(base: &str, path: &str, timeout: Duration, ok: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let (code, body) = call(base, "GET", path, None);
        if code == 200 && ok(&body) {
            return body;
        }
        if start.elapsed() > timeout {
            panic!("GET {path}: condition not met after {timeout:?}; last: {code} {body}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The states of a connector and its tasks, from its status.
pub fn states(status: &Value) -> (String, Vec<String>) {
    let connector = status["connector"]["state"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let tasks = status["tasks"]
        .as_array()
        .map(|t| {
            t.iter()
                .map(|t| t["state"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default();
    (connector, tasks)
}

/// `GET /metrics` of a worker: Prometheus' text format.
pub fn metrics(base: &str) -> String {
    let resp = client()
        .get(format!("{base}/metrics"))
        .send()
        .unwrap_or_else(|e| panic!("GET {base}/metrics: {e}"));
    assert_eq!(resp.status().as_u16(), 200);
    let kind = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    assert!(kind.starts_with("text/plain; version=0.0.4"), "{kind}");
    resp.text().unwrap()
}

/// The value of series `name` whose labels include `labels`, from [`metrics`]' text; `None`
/// when there is none. Panics when several match.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let found: Vec<f64> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, rest) = series.split_once('{').unwrap_or((series, ""));
            (n == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\""))))
            .then(|| value.parse().ok())?
        })
        .collect();
    assert!(found.len() <= 1, "{name} {labels:?}: several series match");
    found.first().copied()
}

/// A worker with no connector, its REST API ready; `state` is its state directory.
pub fn rest_worker(state: &std::path::Path) -> (crate::support::worker::Worker, String) {
    let dir = state.to_string_lossy().to_string();
    let mut w =
        crate::support::worker::Worker::start_with(&[], &[("CDC_SINK_WORKER__STATE_DIR", &dir)]);
    let url = w.rest_url();
    (w, url)
}

/// A fresh state directory for a worker.
pub fn state_dir() -> std::path::PathBuf {
    super::scratch().join(format!("cdc-sink-state-{}", fastrand::u32(..)))
}

/// How long a REST test waits for a state.
pub const WAIT: Duration = Duration::from_secs(90);

/// Waits (up to [`WAIT`]) until connector `name` is in state `connector` and, when `task` is given,
/// has tasks, all in that state; returns its status.
pub fn wait_state(url: &str, name: &str, connector: &str, task: Option<&str>) -> Value {
    wait_for(url, &format!("/connectors/{name}/status"), WAIT, |s| {
        let (c, t) = states(s);
        c == connector && task.is_none_or(|task| !t.is_empty() && t.iter().all(|x| x == task))
    })
}
