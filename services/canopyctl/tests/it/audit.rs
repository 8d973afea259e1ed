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

/// Runs canopyctl with `input` on its stdin.
async fn run_with_stdin(args: &[&str], input: &str) -> anyhow::Result<std::process::Output> {
    use tokio::io::AsyncWriteExt as _;
    let mut cmd = crate::canopyctl("http://127.0.0.1:9", args);
    cmd.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn()?;
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_owned();
    let writer = tokio::spawn(async move {
        stdin.write_all(input.as_bytes()).await?;
        stdin.shutdown().await
    });
    let out = tokio::time::timeout(crate::stack::WAIT, child.wait_with_output()).await??;
    writer.await??;
    Ok(out)
}

#[tokio::test]
async fn reads_yaml_and_json_streams_on_stdin() -> anyhow::Result<()> {
    // YAML: several documents, one of them broken; the others are still audited.
    let yaml = format!("{PRIVILEGED}---\nkind: Pod\nmetadata:\n  name: [broken\n---\n{PRIVILEGED}");
    let out = run_with_stdin(&["audit", "--format", "json", "-"], &yaml).await?;
    assert_eq!(
        out.status.code(),
        Some(2),
        "a broken document is an input error"
    );
    assert!(stderr(&out).contains("-:15:"), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_str(&stdout(&out))?;
    assert_eq!(report["summary"]["objects"], 2);
    assert_eq!(report["summary"]["errors"][0]["file"], "-");
    assert_eq!(report["summary"]["errors"][0]["line"], 15);

    // JSON: a List from `kubectl get -o json` followed by a second object.
    let list = serde_json::json!({
        "apiVersion": "v1", "kind": "List",
        "items": [
            {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a", "namespace": "ns"},
             "spec": {"hostNetwork": true, "containers": [{"name": "c", "image": "nginx:1.25"}]}},
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm", "namespace": "ns"},
             "data": {"AWS_ACCESS_KEY_ID": "AKIAIOSFODNN7EXAMPLE"}}
        ]
    });
    let input = format!(
        "{}\n{}\n",
        serde_json::to_string_pretty(&list)?,
        r#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"ns"}}"#
    );
    let out = run_with_stdin(
        &["audit", "--format", "json", "--fail-on", "high", "-"],
        &input,
    )
    .await?;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_str(&stdout(&out))?;
    assert_eq!(report["summary"]["objects"], 3);
    let checks: Vec<&str> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["check"].as_str().unwrap())
        .collect();
    assert!(checks.contains(&"HOST-NET"), "{checks:?}");
    assert!(checks.contains(&"CM-SECRET"), "{checks:?}");
    Ok(())
}

/// DESIGN §8: Canopy's own agent finds nothing above low severity in `k8s/` — the manifests as
/// written and, where kubectl is installed, every overlay as kustomize renders it.
#[tokio::test]
async fn canopys_own_manifests_have_nothing_above_low() -> anyhow::Result<()> {
    let k8s = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../k8s");
    let k8s = k8s.to_str().unwrap();
    let out = run(
        "http://127.0.0.1:9",
        &["audit", "--format", "json", "--fail-on", "medium", k8s],
    )
    .await?;
    let report: serde_json::Value = serde_json::from_str(&stdout(&out))?;
    let above_low: Vec<&serde_json::Value> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["severity"] != "low")
        .collect();
    assert!(above_low.is_empty(), "{above_low:#?}");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        report["summary"]["objects"].as_u64().unwrap() >= 20,
        "k8s/ was not read: {}",
        report["summary"]
    );

    let kubectl = std::process::Command::new("kubectl")
        .args(["version", "--client"])
        .output();
    if !kubectl.is_ok_and(|o| o.status.success()) {
        eprintln!("kubectl not installed: the rendered overlays are not audited");
        return Ok(());
    }
    for overlay in ["seed", "leaf", "trunk"] {
        let rendered = std::process::Command::new("kubectl")
            .args(["kustomize", &format!("{k8s}/overlays/{overlay}")])
            .output()?;
        assert!(
            rendered.status.success(),
            "kubectl kustomize {overlay}: {}",
            String::from_utf8_lossy(&rendered.stderr)
        );
        let out = run_with_stdin(
            &["audit", "--format", "json", "--fail-on", "medium", "-"],
            &String::from_utf8(rendered.stdout)?,
        )
        .await?;
        assert_eq!(out.status.code(), Some(0), "{overlay}: {}", stdout(&out));
        let report: serde_json::Value = serde_json::from_str(&stdout(&out))?;
        assert!(
            report["summary"]["objects"].as_u64().unwrap() >= 10,
            "{overlay}"
        );
    }
    Ok(())
}
