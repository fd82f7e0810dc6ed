//! Stock Python gRPC for the interop tests: a venv under the target's tmp
//! directory with `tests/interop/python/requirements.txt` (the latest grpcio
//! and friends from PyPI) installed, and Python stubs of
//! `proto/tokend/v1/tokend.proto` generated with `grpc_tools.protoc`.
//!
//! Made on first use, and again whenever the requirements file or the
//! `python3` it was made with changes (the stubs also when the proto does),
//! serialised across threads and test processes with a lock file. A machine
//! without Python, venv or pip, or without PyPI, fails the test with the
//! command that installs what is missing: it never skips.

#![allow(dead_code)] // each test binary uses a different subset

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Instant;

use sha2::Digest as _;

/// How to get a Python that can make venvs with pip, for the messages.
const INSTALL_PYTHON: &str = "apt-get install python3 python3-venv python3-pip";

/// The venv and the generated stubs, ready.
pub struct Python {
    pub venv: PathBuf,
    /// The directory holding the `tokend.v1` stub package; on PYTHONPATH.
    pub stubs: PathBuf,
}

impl Python {
    /// The venv and stubs, made or brought up to date on first use in this
    /// process.
    pub fn get() -> &'static Self {
        static PYTHON: OnceLock<Python> = OnceLock::new();
        PYTHON.get_or_init(ensure)
    }

    /// An executable the venv installed, e.g. `python` or `grpcurl`.
    pub fn bin(&self, name: &str) -> PathBuf {
        self.venv.join("bin").join(name)
    }

    /// The venv's python running `tests/interop/python/SCRIPT ARGS`, with
    /// the stubs importable. Nothing else in the environment changes.
    pub fn script(&self, script: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new(self.bin("python"));
        cmd.arg(interop_dir().join(script))
            .args(args)
            .env("PYTHONPATH", &self.stubs)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env_remove("PYTHONHOME");
        cmd
    }
}

pub fn interop_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/python")
}

fn repo_file(path: &str) -> (PathBuf, Vec<u8>) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    (path, bytes)
}

fn sha256_hex(parts: &[&[u8]]) -> String {
    let mut hash = sha2::Sha256::new();
    for part in parts {
        hash.update((part.len() as u64).to_le_bytes());
        hash.update(part);
    }
    hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// `cmd`'s output; a command that cannot start at all fails with `missing`.
fn run(cmd: &mut Command, missing: &str) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {:?} ({e}): {missing}", cmd.get_program()))
}

#[track_caller]
fn check(out: &Output, what: &str, fix: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({}): {fix}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn stamp_matches(stamp: &Path, key: &str) -> bool {
    std::fs::read_to_string(stamp).is_ok_and(|s| s.trim() == key)
}

fn ensure() -> Python {
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(&tmp).expect("create the target's tmp dir");
    let venv = tmp.join("py-venv");
    let stubs = tmp.join("py-stubs");

    let lock = std::fs::File::create(tmp.join("py-venv.lock")).expect("create the venv's lock");
    let _guard = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .expect("lock the venv");

    // Which python3 (a pyenv or distro switch breaks a venv), and the
    // requirements: either changing makes the venv anew.
    let out = run(
        Command::new("python3").args([
            "-c",
            "import sys; print(sys.version); print(sys.base_prefix)",
        ]),
        &format!("the interop tests need Python 3 with venv and pip: `{INSTALL_PYTHON}`"),
    );
    check(&out, "python3", &format!("`{INSTALL_PYTHON}`"));
    let (requirements, req_bytes) = repo_file("tests/interop/python/requirements.txt");
    let venv_key = sha256_hex(&[&out.stdout, &req_bytes]);
    let venv_stamp = venv.join(".tokend-requirements.sha256");
    if !stamp_matches(&venv_stamp, &venv_key) {
        let started = Instant::now();
        if venv.exists() {
            std::fs::remove_dir_all(&venv).expect("remove the old venv");
        }
        let out = run(
            Command::new("python3").arg("-m").arg("venv").arg(&venv),
            INSTALL_PYTHON,
        );
        check(
            &out,
            &format!("`python3 -m venv {}`", venv.display()),
            &format!("install venv and pip: `{INSTALL_PYTHON}`"),
        );
        let mut pip = Command::new(venv.join("bin/python"));
        pip.args([
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "--no-input",
            "--quiet",
            "-r",
        ])
        .arg(&requirements);
        let out = run(&mut pip, INSTALL_PYTHON);
        check(
            &out,
            &format!(
                "`{} -m pip install -r {}`",
                venv.join("bin/python").display(),
                requirements.display()
            ),
            &format!(
                "it needs pip and PyPI (`{INSTALL_PYTHON}`); run the same command by hand to see why"
            ),
        );
        std::fs::write(&venv_stamp, &venv_key).expect("write the venv's stamp");
        eprintln!(
            "made {} in {:.1}s",
            venv.display(),
            started.elapsed().as_secs_f64()
        );
    }

    // The stubs: anew when the proto or the venv (grpcio-tools) changes.
    let (_, proto_bytes) = repo_file("proto/tokend/v1/tokend.proto");
    let stubs_key = sha256_hex(&[venv_key.as_bytes(), &proto_bytes]);
    let stubs_stamp = stubs.join(".tokend-stubs.sha256");
    if !stamp_matches(&stubs_stamp, &stubs_key) {
        let fresh = tmp.join("py-stubs.new");
        if fresh.exists() {
            std::fs::remove_dir_all(&fresh).expect("remove half-made stubs");
        }
        std::fs::create_dir_all(&fresh).expect("create the stubs' dir");
        let proto_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("proto");
        let mut protoc = Command::new(venv.join("bin/python"));
        protoc
            .args(["-m", "grpc_tools.protoc", "-I"])
            .arg(&proto_dir)
            .arg(format!("--python_out={}", fresh.display()))
            .arg(format!("--grpc_python_out={}", fresh.display()))
            .arg("tokend/v1/tokend.proto");
        let out = run(&mut protoc, INSTALL_PYTHON);
        check(
            &out,
            "`python -m grpc_tools.protoc` on proto/tokend/v1/tokend.proto",
            "is grpcio-tools in tests/interop/python/requirements.txt?",
        );
        std::fs::write(fresh.join(".tokend-stubs.sha256"), &stubs_key)
            .expect("write the stubs' stamp");
        if stubs.exists() {
            std::fs::remove_dir_all(&stubs).expect("remove the old stubs");
        }
        std::fs::rename(&fresh, &stubs).expect("move the stubs in place");
    }
    Python { venv, stubs }
}
