//! The daemon's socket under a local user's flood: one uid can hold at most
//! `MAX_CONNECTIONS_PER_UID` connections, others keep being served, and the
//! refusals are logged without flooding the log.

mod common;

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::time::Duration;

use common::{Daemon, Workdir};
use tokend::grpc::MAX_CONNECTIONS_PER_UID;

const CREDENTIALS: &str = r#"
[[credential]]
name = "user"
kind = "glean_token"
permission = "user"
scopes = ["SEARCH"]
secret = { file = "secret" }
allow = { uids = [0, 4242] }
"#;

/// Lets this process and the daemon it starts hold the connections these
/// tests open: the soft file limit up to the hard one.
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid, owned struct.
    #[allow(unsafe_code)]
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = lim.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
    }
    let needed = 2 * MAX_CONNECTIONS_PER_UID as u64 + 256;
    assert!(
        lim.rlim_cur >= needed,
        "these tests need {needed} open files; raise the hard limit (`ulimit -Hn {needed}` as root)"
    );
}

#[test]
fn one_uid_at_its_connection_cap_does_not_lock_out_others() {
    common::require_root();
    raise_fd_limit();
    let work = Workdir::new();
    // Any uid may connect: a directory everyone can traverse, a 0666 socket.
    std::fs::create_dir(work.path().join("run")).unwrap();
    common::set_mode(&work.path().join("run"), 0o755);
    work.write_config("socket_mode = 0o666", CREDENTIALS);
    let daemon = Daemon::start(&work);

    // Root fills its quota with idle connections (well inside the
    // handshake timeout)...
    let held: Vec<UnixStream> = (0..MAX_CONNECTIONS_PER_UID)
        .map(|_| UnixStream::connect(work.socket()).expect("connect"))
        .collect();
    // ...and its next connections are closed on arrival.
    for _ in 0..3 {
        let mut extra = UnixStream::connect(work.socket()).expect("the kernel still accepts");
        extra
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut buf = [0; 16];
        assert_eq!(
            extra.read(&mut buf).expect("closed, not left hanging"),
            0,
            "a connection beyond the cap is closed"
        );
    }

    // Another uid is served meanwhile.
    let out = std::process::Command::new(work.path().join("tokenctl"))
        .arg("--socket")
        .arg(work.socket())
        .args(["headers", "user"])
        .uid(4242)
        .gid(4242)
        .output()
        .expect("run tokenctl as uid 4242");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Root gets its places back as its connections close.
    drop(held);
    let mut served = false;
    for _ in 0..50 {
        if work.tokenctl(&["headers", "user"]).status.success() {
            served = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(served, "root is served again once its connections close");

    // Three refusals, logged at the 1st and 2nd only.
    let logs = daemon.logs();
    assert_eq!(logs.matches("the most one uid may").count(), 2, "{logs}");
}

/// `GET /metrics` over a Unix stream; the response, or "" if closed unanswered.
fn scrape(path: &std::path::Path) -> String {
    use std::io::Write;
    let mut s = UnixStream::connect(path).expect("connect to the metrics socket");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn the_metrics_socket_follows_the_grpc_socket_rules_and_caps_connections() {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    common::require_root();

    // A regular file where the metrics socket should go is left alone.
    let work = Workdir::new();
    let in_the_way = work.path().join("metrics.sock");
    std::fs::write(&in_the_way, "precious").unwrap();
    let config = |path: &std::path::Path| {
        format!(
            "{CREDENTIALS}\n[metrics]\nlisten = \"unix:{}\"\n",
            path.display()
        )
    };
    work.write_config("socket_mode = 0o660", &config(&in_the_way));
    let daemon = Daemon::start(&work);
    daemon.wait_for_log("metrics listener failed");
    assert_eq!(std::fs::read_to_string(&in_the_way).unwrap(), "precious");
    assert!(
        daemon.logs().contains("is not a socket"),
        "{}",
        daemon.logs()
    );
    drop(daemon);

    // A free path: the socket gets [daemon]'s mode, not the umask's.
    let work = Workdir::new();
    let path = work.path().join("metrics.sock");
    work.write_config("socket_mode = 0o660", &config(&path));
    let _daemon = Daemon::start(&work);
    let mut tries = 0;
    while !path.exists() && tries < 100 {
        std::thread::sleep(Duration::from_millis(20));
        tries += 1;
    }
    let meta = std::fs::metadata(&path).expect("the metrics socket");
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    assert!(scrape(&path).starts_with("HTTP/1.1 200"));

    // Idle connections up to the cap; the next is closed unanswered.
    let idle: Vec<UnixStream> = (0..tokend::daemon::metrics_http::MAX_CONNECTIONS)
        .map(|_| UnixStream::connect(&path).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(scrape(&path), "", "a connection over the cap is closed");
    drop(idle);
    let mut answered = false;
    for _ in 0..50 {
        if scrape(&path).starts_with("HTTP/1.1 200") {
            answered = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        answered,
        "scrapes are served again once the idle connections go"
    );
}

/// 20 000 WatchHeaders streams used to cost +235 MB and were never given
/// back; one uid now holds at most `MAX_STREAMS_PER_UID`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_streams_are_capped_per_uid() {
    use tokend::grpc::MAX_STREAMS_PER_UID;
    use tokend::proto::GetHeadersRequest;
    common::require_root();
    raise_fd_limit();
    let work = Workdir::new();
    work.write_config("", CREDENTIALS);
    let daemon = Daemon::start(&work);
    let req = || GetHeadersRequest {
        credential: "user".into(),
        ..Default::default()
    };
    // Spread over connections: one HTTP/2 connection carries at most a
    // few hundred streams at once.
    let mut clients = Vec::new();
    for _ in 0..8 {
        clients.push(daemon.client().await);
    }
    let mut streams = Vec::new();
    for i in 0..MAX_STREAMS_PER_UID {
        let mut client = clients[i % clients.len()].clone();
        streams.push(
            client
                .watch_headers(req())
                .await
                .expect("a stream under the cap"),
        );
    }
    let e = clients[0].watch_headers(req()).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e:?}");
    assert!(
        e.message().contains("WatchHeaders streams open"),
        "{}",
        e.message()
    );
    // One ends: its place is given back.
    drop(streams.pop());
    let mut reopened = None;
    for _ in 0..50 {
        if let Ok(s) = clients[1].watch_headers(req()).await {
            reopened = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        reopened.is_some(),
        "a place freed by a closed stream is reused"
    );
}

/// Any socket user could flood the audit log: huge credential names (40
/// requests of 3.9 MB: +160 MB of log) and refused calls without end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_log_cannot_be_flooded() {
    use tokend::proto::GetHeadersRequest;
    common::require_root();
    let work = Workdir::new();
    work.write_config(
        "",
        &format!(
            "{CREDENTIALS}\n[[credential]]\nname = \"forbidden\"\nkind = \"glean_token\"\n\
             permission = \"user\"\nscopes = [\"SEARCH\"]\nsecret = {{ file = \"secret\" }}\n\
             allow = {{ uids = [4242] }}\n"
        ),
    );
    let daemon = Daemon::start(&work);
    let mut client = daemon.client().await;
    let before = daemon.logs().len();
    for _ in 0..5 {
        let e = client
            .get_headers(GetHeadersRequest {
                credential: "x".repeat(4 << 20),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_ne!(e.code(), tonic::Code::Ok);
    }
    let e = client
        .get_headers(GetHeadersRequest {
            credential: "x".repeat(1000),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(
        e.message().contains("credential is over 256 bytes"),
        "{}",
        e.message()
    );
    for _ in 0..200 {
        let e = client
            .get_headers(GetHeadersRequest {
                credential: "forbidden".into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
    }
    let logs = daemon.logs();
    // The harness logs at trace level; what a production log keeps of
    // these calls is the `audit` target.
    let audit: Vec<&str> = logs[before..]
        .lines()
        .filter(|l| l.contains(" audit:"))
        .collect();
    let denied = audit
        .iter()
        .filter(|l| l.contains("result=PermissionDenied"))
        .count();
    assert!(denied <= 21, "{denied} audit lines for 200 refused calls");
    assert!(denied >= 1, "refused calls are still audited:\n{logs}");
    let bytes: usize = audit.iter().map(|l| l.len()).sum();
    assert!(bytes < 16 * 1024, "{bytes} bytes of audit log");
}

/// One connection carries at most `MAX_STREAMS_PER_CONNECTION` calls at
/// once: the daemon says so in its HTTP/2 settings, and a stock client
/// queues the rest (tonic's default server set no limit at all).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_in_flight_per_connection_are_bounded() {
    use tokend::grpc::{MAX_STREAMS_PER_CONNECTION, MAX_STREAMS_PER_UID};
    common::require_root();
    let work = Workdir::new();
    work.write_config("", CREDENTIALS);
    let daemon = Daemon::start(&work);
    let io = tokio::net::UnixStream::connect(&daemon.socket)
        .await
        .unwrap();
    let (client, connection) = h2::client::handshake(io).await.unwrap();
    let driver = tokio::spawn(connection);
    // The server's SETTINGS arrive with its first frames.
    let mut advertised = 0;
    for _ in 0..100 {
        advertised = client.current_max_send_streams();
        if advertised != usize::MAX {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(advertised, MAX_STREAMS_PER_CONNECTION as usize);
    assert!(MAX_STREAMS_PER_CONNECTION as usize > MAX_STREAMS_PER_UID);
    drop(client);
    driver.abort();
}

/// A call still reading its request holds up to `MAX_REQUEST` of it, and
/// a local user could keep any number half-sent over its connections: one
/// uid has at most `MAX_CALLS_PER_UID` calls in flight, the next is
/// answered RESOURCE_EXHAUSTED unread, others are served, and a place
/// comes back when its call ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_in_flight_per_uid_are_bounded() {
    use tokend::grpc::{MAX_CALLS_PER_UID, MAX_STREAMS_PER_CONNECTION};
    use tokend::proto::GetHeadersRequest;
    common::require_root();
    let work = Workdir::new();
    std::fs::create_dir(work.path().join("run")).unwrap();
    common::set_mode(&work.path().join("run"), 0o755);
    work.write_config("socket_mode = 0o666", CREDENTIALS);
    let daemon = Daemon::start(&work);

    // Root's half-sent calls: a message prefix promising 100 bytes, 3 sent.
    let mut held = Vec::new();
    let mut drivers = Vec::new();
    let per_connection = MAX_STREAMS_PER_CONNECTION as usize;
    while held.len() < MAX_CALLS_PER_UID {
        let io = tokio::net::UnixStream::connect(&daemon.socket)
            .await
            .unwrap();
        let (mut client, connection) = h2::client::handshake(io).await.unwrap();
        drivers.push(tokio::spawn(connection));
        for _ in 0..per_connection.min(MAX_CALLS_PER_UID - held.len()) {
            client = client.ready().await.expect("a stream under the limit");
            let (response, mut body) = client
                .send_request(common::raw_get_headers_request(), false)
                .unwrap();
            body.send_data(
                bytes::Bytes::from_static(&[0, 0, 0, 0, 100, 1, 2, 3]),
                false,
            )
            .unwrap();
            held.push((response, body));
        }
    }

    // The next call of root's, on another connection, is refused unread.
    let mut client = daemon.client().await;
    let req = || GetHeadersRequest {
        credential: "user".into(),
        ..Default::default()
    };
    let mut refused = None;
    for _ in 0..100 {
        match client.get_headers(req()).await {
            Err(e) if e.code() == tonic::Code::ResourceExhausted => {
                refused = Some(e);
                break;
            }
            // The daemon may not have read every half-sent call yet.
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    let e = refused.expect("a call over the quota is refused");
    assert!(
        e.message()
            .contains(&format!("has {MAX_CALLS_PER_UID} calls in flight")),
        "{}",
        e.message()
    );

    // Another uid is served meanwhile.
    let tokenctl = work.path().join("tokenctl");
    let socket = work.socket();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(tokenctl)
            .arg("--socket")
            .arg(socket)
            .args(["headers", "user"])
            .uid(4242)
            .gid(4242)
            .output()
            .expect("run tokenctl as uid 4242")
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // One half-sent call is cancelled: its place comes back.
    drop(held.pop());
    let mut served = false;
    for _ in 0..100 {
        if client.get_headers(req()).await.is_ok() {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(served, "a cancelled call gives its place back");
    assert!(
        daemon
            .logs()
            .contains("calls in flight, the most one uid may"),
        "{}",
        daemon.logs()
    );
    drop(held);
    for driver in drivers {
        driver.abort();
    }
}
