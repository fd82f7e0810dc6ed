//! The config file: TOML in, validated [`Config`] out.
//!
//! Parsing keeps every value's position so that each problem is reported as
//! `file:line:column: field: what is wrong and how to fix it`, and every
//! problem in the file is reported at once rather than one per restart.
//! Secrets are read here too: a config whose secret cannot be read is as
//! unusable as one with a typo, and must be refused whole.

mod alerts;
mod context;
mod credential;
mod error;
mod fleet;
mod pieces;
mod proxy;
mod raw;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::alert;
use crate::credential::{Admins, Credential, GleanSecret, Kind};

pub use error::{ConfigError, Problem};
pub use proxy::{ProxyListen, ProxySettings};

use context::Context;
use pieces::Pieces;
use raw::{RawConfig, RawCredential};

/// Where the daemon listens unless the config or command line says otherwise.
pub const DEFAULT_SOCKET: &str = "/run/tokend/tokend.sock";
pub(crate) const DEFAULT_SOCKET_MODE: u32 = 0o660;
pub(crate) const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);
/// Long enough for a request to reach the API and be checked there.
pub(crate) const DEFAULT_MIN_VALID: Duration = Duration::from_secs(60);
pub(crate) const DEFAULT_HTTP_TIMEOUT: Duration = Duration::from_secs(10);
pub(crate) const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(300);
/// Token requests in flight to one issuer at most, unless
/// `issuer_concurrency` says otherwise.
pub(crate) const DEFAULT_ISSUER_CONCURRENCY: usize = 8;
/// Where the store lives unless `[store] path` says otherwise.
pub const DEFAULT_STORE: &str = "/var/lib/tokend/store.redb";
/// The systemd credential (`LoadCredential=`) holding the store key.
pub const STORE_KEY_CREDENTIAL: &str = "tokend-store-key";
/// Renew when a third of the lifetime is left, minus up to a sixth of jitter:
/// between 1/2 and 2/3 of the lifetime, as SPIRE and Vault Agent do.
pub(crate) const DEFAULT_REFRESH_FRACTION: f64 = 1.0 / 3.0;
pub(crate) const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);
/// Where `tokenctl login` listens for the authorization server's redirect
/// unless the credential says otherwise (Glean's documented loopback URI).
pub const DEFAULT_REDIRECT_URI: &str = "http://127.0.0.1:9090/oauth/callback";

/// A validated config.
#[derive(Debug)]
pub struct Config {
    /// The file it was read from.
    pub path: PathBuf,
    /// The `[daemon]` table.
    pub daemon: Daemon,
    /// The `[store]` table.
    pub store: StoreSettings,
    /// Present when the config has an `[alerts]` table.
    pub alerts: Option<alert::Settings>,
    /// `[metrics] listen`.
    pub metrics: Option<Listen>,
    /// Every `[[credential]]`, in file order.
    pub credentials: Vec<Credential>,
    /// Every `[[proxy]]`, in file order.
    pub proxies: Vec<ProxySettings>,
    /// The `[fleet]` table, when credentials are shared between hosts.
    pub fleet: Option<crate::fleet::Settings>,
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
    /// `admin_uids` and `admin_groups`: who may call admin methods besides
    /// root.
    pub admins: Admins,
    /// How long in-flight calls may take to finish on shutdown. Default 10 s.
    pub shutdown_timeout: Duration,
    /// Limit on each request to a token endpoint. Default 10 s.
    pub http_timeout: Duration,
    /// Longest wait between retries of a failing refresh. Default 5 min.
    pub max_backoff: Duration,
    /// Token requests in flight to one issuer at most. Default 8.
    pub issuer_concurrency: usize,
}

/// Where `[metrics] listen` points: `host:port`, or `unix:/path`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Listen {
    /// A TCP address.
    Tcp(String),
    /// A Unix socket path.
    Unix(PathBuf),
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
    let pieces = Pieces::of(text);
    if pieces.any()
        && let Some(raw) = pieces.rest()
        && let Ok(config) = validate(Context::new(path, text), raw, pieces.credentials(text))
    {
        return config;
    }
    drop(pieces);
    read_whole(path, text)
}

/// Reads `text` as one document: for small files, and for any file a piece
/// of which does not parse on its own.
fn read_whole(path: &Path, text: &str) -> Result<Config, ConfigError> {
    let mut cx = Context::new(path, text);
    let mut raw: RawConfig = match toml::from_str(text) {
        Ok(raw) => raw,
        Err(e) => {
            let span = e.span().unwrap_or(0..0);
            cx.problem(span, "", without_values(e.message().trim_end()));
            return Err(cx.into_error());
        }
    };
    let credentials = std::mem::take(&mut raw.credential);
    validate(cx, raw, credentials.into_iter().map(|c| Ok((0, c))))
        .unwrap_or_else(|never: std::convert::Infallible| match never {})
}

/// Validates `raw` and the `credentials` (each with the offset its spans
/// count from), in that order; stops at the first credential that cannot be
/// read.
fn validate<E>(
    mut cx: Context<'_>,
    raw: RawConfig,
    raw_credentials: impl Iterator<Item = Result<(usize, RawCredential), E>>,
) -> Result<Result<Config, ConfigError>, E> {
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
            Some(path) => Listen::Unix(path.into()),
            None => Listen::Tcp(l.into_inner()),
        });
    let has_fleet = raw.fleet.is_some();
    let fleet = raw.fleet.and_then(|f| cx.fleet(f));
    // Byte offsets, turned into line numbers only for an error.
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut credentials = Vec::with_capacity(raw_credentials.size_hint().0);
    for c in raw_credentials {
        let (base, c) = c?;
        cx.base = base;
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
        seen.insert(name.clone(), base + c.name.span().start);
        if let Some(shared) = c.shared.as_ref().filter(|s| *s.get_ref() && !has_fleet) {
            cx.problem(
                shared.span(),
                &format!("credential.{name}.shared"),
                "a shared credential needs a [fleet] table naming the etcd cluster".into(),
            );
        }
        if let Some(c) = cx.credential(c) {
            credentials.push(c);
        }
    }
    cx.base = 0;
    let mut proxies: Vec<ProxySettings> = Vec::with_capacity(raw.proxy.len());
    for p in raw.proxy {
        let span = p.name.span();
        let Some(proxy) = cx.proxy(p, &credentials) else {
            continue;
        };
        let clash = proxies.iter().find(|q| {
            q.name == proxy.name || (q.listen == proxy.listen && !proxy.listen.any_port())
        });
        if let Some(q) = clash {
            let message = format!(
                "proxy `{}` has the same name or listen address as proxy `{}`; each needs its own",
                proxy.name, q.name
            );
            cx.problem(span, &format!("proxy.{}", proxy.name), message);
            continue;
        }
        proxies.push(proxy);
    }
    Ok(if cx.problems.is_empty() {
        Ok(Config {
            path: cx.file.to_owned(),
            daemon,
            store,
            alerts,
            metrics,
            credentials,
            proxies,
            fleet,
            secret_files: cx.secret_files,
        })
    } else {
        Err(cx.into_error())
    })
}

/// serde's message without the values it quotes: `invalid type: string
/// "…", expected a boolean` becomes `invalid type: string, expected a
/// boolean`. A value in the wrong place may be a secret written where it
/// does not belong, and config errors reach logs, `tokenctl reload` and
/// every alert sink. Field names (`unknown field `ownr``) are kept.
fn without_values(message: &str) -> String {
    // What precedes each quoted value in serde's messages, and the quote.
    const QUOTED: [(&str, char); 6] = [
        ("string ", '"'),
        ("integer ", '`'),
        ("floating point ", '`'),
        ("boolean ", '`'),
        ("character ", '`'),
        ("unknown variant ", '`'),
    ];
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    loop {
        let next = QUOTED
            .iter()
            .filter_map(|&(word, quote)| {
                let at = rest.find(&format!("{word}{quote}"))?;
                Some((at, word, quote))
            })
            .min_by_key(|&(at, ..)| at);
        let Some((at, word, quote)) = next else {
            out.push_str(rest);
            return out;
        };
        out.push_str(&rest[..at]);
        out.push_str(word.trim_end());
        let value = &rest[at + word.len() + 1..];
        // A string is quoted as Rust's Debug writes it, with `\"` inside.
        let mut escaped = false;
        let end = value.char_indices().find(|&(_, c)| {
            let closes = c == quote && !escaped;
            escaped = quote == '"' && c == '\\' && !escaped;
            closes
        });
        match end {
            Some((i, c)) => rest = &value[i + c.len_utf8()..],
            None => return out,
        }
    }
}

#[cfg(test)]
mod tests;
