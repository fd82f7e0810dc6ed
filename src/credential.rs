//! What tokend holds for each configured credential, and who may use it.
//!
//! These are the validated forms of the config: a value of these types cannot
//! name an unknown scope, a malformed pattern, or a user that does not exist.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use secrecy::SecretString;

use crate::glean::{ActAsPattern, Permission, ScopeSet};
use crate::oauth;
use crate::peer::Peer;
use crate::secret::SecretSource;

/// One configured credential.
#[derive(Debug)]
pub struct Credential {
    /// The name callers ask for it by (the config's `name`); unique.
    pub name: Arc<str>,
    /// Callers that may fetch it; a caller matched by no rule is denied.
    pub allow: Vec<AllowRule>,
    /// A token with less than this left is not handed out unless the caller
    /// asks for a different margin.
    pub min_valid: Duration,
    /// What it is and how it is obtained.
    pub kind: Kind,
}

/// The kind-specific part of a credential.
#[derive(Debug)]
pub enum Kind {
    /// A `glean_token` credential.
    Glean(GleanToken),
    /// An `oauth_refresh` or `oauth_client_credentials` credential.
    OAuth(OAuthCredential),
}

impl Kind {
    /// Which of the configurable kinds this is.
    pub fn kind(&self) -> CredentialKind {
        match self {
            Self::Glean(_) => CredentialKind::GleanToken,
            Self::OAuth(o) => match o.grant {
                OAuthGrant::RefreshToken => CredentialKind::OAuthRefresh,
                OAuthGrant::ClientCredentials => CredentialKind::OAuthClientCredentials,
            },
        }
    }

    /// The name used for this kind in the config and the API.
    pub fn name(&self) -> &'static str {
        self.kind().as_str()
    }
}

/// The kinds of credential a config can name (DESIGN §2), without their
/// data: what status listings, alerts and metrics need to tell them apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CredentialKind {
    /// A Glean-issued API token; never renews.
    GleanToken,
    /// An OAuth refresh token from a one-time login.
    OAuthRefresh,
    /// An OAuth client-credentials grant.
    OAuthClientCredentials,
}

impl CredentialKind {
    /// Every kind, in the order the config documents them.
    pub const ALL: [Self; 3] = [
        Self::GleanToken,
        Self::OAuthRefresh,
        Self::OAuthClientCredentials,
    ];

    /// The name in the config's `kind` field and in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::GleanToken => "glean_token",
            Self::OAuthRefresh => "oauth_refresh",
            Self::OAuthClientCredentials => "oauth_client_credentials",
        }
    }

    /// The kind named `s` in a config.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Whether tokend renews it itself (OAuth) rather than people rotating it.
    pub fn renews(self) -> bool {
        self != Self::GleanToken
    }
}

impl std::fmt::Display for CredentialKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A token created in Glean's admin console. It never renews: people rotate
/// it, and tokend checks its permission, scopes and expiry before serving it.
#[derive(Debug)]
pub struct GleanToken {
    /// Whose identity the token acts with, fixed when it was created.
    pub permission: Permission,
    /// The scopes it was created with.
    pub scopes: ScopeSet,
    /// From the config; an imported secret may bring its own.
    pub expires_at: Option<Timestamp>,
    /// Whom to ask when it must be rotated.
    pub owner: Option<String>,
    /// The Glean backend it is for, e.g. `https://acme-be.glean.com`.
    pub instance: Option<String>,
    /// Where its secret is kept.
    pub secret: GleanSecret,
}

/// Where a Glean token's secret is kept.
#[derive(Debug)]
pub enum GleanSecret {
    /// Read from a file, the environment or systemd at load.
    Configured {
        /// Where it was read from.
        source: SecretSource,
        /// The secret as read.
        secret: SecretString,
    },
    /// Imported with `tokenctl import` into the encrypted store.
    Stored,
}

/// Which OAuth grant renews the access token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OAuthGrant {
    /// A refresh token from a one-time login; it may rotate on every use.
    RefreshToken,
    /// The client's own credentials, re-requested before expiry.
    ClientCredentials,
}

/// An OAuth 2.0 credential: how to reach the token endpoint and when to renew.
#[derive(Debug)]
pub struct OAuthCredential {
    /// Which grant renews the access token.
    pub grant: OAuthGrant,
    /// Discovery base (RFC 8414), used when `token_endpoint` is absent.
    pub issuer: Option<String>,
    /// Where token requests go; `None` to discover it from `issuer`.
    pub token_endpoint: Option<String>,
    /// The Glean backend its tokens are for (Glean's own authorization
    /// server, or SSO tokens sent with `X-Glean-Auth-Type: OAUTH`), for
    /// `tokenctl check`.
    pub instance: Option<String>,
    /// Where `tokenctl login` receives the authorization code.
    pub redirect_uri: String,
    /// The client id, secret and scopes sent to the token endpoint.
    pub client: oauth::Client,
    /// Sent after `Authorization`, e.g. `X-Glean-Auth-Type: OAUTH`.
    pub extra_headers: Vec<(String, String)>,
    /// The source's policy for how long a refresh token lives, for alerts.
    pub refresh_token_lifetime: Option<Duration>,
    /// Serve a still-valid token with less than `min_valid` left (flagged
    /// stale) while refreshing fails, instead of failing the call.
    pub serve_stale: bool,
    /// When to renew the access token.
    pub schedule: Schedule,
    /// Held by the fleet (`[fleet]`): one elected node refreshes it and the
    /// others serve what it publishes.
    pub shared: bool,
    /// On `invalid_grant`, present the refresh token from before the last
    /// rotation once. Only for servers with a reuse grace period: on a server
    /// with reuse detection that replay revokes the whole grant.
    pub retry_previous_refresh_token: bool,
}

/// When to renew an access token, given its lifetime.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Schedule {
    /// Renew at least this long before expiry.
    pub refresh_before: Duration,
    /// Renew when this fraction of the lifetime remains (before jitter).
    pub refresh_fraction: f64,
    /// Lifetime assumed when the server says nothing and the token is opaque.
    pub default_lifetime: Duration,
}

/// Users and groups, by id: who a rule or the admin list admits.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Principals {
    /// Admitted users.
    pub uids: Vec<u32>,
    /// Admitted groups, primary or supplementary.
    pub gids: Vec<u32>,
}

impl Principals {
    /// Whether `peer` is one of the users or in one of the groups.
    pub fn admits(&self, peer: &Peer) -> bool {
        self.uids.contains(&peer.uid) || self.gids.iter().any(|g| peer.in_group(*g))
    }
}

/// One entry of a credential's `allow` list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AllowRule {
    /// Callers this rule admits.
    pub who: Principals,
    /// For global Glean tokens: the identities callers admitted by this rule
    /// may act as.
    pub act_as: Vec<ActAsPattern>,
}

impl Credential {
    /// A digest of everything that defines the credential, secrets
    /// included: a reload keeps a credential whose fingerprint is unchanged
    /// (tokens, timers and watchers intact) and restarts one whose is not,
    /// as when a rotated secret file is picked up.
    pub fn fingerprint(&self) -> [u8; 32] {
        use secrecy::ExposeSecret as _;
        use sha2::Digest as _;
        let mut h = sha2::Sha256::new();
        // Debug shows every field but redacts secrets; they are added raw.
        h.update(format!("{self:?}").as_bytes());
        let secrets = match &self.kind {
            Kind::Glean(GleanToken {
                secret: GleanSecret::Configured { secret, .. },
                ..
            }) => Some(secret),
            Kind::OAuth(o) => o.client.client_secret.as_ref(),
            Kind::Glean(_) => None,
        };
        if let Some(secret) = secrets {
            h.update([0]);
            h.update(secret.expose_secret().as_bytes());
        }
        h.finalize().into()
    }

    /// Whether any rule admits `peer`.
    pub fn admits(&self, peer: &Peer) -> bool {
        self.allow.iter().any(|r| r.who.admits(peer))
    }

    /// The act-as patterns granted to `peer` by every rule admitting it.
    pub fn act_as_patterns<'a>(&'a self, peer: &'a Peer) -> impl Iterator<Item = &'a ActAsPattern> {
        self.allow
            .iter()
            .filter(|r| r.who.admits(peer))
            .flat_map(|r| r.act_as.iter())
    }
}

/// Who may call the administrative parts of the API (and see every
/// credential's status). Root always may, and so does the user the daemon
/// runs as: a developer who starts tokend under their own uid administers
/// it without listing themselves, and the service user can already read
/// everything the daemon holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Admins(pub Principals);

impl Admins {
    /// Whether `peer` is root, the daemon's own user or a configured admin.
    pub fn admits(&self, peer: &Peer) -> bool {
        peer.uid == 0 || peer.uid == own_uid() || self.0.admits(peer)
    }
}

/// The daemon's effective uid, read once.
fn own_uid() -> u32 {
    static UID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *UID.get_or_init(|| nix::unistd::geteuid().as_raw())
}
