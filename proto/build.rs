//! Compiles `sidestream/v1/*.proto` (client ↔ sidecar) and `sidestream/peer/v1/*.proto`
//! (sidecar ↔ sidecar) with protox (a protobuf compiler in Rust, so no system
//! `protoc` is needed) and generates the Rust types with prost-build.
//!
//! `bytes` fields become `bytes::Bytes`, so a record batch decoded from a frame shares the
//! frame's buffer and is stored and served without a copy. The descriptor set is also written
//! to `OUT_DIR/sidestream.v1.fds.bin`, where the tests check `docs/PROTOCOL.md` against it.
#![allow(
    clippy::print_stdout,
    reason = "cargo reads build script directives from stdout"
)]

use std::error::Error;
use std::path::PathBuf;

use prost::Message as _;

/// The protocol's files, relative to the include root (this crate's directory).
const PROTOS: [&str; 9] = [
    "sidestream/peer/v1/raft.proto",
    "sidestream/v1/error.proto",
    "sidestream/v1/fetch.proto",
    "sidestream/v1/frame.proto",
    "sidestream/v1/group.proto",
    "sidestream/v1/metadata.proto",
    "sidestream/v1/publish.proto",
    "sidestream/v1/subscribe.proto",
    "sidestream/v1/topic.proto",
];

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo::rerun-if-changed=sidestream");
    let fds = protox::compile(PROTOS, ["."])?;
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").ok_or("OUT_DIR is not set")?);
    std::fs::write(out_dir.join("sidestream.v1.fds.bin"), fds.encode_to_vec())?;
    prost_build::Config::new().bytes(["."]).compile_fds(fds)?;
    Ok(())
}
