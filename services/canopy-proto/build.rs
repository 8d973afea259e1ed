//! Compiles `proto/` with protox (no protoc needed) into prost/tonic code and a descriptor set
//! for gRPC reflection.
use std::{env, fs, path::PathBuf};

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let files = [
        "canopy/event/v1/envelope.proto",
        "canopy/event/v1/agent.proto",
        "canopy/api/v1/fleet.proto",
        "canopy/api/v1/events.proto",
    ];
    let fds = protox::compile(files, [&root])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(out.join("canopy_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    println!("cargo:rerun-if-changed={}", root.display());
    Ok(())
}
