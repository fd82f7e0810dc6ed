//! Validation state and the checks every table shares: positions, problems,
//! the `[daemon]` table, secrets, principals and durations.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_spanned::Spanned;

use super::raw::{Principal, RawAllow, RawCredential, RawDaemon, RawSecret};
use super::{
    ConfigError, DEFAULT_HTTP_TIMEOUT, DEFAULT_MAX_BACKOFF, DEFAULT_SHUTDOWN_TIMEOUT,
    DEFAULT_SOCKET, DEFAULT_SOCKET_MODE, Daemon, Problem,
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

/// Validation state: the source for positions, and the problems found so far.
pub(super) struct Context<'a> {
    pub(super) file: &'a Path,
    pub(super) text: &'a str,
    pub(super) problems: Vec<Problem>,
    /// Every secret file read, for the reload watcher.
    pub(super) secret_files: Vec<PathBuf>,
}

impl Context<'_> {
    /// 1-based line and column of a byte offset.
    pub(super) fn position(&self, offset: usize) -> (usize, usize) {
        let before = &self.text[..offset.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        (line, column)
    }

    pub(super) fn problem(&mut self, span: Range<usize>, field: &str, message: String) {
        let (line, column) = self.position(span.start);
        self.problems.push(Problem {
            file: self.file.to_owned(),
            line,
            column,
            field: field.to_owned(),
            message,
        });
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

    pub(super) fn secret(
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
