//! Prometheus' `promtool`, for checking and unit-testing the alert rules in
//! `contrib/prometheus`: `$PROMTOOL` if set, else `promtool` on PATH, else
//! the one in Debian's `prometheus` package, fetched with `apt-get download`
//! (after an `apt-get update` when the package lists are empty) and unpacked
//! with `dpkg-deb -x` into the target's tmp directory. Nothing is installed
//! and no service is started.
//!
//! Fetched on first use, serialised across threads and test processes with
//! a lock file, and moved into place whole (a rename), so a half-unpacked
//! package is never used. A machine where none of that works fails the test
//! with what to install: it never skips.

#![allow(dead_code)] // each test binary uses a different subset

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Instant;

/// What to do when promtool cannot be had, for the messages.
const INSTALL: &str = "put Prometheus' promtool on PATH or in $PROMTOOL: \
     `apt-get install prometheus` (Debian, Ubuntu), or promtool from a \
     prometheus-*.linux-*.tar.gz of https://prometheus.io/download/";

/// The path of a working promtool, found or fetched on first use in this
/// process.
pub fn promtool() -> &'static Path {
    static PROMTOOL: OnceLock<PathBuf> = OnceLock::new();
    PROMTOOL.get_or_init(ensure)
}

/// `promtool ARGS` run in the repository's root; its output.
pub fn run(args: &[&str]) -> Output {
    Command::new(promtool())
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} ({e})", promtool().display()))
}

/// Whether `path` is a promtool that runs.
fn works(path: &Path) -> bool {
    Command::new(path)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file() && works(p))
}

fn ensure() -> PathBuf {
    if let Some(path) = std::env::var_os("PROMTOOL").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        assert!(
            works(&path),
            "$PROMTOOL={} does not run `--version`: {INSTALL}",
            path.display()
        );
        return path;
    }
    if let Some(path) = on_path("promtool") {
        return path;
    }

    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(&tmp).expect("create the target's tmp dir");
    let root = tmp.join("promtool");
    let promtool = root.join("usr/bin/promtool");

    let lock = std::fs::File::create(tmp.join("promtool.lock")).expect("create promtool's lock");
    let _guard = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .expect("lock promtool's directory");
    if works(&promtool) {
        return promtool;
    }

    let started = Instant::now();
    let staging = tmp.join("promtool.new");
    if staging.exists() {
        std::fs::remove_dir_all(&staging).expect("remove a half-made promtool.new");
    }
    std::fs::create_dir_all(&staging).expect("create promtool.new");
    let download = || {
        apt(Command::new("apt-get")
            .args(["download", "-qq", "prometheus"])
            .current_dir(&staging))
    };
    let mut out = download();
    if !out.status.success() {
        // A fresh machine or container has no package lists yet.
        let update = apt(Command::new("apt-get").args(["update", "-qq"]));
        check(&update, "`apt-get update -qq`", "it needs root and network");
        out = download();
    }
    check(
        &out,
        "`apt-get download prometheus`",
        "is `prometheus` in the configured apt sources?",
    );
    let deb = std::fs::read_dir(&staging)
        .expect("read promtool.new")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .unwrap_or_else(|| panic!("apt-get download left no .deb in {}", staging.display()));
    let unpacked = staging.join("root");
    let out = apt(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked));
    check(&out, &format!("`dpkg-deb -x {}`", deb.display()), "");
    assert!(
        works(&unpacked.join("usr/bin/promtool")),
        "{} holds no working usr/bin/promtool: {INSTALL}",
        deb.display()
    );
    if root.exists() {
        std::fs::remove_dir_all(&root).expect("remove the old promtool");
    }
    std::fs::rename(&unpacked, &root).expect("move promtool in place");
    let _ = std::fs::remove_dir_all(&staging);
    eprintln!(
        "fetched {} from {} in {:.1}s",
        promtool.display(),
        deb.file_name().unwrap_or_default().to_string_lossy(),
        started.elapsed().as_secs_f64()
    );
    promtool
}

/// `cmd`'s output; a command that cannot start at all (no apt) fails with
/// what to install.
fn apt(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| {
        panic!(
            "promtool is not on PATH, and {:?} cannot run ({e}) to fetch it: {INSTALL}",
            cmd.get_program()
        )
    })
}

#[track_caller]
fn check(out: &Output, what: &str, hint: &str) {
    assert!(
        out.status.success(),
        "promtool is not on PATH, and fetching it failed: {what} ({}) {hint}\n{INSTALL}\n\
         --- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
