//! tokenctl's command line: every command, its arguments and their help.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tokend_client::{DEFAULT_SOCKET, HeadersRequest};

/// Talk to the tokend credential broker.
#[derive(Parser)]
#[cfg_attr(test, derive(Debug, PartialEq))]
#[command(name = "tokenctl", version, after_help = EXIT_HELP)]
pub(crate) struct Cli {
    /// The daemon's socket.
    #[arg(long, global = true, env = "TOKEND_SOCKET", default_value = DEFAULT_SOCKET)]
    pub(crate) socket: PathBuf,
    #[command(subcommand)]
    pub(crate) command: Command,
}

impl Cli {
    /// This process's command line: `headers` in its plain forms read by
    /// [`Cli::headers`], anything else by clap.
    pub(crate) fn from_env() -> Self {
        Self::headers(
            std::env::args_os().skip(1),
            std::env::var_os("TOKEND_SOCKET"),
        )
        .unwrap_or_else(Self::parse)
    }

    /// `tokenctl headers`, the command scripts run once per request, read
    /// without clap: building clap's tree of every command costs about
    /// 100 µs, most of what reading the line takes. Only the plain forms
    /// are read here: `--socket`, `--act-as`, `--scope` and `--min-valid`,
    /// as `--opt VALUE` or `--opt=VALUE`, with values neither empty nor
    /// starting with `-`, and one NAME. Anything else (help, `--`, a repeat,
    /// a mistake) is `None`, for clap to read, or refuse with its usual
    /// message. A test checks that clap reads each accepted line the same.
    fn headers(
        args: impl IntoIterator<Item = OsString>,
        env_socket: Option<OsString>,
    ) -> Option<Self> {
        let mut args = args.into_iter();
        let mut socket = None;
        let mut in_headers = false;
        let mut name = None;
        let mut act_as = None;
        let mut scopes = Vec::new();
        let mut min_valid = None;
        while let Some(arg) = args.next() {
            let arg = arg.into_string().ok()?;
            if let Some(option) = arg.strip_prefix("--") {
                let (option, value) = match option.split_once('=') {
                    Some((option, value)) => (option, value.to_owned()),
                    None => (option, args.next()?.into_string().ok()?),
                };
                if value.is_empty() || value.starts_with('-') {
                    return None;
                }
                match option {
                    "socket" if socket.is_none() => socket = Some(PathBuf::from(value)),
                    "act-as" if in_headers && act_as.is_none() => act_as = Some(value),
                    "scope" if in_headers => scopes.push(value),
                    "min-valid" if in_headers && min_valid.is_none() => {
                        min_valid = Some(value.parse().ok()?);
                    }
                    _ => return None,
                }
            } else if arg.is_empty() || arg.starts_with('-') {
                return None;
            } else if !in_headers && arg == "headers" {
                in_headers = true;
            } else if in_headers && name.is_none() {
                name = Some(arg);
            } else {
                return None;
            }
        }
        let socket = match (socket, env_socket) {
            (Some(socket), _) => socket,
            // clap refuses an empty TOKEND_SOCKET.
            (None, Some(env)) if env.is_empty() => return None,
            (None, Some(env)) => env.into(),
            (None, None) => DEFAULT_SOCKET.into(),
        };
        Some(Self {
            socket,
            command: Command::Headers(Fetch {
                name: name?,
                act_as,
                scopes,
                min_valid,
            }),
        })
    }
}

const EXIT_HELP: &str = "Exit status: 0 ok, 1 other error, 2 bad arguments, 3 no such credential, \
4 permission denied, 5 credential unusable (expired, missing scope), 6 daemon unreachable, 7 no valid \
token yet (refreshing is failing or slow; tokend keeps retrying).";

#[derive(Subcommand)]
#[cfg_attr(test, derive(Debug, PartialEq))]
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
#[cfg_attr(test, derive(Debug, PartialEq))]
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

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, FromArgMatches};

    use super::*;

    /// Lines the fast path must read, and clap the same way.
    const READ: &[&[&str]] = &[
        &["headers", "glean"],
        &["--socket", "/tmp/t.sock", "headers", "glean"],
        &["--socket=/tmp/t.sock", "headers", "glean"],
        &["headers", "glean", "--socket", "/tmp/t.sock"],
        &["headers", "--socket=/tmp/a=b", "glean"],
        &["headers", "glean", "--act-as", "a@corp.example"],
        &["headers", "--act-as=a@corp.example", "glean"],
        &["headers", "glean", "--scope", "SEARCH", "--scope=CHAT"],
        &["headers", "glean", "--min-valid", "5m"],
        &[
            "headers",
            "--min-valid=1h 30m",
            "glean",
            "--scope",
            "SEARCH",
        ],
        &["headers", "headers"],
        &["headers", "--act-as", "headers", "glean"],
        &["--socket", "headers", "headers", "glean"],
        &[
            "headers",
            "glean",
            "--act-as==a@corp.example",
            "--scope=a=b",
        ],
        &["headers", "glean bot", "--act-as", "Zoë <zoe@corp.example>"],
    ];

    /// Lines left to clap: help, mistakes and forms clap reads its own way.
    const LEFT: &[&[&str]] = &[
        &[],
        &["headers"],
        &["headers", "a", "b"],
        &["headers", ""],
        &["headers", "-x"],
        &["headers", "--", "-x"],
        &["--", "headers", "x"],
        &["headers", "x", "--help"],
        &["headers", "--help"],
        &["--help"],
        &["--version"],
        &["-h"],
        &["headers", "x", "-h"],
        &["get", "x"],
        &["status"],
        &["heders", "x"],
        &["--act-as", "a@corp.example", "headers", "x"],
        &["headers", "x", "--json"],
        &["headers", "x", "--bogus", "y"],
        &["headers", "x", "--socket"],
        &["headers", "x", "--socket="],
        &["headers", "x", "--socket", "a", "--socket", "b"],
        &["headers", "x", "--act-as", "a", "--act-as", "b"],
        &["headers", "x", "--act-as", "-a"],
        &["headers", "x", "--act-as=-a"],
        &["headers", "x", "--min-valid", "soon"],
        &["headers", "x", "--min-valid", "5m", "--min-valid", "6m"],
        &["headers", "x", "--scope", ""],
    ];

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    fn by_clap(args: &[&str], env_socket: Option<&'static str>) -> Result<Cli, clap::Error> {
        let mut cmd = Cli::command().mut_arg("socket", |a| a.env(None::<&str>));
        if let Some(socket) = env_socket {
            // What clap reads from TOKEND_SOCKET, without setting it in this
            // process (`set_var` is unsafe while other tests run).
            cmd = cmd.mut_arg("socket", |a| a.default_value(socket));
        }
        let matches =
            cmd.try_get_matches_from(std::iter::once("tokenctl").chain(args.iter().copied()))?;
        Cli::from_arg_matches(&matches)
    }

    #[test]
    fn the_fast_path_reads_headers_as_clap_does() {
        for env in [None, Some("/run/env.sock")] {
            for args in READ {
                let fast = Cli::headers(os(args), env.map(OsString::from));
                let clap = by_clap(args, env).unwrap();
                assert_eq!(
                    fast.as_ref(),
                    Some(&clap),
                    "{args:?}, TOKEND_SOCKET {env:?}"
                );
            }
        }
    }

    #[test]
    fn everything_else_is_left_to_clap() {
        for args in LEFT {
            assert_eq!(Cli::headers(os(args), None), None, "{args:?}");
        }
        // clap refuses an empty TOKEND_SOCKET; so does the fast path.
        assert_eq!(Cli::headers(os(&["headers", "x"]), Some("".into())), None);
    }
}
