//! `canopyctl audit`: offline manifest audit with the shared engine, JSON output and exit codes.

use crate::{run, stderr, stdout};

const PRIVILEGED: &str = "\
apiVersion: v1
kind: Pod
metadata:
  name: web
  namespace: shop
spec:
  containers:
    - name: web
      image: nginx:latest
      securityContext:
        privileged: true
";

#[tokio::test]
async fn audits_files_and_fails_on_the_threshold() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("pod.yaml");
    std::fs::write(&file, PRIVILEGED)?;
    let path = file.to_str().unwrap();
    // No API is needed: the address is never dialled.
    let api = "http://127.0.0.1:9";

    let out = run(api, &["audit", "--format", "json", path]).await?;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_str(&stdout(&out))?;
    let findings = report["findings"].as_array().unwrap();
    assert!(
        findings.iter().any(|f| f["resource"]["name"] == "web"
            && f["path"].as_str().unwrap_or("").contains("privileged")),
        "no finding on the privileged container: {report}"
    );

    let out = run(api, &["audit", "--fail-on", "high", path]).await?;
    assert_eq!(
        out.status.code(),
        Some(1),
        "a critical finding must fail --fail-on high"
    );

    let out = run(
        api,
        &["audit", dir.path().join("missing.yaml").to_str().unwrap()],
    )
    .await?;
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("missing.yaml"), "{}", stderr(&out));
    Ok(())
}
