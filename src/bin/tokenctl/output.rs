//! What tokenctl prints: tables for people, JSON for scripts, header lines
//! for `curl -H @-`; and the one secret it reads, from stdin.

use std::io::Write;

use jiff::Timestamp;
use secrecy::SecretString;
use tokend::clock;
use tokend_client::{Alert, CredentialStatus, Headers, Refreshed, Reloaded};

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
    })
}

fn status_table(list: &[CredentialStatus]) {
    let rows: Vec<[String; 5]> = list
        .iter()
        .map(|c| {
            [
                c.name.clone(),
                c.kind.clone(),
                c.permission.clone().unwrap_or_else(|| "-".into()),
                c.state.as_str().into(),
                expires_in(c.expires_at),
            ]
        })
        .collect();
    let header = ["NAME", "KIND", "PERMISSION", "STATE", "EXPIRES IN"].map(String::from);
    let mut widths = header.clone().map(|h| h.len());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    if rows.is_empty() {
        out.push_str("(no credentials you may use)\n");
    }
    write(out.as_bytes());
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
