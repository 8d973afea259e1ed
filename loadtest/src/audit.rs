//! `loadtest audit`: `canopyctl audit` throughput and peak memory on generated objects, next to
//! checkov on the same input, measured in the same run.
//!
//! Every measured process runs pinned to one CPU (`sched_setaffinity`, inherited from a small
//! `loadtest measure` wrapper that spawns it) and its peak resident memory is the wrapper's
//! `getrusage(RUSAGE_CHILDREN).ru_maxrss`: the wrapper has no other child. The same objects
//! are audited as a few large files, as many small files and as one stream on stdin, in JSON and
//! in YAML: throughput is objects/s, and peak memory must not grow with the number of files.

use std::fs::File;
use std::io::{BufWriter, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};

use crate::Output;
use crate::stats::rate;

/// The throughput target of the issue: objects/s on one core.
pub const TARGET_OBJECTS_PER_S: f64 = 100_000.0;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Generated objects audited in each layout.
    #[arg(long, default_value_t = 100_000)]
    pub objects: usize,
    /// Objects of the side-by-side run with checkov (the first ones of the same generated set).
    #[arg(long, default_value_t = 1_000)]
    pub checkov_objects: usize,
    /// Runs of each measurement; the median is reported.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub rounds: u32,
    /// The canopyctl binary (default: the one next to this loadtest binary).
    #[arg(long)]
    pub canopyctl: Option<PathBuf>,
    /// The checkov executable (`scripts/setup --bench` installs a pinned one there).
    #[arg(long, default_value = ".tools/checkov-venv/bin/checkov")]
    pub checkov: PathBuf,
    /// The CPU every measured process is pinned to.
    #[arg(long, default_value_t = 0)]
    pub cpu: usize,
    /// Input formats to measure.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "json,yaml")]
    pub formats: Vec<Format>,
    /// Write the generated inputs under this directory and keep them (default: a temp dir,
    /// removed at the end), e.g. to run other tools on the same files.
    #[arg(long, value_name = "DIR")]
    pub keep_inputs: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "text")]
    pub output: Output,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Json,
    Yaml,
}

impl Format {
    fn ext(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Yaml => "yaml",
        }
    }
}

/// `loadtest measure` (internal): runs one program pinned to a CPU and reports its figures.
#[derive(Debug, clap::Args)]
pub struct MeasureArgs {
    #[arg(long)]
    pub cpu: usize,
    /// File to feed on stdin (default: nothing).
    #[arg(long)]
    pub stdin: Option<PathBuf>,
    /// File to write the program's stdout to (default: discarded).
    #[arg(long)]
    pub stdout: Option<PathBuf>,
    /// The program and its arguments.
    #[arg(trailing_var_arg = true, required = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

/// What `loadtest measure` prints (one JSON line).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Measured {
    /// Wall-clock time.
    pub seconds: f64,
    /// CPU time (user + system): what the run costs the one core, whatever else runs there.
    pub cpu_seconds: f64,
    pub peak_rss_kib: u64,
    pub exit_code: i32,
}

/// Runs the command pinned to `cpu`, waits for it, and prints [`Measured`] as JSON.
pub fn measure(args: &MeasureArgs) -> anyhow::Result<()> {
    use nix::sched::{CpuSet, sched_setaffinity};
    use nix::sys::resource::{UsageWho, getrusage};
    use nix::unistd::Pid;

    let mut set = CpuSet::new();
    set.set(args.cpu).context("failed to select the CPU")?;
    // This thread, and so the child it spawns (which inherits its mask), runs on that CPU only.
    sched_setaffinity(Pid::from_raw(0), &set).context("failed to pin to the CPU")?;

    let (program, rest) = args
        .command
        .split_first()
        .context("no command to measure")?;
    let mut cmd = Command::new(program);
    cmd.args(rest).stderr(Stdio::inherit());
    cmd.stdin(match &args.stdin {
        Some(p) => {
            Stdio::from(File::open(p).with_context(|| format!("failed to open {}", p.display()))?)
        }
        None => Stdio::null(),
    });
    cmd.stdout(match &args.stdout {
        Some(p) => Stdio::from(
            File::create(p).with_context(|| format!("failed to create {}", p.display()))?,
        ),
        None => Stdio::null(),
    });
    let start = Instant::now();
    let status = cmd
        .status()
        .with_context(|| format!("failed to run {program}"))?;
    let seconds = start.elapsed().as_secs_f64();
    let usage = getrusage(UsageWho::RUSAGE_CHILDREN).context("failed to read getrusage")?;
    let tv = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    let measured = Measured {
        seconds,
        cpu_seconds: tv(usage.user_time()) + tv(usage.system_time()),
        // Linux reports ru_maxrss in KiB.
        peak_rss_kib: u64::try_from(usage.max_rss()).unwrap_or(0),
        exit_code: status.code().unwrap_or(-1),
    };
    println!("{}", serde_json::to_string(&measured)?);
    Ok(())
}

/// Runs `command` under `loadtest measure` (a fresh process, so that its only child is the
/// measured one).
fn measured_run(
    cpu: usize,
    stdin: Option<&Path>,
    stdout: Option<&Path>,
    command: &[&str],
) -> anyhow::Result<Measured> {
    let me = std::env::current_exe().context("failed to locate the loadtest binary")?;
    let mut cmd = Command::new(me);
    cmd.arg("measure").arg("--cpu").arg(cpu.to_string());
    if let Some(p) = stdin {
        cmd.arg("--stdin").arg(p);
    }
    if let Some(p) = stdout {
        cmd.arg("--stdout").arg(p);
    }
    cmd.arg("--").args(command).stderr(Stdio::inherit());
    let out = cmd.output().context("failed to run loadtest measure")?;
    if !out.status.success() {
        bail!("loadtest measure failed for {command:?}");
    }
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim()).with_context(|| format!("bad measure output {text:?}"))
}

/// One layout of the input, measured.
#[derive(Debug, Clone, Serialize)]
pub struct LayoutRun {
    pub format: Format,
    /// `10 files`, `1000 files`, `stdin`.
    pub layout: String,
    pub files: usize,
    pub objects: u64,
    pub findings: u64,
    /// Median wall-clock time of the rounds.
    pub seconds: f64,
    /// Objects per wall-clock second.
    pub objects_per_s: f64,
    /// Median CPU time (user + system) of the rounds.
    pub cpu_seconds: f64,
    /// Objects per CPU second: the throughput of the one core, undisturbed by other load.
    pub objects_per_cpu_s: f64,
    /// Highest of the rounds.
    pub peak_rss_kib: u64,
    /// Wall-clock time of every round.
    pub rounds_s: Vec<f64>,
}

/// checkov next to canopyctl on the same small input.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub objects: usize,
    pub files: usize,
    pub canopyctl_seconds: f64,
    pub canopyctl_objects_per_s: f64,
    pub canopyctl_cpu_seconds: f64,
    pub canopyctl_findings: u64,
    pub checkov: Option<CheckovRun>,
    /// Why checkov was not measured.
    pub checkov_unavailable: Option<String>,
    /// canopyctl objects/s ÷ checkov objects/s.
    pub ratio: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CheckovRun {
    pub version: String,
    pub seconds: f64,
    pub objects_per_s: f64,
    pub cpu_seconds: f64,
    pub peak_rss_kib: u64,
    /// checkov's own counts for the run.
    pub resources: u64,
    pub failed_checks: u64,
    pub passed_checks: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub objects: usize,
    pub cpu: usize,
    pub rounds: u32,
    pub target_objects_per_s: f64,
    /// How busy the machine was: the measured process has its CPU, but shares caches, memory
    /// bandwidth and (with SMT) execution units with whatever else runs.
    pub machine: Machine,
    pub runs: Vec<LayoutRun>,
    /// Per format: highest ÷ lowest peak memory across the layouts.
    pub memory_spread: Vec<MemorySpread>,
    pub comparison: Comparison,
}

#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cpus: usize,
    /// One-minute load average (`/proc/loadavg`) before the first and after the last run;
    /// `None` where the system does not report it.
    pub load_before: Option<f64>,
    pub load_after: Option<f64>,
}

impl Machine {
    /// Busy enough that the figures are lower than the tool can do: more runnable work than
    /// one CPU besides the measured process.
    fn busy(&self) -> bool {
        self.load_before
            .into_iter()
            .chain(self.load_after)
            .any(|l| l > 1.5)
    }
}

/// The one-minute load average, from `/proc/loadavg`.
fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[derive(Debug, Clone, Serialize)]
pub struct MemorySpread {
    pub format: Format,
    pub highest_over_lowest: f64,
}

#[derive(Deserialize)]
struct AuditSummary {
    summary: SummaryCounts,
}

#[derive(Deserialize)]
struct SummaryCounts {
    objects: u64,
    findings: u64,
}

/// The serialised generated objects, one text per object.
fn render(objects: &[serde_json::Value], format: Format) -> anyhow::Result<Vec<String>> {
    objects
        .iter()
        .map(|o| match format {
            Format::Json => Ok(serde_json::to_string(o)? + "\n"),
            Format::Yaml => Ok(format!("---\n{}", serde_yaml::to_string(o)?)),
        })
        .collect()
}

/// Writes `docs` into `files` files under `dir` (contiguous runs of documents, as even as can
/// be; fewer files only when there are fewer documents).
fn write_files(dir: &Path, docs: &[String], files: usize, ext: &str) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("failed to create {}", dir.display()))?;
    let files = files.clamp(1, docs.len().max(1));
    for i in 0..files {
        let chunk = docs
            .get(i * docs.len() / files..(i + 1) * docs.len() / files)
            .unwrap_or_default();
        let path = dir.join(format!("m{i:05}.{ext}"));
        write_stream(&path, chunk)?;
    }
    Ok(())
}

fn write_stream(path: &Path, docs: &[String]) -> anyhow::Result<()> {
    let file =
        File::create(path).with_context(|| format!("failed to create {}", path.display()))?;
    let mut w = BufWriter::new(file);
    for d in docs {
        w.write_all(d.as_bytes())
            .with_context(|| format!("failed to write {}", path.display()))?;
    }
    w.flush()
        .with_context(|| format!("failed to write {}", path.display()))?;
    Ok(())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// Audits `input` (a directory, or `-` with `stdin`) `rounds` times with canopyctl's JSON
/// output; checks the counts.
fn run_canopyctl(
    args: &Args,
    canopyctl: &Path,
    input: &Path,
    stdin: Option<&Path>,
    out: &Path,
    rounds: u32,
) -> anyhow::Result<(Vec<Measured>, AuditSummary)> {
    let bin = canopyctl.to_string_lossy();
    let input = input.to_string_lossy();
    let mut rounds_measured = Vec::new();
    let mut summary = None;
    for _ in 0..rounds {
        let m = measured_run(
            args.cpu,
            stdin,
            Some(out),
            &[&bin, "audit", "--format", "json", &input],
        )?;
        if m.exit_code != 0 {
            bail!("canopyctl audit {input} exited {}", m.exit_code);
        }
        rounds_measured.push(m);
        let file = File::open(out).with_context(|| format!("failed to open {}", out.display()))?;
        let s: AuditSummary = serde_json::from_reader(std::io::BufReader::new(file))
            .context("canopyctl audit printed no JSON report")?;
        summary = Some(s);
    }
    let summary = summary.context("no round ran")?;
    Ok((rounds_measured, summary))
}

fn checkov_version(checkov: &Path) -> anyhow::Result<String> {
    let out = Command::new(checkov)
        .arg("--version")
        .output()
        .with_context(|| format!("cannot run {}", checkov.display()))?;
    if !out.status.success() {
        bail!("{} --version failed", checkov.display());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

#[derive(Deserialize)]
struct CheckovReport {
    summary: CheckovSummary,
}

#[derive(Deserialize)]
struct CheckovSummary {
    passed: u64,
    failed: u64,
    resource_count: u64,
}

fn run_checkov(args: &Args, dir: &Path, out: &Path) -> anyhow::Result<CheckovRun> {
    let version = checkov_version(&args.checkov)?;
    let bin = args.checkov.to_string_lossy();
    let dir = dir.to_string_lossy();
    let mut rounds_measured = Vec::new();
    let mut report = None;
    for _ in 0..args.rounds {
        // --skip-download: no call to the vendor's API (this machine has no network anyway).
        let m = measured_run(
            args.cpu,
            None,
            Some(out),
            &[
                &bin,
                "-d",
                &dir,
                "--framework",
                "kubernetes",
                "--quiet",
                "--compact",
                "-o",
                "json",
                "--skip-download",
            ],
        )?;
        // checkov exits 1 when a check fails.
        if m.exit_code != 0 && m.exit_code != 1 {
            bail!("checkov exited {}", m.exit_code);
        }
        rounds_measured.push(m);
        let text = std::fs::read_to_string(out)
            .with_context(|| format!("failed to read {}", out.display()))?;
        let r: CheckovReport = serde_json::from_str(&text).with_context(|| {
            let head: String = text.chars().take(300).collect();
            format!("checkov printed no JSON report: {head:?}")
        })?;
        report = Some(r);
    }
    let r = report.context("no round ran")?;
    let seconds = median(rounds_measured.iter().map(|m| m.seconds).collect());
    Ok(CheckovRun {
        version,
        seconds,
        objects_per_s: rate(args.checkov_objects as u64, seconds),
        cpu_seconds: median(rounds_measured.iter().map(|m| m.cpu_seconds).collect()),
        peak_rss_kib: rounds_measured
            .iter()
            .map(|m| m.peak_rss_kib)
            .max()
            .unwrap_or(0),
        resources: r.summary.resource_count,
        failed_checks: r.summary.failed,
        passed_checks: r.summary.passed,
    })
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let canopyctl = match &args.canopyctl {
        Some(p) => p.clone(),
        None => std::env::current_exe()
            .context("failed to locate the loadtest binary")?
            .with_file_name("canopyctl"),
    };
    if !canopyctl.is_file() {
        bail!(
            "no canopyctl at {} (build it: cargo build --release -p canopyctl, or pass --canopyctl)",
            canopyctl.display()
        );
    }
    let n = args.objects.max(args.checkov_objects);
    // Not a hidden directory (tempfile's default `.tmp…`): checkov skips those.
    let temp = tempfile::Builder::new()
        .prefix("canopy-bench-")
        .tempdir()
        .context("failed to create a temp dir")?;
    let keep = args.keep_inputs.is_some();
    let work_dir = match &args.keep_inputs {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("failed to create {}", dir.display()))?;
            dir.clone()
        }
        None => temp.path().to_path_buf(),
    };
    let report_file = temp.path().join("report.json");
    let quiet = args.output == Output::Json;
    let note = |msg: &str| {
        if !quiet {
            eprintln!("loadtest audit: {msg}");
        }
    };

    let load_before = load_average();
    note(&format!("generating {n} objects"));
    let objects: Vec<serde_json::Value> = (0..n).map(canopy_audit::generate::object).collect();

    let mut runs = Vec::new();
    for &format in &args.formats {
        let ext = format.ext();
        let docs = render(&objects[..args.objects], format)?;
        let layouts = [("10 files", 10usize), ("1000 files", 1000)];
        for (name, files) in layouts {
            let dir = work_dir.join(format!("{ext}-{files}"));
            write_files(&dir, &docs, files, ext)?;
            note(&format!("canopyctl audit: {ext}, {name}"));
            let (measured, s) =
                run_canopyctl(&args, &canopyctl, &dir, None, &report_file, args.rounds)?;
            if !keep {
                std::fs::remove_dir_all(&dir).ok();
            }
            runs.push(layout_run(format, name, files, &measured, &s));
        }
        let stream = work_dir.join(format!("stream.{ext}"));
        write_stream(&stream, &docs)?;
        note(&format!("canopyctl audit: {ext}, stdin"));
        let (measured, s) = run_canopyctl(
            &args,
            &canopyctl,
            Path::new("-"),
            Some(&stream),
            &report_file,
            args.rounds,
        )?;
        if !keep {
            std::fs::remove_file(&stream).ok();
        }
        runs.push(layout_run(format, "stdin", 1, &measured, &s));
    }
    // Same objects in every layout: same counts.
    for r in &runs {
        if r.objects != args.objects as u64 {
            bail!(
                "{:?} {}: canopyctl audited {} objects, not {}",
                r.format,
                r.layout,
                r.objects,
                args.objects
            );
        }
        if let Some(first) = runs.iter().find(|x| x.format == r.format)
            && first.findings != r.findings
        {
            bail!(
                "{:?}: {} findings in {} but {} in {}",
                r.format,
                first.findings,
                first.layout,
                r.findings,
                r.layout
            );
        }
    }
    let memory_spread = args
        .formats
        .iter()
        .filter_map(|f| {
            let peaks: Vec<u64> = runs
                .iter()
                .filter(|r| r.format == *f)
                .map(|r| r.peak_rss_kib)
                .collect();
            let max = *peaks.iter().max()?;
            let min = *peaks.iter().min()?;
            (min > 0).then(|| MemorySpread {
                format: *f,
                highest_over_lowest: max as f64 / min as f64,
            })
        })
        .collect();

    // The side-by-side: the first objects, as YAML manifests (10 documents per file).
    let small = work_dir.join("compare");
    let files = args.checkov_objects.div_ceil(10).max(1);
    write_files(
        &small,
        &render(&objects[..args.checkov_objects], Format::Yaml)?,
        files,
        "yaml",
    )?;
    note(&format!(
        "canopyctl audit and checkov: {} objects in {files} YAML files",
        args.checkov_objects
    ));
    let (measured, s) = run_canopyctl(&args, &canopyctl, &small, None, &report_file, args.rounds)?;
    let canopy_seconds = median(measured.iter().map(|m| m.seconds).collect());
    let canopy_cpu_seconds = median(measured.iter().map(|m| m.cpu_seconds).collect());
    let (checkov, checkov_unavailable) = if args.checkov.is_file() {
        match run_checkov(&args, &small, &report_file) {
            Ok(c) => (Some(c), None),
            Err(e) => (None, Some(format!("checkov failed: {e:#}"))),
        }
    } else {
        (
            None,
            Some(format!(
                "no checkov at {} (install it with: bash scripts/setup --bench)",
                args.checkov.display()
            )),
        )
    };
    let canopy_rate = rate(args.checkov_objects as u64, canopy_seconds);
    let ratio = checkov
        .as_ref()
        .filter(|c| c.objects_per_s > 0.0)
        .map(|c| canopy_rate / c.objects_per_s);
    let comparison = Comparison {
        objects: args.checkov_objects,
        files,
        canopyctl_seconds: canopy_seconds,
        canopyctl_objects_per_s: canopy_rate,
        canopyctl_cpu_seconds: canopy_cpu_seconds,
        canopyctl_findings: s.summary.findings,
        checkov,
        checkov_unavailable,
        ratio,
    };

    let report = Report {
        objects: args.objects,
        cpu: args.cpu,
        rounds: args.rounds,
        target_objects_per_s: TARGET_OBJECTS_PER_S,
        machine: Machine {
            cpus: std::thread::available_parallelism().map_or(1, usize::from),
            load_before,
            load_after: load_average(),
        },
        runs,
        memory_spread,
        comparison,
    };
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Output::Text => print_text(&report),
    }
    Ok(())
}

fn layout_run(
    format: Format,
    layout: &str,
    files: usize,
    measured: &[Measured],
    s: &AuditSummary,
) -> LayoutRun {
    let seconds = median(measured.iter().map(|m| m.seconds).collect());
    let cpu_seconds = median(measured.iter().map(|m| m.cpu_seconds).collect());
    LayoutRun {
        format,
        layout: layout.to_owned(),
        files,
        objects: s.summary.objects,
        findings: s.summary.findings,
        seconds,
        objects_per_s: rate(s.summary.objects, seconds),
        cpu_seconds,
        objects_per_cpu_s: rate(s.summary.objects, cpu_seconds),
        peak_rss_kib: measured.iter().map(|m| m.peak_rss_kib).max().unwrap_or(0),
        rounds_s: measured.iter().map(|m| m.seconds).collect(),
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn print_text(r: &Report) {
    println!(
        "canopyctl audit --format json, {} generated objects, pinned to CPU {} (sched_setaffinity), median of {} rounds:",
        r.objects, r.cpu, r.rounds
    );
    println!(
        "  {:<5} {:<11} {:>9} {:>8} {:>11} {:>8} {:>13} {:>10}",
        "input", "layout", "findings", "wall s", "objects/s", "CPU s", "objects/CPU s", "peak RSS"
    );
    for run in &r.runs {
        println!(
            "  {:<5} {:<11} {:>9} {:>8.3} {:>11.0} {:>8.3} {:>13.0} {:>6.1} MiB{}",
            run.format.ext(),
            run.layout,
            run.findings,
            run.seconds,
            run.objects_per_s,
            run.cpu_seconds,
            run.objects_per_cpu_s,
            mib(run.peak_rss_kib),
            if run.objects_per_cpu_s >= r.target_objects_per_s {
                ""
            } else {
                "  below the 100k objects/s target"
            }
        );
    }
    let m = &r.machine;
    let load = |l: Option<f64>| l.map_or_else(|| "unknown".to_owned(), |l| format!("{l:.2}"));
    println!(
        "  machine: {} CPUs, load average {} before and {} after the runs{}",
        m.cpus,
        load(m.load_before),
        load(m.load_after),
        if m.busy() {
            " (busy: other work ran beside the measurement and may have lowered these figures)"
        } else {
            ""
        }
    );
    for m in &r.memory_spread {
        println!(
            "  peak memory across the {} layouts: highest / lowest = {:.2}",
            m.format.ext(),
            m.highest_over_lowest
        );
    }
    let c = &r.comparison;
    println!();
    println!(
        "side by side on the same {} objects ({} YAML files), same CPU, median of {} rounds:",
        c.objects, c.files, r.rounds
    );
    println!(
        "  canopyctl audit   {:>8.3} s wall {:>8.3} s CPU {:>10.0} objects/s  ({} findings)",
        c.canopyctl_seconds,
        c.canopyctl_cpu_seconds,
        c.canopyctl_objects_per_s,
        c.canopyctl_findings
    );
    match (&c.checkov, &c.checkov_unavailable) {
        (Some(k), _) => {
            println!(
                "  checkov {:<9} {:>8.3} s wall {:>8.3} s CPU {:>10.1} objects/s  ({} failed / {} passed checks on {} resources, peak RSS {:.1} MiB)",
                k.version,
                k.seconds,
                k.cpu_seconds,
                k.objects_per_s,
                k.failed_checks,
                k.passed_checks,
                k.resources,
                mib(k.peak_rss_kib)
            );
            if let Some(ratio) = c.ratio {
                println!("  canopyctl audit / checkov: {ratio:.0}x the objects/s");
            }
        }
        (None, Some(why)) => println!("  checkov: not measured: {why}"),
        (None, None) => println!("  checkov: not measured"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_machine_is_busy_when_more_than_the_measured_process_runs() {
        let m = |before, after| Machine {
            cpus: 2,
            load_before: before,
            load_after: after,
        };
        assert!(!m(Some(0.4), Some(1.1)).busy());
        assert!(m(Some(0.4), Some(2.3)).busy());
        assert!(m(Some(6.0), None).busy());
        assert!(!m(None, None).busy());
        assert!(load_average().is_some_and(|l| l >= 0.0));
    }

    #[test]
    fn medians() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![5.0]), 5.0);
        assert_eq!(median(vec![]), 0.0);
    }

    #[test]
    fn layouts_hold_every_document_once() -> anyhow::Result<()> {
        let objects: Vec<serde_json::Value> = (0..25).map(canopy_audit::generate::object).collect();
        for format in [Format::Json, Format::Yaml] {
            let docs = render(&objects, format)?;
            for files in [1, 10, 1000] {
                let dir = tempfile::tempdir()?;
                write_files(dir.path(), &docs, files, format.ext())?;
                let mut names: Vec<PathBuf> = std::fs::read_dir(dir.path())?
                    .map(|e| e.map(|e| e.path()))
                    .collect::<Result<_, _>>()?;
                names.sort();
                assert_eq!(names.len(), files.min(docs.len()), "{format:?} {files}");
                let all: String = names
                    .iter()
                    .map(std::fs::read_to_string)
                    .collect::<Result<_, _>>()?;
                assert_eq!(all, docs.concat(), "{format:?} {files}");
            }
        }
        Ok(())
    }
}
