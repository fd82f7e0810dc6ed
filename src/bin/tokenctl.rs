//! tokenctl: the command line for tokend. Shows credential status and prints
//! headers for scripts (`curl -H @<(tokenctl headers NAME)`).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand};
use reqwest::Url;
use secrecy::{ExposeSecret, SecretString};
use tokend::client::{self, ConnectError};
use tokend::config::DEFAULT_SOCKET;
use tokend::login;
use tokend::proto::admin_client::AdminClient;
use tokend::proto::token_broker_client::TokenBrokerClient;
use tokend::proto::{
    self, BeginLoginRequest, CompleteLoginRequest, CredentialState, GetHeadersRequest,
    ImportSecretRequest, ListAlertsRequest, ListCredentialsRequest, LogoutRequest, RefreshRequest,
    ReloadRequest, TestAlertRequest,
};
use tonic::Code;
use tonic::transport::Channel;

/// Exit statuses, so scripts can tell failures apart.
mod exit {
    /// Anything not listed below.
    pub(crate) const OTHER: u8 = 1;
    /// Bad arguments (also clap's own usage errors).
    pub(crate) const USAGE: u8 = 2;
    /// No such credential.
    pub(crate) const NOT_FOUND: u8 = 3;
    /// This user may not use the credential (or the socket).
    pub(crate) const DENIED: u8 = 4;
    /// The credential cannot serve now: expired, missing scopes, needs login.
    pub(crate) const UNUSABLE: u8 = 5;
    /// The daemon could not be reached.
    pub(crate) const UNREACHABLE: u8 = 6;
}

/// Talk to the tokend credential broker.
#[derive(Parser)]
#[command(name = "tokenctl", version, after_help = EXIT_HELP)]
struct Cli {
    /// The daemon's socket.
    #[arg(long, global = true, env = "TOKEND_SOCKET", default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    #[command(subcommand)]
    command: Command,
}

const EXIT_HELP: &str = "Exit status: 0 ok, 1 other error, 2 bad arguments, 3 no such credential, \
4 permission denied, 5 credential unusable (expired, missing scope), 6 daemon unreachable.";

#[derive(Subcommand)]
enum Command {
    /// Show the credentials you may use and their state.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print a credential's headers as `Name: value` lines (for `curl -H @-`).
    Headers(Fetch),
    /// Print a credential's headers and expiry as JSON.
    Get {
        #[command(flatten)]
        fetch: Fetch,
        /// Print JSON (the only format; accepted for clarity in scripts).
        #[arg(long)]
        json: bool,
    },
    /// Refresh an OAuth credential now and print its new expiry (admins).
    Refresh {
        /// Credential name.
        name: String,
    },
    /// Store a Glean token's secret, read from stdin, for a credential with
    /// `secret = { store = true }` (admins). Takes effect at once.
    Import {
        /// Credential name.
        name: String,
        /// When the token expires, as chosen at creation (RFC 3339).
        #[arg(long)]
        expires_at: Option<jiff::Timestamp>,
    },
    /// Log an oauth_refresh credential in: authorization code + PKCE in a
    /// browser; the daemon exchanges the code and keeps the tokens (admins).
    Login {
        /// Credential name.
        name: String,
        /// Print the URL only; do not try to open a browser.
        #[arg(long)]
        no_browser: bool,
        /// No listener: paste the address the browser ends on (for a remote
        /// host whose loopback the browser cannot reach).
        #[arg(long)]
        paste: bool,
        /// Give up when nobody completes the login within this time.
        #[arg(long, default_value = "5m")]
        timeout: humantime::Duration,
    },
    /// Forget an oauth_refresh credential's refresh token (admins).
    Logout {
        /// Credential name.
        name: String,
        /// Revoke it at the issuer first (when it advertises an endpoint).
        #[arg(long)]
        revoke: bool,
    },
    /// Verify a credential for real: Glean tokens make Glean's test search;
    /// OAuth credentials are refreshed and their token shown.
    Check {
        /// Credential name.
        name: String,
        /// Email to act as (global Glean tokens).
        #[arg(long)]
        act_as: Option<String>,
        /// Glean backend, e.g. `https://acme-be.glean.com` (default: the
        /// credential's `instance`).
        #[arg(long)]
        instance: Option<String>,
    },
    /// List open alerts about the credentials you may see.
    Alerts {
        /// Print JSON instead of lines.
        #[arg(long)]
        json: bool,
    },
    /// Re-read the daemon's config and secrets, like SIGHUP (admins).
    Reload,
    /// Send a test event through one alert sink (admins).
    TestAlert {
        /// The sink's name in [[alerts.sink]].
        sink: String,
    },
    /// Print a shell completion script.
    Completions { shell: clap_complete::Shell },
    /// Print the man page (roff).
    Man,
}

#[derive(clap::Args)]
struct Fetch {
    /// Credential name.
    name: String,
    /// Email to act as (global Glean tokens).
    #[arg(long)]
    act_as: Option<String>,
    /// A scope the request needs; repeat for several.
    #[arg(long = "scope")]
    scopes: Vec<String>,
    /// Fail unless the token stays valid this long, e.g. "5m".
    #[arg(long)]
    min_valid: Option<humantime::Duration>,
}

enum Failure {
    Connect(ConnectError),
    Call(tonic::Status),
    Local { code: u8, message: String },
}

impl From<ConnectError> for Failure {
    fn from(e: ConnectError) -> Self {
        Self::Connect(e)
    }
}

impl From<tonic::Status> for Failure {
    fn from(s: tonic::Status) -> Self {
        Self::Call(s)
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Connect(e)) => {
            eprintln!("tokenctl: {e}");
            ExitCode::from(if e.access_denied {
                exit::DENIED
            } else {
                exit::UNREACHABLE
            })
        }
        Err(Failure::Local { code, message }) => {
            eprintln!("tokenctl: {message}");
            ExitCode::from(code)
        }
        Err(Failure::Call(s)) => {
            eprintln!("tokenctl: {}", s.message());
            ExitCode::from(match s.code() {
                Code::NotFound => exit::NOT_FOUND,
                Code::PermissionDenied | Code::Unauthenticated => exit::DENIED,
                Code::InvalidArgument => exit::USAGE,
                Code::FailedPrecondition => exit::UNUSABLE,
                Code::Unavailable => exit::UNREACHABLE,
                _ => exit::OTHER,
            })
        }
    }
}

async fn run(cli: Cli) -> Result<(), Failure> {
    // These need no daemon.
    match &cli.command {
        Command::Completions { shell } => {
            let mut out = Vec::new();
            clap_complete::generate(*shell, &mut Cli::command(), "tokenctl", &mut out);
            write_stdout(&out);
            return Ok(());
        }
        Command::Man => {
            let mut out = Vec::new();
            let _ = clap_mangen::Man::new(Cli::command()).render(&mut out);
            write_stdout(&out);
            return Ok(());
        }
        _ => {}
    }
    let channel = client::channel(&cli.socket).await?;
    let mut client = TokenBrokerClient::new(channel.clone());
    match cli.command {
        Command::Status { json } => {
            let list = client
                .list_credentials(ListCredentialsRequest {})
                .await?
                .into_inner()
                .credentials;
            if json {
                print_json(&serde_json::Value::Array(
                    list.iter().map(status_json).collect(),
                ));
            } else {
                print_status_table(&list);
            }
        }
        Command::Headers(fetch) => {
            let resp = client.get_headers(fetch.request()).await?.into_inner();
            let mut out = String::new();
            for h in &resp.headers {
                out.push_str(&h.name);
                out.push_str(": ");
                out.push_str(&h.value);
                out.push('\n');
            }
            write_stdout(out.as_bytes());
        }
        Command::Get { fetch, json: _ } => {
            let name = fetch.name.clone();
            let resp = client.get_headers(fetch.request()).await?.into_inner();
            let headers: Vec<_> = resp
                .headers
                .iter()
                .map(|h| serde_json::json!({ "name": h.name, "value": h.value }))
                .collect();
            print_json(&serde_json::json!({
                "credential": name,
                "headers": headers,
                "expires_at": resp.expires_at.as_ref().map(rfc3339),
            }));
        }
        Command::Refresh { name } => {
            let resp = AdminClient::new(channel)
                .refresh(RefreshRequest {
                    credential: name.clone(),
                })
                .await?
                .into_inner();
            let at = resp.expires_at.as_ref();
            let line = format!(
                "{name}: refreshed; expires at {} (in {})\n",
                at.map_or_else(|| "never".into(), rfc3339),
                expires_in(at)
            );
            write_stdout(line.as_bytes());
        }
        Command::Import { name, expires_at } => {
            let secret = read_secret(&name).map_err(|e| {
                Failure::Call(tonic::Status::invalid_argument(format!(
                    "cannot read the secret from stdin: {e}"
                )))
            })?;
            AdminClient::new(channel)
                .import_secret(ImportSecretRequest {
                    credential: name.clone(),
                    secret: secret.expose_secret().to_owned(),
                    expires_at: expires_at.map(|t| prost_types::Timestamp {
                        seconds: t.as_second(),
                        nanos: t.subsec_nanosecond(),
                    }),
                })
                .await?;
            write_stdout(format!("{name}: secret imported; served from now on\n").as_bytes());
        }
        Command::Login {
            name,
            no_browser,
            paste,
            timeout,
        } => login(channel, &name, no_browser, paste, timeout.into()).await?,
        Command::Logout { name, revoke } => {
            let resp = AdminClient::new(channel)
                .logout(LogoutRequest {
                    credential: name.clone(),
                    revoke,
                })
                .await?
                .into_inner();
            let how = if resp.revoked {
                "revoked and forgotten"
            } else {
                "forgotten"
            };
            write_stdout(format!("{name}: refresh token {how}\n").as_bytes());
        }
        Command::Check {
            name,
            act_as,
            instance,
        } => check(channel, &name, act_as, instance).await?,
        Command::Alerts { json } => {
            let alerts = client
                .list_alerts(ListAlertsRequest {})
                .await?
                .into_inner()
                .alerts;
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
                            "expires_at": a.expires_at.as_ref().map(rfc3339),
                            "opened_at": a.opened_at.as_ref().map(rfc3339),
                        })
                    })
                    .collect();
                print_json(&serde_json::Value::Array(list));
            } else if alerts.is_empty() {
                write_stdout(b"no open alerts\n");
            } else {
                let mut out = String::new();
                for a in &alerts {
                    out.push_str(&format!(
                        "{:<8}  {:<16}  {}\n",
                        a.severity, a.event, a.summary
                    ));
                }
                write_stdout(out.as_bytes());
            }
        }
        Command::Reload => {
            let r = AdminClient::new(channel)
                .reload(ReloadRequest {})
                .await?
                .into_inner();
            let list = |v: &[String]| {
                if v.is_empty() {
                    "-".to_owned()
                } else {
                    v.join(", ")
                }
            };
            write_stdout(
                format!(
                    "reloaded: added {}; changed {}; removed {}; {} unchanged\n",
                    list(&r.added),
                    list(&r.changed),
                    list(&r.removed),
                    r.unchanged
                )
                .as_bytes(),
            );
        }
        Command::TestAlert { sink } => {
            AdminClient::new(channel)
                .test_alert(TestAlertRequest { sink: sink.clone() })
                .await?;
            write_stdout(format!("test alert delivered to `{sink}`\n").as_bytes());
        }
        Command::Completions { .. } | Command::Man => unreachable!("handled above"),
    }
    Ok(())
}

/// A failure of tokenctl's own making, with its exit status.
fn fail(code: u8, message: String) -> Failure {
    Failure::Local { code, message }
}

async fn login(
    channel: Channel,
    name: &str,
    no_browser: bool,
    paste: bool,
    timeout: Duration,
) -> Result<(), Failure> {
    let mut admin = AdminClient::new(channel);
    let info = admin
        .begin_login(BeginLoginRequest {
            credential: name.to_owned(),
        })
        .await?
        .into_inner();
    let redirect = Url::parse(&info.redirect_uri).map_err(|_| {
        fail(
            exit::OTHER,
            format!("bad redirect_uri {}", info.redirect_uri),
        )
    })?;
    let state = login::random(24);
    let pkce = login::Pkce::new();
    let url = login::authorization_url(
        &info.authorization_endpoint,
        &info.client_id,
        &info.redirect_uri,
        &info.scopes,
        &state,
        &pkce.challenge,
    )
    .map_err(|e| fail(exit::OTHER, e.to_string()))?;
    let code = if paste {
        eprintln!("Open this URL in a browser and log in:\n\n  {url}\n");
        eprintln!("Then paste the whole address the browser ends on (it may show an error page):");
        let mut line = zeroize::Zeroizing::new(String::new());
        std::io::stdin()
            .read_line(&mut line)
            .map_err(|e| fail(exit::OTHER, format!("cannot read the pasted address: {e}")))?;
        login::parse_pasted(&line, &redirect, &state)
    } else {
        let listener = login::CallbackListener::bind(&redirect)
            .await
            .map_err(|e| fail(exit::OTHER, format!("login for `{name}` failed: {e}")))?;
        eprintln!(
            "Open this URL in a browser and log in (waiting up to {}):\n\n  {url}\n",
            tokend::clock::human(timeout)
        );
        if !no_browser {
            open_browser(url.as_str());
        }
        listener.receive(&state, timeout).await
    }
    .map_err(|e| fail(exit::OTHER, format!("login for `{name}` failed: {e}")))?;
    let resp = admin
        .complete_login(CompleteLoginRequest {
            credential: name.to_owned(),
            code: code.expose_secret().to_owned(),
            code_verifier: pkce.verifier.expose_secret().to_owned(),
            redirect_uri: info.redirect_uri,
        })
        .await?
        .into_inner();
    let at = resp.expires_at.as_ref();
    write_stdout(
        format!(
            "{name}: logged in; the daemon holds the tokens (access token expires in {})\n",
            expires_in(at)
        )
        .as_bytes(),
    );
    Ok(())
}

/// Best effort: a desktop session's opener, detached, output discarded.
fn open_browser(url: &str) {
    let has_display =
        std::env::var_os("DISPLAY").is_some() || std::env::var_os("WAYLAND_DISPLAY").is_some();
    if has_display {
        let _ = std::process::Command::new("xdg-open")
            .arg(url)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
    }
}

async fn check(
    channel: Channel,
    name: &str,
    act_as: Option<String>,
    instance: Option<String>,
) -> Result<(), Failure> {
    let mut broker = TokenBrokerClient::new(channel.clone());
    let status = broker
        .list_credentials(ListCredentialsRequest {})
        .await?
        .into_inner()
        .credentials
        .into_iter()
        .find(|c| c.name == name)
        .ok_or_else(|| {
            fail(
                exit::NOT_FOUND,
                format!("no credential named `{name}` that you may use"),
            )
        })?;
    if status.kind != "glean_token" {
        // OAuth: renew for real, then show what the server issued.
        AdminClient::new(channel)
            .refresh(RefreshRequest {
                credential: name.to_owned(),
            })
            .await?;
        let resp = broker
            .get_headers(GetHeadersRequest {
                credential: name.to_owned(),
                ..Default::default()
            })
            .await?
            .into_inner();
        let token = resp
            .headers
            .iter()
            .find(|h| h.name == "Authorization")
            .and_then(|h| h.value.strip_prefix("Bearer "))
            .unwrap_or_default();
        let mut out = format!(
            "ok: `{name}` refreshed; token expires in {} (at {})\n",
            expires_in(resp.expires_at.as_ref()),
            resp.expires_at
                .as_ref()
                .map_or_else(|| "never".into(), rfc3339)
        );
        match tokend::oauth::jwt_claims(token) {
            Some(claims) => {
                out.push_str(
                    "JWT claims (signature NOT verified; tokend is the token's client):\n",
                );
                let mut claims: Vec<_> = claims.into_iter().collect();
                claims.sort_by(|a, b| a.0.cmp(&b.0));
                for (k, v) in claims {
                    out.push_str(&format!("  {k}: {v}\n"));
                }
            }
            None => out.push_str("the access token is opaque (not a JWT)\n"),
        }
        write_stdout(out.as_bytes());
        return Ok(());
    }
    let instance = instance
        .or((!status.instance.is_empty()).then_some(status.instance))
        .ok_or_else(|| {
            fail(
                exit::USAGE,
                format!("`{name}` has no instance: set instance in its config or pass --instance"),
            )
        })?;
    let resp = broker
        .get_headers(GetHeadersRequest {
            credential: name.to_owned(),
            act_as: act_as.clone().unwrap_or_default(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let headers: Vec<(String, String)> = resp
        .headers
        .into_iter()
        .map(|h| (h.name, h.value))
        .collect();
    let verdict = tokend::check::search(&instance, &headers, Duration::from_secs(15))
        .await
        .map_err(|e| fail(exit::UNREACHABLE, e))?;
    let advice = verdict.advice(name, act_as.as_deref(), false);
    if verdict.is_ok() {
        write_stdout(format!("{advice}\n").as_bytes());
        Ok(())
    } else {
        Err(fail(exit::UNUSABLE, advice))
    }
}

/// The secret from stdin: one line, without echo when stdin is a terminal
/// (never from argv, where other users could see it in `ps`).
fn read_secret(name: &str) -> std::io::Result<SecretString> {
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

impl Fetch {
    fn request(self) -> GetHeadersRequest {
        GetHeadersRequest {
            credential: self.name,
            act_as: self.act_as.unwrap_or_default(),
            required_scopes: self.scopes,
            min_valid: self.min_valid.map(|d| {
                let d: Duration = d.into();
                prost_types::Duration {
                    seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
                    nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
                }
            }),
        }
    }
}

fn state_name(state: i32) -> &'static str {
    match CredentialState::try_from(state).unwrap_or(CredentialState::Unspecified) {
        CredentialState::Unspecified => "unknown",
        CredentialState::Fresh => "fresh",
        CredentialState::Refreshing => "refreshing",
        CredentialState::Stale => "stale",
        CredentialState::Expired => "expired",
        CredentialState::NeedsLogin => "needs_login",
        CredentialState::Misconfigured => "misconfigured",
    }
}

fn rfc3339(t: &prost_types::Timestamp) -> String {
    jiff::Timestamp::new(t.seconds, t.nanos).map_or_else(|_| "invalid".into(), |t| t.to_string())
}

/// "in 3d 4h", "5m ago", or "never" for tokens without expiry.
fn expires_in(t: Option<&prost_types::Timestamp>) -> String {
    let Some(at) = t.and_then(|t| jiff::Timestamp::new(t.seconds, t.nanos).ok()) else {
        return "never".into();
    };
    let now = tokend::clock::now();
    if at > now {
        tokend::clock::human(tokend::clock::between(now, at))
    } else {
        format!(
            "expired {} ago",
            tokend::clock::human(tokend::clock::between(at, now))
        )
    }
}

fn status_json(c: &proto::CredentialStatus) -> serde_json::Value {
    serde_json::json!({
        "name": c.name,
        "kind": c.kind,
        "permission": (!c.permission.is_empty()).then_some(&c.permission),
        "state": state_name(c.state),
        "expires_at": c.expires_at.as_ref().map(rfc3339),
        "scopes": c.scopes,
        "owner": (!c.owner.is_empty()).then_some(&c.owner),
        "last_error": (!c.last_error.is_empty()).then_some(&c.last_error),
    })
}

fn print_status_table(list: &[proto::CredentialStatus]) {
    let rows: Vec<[String; 5]> = list
        .iter()
        .map(|c| {
            [
                c.name.clone(),
                c.kind.clone(),
                if c.permission.is_empty() {
                    "-".into()
                } else {
                    c.permission.clone()
                },
                state_name(c.state).into(),
                expires_in(c.expires_at.as_ref()),
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
    write_stdout(out.as_bytes());
}

fn print_json(v: &serde_json::Value) {
    let mut s = serde_json::to_string_pretty(v).unwrap_or_default();
    s.push('\n');
    write_stdout(s.as_bytes());
}

/// Writes all of `bytes`; a closed pipe (`| head`) is not an error worth a panic.
fn write_stdout(bytes: &[u8]) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(bytes).and_then(|()| out.flush());
}
