//! Why a caller gets no headers, or an admin command fails. Every message
//! names the credential and what to do; none carries a secret.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;

use crate::clock;
use crate::glean::{self, Scope};
use crate::refresh::DriverError;
use crate::store::StoreError;

/// Why a caller gets no headers. Every message names the credential and what
/// to do; none carries a secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerError {
    /// No credential has this name.
    #[error(
        "no credential named `{name}` is configured; `tokenctl status` lists those you may use"
    )]
    NotFound {
        /// The name the caller asked for.
        name: String,
    },
    /// The caller is admitted by none of the credential's `allow` rules.
    /// Also the answer, to anyone but an admin, for a name that is not
    /// configured: the socket does not tell which names exist.
    #[error(
        "uid {uid} (gid {gid}, pid {pid}) may not use credential `{name}` (if one by that name \
         exists; `tokenctl status` lists those you may use); add the uid or one of its groups \
         to the credential's `allow` in tokend's config"
    )]
    CallerDenied {
        /// The credential's name.
        name: Arc<str>,
        /// The caller's uid.
        uid: u32,
        /// The caller's primary gid.
        gid: u32,
        /// The caller's pid.
        pid: i32,
    },
    /// The caller may not use administrative methods.
    #[error(
        "uid {uid} may not {action}; only root and the config's daemon.admin_uids / \
         daemon.admin_groups may"
    )]
    NotAdmin {
        /// The caller's uid.
        uid: u32,
        /// What the caller tried to do, e.g. "reload the config".
        action: &'static str,
    },
    /// A global Glean token was asked for without `act_as`.
    #[error(
        "credential `{name}` is a global Glean token, which requires the {header} header: \
         set act_as to the email of the user to act as",
        header = glean::ACT_AS_HEADER
    )]
    ActAsRequired {
        /// The credential's name.
        name: Arc<str>,
    },
    /// A token that cannot act as others was asked for with `act_as`.
    #[error(
        "credential `{name}` is {what}, for which {header} must be empty; drop act_as (only \
         global Glean tokens act as other users)",
        header = glean::ACT_AS_HEADER
    )]
    ActAsRefused {
        /// The credential's name.
        name: Arc<str>,
        /// What kind of token it is, e.g. "a user Glean token".
        what: String,
    },
    /// `act_as` is not an email address.
    #[error("act_as {act_as:?} for credential `{name}` is not an email address")]
    ActAsInvalid {
        /// The credential's name.
        name: Arc<str>,
        /// The `act_as` the caller sent.
        act_as: String,
    },
    /// The caller's `allow.act_as` patterns do not cover `act_as`.
    #[error(
        "uid {uid} may not act as `{act_as}` with credential `{name}`; add a matching pattern \
         to `allow.act_as` for that caller in tokend's config"
    )]
    ActAsDenied {
        /// The credential's name.
        name: Arc<str>,
        /// The caller's uid.
        uid: u32,
        /// The `act_as` the caller sent.
        act_as: String,
    },
    /// A required scope is not one of Glean's.
    #[error(
        "required scope `{scope}` for credential `{name}` is not a Glean scope; Glean's scopes \
         are {}", Scope::names().join(", ")
    )]
    UnknownScope {
        /// The credential's name.
        name: Arc<str>,
        /// The scope the caller required.
        scope: String,
    },
    /// The token lacks scopes the caller needs.
    #[error("credential `{name}` lacks scope(s) {missing}; {fix}")]
    MissingScopes {
        /// The credential's name.
        name: Arc<str>,
        /// The scopes the token lacks, comma-separated.
        missing: String,
        /// How to get a token with them, for this kind of credential.
        fix: &'static str,
    },
    /// The token has expired.
    #[error(
        "credential `{name}` expired at {at} ({ago} ago); it must be rotated: create a new \
         token in Glean's admin console{owner} and update its secret in tokend",
        ago = clock::human(*ago),
        owner = owner.as_deref().map(|o| format!(" (owner: {o})")).unwrap_or_default()
    )]
    Expired {
        /// The credential's name.
        name: Arc<str>,
        /// When the token expired.
        at: Timestamp,
        /// How long ago it expired.
        ago: Duration,
        /// Who owns the token in Glean, to ask for a new one; `None` if the
        /// config names no owner.
        owner: Option<String>,
    },
    /// The token expires sooner than the caller needs it.
    #[error(
        "credential `{name}` expires at {at}, in {left}, sooner than the {min_valid} required \
         (min_valid); it must be rotated soon",
        left = clock::human(*left),
        min_valid = clock::human(*min_valid)
    )]
    ExpiresTooSoon {
        /// The credential's name.
        name: Arc<str>,
        /// When the token expires.
        at: Timestamp,
        /// How long the token is still valid for.
        left: Duration,
        /// How long the caller needs it to stay valid.
        min_valid: Duration,
    },
    /// A Glean token kept in the store has not been imported yet.
    #[error("credential `{name}` has no secret yet; run `tokenctl import {name}`")]
    NotImported {
        /// The credential's name.
        name: Arc<str>,
    },
    /// A person must log in again (or for the first time).
    #[error("credential `{name}` needs login: {reason}")]
    NeedsLogin {
        /// The credential's name.
        name: Arc<str>,
        /// Why login is needed, from the refresh driver.
        reason: Arc<str>,
    },
    /// The source refuses the client or its configuration.
    #[error("credential `{name}` is misconfigured: {reason}")]
    Misconfigured {
        /// The credential's name.
        name: Arc<str>,
        /// What the source refused, from the refresh driver.
        reason: Arc<str>,
    },
    /// No valid token arrived in time; refreshing is failing or slow.
    #[error(
        "credential `{name}` has no token valid for the required time yet: {reason}; \
         tokend keeps retrying"
    )]
    Unavailable {
        /// The credential's name.
        name: Arc<str>,
        /// Why no token is valid yet, e.g. the last refresh error.
        reason: String,
    },
    /// The operation does not apply to this kind of credential.
    #[error("credential `{name}` is a {kind} credential: {what}")]
    WrongKind {
        /// The credential's name.
        name: Arc<str>,
        /// The credential's kind.
        kind: crate::credential::CredentialKind,
        /// Why the operation does not apply to that kind.
        what: &'static str,
    },
    /// The operation does not apply to this credential or its issuer.
    #[error("credential `{name}`: {reason}")]
    NotApplicable {
        /// The credential's name.
        name: Arc<str>,
        /// Why the operation does not apply.
        reason: String,
    },
    /// Reported tokens of this credential were replaced too often just
    /// now: one caller could otherwise make tokend refresh without pause.
    #[error(
        "credential `{name}`: reported tokens were replaced several times just now; tokend \
         replaces at most one every {interval} after that, try again in {wait}"
    )]
    TooSoon {
        /// The credential's name.
        name: Arc<str>,
        /// The least time between replacements.
        interval: String,
        /// How long until a report can be acted on.
        wait: String,
    },
    /// A value sent to an admin method is unusable.
    #[error("{0}")]
    InvalidInput(String),
    /// The store failed.
    #[error("{0}")]
    Store(#[from] StoreError),
    /// A fault inside tokend (a task that died, a store that is missing);
    /// not the caller's doing.
    #[error("internal error: {0}")]
    Internal(String),
}

impl BrokerError {
    /// The error for `name` that a driver answered with.
    pub fn from_driver(name: &Arc<str>, e: DriverError) -> Self {
        let name = Arc::clone(name);
        match e {
            DriverError::NeedsLogin(reason) => Self::NeedsLogin { name, reason },
            DriverError::Misconfigured(reason) => Self::Misconfigured { name, reason },
            DriverError::Unavailable(reason) => Self::Unavailable {
                name,
                reason: reason.to_string(),
            },
            DriverError::NotApplicable(reason) => Self::NotApplicable { name, reason },
            DriverError::Store(e) => Self::Internal(format!("credential `{name}`: store: {e}")),
        }
    }
}
