//! The tokend daemon: loads the config, binds the socket, serves until SIGTERM
//! or SIGINT, then drains and exits 0.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{CommandFactory, Parser};
use tokend::{config, daemon, manpage};
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

/// sysexits' EX_CONFIG: systemd and scripts can tell a bad config apart.
const EXIT_CONFIG: u8 = 78;

/// Credential broker daemon: serves ready-to-send API headers over gRPC on a
/// Unix socket.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Config file.
    #[arg(
        long,
        short,
        value_name = "FILE",
        env = "TOKEND_CONFIG",
        default_value = "/etc/tokend/tokend.toml"
    )]
    config: PathBuf,
    /// Listen here instead of at the config's `daemon.socket`.
    #[arg(long, value_name = "PATH", env = "TOKEND_SOCKET")]
    socket: Option<PathBuf>,
    /// Validate the config (secrets included), print a summary and exit.
    #[arg(long)]
    check: bool,
    /// Log as JSON lines instead of text.
    #[arg(long)]
    log_json: bool,
    /// Print a man page (roff) and exit: tokend(8), or `tokend.toml` for
    /// tokend.toml(5). For packaging.
    #[arg(long, hide = true, value_name = "PAGE", num_args = 0..=1, default_missing_value = "tokend")]
    man: Option<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(page) = &args.man {
        return print_man(page);
    }
    let filter = EnvFilter::try_from_env("TOKEND_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info"))
        // The file watcher's own tracing reports every change in the watched
        // directories; with logs written there it would feed on itself.
        .add_directive("notify=info".parse().expect("a valid directive"));
    // Colour only for a person at a terminal; journald and files get plain text.
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if args.log_json {
        logs.json().init();
    } else {
        logs.init();
    }

    let config = match config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tokend: config refused:\n{e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if args.check {
        println!(
            "{}: ok, {} credential(s)",
            args.config.display(),
            config.credentials.len()
        );
        return ExitCode::SUCCESS;
    }
    match run(config, args.socket) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tokend: {}", report(&e));
            ExitCode::FAILURE
        }
    }
}

/// `e` and its causes, each said once: tokend's errors already put their
/// cause in their message (so a journal line reads whole), which `{:#}`
/// would print a second time.
fn report(e: &anyhow::Error) -> String {
    let mut text = e.to_string();
    for cause in e.chain().skip(1).map(ToString::to_string) {
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}

/// `--man [PAGE]`.
fn print_man(page: &str) -> ExitCode {
    let roff = match page {
        "tokend" | "tokend.8" => {
            let mut cmd = Args::command();
            cmd.build();
            manpage::tokend_page(&cmd)
        }
        "tokend.toml" | "tokend.toml.5" => manpage::config_page(),
        other => {
            eprintln!("tokend: no man page `{other}`; there are `tokend` and `tokend.toml`");
            return ExitCode::from(2);
        }
    };
    print!("{roff}");
    ExitCode::SUCCESS
}

#[tokio::main]
async fn run(config: config::Config, socket: Option<PathBuf>) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!(signal = name, "stopping");
        stop.cancel();
    });
    daemon::run(config, socket, shutdown).await?;
    tracing::info!("stopped");
    Ok(())
}
