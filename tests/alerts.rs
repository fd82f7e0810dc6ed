//! Alerts end to end: expiry stages, restart without duplicates, recovery
//! after an import; needs_login and misconfigured against the real
//! authorization server; PagerDuty, Slack, exec and log sinks; metrics.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::fixtures::Glean;
use common::oidc::{OidcServer, POST_CLIENT};
use common::{CANARY, Daemon, Workdir};
use secrecy::ExposeSecret;
use tokend::oauth::AuthMethod;
use tokend::proto::{PutRefreshTokenRequest, RefreshRequest};

/// Every POST the receiver got: (path, JSON body).
type Received = Arc<Mutex<Vec<(String, serde_json::Value)>>>;

/// A webhook receiver standing in for Slack, PagerDuty and plain webhooks.
async fn receiver() -> (u16, Received) {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let got: Received = Arc::default();
    let store = Arc::clone(&got);
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut read = tokio::io::BufReader::new(read);
                loop {
                    let mut line = String::new();
                    if read.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let path = line.split(' ').nth(1).unwrap_or("").to_owned();
                    let mut len = 0;
                    loop {
                        line.clear();
                        read.read_line(&mut line).await.unwrap();
                        if line == "\r\n" {
                            break;
                        }
                        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap();
                        }
                    }
                    let mut body = vec![0; len];
                    read.read_exact(&mut body).await.unwrap();
                    let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
                    store.lock().unwrap().push((path, json));
                    let ok = "HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n";
                    if write.write_all(ok.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, got)
}

/// Waits (bounded) until the `g/expiry` alert has sent `event`.
async fn wait_expiry_event(got: &Received, event: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let seen: Vec<_> = events(got, "/hook")
            .into_iter()
            .filter(|e| e["dedup_key"] == "g/expiry")
            .collect();
        if seen.iter().any(|e| e["event"] == event) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no {event} within {within:?}: {seen:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn events(got: &Received, path: &str) -> Vec<serde_json::Value> {
    got.lock()
        .unwrap()
        .iter()
        .filter(|(p, _)| p == path)
        .map(|(_, b)| b.clone())
        .collect()
}

/// Waits (bounded) until `path` has received `n` bodies.
async fn wait_for(
    got: &Received,
    path: &str,
    n: usize,
    within: Duration,
) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + within;
    loop {
        let e = events(got, path);
        if e.len() >= n {
            return e;
        }
        assert!(
            Instant::now() < deadline,
            "only {} events at {path} after {within:?}: {e:#?}",
            e.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_stages_fire_once_survive_a_restart_and_recover_after_import() {
    common::require_root();
    let (port, got) = receiver().await;
    let work = Workdir::new();
    work.write_config(
        "",
        &format!(
            r#"{}
[alerts]
thresholds = ["4s", "2s"]
sweep = "* * * * * *"
source = "test-host"

[[alerts.sink]]
name = "hook"
type = "webhook"
url = "http://127.0.0.1:{port}/hook"

[[credential]]
name = "g"
kind = "glean_token"
permission = "user"
scopes = ["SEARCH"]
secret = {{ store = true }}
owner = "ops@corp.example"
min_valid = "0s"
allow = {{ uids = [0] }}
"#,
            work.store_section()
        ),
    );
    let mut daemon = Daemon::start(&work);
    let import = |secret: &str, expires_in: i64| {
        let at = jiff::Timestamp::now().as_second() + expires_in;
        let at = jiff::Timestamp::from_second(at).unwrap().to_string();
        let mut child = work
            .tokenctl_cmd(&["import", "g", "--expires-at", &at])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(format!("{secret}\n").as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success());
    };
    import("glean_first", 6);
    let expiry = |got: &Received| -> Vec<serde_json::Value> {
        events(got, "/hook")
            .into_iter()
            .filter(|e| e["dedup_key"] == "g/expiry")
            .collect()
    };
    // The first stage; then restart while the alert is open.
    wait_expiry_event(&got, "expiring", Duration::from_secs(10)).await;
    assert!(daemon.stop().success());
    let _daemon = Daemon::start(&work);
    // Wait for expired.
    wait_expiry_event(&got, "expired", Duration::from_secs(12)).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    import("glean_second", 3600 * 24 * 365);
    wait_expiry_event(&got, "recovered", Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let seq = expiry(&got);
    let names: Vec<(&str, &str)> = seq
        .iter()
        .map(|e| {
            (
                e["event"].as_str().unwrap(),
                e["severity"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        names,
        [
            ("expiring", "warning"),
            ("expiring", "critical"),
            ("expired", "critical"),
            ("recovered", "info")
        ],
        "{seq:#?}"
    );
    for e in &seq {
        assert_eq!(e["credential"], "g");
        assert_eq!(e["kind"], "glean_token");
        assert_eq!(e["source"], "test-host");
    }
    assert!(
        seq[0]["summary"]
            .as_str()
            .unwrap()
            .contains("tokenctl import g"),
        "{}",
        seq[0]
    );
    assert!(
        seq[0]["summary"]
            .as_str()
            .unwrap()
            .contains("ops@corp.example")
    );
    assert!(seq[0]["expires_at"].is_string());
    // Before the first import the credential needed one: that alert fired
    // once and resolved too.
    let login: Vec<_> = events(&got, "/hook")
        .into_iter()
        .filter(|e| e["dedup_key"] == "g/needs_login")
        .map(|e| e["event"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(login, ["needs_login", "recovered"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth_failures_page_once_and_resolve_with_pagerduty_and_slack_bodies() {
    common::require_root();
    let (port, got) = receiver().await;
    let work = Workdir::new();
    common::write_secret(&work.path().join("client-secret"), POST_CLIENT.1);
    common::write_secret(
        &work.path().join("routing-key"),
        "R0UTINGKEY0123456789abcdef012345",
    );
    let server = OidcServer::start(30, &work.path().join("oidc.log"));
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    work.write_config(
        "",
        &format!(
            r#"{}
[metrics]
listen = "127.0.0.1:{metrics_port}"

[alerts]
sweep = "* * * * * *"
source = "test-host"

[[alerts.sink]]
name = "pd"
type = "pagerduty"
url = "http://127.0.0.1:{port}/pd"
routing_key = {{ file = "routing-key" }}
min_severity = "critical"

[[alerts.sink]]
name = "slack"
type = "webhook"
format = "slack"
url_secret = {{ env = "SLACK_URL_FOR_TEST" }}

[[credential]]
name = "sso"
kind = "oauth_refresh"
issuer = "{}"
client_id = "{}"
client_secret = {{ file = "client-secret" }}
auth_method = "client_secret_post"
min_valid = "5s"
allow = {{ uids = [0] }}
"#,
            work.store_section(),
            server.issuer,
            POST_CLIENT.0
        ),
    );
    // SAFETY of the test: the env var is set for the child process only.
    let slack_url = format!("http://127.0.0.1:{port}/slack");
    let daemon = Daemon::start_env(&work, &[("SLACK_URL_FOR_TEST", &slack_url)]);
    // Not logged in yet: one needs_login.
    let pd = wait_for(&got, "/pd", 1, Duration::from_secs(5)).await;
    assert_eq!(pd[0]["dedup_key"], "sso/needs_login");
    let login = || async {
        let tokens = server
            .login(POST_CLIENT, AuthMethod::ClientSecretPost)
            .await;
        daemon
            .admin()
            .await
            .put_refresh_token(PutRefreshTokenRequest {
                credential: "sso".into(),
                refresh_token: tokens.refresh_token.unwrap().expose_secret().to_owned(),
                ..Default::default()
            })
            .await
            .unwrap();
    };
    login().await;
    let pd = wait_for(&got, "/pd", 2, Duration::from_secs(5)).await;
    assert_eq!(pd[1]["event_action"], "resolve");
    assert_eq!(pd[1]["dedup_key"], "sso/needs_login");

    // Revoked grant: needs_login once (several sweeps pass), naming the fix.
    server.revoke_grants().await;
    let refresh = || async {
        let _ = daemon
            .admin()
            .await
            .refresh(RefreshRequest {
                credential: "sso".into(),
            })
            .await;
    };
    refresh().await;
    let pd = wait_for(&got, "/pd", 3, Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        events(&got, "/pd").len(),
        3,
        "a repeat within repeat_failing: {:#?}",
        events(&got, "/pd")
    );
    let trigger = &pd[2];
    // Events API v2, field by field.
    assert_eq!(trigger["routing_key"], "R0UTINGKEY0123456789abcdef012345");
    assert_eq!(trigger["event_action"], "trigger");
    assert_eq!(trigger["dedup_key"], "sso/needs_login");
    let summary = trigger["payload"]["summary"].as_str().unwrap();
    assert!(summary.contains("run `tokenctl login sso`"), "{summary}");
    assert!(summary.contains("invalid_grant"), "{summary}");
    assert_eq!(trigger["payload"]["source"], "test-host");
    assert_eq!(trigger["payload"]["severity"], "critical");
    assert!(summary.len() <= 1024);
    // The Slack body renders: it has `text`.
    let slack = events(&got, "/slack");
    assert!(slack.iter().all(|b| b["text"].is_string()), "{slack:#?}");
    assert!(
        slack
            .iter()
            .any(|b| b["text"].as_str().unwrap().contains("tokenctl login sso"))
    );

    // Recovery resolves it.
    login().await;
    let pd = wait_for(&got, "/pd", 4, Duration::from_secs(5)).await;
    assert_eq!(
        (pd[3]["event_action"].as_str(), pd[3]["dedup_key"].as_str()),
        (Some("resolve"), Some("sso/needs_login"))
    );

    // Rotated client secret: misconfigured, then resolved.
    server.rotate_secret(POST_CLIENT.0, "rotated").await;
    refresh().await;
    let pd = wait_for(&got, "/pd", 5, Duration::from_secs(5)).await;
    assert_eq!(pd[4]["dedup_key"], "sso/misconfigured");
    assert!(
        pd[4]["payload"]["summary"]
            .as_str()
            .unwrap()
            .contains("invalid_client")
    );
    server.rotate_secret(POST_CLIENT.0, POST_CLIENT.1).await;
    refresh().await;
    let pd = wait_for(&got, "/pd", 6, Duration::from_secs(5)).await;
    assert_eq!(
        (pd[5]["event_action"].as_str(), pd[5]["dedup_key"].as_str()),
        (Some("resolve"), Some("sso/misconfigured"))
    );

    // Metrics, as Prometheus scrapes them.
    let text = reqwest::get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for needle in [
        "tokend_credential_info{credential=\"sso\",kind=\"oauth_refresh\"} 1",
        "tokend_credential_expiry_timestamp_seconds{credential=\"sso\"}",
        "tokend_credential_state{credential=\"sso\",state=\"fresh\"} 1",
        "tokend_credential_state{credential=\"sso\",state=\"needs_login\"} 0",
        "tokend_refresh_attempts_total{result=\"ok\"}",
        "tokend_refresh_attempts_total{result=\"permanent\"}",
        "tokend_refresh_duration_seconds_bucket",
        "tokend_alert_deliveries_total{sink=\"pd\",result=\"ok\"} 6",
        "tokend_credential_seconds_since_refresh{credential=\"sso\"}",
        "tokend_grpc_requests_total{method=\"Refresh\",code=\"Ok\"}",
        "tokend_grpc_requests_total{method=\"Refresh\",code=\"FailedPrecondition\"}",
        "tokend_grpc_request_duration_seconds_bucket{le=",
    ] {
        assert!(text.contains(needle), "no {needle} in\n{text}");
    }
    assert!(!text.contains("R0UTINGKEY"), "a secret in the metrics");
    assert!(
        !daemon.logs().contains("R0UTINGKEY"),
        "a secret in the logs"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_and_log_sinks_test_alerts_and_the_alert_list() {
    common::require_root();
    let work = Workdir::new();
    let out = work.path().join("exec-out.json");
    work.write_config(
        "",
        &format!(
            r#"{}
[alerts]
sweep = "* * * * * *"
digest = "* * * * * *"

[[alerts.sink]]
name = "script"
type = "exec"
command = ["/bin/sh", "-c", "cat > {1}; env > {1}.env; exec ls /proc/self/fd > {1}.fds"]
timeout = "5s"

[[alerts.sink]]
name = "journal"
type = "log"

[[alerts.sink]]
name = "dead"
type = "webhook"
url = "http://127.0.0.1:9/nothing-listens-here"

[[credential]]
name = "old"
kind = "glean_token"
permission = "user"
scopes = ["SEARCH"]
expires_at = "2020-01-01T00:00:00Z"
secret = {{ file = "secret" }}
allow = {{ uids = [0] }}
"#,
            work.store_section(),
            out.display()
        ),
    );
    // Secrets in the daemon's environment: an env-sourced secret and the
    // systemd credentials directory (where the store key lives).
    let daemon = Daemon::start_env(
        &work,
        &[
            ("TOKEND_TEST_ENV_SECRET", CANARY),
            ("CREDENTIALS_DIRECTORY", "/run/credentials/tokend.service"),
        ],
    );
    let r = work.tokenctl(&["test-alert", "script"]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let body: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(body["event"], "test");
    // The script saw only the allow-list and the event's fields, and no
    // descriptor beyond stdin, stdout and stderr.
    let env = std::fs::read_to_string(format!("{}.env", out.display())).unwrap();
    common::assert_no_secret("the exec sink's environment", &env);
    let names: Vec<&str> = env.lines().filter_map(|l| l.split('=').next()).collect();
    for name in &names {
        assert!(
            ["PATH", "LANG", "LC_ALL", "TZ", "PWD", "SHLVL", "_"].contains(name)
                || name.starts_with("TOKEND_EVENT")
                || ["TOKEND_CREDENTIAL", "TOKEND_SEVERITY", "TOKEND_DEDUP_KEY"].contains(name),
            "the exec sink inherited {name}:\n{env}"
        );
    }
    assert!(env.contains("TOKEND_EVENT=test"), "{env}");
    let fds = std::fs::read_to_string(format!("{}.fds", out.display())).unwrap();
    let fds: Vec<&str> = fds.split_whitespace().collect();
    // 3 is `ls`'s own handle on the directory it lists.
    assert_eq!(
        fds,
        ["0", "1", "2", "3"],
        "the exec sink inherited descriptors"
    );
    // The daemon answered: not "unreachable" (6) but "try later" (7).
    let r = work.tokenctl(&["test-alert", "dead"]);
    assert_eq!(r.status.code(), Some(7), "{r:?}");
    assert!(String::from_utf8_lossy(&r.stderr).contains("delivery to `dead` failed"));
    let r = work.tokenctl(&["test-alert", "nope"]);
    assert_eq!(r.status.code(), Some(3));

    // The expired token is an open alert, logged on target `alert`.
    daemon.wait_for_log(" alert: ");
    let list = work.tokenctl(&["alerts", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(v[0]["dedup_key"], "old/expiry");
    assert_eq!(v[0]["event"], "expired");
    assert!(
        daemon
            .logs()
            .lines()
            .any(|l| l.contains(" alert: ") && l.contains("dedup_key=old/expiry"))
    );
    // The digest lists what expires within the largest threshold.
    daemon.wait_for_log(
        "tokend digest: 1 expiring within 14d 0h: old (token) expires at 2020-01-01T00:00:00Z",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_reload_raises_an_alert_until_a_good_config_arrives() {
    common::require_root();
    let work = Workdir::new();
    let good = format!(
        "{}\n[alerts]\nsweep = \"* * * * * *\"\n{}",
        work.store_section(),
        Glean::user("g")
    );
    work.write_config("", &good);
    let daemon = Daemon::start(&work);
    work.write_config("", &good.replace("\"SEARCH\"", "\"SERACH\""));
    daemon.wait_for_log("dedup_key=config/reload");
    let out = work.tokenctl(&["alerts"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("refused its new config") && text.contains("unknown scope `SERACH`"),
        "{text}"
    );
    // Still serving the old config meanwhile.
    assert!(work.tokenctl(&["headers", "g"]).status.success());
    work.write_config("", &good);
    daemon.wait_for_log("event=recovered credential=(config)");
    let out = work.tokenctl(&["alerts"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "no open alerts\n");
}
