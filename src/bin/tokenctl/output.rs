//! What tokenctl prints: tables for people, JSON for scripts, header lines
//! for `curl -H @-`; and the one secret it reads, from stdin.

use std::io::Write;

use jiff::Timestamp;
use secrecy::SecretString;
use tokend::clock;
use tokend_client::{Alert, CredentialStatus, Headers, Refreshed, Reloaded, WhoAmI};

/// `tokenctl status`.
pub(crate) fn status(list: &[CredentialStatus], json: bool) {
    if json {
        print_json(&serde_json::Value::Array(
            list.iter().map(status_json).collect(),
        ));
    } else {
        status_table(list);
    }
}

fn status_json(c: &CredentialStatus) -> serde_json::Value {
    serde_json::json!({
        "name": c.name,
        "kind": c.kind,
        "permission": c.permission,
        "state": c.state.as_str(),
        "expires_at": c.expires_at.map(|t| t.to_string()),
        "scopes": c.scopes,
        "owner": c.owner,
        "last_error": c.last_error,
        "fleet": c.fleet.as_ref().map(|f| serde_json::json!({
            "node": f.node,
            "role": f.role,
            "leader": f.leader,
            "unreachable_since": f.unreachable_since.map(|t| t.to_string()),
        })),
    })
}

/// `leader`, `follower of web-1`, `unreachable`; `-` when not shared.
fn fleet_role(c: &CredentialStatus) -> String {
    match &c.fleet {
        None => "-".into(),
        Some(f) => match (&f.leader, f.role.as_str()) {
            (Some(leader), "follower") => format!("follower of {leader}"),
            _ => f.role.clone(),
        },
    }
}

fn status_table(list: &[CredentialStatus]) {
    // The fleet column only where a credential is shared.
    let shared = list.iter().any(|c| c.fleet.is_some());
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|c| {
            let mut row = vec![
                c.name.clone(),
                c.kind.clone(),
                c.permission.clone().unwrap_or_else(|| "-".into()),
                c.state.as_str().into(),
                expires_in(c.expires_at),
            ];
            if shared {
                row.push(fleet_role(c));
            }
            row
        })
        .collect();
    let mut header: Vec<String> = ["NAME", "KIND", "PERMISSION", "STATE", "EXPIRES IN"]
        .map(String::from)
        .into();
    if shared {
        header.push("FLEET".into());
    }
    let mut widths: Vec<usize> = header.iter().map(String::len).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, &w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    write(out.as_bytes());
}

/// Said on stderr when `status` lists nothing: who the daemon saw, so the
/// person knows what to ask an admin to add.
pub(crate) fn nothing_allowed(me: &WhoAmI) {
    eprintln!(
        "tokenctl: no credential allows you: the daemon sees {}; ask an admin to add your uid or          one of your groups to a credential's `allow` (`tokenctl whoami` shows the details)",
        identity(me)
    );
}

/// `uid 1000 (alice), gid 1000 (alice), groups 27 (sudo), 998 (search)`.
fn identity(me: &WhoAmI) -> String {
    let user = |uid: u32| {
        nix::unistd::User::from_uid(uid.into())
            .ok()
            .flatten()
            .map_or_else(|| uid.to_string(), |u| format!("{uid} ({})", u.name))
    };
    let group = |gid: u32| {
        nix::unistd::Group::from_gid(gid.into())
            .ok()
            .flatten()
            .map_or_else(|| gid.to_string(), |g| format!("{gid} ({})", g.name))
    };
    let mut text = format!("uid {}, gid {}", user(me.uid), group(me.gid));
    if !me.groups.is_empty() {
        let groups: Vec<String> = me.groups.iter().map(|g| group(*g)).collect();
        text.push_str(&format!(", groups {}", groups.join(", ")));
    }
    text
}

/// `tokenctl whoami`.
pub(crate) fn whoami(me: &WhoAmI, json: bool) {
    if json {
        print_json(&serde_json::json!({
            "uid": me.uid,
            "gid": me.gid,
            "groups": me.groups,
            "pid": me.pid,
            "admin": me.admin,
            "credentials": me.credentials,
            "proxies": me.proxies.iter().map(|p| serde_json::json!({
                "name": p.name,
                "credential": p.credential,
                "listen": p.listen,
                "upstream": p.upstream,
            })).collect::<Vec<_>>(),
        }));
        return;
    }
    let pid = me.pid.map_or_else(|| "unknown".into(), |p| p.to_string());
    let admin = if me.admin {
        "yes"
    } else {
        "no (root, the daemon's own user and daemon.admin_uids / admin_groups are)"
    };
    let credentials = if me.credentials.is_empty() {
        "none (no credential's `allow` names your uid or groups)".to_owned()
    } else {
        me.credentials.join(", ")
    };
    let mut text = format!(
        "{}\npid {pid}\nadmin: {admin}\nmay fetch: {credentials}",
        identity(me)
    );
    for p in &me.proxies {
        text.push_str(&format!(
            "\nproxy {}: {} → {} with `{}`",
            p.name, p.listen, p.upstream, p.credential
        ));
    }
    line(&text);
}

/// What `tokenctl proxy-env` prints in place of a token: tools insist on
/// one, and the proxy replaces it.
const PLACEHOLDER_TOKEN: &str = "tokend-proxy-injects-the-real-token";

/// `tokenctl proxy-env`: `NAME=value` lines for `env $(…)`. The URL under
/// every name Glean's tools read: the SDKs' `GLEAN_SERVER_URL`, and
/// `GLEAN_BASE_URL`, which `@gleanwork/local-mcp-server` 0.7 uses as is.
pub(crate) fn proxy_env(url: &str) {
    line(&format!(
        "GLEAN_SERVER_URL={url}\nGLEAN_BASE_URL={url}\nGLEAN_API_TOKEN={PLACEHOLDER_TOKEN}"
    ));
}

/// `tokenctl headers`: `Name: value` lines.
pub(crate) fn headers(h: &Headers) {
    let mut out = String::new();
    for (name, value) in h.iter() {
        out.push_str(name);
        out.push_str(": ");
        out.push_str(value);
        out.push('\n');
    }
    write(out.as_bytes());
}

/// `tokenctl get`: headers and expiry as JSON.
pub(crate) fn get(name: &str, h: &Headers) {
    let headers: Vec<_> = h
        .iter()
        .map(|(name, value)| serde_json::json!({ "name": name, "value": value }))
        .collect();
    print_json(&serde_json::json!({
        "credential": name,
        "headers": headers,
        "expires_at": h.expires_at.map(|t| t.to_string()),
    }));
}

/// `tokenctl refresh`.
pub(crate) fn refreshed(name: &str, r: &Refreshed) {
    line(&format!(
        "{name}: refreshed; expires at {} (in {})",
        r.expires_at
            .map_or_else(|| "never".into(), |t| t.to_string()),
        expires_in(r.expires_at)
    ));
}

/// `tokenctl login`, once the daemon holds the tokens.
pub(crate) fn logged_in(name: &str, r: &Refreshed) {
    line(&format!(
        "{name}: logged in; the daemon holds the tokens (access token expires in {})",
        expires_in(r.expires_at)
    ));
}

/// `tokenctl alerts`.
pub(crate) fn alerts(alerts: &[Alert], json: bool) {
    if json {
        let list: Vec<_> = alerts
            .iter()
            .map(|a| {
                serde_json::json!({
                    "dedup_key": a.dedup_key,
                    "credential": a.credential,
                    "event": a.event,
                    "severity": a.severity,
                    "summary": a.summary,
                    "expires_at": a.expires_at.map(|t| t.to_string()),
                    "opened_at": a.opened_at.map(|t| t.to_string()),
                })
            })
            .collect();
        print_json(&serde_json::Value::Array(list));
    } else if alerts.is_empty() {
        write(b"no open alerts\n");
    } else {
        let mut out = String::new();
        for a in alerts {
            out.push_str(&format!(
                "{:<8}  {:<16}  {}\n",
                a.severity, a.event, a.summary
            ));
        }
        write(out.as_bytes());
    }
}

/// `tokenctl reload`.
pub(crate) fn reloaded(r: &Reloaded) {
    let list = |v: &[String]| {
        if v.is_empty() {
            "-".to_owned()
        } else {
            v.join(", ")
        }
    };
    line(&format!(
        "reloaded: added {}; changed {}; removed {}; {} unchanged",
        list(&r.added),
        list(&r.changed),
        list(&r.removed),
        r.unchanged
    ));
}

/// Until `at`, from now.
fn expires_in(at: Option<Timestamp>) -> String {
    clock::expires_in(at, Timestamp::now())
}

/// What a login tells the person, on stderr (stdout stays for results).
pub(crate) fn prompt(message: &str) {
    eprintln!("{message}");
}

/// The secret from stdin: one line, without echo when stdin is a terminal
/// (never from argv, where other users could see it in `ps`).
pub(crate) fn read_secret(name: &str) -> std::io::Result<SecretString> {
    use nix::sys::termios;
    use std::io::{BufRead, IsTerminal};
    let stdin = std::io::stdin();
    let mut line = zeroize::Zeroizing::new(String::new());
    if stdin.is_terminal() {
        eprint!("secret for {name} (input hidden): ");
        let saved = termios::tcgetattr(&stdin)?;
        let mut quiet = saved.clone();
        quiet.local_flags.remove(termios::LocalFlags::ECHO);
        termios::tcsetattr(&stdin, termios::SetArg::TCSANOW, &quiet)?;
        let read = stdin.lock().read_line(&mut line);
        termios::tcsetattr(&stdin, termios::SetArg::TCSANOW, &saved)?;
        eprintln!();
        read?;
    } else {
        stdin.lock().read_line(&mut line)?;
    }
    Ok(SecretString::from(line.trim()))
}

/// One line on stdout.
pub(crate) fn line(text: &str) {
    write(format!("{text}\n").as_bytes());
}

fn print_json(v: &serde_json::Value) {
    let mut s = serde_json::to_string_pretty(v).unwrap_or_default();
    s.push('\n');
    write(s.as_bytes());
}

/// Writes all of `bytes`; a closed pipe (`| head`) is not an error worth a panic.
pub(crate) fn write(bytes: &[u8]) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(bytes).and_then(|()| out.flush());
}
