//! Compiles tokend's API (`proto/` at the repository root) with the pure-Rust
//! `protox` compiler, so building the client needs no system `protoc`.
//!
//! Client and server stubs are always generated: the server traits are
//! small, need no tonic feature beyond "codegen", and having them lets this
//! crate's own tests run a fake daemon under a plain `cargo test`. Only the
//! encoded descriptor set, which the daemon serves for gRPC reflection, is
//! behind the `server` feature.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "../../proto/tokend/v1/tokend.proto";
    println!("cargo:rerun-if-changed=../../proto");
    let fds = protox::compile([proto], ["../../proto"])?;
    if std::env::var_os("CARGO_FEATURE_SERVER").is_some() {
        let out = PathBuf::from(std::env::var("OUT_DIR")?);
        std::fs::write(
            out.join("tokend_descriptor.bin"),
            prost::Message::encode_to_vec(&fds),
        )?;
    }
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
