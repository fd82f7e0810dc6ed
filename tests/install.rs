//! The README's systemd install leads to a config that passes `--check`:
//! the real `systemd-sysusers` (the `tokend` user and groups), the real
//! `systemd-tmpfiles` into a scratch root (`/etc/tokend` and its modes),
//! then the README's "config and its secrets" block as written, with
//! `/etc/tokend` moved under the scratch root, ending in its own
//! `runuser -u tokend -- tokend --check`.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn run(what: &str, cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| {
        panic!("{what}: {e}; install systemd and util-linux (apt-get install systemd util-linux)")
    });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{what} failed:\n{text}");
    text
}

#[test]
fn the_install_ready_config_passes_check_after_the_readme_steps() {
    common::require_root();
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let install = &readme[readme
        .find("### By hand")
        .expect("an install-by-hand section")..];
    let blocks: Vec<&str> = install
        .split("```sh\n")
        .skip(1)
        .take(2)
        .map(|b| b.split("\n```").next().unwrap())
        .collect();
    let [units, secrets] = blocks[..] else {
        panic!("the install section lost its blocks: {blocks:?}");
    };
    assert!(
        units.contains("systemd-sysusers && systemd-tmpfiles --create"),
        "{units}"
    );

    // The first block's users and directories, for real (into a scratch
    // root for the directories).
    run(
        "systemd-sysusers",
        Command::new("systemd-sysusers").arg(repo().join("systemd/tokend.sysusers.conf")),
    );
    let scratch = tempfile::tempdir().unwrap();
    let root = scratch.path();
    common::set_mode(root, 0o755);
    // With --root, tmpfiles resolves owners in the root's own files.
    std::fs::create_dir(root.join("etc")).unwrap();
    for db in ["passwd", "group"] {
        std::fs::copy(Path::new("/etc").join(db), root.join("etc").join(db)).unwrap();
    }
    run(
        "systemd-tmpfiles",
        Command::new("systemd-tmpfiles")
            .arg("--create")
            .arg(format!("--root={}", root.display()))
            .arg(repo().join("systemd/tokend.tmpfiles.conf")),
    );
    let etc = root.join("etc/tokend");
    assert!(etc.join("secrets").is_dir(), "tmpfiles made no secrets dir");

    // The shipped config, its paths moved under the scratch root.
    let moved = |text: &str| {
        text.replace("/etc/tokend", &etc.display().to_string())
            .replace(
                "/var/lib/tokend",
                &root.join("var/lib/tokend").display().to_string(),
            )
    };
    let shipped = std::fs::read_to_string(repo().join("config/tokend.toml")).unwrap();
    let config = root.join("tokend.toml");
    std::fs::write(&config, moved(&shipped)).unwrap();
    let bin = root.join("bin");
    std::fs::create_dir(&bin).unwrap();
    common::copy_binary(Path::new(env!("CARGO_BIN_EXE_tokend")), &bin.join("tokend"));

    let script = moved(secrets).replace("config/tokend.toml", &config.display().to_string());
    let mut shell = Command::new("bash")
        .arg("-euc")
        .arg(&script)
        .env(
            "PATH",
            format!(
                "{}:{}",
                bin.display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run bash");
    shell
        .stdin
        .take()
        .unwrap()
        .write_all(b"glean-client-secret-value\n")
        .unwrap();
    let out = shell.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the README's config block failed:\n{script}\n{stdout}{stderr}"
    );
    assert!(stdout.contains("ok, 2 credential(s)"), "{stdout}{stderr}");
    assert!(
        !format!("{stdout}{stderr}").contains("glean-client-secret-value"),
        "the secret was echoed"
    );

    // What the block left is what the unit expects.
    use std::os::unix::fs::MetadataExt;
    let tokend = nix::unistd::User::from_name("tokend")
        .unwrap()
        .expect("the tokend user");
    let meta = |p: &Path| std::fs::metadata(p).unwrap();
    let secret = etc.join("secrets/glean-client-secret");
    assert_eq!(
        (meta(&secret).mode() & 0o777, meta(&secret).uid()),
        (0o600, tokend.uid.as_raw())
    );
    let key = etc.join("store.key");
    assert_eq!(
        (
            meta(&key).mode() & 0o777,
            meta(&key).uid(),
            meta(&key).len()
        ),
        (0o600, 0, 32)
    );
    let installed = etc.join("tokend.toml");
    assert_eq!(
        (meta(&installed).mode() & 0o777, meta(&installed).gid()),
        (0o640, tokend.gid.as_raw())
    );
}
