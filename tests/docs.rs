//! The man pages (`tokenctl man`, `tokend --man`) render with man-db and
//! groff without a warning and say what they must; the completion scripts
//! (`tokenctl completions`) complete credential names asked of a real daemon
//! in bash and fish, and zsh's parses and asks the same way.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::fixtures::Glean;
use common::{Daemon, Workdir, tools};

use common::tools::{run, stdout};

/// The three pages, written to `dir` as `tokenctl.1`, `tokend.8` and
/// `tokend.toml.5`.
fn render_pages(dir: &Path) -> Vec<PathBuf> {
    let pages = [
        ("tokenctl.1", env!("CARGO_BIN_EXE_tokenctl"), &["man"][..]),
        ("tokend.8", env!("CARGO_BIN_EXE_tokend"), &["--man"][..]),
        (
            "tokend.toml.5",
            env!("CARGO_BIN_EXE_tokend"),
            &["--man", "tokend.toml"][..],
        ),
    ];
    pages
        .iter()
        .map(|(name, bin, args)| {
            let path = dir.join(name);
            std::fs::write(&path, stdout(Command::new(bin).args(*args))).unwrap();
            path
        })
        .collect()
}

/// `man -l PAGE` as text, asserting that man and groff said nothing.
fn man(page: &Path) -> String {
    let out = run(Command::new("man")
        .args(["--warnings=all", "-l"])
        .arg(page)
        .env("MANROFFSEQ", "")
        .env("MANWIDTH", "80")
        .env("MAN_KEEP_FORMATTING", "")
        .env_remove("MANPAGER")
        .env_remove("PAGER"));
    assert!(
        out.stderr.is_empty(),
        "man -l {} warned:\n{}",
        page.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8")
}

#[test]
fn every_man_page_renders_without_a_warning() {
    tools::require(&[("man", "man-db"), ("groff", "groff-base")]);
    let dir = tempfile::tempdir().unwrap();
    for page in render_pages(dir.path()) {
        let out = run(Command::new("groff")
            .args(["-man", "-Tutf8", "-ww", "-z"])
            .arg(&page));
        assert!(
            out.stderr.is_empty(),
            "groff warned about {}:\n{}",
            page.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let text = man(&page);
        for heading in ["NAME", "SYNOPSIS", "DESCRIPTION", "SEE ALSO"] {
            assert!(
                text.lines().any(|l| l == heading),
                "{} has no {heading}:\n{text}",
                page.display()
            );
        }
    }
}

/// Man page references in `text`, e.g. `tokend(8)`.
fn references(text: &str) -> Vec<String> {
    let mut refs = Vec::new();
    for (i, _) in text.match_indices('(') {
        let name: String = text[..i]
            .chars()
            .rev()
            .take_while(|c| c.is_ascii_alphanumeric() || "._-".contains(*c))
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        let section = &text[i + 1..];
        if !name.is_empty()
            && section.len() > 1
            && section.as_bytes()[0].is_ascii_digit()
            && section.as_bytes()[1] == b')'
        {
            // Lower case: the header says TOKENCTL(1).
            refs.push(format!("{}({})", name.to_lowercase(), &section[..1]));
        }
    }
    refs
}

#[test]
fn tokenctl_1_has_every_command_inline_and_refers_only_to_real_pages() {
    tools::require(&[("man", "man-db"), ("groff", "groff-base")]);
    let dir = tempfile::tempdir().unwrap();
    let text = man(&render_pages(dir.path())[0]);
    // The synopsis names the socket option's argument.
    assert!(
        text.contains("tokenctl [--socket PATH] status [--json]"),
        "{text}"
    );
    assert!(!text.contains("[--socket]"), "{text}");
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    // Every command, with its arguments and their help, on this page.
    for (command, detail) in [
        ("status", "Print JSON instead of a table."),
        ("headers", "--min-valid DURATION"),
        ("get", "Print a credential's headers and expiry as JSON."),
        ("refresh", "Refresh an OAuth credential now"),
        ("import", "--expires-at TIME"),
        ("login", "--timeout DURATION"),
        ("logout", "--revoke"),
        ("check", "--instance URL"),
        ("alerts", "List open alerts"),
        ("reload", "like SIGHUP"),
        ("test-alert", "tokenctl test-alert SINK"),
        ("completions", "One of bash, elvish, fish, powershell, zsh."),
        ("man", "Print the man page (roff)."),
    ] {
        assert!(
            text.contains(&format!("\n   {command}\n")),
            "no section for {command}:\n{text}"
        );
        assert!(flat.contains(detail), "no {detail:?}:\n{text}");
    }
    assert!(!text.contains("complete-names"), "a hidden command shows");
    let exit = &text[text.find("\nEXIT STATUS\n").expect("EXIT STATUS")..];
    for code in 0..=7 {
        assert!(
            exit.contains(&format!("\n       {code}  ")),
            "status {code}:\n{exit}"
        );
    }
    let env = &text[text.find("\nENVIRONMENT\n").expect("ENVIRONMENT")..];
    assert!(env.contains("TOKEND_SOCKET"), "{env}");
    // Only pages that exist: no tokenctl-status(1) and the like.
    let refs = references(&text);
    assert!(refs.contains(&"tokend(8)".into()), "{refs:?}");
    assert!(refs.contains(&"tokend.toml(5)".into()), "{refs:?}");
    for r in &refs {
        assert!(
            ["tokend(8)", "tokend.toml(5)", "tokenctl(1)"].contains(&r.as_str()),
            "tokenctl(1) refers to {r}, a page that does not exist"
        );
    }
}

#[test]
fn tokend_8_lists_its_options_signals_and_files() {
    tools::require(&[("man", "man-db"), ("groff", "groff-base")]);
    let dir = tempfile::tempdir().unwrap();
    let text = man(&render_pages(dir.path())[1]);
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        text.contains("tokend [--config FILE] [--socket PATH] [--check] [--log-json]"),
        "{text}"
    );
    for needle in [
        "-c, --config FILE",
        "TOKEND_CONFIG",
        "SIGHUP",
        "SIGTERM",
        "/etc/tokend/tokend.toml",
        "/run/tokend/tokend.sock",
        "/usr/lib/systemd/user/tokend.service",
        "Type=notify",
        "78",
    ] {
        assert!(flat.contains(needle), "no {needle:?}:\n{text}");
    }
    assert!(!text.contains("--man"), "the hidden flag shows:\n{text}");
    for r in references(&text) {
        assert!(
            ["tokenctl(1)", "tokend(8)", "tokend.toml(5)"].contains(&r.as_str())
                || r.starts_with("systemd")
                || r.starts_with("sysusers.d("),
            "tokend(8) refers to {r}"
        );
    }
}

/// Keys (`name = …`) in TOML text and in TOML code blocks of markdown.
fn toml_keys(text: &str) -> Vec<String> {
    let mut keys: Vec<String> = text
        .lines()
        .map(|l| l.trim_start().trim_start_matches("# "))
        .filter_map(|l| l.split_once(" = ").map(|(k, _)| k.trim()))
        .filter(|k| !k.is_empty() && k.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
        .map(str::to_owned)
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

#[test]
fn tokend_toml_5_documents_every_key_of_the_readme_and_the_example() {
    tools::require(&[("man", "man-db"), ("groff", "groff-base")]);
    let dir = tempfile::tempdir().unwrap();
    let text = man(&render_pages(dir.path())[2]);
    let readme = include_str!("../README.md");
    let section = &readme[readme.find("\n## Config reference\n").unwrap()..];
    let section = &section[..section[1..].find("\n## ").unwrap()];
    let example = include_str!("../config/tokend.example.toml");
    let keys = [toml_keys(section), toml_keys(example)].concat();
    assert!(keys.len() > 40, "{keys:?}");
    for key in keys {
        assert!(text.contains(&key), "tokend.toml(5) lacks `{key}`");
    }
    for heading in ["OAUTH CREDENTIALS", "ALERTS", "METRICS"] {
        assert!(text.lines().any(|l| l == heading), "no {heading}");
    }
}

/// A daemon serving `alpha-bot` and `beta-bot` to root, and a PATH on
/// which `tokenctl` is the one under test.
fn daemon_with_two_credentials() -> (Workdir, Daemon, String) {
    common::require_root();
    let work = Workdir::new();
    work.write_config(
        "",
        &format!("{}{}", Glean::user("alpha-bot"), Glean::user("beta-bot")),
    );
    let daemon = Daemon::start(&work);
    let path = format!(
        "{}:{}",
        work.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    (work, daemon, path)
}

fn completion_script(work: &Workdir, shell: &str) -> PathBuf {
    let path = work.path().join(format!("completion.{shell}"));
    let script = stdout(Command::new(work.path().join("tokenctl")).args(["completions", shell]));
    std::fs::write(&path, script).unwrap();
    path
}

/// COMPREPLY after completing `words` (the last one being completed) with
/// the bash script, one entry a line.
fn bash_complete(script: &Path, path: &str, socket: Option<&Path>, words: &[&str]) -> Vec<String> {
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let program = format!(
        "source '{}'\n\
         COMP_WORDS=({})\n\
         COMP_CWORD={}\n\
         COMP_LINE=\"${{COMP_WORDS[*]}}\"\n\
         COMP_POINT=${{#COMP_LINE}}\n\
         _tokenctl_with_credentials tokenctl \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\"\n\
         printf '%s\\n' \"${{COMPREPLY[@]}}\"\n",
        script.display(),
        quoted.join(" "),
        words.len() - 1
    );
    let mut cmd = Command::new("bash");
    cmd.arg("-c").arg(program).env("PATH", path);
    match socket {
        Some(s) => cmd.env("TOKEND_SOCKET", s),
        None => cmd.env_remove("TOKEND_SOCKET"),
    };
    let out = run(&mut cmd);
    assert!(
        out.stderr.is_empty(),
        "completion printed an error:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

#[test]
fn bash_completes_credential_names_from_the_daemon() {
    let (work, daemon, path) = daemon_with_two_credentials();
    let script = completion_script(&work, "bash");
    run(Command::new("bash").arg("-n").arg(&script));
    let sock = Some(daemon.socket.as_path());
    let names = vec!["alpha-bot".to_owned(), "beta-bot".to_owned()];
    for command in [
        "headers", "get", "refresh", "import", "login", "logout", "check",
    ] {
        assert_eq!(
            bash_complete(&script, &path, sock, &["tokenctl", command, ""]),
            names,
            "tokenctl {command} <TAB>"
        );
    }
    assert_eq!(
        bash_complete(&script, &path, sock, &["tokenctl", "headers", "al"]),
        ["alpha-bot"]
    );
    // After options and their values; the socket from the command line.
    let socket = daemon.socket.display().to_string();
    assert_eq!(
        bash_complete(
            &script,
            &path,
            None,
            &[
                "tokenctl", "--socket", &socket, "get", "--json", "--scope", "SEARCH", "b"
            ]
        ),
        ["beta-bot"]
    );
    // The static part: subcommands and options, never names in their place.
    let subcommands = bash_complete(&script, &path, sock, &["tokenctl", "he"]);
    assert_eq!(subcommands, ["headers", "help"]);
    let options = bash_complete(&script, &path, sock, &["tokenctl", "headers", "--m"]);
    assert_eq!(options, ["--min-valid"]);
    let after_name = bash_complete(
        &script,
        &path,
        sock,
        &["tokenctl", "headers", "alpha-bot", ""],
    );
    assert!(after_name.contains(&"--act-as".into()), "{after_name:?}");
    assert!(!after_name.contains(&"beta-bot".into()), "{after_name:?}");
    // No daemon there: nothing, and no error.
    let missing = work.path().join("no-such.sock");
    assert_eq!(
        bash_complete(&script, &path, Some(&missing), &["tokenctl", "headers", ""]),
        Vec::<String>::new()
    );
}

#[test]
fn complete_names_is_silent_without_a_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tokenctl"))
        .arg("--socket")
        .arg(dir.path().join("none.sock"))
        .arg("__complete-names")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(out.stdout.is_empty() && out.stderr.is_empty(), "{out:?}");
}

#[test]
fn fish_completes_credential_names_from_the_daemon() {
    tools::require(&[("fish", "fish")]);
    let (work, daemon, path) = daemon_with_two_credentials();
    let script = completion_script(&work, "fish");
    run(Command::new("fish")
        .arg("--no-config")
        .arg("-n")
        .arg(&script));
    // fish keeps history and variables under these: not in the real home.
    let home = tempfile::tempdir().unwrap();
    let complete = |line: &str, socket: &Path| -> Vec<String> {
        let out = run(Command::new("fish")
            .env("XDG_CONFIG_HOME", home.path().join("config"))
            .env("XDG_DATA_HOME", home.path().join("data"))
            .env("XDG_CACHE_HOME", home.path().join("cache"))
            .arg("--no-config")
            .arg("-c")
            .arg(format!(
                "source '{}'; complete -C '{line}'",
                script.display()
            ))
            .env("PATH", &path)
            .env("TOKEND_SOCKET", socket));
        assert!(out.stderr.is_empty(), "{out:?}");
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| l.split('\t').next().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        complete("tokenctl headers ", &daemon.socket),
        ["alpha-bot", "beta-bot"]
    );
    assert_eq!(
        complete("tokenctl logout --revoke b", &daemon.socket),
        ["beta-bot"]
    );
    assert!(complete("tokenctl sta", &daemon.socket).contains(&"status".into()));
    assert_eq!(
        complete("tokenctl headers ", &work.path().join("none.sock")),
        Vec::<String>::new()
    );
}

#[test]
fn zsh_script_parses_and_asks_the_daemon_for_names() {
    tools::require(&[("zsh", "zsh")]);
    let (work, daemon, path) = daemon_with_two_credentials();
    let script = completion_script(&work, "zsh");
    run(Command::new("zsh").arg("-n").arg(&script));
    let text = std::fs::read_to_string(&script).unwrap();
    assert!(text.starts_with("#compdef tokenctl\n"));
    // Each command's NAME argument completes through the daemon.
    assert_eq!(
        text.matches(":_tokenctl_credentials' \\").count(),
        7,
        "{text}"
    );
    // The names function, with compsys's functions stood in for: what it offers.
    let names = |words: &str, socket: &Path| {
        stdout(
            Command::new("zsh")
                .arg("-f")
                .arg("-c")
                .arg(format!(
                    "compdef() {{ : }}; source '{}'\n\
                     _call_program() {{ shift; eval \"$@\" }}\n\
                     _describe() {{ print -rl -- \"${{(@P)4}}\" }}\n\
                     words=({words}); CURRENT=${{#words}}\n\
                     _tokenctl_credentials",
                    script.display()
                ))
                .env("PATH", &path)
                .env("TOKEND_SOCKET", socket),
        )
    };
    assert_eq!(
        names("tokenctl headers ''", &daemon.socket),
        "alpha-bot\nbeta-bot\n"
    );
    let socket = daemon.socket.display().to_string();
    assert_eq!(
        names(
            &format!("tokenctl --socket '{socket}' get ''"),
            &work.path().join("none.sock")
        ),
        "alpha-bot\nbeta-bot\n"
    );
    assert_eq!(
        names("tokenctl headers ''", &work.path().join("none.sock")).trim(),
        ""
    );
}
