//! The Debian package: `dist/build-deb` packages this test run's own
//! binaries (no second, release build) and the package holds what it must,
//! with sane modes; its maintainer scripts parse, call systemd only when
//! it is there, and never enable or start tokend; its units point at
//! /usr/bin and pass `systemd-analyze verify`. On CI (`CI=true`), or when
//! `TOKEND_TEST_DPKG_INSTALL=1` says installing the package `tokend` here is
//! harmless, it is installed without a running systemd, checked, and purged.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use common::tools;

const REPO: &str = env!("CARGO_MANIFEST_DIR");

use common::tools::{run, stdout};

/// The directory holding this test run's tokend and tokenctl, and the
/// target directory above it (where cargo-deb is installed once).
fn build_dirs() -> (PathBuf, PathBuf) {
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_tokend"))
        .parent()
        .unwrap()
        .to_owned();
    let target = bin_dir.parent().unwrap().to_owned();
    (bin_dir, target)
}

/// Builds the package into `out` and returns its path.
fn build_deb(out: &Path) -> PathBuf {
    tools::require(&[
        ("dpkg-deb", "dpkg"),
        ("dpkg-shlibdeps", "dpkg-dev"),
        ("xz", "xz-utils"),
        ("strip", "binutils"),
        ("flock", "util-linux"),
    ]);
    let (bin_dir, target) = build_dirs();
    let started = Instant::now();
    run(Command::new(Path::new(REPO).join("dist/build-deb"))
        .arg("--bin-dir")
        .arg(&bin_dir)
        .arg("--output")
        .arg(out)
        .args(["--", "--fast", "--quiet"])
        .env("CARGO_TARGET_DIR", &target));
    eprintln!("dist/build-deb took {:.1?}", started.elapsed());
    let debs: Vec<PathBuf> = std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .collect();
    assert_eq!(debs.len(), 1, "{debs:?}");
    debs.into_iter().next().unwrap()
}

/// Every file the package installs, with its mode as `dpkg-deb -c` shows it.
const FILES: &[(&str, &str)] = &[
    ("/usr/bin/tokend", "-rwxr-xr-x"),
    ("/usr/bin/tokenctl", "-rwxr-xr-x"),
    ("/usr/lib/systemd/system/tokend.service", "-rw-r--r--"),
    ("/usr/lib/systemd/system/tokend.socket", "-rw-r--r--"),
    ("/usr/lib/systemd/user/tokend.service", "-rw-r--r--"),
    ("/usr/lib/sysusers.d/tokend.conf", "-rw-r--r--"),
    ("/usr/lib/tmpfiles.d/tokend.conf", "-rw-r--r--"),
    ("/usr/share/doc/tokend/README.md", "-rw-r--r--"),
    ("/usr/share/doc/tokend/copyright", "-rw-r--r--"),
    (
        "/usr/share/doc/tokend/examples/tokend.example.toml",
        "-rw-r--r--",
    ),
    ("/usr/share/doc/tokend/examples/tokend.toml", "-rw-r--r--"),
    ("/usr/share/man/man1/tokenctl.1.gz", "-rw-r--r--"),
    ("/usr/share/man/man5/tokend.toml.5.gz", "-rw-r--r--"),
    ("/usr/share/man/man8/tokend.8.gz", "-rw-r--r--"),
    (
        "/usr/share/bash-completion/completions/tokenctl",
        "-rw-r--r--",
    ),
    ("/usr/share/zsh/vendor-completions/_tokenctl", "-rw-r--r--"),
    (
        "/usr/share/fish/vendor_completions.d/tokenctl.fish",
        "-rw-r--r--",
    ),
];

/// The package's files (not directories) by path, with mode and owner.
fn listing(deb: &Path) -> BTreeMap<String, (String, String)> {
    let text = stdout(Command::new("dpkg-deb").arg("-c").arg(deb));
    let mut files = BTreeMap::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert!(fields.len() >= 6, "{line}");
        let (mode, owner, path) = (fields[0], fields[1], fields[5]);
        assert_eq!(owner, "0/0", "not root's: {line}");
        assert!(
            !mode.contains(['s', 'S', 't', 'T']) && mode.as_bytes()[8] != b'w',
            "setuid, sticky or world-writable: {line}"
        );
        let path = path.trim_start_matches('.');
        if mode.starts_with('d') {
            assert_eq!(mode, "drwxr-xr-x", "{line}");
            assert!(path.starts_with("/usr/"), "{line}");
        } else {
            files.insert(path.to_owned(), (mode.to_owned(), owner.to_owned()));
        }
    }
    files
}

#[test]
fn the_deb_holds_the_binaries_units_docs_and_guarded_scripts() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let deb = build_deb(dir.path());

    // The files, each with its mode, and nothing else.
    let files = listing(&deb);
    let expected: BTreeMap<String, (String, String)> = FILES
        .iter()
        .map(|(p, m)| ((*p).to_owned(), ((*m).to_owned(), "0/0".to_owned())))
        .collect();
    assert_eq!(files, expected);

    let info = stdout(Command::new("dpkg-deb").arg("-I").arg(&deb));
    assert!(info.contains("Package: tokend"), "{info}");
    assert!(
        info.contains("systemd | systemd-standalone-sysusers | systemd-sysusers"),
        "{info}"
    );
    for script in ["postinst", "prerm", "postrm"] {
        assert!(info.contains(script), "no {script}:\n{info}");
    }

    // The maintainer scripts.
    let control = dir.path().join("control");
    run(Command::new("dpkg-deb").arg("-e").arg(&deb).arg(&control));
    for script in ["postinst", "prerm", "postrm"] {
        let path = control.join(script);
        let mode = path.metadata().unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o755, "{script}");
        run(Command::new("sh").arg("-n").arg(&path));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("#!/bin/sh\n"), "{script}");
        for never in [
            "enable --now",
            "systemctl enable",
            "systemctl start",
            " start tokend",
        ] {
            assert!(!text.contains(never), "{script} has {never:?}");
        }
    }
    maintainer_scripts_guard_systemd(&control, dir.path());

    // The files themselves.
    let root = dir.path().join("root");
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root));
    let version = stdout(Command::new(root.join("usr/bin/tokenctl")).arg("--version"));
    assert_eq!(version, format!("tokenctl {}\n", env!("CARGO_PKG_VERSION")));
    units_point_at_usr_bin_and_verify(&root);
    pages_and_completions_are_the_binaries_own(&root);
    if install_allowed() {
        install_check_and_purge(&deb);
    } else {
        eprintln!(
            "package: the .deb was not installed: set CI=true or TOKEND_TEST_DPKG_INSTALL=1 \
             where installing and purging the package `tokend` is harmless"
        );
    }
    eprintln!("package test took {:.1?}", started.elapsed());
}

/// Runs the scripts with stand-ins for systemd's programs that record their
/// calls, then with no systemd at all: they succeed either way, call
/// sysusers and tmpfiles for the package's files, and never enable or
/// start a unit.
fn maintainer_scripts_guard_systemd(control: &Path, tmp: &Path) {
    let stubs = tmp.join("stubs");
    std::fs::create_dir(&stubs).unwrap();
    let log = tmp.join("calls.log");
    for program in [
        "systemctl",
        "systemd-sysusers",
        "systemd-tmpfiles",
        "deb-systemd-helper",
    ] {
        let path = stubs.join(program);
        std::fs::write(
            &path,
            format!(
                "#!/bin/sh\necho \"{program} $*\" >>'{}'\nexit 1\n",
                log.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    // The stand-ins fail (exit 1) where a real call could, except the one
    // call whose failure must fail the installation: sysusers.
    std::fs::write(
        stubs.join("systemd-sysusers"),
        format!(
            "#!/bin/sh\necho \"systemd-sysusers $*\" >>'{}'\n",
            log.display()
        ),
    )
    .unwrap();
    let empty = tmp.join("empty");
    std::fs::create_dir(&empty).unwrap();
    let script = |name: &str, args: &[&str], path: &Path| {
        run(Command::new("/bin/sh")
            .arg(control.join(name))
            .args(args)
            .env("PATH", path)
            .env_remove("DPKG_ROOT"));
    };
    // Install, upgrade, remove (never purge here: it deletes /etc/tokend).
    for path in [&stubs, &empty] {
        script("postinst", &["configure", ""], path);
        script("postinst", &["configure", "0.0.9-1"], path);
        script("prerm", &["upgrade", "0.1.1-1"], path);
        script("prerm", &["remove"], path);
        script("postrm", &["remove"], path);
    }
    let calls = std::fs::read_to_string(&log).unwrap();
    assert!(
        calls.lines().any(|l| l == "systemd-sysusers tokend.conf"),
        "{calls}"
    );
    assert!(
        calls
            .lines()
            .any(|l| l == "systemd-tmpfiles --create tokend.conf"),
        "{calls}"
    );
    for line in calls.lines() {
        assert!(
            !line.contains(" enable") || line.starts_with("deb-systemd-helper"),
            "{line}"
        );
        assert!(!line.contains(" start"), "{line}");
        if line.starts_with("systemctl") {
            // Only where systemd runs; here it is a developer's machine.
            assert!(Path::new("/run/systemd/system").is_dir(), "{line}");
        }
    }
}

/// The packaged units are the repository's with ExecStart=/usr/bin/…, and
/// `systemd-analyze verify` accepts them (system and user) against the
/// packaged binary and man pages.
fn units_point_at_usr_bin_and_verify(root: &Path) {
    tools::require(&[("systemd-analyze", "systemd"), ("man", "man-db")]);
    for (packaged, source) in [
        (
            "usr/lib/systemd/system/tokend.service",
            "systemd/tokend.service",
        ),
        (
            "usr/lib/systemd/system/tokend.socket",
            "systemd/tokend.socket",
        ),
        (
            "usr/lib/systemd/user/tokend.service",
            "systemd/user/tokend.service",
        ),
    ] {
        let text = std::fs::read_to_string(root.join(packaged)).unwrap();
        let source = std::fs::read_to_string(Path::new(REPO).join(source)).unwrap();
        assert_eq!(text, source.replace("/usr/local/bin/", "/usr/bin/"));
        assert!(!text.contains("/usr/local"), "{packaged}");
        if packaged.ends_with(".service") {
            assert!(text.contains("\nExecStart=/usr/bin/tokend "), "{packaged}");
        }
    }
    let user = std::fs::read_to_string(root.join("usr/lib/systemd/user/tokend.service")).unwrap();
    for needle in [
        "--config %h/.config/tokend/tokend.toml",
        "--socket %t/tokend/tokend.sock",
        "WantedBy=default.target",
    ] {
        assert!(user.contains(needle), "{needle}");
    }

    let units = root.join("verify");
    std::fs::create_dir(&units).unwrap();
    let binary = root.join("usr/bin/tokend");
    for (unit, into) in [
        ("usr/lib/systemd/system/tokend.service", "tokend.service"),
        ("usr/lib/systemd/system/tokend.socket", "tokend.socket"),
        ("usr/lib/systemd/user/tokend.service", "user-tokend.service"),
    ] {
        let text = std::fs::read_to_string(root.join(unit)).unwrap();
        std::fs::write(
            units.join(into),
            text.replace("/usr/bin/tokend", binary.to_str().unwrap()),
        )
        .unwrap();
    }
    let verify = |args: &[&str], files: &[&str]| {
        let runtime = tempfile::tempdir().unwrap();
        let out = run(Command::new("systemd-analyze")
            .arg("verify")
            .args(args)
            .args(files.iter().map(|f| units.join(f)))
            .env("XDG_RUNTIME_DIR", runtime.path())
            .env("MANPATH", root.join("usr/share/man"))
            .env("SYSTEMD_LOG_LEVEL", "notice"));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.lines().all(|l| !l.contains("tokend")),
            "systemd-analyze verify {files:?}:\n{err}"
        );
    };
    verify(&[], &["tokend.socket", "tokend.service"]);
    // The user unit under its own name, as the user manager loads it.
    std::fs::rename(
        units.join("user-tokend.service"),
        units.join("tokend.service"),
    )
    .unwrap();
    verify(&["--user"], &["tokend.service"]);
}

/// The man pages and completion scripts in the package are what the
/// packaged binaries print, and `man` renders each without a warning.
fn pages_and_completions_are_the_binaries_own(root: &Path) {
    let tokenctl = root.join("usr/bin/tokenctl");
    let tokend = root.join("usr/bin/tokend");
    for (page, bin, args) in [
        ("man1/tokenctl.1.gz", &tokenctl, &["man"][..]),
        ("man8/tokend.8.gz", &tokend, &["--man"][..]),
        (
            "man5/tokend.toml.5.gz",
            &tokend,
            &["--man", "tokend.toml"][..],
        ),
    ] {
        let path = root.join("usr/share/man").join(page);
        let unpacked = stdout(Command::new("gzip").arg("-dc").arg(&path));
        assert_eq!(unpacked, stdout(Command::new(bin).args(args)), "{page}");
        let out = run(Command::new("man")
            .args(["--warnings=all", "-l"])
            .arg(&path)
            .env("MANROFFSEQ", "")
            .env("MANWIDTH", "80"));
        assert!(
            out.stderr.is_empty(),
            "{page}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for (file, shell) in [
        ("bash-completion/completions/tokenctl", "bash"),
        ("zsh/vendor-completions/_tokenctl", "zsh"),
        ("fish/vendor_completions.d/tokenctl.fish", "fish"),
    ] {
        let text = std::fs::read_to_string(root.join("usr/share").join(file)).unwrap();
        assert_eq!(
            text,
            stdout(Command::new(&tokenctl).args(["completions", shell]))
        );
    }
}

fn install_allowed() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
        || std::env::var("TOKEND_TEST_DPKG_INSTALL").is_ok_and(|v| v == "1")
}

/// Purges the package `tokend` when dropped, so a failed check leaves no
/// installation behind.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        purge();
    }
}

fn purge() {
    let _ = Command::new("apt-get")
        .args([
            "-o",
            "DPkg::Lock::Timeout=600",
            "purge",
            "-y",
            "-qq",
            "tokend",
        ])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status();
}

fn apt_install(deb: &Path) {
    run(Command::new("apt-get")
        .args([
            "-o",
            "DPkg::Lock::Timeout=600",
            "install",
            "-y",
            "-qq",
            "--reinstall",
        ])
        .arg(deb)
        .env("DEBIAN_FRONTEND", "noninteractive"));
}

/// `dpkg-query`'s word on the package `tokend`.
fn installed() -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${db:Status-Status}", "tokend"])
        .output()
        .is_ok_and(|o| o.stdout == b"installed")
}

/// Installs the package (in a container without a running systemd, as on
/// CI), checks what its postinst made, installs it again (an upgrade's
/// path), and purges it.
fn install_check_and_purge(deb: &Path) {
    common::require_root();
    tools::require(&[("apt-get", "apt"), ("systemd-sysusers", "systemd")]);
    if installed() {
        // Left by an interrupted run, on a machine that allows this.
        purge();
    }
    let _purge = Installed;
    apt_install(deb);
    assert!(installed());
    let version = stdout(Command::new("/usr/bin/tokenctl").arg("--version"));
    assert_eq!(version, format!("tokenctl {}\n", env!("CARGO_PKG_VERSION")));
    run(Command::new("/usr/bin/tokend").arg("--version"));
    // sysusers and tmpfiles ran.
    let user = stdout(Command::new("getent").args(["passwd", "tokend"]));
    assert!(user.contains(":/var/lib/tokend:"), "{user}");
    let group = stdout(Command::new("getent").args(["group", "tokend-clients"]));
    assert!(group.contains("tokend"), "{group}");
    let etc = stdout(Command::new("stat").args(["-c", "%a %U %G", "/etc/tokend"]));
    assert_eq!(etc.trim(), "750 root tokend");
    let page = stdout(Command::new("man").args(["-w", "tokenctl"]));
    assert_eq!(page.trim(), "/usr/share/man/man1/tokenctl.1.gz");
    // Again, as an upgrade runs it: still fine.
    apt_install(deb);
    drop(_purge);
    assert!(!installed(), "tokend is still installed after the purge");
    assert!(!Path::new("/usr/bin/tokend").exists());
    assert!(!Path::new("/etc/tokend").exists());
}
