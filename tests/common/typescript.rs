//! The TypeScript client package `clients/typescript` (`@tokend/client`),
//! built for the tests on first use: `npm ci` when its package-lock.json
//! changed since the last install, then `npm run build` and `npm run
//! build:test` when any of its sources (or the proto it copies) changed
//! since the last build. Serialised across threads and test processes with
//! a lock file, like `common::node`.

#![allow(dead_code)] // each test binary uses a different subset

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use sha2::Digest as _;

const INSTALL_NODE: &str = "apt-get install nodejs npm";

/// The package's directory.
pub fn package_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/typescript")
}

/// The proto the package copies at build time.
pub fn proto() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("proto/tokend/v1/tokend.proto")
}

/// `npm ARGS` in the package's directory, the package installed and built.
pub fn npm(args: &[&str]) -> Command {
    ensure_built();
    let mut cmd = Command::new("npm");
    cmd.args(args).current_dir(package_dir());
    cmd
}

/// `node clients/typescript/build-test/SCRIPT ARGS`, the package built.
pub fn script(script: &str, args: &[&str]) -> Command {
    ensure_built();
    let mut cmd = Command::new("node");
    cmd.arg(package_dir().join("build-test").join(script))
        .args(args)
        .env_remove("TOKEND_SOCKET");
    cmd
}

/// Runs `npm ci` and the builds unless their inputs are unchanged since the
/// last run (stamps in `node_modules/`).
pub fn ensure_built() {
    static DONE: Mutex<bool> = Mutex::new(false);
    let mut done = DONE.lock().unwrap_or_else(|e| e.into_inner());
    if *done {
        return;
    }
    match Command::new("node").arg("--version").output() {
        Ok(out) if out.status.success() => {
            let version = String::from_utf8_lossy(&out.stdout);
            let major: u32 = version
                .trim()
                .trim_start_matches('v')
                .split('.')
                .next()
                .and_then(|m| m.parse().ok())
                .unwrap_or(0);
            assert!(
                major >= 20,
                "the TypeScript client needs Node.js 20 or later, found {}: `{INSTALL_NODE}`",
                version.trim()
            );
        }
        other => panic!(
            "cannot run `node --version` ({other:?}): the TypeScript client's tests need \
             Node.js 20 or later and npm: `{INSTALL_NODE}`"
        ),
    }
    let dir = package_dir();
    let lock = std::fs::File::create(dir.join(".install.lock")).expect("create install lock");
    let _guard = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .expect("lock clients/typescript for npm ci");

    let installed = dir.join("node_modules/.tokend-lock.sha256");
    let lock_key = digest(&[dir.join("package-lock.json")]);
    if !std::fs::read_to_string(&installed).is_ok_and(|s| s.trim() == lock_key) {
        run(&dir, &["ci", "--no-audit", "--no-fund"]);
        std::fs::write(&installed, &lock_key).expect("write node_modules' stamp");
    }

    let built = dir.join("node_modules/.tokend-build.sha256");
    let build_key = digest(&sources(&dir));
    let outputs = [
        "dist/index.js",
        "dist/index.d.ts",
        "build-test/daemon_script.js",
    ];
    if std::fs::read_to_string(&built).is_ok_and(|s| s.trim() == build_key)
        && outputs.iter().all(|o| dir.join(o).exists())
    {
        *done = true;
        return;
    }
    // A build that fails part way leaves outputs of the sources it failed
    // on: no stamp may vouch for them.
    let _ = std::fs::remove_file(&built);
    run(&dir, &["run", "build"]);
    run(&dir, &["run", "build:test"]);
    std::fs::write(&built, &build_key).expect("write the build stamp");
    *done = true;
}

/// Every input of the builds: the package's own files (not its outputs)
/// and the proto it copies.
fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut files = vec![proto()];
    for name in [
        "package.json",
        "package-lock.json",
        "tsconfig.json",
        "tsconfig.test.json",
    ] {
        files.push(dir.join(name));
    }
    for sub in ["src", "test", "scripts"] {
        collect(&dir.join(sub), &mut files);
    }
    files.sort();
    files
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect(&path, out);
        } else {
            out.push(path);
        }
    }
}

/// SHA-256 over the files' paths and contents, in hex.
fn digest(files: &[PathBuf]) -> String {
    let mut hash = sha2::Sha256::new();
    for file in files {
        hash.update(file.to_string_lossy().as_bytes());
        hash.update([0]);
        let content =
            std::fs::read(file).unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
        hash.update((content.len() as u64).to_le_bytes());
        hash.update(&content);
    }
    hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn run(dir: &Path, args: &[&str]) {
    let out = Command::new("npm")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run npm ({e}): the TypeScript client's tests need Node.js 20 or later \
                 and npm: `{INSTALL_NODE}`"
            )
        });
    assert!(
        out.status.success(),
        "`npm {}` in {} failed (needs Node.js 20 or later, npm and the npm registry; \
         `{INSTALL_NODE}`, then `cd clients/typescript && npm ci && npm run build`):\n{}\n{}",
        args.join(" "),
        dir.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
