//! The broker: every configured credential by name, and the decision whether
//! a caller gets headers for one.
//!
//! Checks run in the order a person fixes them: does the credential exist, may
//! this caller use it, is the request well-formed for its kind, may the caller
//! act as whom it asks, does the token have the scopes, is it still valid.
//! The cached path borrows the prepared `Authorization` value and allocates
//! nothing; the caller's `act_as` string moves through to the header.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use secrecy::{ExposeSecret, SecretString};

use crate::clock;
use crate::config::Config;
use crate::credential::{Admins, Credential, Kind};
use crate::glean::{self, Permission, Scope, ScopeSet};
use crate::peer::Peer;

/// A caller's request for the headers of one credential.
#[derive(Clone, Copy, Debug, Default)]
pub struct HeadersRequest<'a> {
    pub credential: &'a str,
    /// Empty when not acting as anyone.
    pub act_as: &'a str,
    pub required_scopes: &'a [String],
    /// A margin beyond the credential's own `min_valid`, which is a floor:
    /// a caller may ask for more time, never for less.
    pub min_valid: Option<Duration>,
}

/// Headers granted to a caller, borrowing the token from the broker.
#[derive(Debug)]
pub struct Grant<'a> {
    /// The full `Authorization` value, `Bearer <token>`.
    pub authorization: &'a SecretString,
    /// Value for `X-Glean-ActAs`, for global Glean tokens.
    pub act_as: Option<&'a str>,
    pub expires_at: Option<Timestamp>,
}

impl Grant<'_> {
    /// The headers in the order to send them.
    pub fn headers(&self) -> impl Iterator<Item = (&'static str, &str)> {
        std::iter::once(("Authorization", self.authorization.expose_secret()))
            .chain(self.act_as.map(|a| (glean::ACT_AS_HEADER, a)))
    }
}

/// Why a caller gets no headers. Every message names the credential and what
/// to do; none carries a secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerError {
    /// No credential has this name.
    #[error(
        "no credential named `{name}` is configured; `tokenctl status` lists those you may use"
    )]
    NotFound { name: String },
    /// The caller is admitted by none of the credential's `allow` rules.
    #[error(
        "uid {uid} (gid {gid}, pid {pid}) may not use credential `{name}`; add the uid or one of \
         its groups to the credential's `allow` in tokend's config"
    )]
    CallerDenied {
        name: Arc<str>,
        uid: u32,
        gid: u32,
        pid: i32,
    },
    /// A global Glean token was asked for without `act_as`.
    #[error(
        "credential `{name}` is a global Glean token, which requires the {header} header: \
         set act_as to the email of the user to act as",
        header = glean::ACT_AS_HEADER
    )]
    ActAsRequired { name: Arc<str> },
    /// A token that cannot act as others was asked for with `act_as`.
    #[error(
        "credential `{name}` is a {permission} Glean token, for which Glean requires {header} \
         to be empty; drop act_as (only global tokens act as other users)",
        header = glean::ACT_AS_HEADER
    )]
    ActAsRefused {
        name: Arc<str>,
        permission: Permission,
    },
    /// `act_as` is not an email address.
    #[error("act_as {act_as:?} for credential `{name}` is not an email address")]
    ActAsInvalid { name: Arc<str>, act_as: String },
    /// The caller's `allow.act_as` patterns do not cover `act_as`.
    #[error(
        "uid {uid} may not act as `{act_as}` with credential `{name}`; add a matching pattern \
         to `allow.act_as` for that caller in tokend's config"
    )]
    ActAsDenied {
        name: Arc<str>,
        uid: u32,
        act_as: String,
    },
    /// A required scope is not one of Glean's.
    #[error(
        "required scope `{scope}` for credential `{name}` is not a Glean scope; Glean's scopes \
         are {}", Scope::names().join(", ")
    )]
    UnknownScope { name: Arc<str>, scope: String },
    /// The token lacks scopes the caller needs.
    #[error(
        "credential `{name}` lacks scope(s) {missing}; a Glean token's scopes are fixed when it \
         is created: create one with them in Glean's admin console and rotate it into tokend"
    )]
    MissingScopes { name: Arc<str>, missing: ScopeSet },
    /// The token has expired.
    #[error(
        "credential `{name}` expired at {at} ({ago} ago); it must be rotated: create a new \
         token in Glean's admin console{owner} and update its secret in tokend",
        ago = clock::human(*ago),
        owner = owner.as_deref().map(|o| format!(" (owner: {o})")).unwrap_or_default()
    )]
    Expired {
        name: Arc<str>,
        at: Timestamp,
        ago: Duration,
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
        name: Arc<str>,
        at: Timestamp,
        left: Duration,
        min_valid: Duration,
    },
}

/// A credential's condition, as shown by `ListCredentials`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Fresh,
    Expired,
}

/// What `ListCredentials` reports of one credential; no secrets.
#[derive(Clone, Debug)]
pub struct Status {
    pub name: Arc<str>,
    pub kind: &'static str,
    pub permission: Option<Permission>,
    pub state: State,
    pub expires_at: Option<Timestamp>,
    pub scopes: ScopeSet,
    pub owner: Option<String>,
}

/// One credential and what is served for it.
#[derive(Debug)]
struct Slot {
    credential: Credential,
    /// `Bearer <token>`, prepared once.
    authorization: SecretString,
}

/// Every configured credential, by name.
#[derive(Debug)]
pub struct Broker {
    slots: HashMap<Arc<str>, Slot>,
    /// Sorted, for stable listings.
    names: Vec<Arc<str>>,
    admins: Admins,
}

impl Broker {
    pub fn new(config: Config) -> Self {
        let admins = config.daemon.admins;
        let mut names = Vec::with_capacity(config.credentials.len());
        let slots = config
            .credentials
            .into_iter()
            .map(|credential| {
                let Kind::Glean(g) = &credential.kind;
                let authorization = format!("Bearer {}", g.secret.expose_secret()).into();
                names.push(Arc::clone(&credential.name));
                (
                    Arc::clone(&credential.name),
                    Slot {
                        credential,
                        authorization,
                    },
                )
            })
            .collect();
        names.sort();
        Self {
            slots,
            names,
            admins,
        }
    }

    /// Whether `peer` may call administrative methods and see everything.
    pub fn is_admin(&self, peer: &Peer) -> bool {
        self.admins.admits(peer)
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The headers `peer` should send for `req`, or why it gets none.
    pub fn get_headers<'a>(
        &'a self,
        peer: &Peer,
        req: HeadersRequest<'a>,
        now: Timestamp,
    ) -> Result<Grant<'a>, BrokerError> {
        let slot = self
            .slots
            .get(req.credential)
            .ok_or_else(|| BrokerError::NotFound {
                name: req.credential.to_owned(),
            })?;
        let c = &slot.credential;
        let name = || Arc::clone(&c.name);
        if !c.admits(peer) {
            return Err(BrokerError::CallerDenied {
                name: name(),
                uid: peer.uid,
                gid: peer.gid,
                pid: peer.pid.unwrap_or(0),
            });
        }
        let Kind::Glean(g) = &c.kind;
        let act_as = match (g.permission, req.act_as.is_empty()) {
            (Permission::Global, true) => return Err(BrokerError::ActAsRequired { name: name() }),
            (Permission::Global, false) => {
                if !glean::is_valid_email(req.act_as) {
                    return Err(BrokerError::ActAsInvalid {
                        name: name(),
                        act_as: req.act_as.to_owned(),
                    });
                }
                if !c.act_as_patterns(peer).any(|p| p.matches(req.act_as)) {
                    return Err(BrokerError::ActAsDenied {
                        name: name(),
                        uid: peer.uid,
                        act_as: req.act_as.to_owned(),
                    });
                }
                Some(req.act_as)
            }
            (permission, false) => {
                return Err(BrokerError::ActAsRefused {
                    name: name(),
                    permission,
                });
            }
            (_, true) => None,
        };
        let mut required = ScopeSet::default();
        for s in req.required_scopes {
            match s.parse::<Scope>() {
                Ok(scope) => required.insert(scope),
                Err(()) => {
                    return Err(BrokerError::UnknownScope {
                        name: name(),
                        scope: s.clone(),
                    });
                }
            }
        }
        let missing = required.missing_from(g.scopes);
        if !missing.is_empty() {
            return Err(BrokerError::MissingScopes {
                name: name(),
                missing,
            });
        }
        if let Some(at) = g.expires_at {
            let min_valid = req.min_valid.map_or(c.min_valid, |m| m.max(c.min_valid));
            if at <= now {
                return Err(BrokerError::Expired {
                    name: name(),
                    at,
                    ago: clock::between(at, now),
                    owner: g.owner.clone(),
                });
            }
            let left = clock::between(now, at);
            if left < min_valid {
                return Err(BrokerError::ExpiresTooSoon {
                    name: name(),
                    at,
                    left,
                    min_valid,
                });
            }
        }
        Ok(Grant {
            authorization: &slot.authorization,
            act_as,
            expires_at: g.expires_at,
        })
    }

    /// Status of each credential `peer` may use (of all, for admins), by name.
    pub fn list(&self, peer: &Peer, now: Timestamp) -> Vec<Status> {
        let admin = self.is_admin(peer);
        self.names
            .iter()
            .filter_map(|n| self.slots.get(n))
            .filter(|s| admin || s.credential.admits(peer))
            .map(|s| {
                let c = &s.credential;
                let Kind::Glean(g) = &c.kind;
                let expired = g.expires_at.is_some_and(|at| at <= now);
                Status {
                    name: Arc::clone(&c.name),
                    kind: c.kind.name(),
                    permission: Some(g.permission),
                    state: if expired {
                        State::Expired
                    } else {
                        State::Fresh
                    },
                    expires_at: g.expires_at,
                    scopes: g.scopes,
                    owner: g.owner.clone(),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config;

    const CONFIG: &str = r#"
[[credential]]
name = "user"
kind = "glean_token"
permission = "user"
scopes = ["SEARCH"]
expires_at = "2030-01-01T00:00:00Z"
owner = "ops@corp.example"
secret = { env = "PATH" }
allow = { uids = [1000] }

[[credential]]
name = "global"
kind = "glean_token"
permission = "global"
scopes = ["SEARCH", "CHAT"]
secret = { env = "PATH" }
allow = [{ uids = [1000], act_as = ["*@corp.example"] }, { groups = [50], act_as = ["*@*"] }]
"#;

    fn broker() -> Broker {
        Broker::new(config::parse(Path::new("/etc/tokend.toml"), CONFIG).unwrap())
    }

    fn peer(uid: u32, groups: &[u32]) -> Peer {
        Peer {
            uid,
            gid: uid,
            pid: Some(42),
            groups: groups.into(),
            exe: None,
        }
    }

    fn req<'a>(name: &'a str, act_as: &'a str, scopes: &[&str]) -> HeadersRequest<'a> {
        // Leaked: a test's few strings, so requests can be Copy like real ones.
        let scopes: Vec<String> = scopes.iter().map(|s| s.to_string()).collect();
        HeadersRequest {
            credential: name,
            act_as,
            required_scopes: Vec::leak(scopes),
            min_valid: None,
        }
    }

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn user_token_yields_only_authorization() {
        let b = broker();
        let now = at("2029-01-01T00:00:00Z");
        let g = b
            .get_headers(&peer(1000, &[]), req("user", "", &["search"]), now)
            .unwrap();
        let names: Vec<&str> = g.headers().map(|(n, _)| n).collect();
        assert_eq!(names, ["Authorization"]);
        assert!(g.authorization.expose_secret().starts_with("Bearer "));
        assert_eq!(g.expires_at, Some(at("2030-01-01T00:00:00Z")));
    }

    #[test]
    fn act_as_rules_follow_the_callers_patterns() {
        let b = broker();
        let now = at("2029-01-01T00:00:00Z");
        let g = b
            .get_headers(&peer(1000, &[]), req("global", "a@corp.example", &[]), now)
            .unwrap();
        let h: Vec<(&str, &str)> = g.headers().collect();
        assert_eq!(h[1], ("X-Glean-ActAs", "a@corp.example"));
        let e = b
            .get_headers(&peer(1000, &[]), req("global", "a@other.example", &[]), now)
            .unwrap_err();
        assert!(matches!(e, BrokerError::ActAsDenied { .. }), "{e}");
        // Group 50's rule allows anyone.
        assert!(
            b.get_headers(&peer(7, &[50]), req("global", "a@other.example", &[]), now)
                .is_ok()
        );
        let e = b
            .get_headers(&peer(1000, &[]), req("global", "", &[]), now)
            .unwrap_err();
        assert!(e.to_string().contains("X-Glean-ActAs"), "{e}");
        let e = b
            .get_headers(&peer(1000, &[]), req("global", "nobody", &[]), now)
            .unwrap_err();
        assert!(matches!(e, BrokerError::ActAsInvalid { .. }));
        let e = b
            .get_headers(&peer(1000, &[]), req("user", "a@corp.example", &[]), now)
            .unwrap_err();
        assert!(matches!(e, BrokerError::ActAsRefused { .. }));
    }

    #[test]
    fn default_deny_and_unknown_names() {
        let b = broker();
        let now = at("2029-01-01T00:00:00Z");
        let e = b
            .get_headers(&peer(1001, &[]), req("user", "", &[]), now)
            .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("uid 1001 (gid 1001, pid 42) may not use credential `user`")
        );
        let e = b
            .get_headers(&peer(1000, &[]), req("nope", "", &[]), now)
            .unwrap_err();
        assert!(matches!(e, BrokerError::NotFound { .. }));
        assert_eq!(b.list(&peer(1001, &[]), now).len(), 0);
        assert_eq!(b.list(&peer(7, &[50]), now).len(), 1);
        assert_eq!(b.list(&peer(0, &[]), now).len(), 2);
    }

    #[test]
    fn scopes_and_expiry() {
        let b = broker();
        let p = peer(1000, &[]);
        let now = at("2029-01-01T00:00:00Z");
        let e = b
            .get_headers(&p, req("user", "", &["SEARCH", "CHAT", "PEOPLE"]), now)
            .unwrap_err();
        assert!(e.to_string().contains("lacks scope(s) CHAT, PEOPLE"), "{e}");
        let e = b
            .get_headers(&p, req("user", "", &["SERCH"]), now)
            .unwrap_err();
        assert!(matches!(e, BrokerError::UnknownScope { .. }));
        let e = b
            .get_headers(&p, req("user", "", &[]), at("2030-01-01T03:00:00Z"))
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("expired at 2030-01-01T00:00:00Z (3h 0m ago)"),
            "{e}"
        );
        assert!(e.to_string().contains("owner: ops@corp.example"), "{e}");
        let e = b
            .get_headers(&p, req("user", "", &[]), at("2029-12-31T23:59:30Z"))
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("in 30s, sooner than the 1m 0s required"),
            "{e}"
        );
        // The credential's 60 s is a floor a caller cannot lower, only raise.
        let mut r = req("user", "", &[]);
        r.min_valid = Some(Duration::from_secs(10));
        assert!(b.get_headers(&p, r, at("2029-12-31T23:59:30Z")).is_err());
        let two_minutes_left = at("2029-12-31T23:58:00Z");
        assert!(b.get_headers(&p, r, two_minutes_left).is_ok());
        r.min_valid = Some(Duration::from_secs(300));
        let e = b.get_headers(&p, r, two_minutes_left).unwrap_err();
        assert!(
            e.to_string().contains("sooner than the 5m 0s required"),
            "{e}"
        );
        let list = b.list(&p, at("2031-01-01T00:00:00Z"));
        let names: Vec<&str> = list.iter().map(|s| &*s.name).collect();
        assert_eq!(names, ["global", "user"]);
        assert_eq!(
            (list[0].state, list[1].state),
            (State::Fresh, State::Expired)
        );
    }
}
