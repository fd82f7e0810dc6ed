//! Stock Node.js gRPC (`@grpc/grpc-js` with `@grpc/proto-loader`) for the
//! interop tests: `npm ci` in `tests/interop/node` on first use, and again
//! whenever its package-lock.json changes; serialised across threads and
//! test processes with a lock file.

#![allow(dead_code)] // each test binary uses a different subset

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use sha2::Digest as _;

const INSTALL_NODE: &str = "apt-get install nodejs npm";

pub fn node_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/node")
}

/// `node tests/interop/node/SCRIPT ARGS`, its packages installed.
pub fn script(script: &str, args: &[&str]) -> Command {
    ensure_installed();
    let mut cmd = Command::new("node");
    cmd.arg(node_dir().join(script)).args(args);
    cmd
}

/// Runs `npm ci` in `tests/interop/node` unless the packages of its current
/// lock file are installed.
fn ensure_installed() {
    static DONE: Mutex<bool> = Mutex::new(false);
    let mut done = DONE.lock().unwrap_or_else(|e| e.into_inner());
    if *done {
        return;
    }
    let node = Command::new("node").arg("--version").output();
    match node {
        Ok(out) if out.status.success() => {}
        other => panic!(
            "cannot run `node --version` ({other:?}): the interop tests need Node.js 18 or \
             later and npm: `{INSTALL_NODE}`"
        ),
    }
    let dir = node_dir();
    let lock = std::fs::File::create(dir.join(".install.lock")).expect("create install lock");
    let _guard = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .expect("lock tests/interop/node for npm ci");
    let package_lock =
        std::fs::read(dir.join("package-lock.json")).expect("read package-lock.json");
    let key: String = sha2::Sha256::digest(&package_lock)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let stamp = dir.join("node_modules/.tokend-lock.sha256");
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s.trim() == key) {
        *done = true;
        return;
    }
    let out = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--prefix"])
        .arg(&dir)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run npm ({e}): the interop tests need Node.js 18 or later and npm: \
                 `{INSTALL_NODE}`"
            )
        });
    assert!(
        out.status.success(),
        "`npm ci --prefix {}` failed (needs Node.js 18 or later, npm and the npm registry; \
         `{INSTALL_NODE}`):\n{}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(&stamp, key).expect("write node_modules' stamp");
    *done = true;
}
