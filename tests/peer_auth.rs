//! Authorisation by peer credentials, with clients really running under other
//! uids and groups (the kernel reports them; nothing is faked).

mod common;

use std::os::unix::process::CommandExt;
use std::process::{Command, Output};

use common::{CANARY, Daemon, Workdir, assert_no_secret};

/// Callers' ids: none exist in /etc/passwd, which the kernel does not care about.
const ALICE: u32 = 4242;
const BOB: u32 = 4343;
/// The socket's group: members may connect at all.
const CLIENTS: u32 = 4200;
/// A group whose members may use `team-token`.
const TEAM: u32 = 4300;

fn config() -> String {
    format!(
        r#"
[[credential]]
name = "alice-only"
kind = "glean_token"
permission = "user"
scopes = ["SEARCH"]
secret = {{ file = "secret" }}
allow = {{ uids = [{ALICE}] }}

[[credential]]
name = "team-token"
kind = "glean_token"
permission = "user"
scopes = ["SEARCH"]
secret = {{ file = "secret" }}
allow = {{ groups = [{TEAM}] }}

[[credential]]
name = "global"
kind = "glean_token"
permission = "global"
scopes = ["SEARCH"]
secret = {{ file = "secret" }}
allow = [
  {{ uids = [{ALICE}], act_as = ["*@a.example"] }},
  {{ uids = [{BOB}], act_as = ["bob@b.example"] }},
]
"#
    )
}

fn start() -> (Workdir, Daemon) {
    common::require_root();
    let work = Workdir::new();
    work.write_config(&format!("socket_group = {CLIENTS}"), &config());
    let daemon = Daemon::start(&work);
    (work, daemon)
}

/// Runs tokenctl as `uid` with primary group `gid` and no supplementary groups.
fn as_user(work: &Workdir, uid: u32, gid: u32, args: &[&str]) -> Output {
    let mut cmd = work.tokenctl_cmd(args);
    cmd.uid(uid).gid(gid);
    cmd.output().expect("run tokenctl as another user")
}

/// Runs tokenctl through util-linux's `setpriv`, which sets supplementary
/// groups too (std cannot on stable).
fn with_groups(work: &Workdir, uid: u32, gid: u32, groups: &[u32], args: &[&str]) -> Output {
    let groups: Vec<String> = groups.iter().map(u32::to_string).collect();
    let mut cmd = Command::new("setpriv");
    cmd.arg(format!("--reuid={uid}"))
        .arg(format!("--regid={gid}"))
        .arg(format!("--groups={}", groups.join(",")))
        .arg("--")
        .arg(work.path().join("tokenctl"))
        .arg("--socket")
        .arg(work.socket())
        .args(args);
    cmd.output()
        .expect("run setpriv (util-linux); install it with `apt-get install util-linux`")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    let s = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_no_secret("tokenctl's stderr", &s);
    s
}

#[test]
fn only_allowed_uids_get_headers() {
    let (work, daemon) = start();
    let out = as_user(&work, ALICE, CLIENTS, &["headers", "alice-only"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), format!("Authorization: Bearer {CANARY}\n"));

    let out = as_user(&work, BOB, CLIENTS, &["headers", "alice-only"]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("uid {BOB} (gid {CLIENTS}, pid ")),
        "{err}"
    );
    assert!(err.contains("may not use credential `alice-only`"), "{err}");
    assert!(out.stdout.is_empty());

    // Root is not implicitly allowed to fetch: default deny holds for everyone.
    let out = work.tokenctl(&["headers", "alice-only"]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));

    // The audit log records the real uid and pid of each caller.
    daemon.wait_for_log(&format!("uid={BOB} gid={CLIENTS}"));
    let logs = daemon.logs();
    assert!(
        logs.lines().any(|l| l.contains(" audit: ")
            && l.contains(&format!("uid={BOB}"))
            && l.contains("result=PermissionDenied")),
        "{logs}"
    );
}

#[test]
fn groups_are_honoured_primary_and_supplementary() {
    let (work, _daemon) = start();
    // TEAM as the primary group (the socket is reachable through CLIENTS only
    // as a supplementary group here).
    let out = with_groups(&work, BOB, TEAM, &[CLIENTS], &["headers", "team-token"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // TEAM as a supplementary group: read from SO_PEERGROUPS.
    let out = with_groups(&work, BOB, CLIENTS, &[TEAM], &["headers", "team-token"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), format!("Authorization: Bearer {CANARY}\n"));
    // Neither: denied.
    let out = with_groups(&work, BOB, CLIENTS, &[4999], &["headers", "team-token"]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
}

#[test]
fn act_as_is_limited_to_the_callers_own_patterns() {
    let (work, _daemon) = start();
    let ok = as_user(
        &work,
        ALICE,
        CLIENTS,
        &["headers", "global", "--act-as", "x@a.example"],
    );
    assert!(ok.status.success(), "{}", stderr(&ok));
    assert!(stdout(&ok).ends_with("X-Glean-ActAs: x@a.example\n"));

    // Bob's rule allows only bob@b.example; Alice's pattern does not carry over.
    let out = as_user(
        &work,
        BOB,
        CLIENTS,
        &["headers", "global", "--act-as", "x@a.example"],
    );
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("uid {BOB} may not act as `x@a.example`")),
        "{err}"
    );
    let out = as_user(
        &work,
        BOB,
        CLIENTS,
        &["headers", "global", "--act-as", "bob@b.example"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    // And Alice may not act as Bob.
    let out = as_user(
        &work,
        ALICE,
        CLIENTS,
        &["headers", "global", "--act-as", "bob@b.example"],
    );
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
}

#[test]
fn status_lists_only_what_the_caller_may_use() {
    let (work, _daemon) = start();
    let out = as_user(&work, ALICE, CLIENTS, &["status", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alice-only", "global"]);
}

#[test]
fn socket_and_directory_permissions_keep_strangers_out() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let (work, _daemon) = start();
    let dir = std::fs::metadata(work.socket().parent().unwrap()).unwrap();
    assert_eq!(dir.permissions().mode() & 0o7777, 0o750);
    assert_eq!(dir.gid(), CLIENTS);
    let sock = std::fs::metadata(work.socket()).unwrap();
    assert_eq!(sock.permissions().mode() & 0o777, 0o660);
    assert_eq!(sock.gid(), CLIENTS);

    // Not in the socket's group: the kernel refuses the connection itself.
    let out = as_user(&work, ALICE, 4999, &["headers", "alice-only"]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    // Said as what it is, not blamed on the daemon.
    let err = stderr(&out);
    assert!(err.contains("permission denied"), "{err}");
    assert!(!err.contains("is the daemon running"), "{err}");
}
