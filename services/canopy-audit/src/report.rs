//! Rendering an audit: readable text grouped per resource, one JSON object, or SARIF 2.1.0.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::io::{self, Write};
use std::sync::Arc;

use serde::Serialize;

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

/// What [`Report::sort`] ranks objects by.
fn resource_key(r: &ResourceRef) -> (Option<&str>, &str, &str) {
    (r.namespace.as_deref(), r.kind.as_str(), r.name.as_str())
}

impl Report {
    /// Sorts the findings deterministically: namespace, kind, name, check, path, then file and
    /// line (the order of [`Finding::order`], stable).
    ///
    /// The findings of one object share its [`ResourceRef`]; objects are ranked once by
    /// (namespace, kind, name) and the findings then sorted by rank, so that the sort compares
    /// integers instead of the three strings of every pair.
    pub fn sort(&mut self) {
        let mut ranks: HashMap<*const ResourceRef, u32> = HashMap::new();
        let mut resources: Vec<&ResourceRef> = Vec::new();
        for lf in &self.findings {
            if let Entry::Vacant(e) = ranks.entry(Arc::as_ptr(&lf.finding.resource)) {
                e.insert(0);
                resources.push(&lf.finding.resource);
            }
        }
        resources.sort_by(|a, b| resource_key(a).cmp(&resource_key(b)));
        // Equal (namespace, kind, name) get equal ranks, whichever object they came from.
        let mut rank = 0u32;
        let mut previous: Option<&ResourceRef> = None;
        for r in resources {
            if previous.is_some_and(|p| resource_key(p) != resource_key(r)) {
                rank += 1;
            }
            ranks.insert(r, rank);
            previous = Some(r);
        }
        let mut keyed: Vec<(u32, LocatedFinding)> = self
            .findings
            .drain(..)
            .map(|lf| {
                let rank = ranks
                    .get(&Arc::as_ptr(&lf.finding.resource))
                    .copied()
                    .unwrap_or(u32::MAX);
                (rank, lf)
            })
            .collect();
        keyed.sort_by(|(ra, a), (rb, b)| {
            let (fa, fb) = (&a.finding, &b.finding);
            ra.cmp(rb)
                .then_with(|| fa.check.cmp(fb.check))
                .then_with(|| fa.path.cmp(&fb.path))
                .then_with(|| Finding::order(fa, fb))
                .then_with(|| a.file.cmp(&b.file))
                .then_with(|| a.line.cmp(&b.line))
        });
        self.findings.extend(keyed.into_iter().map(|(_, lf)| lf));
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

/// Writes the report in `format`. `color` only affects [`Format::Text`]. JSON and SARIF list
/// the findings in the report's order; rule severities come from the findings (a check without
/// findings shows its catalogue severity).
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
struct BySeverity {
    critical: u64,
    high: u64,
    medium: u64,
    low: u64,
}

#[derive(Serialize)]
struct Summary<'a> {
    objects: u64,
    findings: u64,
    by_severity: BySeverity,
    errors: &'a [LoadError],
}

/// Exactly one JSON object:
/// `{"findings":[{"check","severity","standards","resource":{"apiVersion","kind","namespace","name"},"path","message","remediation"}],"summary":{"objects","findings","by_severity":{…},"errors":[{"file","line","message"}]}}`.
pub fn write_json(report: &Report, w: &mut impl Write) -> io::Result<()> {
    let mut s = StreamWriter::begin(Format::Json, w, &severities_of(report))?;
    for lf in &report.findings {
        s.finding(&lf.finding, lf.file.as_deref(), lf.line)?;
    }
    s.finish(report.objects, &report.errors)
}

/// The severity of each check as the findings carry it (the catalogue's when none does).
fn severities_of(report: &Report) -> Vec<Severity> {
    let mut sev: Vec<Severity> = CATALOGUE.iter().map(|c| c.severity).collect();
    let mut seen = vec![false; sev.len()];
    for lf in &report.findings {
        if let Some(i) = lf.finding.check_id().map(|c| c as usize)
            && let (Some(slot), Some(done)) = (sev.get_mut(i), seen.get_mut(i))
            && !*done
        {
            *slot = lf.finding.severity;
            *done = true;
        }
    }
    sev
}

// === streaming ===

/// Writes a JSON or SARIF report finding by finding, as the audit produces them, so that an
/// audit of any size holds no finding in memory: [`StreamWriter::begin`], then
/// [`StreamWriter::finding`] for each, then [`StreamWriter::finish`] with the counts and errors.
///
/// The fields that repeat on every finding (the check's standards and remediation, the object's
/// reference) are serialised once and copied afterwards.
pub struct StreamWriter<'w, W: Write> {
    w: &'w mut W,
    format: Format,
    findings: u64,
    by_severity: [u64; 4],
    max_severity: Option<Severity>,
    /// JSON: the last object and its serialised `"resource":{…}`. The `Arc` is held so that
    /// pointer equality means the same object: a freed reference's address can be reused by the
    /// next object's.
    last_resource: Option<(Arc<ResourceRef>, String)>,
    /// Per check: `"check":…,"severity":…,"standards":[…]` for the last standards/severity seen.
    check_head: Vec<Option<(usize, Severity, String)>>,
    /// Per check: the serialised `"remediation":"…"`.
    remediation: Vec<String>,
    /// SARIF: the message being written (reused).
    scratch: String,
}

impl<'w, W: Write> StreamWriter<'w, W> {
    /// Writes everything that precedes the findings. `severity` is the effective severity of
    /// every check, in [`CATALOGUE`] order (SARIF rules show it).
    pub fn begin(format: Format, w: &'w mut W, severity: &[Severity]) -> io::Result<Self> {
        match format {
            Format::Json => w.write_all(b"{\"findings\":[")?,
            Format::Sarif => {
                let rules: Vec<Rule> = CATALOGUE
                    .iter()
                    .enumerate()
                    .map(|(i, def)| rule(def, severity.get(i).copied().unwrap_or(def.severity)))
                    .collect();
                let tool = Tool {
                    driver: Driver {
                        name: "canopy",
                        version: env!("CARGO_PKG_VERSION"),
                        information_uri: "https://kubernetes.io/docs/concepts/security/pod-security-standards/",
                        rules,
                    },
                };
                write!(
                    w,
                    "{{\"$schema\":\"{SARIF_SCHEMA}\",\"version\":\"2.1.0\",\"runs\":[{{\"tool\":"
                )?;
                serde_json::to_writer(&mut *w, &tool).map_err(io::Error::other)?;
                w.write_all(b",\"results\":[")?;
            }
            Format::Text => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "text reports are not streamed",
                ));
            }
        }
        let remediation = CATALOGUE
            .iter()
            .map(|c| json_field("remediation", c.remediation))
            .collect();
        Ok(StreamWriter {
            w,
            format,
            findings: 0,
            by_severity: [0; 4],
            max_severity: None,
            last_resource: None,
            check_head: vec![None; CATALOGUE.len()],
            remediation,
            scratch: String::new(),
        })
    }

    /// Writes one finding, located at `line` of `file` (the document's first line).
    pub fn finding(
        &mut self,
        f: &Finding,
        file: Option<&str>,
        line: Option<usize>,
    ) -> io::Result<()> {
        if self.findings > 0 {
            self.w.write_all(b",")?;
        }
        self.findings += 1;
        let slot = match f.severity {
            Severity::Critical => 0,
            Severity::High => 1,
            Severity::Medium => 2,
            Severity::Low => 3,
        };
        if let Some(c) = self.by_severity.get_mut(slot) {
            *c += 1;
        }
        self.max_severity = self.max_severity.max(Some(f.severity));
        match self.format {
            Format::Sarif => self.sarif_result(f, file, line),
            _ => self.json_finding(f),
        }
    }

    fn json_finding(&mut self, f: &Finding) -> io::Result<()> {
        let index = f.check_id().map(|c| c as usize);
        let head = index.and_then(|i| self.check_head.get_mut(i));
        let standards_key = f.standards.as_ptr() as usize;
        match head {
            Some(Some((key, sev, text))) if *key == standards_key && *sev == f.severity => {
                self.w.write_all(text.as_bytes())?;
            }
            Some(slot) => {
                let text = json_head(f)?;
                self.w.write_all(text.as_bytes())?;
                *slot = Some((standards_key, f.severity, text));
            }
            None => self.w.write_all(json_head(f)?.as_bytes())?,
        }
        match &self.last_resource {
            Some((last, text)) if Arc::ptr_eq(last, &f.resource) => {
                self.w.write_all(text.as_bytes())?;
            }
            _ => {
                let mut text = String::from(",\"resource\":");
                text.push_str(&serde_json::to_string(&*f.resource).map_err(io::Error::other)?);
                self.w.write_all(text.as_bytes())?;
                self.last_resource = Some((f.resource.clone(), text));
            }
        }
        self.w.write_all(b",\"path\":")?;
        serde_json::to_writer(&mut *self.w, &f.path).map_err(io::Error::other)?;
        self.w.write_all(b",\"message\":")?;
        serde_json::to_writer(&mut *self.w, &f.message).map_err(io::Error::other)?;
        match index.and_then(|i| self.remediation.get(i)) {
            Some(r) => self.w.write_all(r.as_bytes())?,
            None => self
                .w
                .write_all(json_field("remediation", f.remediation).as_bytes())?,
        }
        self.w.write_all(b"}")
    }

    fn sarif_result(
        &mut self,
        f: &Finding,
        file: Option<&str>,
        line: Option<usize>,
    ) -> io::Result<()> {
        let rule_index = f.check_id().map_or(0, |c| c as usize);
        let physical = match file {
            Some(file) if file != "-" => Some(PhysicalLocation {
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
        self.scratch.clear();
        {
            use std::fmt::Write as _;
            let _ = write!(self.scratch, "{r}: {}", f.message);
        }
        let result = SarifResult {
            rule_id: f.check,
            rule_index,
            level: f.severity.sarif_level(),
            message: Text {
                text: &self.scratch,
            },
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
        };
        serde_json::to_writer(&mut *self.w, &result).map_err(io::Error::other)
    }

    /// The number of findings written so far.
    pub fn findings(&self) -> u64 {
        self.findings
    }

    /// The most severe finding written so far.
    pub fn max_severity(&self) -> Option<Severity> {
        self.max_severity
    }

    /// Writes what follows the findings (the JSON summary; SARIF's invocation with one
    /// notification per input error) and a final newline.
    pub fn finish(self, objects: u64, errors: &[LoadError]) -> io::Result<()> {
        match self.format {
            Format::Sarif => {
                let invocations = [Invocation {
                    execution_successful: errors.is_empty(),
                    tool_execution_notifications: errors.iter().map(notification).collect(),
                }];
                self.w.write_all(b"],\"invocations\":")?;
                serde_json::to_writer(&mut *self.w, &invocations).map_err(io::Error::other)?;
                self.w.write_all(b"}]}\n")
            }
            _ => {
                let [critical, high, medium, low] = self.by_severity;
                let summary = Summary {
                    objects,
                    findings: self.findings,
                    by_severity: BySeverity {
                        critical,
                        high,
                        medium,
                        low,
                    },
                    errors,
                };
                self.w.write_all(b"],\"summary\":")?;
                serde_json::to_writer(&mut *self.w, &summary).map_err(io::Error::other)?;
                self.w.write_all(b"}\n")
            }
        }
    }
}

/// `"name":<value as a JSON string>` with a leading comma.
fn json_field(name: &str, value: &str) -> String {
    let value = serde_json::to_string(value).unwrap_or_else(|_| "\"\"".to_owned());
    format!(",\"{name}\":{value}")
}

/// `{"check":…,"severity":…,"standards":[…]` of a finding.
fn json_head(f: &Finding) -> io::Result<String> {
    #[derive(Serialize)]
    struct Head<'a> {
        check: &'a str,
        severity: Severity,
        standards: &'a [&'a str],
    }
    let mut text = serde_json::to_string(&Head {
        check: f.check,
        severity: f.severity,
        standards: f.standards,
    })
    .map_err(io::Error::other)?;
    // Leave the object open for the fields that follow.
    text.pop();
    Ok(text)
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

/// SARIF 2.1.0: one run of tool `canopy` with one rule per check (tags carry the upstream
/// standards, `security-severity` the CVSS-like score), one result per finding located at the
/// manifest file and the line where the object's document starts; input errors are
/// notifications of the run's invocation.
pub fn write_sarif(report: &Report, w: &mut impl Write) -> io::Result<()> {
    let mut s = StreamWriter::begin(Format::Sarif, w, &severities_of(report))?;
    for lf in &report.findings {
        s.finding(&lf.finding, lf.file.as_deref(), lf.line)?;
    }
    s.finish(report.objects, &report.errors)
}

fn notification(e: &LoadError) -> Notification {
    Notification {
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
    }
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
