//! What the calls take and answer, in Rust terms: jiff timestamps,
//! `Option` where the wire has empty strings or absent messages, and secrets
//! that stay out of `Debug`. Conversions from the wire live in
//! [`convert`](crate::convert).

use std::fmt;
use std::time::Duration;

use jiff::Timestamp;
use secrecy::{ExposeSecret, SecretString};

/// What a caller is about to do with a credential, for
/// [`Client::headers`](crate::Client::headers) and
/// [`Client::watch`](crate::Client::watch).
///
/// ```
/// # use std::time::Duration;
/// let req = tokend_client::HeadersRequest::new("glean-global")
///     .act_as("alice@example.com")
///     .scope("search")
///     .min_valid(Duration::from_secs(300));
/// # assert_eq!(req.scopes, ["search"]);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeadersRequest {
    /// The credential's name in tokend's config.
    pub credential: String,
    /// Email of the user to act as: required for global Glean tokens,
    /// refused for every other kind.
    pub act_as: Option<String>,
    /// Scopes the caller will use, so tokend fails the call instead of
    /// handing out a token the API would reject with 403.
    pub scopes: Vec<String>,
    /// How long the token must stay valid at least, e.g. the length of a
    /// long upload. The credential's configured `min_valid` is a floor:
    /// asking for less has no effect.
    pub min_valid: Option<Duration>,
}

impl HeadersRequest {
    /// A request for `credential` with no further conditions.
    pub fn new(credential: impl Into<String>) -> Self {
        Self {
            credential: credential.into(),
            ..Self::default()
        }
    }

    /// Act as the user with this email (global Glean tokens).
    #[must_use]
    pub fn act_as(mut self, email: impl Into<String>) -> Self {
        self.act_as = Some(email.into());
        self
    }

    /// Require one more scope.
    #[must_use]
    pub fn scope(mut self, scope: impl Into<String>) -> Self {
        self.scopes.push(scope.into());
        self
    }

    /// Require the token to stay valid at least this long.
    #[must_use]
    pub fn min_valid(mut self, min_valid: Duration) -> Self {
        self.min_valid = Some(min_valid);
        self
    }
}

/// The headers to send with one API request, in order.
///
/// The values are secrets (bearer tokens) held as [`SecretString`]s: `Debug`
/// prints only the header names, so logging a `Headers` never leaks a
/// token. [`iter`](Self::iter) and [`get`](Self::get) expose the values,
/// because the only thing to do with them is to send them.
#[derive(Clone, Default)]
pub struct Headers {
    /// When the token stops working; `None` when it does not expire.
    pub expires_at: Option<Timestamp>,
    /// Names the token in [`Client::invalidate`](crate::Client::invalidate)
    /// without sending it back (the first 16 hex digits of its SHA-256).
    pub fingerprint: String,
    /// Whether the token is being served past its refresh point because
    /// refreshing is failing (credentials with `serve_stale = true`).
    pub stale: bool,
    pub(crate) headers: Vec<(String, SecretString)>,
}

impl Headers {
    /// Every header as `(name, value)`, in the order to send them.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.headers
            .iter()
            .map(|(name, value)| (name.as_str(), value.expose_secret()))
    }

    /// The value of header `name`, compared case-insensitively as HTTP
    /// does; the first one if tokend sent several.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, value)| value)
    }

    /// The bearer token of the `Authorization` header, for clients that take
    /// a token rather than headers (e.g. a gRPC or SDK credential).
    pub fn bearer_token(&self) -> Option<&str> {
        let value = self.get("authorization")?;
        let (scheme, token) = value.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then_some(token)
    }

    /// The headers as an [`http::HeaderMap`], for any HTTP client built on
    /// the `http` crate (reqwest, hyper, tower), with the values marked
    /// sensitive so those clients keep them out of their debug output.
    /// tokend only serves valid header names and values; one that is not
    /// would be left out.
    pub fn header_map(&self) -> http::HeaderMap {
        let mut map = http::HeaderMap::with_capacity(self.headers.len());
        for (name, value) in self.iter() {
            let (Ok(name), Ok(mut value)) = (
                http::HeaderName::from_bytes(name.as_bytes()),
                http::HeaderValue::from_str(value),
            ) else {
                continue;
            };
            value.set_sensitive(true);
            map.append(name, value);
        }
        map
    }

    /// How many headers there are.
    pub fn len(&self) -> usize {
        self.headers.len()
    }

    /// Whether there are none (tokend always sends at least one; a fake
    /// daemon might not).
    pub fn is_empty(&self) -> bool {
        self.headers.is_empty()
    }
}

impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Redacted<'a>(&'a [(String, SecretString)]);
        impl fmt::Debug for Redacted<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_map()
                    .entries(
                        self.0
                            .iter()
                            .map(|(name, _)| (name, format_args!("[redacted]"))),
                    )
                    .finish()
            }
        }
        f.debug_struct("Headers")
            .field("headers", &Redacted(&self.headers))
            .field("expires_at", &self.expires_at)
            .field("fingerprint", &self.fingerprint)
            .field("stale", &self.stale)
            .finish()
    }
}

/// Where a credential stands, from the daemon's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// A usable token is held.
    Fresh,
    /// Being renewed; the current token is still served.
    Refreshing,
    /// Renewal is failing; the current token is still valid.
    Stale,
    /// The token has expired and must be rotated or renewed.
    Expired,
    /// A person must log in (no refresh token, or the grant was revoked).
    NeedsLogin,
    /// The source refuses the client or its configuration.
    Misconfigured,
    /// Unspecified, or a state newer than this client knows.
    Unknown,
}

impl State {
    /// The lower-case name `tokenctl status` prints and its JSON output
    /// uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fresh => "fresh",
            Self::Refreshing => "refreshing",
            Self::Stale => "stale",
            Self::Expired => "expired",
            Self::NeedsLogin => "needs_login",
            Self::Misconfigured => "misconfigured",
            Self::Unknown => "unknown",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `pad`, so tables can write `{:<13}`.
        f.pad(self.as_str())
    }
}

/// One credential the caller may fetch, as `tokenctl status` shows it.
/// Never carries secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialStatus {
    /// The credential's name in the config.
    pub name: String,
    /// Its config kind, e.g. `glean_token`.
    pub kind: String,
    /// For Glean tokens: "user", "global" or "anonymous".
    pub permission: Option<String>,
    /// Where it stands.
    pub state: State,
    /// When the token stops working; `None` when it does not expire (or
    /// there is none).
    pub expires_at: Option<Timestamp>,
    /// The scopes the token carries.
    pub scopes: Vec<String>,
    /// Owner email from the config, the person to contact on rotation.
    pub owner: Option<String>,
    /// The Glean instance the credential is for.
    pub instance: Option<String>,
    /// The last error a person should know about; `None` when healthy.
    pub last_error: Option<String>,
    /// When it was last refreshed.
    pub last_refresh: Option<Timestamp>,
    /// When the next refresh is due.
    pub next_refresh: Option<Timestamp>,
    /// For a shared credential: this node's place in the fleet.
    pub fleet: Option<FleetMembership>,
}

/// A node's place in the fleet for one shared credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetMembership {
    /// This node's name.
    pub node: String,
    /// `leader` (this node refreshes it), `follower` or `unreachable`.
    pub role: String,
    /// The node that refreshes the credential, when known.
    pub leader: Option<String>,
    /// Set while etcd is unreachable.
    pub unreachable_since: Option<Timestamp>,
}

/// An open alert about a credential the caller may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    /// Identifies the alert across repeats, as the sinks deduplicate it.
    pub dedup_key: String,
    /// The credential it is about.
    pub credential: String,
    /// `expiring`, `expired`, `refresh_failing`, `needs_login` or
    /// `misconfigured`.
    pub event: String,
    /// `info`, `warning` or `critical`.
    pub severity: String,
    /// One line for a person.
    pub summary: String,
    /// The credential's expiry, when it has one.
    pub expires_at: Option<Timestamp>,
    /// When the alert was raised.
    pub opened_at: Option<Timestamp>,
    /// When a sink was last sent it.
    pub last_sent: Option<Timestamp>,
}

/// The token a refresh, login or refresh-token import produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refreshed {
    /// When it stops working; `None` when it does not expire.
    pub expires_at: Option<Timestamp>,
    /// Its fingerprint, as [`Headers::fingerprint`] reports it.
    pub fingerprint: String,
}

/// What a login needs to send a person to the authorization server, from
/// [`Client::begin_login`](crate::Client::begin_login).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginInfo {
    /// The issuer's authorization endpoint (discovered by the daemon).
    pub authorization_endpoint: String,
    /// The client id to put in the authorization request.
    pub client_id: String,
    /// The scopes to ask for.
    pub scopes: Vec<String>,
    /// Where the authorization server sends the browser back to.
    pub redirect_uri: String,
}

/// Who the daemon sees on a connection, from [`Client::whoami`](crate::Client::whoami).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WhoAmI {
    /// The caller's uid.
    pub uid: u32,
    /// The caller's primary gid.
    pub gid: u32,
    /// Supplementary groups, without the primary one.
    pub groups: Vec<u32>,
    /// `None` when the caller is in another pid namespace.
    pub pid: Option<i32>,
    /// Whether the caller may use the admin commands (and sees every
    /// credential's status).
    pub admin: bool,
    /// The credentials whose `allow` admits the caller, sorted.
    pub credentials: Vec<String>,
    /// The `[[proxy]]` listeners whose credential admits the caller.
    pub proxies: Vec<ProxyEndpoint>,
}

/// A `[[proxy]]` the caller may use, from [`WhoAmI`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyEndpoint {
    /// The proxy's name.
    pub name: String,
    /// The credential whose headers it injects.
    pub credential: String,
    /// Where it listens: `127.0.0.1:8787` (the port bound) or
    /// `unix:/run/tokend/glean.sock`.
    pub listen: String,
    /// Where it forwards to.
    pub upstream: String,
}

impl ProxyEndpoint {
    /// The base URL HTTP clients use: `http://127.0.0.1:8787`, or
    /// `http://localhost` for a Unix socket (the client connects to the
    /// socket itself).
    pub fn url(&self) -> String {
        if self.listen.starts_with("unix:") {
            "http://localhost".to_owned()
        } else {
            format!("http://{}", self.listen)
        }
    }

    /// The Unix socket's path, when it listens on one.
    pub fn socket(&self) -> Option<&str> {
        self.listen.strip_prefix("unix:")
    }
}

/// What a config reload changed, by credential name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reloaded {
    /// Credentials new in the config.
    pub added: Vec<String>,
    /// Credentials whose settings changed.
    pub changed: Vec<String>,
    /// Credentials no longer in the config.
    pub removed: Vec<String>,
    /// How many credentials stayed as they were.
    pub unchanged: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    const CANARY: &str = "canary-7f3a9c-secret-token";

    fn headers() -> Headers {
        Headers {
            expires_at: None,
            fingerprint: "0123456789abcdef".into(),
            stale: false,
            headers: vec![
                (
                    "Authorization".into(),
                    SecretString::from(format!("Bearer {CANARY}")),
                ),
                (
                    "X-Glean-ActAs".into(),
                    SecretString::from(CANARY.to_owned()),
                ),
            ],
        }
    }

    #[test]
    fn debug_never_shows_values() {
        let h = headers();
        for rendered in [format!("{h:?}"), format!("{h:#?}")] {
            assert!(!rendered.contains(CANARY), "{rendered}");
            assert!(!rendered.contains("Bearer"), "{rendered}");
            assert!(rendered.contains("Authorization"), "{rendered}");
            assert!(rendered.contains("X-Glean-ActAs"), "{rendered}");
            assert!(rendered.contains("[redacted]"), "{rendered}");
            assert!(rendered.contains("0123456789abcdef"), "{rendered}");
        }
        // Nor through containers that derive Debug.
        let rendered = format!("{:?}", Some(vec![h]));
        assert!(!rendered.contains(CANARY), "{rendered}");
    }

    #[test]
    fn values_are_exposed_for_sending() {
        let h = headers();
        assert_eq!(h.len(), 2);
        assert!(!h.is_empty());
        let all: Vec<_> = h.iter().collect();
        assert_eq!(
            all[0],
            ("Authorization", format!("Bearer {CANARY}").as_str())
        );
        assert_eq!(all[1], ("X-Glean-ActAs", CANARY));
        assert_eq!(
            h.get("authorization"),
            Some(format!("Bearer {CANARY}").as_str())
        );
        assert_eq!(h.get("x-glean-actas"), Some(CANARY));
        assert_eq!(h.get("Cookie"), None);
        assert_eq!(h.bearer_token(), Some(CANARY));
    }

    #[test]
    fn bearer_token_needs_the_bearer_scheme() {
        let with = |value: &str| Headers {
            headers: vec![("authorization".into(), SecretString::from(value.to_owned()))],
            ..Headers::default()
        };
        assert_eq!(with("bearer abc").bearer_token(), Some("abc"));
        assert_eq!(with("Basic YWJj").bearer_token(), None);
        assert_eq!(with("Bearer").bearer_token(), None);
        assert_eq!(Headers::default().bearer_token(), None);
        assert!(Headers::default().is_empty());
    }

    #[test]
    fn request_builder() {
        let req = HeadersRequest::new("gh")
            .act_as("a@example.com")
            .scope("repo")
            .scope("read:org")
            .min_valid(Duration::from_secs(60));
        assert_eq!(
            req,
            HeadersRequest {
                credential: "gh".into(),
                act_as: Some("a@example.com".into()),
                scopes: vec!["repo".into(), "read:org".into()],
                min_valid: Some(Duration::from_secs(60)),
            }
        );
        assert_eq!(HeadersRequest::new("x").act_as, None);
    }

    #[test]
    fn state_names() {
        assert_eq!(State::NeedsLogin.as_str(), "needs_login");
        assert_eq!(State::Unknown.to_string(), "unknown");
        assert_eq!(format!("{:<7}|", State::Fresh), "fresh  |");
    }
}
