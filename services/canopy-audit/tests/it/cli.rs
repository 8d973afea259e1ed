//! `canopyctl audit`: argument parsing, exit codes, malformed input among good files.

use std::path::{Path, PathBuf};

use canopy_audit::cli::{AuditArgs, EXIT_ERROR, EXIT_FINDINGS, EXIT_OK, run};
use clap::Parser;
use serde_json::Value;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    audit: AuditArgs,
}

fn args(argv: &[&str]) -> AuditArgs {
    let mut full = vec!["canopyctl-audit"];
    full.extend_from_slice(argv);
    Cli::try_parse_from(full).unwrap().audit
}

fn exec(argv: &[&str]) -> (i32, String, String) {
    let a = args(argv);
    let mut out = Vec::new();
    let mut err = Vec::new();
    let code = run(&a, &mut out, &mut err);
    (
        code,
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
    )
}

const MEDIUM_ONLY: &str = r#"apiVersion: v1
kind: Ingress
metadata: {name: i, namespace: ns}
spec: {}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: c, namespace: ns}
data: {a: b}
"#;

const CRITICAL: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: prod}
spec:
  template:
    metadata: {labels: {app: web}}
    spec:
      hostPID: true
      containers:
      - name: app
        image: nginx:1.25
"#;

fn fixture(dir: &Path, name: &str, text: &str) -> String {
    let p: PathBuf = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

#[test]
fn defaults() {
    let a = args(&["x.yaml"]);
    assert_eq!(a.format, canopy_audit::report::Format::Text);
    assert_eq!(a.level, canopy_audit::LevelFilter::All);
    assert_eq!(a.fail_on, None);
    let parsed = Cli::try_parse_from(["canopyctl-audit"]);
    assert!(parsed.is_err(), "a path is required");
    let a = args(&[
        "--format",
        "sarif",
        "--level",
        "restricted",
        "--fail-on",
        "high",
        "--disable",
        "PROBES,NAKED-POD",
        "-",
    ]);
    assert_eq!(a.format, canopy_audit::report::Format::Sarif);
    assert_eq!(a.fail_on, Some(canopy_audit::Severity::High));
    assert_eq!(a.disable, ["PROBES", "NAKED-POD"]);
}

#[test]
fn exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let low = fixture(dir.path(), "low.yaml", MEDIUM_ONLY);
    let crit = fixture(dir.path(), "crit.yaml", CRITICAL);
    // No --fail-on: findings never fail.
    assert_eq!(exec(&[&crit]).0, EXIT_OK);
    // --fail-on reached (critical >= high) and not reached (low only vs medium... ingress is low).
    assert_eq!(exec(&["--fail-on", "high", &crit]).0, EXIT_FINDINGS);
    assert_eq!(exec(&["--fail-on", "critical", &crit]).0, EXIT_FINDINGS);
    assert_eq!(exec(&["--fail-on", "medium", &low]).0, EXIT_OK);
    assert_eq!(exec(&["--fail-on", "low", &low]).0, EXIT_FINDINGS);
    // Disabling the critical check lowers the outcome.
    assert_eq!(
        exec(&["--fail-on", "critical", "--disable", "HOST-PID", &crit]).0,
        EXIT_OK
    );
    // Usage errors.
    let (code, _, err) = exec(&["--disable", "NOPE", &crit]);
    assert_eq!(code, EXIT_ERROR);
    assert!(err.contains("NOPE"), "{err}");
    let (code, _, err) = exec(&[dir.path().join("missing.yaml").to_str().unwrap()]);
    assert_eq!(code, EXIT_ERROR);
    assert!(err.contains("missing.yaml"), "{err}");
}

#[test]
fn malformed_file_among_good_ones() {
    let dir = tempfile::tempdir().unwrap();
    fixture(dir.path(), "a.yaml", CRITICAL);
    fixture(
        dir.path(),
        "b.yaml",
        "kind: Pod\nmetadata:\n  name: [broken\n",
    );
    fixture(dir.path(), "c.yaml", MEDIUM_ONLY);
    let d = dir.path().display().to_string();
    let (code, out, err) = exec(&["--format", "json", "--fail-on", "critical", &d]);
    assert_eq!(code, EXIT_ERROR, "load errors win over findings");
    assert!(err.contains("b.yaml:3"), "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["summary"]["objects"], 3);
    let errors = v["summary"]["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1);
    assert!(errors[0]["file"].as_str().unwrap().ends_with("b.yaml"));
    assert_eq!(errors[0]["line"], 3);
    let checks: Vec<&str> = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["check"].as_str().unwrap())
        .collect();
    assert!(checks.contains(&"HOST-PID"));
    assert!(checks.contains(&"INGRESS-TLS"));
}

#[test]
fn sarif_locations_point_at_documents() {
    let dir = tempfile::tempdir().unwrap();
    let f = fixture(
        dir.path(),
        "two.yaml",
        &format!("{MEDIUM_ONLY}---\n{CRITICAL}"),
    );
    let (code, out, _) = exec(&["--format", "sarif", &f]);
    assert_eq!(code, EXIT_OK);
    let v: Value = serde_json::from_str(&out).unwrap();
    let results = v["runs"][0]["results"].as_array().unwrap();
    let line_of = |rule: &str| {
        results.iter().find(|r| r["ruleId"] == rule).unwrap()["locations"][0]["physicalLocation"]["region"]["startLine"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(line_of("INGRESS-TLS"), 1);
    assert_eq!(line_of("HOST-PID"), 11);
    // A cross-object finding is located at its workload's document too.
    assert_eq!(line_of("NETPOL-MISSING"), 11);
}

#[test]
fn level_flag_filters() {
    let dir = tempfile::tempdir().unwrap();
    let crit = fixture(dir.path(), "crit.yaml", CRITICAL);
    let (_, out, _) = exec(&["--format", "json", "--level", "baseline", &crit]);
    let v: Value = serde_json::from_str(&out).unwrap();
    let checks: Vec<&str> = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["check"].as_str().unwrap())
        .collect();
    assert_eq!(checks, ["HOST-PID"]);
}

#[test]
fn policy_file_and_flags() {
    let dir = tempfile::tempdir().unwrap();
    let crit = fixture(dir.path(), "crit.yaml", CRITICAL);
    let policy = fixture(
        dir.path(),
        "policy.yaml",
        "severity_overrides: {HOST-PID: low}\nregistry_allow_list: [registry.example.com]\n",
    );
    let (code, out, _) = exec(&[
        "--format",
        "json",
        "--policy",
        &policy,
        "--fail-on",
        "high",
        "--disable",
        "PRIV-ESC,RUN-AS-ROOT,CAPS-DROP-ALL,SECCOMP-UNSET",
        &crit,
    ]);
    assert_eq!(code, EXIT_OK, "{out}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let f = v["findings"].as_array().unwrap();
    assert!(
        f.iter()
            .any(|f| f["check"] == "HOST-PID" && f["severity"] == "low")
    );
    assert!(f.iter().any(|f| f["check"] == "REGISTRY-ALLOW"));
    let bad = fixture(dir.path(), "bad-policy.yaml", "nope: 1\n");
    assert_eq!(exec(&["--policy", &bad, &crit]).0, EXIT_ERROR);
}

#[test]
fn text_output_has_no_colour_when_not_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let crit = fixture(dir.path(), "crit.yaml", CRITICAL);
    let (_, out, _) = exec(&[&crit]);
    assert!(!out.contains('\x1b'));
    assert!(out.contains("Deployment prod/web"));
    let (_, out, _) = exec(&["--color", "always", &crit]);
    assert!(out.contains('\x1b'));
}
