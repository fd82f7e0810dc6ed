//! tokenctl: the command line for tokend. Shows credential status and prints
//! headers for scripts (`curl -H @<(tokenctl headers NAME)`). Each command
//! is one call of the typed client; formatting lives in `output.rs`.

mod cli;
mod docs;
mod output;

use std::process::ExitCode;

use cli::{Cli, Command};

use tokend::check::{self, CheckError};
use tokend::login::{self, LoginFlowError, LoginOptions};
use tokend_client::{Client, Error};
use tonic::Code;

/// Exit statuses, so scripts can tell failures apart (listed in `--help`).
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
    /// The daemon could not be reached (or the connection broke).
    pub(crate) const UNREACHABLE: u8 = 6;
    /// The daemon answered that it cannot serve now (refreshing is failing
    /// or slow, a sink is down); it keeps retrying, and so may the script.
    pub(crate) const TRY_LATER: u8 = 7;
}

/// Why a command failed, with its exit status.
struct Failure {
    code: u8,
    message: String,
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        let code = match (&e, e.code()) {
            (Error::Connect(c), _) if c.access_denied => exit::DENIED,
            (Error::Connect(_) | Error::Transport(_), _) => exit::UNREACHABLE,
            (Error::Unavailable(_), _) => exit::TRY_LATER,
            (_, Some(Code::NotFound)) => exit::NOT_FOUND,
            (_, Some(Code::PermissionDenied | Code::Unauthenticated)) => exit::DENIED,
            (_, Some(Code::InvalidArgument)) => exit::USAGE,
            (_, Some(Code::FailedPrecondition)) => exit::UNUSABLE,
            _ => exit::OTHER,
        };
        Self {
            code,
            message: e.to_string(),
        }
    }
}

impl From<LoginFlowError> for Failure {
    fn from(e: LoginFlowError) -> Self {
        match e {
            LoginFlowError::Call(e) => e.into(),
            other => fail(exit::OTHER, other.to_string()),
        }
    }
}

impl From<CheckError> for Failure {
    fn from(e: CheckError) -> Self {
        let code = match &e {
            CheckError::Call(_) => exit::OTHER,
            CheckError::NotFound(_) => exit::NOT_FOUND,
            CheckError::NoInstance(_) => exit::USAGE,
            CheckError::Unreachable(_) => exit::UNREACHABLE,
            CheckError::Failed(_) => exit::UNUSABLE,
            _ => exit::OTHER,
        };
        match e {
            CheckError::Call(e) => e.into(),
            other => fail(code, other.to_string()),
        }
    }
}

/// The daemon's refusals speak of the API's `act_as` field; tokenctl's user
/// types `--act-as EMAIL`. A refused `act_as` is told in those terms (the
/// credential's permission, looked up only on this error path, says which
/// way round it is); anything else passes through as the daemon said it.
async fn in_cli_terms<T>(
    client: &Client,
    request: &tokend_client::HeadersRequest,
    answer: Result<T, Error>,
) -> Result<T, Failure> {
    let e = match answer {
        Err(e @ Error::InvalidArgument(_)) => e,
        other => return Ok(other?),
    };
    let name = &request.credential;
    let permission = match client.status().await {
        Ok(list) => list
            .into_iter()
            .find(|c| &c.name == name)
            .and_then(|c| c.permission),
        Err(_) => None,
    };
    let message = match (permission.as_deref(), &request.act_as) {
        (Some("global"), None) => format!(
            "`{name}` is a global Glean token: pass --act-as EMAIL, the Glean user each request              acts as (within the credential's allow.act_as patterns)"
        ),
        (Some(p), Some(_)) if p != "global" => format!(
            "`{name}` is a {p} Glean token, which cannot act as another user: drop --act-as"
        ),
        _ => return Err(e.into()),
    };
    Err(fail(exit::USAGE, message))
}

fn fail(code: u8, message: String) -> Failure {
    Failure { code, message }
}

fn main() -> ExitCode {
    // Read before the runtime exists: `--help`, `--version` and usage
    // errors exit in clap and need none.
    let cli = Cli::from_env();
    // One thread: a command is a call or two on one connection, and a
    // second thread would only be started to wait.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("Failed building the Runtime");
    let status = match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure { code, message }) => {
            eprintln!("tokenctl: {message}");
            ExitCode::from(code)
        }
    };
    // Not dropped: shutting the runtime down cancels the connection's
    // tasks and closes its socket, which exiting does as well, for some
    // 50 µs of a `tokenctl headers` (`cargo bench --bench tokenctl`).
    std::mem::forget(runtime);
    status
}

async fn run(cli: Cli) -> Result<(), Failure> {
    // These need no daemon.
    if docs::run(&cli).await {
        return Ok(());
    }
    let client = Client::connect(&cli.socket).await.map_err(Error::from)?;
    match cli.command {
        Command::CompleteNames => unreachable!("handled by docs::run"),
        Command::Status { json } => {
            let list = client.status().await?;
            output::status(&list, json);
            if list.is_empty() {
                output::nothing_allowed(&client.whoami().await?);
            }
        }
        Command::Whoami { json } => output::whoami(&client.whoami().await?, json),
        Command::Headers(fetch) => {
            let request = fetch.request();
            let headers = client.headers(&request).await;
            output::headers(&in_cli_terms(&client, &request, headers).await?);
        }
        Command::Get { fetch, json: _ } => {
            let request = fetch.request();
            let headers = client.headers(&request).await;
            output::get(
                &request.credential,
                &in_cli_terms(&client, &request, headers).await?,
            );
        }
        Command::Refresh { name } => output::refreshed(&name, &client.refresh(&name).await?),
        Command::Import { name, expires_at } => {
            let secret = output::read_secret(&name).map_err(|e| {
                fail(
                    exit::USAGE,
                    format!("cannot read the secret from stdin: {e}"),
                )
            })?;
            client.import(&name, &secret, expires_at).await?;
            output::line(&format!("{name}: secret imported; served from now on"));
        }
        Command::Login {
            name,
            no_browser,
            paste,
            timeout,
        } => {
            let options = LoginOptions {
                open_browser: !no_browser,
                paste,
                timeout: timeout.into(),
            };
            let done = login::run(&client, &name, &options, output::prompt).await?;
            output::logged_in(&name, &done);
        }
        Command::Logout { name, revoke } => {
            let revoked = client.logout(&name, revoke).await?;
            let how = if revoked {
                "revoked and forgotten"
            } else {
                "forgotten"
            };
            output::line(&format!("{name}: refresh token {how}"));
        }
        Command::Check {
            name,
            act_as,
            instance,
        } => {
            let mut request = tokend_client::HeadersRequest::new(&name);
            request.act_as.clone_from(&act_as);
            match check::run(&client, &name, act_as, instance).await {
                Err(CheckError::Call(e)) => in_cli_terms(&client, &request, Err(e)).await?,
                done => output::line(&done?),
            }
        }
        Command::ProxyEnv { proxy: name } => {
            let me = client.whoami().await?;
            let Some(proxy) = me.proxies.iter().find(|p| p.name == name) else {
                let yours: Vec<&str> = me.proxies.iter().map(|p| p.name.as_str()).collect();
                let yours = if yours.is_empty() {
                    "none".to_owned()
                } else {
                    yours.join(", ")
                };
                return Err(fail(
                    exit::NOT_FOUND,
                    format!(
                        "no proxy `{name}` that you may use (yours: {yours}); a proxy is \
                         usable when its credential's `allow` admits you"
                    ),
                ));
            };
            if let Some(socket) = proxy.socket() {
                return Err(fail(
                    exit::USAGE,
                    format!(
                        "proxy `{name}` listens on the Unix socket {socket}, and tools that \
                         take a server URL need TCP: give it a loopback listener (listen = \
                         \"127.0.0.1:8787\"), or point a client that speaks HTTP over Unix \
                         sockets at the socket (curl --unix-socket {socket} http://localhost/…)"
                    ),
                ));
            }
            output::proxy_env(&proxy.url());
        }
        Command::Alerts { json } => output::alerts(&client.alerts().await?, json),
        Command::Reload => output::reloaded(&client.reload().await?),
        Command::TestAlert { sink } => {
            client.test_alert(&sink).await?;
            output::line(&format!("test alert delivered to `{sink}`"));
        }
        Command::Completions { .. } | Command::Man => unreachable!("handled above"),
    }
    Ok(())
}
