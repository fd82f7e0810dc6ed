//! The seam between the refresh drivers and the network: everything a driver
//! asks of an authorization server, as one trait. Production talks HTTP
//! ([`Http`]); tests script answers and count calls in-process, under paused
//! time, where a real socket would let the clock run ahead of the I/O.

use std::fmt;
use std::time::Duration;

use futures_util::future::BoxFuture;
use jiff::Timestamp;
use secrecy::SecretString;

use super::{Client, Grant, Metadata, TokenError, Tokens};

/// An authorization server, as a refresh driver uses it.
pub trait TokenEndpoint: Send + Sync + fmt::Debug {
    /// Requests tokens for `grant` at `endpoint` (see [`super::request_token`]).
    fn request<'a>(
        &'a self,
        endpoint: &'a str,
        client: &'a Client,
        grant: Grant<'a>,
        default_lifetime: Duration,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<Tokens, TokenError>>;

    /// Fetches an issuer's metadata (see [`super::discover`]).
    fn discover<'a>(&'a self, issuer: &'a str) -> BoxFuture<'a, Result<Metadata, TokenError>>;

    /// Revokes a token (see [`super::revoke`]).
    fn revoke<'a>(
        &'a self,
        endpoint: &'a str,
        client: &'a Client,
        token: &'a SecretString,
        hint: &'a str,
    ) -> BoxFuture<'a, Result<(), TokenError>>;
}

/// Token endpoints over HTTPS, with the daemon's HTTP client.
#[derive(Clone, Debug)]
pub struct Http(pub reqwest::Client);

impl TokenEndpoint for Http {
    fn request<'a>(
        &'a self,
        endpoint: &'a str,
        client: &'a Client,
        grant: Grant<'a>,
        default_lifetime: Duration,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<Tokens, TokenError>> {
        Box::pin(super::request_token(
            &self.0,
            endpoint,
            client,
            grant,
            default_lifetime,
            now,
        ))
    }

    fn discover<'a>(&'a self, issuer: &'a str) -> BoxFuture<'a, Result<Metadata, TokenError>> {
        Box::pin(super::discover(&self.0, issuer))
    }

    fn revoke<'a>(
        &'a self,
        endpoint: &'a str,
        client: &'a Client,
        token: &'a SecretString,
        hint: &'a str,
    ) -> BoxFuture<'a, Result<(), TokenError>> {
        Box::pin(super::revoke(&self.0, endpoint, client, token, hint))
    }
}
