//! The OAuth engine against a real authorization server (`oidc-provider`):
//! rotation, restarts, the crash window, single-flight, faults, permanent
//! failures, the store, watchers and invalidation.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::fault_proxy::{FaultProxy, Mode};
use common::fixtures::{OAuth, wait_for_new_token};
use common::oidc::{BASIC_CLIENT, OidcServer, POST_CLIENT};
use common::{Daemon, Workdir, assert_no_secret};
use nix::sys::signal::Signal;
use secrecy::ExposeSecret;
use tokend::oauth::AuthMethod;
use tokend::proto::{
    CredentialState, CredentialStatus, GetHeadersRequest, GetHeadersResponse, InvalidateRequest,
    ListCredentialsRequest, PutRefreshTokenRequest, RefreshRequest,
};
use tonic::Code;

/// An `oauth_refresh` credential named `name` using `issuer` discovery,
/// with Glean's SSO header.
fn refresh_credential(name: &str, issuer: &str, min_valid: &str) -> String {
    OAuth::refresh(name, issuer, POST_CLIENT.0)
        .with(r#"scopes = ["api"]"#)
        .with(r#"extra_headers = { "X-Glean-Auth-Type" = "OAUTH" }"#)
        .min_valid(min_valid)
        .to_string()
}

/// An `oauth_client_credentials` credential at an explicit token endpoint.
fn cc_credential(name: &str, token_endpoint: &str, min_valid: &str) -> OAuth {
    OAuth::client_credentials(name, token_endpoint, BASIC_CLIENT.0)
        .with(r#"scopes = ["api"]"#)
        .min_valid(min_valid)
}

struct Setup {
    work: Workdir,
    server: OidcServer,
}

/// A workdir with client secrets and a store key, and a started server.
fn setup(ttl: u64, daemon_extra: &str, credentials: impl FnOnce(&OidcServer) -> String) -> Setup {
    common::require_root();
    let work = Workdir::new();
    common::write_secret(&work.path().join("client-secret"), POST_CLIENT.1);
    common::write_secret(&work.path().join("client-secret-basic"), BASIC_CLIENT.1);
    let server = OidcServer::start(ttl, &work.path().join("oidc.log"));
    let text = format!("{}\n{}", work.store_section(), credentials(&server));
    work.write_config(daemon_extra, &text);
    Setup { work, server }
}

/// A workdir with the basic client's secret and a store key, the server,
/// and a fault proxy in front of it (tests point token endpoints at it).
fn proxied(ttl: u64) -> (Workdir, OidcServer, FaultProxy) {
    common::require_root();
    let work = Workdir::new();
    common::write_secret(&work.path().join("client-secret-basic"), BASIC_CLIENT.1);
    let server = OidcServer::start(ttl, &work.path().join("oidc.log"));
    let proxy = FaultProxy::start(server.addr());
    (work, server, proxy)
}

fn token_endpoint(proxy: &FaultProxy) -> String {
    format!("{}/token", proxy.url())
}

fn get(name: &str) -> GetHeadersRequest {
    GetHeadersRequest {
        credential: name.into(),
        ..Default::default()
    }
}

fn header<'a>(r: &'a GetHeadersResponse, name: &str) -> Option<&'a str> {
    r.headers
        .iter()
        .find(|h| h.name == name)
        .map(|h| h.value.as_str())
}

fn access_token(r: &GetHeadersResponse) -> &str {
    header(r, "Authorization")
        .and_then(|v| v.strip_prefix("Bearer "))
        .expect("a bearer token")
}

fn seconds_left(r: &GetHeadersResponse) -> f64 {
    let exp = r.expires_at.as_ref().expect("OAuth tokens expire");
    let exp = jiff::Timestamp::new(exp.seconds, exp.nanos).unwrap();
    exp.duration_since(jiff::Timestamp::now()).as_secs_f64()
}

async fn status(daemon: &Daemon, name: &str) -> CredentialStatus {
    daemon
        .client()
        .await
        .list_credentials(ListCredentialsRequest {})
        .await
        .unwrap()
        .into_inner()
        .credentials
        .into_iter()
        .find(|c| c.name == name)
        .expect("credential listed")
}

/// Waits (bounded) until `name` is in `state`.
async fn wait_state(
    daemon: &Daemon,
    name: &str,
    state: CredentialState,
    within: Duration,
) -> CredentialStatus {
    let deadline = Instant::now() + within;
    loop {
        let s = status(daemon, name).await;
        if s.state == state as i32 {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "{name} never reached {state:?}: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Logs in at the server and hands the refresh token to the daemon, as
/// `tokenctl login` will. Returns the refresh token the login produced.
async fn login(daemon: &Daemon, server: &OidcServer, name: &str) -> String {
    let tokens = server
        .login(POST_CLIENT, AuthMethod::ClientSecretPost)
        .await;
    let rt = tokens
        .refresh_token
        .expect("a refresh token")
        .expose_secret()
        .to_owned();
    daemon
        .admin()
        .await
        .put_refresh_token(PutRefreshTokenRequest {
            credential: name.into(),
            refresh_token: rt.clone(),
            ..Default::default()
        })
        .await
        .expect("PutRefreshToken");
    rt
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_tokens_rotate_and_are_never_served_below_min_valid() {
    let s = setup(3, "", |srv| {
        refresh_credential("glean-sso", &srv.issuer, "1s")
    });
    let daemon = Daemon::start(&s.work);
    let mut c = daemon.client().await;

    // Before any login: a clear refusal naming the command.
    let e = c.get_headers(get("glean-sso")).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(
        e.message().contains("tokenctl login glean-sso"),
        "{}",
        e.message()
    );

    let first_rt = login(&daemon, &s.server, "glean-sso").await;
    let mut seen = HashSet::new();
    let mut last_token = String::new();
    let mut introspected = 0;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(10) {
        let r = c
            .get_headers(get("glean-sso"))
            .await
            .expect("GetHeaders")
            .into_inner();
        // tokend checks min_valid when it answers; allow the answer 100 ms
        // to reach this (busy, 2-core) client.
        let left = seconds_left(&r);
        assert!(
            left >= 0.9,
            "served a token with {left:.3}s left, min_valid is 1s"
        );
        assert_eq!(header(&r, "X-Glean-Auth-Type"), Some("OAUTH"));
        assert_eq!(r.headers[0].name, "Authorization");
        if seen.insert(r.token_fingerprint.clone()) {
            // A sample of served tokens, checked by the server itself.
            let i = s.server.introspect(access_token(&r)).await;
            assert_eq!(i["active"], true, "{i}");
            assert!(
                i["exp"].as_f64().unwrap() >= jiff::Timestamp::now().as_second() as f64,
                "{i}"
            );
            introspected += 1;
        }
        last_token = access_token(&r).to_owned();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        seen.len() >= 4,
        "only {} tokens over 10s with a 3s TTL",
        seen.len()
    );
    assert!(introspected >= 4);

    // The first refresh token died at its first use (rotation).
    let e = s
        .server
        .refresh_directly(&first_rt, POST_CLIENT)
        .await
        .unwrap_err();
    assert!(e.is_invalid_grant(), "{e}");
    // That replay made the server revoke the whole grant: the daemon's next
    // refresh fails for good, and says what to run.
    let e = daemon
        .admin()
        .await
        .refresh(RefreshRequest {
            credential: "glean-sso".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    let st = status(&daemon, "glean-sso").await;
    assert_eq!(st.state, CredentialState::NeedsLogin as i32, "{st:?}");
    assert!(
        st.last_error.contains("run `tokenctl login glean-sso`"),
        "{}",
        st.last_error
    );

    // Tokens never reach logs or the store's bytes in the clear.
    let store = std::fs::read(s.work.store_path()).unwrap();
    for secret in [first_rt.as_str(), last_token.as_str()] {
        assert!(
            !daemon.logs().contains(secret),
            "a token leaked into the logs"
        );
        assert!(
            !store.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "plaintext token in the store"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_points_never_loses_the_refresh_token() {
    let s = setup(2, "", |srv| refresh_credential("sso", &srv.issuer, "500ms"));
    let mut daemon = Daemon::start(&s.work);
    login(&daemon, &s.server, "sso").await;
    let mut fingerprints = HashSet::new();
    for cycle in 0..32 {
        // A random point of the ~2 s refresh cycle, outside the one window
        // no client can survive (the server rotated, the answer is not yet
        // stored): not while a refresh is in flight or about to start.
        tokio::time::sleep(Duration::from_millis(fastrand::u64(0..1500))).await;
        loop {
            let st = status(&daemon, "sso").await;
            let next = st
                .next_refresh
                .map(|t| t.seconds as f64 + f64::from(t.nanos) / 1e9);
            let now = jiff::Timestamp::now();
            let now = now.as_second() as f64 + f64::from(now.subsec_nanosecond()) / 1e9;
            let refreshing = st.state == CredentialState::Refreshing as i32;
            if !refreshing && next.is_none_or(|n| !(now - 0.05..now + 0.25).contains(&n)) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        daemon.signal(Signal::SIGKILL);
        daemon.wait();
        daemon = Daemon::start(&s.work);
        let r = daemon
            .client()
            .await
            .get_headers(get("sso"))
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "cycle {cycle}: no token after restart: {e:?}\n{}",
                    daemon.logs()
                )
            });
        fingerprints.insert(r.into_inner().token_fingerprint);
    }
    let st = status(&daemon, "sso").await;
    assert_ne!(st.state, CredentialState::NeedsLogin as i32, "{st:?}");
    let refreshes = s.server.stats().await["by_grant_type"]["refresh_token"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        refreshes >= 10,
        "only {refreshes} refreshes over 32 restarts"
    );
    assert!(fingerprints.len() >= 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_answer_and_commit_is_reported_exactly() {
    let s = setup(30, "", |srv| refresh_credential("sso", &srv.issuer, "1s"));
    let mut daemon = Daemon::start_env(&s.work, &[("TOKEND_TEST_CRASH_AFTER_TOKEN_RESPONSE", "1")]);
    // Storing the login's refresh token makes the daemon refresh at once;
    // the hook aborts it right after the server's answer.
    let tokens = s
        .server
        .login(POST_CLIENT, AuthMethod::ClientSecretPost)
        .await;
    let rt = tokens.refresh_token.unwrap().expose_secret().to_owned();
    let _ = daemon
        .admin()
        .await
        .put_refresh_token(PutRefreshTokenRequest {
            credential: "sso".into(),
            refresh_token: rt,
            ..Default::default()
        })
        .await;
    let exit = daemon.wait();
    assert!(!exit.success(), "the hook must abort the daemon");
    assert!(daemon.logs().contains("test hook: aborting"));

    let daemon = Daemon::start(&s.work);
    let e = daemon
        .client()
        .await
        .get_headers(get("sso"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(
        e.message()
            .contains("refresh token rotated by the server but lost in a crash"),
        "{}",
        e.message()
    );
    assert!(
        e.message().contains("run `tokenctl login sso`"),
        "{}",
        e.message()
    );
    let st = status(&daemon, "sso").await;
    assert_eq!(st.state, CredentialState::NeedsLogin as i32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_waiting_callers_share_one_token_request() {
    let (work, _server, proxy) = proxied(60);
    // A slow token endpoint: the daemon's first request takes 1.5 s, and
    // every caller arriving meanwhile must wait for that same request.
    proxy.set_mode_for("/token", Mode::Delay(Duration::from_millis(1500)));
    let text = format!(
        "{}\n{}",
        work.store_section(),
        cc_credential("glue", &token_endpoint(&proxy), "1s")
    );
    work.write_config("", &text);
    let daemon = Daemon::start(&work);
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..500 {
        let socket = daemon.socket.clone();
        calls.spawn(async move {
            // A few connections, many streams on each.
            tokio::time::sleep(Duration::from_millis(i % 5)).await;
            let mut c = common::connect(&socket).await;
            c.get_headers(get("glue"))
                .await
                .map(|r| r.into_inner().token_fingerprint)
        });
    }
    let mut fingerprints = HashSet::new();
    while let Some(r) = calls.join_next().await {
        fingerprints.insert(r.unwrap().expect("every waiting caller is served"));
    }
    assert_eq!(
        fingerprints.len(),
        1,
        "callers got different tokens: {fingerprints:?}"
    );
    assert_eq!(proxy.count("/token"), 1, "{:?}", proxy.requests());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_credentials_send_extra_form_fields_exactly() {
    let s = setup(60, "", |srv| {
        cc_credential("glue", &srv.token_endpoint(), "1s").to_string()
    });
    let daemon = Daemon::start(&s.work);
    daemon
        .client()
        .await
        .get_headers(get("glue"))
        .await
        .expect("a token");
    let requests = s.server.token_requests().await;
    let cc: Vec<_> = requests
        .iter()
        .filter(|r| r["form"]["grant_type"] == "client_credentials")
        .collect();
    assert_eq!(cc.len(), 1, "{requests:?}");
    let form = &cc[0]["form"];
    assert_eq!(form["subject"], "wks_123");
    assert_eq!(form["redirect_uri"], "https://glue.example/callback");
    assert_eq!(form["scope"], "api");
    assert_eq!(
        cc[0]["authorization"], true,
        "client_secret_basic uses the header"
    );
    assert!(form.get("client_secret").is_none(), "{form}");
}

/// A failing source is not a dead daemon: scripts get 7 ("try later") for
/// the first, 6 only for the second.
#[test]
fn tokenctl_tells_a_failing_refresh_from_an_unreachable_daemon() {
    let (work, _server, proxy) = proxied(60);
    proxy.set_mode_for("/token", Mode::Status(503));
    let text = format!(
        "{}\n{}",
        work.store_section(),
        cc_credential("glue", &token_endpoint(&proxy), "1s")
    );
    work.write_config("", &text);
    let mut daemon = Daemon::start(&work);
    let out = work.tokenctl(&["headers", "glue"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(7), "{err}");
    assert!(
        err.contains("no token valid for the required time yet"),
        "{err}"
    );
    assert!(err.contains("503"), "{err}");
    assert!(!err.contains("is the daemon running"), "{err}");
    daemon.stop();
    let out = work.tokenctl(&["headers", "glue"]);
    assert_eq!(out.status.code(), Some(6), "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_back_off_keep_serving_the_valid_token_and_recover() {
    let (work, _server, proxy) = proxied(60);
    let text = format!(
        "{}\n{}",
        work.store_section(),
        cc_credential("glue", &token_endpoint(&proxy), "1s")
    );
    work.write_config("http_timeout = \"1s\"\nmax_backoff = \"4s\"", &text);
    let daemon = Daemon::start(&work);
    let mut c = daemon.client().await;
    let mut current = c
        .get_headers(get("glue"))
        .await
        .unwrap()
        .into_inner()
        .token_fingerprint;

    // (mode, least spacing between attempts)
    let faults = [
        (Mode::Status(503), Duration::from_millis(100)),
        (
            Mode::TooManyRequests {
                retry_after_secs: 2,
            },
            Duration::from_millis(1950),
        ),
        (Mode::Reset, Duration::from_millis(100)),
        (Mode::BlackHole, Duration::from_millis(1000)),
    ];
    for (mode, spacing) in faults {
        proxy.set_mode_for("/token", mode.clone());
        proxy.reset_counts();
        // An admin's refresh (not `Invalidate`, after which the reported
        // token is withheld): the current token stays valid and served.
        let mut admin = daemon.admin().await;
        tokio::spawn(async move {
            let _ = admin
                .refresh(RefreshRequest {
                    credential: "glue".into(),
                })
                .await;
        });
        let watching = Instant::now();
        while watching.elapsed() < Duration::from_secs(3) {
            let r = c
                .get_headers(get("glue"))
                .await
                .unwrap_or_else(|e| panic!("{mode:?}: {e:?}"));
            let r = r.into_inner();
            assert_eq!(
                r.token_fingerprint, current,
                "{mode:?}: still the old, valid token"
            );
            assert!(!r.stale);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let st = status(&daemon, "glue").await;
        assert_eq!(st.state, CredentialState::Stale as i32, "{mode:?}: {st:?}");
        assert!(
            st.last_error.contains("refresh failing"),
            "{}",
            st.last_error
        );
        let attempts: Vec<Instant> = proxy
            .requests()
            .iter()
            .filter(|r| r.path.starts_with("/token"))
            .map(|r| r.at)
            .collect();
        assert!(
            (2..=12).contains(&attempts.len()),
            "{mode:?}: {} attempts in 3s",
            attempts.len()
        );
        for pair in attempts.windows(2) {
            let gap = pair[1] - pair[0];
            assert!(
                gap >= spacing,
                "{mode:?}: attempts {gap:?} apart, want at least {spacing:?}"
            );
        }
        // Back to normal: the daemon recovers on its own.
        proxy.clear_modes_for();
        current = wait_for_new_token(&mut c, &get("glue"), &current, Duration::from_secs(8)).await;
        wait_state(
            &daemon,
            "glue",
            CredentialState::Fresh,
            Duration::from_secs(2),
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_grants_need_login_and_rotated_secrets_are_misconfigured() {
    let s = setup(30, "", |srv| refresh_credential("sso", &srv.issuer, "1s"));
    let daemon = Daemon::start(&s.work);
    login(&daemon, &s.server, "sso").await;
    let mut admin = daemon.admin().await;
    let refresh = || RefreshRequest {
        credential: "sso".into(),
    };

    s.server.revoke_grants().await;
    let e = admin.refresh(refresh()).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    let st = status(&daemon, "sso").await;
    assert_eq!(st.state, CredentialState::NeedsLogin as i32);
    assert!(st.last_error.contains("invalid_grant"), "{}", st.last_error);
    assert!(
        st.last_error.contains("run `tokenctl login sso`"),
        "{}",
        st.last_error
    );
    let e = daemon
        .client()
        .await
        .get_headers(get("sso"))
        .await
        .unwrap_err();
    assert!(
        e.message().contains("tokenctl login sso"),
        "{}",
        e.message()
    );
    // No more calls to the server while it needs a person.
    let before = s.server.stats().await["token_requests"].as_u64().unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        s.server.stats().await["token_requests"].as_u64().unwrap(),
        before
    );
    // A new login recovers it.
    login(&daemon, &s.server, "sso").await;
    wait_state(
        &daemon,
        "sso",
        CredentialState::Fresh,
        Duration::from_secs(5),
    )
    .await;
    daemon
        .client()
        .await
        .get_headers(get("sso"))
        .await
        .expect("served again");

    s.server
        .rotate_secret(POST_CLIENT.0, "rotated-upstream")
        .await;
    let e = admin.refresh(refresh()).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    let st = status(&daemon, "sso").await;
    assert_eq!(st.state, CredentialState::Misconfigured as i32, "{st:?}");
    assert!(
        st.last_error.contains("invalid_client"),
        "{}",
        st.last_error
    );
    assert!(st.last_error.contains("client_secret"), "{}", st.last_error);
    // Once the secret matches again, a refresh recovers.
    s.server.rotate_secret(POST_CLIENT.0, POST_CLIENT.1).await;
    admin
        .refresh(refresh())
        .await
        .expect("refresh with the right secret");
    wait_state(
        &daemon,
        "sso",
        CredentialState::Fresh,
        Duration::from_secs(2),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_is_encrypted_private_and_never_overwritten_with_a_wrong_key() {
    use std::os::unix::fs::PermissionsExt;
    let s = setup(30, "", |srv| refresh_credential("sso", &srv.issuer, "1s"));
    let canary_rt = "rt-CANARY-9f1c2b7e";
    let canary_at = "at-CANARY-4d8e0a61";
    let mut daemon = Daemon::start(&s.work);
    let exp = jiff::Timestamp::now().as_second() + 3600;
    daemon
        .admin()
        .await
        .put_refresh_token(PutRefreshTokenRequest {
            credential: "sso".into(),
            refresh_token: canary_rt.into(),
            access_token: canary_at.into(),
            access_token_expires_at: Some(prost_types::Timestamp {
                seconds: exp,
                nanos: 0,
            }),
        })
        .await
        .expect("PutRefreshToken");
    assert!(daemon.stop().success());
    let store = std::fs::read(s.work.store_path()).unwrap();
    assert!(
        !store.windows(6).any(|w| w == b"CANARY"),
        "plaintext secrets in the store file"
    );
    assert_no_secret("the store", &String::from_utf8_lossy(&store));
    assert!(
        !daemon.logs().contains("CANARY"),
        "a token reached the logs"
    );
    let mode = std::fs::metadata(s.work.store_path())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    // Restarted, it serves the stored access token without a refresh.
    let mut daemon = Daemon::start(&s.work);
    let r = daemon
        .client()
        .await
        .get_headers(get("sso"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        header(&r, "Authorization"),
        Some(format!("Bearer {canary_at}").as_str())
    );
    assert!(daemon.stop().success());

    let start = |work: &Workdir| {
        std::process::Command::new(env!("CARGO_BIN_EXE_tokend"))
            .arg("--config")
            .arg(work.config_path())
            .output()
            .unwrap()
    };
    let key = s.work.path().join("store.key");
    // A key others can read is refused.
    common::set_mode(&key, 0o644);
    let out = start(&s.work);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("store key") && err.contains("chmod 600"),
        "{err}"
    );
    // The wrong key: refused, and the store is left exactly as it was.
    std::fs::write(&key, [0x5a; 32]).unwrap();
    common::set_mode(&key, 0o600);
    let hash = || {
        use sha2::Digest as _;
        sha2::Sha256::digest(std::fs::read(s.work.store_path()).unwrap())
    };
    let before = hash();
    let out = start(&s.work);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("cannot be decrypted with key") && err.contains("left it untouched"),
        "{err}"
    );
    assert!(hash() == before, "the store changed under a wrong key");
    assert!(!err.contains("CANARY"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_get_every_rotation_in_order_without_duplicates() {
    let s = setup(2, "", |srv| {
        cc_credential("glue", &srv.token_endpoint(), "500ms").to_string()
    });
    let daemon = Daemon::start(&s.work);
    let mut watchers = Vec::new();
    for _ in 0..3 {
        let mut c = daemon.client().await;
        let mut stream = c
            .watch_headers(get("glue"))
            .await
            .expect("watch")
            .into_inner();
        watchers.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            let end = Instant::now() + Duration::from_secs(7);
            while let Ok(Ok(Some(r))) = tokio::time::timeout_at(end.into(), stream.message()).await
            {
                assert!(seconds_left(&r) >= 0.4, "pushed a token below min_valid");
                seen.push(r.token_fingerprint);
            }
            seen
        }));
    }
    let mut runs = Vec::new();
    for w in watchers {
        runs.push(w.await.unwrap());
    }
    for run in &runs {
        let unique: HashSet<_> = run.iter().collect();
        assert_eq!(unique.len(), run.len(), "duplicates: {run:?}");
        assert!(run.len() >= 4, "too few rotations seen: {run:?}");
    }
    // Same tokens in the same order for every watcher: keeping only those
    // all of them saw (they start and stop a moment apart), the runs match.
    let common: HashSet<&String> = runs[0]
        .iter()
        .filter(|f| runs.iter().all(|r| r.contains(f)))
        .collect();
    assert!(common.len() >= 3, "{runs:?}");
    let filtered: Vec<Vec<&String>> = runs
        .iter()
        .map(|r| r.iter().filter(|f| common.contains(f)).collect())
        .collect();
    assert!(filtered.windows(2).all(|w| w[0] == w[1]), "{runs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_reports_of_one_rejected_token_cause_one_refresh() {
    let (work, _server, proxy) = proxied(600);
    let text = format!(
        "{}\n{}",
        work.store_section(),
        cc_credential("glue", &token_endpoint(&proxy), "1s")
    );
    work.write_config("", &text);
    let daemon = Daemon::start(&work);
    let old = daemon
        .client()
        .await
        .get_headers(get("glue"))
        .await
        .unwrap()
        .into_inner()
        .token_fingerprint;
    proxy.reset_counts();
    let mut reports = tokio::task::JoinSet::new();
    for _ in 0..100 {
        let mut c = daemon.client().await;
        let fp = old.clone();
        reports.spawn(async move {
            c.invalidate(InvalidateRequest {
                credential: "glue".into(),
                token_fingerprint: fp,
            })
            .await
            .unwrap()
            .into_inner()
            .refreshing
        });
    }
    while let Some(r) = reports.join_next().await {
        r.unwrap();
    }
    let mut client = daemon.client().await;
    let new = wait_for_new_token(&mut client, &get("glue"), &old, Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(proxy.count("/token"), 1, "{:?}", proxy.requests());
    // A report about the token already replaced is ignored.
    let r = daemon
        .client()
        .await
        .invalidate(InvalidateRequest {
            credential: "glue".into(),
            token_fingerprint: old,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!r.refreshing);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(proxy.count("/token"), 1);
    let now = daemon
        .client()
        .await
        .get_headers(get("glue"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(now.token_fingerprint, new);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_stale_hands_out_a_still_valid_token_only_where_allowed() {
    let (work, _server, proxy) = proxied(4);
    let endpoint = token_endpoint(&proxy);
    let lenient = cc_credential("lenient", &endpoint, "3s").with("serve_stale = true");
    let strict = cc_credential("strict", &endpoint, "3s");
    work.write_config(
        "",
        &format!("{}\n{lenient}\n{strict}", work.store_section()),
    );
    let daemon = Daemon::start(&work);
    let mut c = daemon.client().await;
    let first = c.get_headers(get("lenient")).await.unwrap().into_inner();
    c.get_headers(get("strict")).await.unwrap();
    proxy.set_mode_for("/token", Mode::Status(503));
    // Each token lives 4 s and must have 3 s left: from 1 s on, only a
    // refresh could satisfy min_valid, and every refresh now fails.
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let r = c
        .get_headers(get("lenient"))
        .await
        .expect("stale but valid")
        .into_inner();
    assert!(r.stale, "flagged stale");
    assert_eq!(r.token_fingerprint, first.token_fingerprint);
    let left = seconds_left(&r);
    assert!(left > 0.0 && left < 3.0, "{left}");
    let mut req = tonic::Request::new(get("strict"));
    req.set_timeout(Duration::from_millis(500));
    let e = c.get_headers(req).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(e.message().contains("refresh failing"), "{}", e.message());
    // Past expiry not even the lenient credential serves it.
    tokio::time::sleep(Duration::from_millis(2600)).await;
    let mut req = tonic::Request::new(get("lenient"));
    req.set_timeout(Duration::from_millis(300));
    let e = c.get_headers(req).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
}
