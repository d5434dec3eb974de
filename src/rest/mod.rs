//! The REST API on `rest.listen`: Kafka Connect's paths, shapes, status codes and error bodies
//! (`{"error_code": …, "message": …}`), over the herder. README "REST API" lists the endpoints
//! and the differences from Kafka Connect.
//!
//! Handlers run the herder's operations on blocking threads: stopping a task waits for its
//! writes to finish.

mod connectors;
mod plugins;

use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde_json::{Value, json};

use crate::herder::{Error, Herder};

/// What every handler shares.
#[derive(Clone)]
struct Api {
    herder: Arc<Herder>,
    /// The Kafka cluster id, read once on the first `GET /`.
    cluster_id: Arc<OnceLock<String>>,
}

/// An error reply, as Kafka Connect writes it.
struct ApiError(StatusCode, String);

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let code = match &e {
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::Conflict(_) => StatusCode::CONFLICT,
            Error::BadRequest(_) => StatusCode::BAD_REQUEST,
            Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError(code, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        reply(
            self.0,
            &json!({"error_code": self.0.as_u16(), "message": self.1}),
        )
    }
}

type Reply = Result<Response, ApiError>;

/// A JSON response.
fn reply(code: StatusCode, body: &impl serde::Serialize) -> Response {
    let body = serde_json::to_vec(body).unwrap_or_default();
    let mut r = (code, body).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// Runs a herder operation on a blocking thread.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(Error::Internal(format!("the request failed: {e}"))))
        .map_err(ApiError::from)
}

/// A request body as JSON; anything else is a 400 naming the problem.
fn json_body(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("the request body is not valid JSON: {e}"),
        )
    })
}

/// The query parameters, repeated keys kept (`?expand=status&expand=info`).
fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (k.to_string(), v.to_string())
        })
        .collect()
}

/// A boolean query parameter (`?includeTasks=true`).
fn query_flag(pairs: &[(String, String)], key: &str) -> bool {
    pairs
        .iter()
        .any(|(k, v)| k == key && v.eq_ignore_ascii_case("true"))
}

async fn root(axum::extract::State(api): axum::extract::State<Api>) -> Reply {
    let cluster = api.cluster_id.clone();
    let settings = api.herder.settings().clone();
    let id = blocking(move || {
        if let Some(id) = cluster.get() {
            return Ok(id.clone());
        }
        let client = crate::source::plain_client(&settings).map_err(Error::Internal)?;
        let id = rdkafka::consumer::Consumer::client(&client)
            .fetch_cluster_id(std::time::Duration::from_secs(10))
            .ok_or_else(|| Error::Internal("cannot read the Kafka cluster id".into()))?;
        Ok(cluster.get_or_init(|| id).clone())
    })
    .await?;
    Ok(reply(
        StatusCode::OK,
        &json!({
            "version": crate::herder::VERSION,
            "commit": option_env!("CDC_SINK_COMMIT").unwrap_or("unknown"),
            "kafka_cluster_id": id,
        }),
    ))
}

/// `GET /metrics`: Prometheus' text exposition format (version 0.0.4).
async fn metrics(axum::extract::State(api): axum::extract::State<Api>) -> Reply {
    let herder = api.herder.clone();
    let text = blocking(move || Ok(herder.metrics_text())).await?;
    let mut r = (StatusCode::OK, text).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(prometheus::TEXT_FORMAT),
    );
    Ok(r)
}

/// The routes, over `herder`.
pub fn router(herder: Arc<Herder>) -> Router {
    use connectors as c;
    let api = Api {
        herder,
        cluster_id: Arc::new(OnceLock::new()),
    };
    Router::new()
        .route("/", get(root))
        .route("/metrics", get(metrics))
        .route("/connectors", get(c::list).post(c::create))
        .route("/connectors/{name}", get(c::info).delete(c::delete))
        .route(
            "/connectors/{name}/config",
            get(c::config).put(c::put_config).patch(c::patch_config),
        )
        .route("/connectors/{name}/status", get(c::status))
        .route("/connectors/{name}/tasks", get(c::tasks))
        .route(
            "/connectors/{name}/tasks/{task}/status",
            get(c::task_status),
        )
        .route(
            "/connectors/{name}/tasks/{task}/restart",
            post(c::restart_task),
        )
        .route("/connectors/{name}/restart", post(c::restart))
        .route("/connectors/{name}/pause", put(c::pause))
        .route("/connectors/{name}/resume", put(c::resume))
        .route("/connectors/{name}/stop", put(c::stop))
        .route("/connectors/{name}/topics", get(c::topics))
        .route("/connectors/{name}/druid-spec", get(c::druid_spec))
        .route("/connectors/{name}/topics/reset", put(c::reset_topics))
        .route(
            "/connectors/{name}/offsets",
            get(c::offsets)
                .patch(c::alter_offsets)
                .delete(c::reset_offsets),
        )
        .route("/connector-plugins", get(plugins::list))
        .route("/connector-plugins/{plugin}/config", get(plugins::config))
        .route(
            "/connector-plugins/{plugin}/config/validate",
            put(plugins::validate),
        )
        .fallback(|| async { ApiError(StatusCode::NOT_FOUND, "HTTP 404 Not Found".into()) })
        .method_not_allowed_fallback(|| async {
            ApiError(
                StatusCode::METHOD_NOT_ALLOWED,
                "HTTP 405 Method Not Allowed".into(),
            )
        })
        .layer(axum::middleware::map_response(json_errors))
        .with_state(api)
}

/// Every error answered as Kafka Connect answers it, `{"error_code": …, "message": …}`: axum's
/// own refusals (a path that is not UTF-8 after decoding, a body past its limit) come as plain
/// text, and become that shape here with their text as the message.
async fn json_errors(r: Response) -> Response {
    let code = r.status();
    let is_json = r
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|t| t.as_bytes().starts_with(b"application/json"));
    if is_json || !(code.is_client_error() || code.is_server_error()) {
        return r;
    }
    let (parts, body) = r.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let message = if text.is_empty() {
        format!("HTTP {code}")
    } else {
        text
    };
    let mut reply = ApiError(code, message).into_response();
    // Its other headers kept (`Allow`, `Retry-After`…).
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            reply.headers_mut().append(name, value.clone());
        }
    }
    reply
}

/// Binds `listen`; the address actually bound is returned (port 0 picks a free one).
pub async fn bind(listen: &str) -> Result<tokio::net::TcpListener, String> {
    tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("rest.listen: cannot listen on {listen}: {e}"))
}

/// Serves the API on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    herder: Arc<Herder>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    axum::serve(listener, router(herder))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e| format!("the REST API stopped: {e}"))
}
