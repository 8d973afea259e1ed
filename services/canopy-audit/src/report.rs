//! Rendering an audit: readable text grouped per resource, one JSON object, or SARIF 2.1.0.

use std::io::{self, Write};
use std::sync::Arc;

use serde::Serialize;
use serde::ser::{SerializeSeq, Serializer};

use crate::catalogue::{CATALOGUE, CheckDef, Severity};
use crate::finding::{Finding, ResourceRef};

/// Output formats.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Readable text grouped per resource, with a summary line.
    #[default]
    Text,
    /// One JSON object: `{"findings":[…],"summary":{…}}`.
    Json,
    /// SARIF 2.1.0 for code-scanning UIs.
    Sarif,
}

/// A finding and the manifest document it came from.
#[derive(Debug, Clone)]
pub struct LocatedFinding {
    pub finding: Finding,
    /// The source file (`-` for stdin); `None` for objects that did not come from a file.
    pub file: Option<Arc<str>>,
    /// The 1-based line where the object's document starts.
    pub line: Option<usize>,
}

/// An input that could not be read or parsed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LoadError {
    pub file: String,
    pub line: Option<usize>,
    pub message: String,
}

impl From<&crate::manifest::ManifestError> for LoadError {
    fn from(e: &crate::manifest::ManifestError) -> Self {
        LoadError {
            file: e.file().to_owned(),
            line: e.line(),
            message: e.message(),
        }
    }
}

/// Everything an audit run produced.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub findings: Vec<LocatedFinding>,
    /// Number of Kubernetes objects audited.
    pub objects: u64,
    pub errors: Vec<LoadError>,
}

impl Report {
    /// Sorts the findings deterministically: namespace, kind, name, check, path, then file and
    /// line (stable).
    pub fn sort(&mut self) {
        self.findings.sort_by(|a, b| {
            Finding::order(&a.finding, &b.finding)
                .then_with(|| a.file.cmp(&b.file))
                .then_with(|| a.line.cmp(&b.line))
        });
    }

    /// Finding counts as `[critical, high, medium, low]`.
    pub fn by_severity(&self) -> [usize; 4] {
        let mut counts = [0usize; 4];
        for f in &self.findings {
            let i = match f.finding.severity {
                Severity::Critical => 0,
                Severity::High => 1,
                Severity::Medium => 2,
                Severity::Low => 3,
            };
            if let Some(c) = counts.get_mut(i) {
                *c += 1;
            }
        }
        counts
    }

    /// The most severe finding's severity.
    pub fn max_severity(&self) -> Option<Severity> {
        self.findings.iter().map(|f| f.finding.severity).max()
    }
}

/// Writes the report in `format`. `color` only affects [`Format::Text`].
pub fn write(report: &Report, format: Format, w: &mut impl Write, color: bool) -> io::Result<()> {
    match format {
        Format::Text => write_text(report, w, color),
        Format::Json => write_json(report, w),
        Format::Sarif => write_sarif(report, w),
    }
}

// === text ===

const RESET: &str = "\x1b[0m";
const DIM: &str = "\x1b[2m";
const BOLD: &str = "\x1b[1m";

fn severity_color(s: Severity) -> &'static str {
    match s {
        Severity::Critical => "\x1b[1;35m",
        Severity::High => "\x1b[1;31m",
        Severity::Medium => "\x1b[33m",
        Severity::Low => "\x1b[36m",
    }
}

/// Readable text: one block per resource, then a summary line.
pub fn write_text(report: &Report, w: &mut impl Write, color: bool) -> io::Result<()> {
    let paint = |code: &'static str| if color { code } else { "" };
    let mut previous: Option<(&ResourceRef, &Option<Arc<str>>)> = None;
    for lf in &report.findings {
        let f = &lf.finding;
        let key = (&*f.resource, &lf.file);
        if previous != Some(key) {
            if previous.is_some() {
                writeln!(w)?;
            }
            let r = &f.resource;
            let location = match (&lf.file, lf.line) {
                (Some(file), Some(line)) => format!("  {file}:{line}"),
                (Some(file), None) => format!("  {file}"),
                _ => String::new(),
            };
            writeln!(
                w,
                "{}{r}{} ({}){}{location}{}",
                paint(BOLD),
                paint(RESET),
                r.api_version,
                paint(DIM),
                paint(RESET)
            )?;
            previous = Some(key);
        }
        let sev = f.severity.as_str().to_ascii_uppercase();
        writeln!(
            w,
            "  {}{sev:<8}{} {:<18} {}",
            paint(severity_color(f.severity)),
            paint(RESET),
            f.check,
            f.message
        )?;
        writeln!(
            w,
            "  {:<8} {:<18} {}at {}{}",
            "",
            "",
            paint(DIM),
            f.path,
            paint(RESET)
        )?;
        writeln!(
            w,
            "  {:<8} {:<18} {}fix: {}{}",
            "",
            "",
            paint(DIM),
            f.remediation,
            paint(RESET)
        )?;
    }
    if !report.findings.is_empty() {
        writeln!(w)?;
    }
    let [c, h, m, l] = report.by_severity();
    let errors = report.errors.len();
    writeln!(
        w,
        "{} object{} audited, {} finding{} ({c} critical, {h} high, {m} medium, {l} low), {errors} error{}",
        report.objects,
        plural(report.objects as usize),
        report.findings.len(),
        plural(report.findings.len()),
        plural(errors)
    )
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

// === json ===

#[derive(Serialize)]
struct JsonFinding<'a> {
    check: &'a str,
    severity: Severity,
    standards: &'a [&'a str],
    resource: &'a ResourceRef,
    path: &'a str,
    message: &'a str,
    remediation: &'a str,
}

struct JsonFindings<'a>(&'a [LocatedFinding]);

impl Serialize for JsonFindings<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for lf in self.0 {
            let f = &lf.finding;
            seq.serialize_element(&JsonFinding {
                check: f.check,
                severity: f.severity,
                standards: f.standards,
                resource: &f.resource,
                path: &f.path,
                message: &f.message,
                remediation: f.remediation,
            })?;
        }
        seq.end()
    }
}

#[derive(Serialize)]
struct BySeverity {
    critical: usize,
    high: usize,
    medium: usize,
    low: usize,
}

#[derive(Serialize)]
struct Summary<'a> {
    objects: u64,
    findings: usize,
    by_severity: BySeverity,
    errors: &'a [LoadError],
}

#[derive(Serialize)]
struct JsonReport<'a> {
    findings: JsonFindings<'a>,
    summary: Summary<'a>,
}

/// Exactly one JSON object:
/// `{"findings":[{"check","severity","standards","resource":{"apiVersion","kind","namespace","name"},"path","message","remediation"}],"summary":{"objects","findings","by_severity":{…},"errors":[{"file","line","message"}]}}`.
pub fn write_json(report: &Report, w: &mut impl Write) -> io::Result<()> {
    let [critical, high, medium, low] = report.by_severity();
    let doc = JsonReport {
        findings: JsonFindings(&report.findings),
        summary: Summary {
            objects: report.objects,
            findings: report.findings.len(),
            by_severity: BySeverity {
                critical,
                high,
                medium,
                low,
            },
            errors: &report.errors,
        },
    };
    serde_json::to_writer(&mut *w, &doc).map_err(io::Error::other)?;
    writeln!(w)
}

// === sarif ===

/// The SARIF 2.1.0 schema location.
pub const SARIF_SCHEMA: &str = "https://json.schemastore.org/sarif-2.1.0.json";

#[derive(Serialize)]
struct Text<'a> {
    text: &'a str,
}

#[derive(Serialize)]
struct Help {
    text: String,
    markdown: String,
}

#[derive(Serialize)]
struct RuleConfig {
    level: &'static str,
}

#[derive(Serialize)]
struct RuleProperties {
    tags: Vec<&'static str>,
    #[serde(rename = "security-severity")]
    security_severity: String,
    precision: &'static str,
    #[serde(rename = "problem.severity")]
    problem_severity: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Rule {
    id: &'static str,
    name: String,
    short_description: Text<'static>,
    full_description: Text<'static>,
    help: Help,
    default_configuration: RuleConfig,
    properties: RuleProperties,
}

fn rule(def: &'static CheckDef, severity: Severity) -> Rule {
    let refs = def.standards.join(", ");
    Rule {
        id: def.id,
        name: def
            .id
            .split('-')
            .map(|w| {
                let mut c = w.chars();
                match c.next() {
                    Some(first) => first.to_string() + &c.as_str().to_ascii_lowercase(),
                    None => String::new(),
                }
            })
            .collect(),
        short_description: Text { text: def.title },
        full_description: Text { text: def.tests },
        help: Help {
            text: format!(
                "{}\n\nTests: {}\nReferences: {refs}",
                def.remediation, def.tests
            ),
            markdown: format!(
                "{}\n\n**Tests:** `{}`\n\n**References:** {}",
                def.remediation,
                def.tests,
                def.standards
                    .iter()
                    .map(|s| format!("`{s}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        },
        default_configuration: RuleConfig {
            level: severity.sarif_level(),
        },
        properties: RuleProperties {
            tags: std::iter::once("security")
                .chain(def.standards.iter().copied())
                .collect(),
            security_severity: format!("{:.1}", severity.security_severity()),
            precision: "high",
            problem_severity: match severity {
                Severity::Critical | Severity::High => "error",
                Severity::Medium => "warning",
                Severity::Low => "recommendation",
            },
        },
    }
}

#[derive(Serialize)]
struct ArtifactLocation {
    uri: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Region {
    start_line: usize,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PhysicalLocation {
    artifact_location: ArtifactLocation,
    #[serde(skip_serializing_if = "Option::is_none")]
    region: Option<Region>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct LogicalLocation {
    name: String,
    fully_qualified_name: String,
    kind: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Location {
    #[serde(skip_serializing_if = "Option::is_none")]
    physical_location: Option<PhysicalLocation>,
    logical_locations: Vec<LogicalLocation>,
}

#[derive(Serialize)]
struct ResultProperties<'a> {
    severity: Severity,
    standards: &'a [&'a str],
    path: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    container: Option<&'a str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SarifResult<'a> {
    rule_id: &'a str,
    rule_index: usize,
    level: &'static str,
    message: Text<'a>,
    locations: Vec<Location>,
    partial_fingerprints: Fingerprints,
    properties: ResultProperties<'a>,
}

#[derive(Serialize)]
struct Fingerprints {
    #[serde(rename = "canopyFinding/v1")]
    finding: String,
}

struct SarifResults<'a> {
    findings: &'a [LocatedFinding],
    messages: Vec<String>,
}

impl Serialize for SarifResults<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.findings.len()))?;
        for (lf, message) in self.findings.iter().zip(&self.messages) {
            let f = &lf.finding;
            let rule_index = CATALOGUE.iter().position(|c| c.id == f.check).unwrap_or(0);
            let physical = match (&lf.file, lf.line) {
                (Some(file), line) if &**file != "-" => Some(PhysicalLocation {
                    artifact_location: ArtifactLocation {
                        uri: file_uri(file),
                    },
                    region: line
                        .filter(|&l| l > 0)
                        .map(|start_line| Region { start_line }),
                }),
                _ => None,
            };
            let r = &f.resource;
            let fqn = match &r.namespace {
                Some(ns) => format!("{ns}/{}/{}", r.kind, r.name),
                None => format!("{}/{}", r.kind, r.name),
            };
            seq.serialize_element(&SarifResult {
                rule_id: f.check,
                rule_index,
                level: f.severity.sarif_level(),
                message: Text { text: message },
                locations: vec![Location {
                    physical_location: physical,
                    logical_locations: vec![LogicalLocation {
                        name: r.name.clone(),
                        fully_qualified_name: fqn.clone(),
                        kind: "object",
                    }],
                }],
                partial_fingerprints: Fingerprints {
                    finding: fingerprint(&[f.check, &fqn, &f.path]),
                },
                properties: ResultProperties {
                    severity: f.severity,
                    standards: f.standards,
                    path: &f.path,
                    container: f.container.as_deref(),
                },
            })?;
        }
        seq.end()
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Invocation {
    execution_successful: bool,
    tool_execution_notifications: Vec<Notification>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Notification {
    level: &'static str,
    message: OwnedText,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    locations: Vec<Location>,
}

#[derive(Serialize)]
struct OwnedText {
    text: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Driver {
    name: &'static str,
    version: &'static str,
    information_uri: &'static str,
    rules: Vec<Rule>,
}

#[derive(Serialize)]
struct Tool {
    driver: Driver,
}

#[derive(Serialize)]
struct Run<'a> {
    tool: Tool,
    invocations: Vec<Invocation>,
    results: SarifResults<'a>,
}

#[derive(Serialize)]
struct Sarif<'a> {
    #[serde(rename = "$schema")]
    schema: &'static str,
    version: &'static str,
    runs: Vec<Run<'a>>,
}

/// SARIF 2.1.0: one run of tool `canopy` with one rule per check (tags carry the upstream
/// standards, `security-severity` the CVSS-like score), one result per finding located at the
/// manifest file and the line where the object's document starts.
pub fn write_sarif(report: &Report, w: &mut impl Write) -> io::Result<()> {
    // A rule's severity is the effective one (after policy overrides) when it has findings.
    let rules = CATALOGUE
        .iter()
        .map(|def| {
            let severity = report
                .findings
                .iter()
                .find(|f| f.finding.check == def.id)
                .map_or(def.severity, |f| f.finding.severity);
            rule(def, severity)
        })
        .collect();
    let messages = report
        .findings
        .iter()
        .map(|lf| format!("{}: {}", lf.finding.resource, lf.finding.message))
        .collect();
    let notifications = report
        .errors
        .iter()
        .map(|e| Notification {
            level: "error",
            message: OwnedText {
                text: match e.line {
                    Some(line) => format!("{}:{line}: {}", e.file, e.message),
                    None => format!("{}: {}", e.file, e.message),
                },
            },
            locations: if e.file == "-" {
                Vec::new()
            } else {
                vec![Location {
                    physical_location: Some(PhysicalLocation {
                        artifact_location: ArtifactLocation {
                            uri: file_uri(&e.file),
                        },
                        region: e
                            .line
                            .filter(|&l| l > 0)
                            .map(|start_line| Region { start_line }),
                    }),
                    logical_locations: Vec::new(),
                }]
            },
        })
        .collect();
    let doc = Sarif {
        schema: SARIF_SCHEMA,
        version: "2.1.0",
        runs: vec![Run {
            tool: Tool {
                driver: Driver {
                    name: "canopy",
                    version: env!("CARGO_PKG_VERSION"),
                    information_uri: "https://kubernetes.io/docs/concepts/security/pod-security-standards/",
                    rules,
                },
            },
            invocations: vec![Invocation {
                execution_successful: report.errors.is_empty(),
                tool_execution_notifications: notifications,
            }],
            results: SarifResults {
                findings: &report.findings,
                messages,
            },
        }],
    };
    serde_json::to_writer(&mut *w, &doc).map_err(io::Error::other)?;
    writeln!(w)
}

/// A file path as a SARIF `artifactLocation.uri`: relative paths stay relative URI references
/// (what code-scanning UIs resolve against the repository root), absolute ones become
/// `file://` URIs; reserved and non-ASCII bytes are percent-encoded.
pub fn file_uri(path: &str) -> String {
    let path = path.replace('\\', "/");
    let path = path.strip_prefix("./").unwrap_or(&path);
    let mut out = String::with_capacity(path.len() + 8);
    if path.starts_with('/') {
        out.push_str("file://");
    }
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/:@!$&'()*+,;=".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A stable 64-bit FNV-1a fingerprint, hex.
fn fingerprint(parts: &[&str]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.bytes().chain(std::iter::once(0)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}
