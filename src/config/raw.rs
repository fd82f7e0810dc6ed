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
    #[serde(default)]
    pub(super) proxy: Vec<RawProxy>,
    pub(super) fleet: Option<Spanned<RawFleet>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFleet {
    pub(super) endpoints: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) prefix: Option<Spanned<String>>,
    pub(super) node: Option<Spanned<String>>,
    pub(super) lease_ttl: Option<Spanned<String>>,
    pub(super) key_file: Option<PathBuf>,
    pub(super) user: Option<Spanned<String>>,
    pub(super) password: Option<Spanned<RawSecret>>,
    pub(super) tls_ca_file: Option<PathBuf>,
    pub(super) tls_cert_file: Option<PathBuf>,
    pub(super) tls_key_file: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawProxy {
    pub(super) name: Spanned<String>,
    pub(super) listen: Spanned<String>,
    pub(super) credential: Spanned<String>,
    pub(super) upstream: Option<Spanned<String>>,
    pub(super) ca_file: Option<Spanned<PathBuf>>,
    pub(super) max_request_body: Option<Spanned<String>>,
    pub(super) upstream_timeout: Option<Spanned<String>>,
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

/// Header names and values, each with its position, so that a bad one is
/// pointed at rather than quoted.
pub(super) type RawHeaders = BTreeMap<Spanned<String>, Spanned<String>>;

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
    pub(super) headers: Option<RawHeaders>,
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
    pub(super) issuer_concurrency: Option<Spanned<u32>>,
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
    pub(super) extra_headers: Option<Spanned<RawHeaders>>,
    pub(super) refresh_token_lifetime: Option<Spanned<String>>,
    pub(super) serve_stale: Option<Spanned<bool>>,
    pub(super) refresh_before: Option<Spanned<String>>,
    pub(super) refresh_fraction: Option<Spanned<f64>>,
    pub(super) default_lifetime: Option<Spanned<String>>,
    pub(super) redirect_uri: Option<Spanned<String>>,
    pub(super) instance: Option<Spanned<String>>,
    pub(super) shared: Option<Spanned<bool>>,
    pub(super) retry_previous_refresh_token: Option<Spanned<bool>>,
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
            span("shared", self.shared.as_ref().map(Spanned::span)),
            span(
                "retry_previous_refresh_token",
                self.retry_previous_refresh_token
                    .as_ref()
                    .map(Spanned::span),
            ),
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}

/// `secret = { file | env | credential | store = … }`. Read by hand so that
/// nothing written in its place (most often the secret itself, inline) ever
/// reaches an error message: serde's own messages quote the value they
/// refused. A wrong shape becomes [`RawSecret::Invalid`], reported during
/// validation with the field's full name and without its content.
pub(super) enum RawSecret {
    File(PathBuf),
    Env(String),
    Credential(String),
    Store(bool),
    Invalid(BadSecret),
}

/// What is wrong with a secret source, never what was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum BadSecret {
    /// A string, number, boolean, date or array where a source table
    /// belongs: `what` is "a string", "an array", …
    Inline { what: &'static str },
    /// A table with no keys, or with a key that is no source.
    NoSource,
    /// A table naming more than one source.
    SeveralSources,
    /// A source whose value has the wrong type, e.g. `{ file = 1 }`.
    WrongType {
        source: &'static str,
        expected: &'static str,
    },
}

/// The source keys, as they are written.
const SOURCE_KEYS: [&str; 4] = ["file", "env", "credential", "store"];

impl<'de> Deserialize<'de> for RawSecret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(SecretVisitor)
    }
}

struct SecretVisitor;

impl SecretVisitor {
    fn inline<E>(what: &'static str) -> Result<RawSecret, E> {
        Ok(RawSecret::Invalid(BadSecret::Inline { what }))
    }
}

impl<'de> Visitor<'de> for SecretVisitor {
    type Value = RawSecret;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a secret source table")
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<RawSecret, E> {
        Self::inline("a string")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<RawSecret, E> {
        Self::inline("a boolean")
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<RawSecret, E> {
        Self::inline("a number")
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<RawSecret, E> {
        Self::inline("a number")
    }
    fn visit_i128<E: de::Error>(self, _: i128) -> Result<RawSecret, E> {
        Self::inline("a number")
    }
    fn visit_u128<E: de::Error>(self, _: u128) -> Result<RawSecret, E> {
        Self::inline("a number")
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<RawSecret, E> {
        Self::inline("a number")
    }
    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<RawSecret, E> {
        Self::inline("a string")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawSecret, A::Error> {
        while seq.next_element::<de::IgnoredAny>()?.is_some() {}
        Self::inline("an array")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawSecret, A::Error> {
        let mut found = None;
        let mut bad = None;
        let mut keys = 0;
        while let Some(key) = map.next_key::<Shape>()? {
            keys += 1;
            let value = map.next_value::<Shape>()?;
            let source = match &key {
                Shape::Str(k) => SOURCE_KEYS.iter().find(|s| *s == k).copied(),
                _ => None,
            };
            let Some(source) = source else {
                bad.get_or_insert(if is_date_key(&key) {
                    BadSecret::Inline { what: "a date" }
                } else {
                    BadSecret::NoSource
                });
                continue;
            };
            found = Some(match (source, value) {
                ("file", Shape::Str(v)) => RawSecret::File(v.into()),
                ("env", Shape::Str(v)) => RawSecret::Env(v),
                ("credential", Shape::Str(v)) => RawSecret::Credential(v),
                ("store", Shape::Bool(b)) => RawSecret::Store(b),
                (source, _) => RawSecret::Invalid(BadSecret::WrongType {
                    source,
                    expected: match source {
                        "file" => "a path string",
                        "store" => "true",
                        _ => "a name string",
                    },
                }),
            });
        }
        Ok(match (bad, found) {
            (Some(b @ BadSecret::Inline { .. }), _) => RawSecret::Invalid(b),
            _ if keys > 1 => RawSecret::Invalid(BadSecret::SeveralSources),
            (Some(b), _) => RawSecret::Invalid(b),
            (None, Some(found)) => found,
            (None, None) => RawSecret::Invalid(BadSecret::NoSource),
        })
    }
}

/// The toml crate hands a date to a visitor as a table with one private key.
fn is_date_key(key: &Shape) -> bool {
    matches!(key, Shape::Str(k) if k.starts_with("$__toml_private"))
}

/// A value inside a secret source, kept only when it is a string or a
/// boolean; anything else is known by its type alone, so no error about it
/// can quote it.
enum Shape {
    Str(String),
    Bool(bool),
    Date,
    Other,
}

impl<'de> Deserialize<'de> for Shape {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Shape;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any value")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Shape, E> {
                Ok(Shape::Str(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Shape, E> {
                Ok(Shape::Str(v))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Shape, E> {
                Ok(Shape::Bool(v))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Shape, E> {
                Ok(Shape::Other)
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Shape, E> {
                Ok(Shape::Other)
            }
            fn visit_i128<E: de::Error>(self, _: i128) -> Result<Shape, E> {
                Ok(Shape::Other)
            }
            fn visit_u128<E: de::Error>(self, _: u128) -> Result<Shape, E> {
                Ok(Shape::Other)
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Shape, E> {
                Ok(Shape::Other)
            }
            fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<Shape, E> {
                Ok(Shape::Other)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Shape, E> {
                Ok(Shape::Other)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Shape, A::Error> {
                while seq.next_element::<de::IgnoredAny>()?.is_some() {}
                Ok(Shape::Other)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Shape, A::Error> {
                let mut date = false;
                while let Some(k) = map.next_key::<Shape>()? {
                    date |= is_date_key(&k);
                    map.next_value::<de::IgnoredAny>()?;
                }
                Ok(if date { Shape::Date } else { Shape::Other })
            }
        }
        d.deserialize_any(V)
    }
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
