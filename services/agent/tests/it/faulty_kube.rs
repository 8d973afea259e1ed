//! A fault-injecting HTTP proxy in front of the fake Kubernetes API: a rule picks requests to
//! answer with an error `Status` (403 for a kind RBAC does not grant, 500 for a flaky page);
//! everything else is forwarded unchanged.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Decides, from the request path and query, whether to fail it and with which HTTP code.
pub type Rule = Arc<dyn Fn(&str, &str) -> Option<u16> + Send + Sync>;

pub struct FaultyKube {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl FaultyKube {
    pub async fn start(upstream: SocketAddr, rule: Rule) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let rule = rule.clone();
                tokio::spawn(async move {
                    let _ = serve(conn, upstream, rule).await;
                });
            }
        });
        Ok(Self { addr, task })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for FaultyKube {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves one keep-alive client connection, request after request.
async fn serve(conn: TcpStream, upstream: SocketAddr, rule: Rule) -> anyhow::Result<()> {
    let mut conn = BufReader::new(conn);
    loop {
        let mut request_line = String::new();
        if conn.read_line(&mut request_line).await? == 0 {
            return Ok(());
        }
        let mut content_length = 0usize;
        loop {
            let mut line = String::new();
            conn.read_line(&mut line).await?;
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                content_length = value.trim().parse()?;
            }
        }
        let mut body = vec![0; content_length];
        conn.read_exact(&mut body).await?;
        let mut parts = request_line.split_whitespace();
        let (method, target) = (
            parts.next().context("no method")?,
            parts.next().context("no target")?,
        );
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let (code, payload) = match rule(path, query) {
            Some(code) => (code, status(code, path)),
            None => forward(upstream, method, target, &body).await?,
        };
        let head = format!(
            "HTTP/1.1 {code} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            payload.len()
        );
        conn.get_mut().write_all(head.as_bytes()).await?;
        conn.get_mut().write_all(&payload).await?;
    }
}

fn status(code: u16, path: &str) -> Vec<u8> {
    let reason = if code == 403 {
        "Forbidden"
    } else {
        "InternalError"
    };
    serde_json::json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": format!("injected {code} for {path}"), "reason": reason, "code": code})
    .to_string()
    .into_bytes()
}

/// One request to the real fake server over HTTP/1.0, so that its answer ends with the
/// connection and needs no chunked decoding.
async fn forward(
    upstream: SocketAddr,
    method: &str,
    target: &str,
    body: &[u8],
) -> anyhow::Result<(u16, Vec<u8>)> {
    let mut up = TcpStream::connect(upstream).await?;
    let head = format!(
        "{method} {target} HTTP/1.0\r\nHost: {upstream}\r\nAccept: application/json\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    up.write_all(head.as_bytes()).await?;
    up.write_all(body).await?;
    let mut raw = Vec::new();
    up.read_to_end(&mut raw).await?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of headers")?;
    let status_line = String::from_utf8_lossy(&raw[..split]);
    let code = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("no status code")?;
    Ok((code, raw[split + 4..].to_vec()))
}
