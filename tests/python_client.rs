//! The Python client package `clients/python` (`tokend-client`): installed
//! with pip from the tree as a user would (`common::python_client`), its own
//! pytest suite, then its clients against the real daemon on its real
//! socket (`clients/python/tests/live/live_client.py`), and the official
//! Glean SDK authenticated through it against a Glean API emulator
//! (`common::glean_api`).

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use common::fixtures::Glean;
use common::glean_api::{CHAT_PATH, GleanApi, Permission, SEARCH_PATH, Seen};
use common::hostile::{Hostile, Mode};
use common::json_lines::JsonLines;
use common::oidc::{OidcServer, POST_CLIENT};
use common::python_client::PythonClient;
use common::{CANARY, Daemon, Workdir};
use secrecy::ExposeSecret as _;
use serde_json::{Value, json};
use tokend::oauth::AuthMethod;
use tokend::proto::{GetHeadersRequest, PutRefreshTokenRequest};

/// Never allowed to the tests' uid (root): root is not implicitly allowed.
const STRANGER: u32 = 4242;
/// The expiry configured for the `user` credential.
const USER_EXPIRES_AT: &str = "2031-01-01T00:00:00+00:00";

/// The daemon with the credentials every test here uses:
///
/// - `user`: a user Glean token (the canary), SEARCH, expiring in 2031;
/// - `global`: a global one, acting as anyone at corp.example;
/// - `rotating`: a user token whose secret file the watch test rewrites;
/// - `forbidden`: allowed only to uid 4242;
/// - `oauth`: client credentials at `token_endpoint`, renewed on report;
/// - `sso`: an OAuth login nobody has done yet (needs login).
///
/// plus `extra` credential tables, with `secrets` (file name, secret) in
/// the work directory.
fn start_with(token_endpoint: &str, extra: &str, secrets: &[(&str, &str)]) -> (Workdir, Daemon) {
    common::require_root();
    let work = Workdir::new();
    common::write_secret(
        &work.path().join("rotating.secret"),
        "glean_before_rotation",
    );
    common::write_secret(&work.path().join("client-secret"), "python-client-secret");
    for (file, secret) in secrets {
        common::write_secret(&work.path().join(file), secret);
    }
    let credentials = [
        work.store_section(),
        Glean::user("user")
            .with(r#"expires_at = "2031-01-01T00:00:00Z""#)
            .with(r#"owner = "search-team@corp.example""#)
            .to_string(),
        Glean::global("global").to_string(),
        Glean::user("rotating")
            .secret_file("rotating.secret")
            .to_string(),
        format!(
            r#"
[[credential]]
name = "forbidden"
kind = "glean_token"
permission = "user"
scopes = ["SEARCH"]
secret = {{ file = "secret" }}
allow = {{ uids = [{STRANGER}] }}

[[credential]]
name = "oauth"
kind = "oauth_client_credentials"
token_endpoint = "{token_endpoint}"
client_id = "tokend"
client_secret = {{ file = "client-secret" }}
auth_method = "client_secret_post"
allow = {{ uids = [0] }}

[[credential]]
name = "sso"
kind = "oauth_refresh"
token_endpoint = "{token_endpoint}"
client_id = "tokend"
client_secret = {{ file = "client-secret" }}
auth_method = "client_secret_post"
allow = {{ uids = [0] }}
"#
        ),
        extra.to_owned(),
    ]
    .concat();
    work.write_config("", &credentials);
    let daemon = Daemon::start(&work);
    (work, daemon)
}

/// [`start_with`] a token endpoint that issues a new token per request.
fn start() -> (Workdir, Daemon, Hostile) {
    let hostile = Hostile::start(Mode::Valid { expires_in: 3600 });
    let (work, daemon) = start_with(&hostile.token_endpoint(), "", &[]);
    (work, daemon, hostile)
}

/// Runs `cmd` to its end (at most 90 s) and returns its output.
fn output(mut cmd: Command) -> Output {
    let what = format!("{cmd:?}");
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    let (tx, rx) = mpsc::channel();
    let pid = child.id();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    rx.recv_timeout(Duration::from_secs(90))
        .unwrap_or_else(|_| {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            panic!("{what} did not finish within 90s")
        })
        .unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// `live_client.py COMMAND ARGS` against `daemon`: its one JSON object.
/// Fails, with the script's stderr, when it exited non-zero or printed
/// something else; and when its log (stderr, at DEBUG) shows the canary.
#[track_caller]
fn live(daemon: &Daemon, args: &[&str]) -> Value {
    let out = output(PythonClient::get().live(&daemon.socket, args));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "live_client.py {args:?} exited with {}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    common::assert_no_secret("the Python client's log", &stderr);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!("not one JSON object ({e})\n--- stdout\n{stdout}\n--- stderr\n{stderr}")
    })
}

fn pairs(headers: &[(&str, &str)]) -> Value {
    Value::Array(
        headers
            .iter()
            .map(|(n, v)| json!([n, v]))
            .collect::<Vec<_>>(),
    )
}

/// The fingerprint the daemon gives the Rust client for `credential`.
async fn fingerprint_of(daemon: &Daemon, credential: &str) -> String {
    daemon
        .client()
        .await
        .get_headers(GetHeadersRequest {
            credential: credential.into(),
            ..Default::default()
        })
        .await
        .expect("GetHeaders from Rust")
        .into_inner()
        .token_fingerprint
}

/// The package's own suite (socket resolution, error mapping, watch, the
/// 401 → invalidate → retry flow on httpx's MockTransport, no token in logs
/// or errors) passes against the installed package, with nothing skipped.
#[test]
fn the_packages_pytest_suite_passes() {
    let started = Instant::now();
    let out = output(PythonClient::get().pytest());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "pytest failed ({})\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    let summary = stdout.lines().last().unwrap_or_default();
    let passed: usize = summary
        .split(" passed")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no pass count in {summary:?}\n{stdout}"));
    assert!(passed >= 50, "only {passed} tests ran:\n{stdout}");
    for word in ["skipped", "xfail", "deselected", "error"] {
        assert!(!summary.contains(word), "{summary}\n{stdout}");
    }
    eprintln!(
        "pytest: {summary} ({:.1}s with the install check)",
        started.elapsed().as_secs_f64()
    );
}

/// `headers()` from the socket `TOKEND_SOCKET` names: a dict of exactly the
/// daemon's headers, with the daemon's fingerprint and the configured
/// expiry; `act_as` adds X-Glean-ActAs.
#[tokio::test]
async fn headers_are_the_daemons() {
    let (_work, daemon, _hostile) = start();
    let result = live(&daemon, &["headers"]);

    let socket = daemon.socket.to_str().expect("a UTF-8 socket path");
    assert!(Path::new(socket).is_absolute());
    assert_eq!(result["socket"], socket, "{result}");
    assert_eq!(result["target"], format!("unix://{socket}"), "{result}");

    let user = &result["user"];
    assert_eq!(
        user["headers"],
        pairs(&[("Authorization", &format!("Bearer {CANARY}"))]),
        "{result}"
    );
    assert_eq!(user["is_dict"], true, "{result}");
    assert_eq!(
        user["fingerprint"],
        fingerprint_of(&daemon, "user").await,
        "{result}"
    );
    assert_eq!(user["expires_at"], USER_EXPIRES_AT, "{result}");
    assert_eq!(user["stale"], false, "{result}");

    let global = &result["global"];
    assert_eq!(
        global["headers"],
        pairs(&[
            ("Authorization", &format!("Bearer {CANARY}")),
            ("X-Glean-ActAs", "alice@corp.example"),
        ]),
        "{result}"
    );
    assert_eq!(global["expires_at"], Value::Null, "{result}");
}

/// Each refusal the daemon makes arrives as its own exception class with
/// the daemon's message; a credential that needs login is `NeedsLogin`.
#[test]
fn refusals_are_typed_exceptions_with_the_daemons_message() {
    let (_work, daemon, _hostile) = start();
    let result = live(&daemon, &["errors"]);
    let expect = |case: &str, class: &str, code: &str, says: &[&str]| {
        let got = &result[case];
        assert_eq!(got["error"], class, "{case}: {result}");
        assert_eq!(got["code"], code, "{case}: {result}");
        let message = got["message"].as_str().unwrap_or_default();
        for part in says {
            assert!(message.contains(part), "{case}: no {part:?} in {message:?}");
        }
        common::assert_no_secret(case, message);
    };
    expect(
        "forbidden",
        "PermissionDenied",
        "PERMISSION_DENIED",
        &["uid 0", "may not use credential `forbidden`"],
    );
    expect(
        "missing",
        "NotFound",
        "NOT_FOUND",
        &["no credential named `no-such-credential`"],
    );
    expect(
        "no_act_as",
        "InvalidArgument",
        "INVALID_ARGUMENT",
        &["credential `global` is a global Glean token", "act_as"],
    );
    expect(
        "act_as_denied",
        "PermissionDenied",
        "PERMISSION_DENIED",
        &["may not act as `eve@evil.example`"],
    );
    expect(
        "missing_scope",
        "FailedPrecondition",
        "FAILED_PRECONDITION",
        &["credential `user` lacks scope(s) CHAT"],
    );
    expect(
        "needs_login",
        "NeedsLogin",
        "FAILED_PRECONDITION",
        &["credential `sso` needs login", "tokenctl login sso"],
    );
    assert_eq!(
        result["needs_login"]["classes"],
        json!(["NeedsLogin", "FailedPrecondition", "TokendError"]),
        "{result}"
    );
    expect(
        "invalidate_forbidden",
        "PermissionDenied",
        "PERMISSION_DENIED",
        &["may not use credential `forbidden`"],
    );
}

/// `credentials()` lists what the daemon holds (root is an admin: all of
/// them), with kinds, states, scopes, owner and expiry.
#[test]
fn credentials_are_the_daemons_status() {
    let (_work, daemon, _hostile) = start();
    let result = live(&daemon, &["credentials"]);
    let list = result["credentials"]
        .as_array()
        .unwrap_or_else(|| panic!("{result}"));
    let by_name = |name: &str| {
        list.iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no {name} in {result}"))
    };
    let mut names: Vec<&str> = list.iter().filter_map(|c| c["name"].as_str()).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        ["forbidden", "global", "oauth", "rotating", "sso", "user"],
        "{result}"
    );
    let user = by_name("user");
    assert_eq!(user["kind"], "glean_token", "{result}");
    assert_eq!(user["permission"], "user", "{result}");
    assert_eq!(user["state"], "fresh", "{result}");
    assert_eq!(user["scopes"], json!(["SEARCH"]), "{result}");
    assert_eq!(user["owner"], "search-team@corp.example", "{result}");
    assert_eq!(user["expires_at"], USER_EXPIRES_AT, "{result}");
    assert_eq!(by_name("global")["permission"], "global", "{result}");
    let sso = by_name("sso");
    assert_eq!(sso["kind"], "oauth_refresh", "{result}");
    assert_eq!(sso["state"], "needs_login", "{result}");
    assert_eq!(by_name("oauth")["kind"], "oauth_client_credentials");
}

/// `invalidate()` of an OAuth token makes the daemon fetch a new one
/// (`True`), `headers()` then serves it, and a second report of the old
/// token is ignored (`False`).
#[test]
fn invalidate_replaces_an_oauth_token() {
    let (_work, daemon, hostile) = start();
    let result = live(&daemon, &["invalidate", "oauth"]);
    assert_eq!(result["refreshing"], true, "{result}");
    assert_eq!(result["again"], false, "{result}");
    let (first, second) = (&result["first"], &result["second"]);
    assert_ne!(first["fingerprint"], second["fingerprint"], "{result}");
    assert_eq!(first["headers"], pairs(&[("Authorization", "Bearer at-1")]));
    assert_eq!(
        second["headers"],
        pairs(&[("Authorization", "Bearer at-2")])
    );
    assert_eq!(hostile.requests(), 2, "one fetch, one replacement");
}

/// A Glean token cannot be renewed by tokend: reporting it answers `False`
/// and the same token stays served.
#[test]
fn invalidate_of_a_glean_token_answers_false() {
    let (_work, daemon, _hostile) = start();
    let result = live(&daemon, &["invalidate", "user"]);
    assert_eq!(result["refreshing"], false, "{result}");
    assert_eq!(result["again"], false, "{result}");
    assert_eq!(
        result["first"]["fingerprint"], result["second"]["fingerprint"],
        "{result}"
    );
}

/// `watch()` yields the current headers, then the new ones when the secret
/// file is rotated, within seconds.
#[test]
fn watch_delivers_a_rotation() {
    let (work, daemon, _hostile) = start();
    let mut child = JsonLines::spawn(
        PythonClient::get().live(&daemon.socket, &["watch", "rotating", "2"]),
        Duration::from_secs(60),
    );

    let first = child.next("the first header set");
    assert_eq!(
        first["headers"],
        pairs(&[("Authorization", "Bearer glean_before_rotation")]),
        "{first}"
    );
    let rotated_at = Instant::now();
    common::write_secret(&work.path().join("rotating.secret"), "glean_after_rotation");
    let second = child.next("the header set after the rotation");
    assert_eq!(
        second["headers"],
        pairs(&[("Authorization", "Bearer glean_after_rotation")]),
        "{second}"
    );
    assert!(
        rotated_at.elapsed() < Duration::from_secs(10),
        "the rotation took {:?}",
        rotated_at.elapsed()
    );
    assert_ne!(first["fingerprint"], second["fingerprint"]);
    let stderr = child.finish(Duration::from_secs(20));
    common::assert_no_secret("the watch script's log", &stderr);
}

/// AsyncClient against the daemon: headers, credentials, a refusal, and the
/// first set of a watch.
#[test]
fn the_async_client_works_against_the_daemon() {
    let (_work, daemon, _hostile) = start();
    let result = live(&daemon, &["async"]);
    let bearer = pairs(&[("Authorization", &format!("Bearer {CANARY}"))]);
    assert_eq!(result["user"]["headers"], bearer, "{result}");
    assert_eq!(result["watched"]["headers"], bearer, "{result}");
    assert_eq!(
        result["names"],
        json!(["forbidden", "global", "oauth", "rotating", "sso", "user"]),
        "{result}"
    );
    assert_eq!(result["forbidden"]["error"], "PermissionDenied", "{result}");
}

/// httpx_client with the daemon behind it: an API refusing the first token
/// gets it reported, and the one retry carries the token the daemon
/// fetched in its place.
#[test]
fn httpx_reports_a_refused_token_to_the_daemon_and_retries_once() {
    let (_work, daemon, hostile) = start();
    let result = live(&daemon, &["retry", "oauth"]);
    assert_eq!(result["status"], 200, "{result}");
    assert_eq!(result["requests"], 2, "{result}");
    assert_eq!(result["distinct_tokens"], 2, "{result}");
    assert_eq!(result["bearer"], true, "{result}");
    assert_eq!(result["last_sent_is_served"], true, "{result}");
    assert_eq!(hostile.requests(), 2, "one fetch, one replacement");
}

// The official Glean SDK against the emulator.

/// The emulator and a daemon with its tokens: `user` (the canary, a user
/// token with SEARCH), `global-api` (a global token with SEARCH and CHAT)
/// and `glean-oauth` (OAuth client credentials from the emulator's token
/// endpoint, sent with X-Glean-Auth-Type: OAUTH). The common credentials'
/// OAuth ones use a separate endpoint, so the emulator issues tokens to
/// `glean-oauth` only.
fn start_glean() -> (Workdir, Daemon, GleanApi, Hostile) {
    let api = GleanApi::start();
    api.add_token(CANARY, Permission::User, &["SEARCH"], None);
    api.add_token(GLOBAL_SECRET, Permission::Global, &["SEARCH", "CHAT"], None);
    api.add_token(
        USER_CHAT_SECRET,
        Permission::User,
        &["SEARCH", "CHAT"],
        None,
    );
    let extra = [
        Glean::user("user-chat")
            .scopes(r#"["SEARCH", "CHAT"]"#)
            .secret_file("user-chat.secret")
            .to_string(),
        Glean::global("global-api")
            .scopes(r#"["SEARCH", "CHAT"]"#)
            .secret_file("global-api.secret")
            .with(format!("instance = \"{}\"", api.url()))
            .to_string(),
        format!(
            r#"
[[credential]]
name = "glean-oauth"
kind = "oauth_client_credentials"
token_endpoint = "{}"
client_id = "tokend"
client_secret = {{ file = "client-secret" }}
auth_method = "client_secret_post"
extra_headers = {{ "X-Glean-Auth-Type" = "OAUTH" }}
allow = {{ uids = [0] }}
"#,
            api.token_endpoint()
        ),
    ]
    .concat();
    let hostile = Hostile::start(Mode::Valid { expires_in: 3600 });
    let (work, daemon) = start_with(
        &hostile.token_endpoint(),
        &extra,
        &[
            ("global-api.secret", GLOBAL_SECRET),
            ("user-chat.secret", USER_CHAT_SECRET),
        ],
    );
    (work, daemon, api, hostile)
}

/// The global token `global-api` holds in the emulator tests.
const GLOBAL_SECRET: &str = "glean_global_emulated";
/// The user token with CHAT that `user-chat` holds in the emulator tests.
const USER_CHAT_SECRET: &str = "glean_user_chat_emulated";

/// `Glean(api_token=api_token("user"), server_url=...)`:
/// `client.search.query` reaches the API with the daemon's token.
#[test]
fn the_glean_sdk_searches_with_api_token() {
    let (_work, daemon, api, _hostile) = start_glean();
    let result = live(&daemon, &["glean-search", &api.url(), "user", "api_token"]);
    assert_eq!(
        result["results"],
        json!(["Quarterly report Q1"]),
        "{result}"
    );
    assert_eq!(result["request_id"], "req-1", "{result}");
    let seen = api.seen();
    assert_eq!(seen_summary(&seen), [(SEARCH_PATH.to_owned(), 200)]);
    assert!(seen[0].token == CANARY, "not the daemon's token");
    assert_eq!(
        (seen[0].act_as.as_deref(), seen[0].auth_type.as_deref()),
        (None, None)
    );
}

/// `Glean(api_token=api_token("user-chat"))`: `client.chat.create` too.
#[test]
fn the_glean_sdk_chats_with_api_token() {
    let (_work, daemon, api, _hostile) = start_glean();
    let chat = live(
        &daemon,
        &["glean-chat", &api.url(), "user-chat", "api_token"],
    );
    assert_eq!(chat["texts"], json!(["Revenue grew 1%."]), "{chat}");
    assert_eq!(chat["chat_id"], "chat-1", "{chat}");
    let seen = api.seen();
    assert_eq!(seen_summary(&seen), [(CHAT_PATH.to_owned(), 200)]);
    assert!(seen[0].token == USER_CHAT_SECRET, "not the daemon's token");
    assert_eq!(seen[0].act_as, None);
}

/// `Glean(client=httpx_client("glean-oauth"))`: search and chat with an
/// OAuth token, sent with X-Glean-Auth-Type: OAUTH.
#[test]
fn the_glean_sdk_searches_and_chats_with_an_oauth_credential() {
    let (_work, daemon, api, _hostile) = start_glean();
    let search = live(
        &daemon,
        &["glean-search", &api.url(), "glean-oauth", "httpx"],
    );
    assert_eq!(
        search["results"],
        json!(["Quarterly report Q1"]),
        "{search}"
    );
    let chat = live(&daemon, &["glean-chat", &api.url(), "glean-oauth", "httpx"]);
    assert!(chat["chat_id"].is_string(), "{chat}");
    let seen = api.seen();
    assert_eq!(
        seen_summary(&seen),
        [(SEARCH_PATH.to_owned(), 200), (CHAT_PATH.to_owned(), 200)]
    );
    assert!(seen.iter().all(|s| s.auth_type.as_deref() == Some("OAUTH")));
}

/// `api_token` cannot carry X-Glean-ActAs: with a global token the SDK's
/// call fails on tokend's refusal before any request reaches Glean.
#[test]
fn api_token_with_a_global_token_fails_before_reaching_glean() {
    let (_work, daemon, api, _hostile) = start_glean();
    let result = live(
        &daemon,
        &["glean-search", &api.url(), "global-api", "api_token"],
    );
    assert_eq!(result["error"], "InvalidArgument", "{result}");
    assert_eq!(api.seen(), []);
}

/// `Glean(client=httpx_client("global-api", act_as=...))`: search and chat
/// reach the API with the token and X-Glean-ActAs, which api_token cannot
/// send.
#[test]
fn the_glean_sdk_searches_and_chats_as_a_global_token_through_httpx_client() {
    let (_work, daemon, api, _hostile) = start_glean();
    let search = live(
        &daemon,
        &[
            "glean-search",
            &api.url(),
            "global-api",
            "httpx",
            "alice@corp.example",
        ],
    );
    assert_eq!(
        search["results"],
        json!(["Quarterly report Q1"]),
        "{search}"
    );
    let chat = live(
        &daemon,
        &[
            "glean-chat",
            &api.url(),
            "global-api",
            "httpx",
            "bob@corp.example",
        ],
    );
    assert_eq!(chat["texts"], json!(["Revenue grew 2%."]), "{chat}");
    assert_eq!(chat["chat_id"], "chat-2", "{chat}");
    let seen = api.seen();
    assert_eq!(
        seen_summary(&seen),
        [(SEARCH_PATH.to_owned(), 200), (CHAT_PATH.to_owned(), 200)]
    );
    assert!(seen.iter().all(|s| s.token == GLOBAL_SECRET));
    assert_eq!(seen[0].act_as.as_deref(), Some("alice@corp.example"));
    assert_eq!(seen[1].act_as.as_deref(), Some("bob@corp.example"));
}

/// An OAuth token revoked at Glean mid-run: the SDK's next call gets a 401,
/// httpx_client's auth reports the token, tokend fetches a new one from the
/// token endpoint, and the one retry succeeds; the caller sees only
/// successes.
#[test]
fn the_glean_sdk_recovers_from_a_revoked_oauth_token() {
    let (_work, daemon, api, _hostile) = start_glean();
    let result = live(
        &daemon,
        &[
            "glean-revoked",
            &api.url(),
            "glean-oauth",
            &api.revoke_url(),
        ],
    );
    assert_eq!(result["first"], "req-1", "{result}");
    assert_eq!(result["second"], "req-3", "{result}");
    assert_ne!(result["before"], result["after"], "{result}");
    let seen = api.seen();
    assert_eq!(
        seen_summary(&seen),
        [
            (SEARCH_PATH.to_owned(), 200),
            (SEARCH_PATH.to_owned(), 401),
            (SEARCH_PATH.to_owned(), 200),
        ]
    );
    assert!(seen.iter().all(|s| s.auth_type.as_deref() == Some("OAUTH")));
    assert_eq!(
        seen[0].token, seen[1].token,
        "the revoked token was refused"
    );
    assert_ne!(
        seen[1].token, seen[2].token,
        "the retry carried a new token"
    );
    assert_eq!(api.issued(), 2, "one token at start, one replacement");
}

/// How many concurrent requests see the revoked token in
/// [`concurrent_401s_on_a_revoked_oauth_refresh_token_refresh_it_once`].
const CONCURRENT: usize = 20;

/// An `oauth_refresh` credential whose tokens come from the real test
/// authorization server (`OidcServer`, logged in as alice), sent to the
/// emulator as OAuth tokens (X-Glean-Auth-Type: OAUTH; the emulator accepts
/// them by introspection). The token is revoked at Glean mid-run, then
/// [`CONCURRENT`] requests from as many threads through one
/// `httpx_client` all get the 401 and all report it: the authorization
/// server receives exactly one refresh for it, and every request finally
/// succeeds with the one replacement.
#[tokio::test]
async fn concurrent_401s_on_a_revoked_oauth_refresh_token_refresh_it_once() {
    let log = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("oidc-python-client-{}.log", std::process::id()));
    let server = OidcServer::start(3600, &log);
    let api = GleanApi::start();
    api.trust_issuer(&server.issuer, POST_CLIENT);
    let extra = format!(
        r#"
[[credential]]
name = "glean-sso"
kind = "oauth_refresh"
issuer = "{}"
client_id = "{}"
client_secret = {{ file = "oidc-client-secret" }}
auth_method = "client_secret_post"
scopes = ["api"]
min_valid = "1s"
extra_headers = {{ "X-Glean-Auth-Type" = "OAUTH" }}
allow = {{ uids = [0] }}
"#,
        server.issuer, POST_CLIENT.0
    );
    let hostile = Hostile::start(Mode::Valid { expires_in: 3600 });
    let (_work, daemon) = start_with(
        &hostile.token_endpoint(),
        &extra,
        &[("oidc-client-secret", POST_CLIENT.1)],
    );

    // Log in, as `tokenctl login` does, and wait for the first access token.
    let tokens = server
        .login(POST_CLIENT, AuthMethod::ClientSecretPost)
        .await;
    let refresh_token = tokens.refresh_token.expect("a refresh token");
    daemon
        .admin()
        .await
        .put_refresh_token(PutRefreshTokenRequest {
            credential: "glean-sso".into(),
            refresh_token: refresh_token.expose_secret().to_owned(),
            ..Default::default()
        })
        .await
        .expect("PutRefreshToken");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut client = daemon.client().await;
    let served = loop {
        let request = GetHeadersRequest {
            credential: "glean-sso".into(),
            ..Default::default()
        };
        match client.get_headers(request).await {
            Ok(r) => break r.into_inner().token_fingerprint,
            Err(e) => assert!(Instant::now() < deadline, "no access token: {e:?}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let stats = server.stats().await;
    let refreshes = |stats: &Value| {
        stats["by_grant_type"]["refresh_token"]
            .as_u64()
            .unwrap_or(0)
    };
    let (refreshes_before, requests_before) = (
        refreshes(&stats),
        stats["token_requests"].as_u64().expect("token_requests"),
    );

    // Every request is sent with the revoked token before any hears 401.
    api.gather_oauth_refusals(CONCURRENT);
    let started = Instant::now();
    let n = CONCURRENT.to_string();
    let result = live(
        &daemon,
        &[
            "concurrent-revoked",
            &api.url(),
            "glean-sso",
            &api.revoke_url(),
            &n,
        ],
    );
    eprintln!(
        "{CONCURRENT} concurrent requests over a revoked token: {:.1}s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(result["first"], 200, "{result}");
    assert_eq!(result["before"], served.as_str(), "{result}");
    assert_eq!(result["errors"], json!([]), "{result}");
    assert_eq!(result["statuses"], json!(vec![200; CONCURRENT]), "{result}");
    assert_eq!(result["request_ids"], CONCURRENT, "{result}");
    assert_ne!(result["before"], result["after"], "{result}");
    assert_eq!(
        result["after"],
        fingerprint_of(&daemon, "glean-sso").await.as_str(),
        "{result}"
    );

    // Exactly one refresh at the authorization server after the revocation.
    let stats = server.stats().await;
    assert_eq!(refreshes(&stats), refreshes_before + 1, "{stats}");
    assert_eq!(
        stats["token_requests"].as_u64(),
        Some(requests_before + 1),
        "{stats}"
    );
    let requests = server.token_requests().await;
    let last = requests.last().expect("the refresh request");
    assert_eq!(last["form"]["grant_type"], "refresh_token", "{last}");
    assert_eq!(last["form"]["client_id"], POST_CLIENT.0, "{last}");

    // At the emulator: the first search, the N refusals of the revoked
    // token, and the N retries, all with the one replacement.
    let seen = api.seen();
    assert_eq!(seen.len(), 1 + 2 * CONCURRENT, "{seen:#?}");
    assert!(seen.iter().all(|s| s.auth_type.as_deref() == Some("OAUTH")));
    assert_eq!(seen[0].status, 200);
    let old = &seen[0].token;
    let refused: Vec<&Seen> = seen[1..].iter().filter(|s| s.status == 401).collect();
    let served_again: Vec<&Seen> = seen[1..].iter().filter(|s| s.status == 200).collect();
    assert_eq!(refused.len(), CONCURRENT, "{seen:#?}");
    assert!(refused.iter().all(|s| &s.token == old), "{seen:#?}");
    assert_eq!(served_again.len(), CONCURRENT, "{seen:#?}");
    let new = &served_again[0].token;
    assert_ne!(new, old);
    assert!(served_again.iter().all(|s| &s.token == new), "{seen:#?}");
    assert_eq!(
        api.issued(),
        0,
        "the emulator's own token endpoint was not used"
    );
}

/// The emulator itself keeps Glean's rules (what the SDK tests below rely
/// on): 401 for unknown, revoked and expired tokens, 400 for a global token
/// without X-Glean-ActAs, 401 `Invalid identity` for a stranger, 403 for a
/// missing scope, OAuth tokens only with X-Glean-Auth-Type: OAUTH.
#[test]
fn the_emulator_enforces_gleans_header_rules() {
    let api = GleanApi::start();
    let past = SystemTime::now() - Duration::from_secs(60);
    api.add_token("glean_user", Permission::User, &["SEARCH"], None);
    api.add_token("glean_global", Permission::Global, &["SEARCH"], None);
    api.add_token("glean_expired", Permission::User, &["SEARCH"], Some(past));
    api.add_token("glean_revoked", Permission::User, &["SEARCH"], None);
    api.revoke("glean_revoked");
    let bearer = |t: &str| format!("Bearer {t}");
    let cases: Vec<RuleCase> = vec![
        (SEARCH_PATH, vec![], 401, "Unauthorized"),
        (
            SEARCH_PATH,
            vec![("Authorization", bearer("glean_nobody"))],
            401,
            "Unauthorized",
        ),
        (
            SEARCH_PATH,
            vec![("Authorization", bearer("glean_expired"))],
            401,
            "Unauthorized",
        ),
        (
            SEARCH_PATH,
            vec![("Authorization", bearer("glean_revoked"))],
            401,
            "Unauthorized",
        ),
        (
            SEARCH_PATH,
            vec![("Authorization", bearer("glean_user"))],
            200,
            "requestID",
        ),
        (
            CHAT_PATH,
            vec![("Authorization", bearer("glean_user"))],
            403,
            "Forbidden",
        ),
        (
            SEARCH_PATH,
            vec![
                ("Authorization", bearer("glean_user")),
                ("X-Glean-ActAs", "alice@corp.example".into()),
            ],
            400,
            "must be empty",
        ),
        (
            SEARCH_PATH,
            vec![("Authorization", bearer("glean_global"))],
            400,
            "Required header missing: X-Glean-ActAs",
        ),
        (
            SEARCH_PATH,
            vec![
                ("Authorization", bearer("glean_global")),
                ("X-Glean-ActAs", "ghost@corp.example".into()),
            ],
            401,
            "Invalid identity",
        ),
        (
            SEARCH_PATH,
            vec![
                ("Authorization", bearer("glean_global")),
                ("X-Scio-ActAs", "bob@corp.example".into()),
            ],
            200,
            "results",
        ),
        (
            "/rest/api/v1/nothing",
            vec![("Authorization", bearer("glean_user"))],
            404,
            "",
        ),
    ];
    for (path, headers, status, says) in cases {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let (got, body) = api.post(path, &headers);
        assert_eq!(got, status, "{path} {headers:?}: {body}");
        assert!(body.contains(says), "{path} {headers:?}: {body}");
    }

    // OAuth: issued by the token endpoint, valid only as OAuth, revocable.
    let (status, body) = api.post(
        common::glean_api::TOKEN_PATH,
        &[("Content-Type", "application/x-www-form-urlencoded")],
    );
    assert_eq!(status, 400, "no grant_type: {body}");
    let token = issue(&api);
    let oauth = [("Authorization", format!("Bearer {token}"))];
    let as_oauth = [
        ("Authorization", format!("Bearer {token}")),
        ("X-Glean-Auth-Type", "OAUTH".to_owned()),
    ];
    let call = |headers: &[(&str, String)], path: &str| {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        api.post(path, &headers).0
    };
    assert_eq!(call(&oauth, SEARCH_PATH), 401, "OAuth without its header");
    assert_eq!(call(&as_oauth, SEARCH_PATH), 200);
    assert_eq!(call(&as_oauth, CHAT_PATH), 200, "OAuth has every scope");
    api.revoke_oauth();
    assert_eq!(call(&as_oauth, SEARCH_PATH), 401, "revoked");
    assert_eq!(api.issued(), 1);
}

/// A path, the request's headers, the status and a part of the body.
type RuleCase = (&'static str, Vec<(&'static str, String)>, u16, &'static str);

/// A client-credentials token from the emulator's token endpoint.
fn issue(api: &GleanApi) -> String {
    use std::io::{Read, Write};
    let addr = api.url().trim_start_matches("http://").to_owned();
    let mut stream = std::net::TcpStream::connect(&addr).expect("connect");
    let body = "grant_type=client_credentials&client_id=x&client_secret=y";
    write!(
        stream,
        "POST {} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        common::glean_api::TOKEN_PATH,
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let json: Value = serde_json::from_str(response.split_once("\r\n\r\n").unwrap().1).unwrap();
    json["access_token"].as_str().unwrap().to_owned()
}

fn seen_summary(seen: &[Seen]) -> Vec<(String, u16)> {
    seen.iter().map(|s| (s.path.clone(), s.status)).collect()
}

/// A shared credential's place in the fleet reaches a grpcio user: a
/// one-node fleet on a real etcd, whose node leads; credentials that are
/// not shared carry none.
#[test]
fn a_shared_credentials_fleet_membership_is_in_its_status() {
    let hostile = Hostile::start(Mode::Valid { expires_in: 3600 });
    let fleet = common::fleet::OneNode::start("node-a", &hostile.token_endpoint());
    let (_work, daemon) = start_with(&hostile.token_endpoint(), &fleet.config, &[]);
    let list = fleet.once_led(&daemon, || {
        live(&daemon, &["credentials"])["credentials"].clone()
    });
    let of = |name: &str| list.iter().find(|c| c["name"] == name).unwrap();
    let shared = &of("shared")["fleet"];
    assert_eq!(shared["node"], "node-a", "{list:?}");
    assert_eq!(shared["leader"], "node-a", "{list:?}");
    assert_eq!(shared["unreachable_since"], Value::Null, "{list:?}");
    assert_eq!(of("user")["fleet"], Value::Null, "{list:?}");
    assert_eq!(of("oauth")["fleet"], Value::Null, "{list:?}");
}
