//! The TypeScript client package `clients/typescript` (`@tokend/client`):
//! its own `npm test` (a fake tokend, no daemon), its calls against the real
//! daemon on its real socket through `build-test/daemon_script.js`, and
//! `npm pack` from a clean copy of the package whose tarball is installed
//! and used as a consumer would; and the official Glean SDK through the
//! package's helpers against the Glean API emulator (`common::glean_api`).
//! The package is installed and built on first use (`common::typescript`).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use common::fixtures::Glean;
use common::hostile::{Hostile, Mode};
use common::json_lines::JsonLines;
use common::typescript;
use common::{CANARY, Daemon, Workdir};
use serde_json::{Value, json};
use tokend::proto::GetHeadersRequest;

/// Never allowed to the tests' uid (root): root is not implicitly allowed.
const STRANGER: u32 = 4242;

/// The daemon with Glean tokens (`user`, `global`, `rotating` from a file
/// the test rewrites, `forbidden` to a stranger) and an OAuth client
/// credentials credential `cc` at `hostile`'s token endpoint (tokens `at-N`).
fn start(hostile: &Hostile) -> (Workdir, Daemon) {
    start_with(hostile, "")
}

/// [`start`] with `extra` config appended.
fn start_with(hostile: &Hostile, extra: &str) -> (Workdir, Daemon) {
    common::require_root();
    let work = Workdir::new();
    common::write_secret(
        &work.path().join("rotating.secret"),
        "glean_before_rotation",
    );
    common::write_secret(&work.path().join("client-secret"), "ts-client-secret");
    let credentials = [
        work.store_section(),
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

[[credential]]
name = "cc"
kind = "oauth_client_credentials"
token_endpoint = "{endpoint}"
client_id = "tokend"
client_secret = {{ file = "client-secret" }}
auth_method = "client_secret_post"
allow = {{ uids = [0] }}
"#,
            endpoint = hostile.token_endpoint()
        ),
        extra.to_owned(),
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

/// Runs `cmd` to its end (at most `limit`) and returns its output.
fn output(mut cmd: Command, limit: Duration) -> Output {
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
    rx.recv_timeout(limit)
        .unwrap_or_else(|_| {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            panic!("{what} did not finish within {limit:?}")
        })
        .unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// The JSON lines `daemon_script.js COMMAND SOCKET ARGS` printed; fails,
/// with its stderr, when it exited non-zero or printed anything else.
#[track_caller]
fn script(command: &str, socket: &str, args: &[&str]) -> Vec<Value> {
    script_env(command, socket, args, &[])
}

#[track_caller]
fn script_env(command: &str, socket: &str, args: &[&str], env: &[(&str, &str)]) -> Vec<Value> {
    let mut all = vec![command, socket];
    all.extend_from_slice(args);
    let mut cmd = typescript::script("daemon_script.js", &all);
    cmd.envs(env.iter().copied());
    let out = output(cmd, Duration::from_secs(60));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "daemon_script.js {all:?} exited with {}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    common::assert_no_secret("the script's stderr", &stderr);
    stdout
        .lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| {
                panic!("not JSON ({e}): {l}\n--- stdout\n{stdout}\n--- stderr\n{stderr}")
            })
        })
        .collect()
}

/// The one JSON object a command printed.
#[track_caller]
fn one(lines: Vec<Value>) -> Value {
    assert_eq!(lines.len(), 1, "{lines:?}");
    lines.into_iter().next().unwrap_or_default()
}

#[test]
fn npm_test_passes() {
    let started = Instant::now();
    // The builds are ensure_built's (under its lock): `--ignore-scripts`
    // skips the `pretest` rebuild, which would rewrite dist/ under the
    // other tests' feet.
    let out = output(
        typescript::npm(&["test", "--ignore-scripts"]),
        Duration::from_secs(300),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "npm test failed ({})\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    let count = |key: &str| -> u32 {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("# {key} ")))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("no `# {key}` line in node --test's output:\n{stdout}"))
    };
    assert_eq!(count("fail"), 0, "{stdout}");
    assert_eq!(count("cancelled"), 0, "{stdout}");
    assert_eq!(count("skipped"), 0, "{stdout}");
    let passed = count("pass");
    assert!(passed >= 45, "only {passed} tests passed:\n{stdout}");
    assert_eq!(passed, count("tests"), "{stdout}");
    for suite in [
        "resolveSocket",
        "errors",
        "watch",
        "gleanFetch",
        "gleanApiToken",
        "canary",
        "the Glean SDK",
    ] {
        let passed_line = format!(" - {suite}");
        assert!(
            stdout.lines().any(|l| {
                let l = l.trim_start();
                l.starts_with("ok ") && l.ends_with(&passed_line)
            }),
            "no passed suite {suite} in:\n{stdout}"
        );
    }
    eprintln!("npm test: {passed} tests in {:?}", started.elapsed());
}

#[tokio::test]
async fn headers_from_the_real_daemon() {
    let hostile = Hostile::start(Mode::Valid { expires_in: 3600 });
    let (_work, daemon) = start(&hostile);
    let sock = socket(&daemon);

    let got = one(script("headers", sock, &["user"]));
    assert_eq!(
        got["headers"],
        json!({"Authorization": format!("Bearer {CANARY}")}),
        "{got}"
    );
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
    assert_eq!(got["fingerprint"], rust.token_fingerprint, "{got}");
    assert_eq!(got["stale"], false, "{got}");

    // A global token: headers in tokend's order.
    let got = one(script("headers", sock, &["global", "alice@corp.example"]));
    let names: Vec<&String> = got["headers"]
        .as_object()
        .unwrap_or_else(|| panic!("{got}"))
        .keys()
        .collect();
    assert_eq!(names, ["Authorization", "X-Glean-ActAs"], "{got}");
    assert_eq!(got["headers"]["X-Glean-ActAs"], "alice@corp.example");

    // An OAuth token has an expiry.
    let got = one(script("headers", sock, &["cc"]));
    assert_eq!(got["headers"]["Authorization"], "Bearer at-1", "{got}");
    assert!(
        got["expiresAt"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{got}"
    );

    // No socket option: TOKEND_SOCKET.
    let got = one(script_env(
        "headers",
        "env",
        &["user"],
        &[("TOKEND_SOCKET", sock)],
    ));
    assert_eq!(got["fingerprint"], rust.token_fingerprint, "{got}");

    // gleanApiToken: the token alone.
    let got = one(script("api-token", sock, &["user"]));
    assert_eq!(got, json!({"token": CANARY}));
}

#[test]
fn permission_denied_for_a_forbidden_credential() {
    let hostile = Hostile::start(Mode::Valid { expires_in: 3600 });
    let (_work, daemon) = start(&hostile);
    let got = one(script("headers", socket(&daemon), &["forbidden"]));
    let error = &got["error"];
    assert_eq!(error["name"], "PermissionDenied", "{got}");
    assert_eq!(error["code"], "PERMISSION_DENIED", "{got}");
    assert_eq!(error["isTokendError"], true, "{got}");
    let message = error["message"].as_str().unwrap_or_default();
    // tokend's own message, verbatim, without the code in front.
    assert!(
        message.starts_with("uid 0 (gid 0, pid ")
            && message.contains("may not use credential `forbidden`"),
        "{got}"
    );
    common::assert_no_secret("the error", message);

    // A global token without act_as: tokend's InvalidArgument.
    let got = one(script("headers", socket(&daemon), &["global"]));
    assert_eq!(got["error"]["name"], "InvalidArgument", "{got}");
    assert!(
        got["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("X-Glean-ActAs")),
        "{got}"
    );

    // No daemon on the socket: Unavailable naming it.
    let missing = daemon.socket.with_file_name("nobody.sock");
    let missing = missing.to_str().unwrap();
    let got = one(script("headers", missing, &["user"]));
    assert_eq!(got["error"]["name"], "Unavailable", "{got}");
    assert!(
        got["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains(missing)),
        "{got}"
    );
}

#[test]
fn watch_delivers_a_rotation() {
    let hostile = Hostile::start(Mode::Valid { expires_in: 3600 });
    let (work, daemon) = start(&hostile);
    let mut child = JsonLines::spawn(
        typescript::script(
            "daemon_script.js",
            &["watch", socket(&daemon), "rotating", "2"],
        ),
        Duration::from_secs(30),
    );

    let first = child.next("the first headers");
    assert_eq!(
        first["headers"],
        json!({"Authorization": "Bearer glean_before_rotation"}),
        "{first}"
    );

    let rotated_at = Instant::now();
    common::write_secret(&work.path().join("rotating.secret"), "glean_after_rotation");
    let second = child.next("the headers after the rotation");
    assert_eq!(
        second["headers"],
        json!({"Authorization": "Bearer glean_after_rotation"}),
        "{second}"
    );
    assert!(
        rotated_at.elapsed() < Duration::from_secs(10),
        "the rotation took {:?}",
        rotated_at.elapsed()
    );
    assert_ne!(first["fingerprint"], second["fingerprint"], "{second}");

    // return() ended the stream, and the script exits by itself: nothing
    // of the cancelled call keeps it alive.
    let returned = child.next("return()'s result");
    assert_eq!(returned, json!({"returned": true}));
    child.finish(Duration::from_secs(20));
}

#[test]
fn invalidate_replaces_the_reported_token() {
    let hostile = Hostile::start(Mode::Valid { expires_in: 3600 });
    let (_work, daemon) = start(&hostile);
    let got = one(script("invalidate", socket(&daemon), &["cc"]));
    assert_eq!(got["refreshing"], true, "{got}");
    assert_eq!(got["stale"], false, "a report about another token: {got}");
    assert!(
        got["before"].as_str().is_some_and(|f| f.len() == 16),
        "{got}"
    );
    assert_ne!(got["before"], got["after"], "{got}");
    assert_eq!(hostile.requests(), 2, "the first token and its replacement");
}

#[test]
fn credentials_lists_every_credential_for_root() {
    let hostile = Hostile::start(Mode::Valid { expires_in: 3600 });
    let (_work, daemon) = start(&hostile);
    let got = one(script("credentials", socket(&daemon), &[]));
    let list = got.as_array().unwrap_or_else(|| panic!("{got}"));
    let mut names: Vec<&str> = list.iter().filter_map(|c| c["name"].as_str()).collect();
    names.sort_unstable();
    // Root is an admin: every credential, the forbidden one included.
    assert_eq!(
        names,
        ["cc", "forbidden", "global", "rotating", "user"],
        "{got}"
    );
    let user = list.iter().find(|c| c["name"] == "user").unwrap();
    assert_eq!(user["kind"], "glean_token", "{user}");
    assert_eq!(user["permission"], "user", "{user}");
    assert_eq!(user["state"], "fresh", "{user}");
    assert_eq!(user["scopes"], json!(["SEARCH"]), "{user}");
    let cc = list.iter().find(|c| c["name"] == "cc").unwrap();
    assert_eq!(cc["kind"], "oauth_client_credentials", "{cc}");
    common::assert_no_secret("the credentials", &got.to_string());
}

/// A shared credential's place in the fleet reaches a grpc-js user: a
/// one-node fleet on a real etcd, whose node leads; credentials that are
/// not shared carry none.
#[test]
fn a_shared_credentials_fleet_membership_is_in_its_status() {
    let hostile = Hostile::start(Mode::Valid { expires_in: 3600 });
    let fleet = common::fleet::OneNode::start("node-a", &hostile.token_endpoint());
    let (_work, daemon) = start_with(&hostile, &fleet.config);
    let list = fleet.once_led(&daemon, || one(script("credentials", socket(&daemon), &[])));
    let of = |name: &str| list.iter().find(|c| c["name"] == name).unwrap();
    assert_eq!(
        of("shared")["fleet"],
        json!({ "node": "node-a", "role": "leader", "leader": "node-a" }),
        "{list:?}"
    );
    assert_eq!(of("user").get("fleet"), None, "{list:?}");
    assert_eq!(of("cc").get("fleet"), None, "{list:?}");
}

/// Each request's `Authorization` and body, in arrival order.
type Seen = Arc<Mutex<Vec<(String, String)>>>;

/// An API on loopback that answers 401 to the first bearer token it is
/// shown and 200 afterwards; records what it was sent.
fn refusing_api() -> (String, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the API");
    let url = format!(
        "http://{}/rest/api/v1/search",
        listener.local_addr().unwrap()
    );
    let seen: Seen = Arc::default();
    let log = Arc::clone(&seen);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone()?);
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line)? == 0 {
                        return Ok::<_, std::io::Error>(());
                    }
                    let (mut auth, mut length) = (String::new(), 0);
                    loop {
                        line.clear();
                        reader.read_line(&mut line)?;
                        let l = line.trim_end();
                        if l.is_empty() {
                            break;
                        }
                        let lower = l.to_ascii_lowercase();
                        if lower.starts_with("authorization:") {
                            auth = l["authorization:".len()..].trim().to_owned();
                        } else if let Some(v) = lower.strip_prefix("content-length:") {
                            length = v.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0; length];
                    reader.read_exact(&mut body)?;
                    let first = {
                        let mut log = log.lock().unwrap();
                        log.push((auth, String::from_utf8_lossy(&body).into_owned()));
                        log.len() == 1
                    };
                    let (status, body) = if first {
                        ("401 Unauthorized", "{}")
                    } else {
                        ("200 OK", r#"{"results":[]}"#)
                    };
                    write!(
                        &stream,
                        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    )?;
                }
            });
        }
    });
    (url, seen)
}

#[test]
fn glean_fetch_reports_a_401_and_retries_once_with_the_replacement() {
    let hostile = Hostile::start(Mode::Valid { expires_in: 3600 });
    let (_work, daemon) = start(&hostile);
    let (url, seen) = refusing_api();
    let got = one(script("glean-fetch", socket(&daemon), &["cc", &url]));
    assert_eq!(got, json!({"status": 200, "body": r#"{"results":[]}"#}));
    let seen = seen.lock().unwrap().clone();
    let body = r#"{"query":"test","pageSize":1}"#.to_owned();
    assert_eq!(
        seen,
        [
            ("Bearer at-1".to_owned(), body.clone()),
            ("Bearer at-2".to_owned(), body)
        ],
        "one request and one retry with the replacement"
    );
    assert_eq!(hostile.requests(), 2, "one refresh for the report");
}

/// `npm pack` in a copy of the package holding only what a checkout has
/// (no dist/, no proto copy), beside a copy of the repository's proto; the
/// tarball lists the declarations and the proto; unpacked as a dependency
/// it type-checks in a consumer's strict TypeScript and serves headers
/// from the real daemon.
#[test]
fn npm_pack_from_a_clean_checkout() {
    let started = Instant::now();
    typescript::ensure_built();
    let package = typescript::package_dir();
    let tmp = tempfile::tempdir().expect("temp dir");
    let checkout = tmp.path().join("clients/typescript");
    copy_checkout(&package, &checkout);
    std::fs::create_dir_all(tmp.path().join("proto/tokend/v1")).unwrap();
    std::fs::copy(
        typescript::proto(),
        tmp.path().join("proto/tokend/v1/tokend.proto"),
    )
    .unwrap();
    std::os::unix::fs::symlink(package.join("node_modules"), checkout.join("node_modules"))
        .unwrap();
    assert!(!checkout.join("dist").exists() && !checkout.join("proto").exists());

    let out_dir = tmp.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let mut cmd = Command::new("npm");
    cmd.args(["pack", "--json", "--pack-destination"])
        .arg(&out_dir)
        .current_dir(&checkout);
    let out = output(cmd, Duration::from_secs(120));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "npm pack failed ({})\n--- stdout\n{stdout}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    // npm prints the prepack build's output before the JSON.
    let json_start = stdout.find("\n[").map_or(0, |i| i + 1);
    let packed: Value = serde_json::from_str(&stdout[json_start..])
        .unwrap_or_else(|e| panic!("npm pack --json: {e}\n{stdout}"));
    let packed = &packed[0];
    assert_eq!(packed["name"], "@tokend/client", "{packed}");
    // The package's version is tokend's.
    assert_eq!(packed["version"], env!("CARGO_PKG_VERSION"), "{packed}");
    let files: Vec<&str> = packed["files"]
        .as_array()
        .unwrap_or_else(|| panic!("{packed}"))
        .iter()
        .filter_map(|f| f["path"].as_str())
        .collect();
    for wanted in [
        "package.json",
        "dist/index.js",
        "dist/index.d.ts",
        "dist/client.d.ts",
        "dist/errors.d.ts",
        "dist/glean.d.ts",
        "proto/tokend/v1/tokend.proto",
    ] {
        assert!(files.contains(&wanted), "{wanted} not packed: {files:?}");
    }
    for file in &files {
        assert!(
            file.starts_with("dist/") || file.starts_with("proto/") || !file.contains('/'),
            "{file} should not be packed: {files:?}"
        );
    }
    let tarball = out_dir.join(packed["filename"].as_str().expect("filename"));

    // Unpacked where a consumer's npm would put it, its dependencies beside.
    let consumer = tmp.path().join("consumer");
    let installed = consumer.join("node_modules/@tokend/client");
    std::fs::create_dir_all(&installed).unwrap();
    let status = Command::new("tar")
        .arg("-xzf")
        .arg(&tarball)
        .arg("--strip-components=1")
        .arg("-C")
        .arg(&installed)
        .status()
        .expect("run tar");
    assert!(status.success(), "tar: {status}");
    assert_eq!(
        std::fs::read(installed.join("proto/tokend/v1/tokend.proto")).unwrap(),
        std::fs::read(typescript::proto()).unwrap(),
        "the packed proto is the repository's"
    );
    for dep in ["@grpc", "@types"] {
        std::os::unix::fs::symlink(
            package.join("node_modules").join(dep),
            consumer.join("node_modules").join(dep),
        )
        .unwrap();
    }

    // A strict TypeScript consumer of the declarations.
    std::fs::write(
        consumer.join("tsconfig.json"),
        r#"{"compilerOptions": {"strict": true, "module": "node16", "moduleResolution": "node16",
            "target": "ES2022", "lib": ["ES2022"], "types": ["node"], "noEmit": true},
            "files": ["use.ts"]}"#,
    )
    .unwrap();
    std::fs::write(
        consumer.join("use.ts"),
        r#"import { Client, PermissionDenied, TokendError, gleanApiToken, gleanFetch,
  type Headers, type CredentialStatus } from "@tokend/client";
export async function use(): Promise<string> {
  const client = new Client({ socket: "/run/tokend/tokend.sock" });
  const h: Headers = await client.headers("search-bot", { actAs: "a@b.c", scopes: ["SEARCH"], minValidSeconds: 60 });
  const auth: string | undefined = h.headers["Authorization"];
  const when: Date | undefined = h.expiresAt;
  const refreshing: boolean = await client.invalidate("search-bot", h.fingerprint);
  for await (const next of client.watch("search-bot")) { void next.fingerprint; break; }
  const list: CredentialStatus[] = await client.credentials();
  const token: () => Promise<string> = gleanApiToken(client, "search-bot");
  const fetcher: typeof fetch = gleanFetch(client, "search-bot");
  try { await client.headers("x"); } catch (e) {
    if (e instanceof PermissionDenied) return e.message;
    if (e instanceof TokendError) return e.codeName;
  }
  client.close();
  return `${auth}${when}${refreshing}${list.length}${typeof token}${typeof fetcher}`;
}
"#,
    )
    .unwrap();
    let mut tsc = Command::new("node");
    tsc.arg(package.join("node_modules/typescript/bin/tsc"))
        .arg("-p")
        .arg(&consumer)
        .current_dir(&consumer);
    let out = output(tsc, Duration::from_secs(120));
    assert!(
        out.status.success(),
        "the consumer does not type-check against the packed declarations:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // And it runs: the packed code loads the packed proto and asks the
    // real daemon.
    let hostile = Hostile::start(Mode::Valid { expires_in: 3600 });
    let (_work, daemon) = start(&hostile);
    let mut node = Command::new("node");
    node.args([
        "-e",
        r#"const { Client } = require("@tokend/client");
const c = new Client({ socket: process.argv[1] });
c.headers("user").then((h) => { console.log(JSON.stringify(h.headers)); c.close(); },
  (e) => { console.error(e); process.exit(1); });"#,
    ])
    .arg(socket(&daemon))
    .current_dir(&consumer)
    .env_remove("NODE_PATH");
    let out = output(node, Duration::from_secs(60));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Value = serde_json::from_slice(&out.stdout).expect("JSON headers");
    assert_eq!(got, json!({"Authorization": format!("Bearer {CANARY}")}));
    eprintln!("npm pack and the consumer: {:?}", started.elapsed());
}

/// Copies the package as a checkout has it: everything but what
/// `.gitignore` leaves out (installs, builds, the proto copy, tarballs).
fn copy_checkout(from: &Path, to: &Path) {
    const IGNORED: [&str; 6] = [
        "node_modules",
        "dist",
        "build-test",
        "proto",
        ".install.lock",
        ".git",
    ];
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let name = entry.file_name();
        let name_str = name.to_string_lossy();
        if IGNORED.contains(&name_str.as_ref()) || name_str.ends_with(".tgz") {
            continue;
        }
        let path = entry.path();
        if path.is_dir() {
            copy_checkout(&path, &to.join(&name));
        } else {
            std::fs::copy(&path, to.join(&name)).unwrap();
        }
    }
}

/// The official Glean SDK (`@gleanwork/api-client`) through tokend against
/// the Glean API emulator: a user token as the SDK's `apiToken`, a global
/// token and an OAuth credential through `gleanFetch` (with their
/// `X-Glean-ActAs` and `X-Glean-Auth-Type`), and, once every OAuth token is
/// revoked, the 401 → `invalidate` → retry dance ending in a 200.
#[test]
fn glean_sdk_searches_through_tokend_against_the_emulator() {
    use common::glean_api::{CHAT_PATH, GleanApi, Permission};
    common::require_root();
    let glean = GleanApi::start();
    glean.add_token(
        "glean_user_secret",
        Permission::User,
        &["SEARCH", "CHAT"],
        None,
    );
    glean.add_token(
        "glean_global_secret",
        Permission::Global,
        &["SEARCH", "CHAT"],
        None,
    );
    let work = Workdir::new();
    common::write_secret(&work.path().join("user.secret"), "glean_user_secret");
    common::write_secret(&work.path().join("global.secret"), "glean_global_secret");
    common::write_secret(&work.path().join("client-secret"), "ts-client-secret");
    let credentials = [
        work.store_section(),
        Glean::user("glean-user")
            .scopes(r#"["SEARCH", "CHAT"]"#)
            .secret_file("user.secret")
            .to_string(),
        Glean::global("glean-global")
            .secret_file("global.secret")
            .to_string(),
        format!(
            r#"
[[credential]]
name = "glean-oauth"
kind = "oauth_client_credentials"
token_endpoint = "{endpoint}"
client_id = "tokend"
client_secret = {{ file = "client-secret" }}
auth_method = "client_secret_post"
extra_headers = {{ "X-Glean-Auth-Type" = "OAUTH" }}
allow = {{ uids = [0] }}
"#,
            endpoint = glean.token_endpoint()
        ),
    ]
    .concat();
    work.write_config("", &credentials);
    let daemon = Daemon::start(&work);
    let sock = socket(&daemon);
    let url = glean.url();
    let search = |credential: &str, mode: &str, act_as: Option<&str>| -> Value {
        let mut args = vec![credential, url.as_str(), mode];
        args.extend(act_as);
        one(script("glean-sdk", sock, &args))
    };
    let last = || glean.seen().last().cloned().expect("a request");

    // A user token as the SDK's apiToken.
    let got = search("glean-user", "api-token", None);
    assert!(
        got["titles"][0]
            .as_str()
            .is_some_and(|t| t.starts_with("Quarterly report")),
        "{got}"
    );
    let seen = last();
    assert_eq!(
        (seen.status, seen.token.as_str(), seen.act_as.as_deref()),
        (200, "glean_user_secret", None)
    );

    // A global token through gleanFetch: X-Glean-ActAs arrives.
    let got = search("glean-global", "fetch", Some("alice@corp.example"));
    assert!(got["requestID"].as_str().is_some(), "{got}");
    let seen = last();
    assert_eq!(
        (seen.status, seen.token.as_str(), seen.act_as.as_deref()),
        (200, "glean_global_secret", Some("alice@corp.example"))
    );

    // chat.create: a user token through gleanApiToken, a global one
    // through gleanFetch with X-Glean-ActAs.
    let chat = |credential: &str, mode: &str, act_as: Option<&str>| -> Value {
        let mut args = vec![credential, url.as_str(), mode];
        args.extend(act_as);
        one(script("glean-sdk-chat", sock, &args))
    };
    let got = chat("glean-user", "api-token", None);
    let n = glean.seen().len();
    assert_eq!(got["chatId"], format!("chat-{n}"), "{got}");
    assert_eq!(
        got["texts"],
        json!([format!("Revenue grew {n}%.")]),
        "{got}"
    );
    let seen = last();
    assert_eq!(
        (
            seen.path.as_str(),
            seen.status,
            seen.token.as_str(),
            seen.act_as.as_deref()
        ),
        (CHAT_PATH, 200, "glean_user_secret", None)
    );
    let got = chat("glean-global", "fetch", Some("bob@corp.example"));
    let n = glean.seen().len();
    assert_eq!(got["chatId"], format!("chat-{n}"), "{got}");
    assert_eq!(
        got["texts"],
        json!([format!("Revenue grew {n}%.")]),
        "{got}"
    );
    let seen = last();
    assert_eq!(
        (
            seen.path.as_str(),
            seen.status,
            seen.token.as_str(),
            seen.act_as.as_deref()
        ),
        (
            CHAT_PATH,
            200,
            "glean_global_secret",
            Some("bob@corp.example")
        )
    );

    // The same token as an apiToken cannot carry X-Glean-ActAs: refused
    // before any request reaches Glean.
    let before = glean.seen().len();
    let got = search("glean-global", "api-token", Some("alice@corp.example"));
    assert!(
        got["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("X-Glean-ActAs") && m.contains("gleanFetch")),
        "{got}"
    );
    assert_eq!(glean.seen().len(), before);

    // An OAuth credential through gleanFetch: X-Glean-Auth-Type arrives.
    let got = search("glean-oauth", "fetch", None);
    assert!(got["requestID"].as_str().is_some(), "{got}");
    let seen = last();
    assert_eq!(
        (seen.status, seen.token.as_str(), seen.auth_type.as_deref()),
        (200, "glean_oauth_access_1", Some("OAUTH"))
    );
    assert_eq!(glean.issued(), 1);
    let got = chat("glean-oauth", "fetch", None);
    assert!(got["chatId"].as_str().is_some(), "{got}");
    let seen = last();
    assert_eq!(
        (
            seen.path.as_str(),
            seen.status,
            seen.token.as_str(),
            seen.auth_type.as_deref()
        ),
        (CHAT_PATH, 200, "glean_oauth_access_1", Some("OAUTH"))
    );

    // Glean revokes every OAuth token: the 401 reports it, tokend fetches
    // a new one, and the one retry succeeds.
    glean.revoke_oauth();
    let before = glean.seen().len();
    let got = search("glean-oauth", "fetch", None);
    assert!(got["requestID"].as_str().is_some(), "{got}");
    let retried: Vec<(u16, String)> = glean.seen()[before..]
        .iter()
        .map(|s| (s.status, s.token.clone()))
        .collect();
    assert_eq!(
        retried,
        [
            (401, "glean_oauth_access_1".to_owned()),
            (200, "glean_oauth_access_2".to_owned())
        ]
    );
    assert_eq!(glean.issued(), 2, "one new token for the report");
}
