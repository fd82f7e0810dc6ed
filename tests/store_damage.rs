//! The store of a daemon killed with SIGKILL: started with the wrong key,
//! tokend refuses it without changing a byte (redb's recovery never runs
//! for a key that does not open it); damaged, it is refused as damaged, not
//! as a wrong key and without a panic; with the right key it is recovered.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{CANARY, Daemon, Workdir, assert_no_secret};

fn credentials(work: &Workdir) -> String {
    format!(
        r#"{}
[[credential]]
name = "imported"
kind = "glean_token"
permission = "user"
scopes = ["SEARCH"]
secret = {{ store = true }}
allow = {{ uids = [0] }}
"#,
        work.store_section()
    )
}

/// `tokend` run to its exit, which a refused store makes immediate: its
/// exit status and stderr. Killed, failing the test, if it runs on.
fn start(work: &Workdir) -> (ExitStatus, String) {
    let log = work.path().join("refused.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_tokend"))
        .arg("--config")
        .arg(work.config_path())
        .env_remove("TOKEND_SOCKET")
        .env_remove("CREDENTIALS_DIRECTORY")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let status = common::wait_with_timeout(&mut child, Duration::from_secs(20));
    let err = std::fs::read_to_string(&log).unwrap();
    assert_no_secret("tokend's stderr", &err);
    (status, err)
}

/// The file's bytes and mtime, after setting the mtime far in the past so
/// that any write shows in it.
fn pin(path: &Path) -> (Vec<u8>, SystemTime) {
    let past = UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(past)
        .unwrap();
    state(path)
}

fn state(path: &Path) -> (Vec<u8>, SystemTime) {
    (
        std::fs::read(path).unwrap(),
        std::fs::metadata(path).unwrap().modified().unwrap(),
    )
}

#[test]
fn a_killed_daemons_store_is_never_changed_by_a_wrong_key_and_damage_is_not_a_wrong_key() {
    common::require_root();
    let work = Workdir::new();
    work.write_config("", &credentials(&work));
    let store = work.store_path();
    let key = work.path().join("store.key");

    // A daemon stores a secret, then is killed with the store open.
    let mut daemon = Daemon::start(&work);
    let mut import = work
        .tokenctl_cmd(&["import", "imported"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    import
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{CANARY}\n").as_bytes())
        .unwrap();
    let out = import.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    daemon.signal(nix::sys::signal::Signal::SIGKILL);
    daemon.wait();
    // The kill left the store needing redb's recovery, which writes.
    assert!(
        matches!(
            redb::ReadOnlyDatabase::open(&store),
            Err(redb::DatabaseError::RepairAborted)
        ),
        "the killed daemon's store needs no recovery"
    );
    let original = std::fs::read(&store).unwrap();
    let right_key = std::fs::read(&key).unwrap();
    let wrong_key = [0x5a; 32];

    // The wrong key: refused as a wrong key, the store not touched.
    std::fs::write(&key, wrong_key).unwrap();
    let before = pin(&store);
    let (status, err) = start(&work);
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains("cannot be decrypted with key")
            && err.contains(&key.display().to_string())
            && err.contains("left it untouched"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        state(&store) == before,
        "the wrong key changed the killed daemon's store"
    );

    // The same store with the page holding the key-check record zeroed (a
    // page both of redb's commit slots use, so its recovery cannot fall back
    // to the other): damaged, whichever key, never a panic (exit 101), never
    // a change.
    let mut damaged = original.clone();
    let pages: Vec<usize> = damaged
        .windows(b"key_check".len())
        .enumerate()
        .filter(|(_, w)| *w == b"key_check")
        .map(|(i, _)| i / 4096 * 4096)
        .collect();
    assert!(!pages.is_empty());
    for page in pages {
        damaged[page..page + 4096].fill(0);
    }
    std::fs::write(&store, &damaged).unwrap();
    let before = pin(&store);
    for (which, bytes) in [("right", &right_key[..]), ("wrong", &wrong_key[..])] {
        std::fs::write(&key, bytes).unwrap();
        let (status, err) = start(&work);
        assert_eq!(status.code(), Some(1), "{which} key: {err}");
        assert!(
            err.contains(&format!("store {} is damaged", store.display()))
                && err.contains("Do not delete it")
                && err.contains("[store] path"),
            "{which} key: {err}"
        );
        assert!(!err.contains("another key"), "{which} key: {err}");
        assert!(!err.contains("panicked"), "{which} key: {err}");
        assert!(
            state(&store) == before,
            "{which} key changed the damaged store"
        );
    }

    // The right key on the undamaged store: recovered, the secret served.
    std::fs::write(&store, &original).unwrap();
    std::fs::write(&key, &right_key).unwrap();
    let mut daemon = Daemon::start(&work);
    let out = work.tokenctl(&["headers", "imported"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("Authorization: Bearer {CANARY}\n"),
        "{out:?}"
    );
    assert!(daemon.stop().success());
}
