//! `cdc-sink status`: a worker's connectors and tasks as a table — states, lag, rate, ETA and
//! freshness — read from its REST API (`GET /connectors?expand=status&expand=info`).

use std::time::Duration;

use serde_json::Value;

/// The table for the worker at `url`.
pub fn table(url: &str) -> Result<String, String> {
    let endpoint = format!(
        "{}/connectors?expand=status&expand=info",
        url.trim_end_matches('/')
    );
    let runtime = crate::worker::runtime()?;
    let body: Value = runtime.block_on(async {
        let client = crate::tls::client_builder(Default::default())?
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
        let resp = client
            .get(&endpoint)
            .send()
            .await
            .map_err(|e| format!("GET {endpoint}: {e}"))?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        if !status.is_success() {
            return Err(format!("GET {endpoint}: {status}: {text}"));
        }
        serde_json::from_str(&text).map_err(|e| format!("GET {endpoint}: not JSON ({e}): {text}"))
    })?;
    Ok(render(&body))
}

const HEADER: [&str; 10] = [
    "CONNECTOR",
    "TYPE",
    "STATE",
    "TASK",
    "TASK STATE",
    "WORKER",
    "LAG",
    "REC/S",
    "ETA",
    "FRESHNESS P99",
];

/// The table of a `GET /connectors?expand=status&expand=info` answer; a task's trace or trouble
/// follows its row.
pub fn render(connectors: &Value) -> String {
    let mut rows: Vec<[String; 10]> = vec![HEADER.map(String::from)];
    let mut notes: Vec<(usize, String)> = Vec::new();
    let empty = serde_json::Map::new();
    let all = connectors.as_object().unwrap_or(&empty);
    for (name, c) in all {
        let status = &c["status"];
        let kind = c["info"]["type"].as_str().unwrap_or("sink");
        let state = status["connector"]["state"].as_str().unwrap_or("?");
        let tasks = status["tasks"].as_array().cloned().unwrap_or_default();
        if tasks.is_empty() {
            rows.push([name, kind, state, "-", "-", "-", "-", "-", "-", "-"].map(String::from));
        }
        for t in &tasks {
            let p = &t["progress"];
            let num = |v: &Value| v.as_u64().map_or("-".to_string(), |n| n.to_string());
            rows.push([
                name.clone(),
                kind.to_string(),
                state.to_string(),
                num(&t["id"]),
                t["state"].as_str().unwrap_or("?").to_string(),
                t["worker_id"].as_str().unwrap_or("?").to_string(),
                num(&p["lag"]),
                num(&p["records_per_second"]),
                p["eta_seconds"]
                    .as_u64()
                    .map_or("-".to_string(), |s| format!("{s} s")),
                p["freshness_p99_ms"]
                    .as_u64()
                    .map_or("-".to_string(), |ms| format!("{ms} ms")),
            ]);
            for key in ["trace", "trouble"] {
                if let Some(why) = t[key].as_str() {
                    let first = why.lines().next().unwrap_or("");
                    notes.push((rows.len() - 1, format!("  {key}: {first}")));
                }
            }
        }
    }
    let widths: Vec<usize> = (0..HEADER.len())
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for (i, row) in rows.iter().enumerate() {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
        for (_, note) in notes.iter().filter(|(r, _)| *r == i) {
            out.push_str(note);
            out.push('\n');
        }
    }
    if all.is_empty() {
        out.push_str("(no connectors)\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreachable_worker_is_named_and_the_client_has_its_tls_set_up() {
        // No default TLS provider in unit tests: a client built without the shared set-up
        // (`tls::client_builder`) would panic here.
        let e = table("http://127.0.0.1:9").unwrap_err();
        assert!(e.starts_with("GET http://127.0.0.1:9/connectors"), "{e}");
    }

    #[test]
    fn one_row_per_task_with_its_progress_and_trouble() {
        let v = serde_json::json!({
            "es": {"info": {"type": "sink"}, "status": {"connector": {"state": "RUNNING"}, "tasks": [
                {"id": 0, "state": "RUNNING", "worker_id": "w:1",
                 "progress": {"lag": 1200, "records_per_second": 400, "eta_seconds": 3, "freshness_p99_ms": 250}},
                {"id": 1, "state": "FAILED", "worker_id": "w:1", "trace": "topic t partition 0 offset 5: bad\nmore"}]}},
            "idle": {"info": {"type": "sink"}, "status": {"connector": {"state": "PAUSED"}, "tasks": []}}
        });
        let t = render(&v);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("CONNECTOR"), "{t}");
        let cells: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(
            cells,
            [
                "es", "sink", "RUNNING", "0", "RUNNING", "w:1", "1200", "400", "3", "s", "250",
                "ms"
            ]
        );
        assert!(lines[2].contains("FAILED"), "{t}");
        assert_eq!(lines[3], "  trace: topic t partition 0 offset 5: bad");
        assert!(
            lines[4].starts_with("idle") && lines[4].contains("PAUSED"),
            "{t}"
        );
    }
}
