//! The real daemon against a hostile token endpoint (`common::hostile`):
//! huge bodies are cut off at the limit, a rotated refresh token in an
//! unusable answer is kept, and tokens dead on arrival back off instead of
//! storming the endpoint.

mod common;

use std::time::{Duration, Instant};

use common::hostile::{Hostile, Mode};
use common::{Daemon, Workdir};
use tokend::proto::{GetHeadersRequest, PutRefreshTokenRequest};
use tonic::Code;

fn start(credential: &str) -> (Workdir, Daemon) {
    common::require_root();
    let work = Workdir::new();
    common::write_secret(&work.path().join("client-secret"), "hostile-client-secret");
    let config = format!("{}\n{credential}", work.store_section());
    work.write_config("", &config);
    let daemon = Daemon::start(&work);
    (work, daemon)
}

/// The daemon with one `oauth_client_credentials` credential `cc` at
/// `hostile`.
fn start_client_credentials(hostile: &Hostile) -> (Workdir, Daemon) {
    start(&credential(
        "cc",
        "oauth_client_credentials",
        &hostile.token_endpoint(),
    ))
}

fn credential(name: &str, kind: &str, endpoint: &str) -> String {
    format!(
        r#"
[[credential]]
name = "{name}"
kind = "{kind}"
token_endpoint = "{endpoint}"
client_id = "tokend"
client_secret = {{ file = "client-secret" }}
auth_method = "client_secret_post"
min_valid = "60s"
allow = {{ uids = [0] }}
"#
    )
}

/// `GetHeaders` for `name`, waiting at most 3 s for a refresh.
fn get(name: &str) -> tonic::Request<GetHeadersRequest> {
    let mut req = tonic::Request::new(GetHeadersRequest {
        credential: name.into(),
        ..Default::default()
    });
    req.set_timeout(Duration::from_secs(3));
    req
}

fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// A 300 MB answer used to be buffered whole (+436 MB RSS).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_token_answer_is_cut_off_at_the_limit() {
    let hostile = Hostile::start(Mode::HugeBody { bytes: 300 << 20 });
    let (_work, daemon) = start_client_credentials(&hostile);
    let before = rss_kib(daemon.pid());
    let e = daemon
        .client()
        .await
        .get_headers(get("cc"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(
        e.message().contains("over the 1 MiB limit"),
        "{}",
        e.message()
    );
    let grown = rss_kib(daemon.pid()).saturating_sub(before);
    assert!(grown < 64 * 1024, "the daemon grew by {grown} KiB");
}

/// The server rotated the refresh token in an answer whose access token
/// was unusable; the daemon used to drop it and replay the old one (which
/// strict servers punish by revoking the grant).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_refresh_token_in_an_unusable_answer_is_presented_next() {
    let hostile = Hostile::start(Mode::RotatedButUnusable);
    let (_work, daemon) = start(&credential(
        "sso",
        "oauth_refresh",
        &hostile.token_endpoint(),
    ));
    // Putting a refresh token refreshes at once: the answer is unusable.
    let e = daemon
        .admin()
        .await
        .put_refresh_token(PutRefreshTokenRequest {
            credential: "sso".into(),
            refresh_token: "rt-0".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    let mut client = daemon.client().await;
    assert!(
        e.message().contains("cannot go in a header"),
        "{}",
        e.message()
    );
    common::assert_no_secret("the error", e.message());
    assert!(!e.message().contains("not usable"), "{}", e.message());
    hostile.set_mode(Mode::Valid { expires_in: 3600 });
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.get_headers(get("sso")).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "never recovered: {:?}",
            hostile.presented()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let presented = hostile.presented();
    assert_eq!(presented[0], "rt-0", "{presented:?}");
    assert!(
        presented[1..].iter().all(|rt| rt != "rt-0"),
        "the old refresh token was replayed: {presented:?}"
    );
    assert_eq!(presented[1], "rt-1", "{presented:?}");
}

/// `expires_in: 0` (and lifetimes under min_valid) used to cause 117 token
/// requests in 5 s with no caller, 233 from one `tokenctl headers`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_dead_on_arrival_back_off_and_say_why() {
    let hostile = Hostile::start(Mode::Valid { expires_in: 0 });
    let (_work, daemon) = start_client_credentials(&hostile);
    let mut client = daemon.client().await;
    let started = Instant::now();
    let e = client.get_headers(get("cc")).await.unwrap_err();
    assert!(
        e.message()
            .contains("access tokens live 0s, no longer than min_valid"),
        "{}",
        e.message()
    );
    tokio::time::sleep(Duration::from_secs(4).saturating_sub(started.elapsed())).await;
    let n = hostile.requests();
    assert!((1..=12).contains(&n), "{n} token requests in 4 s");
}

/// One caller reporting every new token as rejected forced 227 refreshes
/// in 10 s; now 3 at once, then one per 2 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidate_cannot_make_tokend_refresh_without_pause() {
    use tokend::proto::InvalidateRequest;
    let hostile = Hostile::start(Mode::Valid { expires_in: 3600 });
    let (_work, daemon) = start_client_credentials(&hostile);
    let mut client = daemon.client().await;
    let started = Instant::now();
    let mut refused = 0;
    while started.elapsed() < Duration::from_secs(3) {
        let fp = client
            .get_headers(get("cc"))
            .await
            .unwrap()
            .into_inner()
            .token_fingerprint;
        match client
            .invalidate(InvalidateRequest {
                credential: "cc".into(),
                token_fingerprint: fp,
            })
            .await
        {
            Ok(_) => {}
            Err(e) => {
                assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
                assert!(
                    e.message().contains("at most one every 2s"),
                    "{}",
                    e.message()
                );
                refused += 1;
            }
        }
    }
    assert!(refused > 10, "only {refused} reports refused");
    let n = hostile.requests();
    // The first fetch, 3 at once, one more per 2 s.
    assert!(n <= 6, "{n} token requests in 3 s of reports");
}

/// The typed client's reqwest helper against the real daemon and an API
/// that refuses the first token it sees: the request carries tokend's
/// headers, the 401 reports the token, and the one retry carries the
/// replacement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_helper_reports_a_refused_token_and_retries_once() {
    use std::sync::{Arc, Mutex};
    let hostile = Hostile::start(Mode::Valid { expires_in: 3600 });
    let (_work, daemon) = start_client_credentials(&hostile);
    // An API that answers 401 to the first bearer token it is shown.
    let api = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api_url = format!("http://{}/rest/api/v1/search", api.local_addr().unwrap());
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let log = Arc::clone(&seen);
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        loop {
            let (mut s, _) = api.accept().await.unwrap();
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                let mut buf = vec![0; 8192];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase();
                let auth = head
                    .lines()
                    .find_map(|l| l.strip_prefix("authorization: "))
                    .unwrap_or_default()
                    .to_owned();
                let first = {
                    let mut log = log.lock().unwrap();
                    log.push(auth.clone());
                    log.len() == 1
                };
                let status = if first { "401 Unauthorized" } else { "200 OK" };
                let _ = s
                    .write_all(format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").as_bytes())
                    .await;
            });
        }
    });
    let client = daemon.typed().await;
    let http = tokend::oauth::http_client(Duration::from_secs(5));
    let response = tokend_client::sign::send(
        &client,
        &tokend_client::HeadersRequest::new("cc"),
        http.post(&api_url).body("{}"),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 200);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "one request and one retry: {seen:?}");
    assert!(seen[0].starts_with("bearer at-"), "{seen:?}");
    assert_ne!(seen[0], seen[1], "the retry carries the replacement");
    assert_eq!(hostile.requests(), 2, "one refresh");
}
