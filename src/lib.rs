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
//! - [`token`]: the token a credential serves now and its state, published
//!   through a `watch` channel.
//! - [`oauth`]: token endpoints: discovery, grants, error classes.
//! - [`refresh`]: one driver task per OAuth credential, renewing ahead of
//!   expiry, single-flight, with backoff.
//! - [`store`]: the encrypted redb store of refresh tokens and secrets.
//! - [`peer`]: the caller's uid, gid, groups and pid from the socket.
//! - [`server`]: socket binding and the gRPC services; [`client`]: the other end.
//! - [`daemon`]: startup and shutdown order.
//! - [`login`]: the person's side of an OAuth login; [`check`]: `tokenctl check`.
//! - [`clock`]: time as read and as shown.
//! - `src/bin/tokend.rs`, `src/bin/tokenctl.rs`: thin binaries over the above.

pub mod alert;
pub mod broker;
pub mod check;
pub mod client;
pub mod clock;
pub mod config;
pub mod credential;
pub mod daemon;
pub mod glean;
pub mod login;
pub mod metrics;
pub mod oauth;
pub mod peer;
pub mod refresh;
pub mod secret;
pub mod server;
pub mod store;
pub mod systemd;
pub mod token;

/// Generated gRPC code for `proto/tokend/v1/tokend.proto`.
#[allow(unused_qualifications, clippy::all, clippy::pedantic)] // generated code, not ours to restyle
pub mod proto {
    tonic::include_proto!("tokend.v1");

    /// Descriptor set of the API, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/tokend_descriptor.bin"));
}
