//! tokenctl's command line: every command, its arguments and their help.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tokend_client::{DEFAULT_SOCKET, HeadersRequest};

/// Talk to the tokend credential broker.
#[derive(Parser)]
#[command(name = "tokenctl", version, after_help = EXIT_HELP)]
pub(crate) struct Cli {
    /// The daemon's socket.
    #[arg(long, global = true, env = "TOKEND_SOCKET", default_value = DEFAULT_SOCKET)]
    pub(crate) socket: PathBuf,
    #[command(subcommand)]
    pub(crate) command: Command,
}

const EXIT_HELP: &str = "Exit status: 0 ok, 1 other error, 2 bad arguments, 3 no such credential, \
4 permission denied, 5 credential unusable (expired, missing scope), 6 daemon unreachable, 7 no valid \
token yet (refreshing is failing or slow; tokend keeps retrying).";

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Show the credentials you may use and their state.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show who the daemon sees you as: uid, groups, pid, whether you are an
    /// admin, and which credentials you may fetch.
    Whoami {
        /// Print JSON instead of lines.
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
    /// Print the environment Glean's tools read to go through a [[proxy]]:
    /// its URL as GLEAN_SERVER_URL and GLEAN_BASE_URL, and a placeholder
    /// GLEAN_API_TOKEN (not a secret: the proxy injects the real one). Use as
    /// `env $(tokenctl proxy-env NAME) some-tool`.
    ProxyEnv {
        /// The proxy's name in [[proxy]] (`tokenctl whoami` lists yours).
        proxy: String,
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
    /// Print the credential names you may see, one a line, for completion
    /// scripts; nothing when the daemon cannot be reached (docs.rs).
    #[command(name = "__complete-names", hide = true)]
    CompleteNames,
}

#[derive(clap::Args)]
pub(crate) struct Fetch {
    /// Credential name.
    pub(crate) name: String,
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
    pub(crate) fn request(self) -> HeadersRequest {
        HeadersRequest {
            credential: self.name,
            act_as: self.act_as,
            scopes: self.scopes,
            min_valid: self.min_valid.map(Duration::from),
        }
    }
}
