//! A tiny raw-TCP HTTP/1.0 GET, enough to probe health endpoints without an HTTP client crate.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// Status code and body of `GET path` on `addr`, within `timeout`.
pub async fn get(addr: SocketAddr, path: &str, timeout: Duration) -> anyhow::Result<(u16, String)> {
    tokio::time::timeout(timeout, get_inner(addr, path))
        .await
        .with_context(|| format!("GET http://{addr}{path} took longer than {timeout:?}"))?
}

async fn get_inner(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    let mut stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("failed to connect to {addr}"))?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .context("failed to send the HTTP request")?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .await
        .context("failed to read the HTTP response")?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status_line = head.lines().next().unwrap_or_default();
    let mut parts = status_line.split_whitespace();
    let (Some(version), Some(code)) = (parts.next(), parts.next()) else {
        bail!("malformed HTTP status line {status_line:?} from {addr}");
    };
    if !version.starts_with("HTTP/") {
        bail!("malformed HTTP status line {status_line:?} from {addr}");
    }
    let code = code
        .parse()
        .with_context(|| format!("malformed HTTP status code in {status_line:?}"))?;
    Ok((code, body.to_string()))
}
