//! `canopyctl interconnects list|approve|reject` and `clusters revoke` against a real api.

use serde_json::Value;

use canopy_kit::envelope;
use canopy_kit::proto::event::v1::{InterconnectRequested, LinkDirection, envelope::Body};
use canopy_kit::streams;
use canopy_kit::subject::ClusterId;

use crate::stack::{Stack, WAIT};
use crate::{run, stderr, stdout};

async fn request(stack: &Stack, cluster: &str, id: &str) -> anyhow::Result<()> {
    let env = envelope::new(
        &ClusterId::parse(cluster)?,
        "gateway-leafnode",
        Body::InterconnectRequested(InterconnectRequested {
            request_id: id.to_owned(),
            labels: [("env".to_owned(), "edge".to_owned())].into(),
            direction: LinkDirection::SeedDials as i32,
            trunk: "trunk-eu".to_owned(),
            ..Default::default()
        }),
    );
    canopy_kit::publish::publish(&stack.js, &env).await?;
    Ok(())
}

#[tokio::test]
async fn lists_approves_rejects_and_revokes() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let api = stack.api_url();
    canopy_testkit::eventually(WAIT, "CONTROL to exist", || async {
        Ok(stack.js.get_stream(streams::CONTROL).await.ok().map(|_| ()))
    })
    .await?;
    request(&stack, "edge-1", "r1").await?;
    request(&stack, "edge-2", "r2").await?;
    let text = canopy_testkit::eventually(WAIT, "both requests listed", || {
        let api = api.clone();
        async move {
            let out = run(&api, &["interconnects", "list"]).await?;
            let text = stdout(&out);
            Ok((text.lines().count() == 3).then_some(text))
        }
    })
    .await?;
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("REQUEST ID  CLUSTER  STATUS   DIRECTION   TRUNK     LABELS"),
        "{text}"
    );
    let cols: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(
        cols[..6],
        [
            "r2",
            "edge-2",
            "pending",
            "seed-dials",
            "trunk-eu",
            "env=edge"
        ],
        "{text}"
    );
    assert!(lines[1].ends_with(" -"), "nobody decided yet: {text}");

    let out = run(&api, &["interconnects", "approve", "r1"]).await?;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "interconnect request r1 of cluster edge-1: approved by anonymous\n"
    );
    let out = run(
        &api,
        &[
            "-o",
            "json",
            "interconnects",
            "reject",
            "r2",
            "--reason",
            "unknown site",
        ],
    )
    .await?;
    assert!(out.status.success(), "{}", stderr(&out));
    let rejected: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(rejected["status"], "rejected");
    assert_eq!(rejected["reason"], "unknown site");
    assert_eq!(rejected["direction"], "seed-dials");

    // Refusals exit 1 with the gRPC code.
    let out = run(&api, &["interconnects", "approve", "r2"]).await?;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out)
            .starts_with("error: FAILED_PRECONDITION: interconnect request \"r2\" is rejected"),
        "{}",
        stderr(&out)
    );
    let out = run(&api, &["interconnects", "reject", "r9"]).await?;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("NOT_FOUND"), "{}", stderr(&out));
    let out = run(&api, &["interconnects", "list", "--status", "open"]).await?;
    assert_eq!(out.status.code(), Some(2), "clap refuses an unknown status");

    let out = run(
        &api,
        &["clusters", "revoke", "edge-1", "--reason", "retired"],
    )
    .await?;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "interconnect request r1 of cluster edge-1: revoked by anonymous (retired)\n"
    );
    let out = run(
        &api,
        &["-o", "json", "interconnects", "list", "--cluster", "edge-1"],
    )
    .await?;
    assert!(out.status.success(), "{}", stderr(&out));
    let list: Value = serde_json::from_slice(&out.stdout)?;
    let statuses: Vec<&str> = list["interconnects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["revoked"]);
    Ok(())
}
