//! `[[proxy]]` end to end: the real daemon between real clients (Glean's
//! Python SDK, Glean's MCP server, other uids through `setpriv`, raw
//! sockets) and the Glean emulator served over TLS with a certificate from
//! a CA generated for the test (`ca_file`).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::fixtures::{Glean, OAuth};
use common::glean_api::{CHAT_PATH, GleanApi, Permission, SEARCH_PATH};
use common::json_lines::JsonLines;
use common::python_client::PythonClient;
use common::{CANARY, Daemon, Workdir, assert_no_secret, node, setpriv};
use serde_json::{Value, json};

/// A uid no credential allows.
const STRANGER: u32 = 4700;

/// A `[[proxy]]` table forwarding to `api` (trusting its CA).
fn proxy(name: &str, listen: &str, credential: &str, api: &GleanApi, extra: &str) -> String {
    format!(
        "\n[[proxy]]\nname = \"{name}\"\nlisten = \"{listen}\"\ncredential = \"{credential}\"\n\
         upstream = \"{}\"\nca_file = \"{}\"\n{extra}\n",
        api.url(),
        api.ca_file().display()
    )
}

/// `tokenctl proxy-env NAME` as `KEY=value` pairs.
fn proxy_env(work: &Workdir, name: &str) -> Vec<(String, String)> {
    let out = work.tokenctl(&["proxy-env", name]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "tokenctl proxy-env {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_no_secret("proxy-env", &stdout);
    stdout
        .lines()
        .map(|l| {
            let (k, v) = l.split_once('=').expect("KEY=value lines");
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

/// The proxy's base URL, as `proxy-env` prints it.
fn proxy_url(work: &Workdir, name: &str) -> String {
    let env = proxy_env(work, name);
    let url = |key: &str| env.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
    let server = url("GLEAN_SERVER_URL").expect("GLEAN_SERVER_URL");
    assert_eq!(url("GLEAN_BASE_URL"), Some(server.clone()));
    assert!(url("GLEAN_API_TOKEN").is_some_and(|t| !t.is_empty()));
    server
}

/// One HTTP/1.1 request over `stream`, closing; the status and the whole
/// answer.
fn exchange(mut stream: impl Read + Write, request: &[u8]) -> (u16, String) {
    stream.write_all(request).expect("send the request");
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, answer)
}

fn post(path: &str, headers: &str, body: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: glean\r\nContent-Type: application/json\r\n\
         Authorization: Bearer placeholder\r\n{headers}Content-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn tcp(url: &str) -> TcpStream {
    let addr = url.trim_start_matches("http://");
    let stream = TcpStream::connect(addr).expect("connect to the proxy");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream
}

/// The official Python SDK, pointed at the proxy with a placeholder token,
/// searches and chats; Glean saw tokend's token and none of the caller's.
#[test]
fn glean_python_sdk_searches_and_chats_through_the_proxy() {
    let work = Workdir::new();
    let api = GleanApi::start_tls(work.path());
    api.add_token(CANARY, Permission::User, &["SEARCH", "CHAT"], None);
    let credentials = format!(
        "{}{}",
        Glean::user("search-bot").scopes(r#"["SEARCH", "CHAT"]"#),
        proxy("glean", "127.0.0.1:0", "search-bot", &api, "")
    );
    work.write_config("", &credentials);
    let daemon = Daemon::start(&work);
    let env = proxy_env(&work, "glean");
    let placeholder = env
        .iter()
        .find(|(k, _)| k == "GLEAN_API_TOKEN")
        .map(|(_, v)| v.clone())
        .expect("GLEAN_API_TOKEN");

    let script = r#"
import json, os
from glean.api_client import Glean
with Glean(api_token=os.environ["GLEAN_API_TOKEN"], server_url=os.environ["GLEAN_SERVER_URL"]) as glean:
    found = glean.client.search.query(query="quarterly report", page_size=1)
    answer = glean.client.chat.create(messages=[{"fragments": [{"text": "How did revenue do?"}]}])
    print(json.dumps({
        "title": found.results[0].title,
        "chat": answer.messages[0].fragments[0].text,
    }))
"#;
    let out = Command::new(&PythonClient::get().python)
        .args(["-c", script])
        .env_clear()
        .envs(env)
        .output()
        .expect("run the venv's python");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert_no_secret("the SDK's output", &format!("{stdout}{stderr}"));
    let result: Value = serde_json::from_str(stdout.trim()).expect("the script's JSON");
    assert!(
        result["title"]
            .as_str()
            .unwrap()
            .starts_with("Quarterly report")
    );
    assert!(result["chat"].as_str().unwrap().starts_with("Revenue grew"));

    let seen = api.seen();
    let paths: Vec<&str> = seen.iter().map(|s| s.path.as_str()).collect();
    assert_eq!(paths, [SEARCH_PATH, CHAT_PATH]);
    for s in &seen {
        assert_eq!(s.status, 200);
        assert_eq!(s.token, CANARY, "Glean saw tokend's token");
        assert!(
            !s.headers.iter().any(|(_, v)| v.contains(&placeholder)),
            "the caller's placeholder went upstream: {:?}",
            s.headers
        );
        // The SDK's own headers pass through.
        assert!(
            s.headers
                .iter()
                .any(|(n, v)| n == "user-agent" && v.contains("glean-api-client")),
            "{:?}",
            s.headers
        );
    }
    drop(daemon);
}

/// Glean's MCP server over stdio, newline-delimited JSON-RPC.
struct Mcp {
    lines: JsonLines,
    next_id: u64,
}

impl Mcp {
    fn start(env: Vec<(String, String)>, state: &Path) -> Self {
        let mut cmd = node::script(
            "node_modules/@gleanwork/local-mcp-server/build/index.js",
            &[],
        );
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", state)
            // Its log file goes here, not into the home directory.
            .env("XDG_STATE_HOME", state)
            .envs(env);
        Self {
            lines: JsonLines::spawn_talking(cmd, Duration::from_secs(60)),
            next_id: 1,
        }
    }

    fn notify(&mut self, method: &str) {
        self.lines
            .send(&json!({"jsonrpc": "2.0", "method": method}));
    }

    /// Calls `method`; its result (skipping notifications).
    fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        self.lines
            .send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
        loop {
            let message = self.lines.next(method);
            assert_no_secret("the MCP server's output", &message.to_string());
            if message["id"] == json!(id) {
                assert!(message.get("error").is_none(), "{method}: {message}");
                return message["result"].clone();
            }
        }
    }

    /// `company_search`'s text, failing on a tool error.
    fn search(&mut self, query: &str) -> String {
        let result = self.call(
            "tools/call",
            json!({"name": "company_search", "arguments": {"query": query}}),
        );
        assert_ne!(result["isError"], json!(true), "company_search: {result}");
        result["content"][0]["text"]
            .as_str()
            .unwrap_or_else(|| panic!("company_search: {result}"))
            .to_owned()
    }
}

/// `@gleanwork/local-mcp-server` reads its token once, at its first tool
/// call. Started with what `tokenctl proxy-env` prints, it searches through
/// the proxy; the token is then rotated (a new secret file, the old one
/// revoked) and its next call still works, without a restart.
#[test]
fn glean_mcp_server_keeps_working_across_a_rotation() {
    let work = Workdir::new();
    let api = GleanApi::start_tls(work.path());
    api.add_token(CANARY, Permission::User, &["SEARCH"], None);
    let credentials = format!(
        "{}{}",
        Glean::user("search-bot"),
        proxy("glean", "127.0.0.1:0", "search-bot", &api, "")
    );
    work.write_config("", &credentials);
    let daemon = Daemon::start(&work);
    let state = tempfile::tempdir().unwrap();
    let mut mcp = Mcp::start(proxy_env(&work, "glean"), state.path());

    let init = mcp.call(
        "initialize",
        json!({
            "protocolVersion": "2024-11-05",
            "capabilities": {},
            "clientInfo": {"name": "tokend-test", "version": "0"}
        }),
    );
    assert!(init["serverInfo"]["name"].is_string(), "{init}");
    mcp.notify("notifications/initialized");
    let tools = mcp.call("tools/list", json!({}));
    let names: Vec<&str> = tools["tools"]
        .as_array()
        .expect("a tool list")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert!(names.contains(&"company_search"), "{names:?}");

    let first = mcp.search("quarterly report");
    assert!(first.contains("Quarterly report Q1"), "{first}");
    assert!(first.contains("quarterly report"), "{first}");

    // Rotation: Glean issues a new token and revokes the old one; the
    // secret file is replaced.
    let rotated = "glean_ROTATED_9e4b1c";
    api.add_token(rotated, Permission::User, &["SEARCH"], None);
    common::write_secret(&work.path().join("secret"), rotated);
    api.revoke(CANARY);
    daemon.wait_for_log("config reloaded");

    let second = mcp.search("roadmap");
    assert!(second.contains("Quarterly report"), "{second}");
    let seen = api.seen();
    let last = seen.last().unwrap();
    assert_eq!((last.status, last.token.as_str()), (200, rotated));
    assert!(seen.iter().all(|s| s.token == CANARY || s.token == rotated));
    drop(mcp);
    drop(daemon);
}

/// Refusals happen before anything leaves the host: another uid (on TCP
/// and on the Unix socket), an act-as outside the caller's patterns, a
/// path needing a scope the credential lacks. And the caller's own
/// credentials never go upstream.
#[test]
fn refusals_happen_before_anything_leaves_the_host() {
    common::require_root();
    let work = Workdir::new();
    let api = GleanApi::start_tls(work.path());
    api.add_token(CANARY, Permission::User, &["SEARCH"], None);
    let global_secret = "glean_GLOBAL_77aa";
    common::write_secret(&work.path().join("global-secret"), global_secret);
    api.add_token(global_secret, Permission::Global, &["SEARCH"], None);
    // The proxy's socket in a directory every user may enter (tokend
    // creates a missing one as 0750, for its group).
    let dir = work.path().join("proxy");
    std::fs::create_dir(&dir).unwrap();
    common::set_mode(&dir, 0o755);
    let sock = dir.join("glean.sock");
    let credentials = format!(
        "{}{}{}{}{}",
        Glean::user("search-bot"),
        Glean::global("global").secret_file("global-secret"),
        proxy("glean", "127.0.0.1:0", "search-bot", &api, ""),
        proxy(
            "glean-unix",
            &format!("unix:{}", sock.display()),
            "search-bot",
            &api,
            ""
        ),
        proxy("global", "127.0.0.1:0", "global", &api, ""),
    );
    // The sockets are open to everyone: `allow` alone decides.
    work.write_config("socket_mode = 0o666", &credentials);
    let daemon = Daemon::start(&work);
    let url = proxy_url(&work, "glean");
    let global = proxy_url(&work, "global");
    // proxy-env: a Unix socket is no server URL; an unknown name exits 3.
    let out = work.tokenctl(&["proxy-env", "glean-unix"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Unix socket"), "{stderr}");
    let out = work.tokenctl(&["proxy-env", "nope"]);
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("yours: glean, glean-unix, global"),
        "{stderr}"
    );
    let whoami = String::from_utf8_lossy(&work.tokenctl(&["whoami"]).stdout).into_owned();
    assert!(whoami.contains("proxy glean-unix: unix:"), "{whoami}");
    let search = || post(SEARCH_PATH, "", r#"{"query":"q"}"#);

    // Another uid, through Python's sockets under setpriv.
    let as_stranger = |target: &str| {
        let script = r#"
import socket, sys
kind, where = sys.argv[1], sys.argv[2]
if kind == "unix":
    s = socket.socket(socket.AF_UNIX); s.connect(where)
else:
    host, port = where.rsplit(":", 1); s = socket.create_connection((host, int(port)))
s.sendall(sys.stdin.buffer.read())
out = b""
while chunk := s.recv(65536):
    out += chunk
sys.stdout.write(out.decode())
"#;
        let (kind, place) = target.split_once(' ').unwrap();
        let mut child = setpriv(STRANGER, STRANGER, &[], &python_for_anyone())
            .args(["-c", script, kind, place])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run setpriv (util-linux); install it with `apt-get install util-linux`");
        child.stdin.take().unwrap().write_all(&search()).unwrap();
        let out = child.wait_with_output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    };
    for target in [
        format!("tcp {}", url.trim_start_matches("http://")),
        format!("unix {}", sock.display()),
    ] {
        let answer = as_stranger(&target);
        assert!(answer.starts_with("HTTP/1.1 403"), "{target}: {answer}");
        assert!(answer.contains(&format!("uid {STRANGER}")), "{answer}");
        assert_no_secret("a refusal", &answer);
    }
    // Root, on both, is let through.
    let (status, answer) = exchange(tcp(&url), &search());
    assert_eq!(status, 200, "{answer}");
    let unix = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    let (status, answer) = exchange(unix, &search());
    assert_eq!(status, 200, "{answer}");
    assert_eq!(api.seen().len(), 2);

    // The caller's Authorization and auth type are replaced, its other
    // headers kept.
    let last = api.seen().pop().unwrap();
    assert_eq!(last.token, CANARY);
    assert_eq!(last.auth_type, None);
    assert!(
        last.headers
            .iter()
            .any(|(n, v)| n == "content-type" && v == "application/json")
    );

    // A missing scope: 403 naming it, and Glean never asked.
    let (status, answer) = exchange(
        tcp(&url),
        &post(CHAT_PATH, "X-Glean-Auth-Type: OAUTH\r\n", "{}"),
    );
    assert_eq!(status, 403, "{answer}");
    assert!(answer.contains("CHAT"), "{answer}");
    // Act-as on a user token: refused as Glean would.
    let (status, answer) = exchange(
        tcp(&url),
        &post(SEARCH_PATH, "X-Glean-ActAs: alice@corp.example\r\n", "{}"),
    );
    assert_eq!(status, 400, "{answer}");
    // A global token: act-as outside the patterns, missing, then allowed.
    let (status, answer) = exchange(
        tcp(&global),
        &post(SEARCH_PATH, "X-Glean-ActAs: eve@evil.example\r\n", "{}"),
    );
    assert_eq!(status, 403, "{answer}");
    assert!(answer.contains("eve@evil.example"), "{answer}");
    let (status, answer) = exchange(tcp(&global), &search());
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer.contains("Required header missing: X-Glean-ActAs"),
        "{answer}"
    );
    assert_eq!(api.seen().len(), 2, "refused requests never reach Glean");
    let (status, answer) = exchange(
        tcp(&global),
        &post(SEARCH_PATH, "X-Glean-Act-As: alice@corp.example\r\n", "{}"),
    );
    assert_eq!(status, 200, "{answer}");
    let last = api.seen().pop().unwrap();
    assert_eq!(last.token, global_secret);
    assert_eq!(last.act_as.as_deref(), Some("alice@corp.example"));
    assert!(!last.headers.iter().any(|(n, _)| n == "x-glean-act-as"));
    assert_no_secret("tokend's log", &daemon.logs());
    assert!(
        !daemon.logs().contains(global_secret),
        "the global token leaked into the log"
    );
    assert!(daemon.logs().contains(r#""status":403"#) || daemon.logs().contains("status=403"));
}

/// The first `python3` on PATH that any uid may run (a pyenv shim under
/// root's private home is no use to another uid).
fn python_for_anyone() -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .filter_map(|dir| std::fs::canonicalize(dir.join("python3")).ok())
        .find(|python| {
            python
                .ancestors()
                .all(|p| std::fs::metadata(p).is_ok_and(|m| m.permissions().mode() & 0o001 != 0))
        })
        .expect(
            "a python3 that every user may run (e.g. /usr/bin/python3: apt-get install python3)",
        )
}

/// Glean revokes the token while several requests are in flight: each
/// meets one 401, tokend refreshes once, and every request is sent again
/// and answered 200.
#[test]
fn a_revoked_token_is_refreshed_once_and_the_requests_retried() {
    let work = Workdir::new();
    let api = GleanApi::start_tls(work.path());
    common::write_secret(&work.path().join("client-secret-basic"), "cc-secret");
    let credentials = format!(
        "{}{}",
        OAuth::client_credentials("glean-oauth", &api.token_endpoint(), "tokend")
            .with(r#"extra_headers = { "X-Glean-Auth-Type" = "OAUTH" }"#),
        proxy("glean", "127.0.0.1:0", "glean-oauth", &api, "")
    );
    let metrics = work.path().join("metrics.sock");
    let credentials = format!(
        "{credentials}\n[metrics]\nlisten = \"unix:{}\"\n",
        metrics.display()
    );
    work.write_config(&work.store_section(), &credentials);
    let daemon = Daemon::start(&work);
    let url = proxy_url(&work, "glean");
    let search = || post(SEARCH_PATH, "", r#"{"query":"q"}"#);
    let (status, answer) = exchange(tcp(&url), &search());
    assert_eq!(status, 200, "{answer}");
    assert_eq!(api.issued(), 1);

    const CALLERS: usize = 4;
    api.revoke_oauth();
    api.gather_oauth_refusals(CALLERS);
    let answers: Vec<(u16, String)> = std::thread::scope(|s| {
        let calls: Vec<_> = (0..CALLERS)
            .map(|_| s.spawn(|| exchange(tcp(&url), &search())))
            .collect();
        calls.into_iter().map(|c| c.join().unwrap()).collect()
    });
    for (status, answer) in &answers {
        assert_eq!(*status, 200, "{answer}");
    }
    assert_eq!(api.issued(), 2, "one refresh for all the 401s");
    let statuses: Vec<u16> = api.seen().iter().map(|s| s.status).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 401).count(), CALLERS);
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), CALLERS + 1);
    let retried = api.seen().last().unwrap().token.clone();
    assert_eq!(retried, "glean_oauth_access_2");
    // The metrics count them.
    let mut scrape = std::os::unix::net::UnixStream::connect(&metrics).unwrap();
    let (_, page) = exchange(&mut scrape, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    for line in [
        format!("tokend_proxy_retries_total{{proxy=\"glean\"}} {CALLERS}"),
        format!(
            "tokend_proxy_requests_total{{proxy=\"glean\",status=\"200\"}} {}",
            CALLERS + 1
        ),
        "tokend_proxy_upstream_duration_seconds_count{proxy=\"glean\"} 5".to_owned(),
    ] {
        assert!(page.lines().any(|l| l == line), "no {line} in\n{page}");
    }
    drop(daemon);
}

/// A streamed chat answer reaches the caller line by line: the first
/// arrives while Glean still holds the last.
#[test]
fn a_streamed_chat_arrives_incrementally() {
    let work = Workdir::new();
    let api = GleanApi::start_tls(work.path());
    api.add_token(CANARY, Permission::User, &["CHAT"], None);
    let credentials = format!(
        "{}{}",
        Glean::user("chat-bot").scopes(r#"["CHAT"]"#),
        proxy("glean", "127.0.0.1:0", "chat-bot", &api, "")
    );
    work.write_config("", &credentials);
    let daemon = Daemon::start(&work);
    let url = proxy_url(&work, "glean");
    api.hold_last_line();

    let mut stream = tcp(&url);
    stream
        .write_all(&post(
            CHAT_PATH,
            "Accept: text/plain\r\n",
            r#"{"messages":[{"fragments":[{"text":"hi"}]}],"stream":true}"#,
        ))
        .unwrap();
    let mut reader = BufReader::new(stream);
    let mut received = String::new();
    while !received.contains("UPDATE") {
        let mut line = String::new();
        assert!(
            reader.read_line(&mut line).unwrap() > 0,
            "the answer ended before its first line: {received}"
        );
        received.push_str(&line);
    }
    assert!(received.starts_with("HTTP/1.1 200"), "{received}");
    assert_eq!(api.first_lines_sent(), 1);
    assert!(!received.contains("Revenue grew"), "{received}");
    api.release_last_line();
    reader.read_to_string(&mut received).unwrap();
    assert!(received.contains("Revenue grew"), "{received}");
    drop(daemon);
}

/// What a hostile caller or upstream can do is bounded, and answered with
/// a status that says which bound: an oversized head, a body over
/// `max_request_body` (declared or chunked), a caller that sends its head
/// too slowly, an upstream that never answers.
#[test]
fn hostile_callers_and_upstreams_are_bounded() {
    let work = Workdir::new();
    let api = GleanApi::start_tls(work.path());
    api.add_token(CANARY, Permission::User, &["SEARCH"], None);
    // An upstream that accepts and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap();
    std::thread::spawn(move || {
        let held: Vec<_> = silent.incoming().take(4).collect();
        std::thread::sleep(Duration::from_secs(60));
        drop(held);
    });
    let credentials = format!(
        "{}{}\n[[proxy]]\nname = \"stuck\"\nlisten = \"127.0.0.1:0\"\ncredential = \"search-bot\"\n\
         upstream = \"http://{silent_addr}\"\nupstream_timeout = \"1s\"\n",
        Glean::user("search-bot"),
        proxy(
            "glean",
            "127.0.0.1:0",
            "search-bot",
            &api,
            "max_request_body = \"1KiB\""
        ),
    ) + &format!(
        "{}{}",
        // Its authorization server is down: no token to inject.
        OAuth::client_credentials("down", "http://127.0.0.1:9/token", "tokend"),
        proxy("down", "127.0.0.1:0", "down", &api, "")
    );
    common::write_secret(&work.path().join("client-secret-basic"), "cc-secret");
    work.write_config(&work.store_section(), &credentials);
    let daemon = Daemon::start(&work);
    let url = proxy_url(&work, "glean");

    // A head over 64 KiB.
    let big = format!(
        "POST {SEARCH_PATH} HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(70 * 1024)
    );
    let (status, answer) = exchange(tcp(&url), big.as_bytes());
    assert_eq!(status, 431, "{answer}");
    assert_no_secret("a refusal", &answer);
    let long_line = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(70 * 1024));
    let (status, answer) = exchange(tcp(&url), long_line.as_bytes());
    assert!(matches!(status, 414 | 431), "{answer}");
    assert_no_secret("a refusal", &answer);

    // Bodies over max_request_body: declared, and chunked.
    let body = "x".repeat(2048);
    let (status, answer) = exchange(tcp(&url), &post(SEARCH_PATH, "", &body));
    assert_eq!(status, 413, "{answer}");
    assert_no_secret("a refusal", &answer);
    assert!(answer.contains("proxy.glean.max_request_body"), "{answer}");
    let chunked = format!(
        "POST {SEARCH_PATH} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\
         Connection: close\r\n\r\n800\r\n{body}\r\n0\r\n\r\n"
    );
    let (status, answer) = exchange(tcp(&url), chunked.as_bytes());
    assert_eq!(status, 413, "{answer}");
    assert_no_secret("a refusal", &answer);

    // An upstream that never answers: 504 after upstream_timeout.
    let started = Instant::now();
    let (status, answer) = exchange(
        tcp(&proxy_url(&work, "stuck")),
        &post(SEARCH_PATH, "", "{}"),
    );
    assert_eq!(status, 504, "{answer}");
    assert_no_secret("a refusal", &answer);
    assert!(answer.contains("proxy.stuck.upstream_timeout"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(10));

    // Refreshing is failing and no token is valid: 503 with tokend's
    // reason, and nothing forwarded.
    let before = api.seen().len();
    let (status, answer) = exchange(tcp(&proxy_url(&work, "down")), &post(SEARCH_PATH, "", "{}"));
    assert_eq!(status, 503, "{answer}");
    assert_no_secret("a refusal", &answer);
    assert!(answer.contains("tokend: "), "{answer}");
    assert_eq!(api.seen().len(), before);

    // A slowloris: one byte a second never completes a head; the proxy
    // closes the connection once HEAD_TIMEOUT has passed.
    let mut slow = tcp(&url);
    slow.write_all(b"POST /rest/api/v1/search HTTP/1.1\r\n")
        .unwrap();
    let started = Instant::now();
    let closed = loop {
        std::thread::sleep(Duration::from_secs(1));
        if slow.write_all(b"X").is_err() {
            break started.elapsed();
        }
        let mut probe = [0u8; 512];
        slow.set_nonblocking(true).unwrap();
        let read = slow.read(&mut probe);
        slow.set_nonblocking(false).unwrap();
        if read.is_ok() {
            break started.elapsed();
        }
        assert!(
            started.elapsed() < tokend::proxy::HEAD_TIMEOUT + Duration::from_secs(5),
            "a slow head was not cut off"
        );
    };
    assert!(closed >= tokend::proxy::HEAD_TIMEOUT - Duration::from_secs(2));

    let logs = daemon.logs();
    assert_no_secret("tokend's log", &logs);
    drop(daemon);
}
