//! A quick throughput self-check (the real benchmark lives in `make bench`):
//! `cargo test -p canopy-audit --release --test it -- --ignored throughput --nocapture`.

use std::io::Write;
use std::time::Instant;

use canopy_audit::Auditor;
use canopy_audit::cli::{AuditArgs, run};
use clap::Parser;

use crate::generate::generate;

const N: usize = 100_000;

#[test]
#[ignore = "throughput self-check; run with --release --ignored --nocapture"]
fn throughput() {
    let objects = generate(N);

    // Engine only: objects already parsed (the agent's case).
    let start = Instant::now();
    let mut a = Auditor::new();
    let mut findings = 0usize;
    for o in &objects {
        findings += a.add(o).len();
    }
    findings += a.finish().len();
    let secs = start.elapsed().as_secs_f64();
    println!(
        "engine: {N} objects, {findings} findings in {secs:.3}s = {:.0} objects/s",
        N as f64 / secs
    );

    // End to end through `canopyctl audit`: read, parse, audit, sort, render JSON.
    let dir = tempfile::tempdir().unwrap();
    for (ext, per_file) in [("json", 1000usize), ("yaml", 1000)] {
        let sub = dir.path().join(ext);
        std::fs::create_dir_all(&sub).unwrap();
        for (f, chunk) in objects.chunks(per_file).enumerate() {
            let mut file = std::io::BufWriter::new(
                std::fs::File::create(sub.join(format!("m{f:04}.{ext}"))).unwrap(),
            );
            for o in chunk {
                if ext == "json" {
                    serde_json::to_writer(&mut file, o).unwrap();
                    writeln!(file).unwrap();
                } else {
                    writeln!(file, "---").unwrap();
                    serde_yaml::to_writer(&mut file, o).unwrap();
                }
            }
        }
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            audit: AuditArgs,
        }
        let path = sub.display().to_string();
        for format in ["json", "sarif", "text"] {
            let args = Cli::try_parse_from(["audit", "--format", format, path.as_str()])
                .unwrap()
                .audit;
            let start = Instant::now();
            let code = run(&args, &mut std::io::sink(), &mut std::io::sink());
            let secs = start.elapsed().as_secs_f64();
            assert_eq!(code, 0);
            println!(
                "canopyctl audit ({ext} input, {format} output): {N} objects in {secs:.3}s = {:.0} objects/s",
                N as f64 / secs
            );
        }
    }
}

/// The engine alone, several rounds (handy under `perf record`).
#[test]
#[ignore = "throughput self-check; run with --release --ignored --nocapture"]
fn throughput_engine() {
    let objects = generate(N);
    for _ in 0..3 {
        let start = Instant::now();
        let mut a = Auditor::new();
        let mut findings = 0usize;
        for o in &objects {
            findings += a.add(o).len();
        }
        findings += a.finish().len();
        let secs = start.elapsed().as_secs_f64();
        println!(
            "engine: {N} objects, {findings} findings in {secs:.3}s = {:.0} objects/s",
            N as f64 / secs
        );
    }
}

#[test]
fn generator_is_realistic() {
    let objs = generate(200);
    let f = {
        let mut a = Auditor::new();
        let mut f = Vec::new();
        for o in &objs {
            f.extend(a.add(o));
        }
        f.extend(a.finish());
        f
    };
    // A mix of clean and failing workloads.
    assert!(!f.is_empty());
    assert!(f.len() < objs.len() * 20);
}
