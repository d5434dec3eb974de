//! A minimal HTTP/1.1 server (keep-alive, Content-Length bodies) for test doubles in front of
//! or instead of Elasticsearch: the fault proxy and the benchmark's instant-ack endpoint.
//! Being our own, it can also misbehave on purpose: drop a connection, refuse new ones.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

pub struct Request {
    pub method: String,
    /// Path with query string.
    pub target: String,
    /// Header names lowercased, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    /// The first header named `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

pub enum Reply {
    Respond {
        status: u16,
        body: Vec<u8>,
    },
    /// Close the connection without answering.
    Drop,
}

pub type Handler =
    Arc<dyn Fn(Request) -> Pin<Box<dyn Future<Output = Reply> + Send>> + Send + Sync>;

/// Serves connections accepted on `listener` until the listener fails.
pub async fn serve(listener: TcpListener, handler: Handler) {
    while let Ok((stream, _)) = listener.accept().await {
        let h = handler.clone();
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            let _ = connection(stream, h).await;
        });
    }
}

/// Serves one connection (plain TCP, or TLS over it).
pub async fn connection<S>(stream: S, handler: Handler) -> std::io::Result<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (r, mut w) = tokio::io::split(stream);
    let mut r = BufReader::with_capacity(64 * 1024, r);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or("").to_string();
        let target = parts.next().unwrap_or("/").to_string();
        let mut len = 0usize;
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).await? == 0 {
                return Ok(());
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                let k = k.trim().to_ascii_lowercase();
                if k == "content-length" {
                    len = v.trim().parse().unwrap_or(0);
                }
                headers.push((k, v.trim().to_string()));
            }
        }
        let mut body = vec![0; len];
        r.read_exact(&mut body).await?;
        match handler(Request {
            method,
            target,
            headers,
            body,
        })
        .await
        {
            Reply::Drop => return Ok(()),
            Reply::Respond { status, body } => {
                let head = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                    body.len()
                );
                w.write_all(head.as_bytes()).await?;
                w.write_all(&body).await?;
            }
        }
    }
}

/// The number of bulk actions in an NDJSON body, and whether each is a delete.
pub fn bulk_actions(body: &[u8]) -> Vec<BulkLine<'_>> {
    let mut out = Vec::new();
    let mut lines = body.split(|b| *b == b'\n').filter(|l| !l.is_empty());
    while let Some(action) = lines.next() {
        let is_delete = action.starts_with(b"{\"delete\"");
        let doc = if is_delete { None } else { lines.next() };
        out.push(BulkLine { action, doc });
    }
    out
}

pub struct BulkLine<'a> {
    pub action: &'a [u8],
    pub doc: Option<&'a [u8]>,
}

impl BulkLine<'_> {
    pub fn op(&self) -> &'static str {
        if self.action.starts_with(b"{\"delete\"") {
            "delete"
        } else {
            "index"
        }
    }
}

/// A 200 bulk response acknowledging `n` actions of the given ops.
pub fn ack_all<'a>(ops: impl Iterator<Item = &'a str>) -> Vec<u8> {
    let mut body = b"{\"took\":0,\"errors\":false,\"items\":[".to_vec();
    for (i, op) in ops.enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(format!("{{\"{op}\":{{\"status\":201}}}}").as_bytes());
    }
    body.extend_from_slice(b"]}");
    body
}

/// A one-thread runtime for a test server, with a listener on a free loopback port bound in
/// it, and that port's `host:port`.
pub fn local_server() -> (tokio::runtime::Runtime, TcpListener, String) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    (rt, listener, addr)
}
