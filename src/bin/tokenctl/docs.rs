//! What tokenctl prints about itself: the man page tokenctl(1), the shell
//! completion scripts (clap's static part plus credential names asked of the
//! daemon), and those names for the scripts (`tokenctl __complete-names`).
//! All are rendered from the command line in `cli.rs`, so they never drift.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use clap::{CommandFactory, ValueHint};
use clap_complete::Shell;
use tokend::manpage::{self, Page};
use tokend_client::Client;

use crate::cli::{Cli, Command};
use crate::output;

/// Handles the commands that need no daemon; false for every other one.
pub(crate) async fn run(cli: &Cli) -> bool {
    match &cli.command {
        Command::Completions { shell } => output::write(completions(*shell).as_bytes()),
        Command::Man => output::write(man().as_bytes()),
        Command::CompleteNames => complete_names(&cli.socket).await,
        _ => return false,
    }
    true
}

/// Value names and completion hints for arguments `cli.rs` leaves to
/// clap's defaults (`ACT_AS`, file names), by argument id.
const VALUES: &[(&str, &str, ValueHint)] = &[
    ("socket", "PATH", ValueHint::FilePath),
    ("act_as", "EMAIL", ValueHint::EmailAddress),
    ("scopes", "SCOPE", ValueHint::Other),
    ("min_valid", "DURATION", ValueHint::Other),
    ("expires_at", "TIME", ValueHint::Other),
    ("timeout", "DURATION", ValueHint::Other),
    ("instance", "URL", ValueHint::Url),
    ("sink", "SINK", ValueHint::Other),
];

/// tokenctl's command line as the man page and completions show it, built.
fn command() -> clap::Command {
    fn adjust(mut cmd: clap::Command) -> clap::Command {
        for (id, value, hint) in VALUES {
            if cmd.get_arguments().any(|a| a.get_id() == id) {
                cmd = cmd.mut_arg(*id, |a| a.value_name(*value).value_hint(*hint));
            }
        }
        let subs: Vec<String> = cmd
            .get_subcommands()
            .map(|s| s.get_name().to_owned())
            .collect();
        for sub in subs {
            cmd = cmd.mut_subcommand(sub, adjust);
        }
        cmd
    }
    // Without hidden subcommands: clap_complete would offer them.
    let full = adjust(Cli::command());
    let mut cmd = clap::Command::new("tokenctl")
        .about(full.get_about().cloned().unwrap_or_default())
        .version(env!("CARGO_PKG_VERSION"))
        .subcommand_required(full.is_subcommand_required_set())
        .args(full.get_arguments().cloned())
        .subcommands(full.get_subcommands().filter(|s| !s.is_hide_set()).cloned());
    cmd.build();
    cmd
}

/// The subcommands a reader should see: not hidden, not clap's `help`.
fn subcommands(cmd: &clap::Command) -> impl Iterator<Item = &clap::Command> {
    cmd.get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
}

/// Subcommands whose first positional is a credential name.
fn name_subcommands(cmd: &clap::Command) -> Vec<&clap::Command> {
    subcommands(cmd)
        .filter(|s| {
            s.get_positionals()
                .next()
                .is_some_and(|a| a.get_id() == "name")
        })
        .collect()
}

/// Long options that take a value, anywhere on the command line.
fn options_with_values(cmd: &clap::Command) -> Vec<String> {
    let mut longs: Vec<String> = std::iter::once(cmd)
        .chain(cmd.get_subcommands())
        .flat_map(|c| c.get_arguments())
        .filter(|a| !a.is_positional() && a.get_action().takes_values())
        .filter_map(|a| a.get_long().map(|l| format!("--{l}")))
        .collect();
    longs.sort();
    longs.dedup();
    longs
}

/// The exit statuses `main.rs` uses (`mod exit`), with what each means.
const EXIT_STATUS: &[(u8, &str)] = &[
    (0, "ok"),
    (1, "other error"),
    (
        2,
        "bad arguments, or a command the credential's kind cannot do (`refresh` on a \
         Glean token, `login` on client credentials)",
    ),
    (3, "no such credential"),
    (
        4,
        "permission denied (by tokend or by the socket's file permissions)",
    ),
    (
        5,
        "credential unusable until a person acts (expired, missing scope, needs login)",
    ),
    (
        6,
        "daemon unreachable (not running, or the connection broke)",
    ),
    (
        7,
        "no token valid for the required time yet: refreshing is failing or slow, or an \
         alert sink is down; tokend keeps retrying, so retry later",
    ),
];

/// tokenctl(1), roff.
pub(crate) fn man() -> String {
    let cmd = command();
    let about = cmd.get_about().map(|a| a.to_string()).unwrap_or_default();
    let mut page = Page::new("tokenctl", "1", "User Commands");
    page.section("Name")
        .line(&format!(
            "tokenctl \\- {}",
            manpage::inline(about.trim_end_matches('.'))
        ))
        .section("Synopsis");
    for (i, sub) in subcommands(&cmd).enumerate() {
        if i > 0 {
            page.br();
        }
        page.line(&manpage::synopsis(
            &format!("tokenctl [--socket PATH] {}", sub.get_name()),
            sub,
        ));
    }
    page.section("Description")
        .paragraph(
            "tokenctl is the command line for tokend(8), the credential broker: it shows \
             the credentials you may use, prints their headers for scripts, and lets \
             admins refresh, import, log in and reload. Each command is one call over \
             the daemon's Unix socket; the daemon decides what the calling user may see \
             and do.",
        )
        .paragraph("`headers` prints `Name: value` lines that curl reads directly:")
        .example(
            "tokenctl headers search-bot --scope SEARCH |\n  curl -H @- https://example-be.glean.com/rest/api/v1/search ...",
        );
    page.section("Options")
        .arguments(&cmd)
        .item("\\fB\\-h\\fR, \\fB\\-\\-help\\fR", "Print help.")
        .item("\\fB\\-V\\fR, \\fB\\-\\-version\\fR", "Print the version.");
    page.section("Commands");
    for sub in subcommands(&cmd) {
        page.subsection(sub.get_name()).line(&manpage::synopsis(
            &format!("tokenctl {}", sub.get_name()),
            sub,
        ));
        let about = sub
            .get_long_about()
            .or(sub.get_about())
            .map(|a| a.to_string())
            .unwrap_or_default();
        page.paragraph(&manpage::sentence(&about));
        page.arguments(sub);
    }
    page.section("Exit status");
    for (code, meaning) in EXIT_STATUS {
        page.item(&format!("\\fB{code}\\fR"), &manpage::sentence(meaning));
    }
    page.section("Environment").item(
        "\\fBTOKEND_SOCKET\\fR",
        &format!(
            "The daemon's socket when `--socket` is not given (default `{}`).",
            tokend_client::DEFAULT_SOCKET
        ),
    );
    page.section("See also")
        .line("\\fBtokend\\fR(8), \\fBtokend.toml\\fR(5)");
    page.finish()
}

/// The completion script for `shell`: clap's, plus credential names for
/// the NAME of `headers`, `get` and the other commands that take one, asked
/// of the daemon through `tokenctl __complete-names` (on the command line's
/// `--socket`, else `TOKEND_SOCKET`).
pub(crate) fn completions(shell: Shell) -> String {
    let mut cmd = command();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, "tokenctl", &mut out);
    let script = String::from_utf8(out).expect("clap writes UTF-8");
    let subs: Vec<String> = name_subcommands(&cmd)
        .iter()
        .map(|s| s.get_name().to_owned())
        .collect();
    let valued = options_with_values(&cmd);
    match shell {
        Shell::Bash => bash(&script, &subs, &valued),
        Shell::Zsh => zsh(&script),
        Shell::Fish => fish(&script, &subs, &valued),
        _ => script,
    }
}

fn bash(script: &str, subs: &[String], valued: &[String]) -> String {
    let mut out = script.to_owned();
    let _ = write!(
        out,
        r#"
# Credential names, for the NAME of: {subs}.
# They come from the daemon (`tokenctl __complete-names`, silent when it
# cannot be reached), on the command line's --socket if it has one.
_tokenctl_credential_name() {{
    local i w sub="" seen=0 socket=()
    for ((i = 1; i < COMP_CWORD; i++)); do
        w=${{COMP_WORDS[i]}}
        case "$w" in
            {valued_pattern})
                [[ $w == --socket ]] && socket=(--socket "${{COMP_WORDS[i + 1]}}")
                if [[ ${{COMP_WORDS[i + 1]}} == = ]]; then
                    [[ $w == --socket ]] && socket=(--socket "${{COMP_WORDS[i + 2]}}")
                    ((i += 2))
                else
                    ((i += 1))
                fi
                ;;
            --socket=*) socket=("$w") ;;
            -*) ;;
            *) if [[ -z $sub ]]; then sub=$w; else seen=1; fi ;;
        esac
    done
    case "$sub" in
        {subs_pattern}) ;;
        *) return 1 ;;
    esac
    [[ $seen == 0 && ${{COMP_WORDS[COMP_CWORD]}} != -* ]] || return 1
    local bin=${{COMP_WORDS[0]}}
    [[ $bin == "~/"* ]] && bin=$HOME/${{bin#"~/"}}
    local names
    names=$("$bin" "${{socket[@]}}" __complete-names 2>/dev/null)
    compopt +o default +o bashdefault 2>/dev/null
    COMPREPLY=($(compgen -W "$names" -- "${{COMP_WORDS[COMP_CWORD]}}"))
    return 0
}}

_tokenctl_with_credentials() {{
    _tokenctl_credential_name || _tokenctl "$@"
}}

if [[ "${{BASH_VERSINFO[0]}}" -eq 4 && "${{BASH_VERSINFO[1]}}" -ge 4 || "${{BASH_VERSINFO[0]}}" -gt 4 ]]; then
    complete -F _tokenctl_with_credentials -o nosort -o bashdefault -o default tokenctl
else
    complete -F _tokenctl_with_credentials -o bashdefault -o default tokenctl
fi
"#,
        subs = subs.join(", "),
        valued_pattern = valued.join("|"),
        subs_pattern = subs.join("|"),
    );
    out
}

fn zsh(script: &str) -> String {
    let names_function = r#"
# Credential names from the daemon (`tokenctl __complete-names`, silent when
# it cannot be reached), on the command line's --socket if it has one.
_tokenctl_credentials() {
    local -a names socket
    local i=${words[(I)--socket]}
    if (( i )); then
        socket=(--socket "${(Q)words[i+1]}")
    elif (( ${words[(I)--socket=*]} )); then
        socket=("${(Q)words[${words[(I)--socket=*]}]}")
    fi
    # _call_program evaluates its words: quote them.
    names=(${(f)"$(_call_program credentials ${(q)${(Q)words[1]}} ${(q)socket[@]} __complete-names 2>/dev/null)"})
    _describe -t credentials 'credential' names
}
"#;
    let mut out = String::new();
    for (i, line) in script.lines().enumerate() {
        if line.starts_with("':name -- ") && line.ends_with(":_default' \\") {
            out.push_str(&line.replace(":_default' \\", ":_tokenctl_credentials' \\"));
        } else {
            out.push_str(line);
        }
        out.push('\n');
        if i == 0 {
            out.push_str(names_function);
        }
    }
    out
}

fn fish(script: &str, subs: &[String], valued: &[String]) -> String {
    let specs: Vec<String> = valued
        .iter()
        .map(|o| format!("{}=", o.trim_start_matches('-')))
        .collect();
    let mut out = script.to_owned();
    let _ = write!(
        out,
        r#"
# Credential names, for the NAME of: {subs_list}.
# They come from the daemon (`tokenctl __complete-names`, silent when it
# cannot be reached), on the command line's --socket if it has one.
function __fish_tokenctl_wants_credential
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_tokenctl_global_optspecs) -- $cmd 2>/dev/null
    or return 1
    contains -- "$argv[1]" {subs}
    or return 1
    set -e argv[1]
    argparse -i {specs} -- $argv 2>/dev/null
    or return 1
    # What is left: flags (unknown to the spec) and positionals.
    test (count (string match -v -- '-*' $argv)) -eq 0
end

function __fish_tokenctl_credentials
    set -l cmd (commandline -opc)
    set -l socket
    for i in (seq 2 (count $cmd))
        switch $cmd[$i]
            case --socket
                set socket --socket $cmd[(math $i + 1)]
            case '--socket=*'
                set socket $cmd[$i]
        end
    end
    $cmd[1] $socket __complete-names 2>/dev/null
end

complete -c tokenctl -n __fish_tokenctl_wants_credential -f -a '(__fish_tokenctl_credentials)' -d credential
"#,
        subs_list = subs.join(", "),
        subs = subs.join(" "),
        specs = specs.join(" "),
    );
    out
}

/// `tokenctl __complete-names`: the credentials the caller may see, one a
/// line; nothing, and success, when the daemon cannot be reached or does
/// not answer within two seconds, so completion never prints an error.
async fn complete_names(socket: &Path) {
    let names = async {
        let client = Client::connect(socket).await.ok()?;
        client.status().await.ok()
    };
    if let Ok(Some(list)) = tokio::time::timeout(Duration::from_secs(2), names).await {
        let mut text = String::new();
        for c in list {
            text.push_str(&c.name);
            text.push('\n');
        }
        output::write(text.as_bytes());
    }
}
