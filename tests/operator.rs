//! What a new operator meets first: `tokenctl whoami`, an empty `status`
//! that says who you are, a daemon run by an ordinary user administering
//! itself, and CLI wording (`--act-as`, usage errors for the wrong kind).

mod common;

use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use common::fixtures::Glean;
use common::{Daemon, Workdir, assert_no_secret, set_mode, setpriv};

const MEMBER: u32 = 4610;
const STRANGER: u32 = 4611;
const CLIENTS: u32 = 4600;
const SEARCH: u32 = 4601;

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `tokenctl ARGS` as `uid`, in the socket's group plus `groups`.
fn tokenctl_as(work: &Workdir, uid: u32, groups: &[u32], args: &[&str]) -> Output {
    let mut cmd = setpriv(uid, CLIENTS, groups, &work.path().join("tokenctl"));
    cmd.arg("--socket").arg(work.socket()).args(args);
    let out = cmd
        .output()
        .expect("run setpriv (util-linux); install it with `apt-get install util-linux`");
    assert_no_secret("tokenctl's output", &format!("{:?}", text(&out)));
    out
}

fn credentials() -> String {
    [
        Glean::user("search-bot").allow(format!("{{ groups = [{SEARCH}] }}")),
        Glean::global("global").allow(format!(
            "{{ uids = [0, {MEMBER}], act_as = [\"*@corp.example\"] }}"
        )),
        Glean::user("user").allow(format!("{{ uids = [0, {MEMBER}] }}")),
    ]
    .map(|g| g.to_string())
    .concat()
}

#[test]
fn whoami_says_what_the_daemon_sees_and_an_empty_status_says_why() {
    common::require_root();
    let work = Workdir::new();
    work.write_config(&format!("socket_group = {CLIENTS}"), &credentials());
    let _daemon = Daemon::start(&work);

    // A member of the search group, allowed `global` and `user` by uid.
    let out = tokenctl_as(&work, MEMBER, &[SEARCH], &["whoami", "--json"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let me: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(me["uid"], MEMBER);
    assert_eq!(me["gid"], CLIENTS);
    assert_eq!(me["groups"], serde_json::json!([SEARCH]));
    assert!(me["pid"].as_u64().is_some_and(|p| p > 1), "{me}");
    assert_eq!(me["admin"], false);
    assert_eq!(
        me["credentials"],
        serde_json::json!(["global", "search-bot", "user"])
    );
    let out = tokenctl_as(&work, MEMBER, &[SEARCH], &["whoami"]);
    let (stdout, _) = text(&out);
    assert!(
        stdout.contains(&format!("uid {MEMBER}"))
            && stdout.contains(&format!("groups {SEARCH}"))
            && stdout.contains("admin: no")
            && stdout.contains("may fetch: global, search-bot, user"),
        "{stdout}"
    );

    // Root is an admin; being one adds nothing it may fetch.
    let out = work.tokenctl(&["whoami", "--json"]);
    let me: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(me["admin"], true);
    assert_eq!(me["credentials"], serde_json::json!(["global", "user"]));

    // Nobody allows the stranger: `status` is empty, succeeds, and says who
    // the daemon saw and what to ask for.
    let out = tokenctl_as(&work, STRANGER, &[], &["status"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        stdout.lines().count(),
        1,
        "only the table's header: {stdout}"
    );
    assert!(
        stderr.contains("no credential allows you")
            && stderr.contains(&format!("uid {STRANGER}, gid {CLIENTS}"))
            && stderr.contains("allow")
            && stderr.contains("tokenctl whoami"),
        "{stderr}"
    );
    let out = tokenctl_as(&work, STRANGER, &[], &["status", "--json"]);
    assert_eq!(text(&out).0.trim(), "[]", "JSON stays parseable");
    let out = tokenctl_as(&work, STRANGER, &[], &["whoami"]);
    assert!(text(&out).0.contains("may fetch: none"), "{out:?}");
}

#[test]
fn the_cli_speaks_of_its_flags_and_wrong_kinds_are_usage_errors() {
    common::require_root();
    let work = Workdir::new();
    common::write_secret(&work.path().join("client-secret"), "s3cret-client");
    let oauth = format!(
        r#"{}
[[credential]]
name = "cc"
kind = "oauth_client_credentials"
token_endpoint = "http://127.0.0.1:9/token"
client_id = "tokend"
client_secret = {{ file = "client-secret" }}
allow = {{ uids = [0] }}
"#,
        work.store_section()
    );
    work.write_config("", &format!("{}{oauth}", credentials()));
    let _daemon = Daemon::start(&work);
    for (args, code, wanted) in [
        (
            &["headers", "global"][..],
            2,
            "`global` is a global Glean token: pass --act-as EMAIL",
        ),
        (
            &["get", "global", "--json"],
            2,
            "`global` is a global Glean token: pass --act-as EMAIL",
        ),
        (
            &["headers", "user", "--act-as", "a@corp.example"],
            2,
            "`user` is a user Glean token, which cannot act as another user: drop --act-as",
        ),
        (
            &["check", "global", "--instance", "http://127.0.0.1:9"],
            2,
            "pass --act-as EMAIL",
        ),
        // Commands the credential's kind cannot do: a usage error (2), not
        // a credential that needs a person (5).
        (&["refresh", "user"], 2, "does not refresh"),
        (&["login", "user", "--no-browser"], 2, "credential `user`"),
        (&["login", "cc", "--no-browser"], 2, "credential `cc`"),
        (&["logout", "user"], 2, "credential `user`"),
        (&["import", "cc"], 2, "credential `cc`"),
    ] {
        let mut cmd = work.tokenctl_cmd(args);
        let out = cmd.stdin(Stdio::null()).output().unwrap();
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {stderr}");
        assert!(
            stderr.contains(wanted),
            "{args:?}: wanted {wanted:?} in {stderr}"
        );
        assert!(
            !stderr.contains("set act_as") && !stderr.contains("drop act_as"),
            "{args:?} speaks API: {stderr}"
        );
        assert!(stdout.is_empty(), "{args:?}: {stdout}");
    }
}

/// A developer runs tokend as themselves: they administer it without being
/// listed in `admin_uids`; other users still may not.
#[test]
fn a_daemon_run_by_an_ordinary_user_is_administered_by_that_user() {
    common::require_root();
    const OWNER: u32 = 4620;
    let work = Workdir::new();
    let tokend = work.path().join("tokend");
    common::copy_binary(std::path::Path::new(env!("CARGO_BIN_EXE_tokend")), &tokend);
    let home = work.path().join("home");
    std::fs::create_dir(&home).unwrap();
    let config = format!(
        "[daemon]\nsocket = \"{}\"\nsocket_mode = 0o666\n\n{}",
        home.join("tokend.sock").display(),
        Glean::user("mine")
            .secret_env("MY_TOKEN")
            .allow(format!("{{ uids = [{OWNER}] }}"))
    );
    let config_path = home.join("tokend.toml");
    std::fs::write(&config_path, config).unwrap();
    nix::unistd::chown(&home, Some(OWNER.into()), Some(OWNER.into())).unwrap();
    nix::unistd::chown(&config_path, Some(OWNER.into()), Some(OWNER.into())).unwrap();
    let log = std::fs::File::create(work.path().join("tokend.log")).unwrap();
    let mut child = setpriv(OWNER, OWNER, &[], &tokend)
        .arg("--config")
        .arg(&config_path)
        .env_clear()
        .env("MY_TOKEN", "glean_mine")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let socket = home.join("tokend.sock");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        let logs = std::fs::read_to_string(work.path().join("tokend.log")).unwrap();
        assert!(child.try_wait().unwrap().is_none(), "tokend exited: {logs}");
        assert!(Instant::now() < deadline, "tokend did not listen: {logs}");
        std::thread::sleep(Duration::from_millis(10));
    }
    let run = |uid: u32, args: &[&str]| {
        let out = setpriv(uid, uid, &[], &work.path().join("tokenctl"))
            .arg("--socket")
            .arg(&socket)
            .args(args)
            .output()
            .unwrap();
        let (stdout, stderr) = text(&out);
        (out.status.code(), stdout, stderr)
    };
    let (code, stdout, stderr) = run(OWNER, &["reload"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("unchanged"), "{stdout}");
    let (_, stdout, _) = run(OWNER, &["whoami"]);
    assert!(stdout.contains("admin: yes"), "{stdout}");
    let (code, _, stderr) = run(STRANGER, &["reload"]);
    assert_eq!(code, Some(4), "{stderr}");
    assert!(
        stderr.contains(&format!("uid {STRANGER} may not")),
        "{stderr}"
    );
    let _ = child.kill();
    let _ = child.wait();
}

/// Startup failures say their cause once (not "Permission denied (os error
/// 13): Permission denied (os error 13)").
#[test]
fn startup_errors_say_their_cause_once() {
    common::require_root();
    const USER: u32 = 4630;
    let work = Workdir::new();
    let tokend = work.path().join("tokend");
    common::copy_binary(std::path::Path::new(env!("CARGO_BIN_EXE_tokend")), &tokend);
    let private = work.path().join("private");
    std::fs::create_dir(&private).unwrap();
    set_mode(&private, 0o700);
    let key = work.path().join("private/store.key");
    for (what, config) in [
        (
            "cannot create socket directory",
            format!("[daemon]\nsocket = \"{}/run/s.sock\"\n", private.display()),
        ),
        (
            "cannot read store key",
            format!(
                "[daemon]\nsocket = \"{}/s.sock\"\n[store]\npath = \"{}/st/store.redb\"\n\
                 key_file = \"{}\"\n{}",
                work.path().display(),
                work.path().display(),
                key.display(),
                Glean::user("a")
                    .stored()
                    .allow(format!("{{ uids = [{USER}] }}"))
            ),
        ),
    ] {
        let config_path = work.path().join("c.toml");
        std::fs::write(&config_path, config).unwrap();
        set_mode(&config_path, 0o644);
        let out = setpriv(USER, USER, &[], &tokend)
            .arg("--config")
            .arg(&config_path)
            .output()
            .unwrap();
        let (_, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(1), "{what}: {stderr}");
        assert!(stderr.contains(what), "{stderr}");
        assert_eq!(
            stderr.matches("Permission denied").count(),
            1,
            "{what}: {stderr}"
        );
    }
}
