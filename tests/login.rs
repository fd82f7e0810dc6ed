//! `tokenctl login` against the real authorization server, the ways a login
//! can fail, `--paste`, `logout`, `check` (Glean's error table, and OAuth
//! claims), `import` keeping its secret out of argv, and completions/man.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Stdio};
use std::time::Duration;

use common::fixtures::{Glean, OAuth};
use common::oidc::{OidcServer, POST_CLIENT};
use common::{Daemon, Workdir, assert_no_secret};
use tokend::proto::GetHeadersRequest;
use tokend::store::{Store, StoreKey};
use tonic::Code;

struct Setup {
    work: Workdir,
    server: OidcServer,
    daemon: Daemon,
    port: u16,
}

fn setup() -> Setup {
    common::require_root();
    let work = Workdir::new();
    common::write_secret(&work.path().join("client-secret"), POST_CLIENT.1);
    let server = OidcServer::start(30, &work.path().join("oidc.log"));
    let port = common::free_port();
    let text = format!(
        r#"{}
[[credential]]
name = "sso"
kind = "oauth_refresh"
issuer = "{}"
client_id = "{}"
client_secret = {{ file = "client-secret" }}
auth_method = "client_secret_post"
scopes = ["api"]
redirect_uri = "http://127.0.0.1:{port}/oauth/callback"
min_valid = "5s"
allow = {{ uids = [0] }}
"#,
        work.store_section(),
        server.issuer,
        POST_CLIENT.0
    );
    work.write_config("", &text);
    let daemon = Daemon::start(&work);
    Setup {
        work,
        server,
        daemon,
        port,
    }
}

/// Starts `tokenctl login sso ARGS` and returns it with the authorization
/// URL it printed.
fn start_login(
    s: &Setup,
    args: &[&str],
) -> (Child, reqwest::Url, BufReader<std::process::ChildStderr>) {
    let mut cmd = s
        .work
        .tokenctl_cmd(&[&["login", "sso", "--no-browser"], args].concat());
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    let url = loop {
        line.clear();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "tokenctl printed no URL"
        );
        if let Some(u) = line
            .trim()
            .strip_prefix(&format!("{}/auth?", s.server.issuer))
        {
            break reqwest::Url::parse(&format!("{}/auth?{u}", s.server.issuer)).unwrap();
        }
    };
    (child, url, stderr)
}

fn param(url: &reqwest::Url, name: &str) -> String {
    url.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
        .unwrap()
}

/// Waits for tokenctl and returns (exit code, stdout, rest of stderr).
fn finish(
    mut child: Child,
    mut stderr: BufReader<std::process::ChildStderr>,
) -> (Option<i32>, String, String) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let mut err = String::new();
            let _ = std::io::Read::read_to_string(&mut stderr, &mut err);
            panic!("tokenctl login did not finish within 20s:\n{err}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut out = String::new();
    let _ = std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut out);
    let mut err = String::new();
    let _ = std::io::Read::read_to_string(&mut stderr, &mut err);
    (status.code(), out, err)
}

/// A browser: keeps cookies, follows redirects (to the loopback listener
/// too), unless told to stop at `stop_port`.
fn browser(stop_port: Option<u16>) -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::custom(move |a| {
            if stop_port.is_some() && a.url().port() == stop_port {
                a.stop()
            } else {
                a.follow()
            }
        }))
        .build()
        .unwrap()
}

async fn assert_needs_login(s: &Setup) {
    let e = s
        .daemon
        .client()
        .await
        .get_headers(GetHeadersRequest {
            credential: "sso".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        e.code(),
        Code::FailedPrecondition,
        "nothing may be stored: {e:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_login_leaves_the_tokens_with_the_daemon() {
    let mut s = setup();
    let before: Vec<_> = std::fs::read_dir(s.work.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let (child, url, stderr) = start_login(&s, &[]);
    assert_eq!(param(&url, "code_challenge_method"), "S256");
    assert_eq!(
        param(&url, "redirect_uri"),
        format!("http://127.0.0.1:{}/oauth/callback", s.port)
    );
    let page = browser(None).get(url).send().await.expect("the login flow");
    assert_eq!(page.status(), 200);
    let body = page.text().await.unwrap();
    assert!(body.contains("Return to the terminal"), "{body}");
    assert!(
        !body.contains("code"),
        "the page must not show the code: {body}"
    );
    let (code, out, err) = finish(child, stderr);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("sso: logged in"), "{out}");

    let r = s
        .daemon
        .client()
        .await
        .get_headers(GetHeadersRequest {
            credential: "sso".into(),
            ..Default::default()
        })
        .await
        .expect("served after login")
        .into_inner();
    assert!(r.headers[0].value.starts_with("Bearer "));

    // `check` on an OAuth credential refreshes and shows the claims.
    let out = s.work.tokenctl(&["check", "sso"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("signature NOT verified") && text.contains("client_id: \"tokend-post\""),
        "{text}"
    );

    // tokenctl wrote nothing; the refresh token is in the daemon's store.
    let after: Vec<_> = std::fs::read_dir(s.work.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let new: Vec<_> = after
        .iter()
        .filter(|f| {
            !before.contains(f) && !f.to_string_lossy().starts_with("tokend-") && *f != "state"
        })
        .collect();
    assert!(new.is_empty(), "tokenctl left files: {new:?}");
    assert!(s.daemon.stop().success());
    let key = StoreKey::load(&s.work.path().join("store.key")).unwrap();
    let record = Store::open(&s.work.store_path(), &key)
        .unwrap()
        .get("sso")
        .unwrap()
        .expect("a record");
    assert!(record.refresh_token.is_some(), "{record:?}");
    assert!(record.access_token.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_denied_stray_and_abandoned_logins_store_nothing() {
    let s = setup();
    let http = browser(None);
    // (what the "browser" requests, with `{state}` the login's own state;
    // what tokenctl must say)
    let cases = [
        (
            "/oauth/callback?code=forged&state=not-the-state",
            "state does not match",
        ),
        (
            "/oauth/callback?error=access_denied&error_description=User+declined&state={state}",
            "refused the login: access_denied (User declined)",
        ),
        (
            "/somewhere/else?code=x&state={state}",
            "arrived for /somewhere/else instead of the redirect path /oauth/callback",
        ),
    ];
    for (request, expected) in cases {
        let (child, url, stderr) = start_login(&s, &[]);
        let target = request.replace("{state}", &param(&url, "state"));
        let _ = http
            .get(format!("http://127.0.0.1:{}{target}", s.port))
            .send()
            .await;
        let (code, _, err) = finish(child, stderr);
        assert_ne!(code, Some(0), "{expected}");
        assert!(err.contains(expected), "wanted {expected:?} in {err}");
        assert!(err.contains("login for `sso` failed"), "{err}");
        assert_needs_login(&s).await;
    }
    let (child, _, stderr) = start_login(&s, &["--timeout", "1s"]);
    let (code, _, err) = finish(child, stderr);
    assert_ne!(code, Some(0));
    assert!(err.contains("no callback arrived within 1s"), "{err}");
    assert_needs_login(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paste_mode_takes_the_address_from_the_browser() {
    let s = setup();
    // Garbage first.
    let (mut child, _, stderr) = start_login(&s, &["--paste"]);
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"where do I click?\n")
        .unwrap();
    let (code, _, err) = finish(child, stderr);
    assert_ne!(code, Some(0));
    assert!(err.contains("not a URL"), "{err}");
    assert_needs_login(&s).await;

    // Then the real address the browser ended on (nothing listens there).
    let (mut child, url, stderr) = start_login(&s, &["--paste"]);
    let response = browser(Some(s.port)).get(url).send().await.unwrap();
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.starts_with(&format!("http://127.0.0.1:{}/oauth/callback?code=", s.port)));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{location}\n").as_bytes())
        .unwrap();
    let (code, out, err) = finish(child, stderr);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("logged in"), "{out}");

    // Logout with revocation: the daemon forgets it and needs a login again.
    let out = s.work.tokenctl(&["logout", "sso", "--revoke"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("revoked and forgotten"));
    assert_needs_login(&s).await;
}

/// A stand-in for a Glean instance answering the test search as Glean's
/// troubleshooting table says, by token and act-as header.
async fn fake_glean() -> u16 {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut read = tokio::io::BufReader::new(read);
                let (mut auth, mut act_as, mut len, mut path) =
                    (String::new(), None, 0, String::new());
                let mut line = String::new();
                read.read_line(&mut line).await.unwrap();
                path.push_str(line.split(' ').nth(1).unwrap_or(""));
                loop {
                    line.clear();
                    read.read_line(&mut line).await.unwrap();
                    if line == "\r\n" {
                        break;
                    }
                    let (k, v) = line.split_once(':').unwrap();
                    match k.to_ascii_lowercase().as_str() {
                        "authorization" => auth = v.trim().to_owned(),
                        "x-glean-actas" => act_as = Some(v.trim().to_owned()),
                        "content-length" => len = v.trim().parse().unwrap(),
                        _ => {}
                    }
                }
                let mut body = vec![0; len];
                read.read_exact(&mut body).await.unwrap();
                let (status, text) = match (path.as_str(), auth.as_str(), act_as.as_deref()) {
                    (p, _, _) if p != "/rest/api/v1/search" => (404, "no such endpoint"),
                    (_, "Bearer glean_expired", _) => (401, "Unauthorized"),
                    (_, "Bearer glean_noscope", _) => (403, "Forbidden"),
                    (_, "Bearer glean_global", None) => {
                        (400, "Bad Request: Required header missing: X-Glean-ActAs")
                    }
                    (_, "Bearer glean_global", Some("ghost@corp.example")) => {
                        (401, "Invalid identity")
                    }
                    (_, "Bearer glean_global" | "Bearer glean_ok", _) => (200, r#"{"results":[]}"#),
                    _ => (401, "Unauthorized"),
                };
                let response = format!(
                    "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
                    text.len()
                );
                let _ = write.write_all(response.as_bytes()).await;
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_translates_gleans_answers_into_advice() {
    common::require_root();
    let port = fake_glean().await;
    let work = Workdir::new();
    let mut text = String::new();
    for (name, secret, permission) in [
        ("ok", "glean_ok", "user"),
        ("expired", "glean_expired", "user"),
        ("noscope", "glean_noscope", "user"),
        ("secretly-global", "glean_global", "user"),
        ("global", "glean_global", "global"),
    ] {
        common::write_secret(&work.path().join(name), secret);
        let token = match permission {
            "global" => Glean::global(name),
            _ => Glean::user(name),
        };
        let instance = format!("instance = \"http://127.0.0.1:{port}\"");
        text.push_str(&token.secret_file(name).with(instance).to_string());
    }
    work.write_config("", &text);
    let _daemon = Daemon::start(&work);
    for (args, code, advice) in [
        (&["check", "ok"][..], 0, "ok: `ok` works"),
        (
            &["check", "expired"],
            5,
            "Glean answered 401: the token of `expired` is invalid or expired",
        ),
        (&["check", "noscope"], 5, "lacks the SEARCH scope"),
        (
            &["check", "secretly-global"],
            5,
            "is a global token; pass --act-as EMAIL",
        ),
        (
            &["check", "global", "--act-as", "ghost@corp.example"],
            5,
            "ghost@corp.example is not a Glean user",
        ),
        (
            &["check", "global", "--act-as", "alice@corp.example"],
            0,
            "works",
        ),
    ] {
        let out = work.tokenctl(args);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(code), "{args:?}: {text}");
        assert!(
            text.contains(advice),
            "{args:?}: wanted {advice:?} in {text}"
        );
        assert!(!text.contains("glean_"), "a token in the output: {text}");
    }
}

#[test]
fn import_keeps_the_secret_out_of_argv_logs_and_output() {
    common::require_root();
    let work = Workdir::new();
    work.write_config(
        "",
        &format!("{}{}", work.store_section(), Glean::user("g").stored()),
    );
    let daemon = Daemon::start(&work);
    let mut child = work
        .tokenctl_cmd(&["import", "g"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Once exec'd (its argv names the subcommand), argv is final.
    let argv = loop {
        let argv = std::fs::read(format!("/proc/{}/cmdline", child.id())).unwrap();
        if String::from_utf8_lossy(&argv).contains("import") {
            break argv;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{}\n", common::CANARY).as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_no_secret("tokenctl's argv", &String::from_utf8_lossy(&argv));
    assert!(
        String::from_utf8_lossy(&argv).contains("import"),
        "argv was read"
    );
    assert_no_secret("tokenctl's stdout", &String::from_utf8_lossy(&out.stdout));
    assert_no_secret("tokenctl's stderr", &String::from_utf8_lossy(&out.stderr));
    assert_no_secret("tokend's logs", &daemon.logs());
    let served = work.tokenctl(&["headers", "g"]);
    assert_eq!(
        String::from_utf8_lossy(&served.stdout),
        format!("Authorization: Bearer {}\n", common::CANARY)
    );
}

#[test]
fn completions_and_man_page_come_from_the_cli_definition() {
    let work = Workdir::new();
    let out = work.tokenctl(&["completions", "bash"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        text.contains("_tokenctl()") && text.contains("login") && text.contains("--act-as"),
        "{text}"
    );
    let out = work.tokenctl(&["man"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(".TH \"TOKENCTL\" 1") && text.contains(".SH \"EXIT STATUS\""),
        "{text}"
    );
}

/// `check` on OAuth credentials, as a caller the credentials allow but who
/// is no admin: Glean's test search with the OAuth headers, against
/// emulated Glean instances that answer 200, 401 (OAuth access not set up
/// for this issuer and client), 403 (the user may not search), and 401 for
/// a credential that forgot `X-Glean-Auth-Type: OAUTH`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_on_oauth_credentials_searches_glean_without_admin_rights() {
    use common::glean_api::GleanApi;
    use tokend::oauth::AuthMethod;
    use tokend::proto::PutRefreshTokenRequest;
    const CALLER: u32 = 4710;
    const CLIENTS: u32 = 4700;

    common::require_root();
    let work = Workdir::new();
    common::write_secret(&work.path().join("client-secret"), POST_CLIENT.1);
    let server = OidcServer::start(3600, &work.path().join("oidc.log"));
    let works = GleanApi::start();
    works.trust_issuer(&server.issuer, POST_CLIENT);
    let not_set_up = GleanApi::start();
    let forbidden = GleanApi::start();
    forbidden.trust_issuer(&server.issuer, POST_CLIENT);
    forbidden.forbid_oauth();
    let oauth = "extra_headers = { \"X-Glean-Auth-Type\" = \"OAUTH\" }";
    let mut text = work.store_section();
    for (name, instance, headers) in [
        ("works", works.url(), oauth),
        ("not-set-up", not_set_up.url(), oauth),
        ("forbidden", forbidden.url(), oauth),
        ("no-auth-type", works.url(), ""),
        ("no-instance", String::new(), oauth),
    ] {
        let mut credential = OAuth::refresh(name, &server.issuer, POST_CLIENT.0)
            .with(r#"scopes = ["api"]"#)
            .min_valid("5s")
            .with(headers)
            .allow(format!("{{ uids = [0, {CALLER}] }}"));
        if !instance.is_empty() {
            credential = credential.with(format!("instance = \"{instance}\""));
        }
        text.push_str(&credential.to_string());
    }
    work.write_config(&format!("socket_group = {CLIENTS}"), &text);
    let daemon = Daemon::start(&work);
    let mut admin = daemon.admin().await;
    for name in [
        "works",
        "not-set-up",
        "forbidden",
        "no-auth-type",
        "no-instance",
    ] {
        let tokens = server
            .login(POST_CLIENT, AuthMethod::ClientSecretPost)
            .await;
        admin
            .put_refresh_token(PutRefreshTokenRequest {
                credential: name.into(),
                refresh_token: secrecy::ExposeSecret::expose_secret(
                    &tokens.refresh_token.expect("a refresh token"),
                )
                .to_owned(),
                ..Default::default()
            })
            .await
            .expect("PutRefreshToken");
    }
    let before = works.seen().len();
    for (name, code, advice) in [
        ("works", 0, "ok: `works` works (test search answered 200)"),
        (
            "not-set-up",
            5,
            "OAuth token-based access is off in Glean's Client API settings",
        ),
        ("not-set-up", 5, "(tokend-post) is not in its allowed list"),
        ("not-set-up", 5, "up to 10 minutes"),
        ("forbidden", 5, "OAuth tokens carry every scope"),
        (
            "no-auth-type",
            5,
            "add extra_headers = { \"X-Glean-Auth-Type\" = \"OAUTH\" }",
        ),
        (
            "no-instance",
            0,
            "set its `instance` (or pass --instance URL)",
        ),
    ] {
        let out = tokio::task::spawn_blocking({
            let (ctl, socket) = (work.path().join("tokenctl"), work.socket());
            move || {
                common::setpriv(CALLER, CLIENTS, &[], &ctl)
                    .arg("--socket")
                    .arg(socket)
                    .args(["check", name])
                    .output()
                    .expect(
                        "run setpriv (util-linux); install it with `apt-get install util-linux`",
                    )
            }
        })
        .await
        .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(code), "{name}: {text}");
        assert!(text.contains(advice), "{name}: wanted {advice:?} in {text}");
        assert!(
            text.contains("JWT claims (signature NOT verified"),
            "{name}: {text}"
        );
        assert!(!text.contains("admin_uids"), "{name} needed admin: {text}");
    }
    // The search really went to Glean with the OAuth headers.
    let seen = works.seen();
    assert_eq!(seen.len() - before, 2, "{seen:?}");
    assert_eq!(seen[before].status, 200);
    assert_eq!(seen[before].auth_type.as_deref(), Some("OAUTH"));
    assert_eq!(seen[before + 1].auth_type, None);
}
