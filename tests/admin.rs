//! Admin operations: importing a Glean secret into the store (taking effect
//! without a restart, surviving one), and refusing callers who are not admins.

mod common;

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::{Output, Stdio};

use common::{CANARY, Daemon, Workdir, assert_no_secret};

const STRANGER: u32 = 4545;
const CLIENTS: u32 = 4200;

fn credentials(work: &Workdir) -> String {
    format!(
        r#"{}
[[credential]]
name = "imported"
kind = "glean_token"
permission = "user"
scopes = ["SEARCH"]
secret = {{ store = true }}
allow = {{ uids = [0, {STRANGER}] }}
"#,
        work.store_section()
    )
}

/// `tokenctl ARGS` with `input` on stdin, optionally as another uid.
fn tokenctl(work: &Workdir, args: &[&str], input: &str, uid: Option<u32>) -> Output {
    let mut cmd = work.tokenctl_cmd(args);
    if let Some(uid) = uid {
        cmd.uid(uid).gid(CLIENTS);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run tokenctl");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_no_secret("tokenctl's stderr", &String::from_utf8_lossy(&out.stderr));
    out
}

#[test]
fn an_imported_secret_is_served_at_once_and_survives_a_restart() {
    common::require_root();
    let work = Workdir::new();
    work.write_config(&format!("socket_group = {CLIENTS}"), &credentials(&work));
    let mut daemon = Daemon::start(&work);

    let out = work.tokenctl(&["headers", "imported"]);
    assert_eq!(out.status.code(), Some(5), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("run `tokenctl import imported`"));

    let out = tokenctl(
        &work,
        &["import", "imported", "--expires-at", "2099-01-01T00:00:00Z"],
        &format!("{CANARY}\n"),
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = work.tokenctl(&["get", "imported", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["headers"][0]["value"], format!("Bearer {CANARY}"));
    assert_eq!(v["expires_at"], "2099-01-01T00:00:00Z");

    // The secret is sealed in the store, not in the clear.
    let store = std::fs::read(work.store_path()).unwrap();
    assert!(!store.windows(CANARY.len()).any(|w| w == CANARY.as_bytes()));

    assert!(daemon.stop().success());
    let _daemon = Daemon::start(&work);
    let out = work.tokenctl(&["headers", "imported"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("Authorization: Bearer {CANARY}\n")
    );
}

#[test]
fn only_admins_may_import_or_refresh() {
    common::require_root();
    let work = Workdir::new();
    work.write_config(&format!("socket_group = {CLIENTS}"), &credentials(&work));
    let _daemon = Daemon::start(&work);
    for args in [&["import", "imported"][..], &["refresh", "imported"]] {
        let out = tokenctl(&work, args, "glean_other\n", Some(STRANGER));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(4), "{args:?}: {err}");
        assert!(err.contains(&format!("uid {STRANGER} may not")), "{err}");
        assert!(err.contains("admin_uids"), "{err}");
    }
    // Nothing was imported by the refused call.
    let out = work.tokenctl(&["headers", "imported"]);
    assert_eq!(out.status.code(), Some(5));
    // Refreshing a Glean token is refused for what it is: a wrong request
    // (exit 2), not a credential that needs a person (5).
    let out = work.tokenctl(&["refresh", "imported"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("it does not refresh"));
}

#[test]
fn a_credential_needing_the_store_without_a_key_fails_startup_clearly() {
    common::require_root();
    let work = Workdir::new();
    let text = credentials(&work).replace(
        &format!(
            "key_file = \"{}\"\n",
            work.path().join("store.key").display()
        ),
        "",
    );
    work.write_config("", &text);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tokend"))
        .arg("--config")
        .arg(work.config_path())
        .env_remove("CREDENTIALS_DIRECTORY")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("no store key was found") && err.contains("key_file"),
        "{err}"
    );
    assert!(
        !work.store_path().exists(),
        "no store is created without a key"
    );
}
