//! Running under systemd: the notify protocol on a test-owned socket, socket
//! activation through systemd's own `systemd-socket-activate`, and reloading
//! config and secrets while clients keep calling.

mod common;

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::fixtures::Glean;
use common::{Daemon, Workdir};
use nix::sys::signal::Signal;
use tokend::proto::GetHeadersRequest;

/// Every datagram received, with when it arrived.
type Messages = Arc<Mutex<Vec<(Instant, String)>>>;

fn listen_notify(path: &std::path::Path) -> Messages {
    let socket = UnixDatagram::bind(path).unwrap();
    let got: Messages = Arc::default();
    let store = Arc::clone(&got);
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = socket.recv(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            store.lock().unwrap().push((Instant::now(), text));
        }
    });
    got
}

fn wait_message(
    got: &Messages,
    pred: impl Fn(&str) -> bool,
    within: Duration,
) -> (Instant, String) {
    let deadline = Instant::now() + within;
    loop {
        if let Some(m) = got.lock().unwrap().iter().find(|(_, m)| pred(m)).cloned() {
            return m;
        }
        assert!(
            Instant::now() < deadline,
            "no such message in {:?}",
            got.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn get(name: &str) -> GetHeadersRequest {
    GetHeadersRequest {
        credential: name.into(),
        ..Default::default()
    }
}

#[test]
fn the_notify_protocol_reports_ready_status_watchdog_reload_and_stop() {
    common::require_root();
    let work = Workdir::new();
    work.write_config(
        "",
        &format!("{}{}", work.store_section(), Glean::user("g").stored()),
    );
    let notify = work.path().join("notify.sock");
    let got = listen_notify(&notify);
    let log = work.path().join("tokend.log");
    let mut child = common::spawn_tokend(
        &work.config_path(),
        &log,
        &[
            ("NOTIFY_SOCKET", notify.to_str().unwrap()),
            ("WATCHDOG_USEC", "1000000"),
        ],
    );
    let (ready_at, _) = wait_message(&got, |m| m == "READY=1", Duration::from_secs(20));
    // READY only once the socket takes connections.
    assert!(
        std::os::unix::net::UnixStream::connect(work.socket()).is_ok(),
        "READY=1 before the socket listens"
    );
    wait_message(
        &got,
        |m| m == "STATUS=1 credentials: 1 needs login",
        Duration::from_secs(5),
    );

    // A state change shows in STATUS.
    let mut import = work
        .tokenctl_cmd(&["import", "g"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    use std::io::Write;
    import
        .stdin
        .take()
        .unwrap()
        .write_all(b"glean_imported\n")
        .unwrap();
    assert!(import.wait().unwrap().success());
    wait_message(
        &got,
        |m| m == "STATUS=1 credentials: 1 fresh",
        Duration::from_secs(5),
    );

    // WATCHDOG=1 every half of WATCHDOG_USEC (1 s), each after a real check.
    std::thread::sleep(Duration::from_millis(2600));
    let pings: Vec<Instant> = got
        .lock()
        .unwrap()
        .iter()
        .filter(|(at, m)| m == "WATCHDOG=1" && *at >= ready_at)
        .map(|(at, _)| *at)
        .collect();
    assert!(pings.len() >= 4, "{} watchdog pings in ~3 s", pings.len());
    for pair in pings.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap >= Duration::from_millis(400) && gap <= Duration::from_millis(900),
            "watchdog pings {gap:?} apart, want ~500 ms"
        );
    }

    // SIGHUP: RELOADING=1 with MONOTONIC_USEC, then READY=1 again.
    let before = got.lock().unwrap().len();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        Signal::SIGHUP,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let after: Vec<String> = got.lock().unwrap()[before..]
            .iter()
            .map(|(_, m)| m.clone())
            .collect();
        let reloading = after.iter().position(|m| {
            m.starts_with("RELOADING=1\nMONOTONIC_USEC=")
                && m["RELOADING=1\nMONOTONIC_USEC=".len()..]
                    .parse::<u64>()
                    .is_ok_and(|v| v > 0)
        });
        if let Some(i) = reloading
            && after[i..].iter().any(|m| m == "READY=1")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no RELOADING/READY after SIGHUP: {after:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }

    // SIGTERM: STOPPING=1, then a clean exit.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        Signal::SIGTERM,
    )
    .unwrap();
    let status = common::wait_with_timeout(&mut child, Duration::from_secs(20));
    assert!(status.success());
    wait_message(&got, |m| m == "STOPPING=1", Duration::from_secs(1));
    common::assert_no_secret("tokend's log", &std::fs::read_to_string(&log).unwrap());
}

#[test]
fn socket_activation_serves_a_client_that_connected_before_tokend_started() {
    common::require_root();
    let work = Workdir::new();
    work.write_config("", &Glean::user("g").to_string());
    let activated = work.path().join("activated.sock");
    let log = work.path().join("tokend.log");
    let mut activate = Command::new("systemd-socket-activate")
        .arg("--listen")
        .arg(&activated)
        .arg("--setenv=TOKEND_LOG=info")
        .arg(env!("CARGO_BIN_EXE_tokend"))
        .arg("--config")
        .arg(work.config_path())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(work.path().join("activate.log")).unwrap())
        .spawn()
        .expect("run systemd-socket-activate (Debian package `systemd`)");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !activated.exists() {
        assert!(
            Instant::now() < deadline,
            "systemd-socket-activate did not listen"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // tokend has not started yet: nothing listens on its configured socket.
    assert!(!work.socket().exists());
    let out = work
        .tokenctl_cmd(&["headers", "g"])
        .env("TOKEND_SOCKET", &activated)
        .args(["--socket", activated.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("Authorization: Bearer {}\n", common::CANARY)
    );
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(activate.id() as i32),
        Signal::SIGTERM,
    );
    common::wait_with_timeout(&mut activate, Duration::from_secs(20));
    let logs = std::fs::read_to_string(&log).unwrap_or_default()
        + &std::fs::read_to_string(work.path().join("activate.log")).unwrap_or_default();
    assert!(
        logs.contains("serving the socket passed by systemd"),
        "{logs}"
    );
    assert!(
        activated.exists(),
        "the activated socket belongs to systemd, not tokend"
    );
}

fn credential(name: &str, scopes: &'static str, secret: &str) -> String {
    Glean::user(name)
        .scopes(scopes)
        .secret_file(secret)
        .to_string()
}

fn bearer(r: &tokend::proto::GetHeadersResponse) -> String {
    r.headers[0].value.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_apply_per_credential_while_clients_keep_calling() {
    common::require_root();
    let work = Workdir::new();
    for (name, value) in [
        ("a.secret", "glean_a"),
        ("b.secret", "glean_b1"),
        ("c.secret", "glean_c"),
    ] {
        common::write_secret(&work.path().join(name), value);
    }
    let config = |creds: &str| work.write_config("", creds);
    config(
        &[
            credential("a", r#"["SEARCH"]"#, "a.secret"),
            credential("b", r#"["SEARCH"]"#, "b.secret"),
            credential("c", r#"["SEARCH"]"#, "c.secret"),
        ]
        .concat(),
    );
    let daemon = Daemon::start(&work);

    // A watcher and a hammer on `a`, which no edit touches.
    let mut watch_a = daemon
        .client()
        .await
        .watch_headers(get("a"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        bearer(&watch_a.message().await.unwrap().unwrap()),
        "Bearer glean_a"
    );
    let mut watch_b = daemon
        .client()
        .await
        .watch_headers(get("b"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        bearer(&watch_b.message().await.unwrap().unwrap()),
        "Bearer glean_b1"
    );
    let mut watch_c = daemon
        .client()
        .await
        .watch_headers(get("c"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        bearer(&watch_c.message().await.unwrap().unwrap()),
        "Bearer glean_c"
    );
    let failures = Arc::new(AtomicUsize::new(0));
    let calls = Arc::new(AtomicUsize::new(0));
    let stop = tokio_util::sync::CancellationToken::new();
    let hammer = {
        let (failures, calls, stop) = (Arc::clone(&failures), Arc::clone(&calls), stop.clone());
        let mut c = daemon.client().await;
        tokio::spawn(async move {
            while !stop.is_cancelled() {
                match c.get_headers(get("a")).await {
                    Ok(r) if bearer(r.get_ref()) == "Bearer glean_a" => {}
                    _ => {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
                calls.fetch_add(1, Ordering::Relaxed);
            }
        })
    };

    // Add d, change b (scopes), remove c: the watcher on the file notices.
    common::write_secret(&work.path().join("d.secret"), "glean_d");
    config(
        &[
            credential("a", r#"["SEARCH"]"#, "a.secret"),
            credential("b", r#"["SEARCH", "CHAT"]"#, "b.secret"),
            credential("d", r#"["SEARCH"]"#, "d.secret"),
        ]
        .concat(),
    );
    daemon.wait_for_log("config reloaded");
    let mut c = daemon.client().await;
    assert_eq!(
        bearer(c.get_headers(get("d")).await.unwrap().get_ref()),
        "Bearer glean_d"
    );
    let e = c.get_headers(get("c")).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    // Its watcher ended, saying why.
    let end = tokio::time::timeout(Duration::from_secs(2), watch_c.message())
        .await
        .expect("c's stream ends");
    let e = end.expect_err("ends with a status");
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
    assert!(e.message().contains("`c` was removed"), "{}", e.message());
    let mut req = get("b");
    req.required_scopes = vec!["CHAT".into()];
    c.get_headers(req).await.expect("b now has CHAT");

    // Invalid edits are refused whole; the running config keeps serving.
    std::fs::write(work.config_path(), "[[credential]\nname = ").unwrap();
    daemon.wait_for_log("new config refused");
    config(
        &[
            credential("a", r#"["SEARCH"]"#, "a.secret"),
            credential("b", r#"["SEARCH", "TELEPORT"]"#, "b.secret"),
        ]
        .concat(),
    );
    let out = work.tokenctl(&["reload"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(
        err.contains("credential.b.scopes: unknown scope `TELEPORT`"),
        "{err}"
    );
    assert_eq!(
        bearer(c.get_headers(get("d")).await.unwrap().get_ref()),
        "Bearer glean_d"
    );

    // Back to a valid config; then rotate b's secret three ways.
    config(
        &[
            credential("a", r#"["SEARCH"]"#, "a.secret"),
            credential("b", r#"["SEARCH"]"#, "b.secret"),
        ]
        .concat(),
    );
    let out = work.tokenctl(&["reload"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let secret = work.path().join("b.secret");
    let rotate = |how: &str, value: &str| match how {
        "in place" => std::fs::write(&secret, format!("{value}\n")).unwrap(),
        "by rename" => {
            let tmp = work.path().join("b.secret.tmp");
            common::write_secret(&tmp, value);
            std::fs::rename(&tmp, &secret).unwrap();
        }
        _ => {
            let target = work.path().join(format!("{value}.target"));
            common::write_secret(&target, value);
            let link = work.path().join("b.secret.link");
            std::os::unix::fs::symlink(&target, &link).unwrap();
            std::fs::rename(&link, &secret).unwrap();
        }
    };
    for (i, how) in ["in place", "by rename", "by symlink swap"]
        .into_iter()
        .enumerate()
    {
        let value = format!("glean_b_rotated_{i}");
        let started = Instant::now();
        rotate(how, &value);
        let want = format!("Bearer {value}");
        loop {
            let got = bearer(c.get_headers(get("b")).await.unwrap().get_ref());
            if got == want {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(1),
                "{how}: still {got} after 1 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The watcher on b follows the rotation.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        loop {
            let m = tokio::time::timeout_at(deadline, watch_b.message())
                .await
                .unwrap_or_else(|_| panic!("{how}: the watcher on b saw no rotation"))
                .unwrap()
                .expect("b's stream stays open");
            if bearer(&m) == want {
                break;
            }
        }
    }

    stop.cancel();
    hammer.await.unwrap();
    assert!(calls.load(Ordering::Relaxed) > 100, "the hammer barely ran");
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "calls for the unchanged credential failed"
    );
    // The watcher on a neither ended nor saw a spurious update.
    let quiet = tokio::time::timeout(Duration::from_millis(300), watch_a.message()).await;
    assert!(quiet.is_err(), "a's stream changed: {quiet:?}");
}
