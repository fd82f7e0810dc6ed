//! tokenctl: the command line for tokend. Shows credential status and prints
//! headers for scripts (`curl -H @<(tokenctl headers NAME)`). Each command
//! is one call of the typed client; formatting lives in `output.rs`.

mod output;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand};

use tokend::check::{self, CheckError};
use tokend::login::{self, LoginFlowError, LoginOptions};
use tokend_client::{Client, DEFAULT_SOCKET, Error, HeadersRequest};
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
    Completions {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },
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

impl Fetch {
    fn request(self) -> HeadersRequest {
        HeadersRequest {
            credential: self.name,
            act_as: self.act_as,
            scopes: self.scopes,
            min_valid: self.min_valid.map(Duration::from),
        }
    }
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
            (Error::Connect(_), _) => exit::UNREACHABLE,
            (_, Some(Code::NotFound)) => exit::NOT_FOUND,
            (_, Some(Code::PermissionDenied | Code::Unauthenticated)) => exit::DENIED,
            (_, Some(Code::InvalidArgument)) => exit::USAGE,
            (_, Some(Code::FailedPrecondition)) => exit::UNUSABLE,
            (_, Some(Code::Unavailable)) => exit::UNREACHABLE,
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

fn fail(code: u8, message: String) -> Failure {
    Failure { code, message }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match run(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure { code, message }) => {
            eprintln!("tokenctl: {message}");
            ExitCode::from(code)
        }
    }
}

async fn run(cli: Cli) -> Result<(), Failure> {
    // These need no daemon.
    match &cli.command {
        Command::Completions { shell } => {
            let mut out = Vec::new();
            clap_complete::generate(*shell, &mut Cli::command(), "tokenctl", &mut out);
            output::write(&out);
            return Ok(());
        }
        Command::Man => {
            let mut out = Vec::new();
            let _ = clap_mangen::Man::new(Cli::command()).render(&mut out);
            output::write(&out);
            return Ok(());
        }
        _ => {}
    }
    let client = Client::connect(&cli.socket).await.map_err(Error::from)?;
    match cli.command {
        Command::Status { json } => output::status(&client.status().await?, json),
        Command::Headers(fetch) => output::headers(&client.headers(&fetch.request()).await?),
        Command::Get { fetch, json: _ } => {
            let name = fetch.name.clone();
            output::get(&name, &client.headers(&fetch.request()).await?);
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
        } => output::line(&check::run(&client, &name, act_as, instance).await?),
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
