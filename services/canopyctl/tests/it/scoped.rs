//! canopyctl with a token scoped by cluster labels, issued by `canopyctl token issue`: the
//! holder sees only the clusters in scope, and a method that refuses scopes says so.

use canopy_auth::token::TokenConfig;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt as _, BufReader};

use crate::stack::{Stack, WAIT, heartbeat, started_as};
use crate::{canopyctl, run, stderr, stdout};

/// `canopyctl token issue ... --save FILE`; returns FILE.
async fn issue(
    dir: &std::path::Path,
    keys: &std::path::Path,
    role: &str,
    scope: &str,
) -> anyhow::Result<String> {
    let file = dir.join(format!("{role}-{scope}.token"));
    let (keys, file_arg) = (keys.display().to_string(), file.display().to_string());
    let args = [
        "token",
        "issue",
        "--keys",
        &keys,
        "--subject",
        "alice",
        "--role",
        role,
        "--scope",
        scope,
        "--save",
        &file_arg,
    ];
    let out = run("http://127.0.0.1:1", &args).await?;
    assert!(out.status.success(), "{}", stderr(&out));
    Ok(file_arg)
}

#[tokio::test]
async fn a_scoped_token_sees_only_its_clusters_through_canopyctl() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let keys = dir.path().join("keys.json");
    let config = TokenConfig::generate_hs256("canopy", "canopy-api", "k1");
    std::fs::write(&keys, serde_json::to_string(&config)?)?;
    let stack = Stack::start_with_auth(Some(keys.clone())).await?;
    let first = stack
        .publish(&started_as("prod-eu", "i1", &[("env", "prod")]))
        .await?;
    stack
        .publish(&started_as("dev-ap", "i1", &[("env", "dev")]))
        .await?;
    stack.publish(&heartbeat("dev-ap", 1)).await?;
    let last = stack.publish(&heartbeat("prod-eu", 1)).await?;
    stack.projected(last).await?;
    let api = stack.api_url();
    let viewer = issue(dir.path(), &keys, "viewer", "env=prod").await?;

    // Lists hold only the clusters in scope; another cluster reads as unknown.
    let out = run(
        &api,
        &[
            "--token-file",
            &viewer,
            "--output",
            "json",
            "clusters",
            "list",
        ],
    )
    .await?;
    assert!(out.status.success(), "{}", stderr(&out));
    let list: Value = serde_json::from_slice(&out.stdout)?;
    let ids: Vec<&str> = list["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["id"].as_str())
        .collect();
    assert_eq!(ids, ["prod-eu"]);
    let out = run(
        &api,
        &["--token-file", &viewer, "clusters", "get", "dev-ap"],
    )
    .await?;
    assert!(!out.status.success());
    assert!(stderr(&out).contains("NOT_FOUND"), "{}", stderr(&out));

    // A watch from the start of the log gets prod-eu's events only.
    let from = first.to_string();
    let mut child = canopyctl(
        &api,
        &[
            "--token-file",
            &viewer,
            "--output",
            "json",
            "events",
            "watch",
            "--from-seq",
            &from,
        ],
    )
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .spawn()?;
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    while seen.last() != Some(&last) {
        let line = tokio::time::timeout(WAIT, lines.next_line())
            .await??
            .ok_or_else(|| anyhow::anyhow!("canopyctl closed its output"))?;
        let event: Value = serde_json::from_str(&line)?;
        assert_eq!(event["envelope"]["cluster_id"], "prod-eu", "{line}");
        seen.push(event["stream_sequence"].as_u64().unwrap());
    }
    assert_eq!(seen, [first, last]);
    child.kill().await?;

    // The audit trail is fleet-wide: even an admin token with a scope is refused.
    let admin = issue(dir.path(), &keys, "admin", "env=prod").await?;
    let out = run(&api, &["--token-file", &admin, "trail", "list"]).await?;
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("PERMISSION_DENIED"),
        "{}",
        stderr(&out)
    );
    Ok(())
}
