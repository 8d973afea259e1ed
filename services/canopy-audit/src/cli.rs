//! The `canopyctl audit` command: arguments, the run loop over manifests, and the exit code.
//!
//! Inputs are read one document at a time ([`crate::manifest`]). `json` and `sarif` reports are
//! written as the audit goes ([`crate::report::StreamWriter`]): per-object findings in input
//! order, then the cross-object ones, so neither inputs nor findings accumulate in memory.
//! `text` is for people: it is sorted by namespace, kind and name and grouped per object.
//!
//! Exit codes:
//! - `0` ([`EXIT_OK`]): every input was read; no finding reached `--fail-on` (or no `--fail-on`);
//! - `1` ([`EXIT_FINDINGS`]): a finding's severity is at or above `--fail-on`;
//! - `2` ([`EXIT_ERROR`]): an input could not be read or parsed, or a usage error (unknown check
//!   id, bad policy file, unwritable output). It wins over `1`: an incomplete audit must not
//!   pass or fail on partial results alone. The report is still written in full.

use std::io::{BufWriter, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;

use crate::catalogue::Severity;
use crate::engine::Auditor;
use crate::manifest;
use crate::policy::{LevelFilter, Policy};
use crate::report::{self, Format, LoadError, LocatedFinding, Report, StreamWriter};

/// No finding reached `--fail-on` and every input was read.
pub const EXIT_OK: i32 = 0;
/// A finding reached `--fail-on`.
pub const EXIT_FINDINGS: i32 = 1;
/// Unreadable or malformed input, or a usage error.
pub const EXIT_ERROR: i32 = 2;

/// When to colour text output.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ColorChoice {
    /// When stdout is a terminal and `NO_COLOR` is not set.
    #[default]
    Auto,
    Always,
    Never,
}

/// `canopyctl audit [OPTIONS] PATH...`: audit Kubernetes manifests (files, directories, `-` for
/// stdin). Exits 0, 1 when a finding reaches `--fail-on`, 2 on unreadable input or usage errors.
#[derive(Debug, Clone, clap::Args)]
pub struct AuditArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,

    /// Pod Security Standards level to report: `baseline`, `restricted` (baseline + restricted)
    /// or `all` (also non-PSS best practices).
    #[arg(long, value_enum, default_value_t = LevelFilter::All)]
    pub level: LevelFilter,

    /// Exit 1 when a finding is at least this severe (default: findings never fail the run).
    #[arg(long, value_enum, value_name = "SEVERITY")]
    pub fail_on: Option<Severity>,

    /// Policy file (YAML or JSON, the fields of `canopy_audit::Policy`); the flags below add to it.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,

    /// Allowed image registry or repository prefix (repeatable); enables REGISTRY-ALLOW.
    #[arg(long = "allow-registry", value_name = "REGISTRY")]
    pub allow_registry: Vec<String>,

    /// Check ids to switch off (comma-separated or repeated).
    #[arg(long, value_name = "CHECK-ID", value_delimiter = ',')]
    pub disable: Vec<String>,

    /// Honour `canopy.dev/ignore: CHECK-ID,...` annotations on objects.
    #[arg(long)]
    pub honour_ignore_annotations: bool,

    /// Colour text output.
    #[arg(long, value_enum, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,

    /// Manifest files or directories (`.yaml`, `.yml`, `.json`, recursively); `-` reads stdin.
    #[arg(value_name = "PATH", required = true)]
    pub paths: Vec<PathBuf>,
}

impl AuditArgs {
    /// The policy the flags (and `--policy` file) describe.
    pub fn to_policy(&self) -> Result<Policy, String> {
        let mut policy = match &self.policy {
            None => Policy::default(),
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("cannot read policy {}: {e}", path.display()))?;
                serde_yaml::from_str::<Policy>(&text)
                    .map_err(|e| format!("invalid policy {}: {e}", path.display()))?
            }
        };
        policy.level = self.level;
        policy
            .registry_allow_list
            .extend(self.allow_registry.iter().cloned());
        policy.disabled_checks.extend(
            self.disable
                .iter()
                .map(|d| d.trim().to_owned())
                .filter(|d| !d.is_empty()),
        );
        policy.honour_ignore_annotations |= self.honour_ignore_annotations;
        policy.validate().map_err(|e| e.to_string())?;
        Ok(policy)
    }
}

/// Where an object came from.
type Origin = (Arc<str>, usize);

/// Runs `canopyctl audit`; returns the exit code.
pub fn run(args: &AuditArgs, stdout: &mut impl Write, stderr: &mut impl Write) -> i32 {
    if args.paths.is_empty() {
        let _ = writeln!(stderr, "canopyctl audit: no input paths");
        return EXIT_ERROR;
    }
    let policy = match args.to_policy() {
        Ok(p) => p,
        Err(e) => {
            let _ = writeln!(stderr, "canopyctl audit: {e}");
            return EXIT_ERROR;
        }
    };
    let mut auditor: Auditor<Origin> = match Auditor::with_policy(&policy) {
        Ok(a) => a,
        Err(e) => {
            let _ = writeln!(stderr, "canopyctl audit: {e}");
            return EXIT_ERROR;
        }
    };
    if matches!(args.format, Format::Json | Format::Sarif) {
        return run_streamed(args, auditor, stdout, stderr);
    }
    let mut report = Report::default();
    for doc in manifest::load_paths(&args.paths) {
        match doc.value {
            Ok(value) => {
                let findings = auditor.add_tagged(&value, (doc.source.clone(), doc.line));
                report
                    .findings
                    .extend(findings.into_iter().map(|finding| LocatedFinding {
                        finding,
                        file: Some(doc.source.clone()),
                        line: Some(doc.line),
                    }));
            }
            Err(e) => {
                let _ = writeln!(stderr, "canopyctl audit: {e}");
                report.errors.push(LoadError::from(&e));
            }
        }
    }
    report.objects = auditor.objects();
    report.findings.extend(
        auditor
            .finish_tagged()
            .into_iter()
            .map(|(finding, (file, line))| LocatedFinding {
                finding,
                file: Some(file),
                line: Some(line),
            }),
    );
    report.sort();

    let color = match args.color {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => {
            std::io::stdout().is_terminal()
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
                && std::env::var("TERM").map_or(true, |t| t != "dumb")
        }
    };
    let mut out = BufWriter::with_capacity(1 << 16, stdout);
    let written = report::write(&report, args.format, &mut out, color).and_then(|()| out.flush());
    if let Err(e) = written {
        drop(out);
        let _ = writeln!(stderr, "canopyctl audit: cannot write the report: {e}");
        return EXIT_ERROR;
    }
    exit_code(&report, args.fail_on)
}

/// JSON and SARIF: each finding is written as soon as the engine reports it (per-object
/// findings in input order, then the cross-object ones), so memory does not grow with the
/// number of findings either.
fn run_streamed(
    args: &AuditArgs,
    mut auditor: Auditor<Origin>,
    stdout: &mut impl Write,
    stderr: &mut impl Write,
) -> i32 {
    let mut out = BufWriter::with_capacity(1 << 16, stdout);
    let mut errors: Vec<LoadError> = Vec::new();
    let severities = auditor.severities();
    let written = (|| -> std::io::Result<Option<Severity>> {
        let mut w = StreamWriter::begin(args.format, &mut out, &severities)?;
        for doc in manifest::load_paths(&args.paths) {
            match doc.value {
                Ok(value) => {
                    for f in auditor.add_tagged(&value, (doc.source.clone(), doc.line)) {
                        w.finding(&f, Some(&doc.source), Some(doc.line))?;
                    }
                }
                Err(e) => {
                    let _ = writeln!(stderr, "canopyctl audit: {e}");
                    errors.push(LoadError::from(&e));
                }
            }
        }
        let objects = auditor.objects();
        let mut failed = Ok(());
        auditor.finish_each(|f, (file, line)| {
            if failed.is_ok() {
                failed = w.finding(&f, Some(&file), Some(line));
            }
        });
        failed?;
        let worst = w.max_severity();
        w.finish(objects, &errors)?;
        Ok(worst)
    })()
    .and_then(|worst| out.flush().map(|()| worst));
    match written {
        Err(e) => {
            drop(out);
            let _ = writeln!(stderr, "canopyctl audit: cannot write the report: {e}");
            EXIT_ERROR
        }
        Ok(_) if !errors.is_empty() => EXIT_ERROR,
        Ok(worst) => match (args.fail_on, worst) {
            (Some(threshold), Some(worst)) if worst >= threshold => EXIT_FINDINGS,
            _ => EXIT_OK,
        },
    }
}

/// The exit code of a finished audit (see the module documentation).
pub fn exit_code(report: &Report, fail_on: Option<Severity>) -> i32 {
    if !report.errors.is_empty() {
        return EXIT_ERROR;
    }
    match (fail_on, report.max_severity()) {
        (Some(threshold), Some(worst)) if worst >= threshold => EXIT_FINDINGS,
        _ => EXIT_OK,
    }
}
