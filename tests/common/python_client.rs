//! The Python client package `clients/python` (`tokend-client`) installed
//! into the interop venv of `common::python`, as a user installs it:
//! `pip install ./clients/python[httpx,test]`, which generates its gRPC stubs
//! from `proto/` during the build. With it, the official Glean SDK
//! (`glean-api-client`, the latest from PyPI) for the emulator tests.
//!
//! The package is installed from a copy of exactly what a clean checkout
//! holds of it (its sources, the proto and Cargo.toml, without build output
//! or caches), under the target's tmp directory, so the build's leftovers
//! never land in the source tree. Installed on first use and again whenever
//! any of those files (or the venv) changes, under the venv's lock. A
//! machine without Python, pip or PyPI fails the test with the command to
//! run by hand: it never skips.

#![allow(dead_code)] // each test binary uses a different subset

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Instant;

use sha2::Digest as _;

use super::python::Python;

/// What the venv gets besides the package: the SDK the emulator tests drive.
const EXTRA_REQUIREMENTS: &[&str] = &["glean-api-client"];

/// The installed package.
pub struct PythonClient {
    /// The venv's python, with tokend-client, httpx, pytest and
    /// glean-api-client installed.
    pub python: PathBuf,
}

impl PythonClient {
    /// The package, installed or brought up to date on first use in this
    /// process.
    pub fn get() -> &'static Self {
        static CLIENT: OnceLock<PythonClient> = OnceLock::new();
        CLIENT.get_or_init(ensure)
    }

    /// The venv's python running `clients/python/tests/live/live_client.py
    /// ARGS` against the daemon on `socket` (as `TOKEND_SOCKET`). Only the
    /// installed package is importable: no PYTHONPATH.
    pub fn live(&self, socket: &Path, args: &[&str]) -> Command {
        let mut cmd = self.python_cmd();
        cmd.arg(package_dir().join("tests/live/live_client.py"))
            .args(args)
            .env("TOKEND_SOCKET", socket);
        cmd
    }

    /// `python -m pytest` on the package's own suite, run from
    /// `clients/python` against the installed package, writing nothing into
    /// the tree (no bytecode, no cache).
    pub fn pytest(&self) -> Command {
        let mut cmd = self.python_cmd();
        cmd.args(["-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfEs"])
            .current_dir(package_dir())
            .env_remove("TOKEND_SOCKET");
        cmd
    }

    fn python_cmd(&self) -> Command {
        let mut cmd = Command::new(&self.python);
        cmd.env("PYTHONDONTWRITEBYTECODE", "1")
            .env_remove("PYTHONPATH")
            .env_remove("PYTHONHOME");
        cmd
    }
}

/// `clients/python` in the source tree.
pub fn package_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/python")
}

/// Build output and caches, which a clean checkout does not have.
fn skipped(name: &str) -> bool {
    matches!(
        name,
        "build" | "dist" | "__pycache__" | ".pytest_cache" | ".mypy_cache"
    ) || name.ends_with(".egg-info")
        || name.ends_with(".pyc")
        // Stubs an editable install generated into the tree.
        || name.starts_with("tokend_pb2")
}

/// Every file of `dir` (relative to `root`) that a clean checkout holds.
fn files_under(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display()));
    for entry in entries {
        let entry = entry.expect("read a directory entry");
        let name = entry.file_name();
        if skipped(&name.to_string_lossy()) {
            continue;
        }
        let path = entry.path();
        let kind = entry.file_type().expect("stat a directory entry");
        if kind.is_dir() {
            files_under(root, &path, out);
        } else if kind.is_file() {
            out.push(path.strip_prefix(root).expect("under the root").to_owned());
        }
    }
}

/// The files the package is built from, relative to the repository: the
/// package's own, the proto and Cargo.toml (the version).
fn sources() -> Vec<PathBuf> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    files_under(repo, &package_dir(), &mut files);
    files.sort();
    files.push("proto/tokend/v1/tokend.proto".into());
    files.push("Cargo.toml".into());
    files
}

fn ensure() -> PythonClient {
    let venv = &Python::get().venv;
    let python = venv.join("bin/python");
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let lock = std::fs::File::create(tmp.join("py-venv.lock")).expect("create the venv's lock");
    let _guard = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .expect("lock the venv");

    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let files = sources();
    let mut hash = sha2::Sha256::new();
    for extra in EXTRA_REQUIREMENTS {
        hash.update(extra.as_bytes());
        hash.update([0]);
    }
    let mut contents = Vec::with_capacity(files.len());
    for file in &files {
        let bytes = std::fs::read(repo.join(file))
            .unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
        let name = file.to_string_lossy();
        for part in [name.as_bytes(), &bytes] {
            hash.update((part.len() as u64).to_le_bytes());
            hash.update(part);
        }
        contents.push(bytes);
    }
    let key: String = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
    let stamp = venv.join(".tokend-client.sha256");
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s.trim() == key) {
        return PythonClient { python };
    }

    let started = Instant::now();
    let stage = tmp.join("py-client-src");
    if stage.exists() {
        std::fs::remove_dir_all(&stage).expect("remove the old copy of clients/python");
    }
    for (file, bytes) in files.iter().zip(&contents) {
        let to = stage.join(file);
        std::fs::create_dir_all(to.parent().expect("a parent")).expect("create a staged dir");
        std::fs::write(&to, bytes).unwrap_or_else(|e| panic!("write {}: {e}", to.display()));
    }
    let package = format!("{}[httpx,test]", stage.join("clients/python").display());
    let mut pip = Command::new(&python);
    pip.args([
        "-m",
        "pip",
        "install",
        "--disable-pip-version-check",
        "--no-input",
        "--quiet",
    ])
    .arg(&package)
    .args(EXTRA_REQUIREMENTS)
    .env_remove("PYTHONPATH");
    let by_hand = format!(
        "{} -m pip install './clients/python[httpx,test]' {}",
        python.display(),
        EXTRA_REQUIREMENTS.join(" ")
    );
    let out = pip
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} ({e}); run `{by_hand}`", python.display()));
    assert!(
        out.status.success(),
        "installing tokend-client failed ({}); it needs pip and PyPI (grpcio-tools is \
         downloaded for the build). Run it by hand from the repository to see why:\n  {by_hand}\n\
         --- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(&stamp, &key).expect("write the package's stamp");
    eprintln!(
        "installed tokend-client into {} in {:.1}s",
        venv.display(),
        started.elapsed().as_secs_f64()
    );
    PythonClient { python }
}
