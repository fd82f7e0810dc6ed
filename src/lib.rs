//! tokend: a credential broker daemon. It holds API credentials, checks them,
//! and hands ready-to-send HTTP headers to local processes over gRPC on a
//! Unix socket, authorising each caller by its peer credentials.
//!
//! # Layout
//!
//! - [`config`]: the TOML config, validated into typed credentials with
//!   errors that name file, line and field.
//! - [`credential`]: what is held per credential and who may use it.
//! - [`glean`]: Glean's token rules: permissions, scopes, act-as emails.
//! - [`secret`]: reading secrets from files, the environment and systemd.
//! - [`broker`]: every credential by name, and the decision to serve one.
//! - [`peer`]: the caller's uid, gid, groups and pid from the socket.
//! - [`server`]: socket binding and the gRPC service; [`client`]: the other end.
//! - [`clock`]: time as read and as shown.
//! - `src/bin/tokend.rs`, `src/bin/tokenctl.rs`: thin binaries over the above.

pub mod broker;
pub mod check;
pub mod client;
pub mod clock;
pub mod config;
pub mod credential;
pub mod daemon;
pub mod glean;
pub mod login;
pub mod oauth;
pub mod peer;
pub mod refresh;
pub mod secret;
pub mod server;
pub mod store;
pub mod token;

/// Generated gRPC code for `proto/tokend/v1/tokend.proto`.
#[allow(unused_qualifications, clippy::all, clippy::pedantic)] // generated code, not ours to restyle
pub mod proto {
    tonic::include_proto!("tokend.v1");

    /// Descriptor set of the API, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/tokend_descriptor.bin"));
}
