//! Validation state and the checks every table shares: positions, problems,
//! the `[daemon]` table, secrets, principals and durations.

use std::cell::{Cell, OnceCell};
use std::net::IpAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_spanned::Spanned;

use super::raw::{BadSecret, Principal, RawAllow, RawCredential, RawDaemon, RawHeaders, RawSecret};
use super::{
    ConfigError, DEFAULT_HTTP_TIMEOUT, DEFAULT_ISSUER_CONCURRENCY, DEFAULT_MAX_BACKOFF,
    DEFAULT_SHUTDOWN_TIMEOUT, DEFAULT_SOCKET, DEFAULT_SOCKET_MODE, Daemon, Problem,
};
use crate::credential::{Admins, AllowRule, Principals};
use crate::glean::ActAsPattern;
use crate::secret::SecretSource;

/// Which name database a principal is looked up in.
#[derive(Clone, Copy)]
pub(super) enum Lookup {
    User,
    Group,
}

/// How a secret source is written, for messages about secrets that cannot
/// be imported into the store.
pub(super) const SOURCES: &str = "{ file = \"…\" }, { credential = \"…\" } (systemd \
                                  LoadCredential=) or { env = \"…\" }";
/// How a Glean token's secret source is written, for messages.
pub(super) const SOURCES_OR_STORE: &str = "{ file = \"…\" }, { credential = \"…\" } \
                                           (systemd LoadCredential=), { env = \"…\" } or \
                                           { store = true } (imported with `tokenctl import`)";

/// Where a URL may use plain http.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Cleartext {
    /// Anywhere: nothing secret travels to it.
    Allowed,
    /// Only to localhost or a loopback address: secrets travel to it.
    LoopbackOnly,
}

/// Validation state: the source for positions, and the problems found so far.
pub(super) struct Context<'a> {
    pub(super) file: &'a Path,
    pub(super) text: &'a str,
    pub(super) problems: Vec<Problem>,
    /// Every secret file read, for the reload watcher.
    pub(super) secret_files: Vec<PathBuf>,
    /// Byte offset of each line's start, built at the first problem.
    pub(super) line_starts: OnceCell<Vec<usize>>,
    /// The last position computed, as (line start, offset, column): the
    /// next one on the same line counts characters from there, so even a
    /// config written on one line costs linear time.
    pub(super) last_position: Cell<(usize, usize, usize)>,
    /// Where the piece being validated starts in the file: the spans of a
    /// credential read on its own (see `pieces`) count from there.
    pub(super) base: usize,
}

impl<'a> Context<'a> {
    pub(super) fn new(file: &'a Path, text: &'a str) -> Self {
        Self {
            file,
            text,
            problems: Vec::new(),
            secret_files: Vec::new(),
            line_starts: OnceCell::new(),
            last_position: Cell::new((0, 0, 1)),
            base: 0,
        }
    }
}

impl Context<'_> {
    /// 1-based line and column of a byte offset. Lines are found by binary
    /// search in an index built once: scanning the text for every problem
    /// made a config with thousands of problems take quadratic time.
    pub(super) fn position(&self, offset: usize) -> (usize, usize) {
        let text = self.text;
        let mut offset = offset.min(text.len());
        while !text.is_char_boundary(offset) {
            offset -= 1;
        }
        let starts = self.line_starts.get_or_init(|| {
            std::iter::once(0)
                .chain(text.match_indices('\n').map(|(i, _)| i + 1))
                .collect()
        });
        let line = starts.partition_point(|&s| s <= offset);
        let start = starts[line - 1];
        let (last_start, last_offset, last_column) = self.last_position.get();
        let (from, column) = if last_start == start && last_offset <= offset {
            (last_offset, last_column)
        } else {
            (start, 1)
        };
        let column = column + text[from..offset].chars().count();
        self.last_position.set((start, offset, column));
        (line, column)
    }

    pub(super) fn problem(&mut self, span: Range<usize>, field: &str, message: String) {
        let (line, column) = self.position(self.base + span.start);
        self.problems.push(Problem {
            file: self.file.to_owned(),
            line,
            column,
            field: field.to_owned(),
            message,
        });
    }

    /// A path named in the config: a relative one is resolved against the
    /// config file's directory, so the daemon's working directory never
    /// changes what a config means.
    pub(super) fn path(&self, p: &Path) -> PathBuf {
        match self.file.parent() {
            Some(dir) if p.is_relative() => dir.join(p),
            _ => p.to_owned(),
        }
    }

    pub(super) fn into_error(self) -> ConfigError {
        ConfigError::Invalid {
            problems: self.problems,
        }
    }

    pub(super) fn daemon(&mut self, raw: RawDaemon) -> Daemon {
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
            .and_then(|g| self.principal(&g, Lookup::Group, "daemon.socket_group"));
        let admins = Admins(self.principals(
            &raw.admin_uids,
            &raw.admin_groups,
            "daemon.admin_uids",
            "daemon.admin_groups",
        ));
        // Zero is meaningful here: stop without waiting for in-flight calls.
        let shutdown_timeout = raw
            .shutdown_timeout
            .and_then(|d| self.duration(&d, "daemon.shutdown_timeout"))
            .unwrap_or(DEFAULT_SHUTDOWN_TIMEOUT);
        let http_timeout = raw
            .http_timeout
            .and_then(|d| {
                self.nonzero_duration(
                    &d,
                    "daemon.http_timeout",
                    "a zero timeout fails every request to a token endpoint; write e.g. \"10s\" \
                     (the default)",
                )
            })
            .unwrap_or(DEFAULT_HTTP_TIMEOUT);
        let max_backoff = raw
            .max_backoff
            .and_then(|d| {
                self.nonzero_duration(
                    &d,
                    "daemon.max_backoff",
                    "a failing refresh would be retried without pause; write e.g. \"5m\" (the \
                     default)",
                )
            })
            .unwrap_or(DEFAULT_MAX_BACKOFF);
        let issuer_concurrency = match raw.issuer_concurrency {
            None => DEFAULT_ISSUER_CONCURRENCY,
            Some(n) if (1..=256).contains(n.get_ref()) => *n.get_ref() as usize,
            Some(n) => {
                self.problem(
                    n.span(),
                    "daemon.issuer_concurrency",
                    "must be from 1 to 256: token requests in flight to one issuer at once; \
                     write e.g. 8 (the default)"
                        .into(),
                );
                DEFAULT_ISSUER_CONCURRENCY
            }
        };
        Daemon {
            socket: raw.socket.unwrap_or_else(|| DEFAULT_SOCKET.into()),
            socket_mode,
            socket_group,
            admins,
            shutdown_timeout,
            http_timeout,
            max_backoff,
            issuer_concurrency,
        }
    }

    /// A secret source and the secret read from it. `sources` says how the
    /// field's sources are written ([`SOURCES`] or [`SOURCES_OR_STORE`]).
    /// No message quotes what was written in the field's place.
    pub(super) fn secret(
        &mut self,
        raw: Option<&Spanned<RawSecret>>,
        at: Range<usize>,
        field: &str,
        sources: &str,
    ) -> Option<(SecretSource, secrecy::SecretString)> {
        let Some(s) = raw else {
            self.problem(
                at,
                field,
                format!("missing; say where the secret is read from: {sources}"),
            );
            return None;
        };
        let source = match s.get_ref() {
            RawSecret::Invalid(bad) => {
                let (field, message) = match *bad {
                    BadSecret::Inline { what: "a string" } => (
                        field.to_owned(),
                        format!("secrets are never written inline; use {sources}"),
                    ),
                    BadSecret::Inline { what } => (
                        field.to_owned(),
                        format!(
                            "{what} is not a secret source (and secrets are never written \
                             inline); use {sources}"
                        ),
                    ),
                    BadSecret::NoSource => (
                        field.to_owned(),
                        format!("not a secret source; use {sources}"),
                    ),
                    BadSecret::SeveralSources => (
                        field.to_owned(),
                        format!("a secret source has exactly one key; use {sources}"),
                    ),
                    BadSecret::WrongType {
                        source: "store", ..
                    } if sources == SOURCES => (
                        format!("{field}.store"),
                        format!(
                            "only glean_token secrets can be imported into the store; use \
                             {sources}"
                        ),
                    ),
                    BadSecret::WrongType { source, expected } => (
                        format!("{field}.{source}"),
                        format!("`{source}` takes {expected}; use {sources}"),
                    ),
                };
                self.problem(s.span(), &field, message);
                return None;
            }
            RawSecret::File(p) => SecretSource::File(self.path(p)),
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
    pub(super) fn only_fields(
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

    pub(super) fn allow(&mut self, raw: &RawAllow, field: &str) -> AllowRule {
        AllowRule {
            who: self.principals(
                &raw.uids,
                &raw.groups,
                &format!("{field}.uids"),
                &format!("{field}.groups"),
            ),
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

    /// The users and groups of a rule, by id; names are looked up.
    pub(super) fn principals(
        &mut self,
        users: &[Spanned<Principal>],
        groups: &[Spanned<Principal>],
        users_field: &str,
        groups_field: &str,
    ) -> Principals {
        Principals {
            uids: users
                .iter()
                .filter_map(|u| self.principal(u, Lookup::User, users_field))
                .collect(),
            gids: groups
                .iter()
                .filter_map(|g| self.principal(g, Lookup::Group, groups_field))
                .collect(),
        }
    }

    /// A user or group id: given, or looked up by name on this host.
    pub(super) fn principal(
        &mut self,
        p: &Spanned<Principal>,
        lookup: Lookup,
        field: &str,
    ) -> Option<u32> {
        let name = match p.get_ref() {
            Principal::Id(id) => return Some(*id),
            Principal::Name(name) => name,
        };
        let (found, what) = match lookup {
            Lookup::User => (
                nix::unistd::User::from_name(name).map(|u| u.map(|u| u.uid.as_raw())),
                "user",
            ),
            Lookup::Group => (
                nix::unistd::Group::from_name(name).map(|g| g.map(|g| g.gid.as_raw())),
                "group",
            ),
        };
        if let Ok(Some(id)) = found {
            return Some(id);
        }
        let id = if what == "user" { "uid" } else { "gid" };
        self.problem(
            p.span(),
            field,
            format!("no {what} named `{name}` on this host; give a {id} or an existing {what}"),
        );
        None
    }

    /// A duration where zero makes no sense; `why` says what zero would do
    /// and what to write instead.
    pub(super) fn nonzero_duration(
        &mut self,
        d: &Spanned<String>,
        field: &str,
        why: &str,
    ) -> Option<Duration> {
        let parsed = self.duration(d, field)?;
        if parsed.is_zero() {
            self.problem(d.span(), field, format!("must be longer than 0s: {why}"));
            return None;
        }
        Some(parsed)
    }

    /// An http(s) URL. Messages show at most its scheme, host and port (its
    /// user info, path and query may hold a secret, a Slack webhook's path
    /// does), and nothing at all of a URL read from a secret source
    /// (`secret`). With [`Cleartext::LoopbackOnly`], plain http is refused
    /// except to localhost or a loopback address.
    pub(super) fn http_url(
        &mut self,
        value: &str,
        span: Range<usize>,
        field: &str,
        cleartext: Cleartext,
        secret: bool,
        example: &str,
    ) -> Option<reqwest::Url> {
        let url = match reqwest::Url::parse(value) {
            Ok(url) => url,
            Err(e) => {
                let what = if secret {
                    "the secret is not a URL"
                } else {
                    "not a URL"
                };
                let message = format!("{what} ({e}); write e.g. \"{example}\"");
                self.problem(span, field, message);
                return None;
            }
        };
        let shown = match (secret, url.host_str(), url.port()) {
            (true, _, _) => "the secret URL".to_owned(),
            (false, Some(host), Some(port)) => format!("`{}://{host}:{port}`", url.scheme()),
            (false, Some(host), None) => format!("`{}://{host}`", url.scheme()),
            (false, None, _) => "the URL".to_owned(),
        };
        let problem = match url.scheme() {
            _ if url.host_str().is_none_or(str::is_empty) => Some(format!(
                "{shown} is not an http(s) URL with a host; write e.g. \"{example}\""
            )),
            "https" => None,
            "http" if cleartext == Cleartext::Allowed || is_loopback(&url) => None,
            "http" => Some(format!(
                "{shown} uses plain http, which would carry secrets in cleartext; use \
                 https:// (plain http is allowed only to localhost or a loopback address)"
            )),
            _ => Some(format!(
                "{shown} is not an http(s) URL; write e.g. \"{example}\""
            )),
        };
        match problem {
            Some(message) => {
                self.problem(span, field, message);
                None
            }
            None => Some(url),
        }
    }

    /// Header names and values that HTTP allows, in name order; `reserved`
    /// names (lowercase) are refused as set by tokend itself. A bad name or
    /// value is pointed at by its position, never quoted: a value is often
    /// a key, and a name may be a whole `Name: value` line pasted in.
    pub(super) fn headers(
        &mut self,
        raw: &RawHeaders,
        field: &str,
        reserved: &[&str],
    ) -> Vec<(String, String)> {
        let mut headers = Vec::with_capacity(raw.len());
        for (name, value) in raw {
            let mut ok = true;
            match reqwest::header::HeaderName::from_bytes(name.get_ref().as_bytes()) {
                Err(_) => {
                    ok = false;
                    self.problem(
                        name.span(),
                        field,
                        "a header name is not a valid HTTP header name: names are letters, \
                         digits and !#$%&'*+-.^_`|~, without spaces or `:`; write e.g. \
                         \"X-Team\" = \"sre\""
                            .into(),
                    );
                }
                Ok(n) if reserved.contains(&n.as_str()) => {
                    ok = false;
                    self.problem(
                        name.span(),
                        field,
                        format!("`{n}` is set by tokend itself; remove it"),
                    );
                }
                Ok(_) => {}
            }
            // Printable ASCII (and tabs): what every HTTP library sends as it is.
            let value_ok = reqwest::header::HeaderValue::from_str(value.get_ref())
                .is_ok_and(|v| v.to_str().is_ok());
            if !value_ok {
                ok = false;
                self.problem(
                    value.span(),
                    field,
                    "a header value holds characters HTTP does not allow (control characters \
                     or non-ASCII); write printable ASCII"
                        .into(),
                );
            }
            if ok {
                headers.push((name.get_ref().clone(), value.get_ref().clone()));
            }
        }
        headers
    }

    pub(super) fn duration(&mut self, d: &Spanned<String>, field: &str) -> Option<Duration> {
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

/// Whether a URL's host is localhost or a loopback address.
fn is_loopback(url: &reqwest::Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    if host.eq_ignore_ascii_case("localhost") || host.eq_ignore_ascii_case("localhost.") {
        return true;
    }
    match host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    {
        Ok(IpAddr::V4(a)) => a.is_loopback(),
        Ok(IpAddr::V6(a)) => a.is_loopback() || a.to_ipv4_mapped().is_some_and(|a| a.is_loopback()),
        Err(_) => false,
    }
}
