//! What tokend holds for each configured credential, and who may use it.
//!
//! These are the validated forms of the config: a value of these types cannot
//! name an unknown scope, a malformed pattern, or a user that does not exist.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use secrecy::SecretString;

use crate::glean::{ActAsPattern, Permission, ScopeSet};
use crate::peer::Peer;
use crate::secret::SecretSource;

/// One configured credential.
#[derive(Debug)]
pub struct Credential {
    pub name: Arc<str>,
    /// Callers that may fetch it; a caller matched by no rule is denied.
    pub allow: Vec<AllowRule>,
    /// A token with less than this left is not handed out unless the caller
    /// asks for a different margin.
    pub min_valid: Duration,
    pub kind: Kind,
}

/// The kind-specific part of a credential.
#[derive(Debug)]
pub enum Kind {
    Glean(GleanToken),
}

impl Kind {
    /// The name used for this kind in the config and the API.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Glean(_) => "glean_token",
        }
    }
}

/// A token created in Glean's admin console. It never renews: people rotate
/// it, and tokend checks its permission, scopes and expiry before serving it.
#[derive(Debug)]
pub struct GleanToken {
    pub permission: Permission,
    pub scopes: ScopeSet,
    pub expires_at: Option<Timestamp>,
    /// Whom to ask when it must be rotated.
    pub owner: Option<String>,
    pub source: SecretSource,
    pub secret: SecretString,
}

/// One entry of a credential's `allow` list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AllowRule {
    pub uids: Vec<u32>,
    pub gids: Vec<u32>,
    /// For global Glean tokens: the identities callers admitted by this rule
    /// may act as.
    pub act_as: Vec<ActAsPattern>,
}

impl AllowRule {
    pub fn admits(&self, peer: &Peer) -> bool {
        self.uids.contains(&peer.uid) || self.gids.iter().any(|g| peer.in_group(*g))
    }
}

impl Credential {
    /// Whether any rule admits `peer`.
    pub fn admits(&self, peer: &Peer) -> bool {
        self.allow.iter().any(|r| r.admits(peer))
    }

    /// The act-as patterns granted to `peer` by every rule admitting it.
    pub fn act_as_patterns<'a>(&'a self, peer: &'a Peer) -> impl Iterator<Item = &'a ActAsPattern> {
        self.allow
            .iter()
            .filter(|r| r.admits(peer))
            .flat_map(|r| r.act_as.iter())
    }
}

/// Who may call the administrative parts of the API (and see every
/// credential's status). Root always may.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Admins {
    pub uids: Vec<u32>,
    pub gids: Vec<u32>,
}

impl Admins {
    pub fn admits(&self, peer: &Peer) -> bool {
        peer.uid == 0
            || self.uids.contains(&peer.uid)
            || self.gids.iter().any(|g| peer.in_group(*g))
    }
}
