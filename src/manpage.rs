//! Man pages, written as roff: a small page builder shared by both binaries
//! (`tokenctl man` renders tokenctl(1) with it), tokend(8) from the daemon's
//! command line, and tokend.toml(5) from the README's `## Config reference`
//! section, so neither page can drift from what it documents.
//!
//! The roff is plain man(7) macros, no tbl, with every character outside
//! ASCII written as a groff escape, so `man -l` and `groff -man -ww` render
//! it without a warning.

use std::fmt::Write as _;

/// A page under construction; [`Page::finish`] returns its roff.
pub struct Page {
    out: String,
}

impl Page {
    /// Starts page `name(section)`; `manual` is the header's centre text,
    /// e.g. "User Commands".
    pub fn new(name: &str, section: &str, manual: &str) -> Self {
        let mut out = String::new();
        let _ = writeln!(
            out,
            ".TH {} {section} \"\" \"tokend {}\" \"{manual}\"",
            quote(&name.to_uppercase()),
            env!("CARGO_PKG_VERSION")
        );
        // Identifiers and options must not be hyphenated or spread out.
        out.push_str(".nh\n.ad l\n");
        Self { out }
    }

    /// `.SH TITLE`.
    pub fn section(&mut self, title: &str) -> &mut Self {
        self.control("SH", &title.to_uppercase())
    }

    /// `.SS title`.
    pub fn subsection(&mut self, title: &str) -> &mut Self {
        self.control("SS", title)
    }

    /// A new paragraph of text with inline markup (see [`inline`]).
    pub fn paragraph(&mut self, text: &str) -> &mut Self {
        self.out.push_str(".PP\n");
        self.text(text)
    }

    /// Text with inline markup, continuing the current paragraph.
    pub fn text(&mut self, text: &str) -> &mut Self {
        self.line(&inline(text))
    }

    /// A tagged paragraph: `tag` is roff already (see [`inline`]), `body` is
    /// text with inline markup.
    pub fn item(&mut self, tag: &str, body: &str) -> &mut Self {
        self.out.push_str(".TP\n");
        self.line(tag);
        self.text(body)
    }

    /// Lines shown as they are, in a fixed-width block.
    pub fn example(&mut self, lines: &str) -> &mut Self {
        self.out.push_str(".PP\n.RS 4\n.nf\n");
        for l in lines.lines() {
            self.line(&escape(l));
        }
        self.out.push_str(".fi\n.RE\n");
        self
    }

    /// One line of roff, as it is (a leading `.` or `'` is neutralised).
    pub fn line(&mut self, roff: &str) -> &mut Self {
        if roff.starts_with(['.', '\'']) {
            self.out.push_str("\\&");
        }
        self.out.push_str(roff);
        self.out.push('\n');
        self
    }

    /// A line break within a paragraph.
    pub fn br(&mut self) -> &mut Self {
        self.out.push_str(".br\n");
        self
    }

    /// `.TP` items for `cmd`'s visible options and positionals, positionals
    /// first, with their defaults, variables and possible values.
    pub fn arguments(&mut self, cmd: &clap::Command) -> &mut Self {
        let args = visible_args(cmd);
        for arg in args.iter().filter(|a| a.is_positional()) {
            self.item(&format!("\\fI{}\\fR", escape(&value_name(arg))), &help(arg));
        }
        for arg in args.iter().filter(|a| !a.is_positional()) {
            self.item(&option_tag(arg), &help(arg));
        }
        self
    }

    /// Markdown as the README writes it: `### ` headings (as sections),
    /// paragraphs, `- ` lists (items may hold indented code blocks),
    /// fenced code blocks, and inline `code`, `**bold**` and links.
    pub fn markdown(&mut self, md: &str) -> &mut Self {
        let lines: Vec<&str> = md.lines().collect();
        let mut i = 0;
        let mut para: Vec<String> = Vec::new();
        let mut in_list = false;
        let flush = |page: &mut Self, para: &mut Vec<String>| {
            if !para.is_empty() {
                page.text(&para.join(" "));
                para.clear();
            }
        };
        while i < lines.len() {
            let line = lines[i];
            let trimmed = line.trim_start();
            let indent = line.len() - trimmed.len();
            if line.trim().is_empty() {
                flush(self, &mut para);
                i += 1;
                continue;
            }
            if let Some(title) = line.strip_prefix("### ") {
                flush(self, &mut para);
                in_list = false;
                self.section(title);
            } else if trimmed.starts_with("```") {
                flush(self, &mut para);
                let mut block = String::new();
                i += 1;
                while i < lines.len() && !lines[i].trim_start().starts_with("```") {
                    block.push_str(lines[i].get(indent..).unwrap_or(lines[i].trim_start()));
                    block.push('\n');
                    i += 1;
                }
                if in_list && indent > 0 {
                    self.out.push_str(".RS 2\n");
                    self.example(&block);
                    self.out.push_str(".RE\n");
                } else {
                    self.example(&block);
                }
            } else if let Some(rest) = line.strip_prefix("- ") {
                flush(self, &mut para);
                in_list = true;
                self.out.push_str(".IP \\(bu 2\n");
                para.push(rest.to_owned());
            } else {
                if para.is_empty() && !(in_list && indent > 0) {
                    in_list = false;
                    self.out.push_str(".PP\n");
                } else if para.is_empty() {
                    // A list item's paragraph after a code block in it.
                    self.out.push_str(".IP \"\" 2\n");
                }
                para.push(trimmed.to_owned());
            }
            i += 1;
        }
        flush(self, &mut para);
        self
    }

    /// The page's roff.
    pub fn finish(self) -> String {
        self.out
    }

    fn control(&mut self, name: &str, arg: &str) -> &mut Self {
        let _ = writeln!(self.out, ".{name} {}", quote(arg));
        self
    }
}

/// `text` escaped for roff: backslashes, hyphens (as `\-`, so options copy
/// and paste as typed) and every non-ASCII character as `\[uXXXX]`.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\e"),
            '-' => out.push_str("\\-"),
            c if c.is_ascii() => out.push(c),
            c => {
                let _ = write!(out, "\\[u{:04X}]", c as u32);
            }
        }
    }
    out
}

/// Text with markdown's inline markup as roff: `code` and `**bold**` in
/// bold, `[text](link)` as its text; the rest escaped.
pub fn inline(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(pos) = rest.find(['`', '*', '[']) {
        out.push_str(&escape(&rest[..pos]));
        let tail = &rest[pos..];
        let (done, next) = if let Some(body) = tail.strip_prefix('`') {
            match body.find('`') {
                Some(end) => (
                    format!("\\fB{}\\fR", escape(&body[..end])),
                    &body[end + 1..],
                ),
                None => (escape("`"), body),
            }
        } else if let Some(body) = tail.strip_prefix("**") {
            match body.find("**") {
                Some(end) => (
                    format!("\\fB{}\\fR", inline(&body[..end])),
                    &body[end + 2..],
                ),
                None => (escape("**"), body),
            }
        } else if let Some(body) = tail.strip_prefix('[') {
            match body.find("](").zip(body.find(')')) {
                Some((close, end)) if close < end && !body[..close].contains('[') => {
                    (inline(&body[..close]), &body[end + 1..])
                }
                _ => (escape("["), body),
            }
        } else {
            (escape(&tail[..1]), &tail[1..])
        };
        out.push_str(&done);
        rest = next;
    }
    out.push_str(&escape(rest));
    out
}

/// A macro argument: escaped, in double quotes.
fn quote(arg: &str) -> String {
    format!("\"{}\"", escape(arg).replace('"', "\\(dq"))
}

/// `cmd`'s arguments a reader should see: not hidden, not the help and
/// version flags clap adds, and not the global ones a built subcommand
/// inherits (they are listed once, with the command that defines them).
/// `cmd` must be built ([`clap::Command::build`]).
pub fn visible_args(cmd: &clap::Command) -> Vec<&clap::Arg> {
    let is_subcommand = cmd.get_bin_name().is_some_and(|b| b.contains(' '));
    cmd.get_arguments()
        .filter(|a| !a.is_hide_set())
        .filter(|a| !(is_subcommand && a.is_global_set()))
        .filter(|a| !matches!(a.get_id().as_str(), "help" | "version"))
        .collect()
}

/// An argument's value name: the one it sets, else its id in capitals.
pub fn value_name(arg: &clap::Arg) -> String {
    arg.get_value_names()
        .map(|v| v.join(" "))
        .unwrap_or_else(|| arg.get_id().as_str().to_uppercase())
}

fn takes_value(arg: &clap::Arg) -> bool {
    arg.get_num_args().is_some_and(|n| n.takes_values())
        && !matches!(
            arg.get_action(),
            clap::ArgAction::SetTrue
                | clap::ArgAction::SetFalse
                | clap::ArgAction::Count
                | clap::ArgAction::Help
                | clap::ArgAction::Version
        )
}

fn repeats(arg: &clap::Arg) -> bool {
    matches!(arg.get_action(), clap::ArgAction::Append)
}

/// `-c, --config FILE` as roff.
fn option_tag(arg: &clap::Arg) -> String {
    let mut names = Vec::new();
    if let Some(s) = arg.get_short() {
        names.push(format!("\\fB\\-{s}\\fR"));
    }
    if let Some(l) = arg.get_long() {
        names.push(format!("\\fB\\-\\-{}\\fR", escape(l)));
    }
    let mut tag = names.join(", ");
    if takes_value(arg) {
        let _ = write!(tag, " \\fI{}\\fR", escape(&value_name(arg)));
    }
    if repeats(arg) {
        tag.push_str(" ...");
    }
    tag
}

/// One argument in a synopsis, as roff: `[--scope SCOPE]...`, `NAME`.
fn synopsis_arg(arg: &clap::Arg) -> String {
    let body = if arg.is_positional() {
        format!("\\fI{}\\fR", escape(&value_name(arg)))
    } else {
        let name = match (arg.get_long(), arg.get_short()) {
            (Some(l), _) => format!("\\-\\-{}", escape(l)),
            (None, Some(s)) => format!("\\-{s}"),
            (None, None) => String::new(),
        };
        let mut s = format!("\\fB{name}\\fR");
        if takes_value(arg) {
            let _ = write!(s, " \\fI{}\\fR", escape(&value_name(arg)));
        }
        s
    };
    let dots = if repeats(arg) { "..." } else { "" };
    if arg.is_required_set() {
        format!("{body}{dots}")
    } else {
        format!("[{body}]{dots}")
    }
}

/// A synopsis line, as roff: `prefix` in bold, then `cmd`'s options, then
/// its positionals.
pub fn synopsis(prefix: &str, cmd: &clap::Command) -> String {
    let args = visible_args(cmd);
    let mut parts = vec![format!("\\fB{}\\fR", escape(prefix))];
    parts.extend(
        args.iter()
            .filter(|a| !a.is_positional())
            .map(|a| synopsis_arg(a)),
    );
    parts.extend(
        args.iter()
            .filter(|a| a.is_positional())
            .map(|a| synopsis_arg(a)),
    );
    parts.join(" ")
}

/// `text` with a capital and a full stop, as a man page's prose wants it
/// (clap drops a doc comment's final full stop).
pub fn sentence(text: &str) -> String {
    let text = text.trim();
    let mut out: String = text.chars().take(1).flat_map(char::to_uppercase).collect();
    out.push_str(&text[text.chars().next().map_or(0, char::len_utf8)..]);
    if !out.is_empty() && !out.ends_with(['.', '!', '?', ':']) {
        out.push('.');
    }
    out
}

/// An argument's help with its default, variable and possible values.
fn help(arg: &clap::Arg) -> String {
    let mut text = sentence(
        &arg.get_long_help()
            .or(arg.get_help())
            .map(ToString::to_string)
            .unwrap_or_default(),
    );
    let values: Vec<String> = arg
        .get_possible_values()
        .iter()
        .filter(|v| !v.is_hide_set())
        .map(|v| format!("`{}`", v.get_name()))
        .collect();
    if !values.is_empty() && takes_value(arg) {
        let _ = write!(text, " One of {}.", values.join(", "));
    }
    let defaults: Vec<String> = arg
        .get_default_values()
        .iter()
        .map(|v| v.to_string_lossy().into_owned())
        .collect();
    if !defaults.is_empty() && takes_value(arg) {
        let _ = write!(text, " Default: `{}`.", defaults.join(" "));
    }
    if let Some(var) = arg.get_env() {
        let _ = write!(
            text,
            " The variable `{}` sets it too.",
            var.to_string_lossy()
        );
    }
    text.trim().to_owned()
}

/// The README, for the config reference.
const README: &str = include_str!("../README.md");

/// The README's `## Config reference` section, without its heading.
pub fn config_reference() -> &'static str {
    let start = README
        .find("\n## Config reference\n")
        .expect("the README has a `## Config reference` section")
        + "\n## Config reference\n".len();
    let len = README[start..]
        .find("\n## ")
        .unwrap_or(README.len() - start);
    &README[start..start + len]
}

/// tokend.toml(5): the README's config reference.
pub fn config_page() -> String {
    let mut page = Page::new("tokend.toml", "5", "File Formats");
    page.section("Name")
        .line("tokend.toml \\- configuration of the tokend credential broker")
        .section("Synopsis")
        .line("\\fI/etc/tokend/tokend.toml\\fR")
        .section("Description")
        .paragraph(
            "tokend(8) reads its credentials, who may use them and how it renews them \
             from this file (`--config`, default `/etc/tokend/tokend.toml`). An \
             annotated example is `/usr/share/doc/tokend/examples/tokend.example.toml`.",
        )
        .markdown(config_reference())
        .section("See also")
        .line("\\fBtokend\\fR(8), \\fBtokenctl\\fR(1), \\fBsystemd.exec\\fR(5)");
    page.finish()
}

/// tokend(8): `cmd` is the daemon's command line (its options are listed
/// from it), the rest is written here.
pub fn tokend_page(cmd: &clap::Command) -> String {
    let mut page = Page::new("tokend", "8", "System Administration");
    let about = cmd
        .get_about()
        .map(|a| a.to_string())
        .unwrap_or_default()
        .replace('\n', " ");
    page.section("Name")
        .line(&format!(
            "tokend \\- {}",
            inline(about.trim_end_matches('.'))
        ))
        .section("Synopsis")
        .line(&synopsis("tokend", cmd))
        .section("Description");
    page.paragraph(
        "tokend holds API credentials (Glean API tokens, OAuth 2.0 refresh-token and \
         client-credentials grants) and hands local processes ready-to-send HTTP headers \
         over gRPC on a Unix socket. Each caller is identified by the kernel's account of \
         the socket peer (uid, gid, supplementary groups, pid) and authorised by the \
         credential's `allow` list; every fetch is audited. OAuth credentials are renewed \
         ahead of expiry, and rotated refresh tokens are committed to an encrypted store \
         before the new access token is served. tokenctl(1) is the command line for \
         people and scripts; the config file is described in tokend.toml(5).",
    )
    .paragraph(
        "On start tokend reads and validates the config (secrets included), opens the \
         store when a credential needs it, and listens on the socket: the config's \
         `daemon.socket`, `--socket`, or a socket passed by systemd. It refuses a socket \
         path where another tokend answers, replaces a stale socket left by a crash, and \
         leaves anything that is not a socket alone. Logs go to standard error: plain \
         text (coloured only at a terminal) or, with `--log-json`, JSON lines; the \
         `audit` target records every `GetHeaders` call, never a token.",
    );
    page.section("Options").arguments(cmd);
    page.section("Signals")
        .item(
            "\\fBSIGHUP\\fR",
            "Re-read the config and its secret files, like `tokenctl reload` or \
             `systemctl reload tokend`. A valid config applies per credential: unchanged \
             ones keep their tokens and watchers, changed ones restart, removed ones end. \
             An invalid config is refused whole and the running one keeps serving. \
             `[daemon]`, `[store]`, `[alerts]` and `[metrics]` changes apply at the next \
             restart. Edits to the config or a secret file it names are picked up without \
             a signal as well.",
        )
        .item(
            "\\fBSIGTERM\\fR, \\fBSIGINT\\fR",
            "Stop accepting, let in-flight calls finish for up to `shutdown_timeout`, \
             remove the socket and exit 0.",
        );
    page.section("Environment")
        .item(
            "\\fBTOKEND_CONFIG\\fR",
            "The config file, when `--config` is not given.",
        )
        .item(
            "\\fBTOKEND_SOCKET\\fR",
            "The socket to listen on, when `--socket` is not given.",
        )
        .item(
            "\\fBTOKEND_LOG\\fR",
            "A tracing filter for the logs, e.g. `info,audit=warn` (default `info`).",
        )
        .item(
            "\\fBCREDENTIALS_DIRECTORY\\fR",
            "Set by systemd for `LoadCredential=`: secrets written \
             `{ credential = \"name\" }` and the store key `tokend-store-key` are read \
             from it.",
        )
        .item(
            "\\fBNOTIFY_SOCKET\\fR, \\fBWATCHDOG_USEC\\fR, \\fBLISTEN_FDS\\fR, \\fBLISTEN_PID\\fR",
            "Set by systemd: readiness and watchdog notification, socket activation.",
        );
    page.section("Files")
        .item(
            "\\fI/etc/tokend/tokend.toml\\fR",
            "The config, see tokend.toml(5).",
        )
        .item(
            "\\fI/etc/tokend/store.key\\fR",
            "The store's key, 32 random bytes, handed to the service as the systemd \
             credential `tokend-store-key`.",
        )
        .item(
            "\\fI/var/lib/tokend/store.redb\\fR",
            "The encrypted store: OAuth tokens, imported Glean secrets, open alerts.",
        )
        .item(
            "\\fI/run/tokend/tokend.sock\\fR",
            "The socket; members of the group `tokend-clients` may connect.",
        )
        .item(
            "\\fI/usr/lib/systemd/system/tokend.service\\fR, \\fI/usr/lib/systemd/system/tokend.socket\\fR",
            "The system units.",
        )
        .item(
            "\\fI/usr/lib/systemd/user/tokend.service\\fR",
            "A per-user unit for a workstation (`systemctl --user`): config in \
             `~/.config/tokend/tokend.toml`, socket in `$XDG_RUNTIME_DIR/tokend/tokend.sock`.",
        )
        .item(
            "\\fI/usr/lib/sysusers.d/tokend.conf\\fR, \\fI/usr/lib/tmpfiles.d/tokend.conf\\fR",
            "The user `tokend`, the group `tokend-clients`, and `/etc/tokend`.",
        );
    page.section("Exit status")
        .item(
            "\\fB0\\fR",
            "Stopped by a signal after draining, or `--check` passed.",
        )
        .item(
            "\\fB1\\fR",
            "A failure after the config was read (socket, store).",
        )
        .item("\\fB2\\fR", "Bad arguments.")
        .item(
            "\\fB78\\fR",
            "The config was refused (EX_CONFIG); every problem is reported with its file, \
             line and field.",
        );
    page.section("Systemd")
        .paragraph(
            "`tokend.service` is `Type=notify`: tokend reports `READY=1` once the socket \
             listens and the store is open, keeps `STATUS=` current, pings the watchdog \
             only after a health check through its own socket succeeds, and sends \
             `RELOADING=1` and `STOPPING=1`. The store key arrives as the credential \
             `tokend-store-key` (`LoadCredential=`). With `tokend.socket`, systemd holds \
             the socket and clients connecting while tokend starts wait instead of \
             failing. The unit runs as the user `tokend` in a sandbox; it cannot use \
             `PrivateUsers=`, which would hide callers' real uids.",
        )
        .paragraph(
            "The package does not enable the service: write the store key and the config, \
             then `systemctl enable --now tokend` (or `tokend.socket`).",
        );
    page.section("See also").line(
        "\\fBtokenctl\\fR(1), \\fBtokend.toml\\fR(5), \\fBsystemd.exec\\fR(5), \
         \\fBsystemd.socket\\fR(5), \\fBsysusers.d\\fR(5)",
    );
    page.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_what_roff_would_read_otherwise() {
        assert_eq!(escape(r"a-b\c"), r"a\-b\ec");
        assert_eq!(escape("5 → 6…"), r"5 \[u2192] 6\[u2026]");
    }

    #[test]
    fn inline_markup_becomes_bold_and_links_their_text() {
        assert_eq!(
            inline("run `tokenctl login` **now**, see [Clients](#clients)"),
            r"run \fBtokenctl login\fR \fBnow\fR, see Clients"
        );
        assert_eq!(inline("`*@*` and * alone"), r"\fB*@*\fR and * alone");
    }

    #[test]
    fn lines_starting_with_a_dot_are_neutralised() {
        let mut page = Page::new("x", "1", "m");
        page.text(".hidden");
        assert!(page.finish().ends_with("\\&.hidden\n"));
    }

    #[test]
    fn the_config_reference_is_found_and_complete() {
        let md = config_reference();
        assert!(md.contains("### OAuth credentials"));
        assert!(!md.contains("\n## "));
        let page = config_page();
        for key in ["socket_group", "refresh_fraction", "routing_key", "listen"] {
            assert!(page.contains(key), "{key} missing");
        }
    }
}
