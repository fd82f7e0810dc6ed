//! tokend: a credential broker daemon. It holds API credentials, checks them,
//! and hands ready-to-send HTTP headers to local processes over gRPC on a
//! Unix socket, authorising each caller by its peer credentials.
//!
//! # Layout
//!
//! Dependencies point down this list, never up: `bin → daemon → {proxy,
//! grpc} → {broker, config} → {refresh, alert} → fleet → metrics →
//! status/token/credential → leaves`.
//!
//! - [`daemon`]: startup and shutdown order, reloads, background tasks, the
//!   metrics listener.
//! - [`proxy`]: `[[proxy]]` listeners: plain HTTP from local callers,
//!   forwarded upstream with a credential's headers under Glean's rules
//!   (it binds its Unix sockets with [`grpc::bind_at`], the one socket
//!   policy).
//! - [`grpc`]: the socket and the gRPC services; every domain↔proto
//!   conversion and the one error→status mapping.
//! - [`broker`]: every credential by name, and the decision to serve one;
//!   admin commands forwarded to the refresh drivers.
//! - [`config`]: the TOML config, validated into typed credentials with
//!   errors that name file, line and field.
//! - [`refresh`]: one driver task per OAuth credential, renewing ahead of
//!   expiry, single-flight, with backoff; its typed errors.
//! - [`fleet`]: credentials shared by several hosts through etcd: the
//!   node's lease, and per shared credential a seat (its election, its keys
//!   and the marker and commit transactions) that its refresh driver uses.
//! - [`alert`]: conditions, dedup, repeats and resolves, delivered to sinks.
//! - [`metrics`]: Prometheus metrics, rendered from statuses.
//! - [`status`]: the read-only view of a credential.
//! - [`token`]: the token a credential serves now and its state, published
//!   through a `watch` channel.
//! - [`credential`]: what is held per credential and who may use it.
//! - Leaves: [`glean`] (Glean's token rules), [`oauth`] (token endpoints),
//!   [`store`] (the encrypted store), [`secret`] (secret sources), [`peer`]
//!   (the caller's identity), [`clock`] (injectable time), [`systemd`],
//!   [`http_head`] (bounded HTTP/1 request heads from strangers), `quota`
//!   (per-uid limits on what a local caller holds open).
//! - [`login`], [`check`]: the person's side of `tokenctl login` and
//!   `tokenctl check`, over the typed client.
//! - [`manpage`]: tokenctl(1)'s page builder, tokend(8) and tokend.toml(5).
//! - [`proto`]: the generated API, from the `tokend-client` crate
//!   (`clients/rust`), which is also how `tokenctl` talks to the daemon.
//! - `src/bin/tokend.rs`, `src/bin/tokenctl/`: thin binaries over the above.

#![warn(missing_docs)]

pub mod alert;
pub mod broker;
pub mod check;
pub mod clock;
pub mod config;
pub mod credential;
pub mod daemon;
pub mod fleet;
pub mod glean;
pub mod grpc;
pub mod http_head;
pub mod login;
pub mod manpage;
pub mod metrics;
pub mod oauth;
pub mod peer;
pub mod proxy;
mod quota;
pub mod refresh;
pub mod secret;
pub mod status;
pub mod store;
pub mod systemd;
pub mod token;

#[cfg(test)]
mod testing;

pub use tokend_client::proto;
