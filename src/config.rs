//! The config file: TOML in, validated [`Config`] out.
//!
//! Parsing keeps every value's position so that each problem is reported as
//! `file:line:column: field: what is wrong and how to fix it`, and every
//! problem in the file is reported at once rather than one per restart.
//! Secrets are read here too: a config whose secret cannot be read is as
//! unusable as one with a typo, and must be refused whole.

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_spanned::Spanned;

use crate::credential::{Admins, AllowRule, Credential, GleanToken, Kind};
use crate::glean::{self, ActAsPattern, Permission, Scope, ScopeSet};
use crate::secret::SecretSource;

/// Where the daemon listens unless the config or command line says otherwise.
pub const DEFAULT_SOCKET: &str = "/run/tokend/tokend.sock";
const DEFAULT_SOCKET_MODE: u32 = 0o660;
const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);
/// Long enough for a request to reach the API and be checked there.
const DEFAULT_MIN_VALID: Duration = Duration::from_secs(60);
const KINDS: [&str; 1] = ["glean_token"];

/// A validated config.
#[derive(Debug)]
pub struct Config {
    pub path: PathBuf,
    pub daemon: Daemon,
    pub credentials: Vec<Credential>,
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
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut credentials = Vec::with_capacity(raw.credential.len());
    for c in raw.credential {
        let name = c.name.get_ref().clone();
        if let Some(line) = seen.get(&name) {
            cx.problem(
                c.name.span(),
                &format!("credential.{name}.name"),
                format!("duplicate credential name `{name}`, first defined on line {line}; names must be unique"),
            );
            continue;
        }
        seen.insert(name, cx.position(c.name.span().start).0);
        if let Some(c) = cx.credential(c) {
            credentials.push(c);
        }
    }
    if cx.problems.is_empty() {
        Ok(Config {
            path: path.to_owned(),
            daemon,
            credentials,
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
    credential: Vec<RawCredential>,
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
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
enum RawSecret {
    File(PathBuf),
    Env(String),
    Credential(String),
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
        let shutdown_timeout = raw
            .shutdown_timeout
            .and_then(|d| self.duration(&d, "daemon.shutdown_timeout"))
            .unwrap_or(DEFAULT_SHUTDOWN_TIMEOUT);
        Daemon {
            socket: raw.socket.unwrap_or_else(|| DEFAULT_SOCKET.into()),
            socket_mode,
            socket_group,
            admins,
            shutdown_timeout,
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
        let (source, secret) = self.secret(raw, field)?;
        Some(GleanToken {
            permission: permission?,
            scopes,
            expires_at,
            owner,
            source,
            secret,
        })
    }

    fn secret(
        &mut self,
        raw: &RawCredential,
        field: &dyn Fn(&str) -> String,
    ) -> Option<(SecretSource, secrecy::SecretString)> {
        let Some(s) = &raw.secret else {
            self.problem(
                raw.kind.span(),
                &field("secret"),
                "missing; say where the token is read from: secret = { file = \"…\" }, \
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
                    &field("secret.credential"),
                    format!("`{c}` is not a systemd credential name (no `/`, not empty)"),
                );
                return None;
            }
            RawSecret::Credential(c) => SecretSource::Credential(c.clone()),
        };
        match source.load() {
            Ok(secret) => Some((source, secret)),
            Err(e) => {
                self.problem(s.span(), &field("secret"), e.to_string());
                None
            }
        }
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
        let Kind::Glean(g) = &c.kind;
        assert_eq!(g.permission, Permission::Global);
        assert_eq!(g.scopes.to_string(), "CHAT, SEARCH");
        assert_eq!(g.expires_at.unwrap().to_string(), "2029-12-31T22:00:00Z");
        assert_eq!(g.secret.expose_secret(), "glean_secret");
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
}
