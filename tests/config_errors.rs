//! A bad config stops `tokend` at startup with a message naming the file,
//! line and field; the shipped example config always loads.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{CANARY, Workdir, assert_no_secret, set_mode, write_secret};

const GOOD: &str = r#"
[[credential]]
name = "search"
kind = "glean_token"
permission = "user"
scopes = ["SEARCH"]
owner = "ops@corp.example"
secret = { file = "secret" }
allow = { uids = [0] }
"#;

/// Runs the daemon as it would start for real (no --check) on `config`.
fn start_with(work: &Workdir, config: &str) -> Output {
    let path = work.write_config("", config);
    Command::new(env!("CARGO_BIN_EXE_tokend"))
        .arg("--config")
        .arg(&path)
        .env_remove("CREDENTIALS_DIRECTORY")
        .output()
        .expect("run tokend")
}

/// `tokend --check --config PATH` with `env` set (`None` removes a variable).
fn check(path: &Path, env: &[(&str, Option<&str>)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tokend"));
    cmd.args(["--check", "--config"]).arg(path);
    for (k, v) in env {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    cmd.output().expect("run tokend")
}

/// `tokend --check` on `config` (after the usual `[daemon]` table with
/// `daemon_extra`), outside systemd.
fn check_config(work: &Workdir, daemon_extra: &str, config: &str) -> Output {
    let path = work.write_config(daemon_extra, config);
    check(&path, &[("CREDENTIALS_DIRECTORY", None)])
}

/// Asserts startup failed with EX_CONFIG and a message holding each fragment.
#[track_caller]
fn assert_refused(work: &Workdir, out: &Output, fragments: &[&str]) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(
        err.contains(&format!("{}:", work.config_path().display())),
        "{err}"
    );
    for f in fragments {
        assert!(err.contains(f), "missing {f:?} in:\n{err}");
    }
    assert_no_secret("a config error", &err);
    assert!(
        !work.socket().exists(),
        "a refused config must not leave a socket"
    );
}

#[test]
fn the_good_config_starts_so_the_cases_below_fail_for_their_own_reason() {
    let work = Workdir::new();
    let path = work.write_config("", GOOD);
    let out = check(&path, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok, 1 credential(s)"));
}

#[test]
fn unknown_kind() {
    let work = Workdir::new();
    let out = start_with(&work, &GOOD.replace("glean_token", "glean_tokn"));
    assert_refused(
        &work,
        &out,
        &[
            ":9:8: credential.search.kind: unknown kind `glean_tokn`",
            "known kinds: glean_token",
        ],
    );
}

#[test]
fn unknown_scope() {
    let work = Workdir::new();
    let out = start_with(
        &work,
        &GOOD.replace("[\"SEARCH\"]", "[\"SEARCH\", \"SERCH\"]"),
    );
    assert_refused(
        &work,
        &out,
        &[
            ":11:21: credential.search.scopes: unknown scope `SERCH` (did you mean SEARCH?)",
            "ACTIVITY, AGENTS",
        ],
    );
}

#[test]
fn missing_secret_file() {
    let work = Workdir::new();
    let out = start_with(&work, &GOOD.replace("\"secret\"", "\"absent\""));
    let missing = work.path().join("absent");
    assert_refused(
        &work,
        &out,
        &[
            "credential.search.secret: cannot read secret file",
            &missing.display().to_string(),
            "No such file",
        ],
    );
}

#[test]
fn secret_readable_by_others() {
    let work = Workdir::new();
    set_mode(&work.path().join("secret"), 0o644);
    let out = start_with(&work, GOOD);
    let secret = work.path().join("secret");
    assert_refused(
        &work,
        &out,
        &[
            "credential.search.secret",
            "accessible by group or others (mode 0644)",
            &format!("chmod 600 {}", secret.display()),
        ],
    );
    // Group-readable is refused too.
    set_mode(&secret, 0o640);
    let out = start_with(&work, GOOD);
    assert_refused(&work, &out, &["(mode 0640)"]);
}

#[test]
fn bad_emails() {
    let work = Workdir::new();
    let out = start_with(&work, &GOOD.replace("ops@corp.example", "ops-at-corp"));
    assert_refused(
        &work,
        &out,
        &[":12:9: credential.search.owner: `ops-at-corp` is not an email address"],
    );
    let global = GOOD
        .replace("\"user\"", "\"global\"")
        .replace("uids = [0] }", "uids = [0], act_as = [\"corp.example\"] }");
    let out = start_with(&work, &global);
    assert_refused(
        &work,
        &out,
        &["credential.search.allow.act_as: `corp.example` is not an email pattern"],
    );
}

#[test]
fn duplicate_name() {
    let work = Workdir::new();
    let out = start_with(&work, &format!("{GOOD}\n{GOOD}"));
    assert_refused(
        &work,
        &out,
        &[
            ":18:8: credential.search.name: duplicate credential name `search`, first defined on line 8",
        ],
    );
}

#[test]
fn unknown_field() {
    let work = Workdir::new();
    let out = start_with(&work, &GOOD.replace("owner =", "ownr ="));
    assert_refused(
        &work,
        &out,
        &[":12:1: unknown field `ownr`, expected one of", "`owner`"],
    );
    let out = start_with(&work, &GOOD.replace("secret = { file", "secret = { path"));
    assert_refused(
        &work,
        &out,
        &[":13:10: credential.search.secret: not a secret source; use { file = \"…\" }"],
    );
}

#[test]
fn all_problems_are_reported_at_once() {
    let work = Workdir::new();
    let bad = GOOD
        .replace("\"SEARCH\"", "\"SERCH\"")
        .replace("ops@corp.example", "nobody");
    let out = start_with(&work, &bad);
    assert_refused(
        &work,
        &out,
        &["credential.search.scopes", "credential.search.owner"],
    );
}

#[test]
fn the_example_config_loads() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/tokend.example.toml");
    let out = check(
        &example,
        &[
            ("GLEAN_SEARCH_TOKEN", Some("glean_example_search")),
            ("GLEAN_ADMIN_TOKEN", Some("glean_example_admin")),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok, 2 credential(s)"));

    // Without its secrets it is refused, naming the variable to set.
    let out = check(
        &example,
        &[
            ("GLEAN_SEARCH_TOKEN", None),
            ("GLEAN_ADMIN_TOKEN", Some("glean_example_admin")),
        ],
    );
    assert_eq!(out.status.code(), Some(78));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("environment variable GLEAN_SEARCH_TOKEN is not set")
    );
}

#[test]
fn systemd_credentials_are_read_from_the_credentials_directory() {
    let work = Workdir::new();
    let creds = work.path().join("creds");
    std::fs::create_dir(&creds).unwrap();
    write_secret(&creds.join("search"), "glean_from_systemd");
    let path = work.write_config(
        "",
        &GOOD.replace("{ file = \"secret\" }", "{ credential = \"search\" }"),
    );
    let creds = creds.to_str().unwrap();
    let out = check(&path, &[("CREDENTIALS_DIRECTORY", Some(creds))]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = check(&path, &[("CREDENTIALS_DIRECTORY", None)]);
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs $CREDENTIALS_DIRECTORY"));
}

/// `secret = "<the token>"` used to be answered with serde's ``unknown
/// variant `<the token>`, expected one of `file`, …``: the secret on stderr,
/// in `--check`, `tokenctl reload` and the `config/reload` alert.
#[test]
fn a_secret_written_inline_is_not_echoed() {
    let work = Workdir::new();
    let inline = format!("secret = \"{CANARY}\"");
    let out = start_with(
        &work,
        &GOOD.replace("secret = { file = \"secret\" }", &inline),
    );
    assert_refused(
        &work,
        &out,
        &[
            ":13:10: credential.search.secret: secrets are never written inline; use \
             { file = \"…\" }, { credential = \"…\" } (systemd LoadCredential=), \
             { env = \"…\" } or { store = true }",
        ],
    );
    let oauth = format!(
        "[[credential]]\nname = \"sso\"\nkind = \"oauth_client_credentials\"\n\
         token_endpoint = \"https://as.example/token\"\nclient_id = \"tokend\"\n\
         client_secret = [\"{CANARY}\"]\n"
    );
    let out = check_config(&work, "", &oauth);
    assert_refused(
        &work,
        &out,
        &[
            ":11:17: credential.sso.client_secret: an array is not a secret source",
            "use { file = \"…\" }, { credential = \"…\" }",
        ],
    );
}

const WEBHOOK: &str = "\n[alerts]\n[[alerts.sink]]\nname = \"chat\"\ntype = \"webhook\"\n";

#[test]
fn a_webhook_url_that_is_not_http_is_refused() {
    let work = Workdir::new();
    let out = check_config(
        &work,
        "",
        &format!("{GOOD}{WEBHOOK}url = \"ftp://files.example/hooks/x\"\n"),
    );
    assert_refused(
        &work,
        &out,
        &[":20:7: alerts.sink.chat.url: `ftp://files.example` is not an http(s) URL; write e.g."],
    );
}

#[test]
fn a_pagerduty_url_that_is_not_a_url_is_refused() {
    let work = Workdir::new();
    let pagerduty = "\n[alerts]\n[[alerts.sink]]\nname = \"oncall\"\ntype = \"pagerduty\"\n\
                     routing_key = { file = \"secret\" }\nurl = \"events.pagerduty.com/v2\"\n";
    let out = check_config(&work, "", &format!("{GOOD}{pagerduty}"));
    assert_refused(
        &work,
        &out,
        &[
            ":21:7: alerts.sink.oncall.url: not a URL (relative URL without a base); write e.g. \
             \"https://events.pagerduty.com/v2/enqueue\"",
        ],
    );
}

#[test]
fn header_names_that_are_not_http_header_names_are_refused() {
    let work = Workdir::new();
    let oauth = "[[credential]]\nname = \"sso\"\nkind = \"oauth_client_credentials\"\n\
                 token_endpoint = \"https://as.example/token\"\nclient_id = \"tokend\"\n\
                 client_secret = { file = \"secret\" }\n\
                 extra_headers = { \"X-Glean-Auth-Type\" = \"OAUTH\", \"X Team\" = \"sre\" }\n";
    let webhook = format!(
        "{WEBHOOK}url = \"https://hooks.example/x\"\nheaders = {{ \"X-Team:\" = \"sre\" }}\n"
    );
    let out = check_config(&work, "", &format!("{oauth}{webhook}"));
    assert_refused(
        &work,
        &out,
        &[
            ":12:50: credential.sso.extra_headers: a header name is not a valid HTTP header name",
            ":19:13: alerts.sink.chat.headers: a header name is not a valid HTTP header name",
            "write e.g. \"X-Team\" = \"sre\"",
        ],
    );
}

/// The client secret and refresh tokens go to the token endpoint: plain
/// http is for this machine only.
#[test]
fn cleartext_token_endpoints_and_issuers_are_refused() {
    let work = Workdir::new();
    let oauth = |field: &str, url: &str| {
        format!(
            "[[credential]]\nname = \"sso\"\nkind = \"oauth_refresh\"\n{field} = \"{url}\"\n\
             client_id = \"tokend\"\nauth_method = \"none\"\n"
        )
    };
    for field in ["issuer", "token_endpoint"] {
        let out = check_config(&work, "", &oauth(field, "http://as.example/oauth?x=1"));
        assert_refused(
            &work,
            &out,
            &[&format!(
                ":9:{}: credential.sso.{field}: `http://as.example` uses plain http, which would \
                 carry secrets in cleartext; use https://",
                field.len() + 4
            )],
        );
        for ok in [
            "https://as.example",
            "http://127.0.0.1:8080",
            "http://localhost:8080",
        ] {
            let out = check_config(&work, "", &oauth(field, ok));
            assert!(
                out.status.success(),
                "{ok}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

#[test]
fn a_zero_http_timeout_is_refused() {
    let work = Workdir::new();
    let out = check_config(&work, "http_timeout = \"0s\"", GOOD);
    assert_refused(
        &work,
        &out,
        &[
            ":4:16: daemon.http_timeout: must be longer than 0s: a zero timeout fails every \
             request to a token endpoint; write e.g. \"10s\"",
        ],
    );
}

/// Every problem's line used to be found by scanning the file from its
/// start: 20 000 bad credentials took 33 s to report.
#[test]
fn twenty_thousand_bad_credentials_are_all_reported() {
    let work = Workdir::new();
    let bad: String = (0..20_000)
        .map(|i| format!("[[credential]]\nname = \"c{i}\"\nkind = \"glean_tokn\"\n"))
        .collect();
    let out = check_config(&work, "", &bad);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{err}");
    let reported = err
        .lines()
        .filter(|l| l.contains(": unknown kind `glean_tokn`"))
        .count();
    assert_eq!(reported, 20_000);
    assert!(
        err.contains(":60005:8: credential.c19999.kind: unknown kind"),
        "{}",
        err.lines().last().unwrap_or_default()
    );
}

/// Each bad `[[proxy]]` is refused with its field and what to write
/// instead; two proxies on port 0 (the kernel picks each a port) do not
/// clash.
#[test]
fn bad_proxy_tables() {
    let table = |lines: &str| {
        format!(
            "{GOOD}\n[[proxy]]\nname = \"p\"\ncredential = \"search\"\n\
             upstream = \"https://acme-be.glean.com\"\n{lines}\n"
        )
    };
    let cases: &[(&str, &[&str])] = &[
        (
            r#"listen = "0.0.0.0:8787""#,
            &["proxy.p.listen: 0.0.0.0 is not a loopback address"],
        ),
        (
            r#"listen = "unix:glean.sock""#,
            &["proxy.p.listen: a Unix socket needs an absolute path"],
        ),
        (
            "listen = \"127.0.0.1:0\"\nupstream_timeout = \"1h\"",
            &["proxy.p.upstream_timeout: `1h` is outside 1s to 10m"],
        ),
        (
            "listen = \"127.0.0.1:0\"\nmax_request_body = \"2GiB\"",
            &["proxy.p.max_request_body: `2GiB` is not a size from 1 byte to 1GiB"],
        ),
        (
            "listen = \"127.0.0.1:0\"\nca_file = \"absent.pem\"",
            &["proxy.p.ca_file: cannot read", "absent.pem"],
        ),
        (
            "listen = \"127.0.0.1:0\"\n\n[[proxy]]\nname = \"p\"\nlisten = \"127.0.0.1:0\"\n\
             credential = \"search\"\nupstream = \"https://acme-be.glean.com\"",
            &["proxy `p` has the same name or listen address as proxy `p`"],
        ),
    ];
    for (lines, fragments) in cases {
        let work = Workdir::new();
        let out = check_config(&work, "", &table(lines));
        assert_refused(&work, &out, fragments);
    }
    // Without an upstream, the credential must name its instance.
    let work = Workdir::new();
    let config =
        table("listen = \"127.0.0.1:0\"").replace("upstream = \"https://acme-be.glean.com\"\n", "");
    let out = check_config(&work, "", &config);
    assert_refused(&work, &out, &["proxy.p.upstream: missing; set upstream"]);
    // A credential that does not exist.
    let out = check_config(
        &work,
        "",
        &table("listen = \"127.0.0.1:0\"")
            .replace("credential = \"search\"", "credential = \"nope\""),
    );
    assert_refused(
        &work,
        &out,
        &["proxy.p.credential: no credential named `nope`"],
    );
    // Cleartext upstreams only on loopback.
    let out = check_config(
        &work,
        "",
        &table("listen = \"127.0.0.1:0\"").replace("https://acme-be", "http://acme-be"),
    );
    assert_refused(&work, &out, &["proxy.p.upstream"]);

    let two = format!(
        "{}\n[[proxy]]\nname = \"q\"\nlisten = \"127.0.0.1:0\"\ncredential = \"search\"\n\
         upstream = \"https://acme-be.glean.com\"\n",
        table("listen = \"127.0.0.1:0\"")
    );
    let out = check_config(&work, "", &two);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
