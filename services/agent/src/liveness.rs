//! Liveness probes from inside the cluster: each endpoint of a pool is probed over TCP (the
//! connection opens) or HTTP (an HTTP/1.1 GET answers with an expected status), each within the
//! pool's timeout, at most `concurrency` at once.

use std::time::{Duration, Instant};

use futures::StreamExt as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use canopy_kit::proto::event::v1::{LivenessEndpoint, LivenessPool, ProbeProtocol, ProbeResult};

pub const DEFAULT_TIMEOUT_MS: u32 = 2_000;
pub const DEFAULT_CONCURRENCY: u32 = 16;
/// Upper bounds, whatever the pool asks.
const MAX_TIMEOUT_MS: u32 = 60_000;
const MAX_CONCURRENCY: u32 = 256;
pub const MAX_ENDPOINTS: usize = 10_000;
/// The most of an HTTP answer read to find its status line.
const STATUS_LINE_MAX: usize = 4096;

/// Why a pool cannot be probed.
pub fn validate(pool: &LivenessPool) -> Result<(), String> {
    if pool.endpoints.is_empty() {
        return Err("the pool has no endpoints".into());
    }
    if pool.endpoints.len() > MAX_ENDPOINTS {
        return Err(format!("the pool has more than {MAX_ENDPOINTS} endpoints"));
    }
    for e in &pool.endpoints {
        if e.host.is_empty() || e.port == 0 || e.port > 65_535 {
            return Err(format!(
                "endpoint {:?} needs a host and a port in 1-65535",
                e.name
            ));
        }
        if e.host.contains(['\r', '\n', ' ']) || e.path.contains(['\r', '\n', ' ']) {
            return Err(format!(
                "endpoint {:?} has whitespace in its host or path",
                e.name
            ));
        }
    }
    Ok(())
}

/// Probes every endpoint of the pool; results in the pool's order.
pub async fn check(pool: &LivenessPool) -> Vec<ProbeResult> {
    let timeout = Duration::from_millis(u64::from(match pool.timeout_ms {
        0 => DEFAULT_TIMEOUT_MS,
        t => t.min(MAX_TIMEOUT_MS),
    }));
    let concurrency = match pool.concurrency {
        0 => DEFAULT_CONCURRENCY,
        c => c.min(MAX_CONCURRENCY),
    } as usize;
    // Owned endpoints: the probes' futures borrow nothing, so the check can run on any task.
    futures::stream::iter(pool.endpoints.clone())
        .map(move |e| async move { probe(&e, timeout).await })
        .buffered(concurrency)
        .collect()
        .await
}

fn label(e: &LivenessEndpoint) -> String {
    if e.name.is_empty() {
        format!("{}:{}", e.host, e.port)
    } else {
        e.name.clone()
    }
}

async fn probe(e: &LivenessEndpoint, timeout: Duration) -> ProbeResult {
    let started = Instant::now();
    let outcome = tokio::time::timeout(timeout, async {
        let port = u16::try_from(e.port).map_err(|_| "port out of range".to_owned())?;
        let stream = TcpStream::connect((e.host.as_str(), port))
            .await
            .map_err(|err| format!("connect: {err}"))?;
        if e.protocol == ProbeProtocol::Http as i32 {
            http_status(stream, e).await.map(Some)
        } else {
            Ok(None)
        }
    })
    .await;
    let latency_ms = u32::try_from(started.elapsed().as_millis()).unwrap_or(u32::MAX);
    let mut r = ProbeResult {
        endpoint: label(e),
        latency_ms,
        ..Default::default()
    };
    match outcome {
        Err(_) => r.error = format!("no answer within {}ms", timeout.as_millis()),
        Ok(Err(err)) => r.error = err,
        Ok(Ok(None)) => r.alive = true,
        Ok(Ok(Some(status))) => {
            r.status = status;
            r.alive = if e.expect_status.is_empty() {
                (200..400).contains(&status)
            } else {
                e.expect_status.contains(&status)
            };
            if !r.alive {
                r.error = format!("unexpected HTTP status {status}");
            }
        }
    }
    r
}

/// Sends `GET <path>` and reads the status code of the answer.
async fn http_status(mut stream: TcpStream, e: &LivenessEndpoint) -> Result<u32, String> {
    let path = if e.path.is_empty() { "/" } else { &e.path };
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {}:{}\r\nUser-Agent: canopy-agent\r\nConnection: close\r\n\r\n",
        e.host, e.port
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|err| format!("send: {err}"))?;
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 512];
    while !buf.windows(2).any(|w| w == b"\r\n") && buf.len() < STATUS_LINE_MAX {
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|err| format!("read: {err}"))?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let line = String::from_utf8_lossy(&buf);
    let line = line.lines().next().unwrap_or_default();
    let mut parts = line.split_whitespace();
    match (
        parts.next(),
        parts.next().and_then(|s| s.parse::<u32>().ok()),
    ) {
        (Some(v), Some(status)) if v.starts_with("HTTP/") => Ok(status),
        _ => Err(format!("not an HTTP answer: {line:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    fn endpoint(name: &str, port: u16, protocol: ProbeProtocol) -> LivenessEndpoint {
        LivenessEndpoint {
            name: name.into(),
            host: "127.0.0.1".into(),
            port: u32::from(port),
            protocol: protocol as i32,
            ..Default::default()
        }
    }

    /// Answers every connection with `status_line`, or never answers when it is empty.
    async fn server(status_line: &'static str) -> std::io::Result<u16> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((mut s, _)) = listener.accept().await {
                if status_line.is_empty() {
                    held.push(s);
                    continue;
                }
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(format!("{status_line}\r\nContent-Length: 0\r\n\r\n").as_bytes())
                    .await;
            }
        });
        Ok(port)
    }

    #[tokio::test]
    async fn probes_tcp_and_http_with_timeouts() -> std::io::Result<()> {
        let ok = server("HTTP/1.1 204 No Content").await?;
        let broken = server("HTTP/1.1 503 Service Unavailable").await?;
        let silent = server("").await?;
        // A port nobody listens on: bind, read the port, close.
        let closed = TcpListener::bind("127.0.0.1:0").await?.local_addr()?.port();
        let pool = LivenessPool {
            name: "p".into(),
            endpoints: vec![
                endpoint("tcp-ok", ok, ProbeProtocol::Tcp),
                endpoint("http-ok", ok, ProbeProtocol::Http),
                endpoint("http-503", broken, ProbeProtocol::Http),
                endpoint("http-silent", silent, ProbeProtocol::Http),
                endpoint("tcp-closed", closed, ProbeProtocol::Tcp),
            ],
            timeout_ms: 300,
            concurrency: 2,
        };
        validate(&pool).map_err(std::io::Error::other)?;
        let r = check(&pool).await;
        let alive: Vec<(&str, bool)> = r.iter().map(|p| (p.endpoint.as_str(), p.alive)).collect();
        assert_eq!(
            alive,
            vec![
                ("tcp-ok", true),
                ("http-ok", true),
                ("http-503", false),
                ("http-silent", false),
                ("tcp-closed", false)
            ]
        );
        assert_eq!(r[1].status, 204);
        assert_eq!(r[2].status, 503);
        assert!(r[3].error.contains("no answer within 300ms"), "{:?}", r[3]);
        assert!(r[3].latency_ms >= 300);
        assert!(r[4].error.starts_with("connect"), "{:?}", r[4]);
        let mut expect = endpoint("503-expected", broken, ProbeProtocol::Http);
        expect.expect_status = vec![503];
        let r = check(&LivenessPool {
            endpoints: vec![expect],
            ..Default::default()
        })
        .await;
        assert!(r[0].alive);
        Ok(())
    }

    #[test]
    fn rejects_pools_that_cannot_be_probed() {
        assert!(validate(&LivenessPool::default()).is_err());
        let mut e = endpoint("x", 80, ProbeProtocol::Tcp);
        e.port = 0;
        let pool = |e: LivenessEndpoint| LivenessPool {
            endpoints: vec![e],
            ..Default::default()
        };
        assert!(validate(&pool(e)).is_err());
        let mut e = endpoint("x", 80, ProbeProtocol::Http);
        e.path = "/ HTTP/1.0\r\nX: y".into();
        assert!(validate(&pool(e)).is_err());
        assert!(validate(&pool(endpoint("x", 80, ProbeProtocol::Http))).is_ok());
    }
}
