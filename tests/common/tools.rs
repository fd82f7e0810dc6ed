//! Programs a test needs from Debian's packages (groff, zsh, fish, dpkg's
//! tools): installed with apt-get when missing, as `.ci/run` installs
//! util-linux, or else the test fails saying what to install. Never skipped.

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Mutex;

/// One apt-get at a time within a test binary; apt's own lock (waited for,
/// not failed on) orders it with other processes.
static APT: Mutex<()> = Mutex::new(());

/// Whether `program` is an executable file in a `PATH` directory.
pub fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            let file = dir.join(program);
            file.is_file() && executable(&file)
        })
    })
}

fn executable(file: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    file.metadata()
        .is_ok_and(|m| m.permissions().mode() & 0o111 != 0)
}

/// Makes sure every `(program, Debian package)` is on `PATH`, installing the
/// packages of missing ones with apt-get; fails the test if it cannot.
pub fn require(tools: &[(&str, &str)]) {
    let missing = |tools: &[(&str, &str)]| -> Vec<String> {
        let mut packages: Vec<String> = tools
            .iter()
            .filter(|(program, _)| !on_path(program))
            .map(|(_, package)| (*package).to_owned())
            .collect();
        packages.dedup();
        packages
    };
    if missing(tools).is_empty() {
        return;
    }
    let _one = APT.lock().unwrap_or_else(|e| e.into_inner());
    let packages = missing(tools);
    if packages.is_empty() {
        return;
    }
    let can = nix::unistd::geteuid().is_root() && on_path("apt-get");
    let installed = can
        && (apt(&["install", "-y", "-qq"], &packages) || {
            // The package lists may be missing or stale on a fresh machine.
            apt(&["update", "-qq"], &[]) && apt(&["install", "-y", "-qq"], &packages)
        });
    let still = missing(tools);
    assert!(
        installed && still.is_empty(),
        "this test needs {} from Debian's {}; {}",
        tools
            .iter()
            .map(|(program, _)| *program)
            .collect::<Vec<_>>()
            .join(", "),
        packages.join(", "),
        if can {
            format!(
                "apt-get could not install them: run `apt-get install {}`",
                still.join(" ")
            )
        } else {
            format!("as root, run `apt-get install {}`", packages.join(" "))
        }
    );
}

/// `apt-get ARGS PACKAGES`, waiting for dpkg's lock rather than failing.
fn apt(args: &[&str], packages: &[String]) -> bool {
    Command::new("apt-get")
        .args(["-o", "DPkg::Lock::Timeout=600"])
        .args(args)
        .args(packages)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs `cmd`, failing the test with its output unless it succeeds.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("run a command");
    assert!(
        out.status.success(),
        "{cmd:?} failed with {}:\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// [`run`]'s standard output, as text.
pub fn stdout(cmd: &mut Command) -> String {
    String::from_utf8(run(cmd).stdout).expect("UTF-8")
}
