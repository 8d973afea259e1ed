//! Throughput benchmark of the audit engine and of `canopyctl audit` (for `make bench`):
//! `cargo run -p canopy-audit --release --example bench [-- OBJECTS]`.

use std::io::Write;
use std::time::Instant;

use canopy_audit::Auditor;
use canopy_audit::cli::{AuditArgs, run};
use clap::Parser;

#[path = "../tests/it/generate.rs"]
mod generate;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    audit: AuditArgs,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(100_000);
    let objects = generate::generate(n);

    for round in 0..3 {
        let start = Instant::now();
        let mut a = Auditor::new();
        let mut findings = 0usize;
        for o in &objects {
            findings += a.add(o).len();
        }
        findings += a.finish().len();
        let secs = start.elapsed().as_secs_f64();
        println!(
            "engine (round {round}): {n} objects, {findings} findings in {secs:.3}s = {:.0} objects/s",
            n as f64 / secs
        );
    }

    let dir = tempfile::tempdir()?;
    for ext in ["json", "yaml"] {
        let sub = dir.path().join(ext);
        std::fs::create_dir_all(&sub)?;
        for (f, chunk) in objects.chunks(1000).enumerate() {
            let file = std::fs::File::create(sub.join(format!("m{f:04}.{ext}")))?;
            let mut file = std::io::BufWriter::new(file);
            for o in chunk {
                if ext == "json" {
                    serde_json::to_writer(&mut file, o)?;
                    writeln!(file)?;
                } else {
                    writeln!(file, "---")?;
                    serde_yaml::to_writer(&mut file, o)?;
                }
            }
        }
        let path = sub.display().to_string();
        for format in ["json", "sarif", "text"] {
            let args = Cli::try_parse_from(["audit", "--format", format, path.as_str()])?.audit;
            let start = Instant::now();
            let code = run(&args, &mut std::io::sink(), &mut std::io::stderr());
            let secs = start.elapsed().as_secs_f64();
            println!(
                "canopyctl audit ({ext} in, {format} out): {n} objects in {secs:.3}s = {:.0} objects/s (exit {code})",
                n as f64 / secs
            );
        }
    }
    Ok(())
}
