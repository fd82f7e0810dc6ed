//! Typed client for tokend, the credential broker daemon, over its Unix
//! socket.
//!
//! `tokenctl`, the daemon's integration tests and any Rust service fetch
//! headers through this crate instead of compiling the daemon: it depends on
//! tonic's client side and prost only, never on the daemon's store, HTTP
//! client or scheduler.
//!
//! ```no_run
//! # async fn demo() -> Result<(), tokend_client::Error> {
//! use tokend_client::{Client, HeadersRequest};
//!
//! let client = Client::connect(tokend_client::socket_from_env()).await?;
//! let headers = client.headers(&HeadersRequest::new("glean")).await?;
//! for (name, value) in headers.iter() {
//!     // attach `name: value` to the outgoing request
//! #   let _ = (name, value);
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # Layout
//!
//! - [`Client`] (`client.rs`): one method per RPC of the `TokenBroker` and
//!   `Admin` services, taking and returning the types below.
//! - [`channel`] and [`ConnectError`] (`connect.rs`): dialling the socket, with
//!   an error that tells a person what to do about it.
//! - [`Error`] (`error.rs`): a failed call, one variant per gRPC code tokend
//!   uses, carrying the daemon's message verbatim.
//! - Types ([`Headers`], [`CredentialStatus`], …, `types.rs`): what the calls
//!   answer, with jiff timestamps and `Option` for absent fields; header
//!   values are [`SecretString`](secrecy::SecretString)s kept out of `Debug`.
//! - [`convert`]: every proto ↔ type conversion, public so the daemon's
//!   server side shares the timestamp and duration conversions.
//! - [`sign`] (feature `reqwest`): sending a reqwest request with a
//!   credential's headers, reporting a token the API answers 401 to and
//!   retrying once.
//! - [`proto`]: the code generated from `proto/tokend/v1/tokend.proto`,
//!   client and server stubs, for callers that need the raw messages (the
//!   daemon implements its services with it).

#![warn(missing_docs)]

mod client;
mod connect;
pub mod convert;
mod error;
#[cfg(feature = "reqwest")]
pub mod sign;
mod types;

use std::ffi::OsString;
use std::path::PathBuf;

pub use client::Client;
pub use connect::{ConnectError, channel};
pub use error::Error;
pub use types::{
    Alert, CredentialStatus, FleetMembership, Headers, HeadersRequest, LoginInfo, ProxyEndpoint,
    Refreshed, Reloaded, State, WhoAmI,
};

/// Re-exported so callers name timestamps, secrets and gRPC codes with the
/// exact versions this crate's API uses.
pub use {jiff, secrecy, tonic};

/// Generated gRPC code for `proto/tokend/v1/tokend.proto` (package
/// `tokend.v1`): messages, `token_broker_client`/`admin_client`, and the
/// `token_broker_server`/`admin_server` traits the daemon implements.
// Generated code, not ours to restyle or document.
#[allow(unused_qualifications, missing_docs, clippy::all, clippy::pedantic)]
pub mod proto {
    tonic::include_proto!("tokend.v1");

    /// Encoded descriptor set of the API, for the daemon's gRPC server
    /// reflection (`tonic-reflection`).
    #[cfg(feature = "server")]
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/tokend_descriptor.bin"));
}

/// Where the daemon listens unless told otherwise (systemd's
/// `RuntimeDirectory=tokend`).
pub const DEFAULT_SOCKET: &str = "/run/tokend/tokend.sock";

/// The socket to use: `TOKEND_SOCKET` when set and non-empty, else
/// [`DEFAULT_SOCKET`]. Every client reads the same variable, so one export
/// points `tokenctl`, services and tests at a non-default daemon.
pub fn socket_from_env() -> PathBuf {
    socket_from(std::env::var_os("TOKEND_SOCKET"))
}

/// [`socket_from_env`] without the environment, so tests need not set
/// variables (which is `unsafe` while other test threads run).
fn socket_from(var: Option<OsString>) -> PathBuf {
    var.filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from(DEFAULT_SOCKET), PathBuf::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_defaults_when_unset_or_empty() {
        assert_eq!(socket_from(None), PathBuf::from(DEFAULT_SOCKET));
        assert_eq!(
            socket_from(Some(OsString::new())),
            PathBuf::from(DEFAULT_SOCKET)
        );
    }

    #[test]
    fn socket_from_variable() {
        assert_eq!(
            socket_from(Some("/tmp/t/tokend.sock".into())),
            PathBuf::from("/tmp/t/tokend.sock")
        );
    }

    #[cfg(feature = "server")]
    #[test]
    fn descriptor_set_describes_both_services() {
        use prost::Message;
        let fds = prost_types::FileDescriptorSet::decode(proto::FILE_DESCRIPTOR_SET).unwrap();
        let api = fds
            .file
            .iter()
            .find(|f| f.name() == "tokend/v1/tokend.proto")
            .unwrap();
        assert_eq!(api.package(), "tokend.v1");
        let services: Vec<_> = api.service.iter().map(|s| s.name()).collect();
        assert_eq!(services, ["TokenBroker", "Admin"]);
    }

    #[test]
    fn socket_from_env_reads_tokend_socket() {
        assert_eq!(
            socket_from_env(),
            socket_from(std::env::var_os("TOKEND_SOCKET"))
        );
    }
}
