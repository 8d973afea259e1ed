//! `canopyctl clusters list|get`, tables and JSON.

use chrono::DateTime;
use serde_json::{Value, json};

use crate::stack::{Stack, heartbeat};
use crate::{run, stderr, stdout};

#[tokio::test]
async fn lists_and_gets_clusters_as_tables_and_json() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    stack
        .seed_cluster(
            "alpha",
            &[1, 2, 4],
            &[("Pod", "p1"), ("Pod", "p2"), ("Node", "n1")],
        )
        .await?;
    let last = stack
        .publish(&heartbeat("beta-with-a-long-name", 1))
        .await?;
    stack.projected(last).await?;
    let api = stack.api_url();

    let out = run(&api, &["clusters", "list"]).await?;
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    let header = lines[0];
    assert!(
        header.starts_with(
            "ID                     K8S VERSION  NODES  PODS  OBJECTS  LAST HEARTBEAT"
        ),
        "{text}"
    );
    let heartbeat_col = header.find("LAST HEARTBEAT").unwrap();
    let agent_col = header.find("AGENT").unwrap();
    let alpha = lines[1];
    assert!(alpha.starts_with("alpha "), "{text}");
    assert!(alpha.contains(" v1.31.2 "), "{text}");
    assert!(
        alpha[heartbeat_col..]
            .split_whitespace()
            .collect::<Vec<_>>()[1]
            == "ago",
        "{text}"
    );
    assert_eq!(&alpha[agent_col..], "0.1.0", "{text}");
    // Numbers are right-aligned under their header: NODES 3, PODS 40, OBJECTS 3.
    let cols: Vec<&str> = alpha.split_whitespace().collect();
    assert_eq!(cols[..5], ["alpha", "v1.31.2", "3", "40", "3"], "{text}");
    assert!(
        lines[2].starts_with("beta-with-a-long-name  v1.31.2"),
        "{text}"
    );

    let out = run(&api, &["--output", "json", "clusters", "list"]).await?;
    assert!(out.status.success(), "{}", stderr(&out));
    let list: Value = serde_json::from_slice(&out.stdout)?;
    let clusters = list["clusters"].as_array().unwrap();
    assert_eq!(clusters.len(), 2);
    let alpha = &clusters[0];
    assert_eq!(alpha["id"], "alpha");
    assert_eq!(alpha["agent_instance_id"], "alpha-i1");
    assert_eq!(alpha["heartbeats_received"], 3);
    assert_eq!(alpha["heartbeats_missed"], 1);
    assert_eq!(alpha["inventory_objects"], 3);
    for field in [
        "first_seen_at",
        "agent_started_at",
        "last_heartbeat_at",
        "inventory_at",
    ] {
        let t = alpha[field].as_str().unwrap_or_default();
        assert!(DateTime::parse_from_rfc3339(t).is_ok(), "{field}: {t:?}");
    }
    assert!(alpha.get("inventory_by_kind").is_none());
    assert_eq!(clusters[1]["agent_started_at"], Value::Null);

    let out = run(&api, &["clusters", "get", "alpha"]).await?;
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.starts_with("ID:              alpha\n"), "{text}");
    assert!(
        text.contains("Agent:           0.1.0 (instance alpha-i1)\n"),
        "{text}"
    );
    assert!(
        text.contains("Heartbeats:      3 received, 1 missed (last #4)\n"),
        "{text}"
    );
    assert!(
        text.contains("\nKIND  OBJECTS\nNode        1\nPod         2\n"),
        "{text}"
    );

    let out = run(&api, &["-o", "json", "clusters", "get", "alpha"]).await?;
    assert!(out.status.success(), "{}", stderr(&out));
    let alpha: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(alpha["inventory_by_kind"], json!({"Node": 1, "Pod": 2}));
    assert_eq!(alpha["kubernetes_version"], "v1.31.2");

    let out = run(&api, &["clusters", "get", "nowhere"]).await?;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "error: NOT_FOUND: cluster \"nowhere\" not found\n"
    );
    let out = run(&api, &["clusters", "get", "Not_Valid"]).await?;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).starts_with("error: INVALID_ARGUMENT: invalid cluster_id: "),
        "{}",
        stderr(&out)
    );
    Ok(())
}
