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

#[test]
fn one_uid_at_its_connection_cap_does_not_lock_out_others() {
    common::require_root();
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
