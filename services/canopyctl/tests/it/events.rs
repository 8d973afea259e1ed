//! `canopyctl events watch`, NDJSON and lines.

use serde_json::Value;
use tokio::io::{AsyncBufReadExt as _, BufReader};

use crate::stack::{Stack, WAIT, heartbeat, started};
use crate::{canopyctl, run, stderr, stdout};

#[tokio::test]
async fn watch_prints_events_as_they_come() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    stack.publish(&started("alpha")).await?; // 1
    stack.publish(&heartbeat("beta", 1)).await?; // 2
    stack.publish(&heartbeat("alpha", 1)).await?; // 3
    let api = stack.api_url();

    let mut child = canopyctl(
        &api,
        &[
            "--output",
            "json",
            "events",
            "watch",
            "--cluster",
            "alpha",
            "--from-seq",
            "1",
        ],
    )
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .spawn()?;
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut next = async || -> anyhow::Result<Value> {
        let line = tokio::time::timeout(WAIT, lines.next_line())
            .await??
            .ok_or_else(|| anyhow::anyhow!("canopyctl closed its output"))?;
        Ok(serde_json::from_str(&line)?)
    };
    let first = next().await?;
    assert_eq!(first["stream_sequence"], 1);
    assert_eq!(first["type"], "agent.started");
    assert_eq!(first["subject"], "canopy.evt.alpha.agent.started");
    assert_eq!(first["envelope"]["cluster_id"], "alpha");
    assert_eq!(
        first["envelope"]["body"]["agent_started"]["agent_version"],
        "0.1.0"
    );
    let second = next().await?;
    assert_eq!(second["stream_sequence"], 3);
    assert_eq!(second["envelope"]["body"]["heartbeat"]["sequence"], 1);
    assert!(second["stored_at"].as_str().unwrap().ends_with('Z'));

    let live = stack.publish(&heartbeat("alpha", 2)).await?;
    let third = next().await?;
    assert_eq!(third["stream_sequence"], live);
    child.kill().await?;

    let out = run(
        &api,
        &[
            "events",
            "watch",
            "--type",
            "heartbeat",
            "--from-seq",
            "1",
            "--limit",
            "2",
        ],
    )
    .await?;
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(
        lines[0].trim_start().starts_with("SEQ  STORED AT"),
        "{text}"
    );
    let cols: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(cols[0], "2");
    assert_eq!(cols[2..5], ["beta", "agent.heartbeat", "#1"], "{text}");
    assert!(
        lines[2].contains(" alpha ") && lines[2].contains("#1 nodes=3 pods=10"),
        "{text}"
    );
    Ok(())
}
