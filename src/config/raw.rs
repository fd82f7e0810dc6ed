//! The config file's shape as serde reads it: every value keeps its byte
//! span, so validation can say where a problem is.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::PathBuf;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_spanned::Spanned;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default)]
    pub(super) daemon: RawDaemon,
    #[serde(default)]
    pub(super) store: RawStore,
    pub(super) alerts: Option<RawAlerts>,
    #[serde(default)]
    pub(super) metrics: RawMetrics,
    #[serde(default)]
    pub(super) credential: Vec<RawCredential>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMetrics {
    pub(super) listen: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAlerts {
    pub(super) thresholds: Option<Vec<Spanned<String>>>,
    pub(super) repeat_expiring: Option<Spanned<String>>,
    pub(super) repeat_failing: Option<Spanned<String>>,
    pub(super) refresh_failing_after: Option<Spanned<String>>,
    pub(super) sweep: Option<Spanned<String>>,
    pub(super) digest: Option<Spanned<String>>,
    pub(super) source: Option<String>,
    #[serde(default)]
    pub(super) sink: Vec<RawSink>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSink {
    pub(super) name: Spanned<String>,
    #[serde(rename = "type")]
    pub(super) kind: Spanned<String>,
    pub(super) min_severity: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) credentials: Vec<String>,
    pub(super) url: Option<Spanned<String>>,
    pub(super) url_secret: Option<Spanned<RawSecret>>,
    pub(super) format: Option<Spanned<String>>,
    pub(super) headers: Option<BTreeMap<String, String>>,
    pub(super) routing_key: Option<Spanned<RawSecret>>,
    pub(super) command: Option<Spanned<Vec<String>>>,
    pub(super) timeout: Option<Spanned<String>>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStore {
    pub(super) path: Option<PathBuf>,
    pub(super) key_file: Option<PathBuf>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDaemon {
    pub(super) socket: Option<PathBuf>,
    pub(super) socket_mode: Option<Spanned<u32>>,
    pub(super) socket_group: Option<Spanned<Principal>>,
    #[serde(default)]
    pub(super) admin_uids: Vec<Spanned<Principal>>,
    #[serde(default)]
    pub(super) admin_groups: Vec<Spanned<Principal>>,
    pub(super) shutdown_timeout: Option<Spanned<String>>,
    pub(super) http_timeout: Option<Spanned<String>>,
    pub(super) max_backoff: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCredential {
    pub(super) name: Spanned<String>,
    pub(super) kind: Spanned<String>,
    pub(super) permission: Option<Spanned<String>>,
    pub(super) scopes: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) expires_at: Option<Spanned<String>>,
    pub(super) owner: Option<Spanned<String>>,
    pub(super) secret: Option<Spanned<RawSecret>>,
    #[serde(default)]
    pub(super) allow: OneOrMany<RawAllow>,
    pub(super) min_valid: Option<Spanned<String>>,
    pub(super) issuer: Option<Spanned<String>>,
    pub(super) token_endpoint: Option<Spanned<String>>,
    pub(super) client_id: Option<Spanned<String>>,
    pub(super) client_secret: Option<Spanned<RawSecret>>,
    pub(super) auth_method: Option<Spanned<String>>,
    pub(super) extra_params: Option<Spanned<BTreeMap<String, String>>>,
    pub(super) extra_headers: Option<Spanned<BTreeMap<String, String>>>,
    pub(super) refresh_token_lifetime: Option<Spanned<String>>,
    pub(super) serve_stale: Option<Spanned<bool>>,
    pub(super) refresh_before: Option<Spanned<String>>,
    pub(super) refresh_fraction: Option<Spanned<f64>>,
    pub(super) default_lifetime: Option<Spanned<String>>,
    pub(super) redirect_uri: Option<Spanned<String>>,
    pub(super) instance: Option<Spanned<String>>,
}

impl RawCredential {
    /// Positions of the fields that are set, by name, for "does not apply
    /// to this kind" checks.
    pub(super) fn present(&self) -> Vec<(&'static str, Range<usize>)> {
        let span = |name, s: Option<Range<usize>>| s.map(|s| (name, s));
        [
            span("permission", self.permission.as_ref().map(Spanned::span)),
            span("expires_at", self.expires_at.as_ref().map(Spanned::span)),
            span("owner", self.owner.as_ref().map(Spanned::span)),
            span("secret", self.secret.as_ref().map(Spanned::span)),
            span("issuer", self.issuer.as_ref().map(Spanned::span)),
            span(
                "token_endpoint",
                self.token_endpoint.as_ref().map(Spanned::span),
            ),
            span("client_id", self.client_id.as_ref().map(Spanned::span)),
            span(
                "client_secret",
                self.client_secret.as_ref().map(Spanned::span),
            ),
            span("auth_method", self.auth_method.as_ref().map(Spanned::span)),
            span(
                "extra_params",
                self.extra_params.as_ref().map(Spanned::span),
            ),
            span(
                "extra_headers",
                self.extra_headers.as_ref().map(Spanned::span),
            ),
            span(
                "refresh_token_lifetime",
                self.refresh_token_lifetime.as_ref().map(Spanned::span),
            ),
            span("serve_stale", self.serve_stale.as_ref().map(Spanned::span)),
            span(
                "refresh_before",
                self.refresh_before.as_ref().map(Spanned::span),
            ),
            span(
                "refresh_fraction",
                self.refresh_fraction.as_ref().map(Spanned::span),
            ),
            span(
                "default_lifetime",
                self.default_lifetime.as_ref().map(Spanned::span),
            ),
            span(
                "redirect_uri",
                self.redirect_uri.as_ref().map(Spanned::span),
            ),
            span("instance", self.instance.as_ref().map(Spanned::span)),
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub(super) enum RawSecret {
    File(PathBuf),
    Env(String),
    Credential(String),
    Store(bool),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAllow {
    #[serde(default)]
    pub(super) uids: Vec<Spanned<Principal>>,
    #[serde(default)]
    pub(super) groups: Vec<Spanned<Principal>>,
    #[serde(default)]
    pub(super) act_as: Vec<Spanned<String>>,
}

/// A user or group, by number or by name.
#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum Principal {
    Id(u32),
    Name(String),
}

/// `allow = { … }` or `allow = [{ … }, { … }]`. Written by hand because
/// serde's untagged enums buffer their input and lose the positions of the
/// values inside.
pub(super) struct OneOrMany<T>(pub(super) Vec<T>);

impl<T> Default for OneOrMany<T> {
    fn default() -> Self {
        Self(Vec::new())
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for OneOrMany<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = OneOrMany<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a table or an array of tables")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(|t| OneOrMany(vec![t]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                Vec::<T>::deserialize(de::value::SeqAccessDeserializer::new(seq)).map(OneOrMany)
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}
