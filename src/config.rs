//! The config file: TOML in, validated [`Config`] out.
//!
//! Parsing keeps every value's position so that each problem is reported as
//! `file:line:column: field: what is wrong and how to fix it`, and every
//! problem in the file is reported at once rather than one per restart.
//! Secrets are read here too: a config whose secret cannot be read is as
//! unusable as one with a typo, and must be refused whole.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_spanned::Spanned;

use crate::credential::{
    Admins, AllowRule, Credential, GleanSecret, GleanToken, Kind, OAuthCredential, OAuthGrant,
    Schedule,
};
use crate::glean::{self, ActAsPattern, Permission, Scope, ScopeSet};
use crate::oauth::{self, AuthMethod};
use crate::secret::SecretSource;
use crate::{alert, metrics};

/// Where the daemon listens unless the config or command line says otherwise.
pub const DEFAULT_SOCKET: &str = "/run/tokend/tokend.sock";
const DEFAULT_SOCKET_MODE: u32 = 0o660;
const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);
/// Long enough for a request to reach the API and be checked there.
const DEFAULT_MIN_VALID: Duration = Duration::from_secs(60);
const KINDS: [&str; 3] = ["glean_token", "oauth_refresh", "oauth_client_credentials"];
const DEFAULT_HTTP_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(300);
/// Where the store lives unless `[store] path` says otherwise.
pub const DEFAULT_STORE: &str = "/var/lib/tokend/store.redb";
/// The systemd credential (`LoadCredential=`) holding the store key.
pub const STORE_KEY_CREDENTIAL: &str = "tokend-store-key";
/// Renew when a third of the lifetime is left, minus up to a sixth of jitter:
/// between 1/2 and 2/3 of the lifetime, as SPIRE and Vault Agent do.
const DEFAULT_REFRESH_FRACTION: f64 = 1.0 / 3.0;
const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);
/// Where `tokenctl login` listens for the authorization server's redirect
/// unless the credential says otherwise (Glean's documented loopback URI).
pub const DEFAULT_REDIRECT_URI: &str = "http://127.0.0.1:9090/oauth/callback";

/// A validated config.
#[derive(Debug)]
pub struct Config {
    pub path: PathBuf,
    pub daemon: Daemon,
    pub store: StoreSettings,
    /// Present when the config has an `[alerts]` table.
    pub alerts: Option<alert::Settings>,
    /// `[metrics] listen`.
    pub metrics: Option<metrics::Listen>,
    pub credentials: Vec<Credential>,
    /// Every secret file the config reads, watched for changes.
    pub secret_files: Vec<PathBuf>,
}

impl Config {
    /// Whether anything keeps state in the encrypted store: OAuth and
    /// imported credentials, and open alerts.
    pub fn needs_store(&self) -> bool {
        self.alerts.is_some()
            || self.credentials.iter().any(|c| match &c.kind {
                Kind::Glean(g) => matches!(g.secret, GleanSecret::Stored),
                Kind::OAuth(_) => true,
            })
    }
}

/// The `[store]` table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreSettings {
    /// Default [`DEFAULT_STORE`].
    pub path: PathBuf,
    /// Default `$CREDENTIALS_DIRECTORY/tokend-store-key`.
    pub key_file: Option<PathBuf>,
}

impl StoreSettings {
    /// The key file to read: the configured one, else the systemd credential.
    pub fn key_path(&self) -> Option<PathBuf> {
        self.key_file.clone().or_else(|| {
            std::env::var_os("CREDENTIALS_DIRECTORY")
                .map(|d| Path::new(&d).join(STORE_KEY_CREDENTIAL))
        })
    }
}

/// The `[daemon]` table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Daemon {
    /// Default [`DEFAULT_SOCKET`].
    pub socket: PathBuf,
    /// Default 0o660: the owner and the socket's group may connect.
    pub socket_mode: u32,
    /// Group given to the socket and its directory; default the daemon's.
    pub socket_group: Option<u32>,
    pub admins: Admins,
    /// How long in-flight calls may take to finish on shutdown. Default 10 s.
    pub shutdown_timeout: Duration,
    /// Limit on each request to a token endpoint. Default 10 s.
    pub http_timeout: Duration,
    /// Longest wait between retries of a failing refresh. Default 5 min.
    pub max_backoff: Duration,
}

/// Why a config was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not have the expected shape.
    /// Invalid values, each with its position.
    #[error("{}", Problems(problems))]
    Invalid { problems: Vec<Problem> },
}

/// One thing wrong in a config file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    /// Dotted path of the offending field, e.g. `credential.search.scopes`.
    pub field: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            self.line,
            self.column,
            self.field
        )?;
        if !self.field.is_empty() {
            f.write_str(": ")?;
        }
        f.write_str(&self.message)
    }
}

struct Problems<'a>(&'a [Problem]);

impl fmt::Display for Problems<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

/// Reads, validates and loads the secrets of the config at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(path, &text)
}

/// Validates `text` as the content of the config file `path`; relative secret
/// paths are resolved against `path`'s directory.
pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
    let mut cx = Context {
        file: path,
        text,
        problems: Vec::new(),
        secret_files: Vec::new(),
    };
    let raw: RawConfig = match toml::from_str(text) {
        Ok(raw) => raw,
        Err(e) => {
            let span = e.span().unwrap_or(0..0);
            cx.problem(span, "", e.message().trim_end().to_owned());
            return Err(cx.into_error());
        }
    };
    let daemon = cx.daemon(raw.daemon);
    let store = StoreSettings {
        path: raw.store.path.unwrap_or_else(|| DEFAULT_STORE.into()),
        key_file: raw.store.key_file,
    };
    let alerts = raw.alerts.map(|a| cx.alerts(a));
    let metrics = raw
        .metrics
        .listen
        .map(|l| match l.get_ref().strip_prefix("unix:") {
            Some(path) => metrics::Listen::Unix(path.into()),
            None => metrics::Listen::Tcp(l.into_inner()),
        });
    // Byte offsets, turned into line numbers only for an error: computing a
    // line scans the text, which for every credential would be quadratic.
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut credentials = Vec::with_capacity(raw.credential.len());
    for c in raw.credential {
        let name = c.name.get_ref().clone();
        if let Some(&offset) = seen.get(&name) {
            let line = cx.position(offset).0;
            cx.problem(
                c.name.span(),
                &format!("credential.{name}.name"),
                format!("duplicate credential name `{name}`, first defined on line {line}; names must be unique"),
            );
            continue;
        }
        seen.insert(name, c.name.span().start);
        if let Some(c) = cx.credential(c) {
            credentials.push(c);
        }
    }
    if cx.problems.is_empty() {
        Ok(Config {
            path: path.to_owned(),
            daemon,
            store,
            alerts,
            metrics,
            credentials,
            secret_files: cx.secret_files,
        })
    } else {
        Err(cx.into_error())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    daemon: RawDaemon,
    #[serde(default)]
    store: RawStore,
    alerts: Option<RawAlerts>,
    #[serde(default)]
    metrics: RawMetrics,
    #[serde(default)]
    credential: Vec<RawCredential>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    listen: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAlerts {
    thresholds: Option<Vec<Spanned<String>>>,
    repeat_expiring: Option<Spanned<String>>,
    repeat_failing: Option<Spanned<String>>,
    refresh_failing_after: Option<Spanned<String>>,
    sweep: Option<Spanned<String>>,
    digest: Option<Spanned<String>>,
    source: Option<String>,
    #[serde(default)]
    sink: Vec<RawSink>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSink {
    name: Spanned<String>,
    #[serde(rename = "type")]
    kind: Spanned<String>,
    min_severity: Option<Spanned<String>>,
    #[serde(default)]
    credentials: Vec<String>,
    url: Option<Spanned<String>>,
    url_secret: Option<Spanned<RawSecret>>,
    format: Option<Spanned<String>>,
    headers: Option<BTreeMap<String, String>>,
    routing_key: Option<Spanned<RawSecret>>,
    command: Option<Spanned<Vec<String>>>,
    timeout: Option<Spanned<String>>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    path: Option<PathBuf>,
    key_file: Option<PathBuf>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDaemon {
    socket: Option<PathBuf>,
    socket_mode: Option<Spanned<u32>>,
    socket_group: Option<Spanned<Principal>>,
    #[serde(default)]
    admin_uids: Vec<Spanned<Principal>>,
    #[serde(default)]
    admin_groups: Vec<Spanned<Principal>>,
    shutdown_timeout: Option<Spanned<String>>,
    http_timeout: Option<Spanned<String>>,
    max_backoff: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCredential {
    name: Spanned<String>,
    kind: Spanned<String>,
    permission: Option<Spanned<String>>,
    scopes: Option<Spanned<Vec<Spanned<String>>>>,
    expires_at: Option<Spanned<String>>,
    owner: Option<Spanned<String>>,
    secret: Option<Spanned<RawSecret>>,
    #[serde(default)]
    allow: OneOrMany<RawAllow>,
    min_valid: Option<Spanned<String>>,
    issuer: Option<Spanned<String>>,
    token_endpoint: Option<Spanned<String>>,
    client_id: Option<Spanned<String>>,
    client_secret: Option<Spanned<RawSecret>>,
    auth_method: Option<Spanned<String>>,
    extra_params: Option<Spanned<BTreeMap<String, String>>>,
    extra_headers: Option<Spanned<BTreeMap<String, String>>>,
    refresh_token_lifetime: Option<Spanned<String>>,
    serve_stale: Option<Spanned<bool>>,
    refresh_before: Option<Spanned<String>>,
    refresh_fraction: Option<Spanned<f64>>,
    default_lifetime: Option<Spanned<String>>,
    redirect_uri: Option<Spanned<String>>,
    instance: Option<Spanned<String>>,
}

impl RawCredential {
    /// Positions of the fields that are set, by name, for "does not apply
    /// to this kind" checks.
    fn present(&self) -> Vec<(&'static str, Range<usize>)> {
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
enum RawSecret {
    File(PathBuf),
    Env(String),
    Credential(String),
    Store(bool),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAllow {
    #[serde(default)]
    uids: Vec<Spanned<Principal>>,
    #[serde(default)]
    groups: Vec<Spanned<Principal>>,
    #[serde(default)]
    act_as: Vec<Spanned<String>>,
}

/// A user or group, by number or by name.
#[derive(Deserialize)]
#[serde(untagged)]
enum Principal {
    Id(u32),
    Name(String),
}

/// `allow = { … }` or `allow = [{ … }, { … }]`. Written by hand because
/// serde's untagged enums buffer their input and lose the positions of the
/// values inside.
struct OneOrMany<T>(Vec<T>);

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

/// Validation state: the source for positions, and the problems found so far.
struct Context<'a> {
    file: &'a Path,
    text: &'a str,
    problems: Vec<Problem>,
    /// Every secret file read, for the reload watcher.
    secret_files: Vec<PathBuf>,
}

impl Context<'_> {
    /// 1-based line and column of a byte offset.
    fn position(&self, offset: usize) -> (usize, usize) {
        let before = &self.text[..offset.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        (line, column)
    }

    fn problem(&mut self, span: Range<usize>, field: &str, message: String) {
        let (line, column) = self.position(span.start);
        self.problems.push(Problem {
            file: self.file.to_owned(),
            line,
            column,
            field: field.to_owned(),
            message,
        });
    }

    fn into_error(self) -> ConfigError {
        ConfigError::Invalid {
            problems: self.problems,
        }
    }

    fn daemon(&mut self, raw: RawDaemon) -> Daemon {
        let socket_mode = match raw.socket_mode {
            Some(m) if *m.get_ref() & !0o777 != 0 || *m.get_ref() & 0o600 != 0o600 => {
                self.problem(
                    m.span(),
                    "daemon.socket_mode",
                    format!(
                        "mode {:o} is not a socket mode tokend can use; write an octal \
                         permission like 0o660 that keeps read and write for the owner",
                        m.get_ref()
                    ),
                );
                DEFAULT_SOCKET_MODE
            }
            Some(m) => m.into_inner(),
            None => DEFAULT_SOCKET_MODE,
        };
        let socket_group = raw
            .socket_group
            .and_then(|g| self.group(&g, "daemon.socket_group"));
        let admins = Admins {
            uids: raw
                .admin_uids
                .iter()
                .filter_map(|u| self.user(u, "daemon.admin_uids"))
                .collect(),
            gids: raw
                .admin_groups
                .iter()
                .filter_map(|g| self.group(g, "daemon.admin_groups"))
                .collect(),
        };
        let mut duration = |d: Option<Spanned<String>>, field: &str, default| {
            d.and_then(|d| self.duration(&d, field)).unwrap_or(default)
        };
        let shutdown_timeout = duration(
            raw.shutdown_timeout,
            "daemon.shutdown_timeout",
            DEFAULT_SHUTDOWN_TIMEOUT,
        );
        let http_timeout = duration(
            raw.http_timeout,
            "daemon.http_timeout",
            DEFAULT_HTTP_TIMEOUT,
        );
        let max_backoff = duration(raw.max_backoff, "daemon.max_backoff", DEFAULT_MAX_BACKOFF);
        Daemon {
            socket: raw.socket.unwrap_or_else(|| DEFAULT_SOCKET.into()),
            socket_mode,
            socket_group,
            admins,
            shutdown_timeout,
            http_timeout,
            max_backoff,
        }
    }

    fn credential(&mut self, raw: RawCredential) -> Option<Credential> {
        let name = raw.name.get_ref().clone();
        let field = |f: &str| format!("credential.{name}.{f}");
        let problems_before = self.problems.len();
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            self.problem(
                raw.name.span(),
                &field("name"),
                "names may hold only letters, digits, `-`, `_` and `.`, and must not be empty"
                    .into(),
            );
        }
        let allow = raw
            .allow
            .0
            .iter()
            .map(|a| self.allow(a, &field("allow")))
            .collect();
        let min_valid = raw
            .min_valid
            .as_ref()
            .and_then(|d| self.duration(d, &field("min_valid")))
            .unwrap_or(DEFAULT_MIN_VALID);
        let kind = match raw.kind.get_ref().as_str() {
            "glean_token" => self.glean_token(&raw, &field).map(Kind::Glean),
            "oauth_refresh" => self
                .oauth(&raw, OAuthGrant::RefreshToken, &field)
                .map(Kind::OAuth),
            "oauth_client_credentials" => self
                .oauth(&raw, OAuthGrant::ClientCredentials, &field)
                .map(Kind::OAuth),
            other => {
                self.problem(
                    raw.kind.span(),
                    &field("kind"),
                    format!("unknown kind `{other}`; known kinds: {}", KINDS.join(", ")),
                );
                None
            }
        };
        let kind = kind?;
        (self.problems.len() == problems_before).then(|| Credential {
            name: Arc::from(name),
            allow,
            min_valid,
            kind,
        })
    }

    fn glean_token(
        &mut self,
        raw: &RawCredential,
        field: &dyn Fn(&str) -> String,
    ) -> Option<GleanToken> {
        let at = raw.kind.span();
        self.only_fields(
            raw,
            "glean_token",
            &["permission", "expires_at", "owner", "secret", "instance"],
            field,
        );
        let permission = match &raw.permission {
            None => {
                self.problem(
                    at.clone(),
                    &field("permission"),
                    "missing; set permission = \"user\", \"global\" or \"anonymous\" as chosen \
                     when the token was created in Glean"
                        .into(),
                );
                None
            }
            Some(p) => match p.get_ref().parse::<Permission>() {
                Ok(p) => Some(p),
                Err(()) => {
                    self.problem(
                        p.span(),
                        &field("permission"),
                        format!(
                            "unknown permission `{}`; use \"user\", \"global\" or \"anonymous\"",
                            p.get_ref()
                        ),
                    );
                    None
                }
            },
        };
        let mut scopes = ScopeSet::default();
        match &raw.scopes {
            None => self.problem(
                at.clone(),
                &field("scopes"),
                "missing; list the scopes the token was created with, e.g. scopes = [\"SEARCH\"]"
                    .into(),
            ),
            Some(list) if list.get_ref().is_empty() => self.problem(
                list.span(),
                &field("scopes"),
                "empty; a Glean token has at least one scope".into(),
            ),
            Some(list) => {
                for s in list.get_ref() {
                    match s.get_ref().parse::<Scope>() {
                        Ok(scope) => scopes.insert(scope),
                        Err(()) => {
                            let hint = Scope::closest(s.get_ref())
                                .map(|c| format!(" (did you mean {c}?)"))
                                .unwrap_or_default();
                            self.problem(
                                s.span(),
                                &field("scopes"),
                                format!(
                                    "unknown scope `{}`{hint}; Glean's scopes are {}",
                                    s.get_ref(),
                                    Scope::names().join(", ")
                                ),
                            );
                        }
                    }
                }
            }
        }
        let expires_at = raw.expires_at.as_ref().and_then(|e| {
            e.get_ref()
                .parse::<jiff::Timestamp>()
                .map_err(|_| {
                    self.problem(
                        e.span(),
                        &field("expires_at"),
                        format!(
                            "`{}` is not an RFC 3339 time; write it like \"2027-03-31T00:00:00Z\"",
                            e.get_ref()
                        ),
                    );
                })
                .ok()
        });
        let owner = raw.owner.as_ref().and_then(|o| {
            if glean::is_valid_email(o.get_ref()) {
                Some(o.get_ref().clone())
            } else {
                self.problem(
                    o.span(),
                    &field("owner"),
                    format!("`{}` is not an email address", o.get_ref()),
                );
                None
            }
        });
        if permission == Some(Permission::Global) {
            let no_patterns = raw.allow.0.iter().all(|a| a.act_as.is_empty());
            if no_patterns && !raw.allow.0.is_empty() {
                self.problem(
                    at,
                    &field("allow.act_as"),
                    "a global token needs act_as patterns saying whom callers may act as, \
                     e.g. allow = { uids = [1000], act_as = [\"*@corp.example\"] }"
                        .into(),
                );
            }
        } else if let Some(p) = raw.allow.0.iter().flat_map(|a| a.act_as.first()).next() {
            self.problem(
                p.span(),
                &field("allow.act_as"),
                "only global tokens act as other users; remove act_as or fix the permission".into(),
            );
        }
        let instance = raw.instance.as_ref().and_then(|u| {
            let ok = reqwest::Url::parse(u.get_ref())
                .is_ok_and(|url| matches!(url.scheme(), "https" | "http"));
            if !ok {
                self.problem(
                    u.span(),
                    &field("instance"),
                    format!(
                        "`{}` is not an http(s) URL; write the backend's address, e.g. \
                         \"https://acme-be.glean.com\"",
                        u.get_ref()
                    ),
                );
            }
            ok.then(|| u.get_ref().trim_end_matches('/').to_owned())
        });
        let secret = match raw.secret.as_ref().map(|s| (s, s.get_ref())) {
            Some((_, RawSecret::Store(true))) => Some(GleanSecret::Stored),
            Some((s, RawSecret::Store(false))) => {
                self.problem(
                    s.span(),
                    &field("secret.store"),
                    "`store = false` names no secret; use `store = true` (imported with \
                     `tokenctl import`) or a file, credential or env source"
                        .into(),
                );
                None
            }
            _ => self
                .secret(raw.secret.as_ref(), raw.kind.span(), &field("secret"))
                .map(|(source, secret)| GleanSecret::Configured { source, secret }),
        };
        Some(GleanToken {
            permission: permission?,
            scopes,
            expires_at,
            owner,
            instance,
            secret: secret?,
        })
    }

    /// Reads a secret from a file, the environment or systemd; `at` and
    /// `field` locate the problem when the source is missing.
    fn secret(
        &mut self,
        raw: Option<&Spanned<RawSecret>>,
        at: Range<usize>,
        field: &str,
    ) -> Option<(SecretSource, secrecy::SecretString)> {
        let Some(s) = raw else {
            self.problem(
                at,
                field,
                "missing; say where the secret is read from: { file = \"…\" }, \
                 { credential = \"…\" } (systemd LoadCredential=) or { env = \"…\" }"
                    .into(),
            );
            return None;
        };
        let source = match s.get_ref() {
            RawSecret::File(p) => SecretSource::File(match self.file.parent() {
                Some(dir) if p.is_relative() => dir.join(p),
                _ => p.clone(),
            }),
            RawSecret::Env(v) => SecretSource::Env(v.clone()),
            RawSecret::Credential(c) if c.is_empty() || c.contains('/') || c == ".." => {
                self.problem(
                    s.span(),
                    &format!("{field}.credential"),
                    format!("`{c}` is not a systemd credential name (no `/`, not empty)"),
                );
                return None;
            }
            RawSecret::Credential(c) => SecretSource::Credential(c.clone()),
            RawSecret::Store(_) => {
                self.problem(
                    s.span(),
                    field,
                    "only glean_token secrets can be imported into the store; read this one \
                     from a file, credential or env source"
                        .into(),
                );
                return None;
            }
        };
        match &source {
            SecretSource::File(p) => self.secret_files.push(p.clone()),
            SecretSource::Credential(c) => {
                if let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") {
                    self.secret_files.push(Path::new(&dir).join(c));
                }
            }
            SecretSource::Env(_) => {}
        }
        match source.load() {
            Ok(secret) => Some((source, secret)),
            Err(e) => {
                self.problem(s.span(), field, e.to_string());
                None
            }
        }
    }

    /// Reports every set field outside `allowed` (and the fields common to
    /// all kinds) as not applying to `kind`.
    fn only_fields(
        &mut self,
        raw: &RawCredential,
        kind: &str,
        allowed: &[&str],
        field: &dyn Fn(&str) -> String,
    ) {
        for (name, span) in raw.present() {
            if !allowed.contains(&name) {
                self.problem(
                    span,
                    &field(name),
                    format!("does not apply to kind `{kind}`; remove it"),
                );
            }
        }
    }

    fn oauth(
        &mut self,
        raw: &RawCredential,
        grant: OAuthGrant,
        field: &dyn Fn(&str) -> String,
    ) -> Option<OAuthCredential> {
        let kind = raw.kind.get_ref().as_str();
        let mut allowed = vec![
            "issuer",
            "token_endpoint",
            "client_id",
            "client_secret",
            "auth_method",
            "extra_params",
            "extra_headers",
            "serve_stale",
            "refresh_before",
            "refresh_fraction",
            "default_lifetime",
            "owner",
        ];
        if grant == OAuthGrant::RefreshToken {
            allowed.extend(["redirect_uri", "refresh_token_lifetime"]);
        }
        self.only_fields(raw, kind, &allowed, field);
        let at = raw.kind.span();
        let mut url = |v: &Option<Spanned<String>>, name: &str| {
            v.as_ref().and_then(|u| {
                let ok = (u.get_ref().starts_with("https://")
                    || u.get_ref().starts_with("http://"))
                    && reqwest::Url::parse(u.get_ref()).is_ok();
                if !ok {
                    self.problem(
                        u.span(),
                        &field(name),
                        format!("`{}` is not an http(s) URL", u.get_ref()),
                    );
                }
                ok.then(|| u.get_ref().clone())
            })
        };
        let issuer = url(&raw.issuer, "issuer");
        let token_endpoint = url(&raw.token_endpoint, "token_endpoint");
        let redirect_uri = url(&raw.redirect_uri, "redirect_uri")
            .unwrap_or_else(|| DEFAULT_REDIRECT_URI.to_owned());
        if raw.issuer.is_none() && raw.token_endpoint.is_none() {
            self.problem(
                at.clone(),
                &field("issuer"),
                "missing; set issuer (discovered through RFC 8414) or token_endpoint".into(),
            );
        }
        let client_id = match &raw.client_id {
            Some(c) if !c.get_ref().is_empty() => Some(c.get_ref().clone()),
            other => {
                self.problem(
                    other.as_ref().map_or(at.clone(), Spanned::span),
                    &field("client_id"),
                    "missing or empty; set the OAuth client's id".into(),
                );
                None
            }
        };
        let auth_method = match &raw.auth_method {
            None => AuthMethod::ClientSecretBasic,
            Some(m) => AuthMethod::parse(m.get_ref()).unwrap_or_else(|| {
                self.problem(
                    m.span(),
                    &field("auth_method"),
                    format!(
                        "unknown method `{}`; use one of {}",
                        m.get_ref(),
                        AuthMethod::NAMES.join(", ")
                    ),
                );
                AuthMethod::ClientSecretBasic
            }),
        };
        let client_secret = match (auth_method, &raw.client_secret) {
            (AuthMethod::None, None) => None,
            (AuthMethod::None, Some(s)) => {
                self.problem(
                    s.span(),
                    &field("client_secret"),
                    "a public client (auth_method = \"none\") sends no secret; remove it".into(),
                );
                None
            }
            (_, s) => self
                .secret(s.as_ref(), at, &field("client_secret"))
                .map(|(_, secret)| secret),
        };
        let scopes = raw
            .scopes
            .as_ref()
            .map(|list| list.get_ref().iter().map(|s| s.get_ref().clone()).collect())
            .unwrap_or_default();
        let extra_params: Vec<(String, String)> = raw
            .extra_params
            .as_ref()
            .map(|m| m.get_ref().clone().into_iter().collect())
            .unwrap_or_default();
        const RESERVED: [&str; 7] = [
            "grant_type",
            "refresh_token",
            "client_id",
            "client_secret",
            "scope",
            "code",
            "code_verifier",
        ];
        if let Some(m) = &raw.extra_params
            && let Some(k) = m.get_ref().keys().find(|k| RESERVED.contains(&k.as_str()))
        {
            self.problem(
                m.span(),
                &field("extra_params"),
                format!("`{k}` is set by tokend itself; remove it from extra_params"),
            );
        }
        let mut extra_headers = Vec::new();
        if let Some(m) = &raw.extra_headers {
            for (k, v) in m.get_ref() {
                let name_ok = reqwest::header::HeaderName::from_bytes(k.as_bytes()).is_ok()
                    && !k.eq_ignore_ascii_case("authorization");
                let value_ok = reqwest::header::HeaderValue::from_str(v).is_ok();
                if name_ok && value_ok {
                    extra_headers.push((k.clone(), v.clone()));
                } else {
                    self.problem(
                        m.span(),
                        &field("extra_headers"),
                        format!(
                            "`{k}` is not a header tokend can send (a token-like name, \
                             not Authorization, with a printable value)"
                        ),
                    );
                }
            }
        }
        let mut duration = |d: &Option<Spanned<String>>, name: &str| {
            d.as_ref().and_then(|d| self.duration(d, &field(name)))
        };
        let refresh_token_lifetime =
            duration(&raw.refresh_token_lifetime, "refresh_token_lifetime");
        let refresh_before = duration(&raw.refresh_before, "refresh_before").unwrap_or_default();
        let default_lifetime =
            duration(&raw.default_lifetime, "default_lifetime").unwrap_or(DEFAULT_LIFETIME);
        let refresh_fraction = match &raw.refresh_fraction {
            None => DEFAULT_REFRESH_FRACTION,
            Some(f) if (0.0..1.0).contains(f.get_ref()) => *f.get_ref(),
            Some(f) => {
                self.problem(
                    f.span(),
                    &field("refresh_fraction"),
                    format!(
                        "{} is not a fraction of the lifetime; write a number from 0 up to \
                         (not including) 1, e.g. 0.33",
                        f.get_ref()
                    ),
                );
                DEFAULT_REFRESH_FRACTION
            }
        };
        Some(OAuthCredential {
            grant,
            issuer,
            token_endpoint,
            redirect_uri,
            client: oauth::Client {
                client_id: client_id?,
                client_secret,
                auth_method,
                scopes,
                extra_params,
            },
            extra_headers,
            refresh_token_lifetime,
            serve_stale: raw.serve_stale.as_ref().is_some_and(|s| *s.get_ref()),
            schedule: Schedule {
                refresh_before,
                refresh_fraction,
                default_lifetime,
            },
        })
    }

    fn alerts(&mut self, raw: RawAlerts) -> alert::Settings {
        let thresholds = match &raw.thresholds {
            None => alert::Settings::DEFAULT_THRESHOLDS.to_vec(),
            Some(list) => {
                let mut t: Vec<Duration> = list
                    .iter()
                    .filter_map(|d| self.duration(d, "alerts.thresholds"))
                    .collect();
                t.sort_unstable_by(|a, b| b.cmp(a));
                t
            }
        };
        let mut duration = |d: &Option<Spanned<String>>, field: &str, default: Duration| {
            d.as_ref()
                .and_then(|d| self.duration(d, field))
                .unwrap_or(default)
        };
        let repeat_expiring = duration(
            &raw.repeat_expiring,
            "alerts.repeat_expiring",
            Duration::from_secs(86_400),
        );
        let repeat_failing = duration(
            &raw.repeat_failing,
            "alerts.repeat_failing",
            Duration::from_secs(3600),
        );
        let failing_after = duration(
            &raw.refresh_failing_after,
            "alerts.refresh_failing_after",
            Duration::from_secs(900),
        );
        let mut cron = |c: &Option<Spanned<String>>, field: &str| {
            c.as_ref().map(|c| {
                let ok = tokio_cron_scheduler::Job::new_async(c.get_ref().as_str(), |_, _| Box::pin(async {})).is_ok();
                if !ok {
                    self.problem(
                        c.span(),
                        field,
                        format!(
                            "`{}` is not a cron expression with seconds; write e.g. \"0 * * * * *\" \
                             (every minute) or \"0 0 9 * * *\" (09:00 UTC daily)",
                            c.get_ref()
                        ),
                    );
                }
                c.get_ref().clone()
            })
        };
        let sweep = cron(&raw.sweep, "alerts.sweep").unwrap_or_else(|| "0 * * * * *".into());
        let digest = cron(&raw.digest, "alerts.digest").or_else(|| Some("0 0 9 * * *".into()));
        let source = raw.source.unwrap_or_else(|| {
            nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_else(|| "tokend".into())
        });
        let mut names = std::collections::HashSet::new();
        let mut sinks: Vec<alert::SinkSpec> = raw
            .sink
            .into_iter()
            .filter_map(|s| {
                let name = s.name.get_ref().clone();
                if !names.insert(name.clone()) {
                    self.problem(
                        s.name.span(),
                        &format!("alerts.sink.{name}.name"),
                        format!("duplicate sink name `{name}`"),
                    );
                }
                self.sink(s)
            })
            .collect();
        if sinks.is_empty() {
            sinks.push(alert::SinkSpec {
                name: "log".into(),
                min_severity: alert::Severity::Info,
                credentials: Vec::new(),
                kind: alert::SinkKind::Log,
            });
        }
        alert::Settings {
            thresholds,
            repeat_expiring,
            repeat_failing,
            failing_after,
            sweep,
            digest,
            source,
            sinks,
        }
    }

    fn sink(&mut self, raw: RawSink) -> Option<alert::SinkSpec> {
        let name = raw.name.get_ref().clone();
        let field = |f: &str| format!("alerts.sink.{name}.{f}");
        let min_severity = match &raw.min_severity {
            None => alert::Severity::Info,
            Some(s) => alert::Severity::parse(s.get_ref()).unwrap_or_else(|| {
                self.problem(
                    s.span(),
                    &field("min_severity"),
                    format!(
                        "`{}` is not a severity; use info, warning or critical",
                        s.get_ref()
                    ),
                );
                alert::Severity::Info
            }),
        };
        let at = raw.kind.span();
        let kind = match raw.kind.get_ref().as_str() {
            "log" => Some(alert::SinkKind::Log),
            "webhook" => {
                let url = match (&raw.url, &raw.url_secret) {
                    (Some(u), None) => Some(secrecy::SecretString::from(u.get_ref().as_str())),
                    (None, s @ Some(_)) => self
                        .secret(s.as_ref(), at.clone(), &field("url_secret"))
                        .map(|(_, s)| s),
                    _ => {
                        self.problem(
                            at.clone(),
                            &field("url"),
                            "set exactly one of url and url_secret (a secret source, for URLs \
                             that embed a token, like Slack's)"
                                .into(),
                        );
                        None
                    }
                };
                let slack = match raw.format.as_ref().map(|f| f.get_ref().as_str()) {
                    None | Some("json") => false,
                    Some("slack") => true,
                    Some(other) => {
                        self.problem(
                            raw.format.as_ref().map_or(at, Spanned::span),
                            &field("format"),
                            format!("unknown format `{other}`; use \"json\" or \"slack\""),
                        );
                        false
                    }
                };
                url.map(|url| alert::SinkKind::Webhook {
                    url,
                    slack,
                    headers: raw
                        .headers
                        .clone()
                        .unwrap_or_default()
                        .into_iter()
                        .collect(),
                })
            }
            "pagerduty" => {
                let routing_key = self
                    .secret(raw.routing_key.as_ref(), at, &field("routing_key"))
                    .map(|(_, s)| s);
                let url = raw.url.as_ref().map_or_else(
                    || "https://events.pagerduty.com/v2/enqueue".to_owned(),
                    |u| u.get_ref().clone(),
                );
                routing_key.map(|routing_key| alert::SinkKind::PagerDuty { url, routing_key })
            }
            "exec" => {
                let command = raw
                    .command
                    .as_ref()
                    .map(|c| c.get_ref().clone())
                    .unwrap_or_default();
                if command.is_empty() {
                    self.problem(
                        at,
                        &field("command"),
                        "missing; give the program and its arguments, e.g. command = \
                         [\"/usr/local/bin/notify\", \"--team\", \"sre\"]"
                            .into(),
                    );
                }
                let timeout = raw
                    .timeout
                    .as_ref()
                    .and_then(|t| self.duration(t, &field("timeout")))
                    .unwrap_or(Duration::from_secs(10));
                (!command.is_empty()).then_some(alert::SinkKind::Exec { command, timeout })
            }
            other => {
                self.problem(
                    at,
                    &field("type"),
                    format!("unknown sink type `{other}`; use log, webhook, pagerduty or exec"),
                );
                None
            }
        }?;
        Some(alert::SinkSpec {
            name,
            min_severity,
            credentials: raw
                .credentials
                .iter()
                .map(|c| c.to_ascii_lowercase())
                .collect(),
            kind,
        })
    }

    fn allow(&mut self, raw: &RawAllow, field: &str) -> AllowRule {
        AllowRule {
            uids: raw
                .uids
                .iter()
                .filter_map(|u| self.user(u, &format!("{field}.uids")))
                .collect(),
            gids: raw
                .groups
                .iter()
                .filter_map(|g| self.group(g, &format!("{field}.groups")))
                .collect(),
            act_as: raw
                .act_as
                .iter()
                .filter_map(|p| {
                    let parsed = ActAsPattern::parse(p.get_ref());
                    if parsed.is_none() {
                        self.problem(
                            p.span(),
                            &format!("{field}.act_as"),
                            format!(
                                "`{}` is not an email pattern; write e.g. \"*@corp.example\" \
                                 or \"alice@corp.example\" (`*@*` allows anyone)",
                                p.get_ref()
                            ),
                        );
                    }
                    parsed
                })
                .collect(),
        }
    }

    fn user(&mut self, p: &Spanned<Principal>, field: &str) -> Option<u32> {
        match p.get_ref() {
            Principal::Id(id) => Some(*id),
            Principal::Name(name) => {
                match nix::unistd::User::from_name(name) {
                    Ok(Some(u)) => Some(u.uid.as_raw()),
                    _ => {
                        self.problem(
                        p.span(),
                        field,
                        format!("no user named `{name}` on this host; give a uid or an existing user"),
                    );
                        None
                    }
                }
            }
        }
    }

    fn group(&mut self, p: &Spanned<Principal>, field: &str) -> Option<u32> {
        match p.get_ref() {
            Principal::Id(id) => Some(*id),
            Principal::Name(name) => {
                match nix::unistd::Group::from_name(name) {
                    Ok(Some(g)) => Some(g.gid.as_raw()),
                    _ => {
                        self.problem(
                        p.span(),
                        field,
                        format!("no group named `{name}` on this host; give a gid or an existing group"),
                    );
                        None
                    }
                }
            }
        }
    }

    fn duration(&mut self, d: &Spanned<String>, field: &str) -> Option<Duration> {
        humantime::parse_duration(d.get_ref())
            .map_err(|e| {
                self.problem(
                    d.span(),
                    field,
                    format!(
                        "`{}` is not a duration ({e}); write e.g. \"90s\", \"15m\" or \"14d\"",
                        d.get_ref()
                    ),
                );
            })
            .ok()
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use secrecy::ExposeSecret;

    use super::*;

    fn with_secret(mode: u32) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("token");
        std::fs::write(&secret, "glean_secret\n").unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(mode)).unwrap();
        let config = dir.path().join("tokend.toml");
        (dir, config)
    }

    fn problems(path: &Path, text: &str) -> Vec<Problem> {
        match parse(path, text) {
            Err(ConfigError::Invalid { problems }) => problems,
            other => panic!("expected problems, got {other:?}"),
        }
    }

    #[test]
    fn a_full_config_is_understood() {
        let (_dir, path) = with_secret(0o600);
        let config = parse(
            &path,
            r#"
[daemon]
socket = "/tmp/x.sock"
socket_mode = 0o600
admin_uids = [0, "root"]
shutdown_timeout = "3s"

[[credential]]
name = "search"
kind = "glean_token"
permission = "global"
scopes = ["SEARCH", "chat"]
expires_at = "2030-01-01T00:00:00+02:00"
owner = "ops@corp.example"
secret = { file = "token" }
min_valid = "5m"
allow = [{ uids = [1000], act_as = ["*@corp.example"] }, { groups = [0] , act_as = ["a@b.c"] }]
"#,
        )
        .unwrap();
        assert_eq!(config.daemon.socket, Path::new("/tmp/x.sock"));
        assert_eq!(config.daemon.socket_mode, 0o600);
        assert_eq!(config.daemon.admins.uids, [0, 0]);
        assert_eq!(config.daemon.shutdown_timeout, Duration::from_secs(3));
        let c = &config.credentials[0];
        assert_eq!(&*c.name, "search");
        assert_eq!(c.min_valid, Duration::from_secs(300));
        assert_eq!(c.allow.len(), 2);
        assert_eq!(c.allow[1].gids, [0]);
        let Kind::Glean(g) = &c.kind else {
            panic!("not a Glean token: {c:?}")
        };
        assert_eq!(g.permission, Permission::Global);
        assert_eq!(g.scopes.to_string(), "CHAT, SEARCH");
        assert_eq!(g.expires_at.unwrap().to_string(), "2029-12-31T22:00:00Z");
        let GleanSecret::Configured { secret, .. } = &g.secret else {
            panic!("secret not read from its source")
        };
        assert_eq!(secret.expose_secret(), "glean_secret");
        let debug = format!("{config:?}");
        assert!(
            !debug.contains("glean_secret"),
            "Debug shows the secret: {debug}"
        );
    }

    #[test]
    fn every_problem_is_reported_with_its_line_and_field() {
        let (_dir, path) = with_secret(0o600);
        let text = r#"
[[credential]]
name = "a"
kind = "glean_token"
permission = "user"
scopes = ["SERACH", "CHAT"]
owner = "not-an-email"
secret = { file = "token" }

[[credential]]
name = "a"
kind = "glean_token"
"#;
        let p = problems(&path, text);
        let shown: Vec<String> = p.iter().map(ToString::to_string).collect();
        assert_eq!(p.len(), 3, "{shown:#?}");
        assert_eq!((p[0].line, p[0].column), (6, 11));
        assert_eq!(p[0].field, "credential.a.scopes");
        assert!(
            p[0].message
                .contains("unknown scope `SERACH` (did you mean SEARCH?)")
        );
        assert_eq!(p[1].field, "credential.a.owner");
        assert_eq!(p[2].line, 11);
        assert!(
            p[2].message
                .contains("duplicate credential name `a`, first defined on line 3")
        );
        assert!(shown[0].starts_with(&format!("{}:6:11: credential.a.scopes: ", path.display())));
    }

    #[test]
    fn toml_errors_carry_positions_and_name_unknown_fields() {
        let (_dir, path) = with_secret(0o600);
        let p = problems(
            &path,
            "[[credential]]\nname = \"a\"\nkind = \"glean_token\"\ncolour = 1\n",
        );
        assert_eq!(p[0].line, 4);
        assert!(p[0].message.contains("unknown field `colour`"), "{}", p[0]);
        let p = problems(&path, "[daemon\n");
        assert_eq!(p[0].line, 1);
    }

    #[test]
    fn kind_specific_rules() {
        let (_dir, path) = with_secret(0o600);
        let p = problems(
            &path,
            r#"
[[credential]]
name = "g"
kind = "glean_token"
permission = "global"
scopes = ["SEARCH"]
secret = { file = "token" }
allow = { uids = [1] }

[[credential]]
name = "u"
kind = "glean_token"
permission = "user"
scopes = ["SEARCH"]
secret = { file = "token" }
allow = { uids = [1], act_as = ["*@x.y"] }

[[credential]]
name = "k"
kind = "oauth_magic"
"#,
        );
        let fields: Vec<&str> = p.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "credential.g.allow.act_as",
                "credential.u.allow.act_as",
                "credential.k.kind"
            ]
        );
        assert!(
            p[2].message
                .contains("unknown kind `oauth_magic`; known kinds: glean_token")
        );
    }

    #[test]
    fn secrets_that_cannot_be_used_are_problems() {
        let (dir, path) = with_secret(0o640);
        let text = r#"
[[credential]]
name = "a"
kind = "glean_token"
permission = "user"
scopes = ["SEARCH"]
secret = { file = "token" }
"#;
        let p = problems(&path, text);
        assert_eq!(p[0].field, "credential.a.secret");
        assert!(p[0].message.contains("chmod 600"), "{}", p[0]);
        std::fs::remove_file(dir.path().join("token")).unwrap();
        let p = problems(&path, text);
        assert!(p[0].message.contains("No such file"), "{}", p[0]);
    }

    #[test]
    fn oauth_credentials_are_understood() {
        let (_dir, path) = with_secret(0o600);
        let config = parse(
            &path,
            r#"
[store]
path = "/var/lib/x/store.redb"
key_file = "/etc/x/key"

[[credential]]
name = "glue"
kind = "oauth_client_credentials"
token_endpoint = "https://glue.example/oauth/token"
client_id = "abc"
client_secret = { file = "token" }
auth_method = "client_secret_post"
extra_params = { subject = "wks_123", redirect_uri = "https://x.example/cb" }
default_lifetime = "10m"

[[credential]]
name = "glean-sso"
kind = "oauth_refresh"
issuer = "https://acme-be.glean.com"
client_id = "tokend"
auth_method = "none"
scopes = ["openid", "offline_access"]
extra_headers = { "X-Glean-Auth-Type" = "OAUTH" }
refresh_token_lifetime = "90d"
serve_stale = true
refresh_fraction = 0.5
"#,
        )
        .unwrap();
        assert!(config.needs_store());
        assert_eq!(config.store.key_path(), Some(PathBuf::from("/etc/x/key")));
        let Kind::OAuth(glue) = &config.credentials[0].kind else {
            panic!("not OAuth")
        };
        assert_eq!(
            config.credentials[0].kind.name(),
            "oauth_client_credentials"
        );
        assert_eq!(glue.client.auth_method, AuthMethod::ClientSecretPost);
        assert_eq!(
            glue.client.extra_params,
            [
                ("redirect_uri".to_owned(), "https://x.example/cb".to_owned()),
                ("subject".to_owned(), "wks_123".to_owned())
            ]
        );
        assert_eq!(glue.schedule.default_lifetime, Duration::from_secs(600));
        let Kind::OAuth(sso) = &config.credentials[1].kind else {
            panic!("not OAuth")
        };
        assert_eq!(sso.grant, OAuthGrant::RefreshToken);
        assert!(sso.client.client_secret.is_none() && sso.serve_stale);
        assert_eq!(
            sso.extra_headers,
            [("X-Glean-Auth-Type".to_owned(), "OAUTH".to_owned())]
        );
        assert_eq!(
            sso.refresh_token_lifetime,
            Some(Duration::from_secs(90 * 86_400))
        );
    }

    #[test]
    fn oauth_problems_name_their_fields() {
        let (_dir, path) = with_secret(0o600);
        let p = problems(
            &path,
            r#"
[[credential]]
name = "a"
kind = "oauth_refresh"
client_id = "x"
permission = "user"
auth_method = "client_secret_jwt"
client_secret = { file = "token" }
extra_params = { grant_type = "password" }
refresh_fraction = 1.5

[[credential]]
name = "b"
kind = "glean_token"
permission = "user"
scopes = ["SEARCH"]
secret = { store = true }
issuer = "https://x.example"
"#,
        );
        let fields: Vec<&str> = p.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "credential.a.permission",
                "credential.a.issuer",
                "credential.a.auth_method",
                "credential.a.extra_params",
                "credential.a.refresh_fraction",
                "credential.b.issuer",
            ],
            "{p:#?}"
        );
        assert!(
            p[0].message
                .contains("does not apply to kind `oauth_refresh`")
        );
        assert!(p[1].message.contains("set issuer"));
        assert!(
            p[3].message
                .contains("`grant_type` is set by tokend itself")
        );
    }
}
