//! The socket's life: one daemon per socket, stale sockets replaced, and a
//! graceful SIGTERM that finishes in-flight calls and removes the socket.

mod common;

use std::process::Command;

use bytes::Bytes;
use common::{CANARY, Daemon, Workdir};
use nix::sys::signal::Signal;
use prost::Message;
use tokend::proto::{GetHeadersRequest, GetHeadersResponse};

const CREDENTIALS: &str = r#"
[[credential]]
name = "search"
kind = "glean_token"
permission = "user"
scopes = ["SEARCH"]
secret = { file = "secret" }
allow = { uids = [0] }
"#;

fn workdir() -> Workdir {
    common::require_root();
    let work = Workdir::new();
    work.write_config("", CREDENTIALS);
    work
}

// Multi-threaded: the HTTP/2 connection task must keep running while the
// test thread blocks waiting for the daemon's log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_an_in_flight_call_finish_then_removes_the_socket() {
    let work = workdir();
    let mut daemon = Daemon::start(&work);

    // A raw HTTP/2 gRPC call whose request body is sent in two halves: after
    // the first half the call is in flight on the server, waiting for the rest.
    let io = tokio::net::UnixStream::connect(&daemon.socket)
        .await
        .unwrap();
    let (client, connection) = h2::client::handshake(io).await.unwrap();
    let driver = tokio::spawn(connection);
    let mut client = client.ready().await.unwrap();
    let (response, mut body) = client
        .send_request(common::raw_get_headers_request(), false)
        .unwrap();
    let message = GetHeadersRequest {
        credential: "search".into(),
        ..Default::default()
    }
    .encode_to_vec();
    let mut frame = vec![0u8];
    frame.extend_from_slice(&u32::try_from(message.len()).unwrap().to_be_bytes());
    frame.extend_from_slice(&message);
    let (first, rest) = frame.split_at(3);
    body.send_data(Bytes::copy_from_slice(first), false)
        .unwrap();
    daemon.wait_for_log("received frame=Data { stream_id: StreamId(1) }");

    daemon.signal(Signal::SIGTERM);
    daemon.wait_for_log("shutting down");
    assert!(
        daemon.socket.exists(),
        "the socket stays until in-flight calls are done"
    );

    body.send_data(Bytes::copy_from_slice(rest), true).unwrap();
    let response = response.await.expect("the in-flight call is answered");
    assert_eq!(response.status(), 200);
    let mut payload = response.into_body();
    let mut bytes = Vec::new();
    while let Some(chunk) = payload.data().await {
        let chunk = chunk.unwrap();
        let _ = payload.flow_control().release_capacity(chunk.len());
        bytes.extend_from_slice(&chunk);
    }
    let trailers = payload.trailers().await.unwrap().expect("gRPC trailers");
    assert_eq!(trailers.get("grpc-status").unwrap(), "0", "{trailers:?}");
    let reply = GetHeadersResponse::decode(&bytes[5..]).unwrap();
    assert_eq!(reply.headers[0].value, format!("Bearer {CANARY}"));

    drop(client);
    let status = daemon.wait();
    assert!(status.success(), "tokend exited with {status}");
    assert!(!work.socket().exists(), "socket file removed on shutdown");
    let _ = driver.await;
}

#[test]
fn a_second_daemon_on_a_live_socket_is_refused() {
    let work = workdir();
    let _first = Daemon::start(&work);
    let out = Command::new(env!("CARGO_BIN_EXE_tokend"))
        .arg("--config")
        .arg(work.config_path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("another tokend is already listening on"),
        "{err}"
    );
    // The first daemon's socket survives the refused start.
    let ok = work.tokenctl(&["headers", "search"]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
}

#[test]
fn a_stale_socket_is_replaced() {
    let work = workdir();
    let mut crashed = Daemon::start(&work);
    crashed.signal(Signal::SIGKILL);
    crashed.wait();
    assert!(work.socket().exists(), "SIGKILL leaves the socket behind");
    let mut daemon = Daemon::start(&work);
    daemon.wait_for_log("removing stale socket");
    let ok = work.tokenctl(&["headers", "search"]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(daemon.stop().success());
}

#[test]
fn a_file_in_the_sockets_place_is_left_alone() {
    let work = workdir();
    std::fs::create_dir_all(work.socket().parent().unwrap()).unwrap();
    std::fs::write(work.socket(), "not a socket").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tokend"))
        .arg("--config")
        .arg(work.config_path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("exists and is not a socket"), "{err}");
    assert_eq!(
        std::fs::read_to_string(work.socket()).unwrap(),
        "not a socket"
    );
}

/// `--socket` (here through `TOKEND_SOCKET`) overrides the config's socket
/// for the daemon's whole life: a reload must not report it as a changed
/// setting, while a real change still is.
#[test]
fn a_socket_from_the_command_line_is_not_a_settings_change_on_reload() {
    let work = Workdir::new();
    let config = |extra: &str| {
        let elsewhere = work.path().join("elsewhere.sock");
        let text = format!(
            "[daemon]\nsocket = \"{}\"\n{extra}\n{}",
            elsewhere.display(),
            common::fixtures::Glean::user("search")
        );
        std::fs::write(work.config_path(), text).unwrap();
    };
    config("");
    let socket = work.socket();
    let daemon = Daemon::start_env(&work, &[("TOKEND_SOCKET", socket.to_str().unwrap())]);
    let out = work.tokenctl(&["reload"]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        !daemon.logs().contains("settings changed"),
        "{}",
        daemon.logs()
    );
    config("shutdown_timeout = \"7s\"");
    let out = work.tokenctl(&["reload"]);
    assert!(out.status.success(), "{out:?}");
    daemon.wait_for_log("[daemon] settings changed; they apply at the next restart");
}
