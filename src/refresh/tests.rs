use super::login::supports_login;
use super::*;
use crate::credential::Schedule;

fn ts(s: i64) -> Timestamp {
    Timestamp::from_second(s).unwrap()
}

const SCHEDULE: Schedule = Schedule {
    refresh_before: Duration::ZERO,
    refresh_fraction: 1.0 / 3.0,
    default_lifetime: Duration::from_secs(3600),
};

#[test]
fn refresh_lands_between_half_and_two_thirds_of_the_lifetime() {
    for jitter in [0.0, 0.5, 1.0] {
        let at = refresh_at(ts(0), ts(3600), &SCHEDULE, Duration::from_secs(60), jitter);
        assert!((1800..=2400).contains(&at.as_second()), "{jitter}: {at}");
    }
    assert_eq!(
        refresh_at(ts(0), ts(3600), &SCHEDULE, Duration::ZERO, 0.0).as_second(),
        2400
    );
    assert_eq!(
        refresh_at(ts(0), ts(3600), &SCHEDULE, Duration::ZERO, 1.0).as_second(),
        1800
    );
}

#[test]
fn refresh_respects_min_valid_and_refresh_before() {
    // min_valid later than the fraction would allow: min_valid wins.
    let at = refresh_at(ts(0), ts(60), &SCHEDULE, Duration::from_secs(50), 0.0);
    assert_eq!(at.as_second(), 10);
    let s = Schedule {
        refresh_before: Duration::from_secs(3000),
        ..SCHEDULE
    };
    assert_eq!(
        refresh_at(ts(0), ts(3600), &s, Duration::ZERO, 0.0).as_second(),
        600
    );
    // A token shorter-lived than min_valid: renew at half-life, not in a loop.
    assert_eq!(
        refresh_at(ts(0), ts(10), &SCHEDULE, Duration::from_secs(60), 0.0).as_second(),
        5
    );
}

#[test]
fn logins_need_s256_and_the_configured_client_authentication() {
    use oauth::AuthMethod::{ClientSecretBasic, ClientSecretPost};
    let metadata = |pkce: &[&str], auth: &[&str]| oauth::Metadata {
        issuer: None,
        token_endpoint: "https://as.example/token".into(),
        authorization_endpoint: Some("https://as.example/auth".into()),
        revocation_endpoint: None,
        code_challenge_methods_supported: pkce.iter().map(|s| s.to_string()).collect(),
        token_endpoint_auth_methods_supported: auth.iter().map(|s| s.to_string()).collect(),
    };
    assert!(
        supports_login(
            &metadata(&["S256"], &["client_secret_post"]),
            ClientSecretPost,
            "x"
        )
        .is_ok()
    );
    let e = supports_login(&metadata(&["plain"], &[]), ClientSecretBasic, "x").unwrap_err();
    assert!(e.contains("does not advertise S256 PKCE"), "{e}");
    let e = supports_login(
        &metadata(&["S256"], &["client_secret_basic"]),
        ClientSecretPost,
        "x",
    )
    .unwrap_err();
    assert!(
        e.contains("does not support auth_method `client_secret_post`"),
        "{e}"
    );
    // Nothing listed: RFC 8414's default, client_secret_basic, only.
    assert!(supports_login(&metadata(&["S256"], &[]), ClientSecretBasic, "x").is_ok());
    assert!(supports_login(&metadata(&["S256"], &[]), ClientSecretPost, "x").is_err());
}

proptest::proptest! {
    /// For any lifetime, clock and jitter the refresh time lies within
    /// the token's life, never later than `expires − min_valid` when the
    /// token lives longer than that, and never later than the schedule's
    /// lead unless that would be before issue.
    #[test]
    fn refresh_time_is_inside_the_allowed_window(
        issued in 0i64..4_000_000_000,
        lifetime in 1u64..(10 * 365 * 86_400),
        min_valid in 0u64..(20 * 86_400),
        refresh_before in 0u64..(20 * 86_400),
        fraction in 0.0f64..1.0,
        jitter in 0.0f64..=1.0,
    ) {
        let schedule = Schedule {
            refresh_before: Duration::from_secs(refresh_before),
            refresh_fraction: fraction,
            default_lifetime: Duration::from_secs(3600),
        };
        let (issued_at, expires) = (ts(issued), ts(issued + lifetime as i64));
        let min_valid = Duration::from_secs(min_valid);
        let at = refresh_at(issued_at, expires, &schedule, min_valid, jitter);
        proptest::prop_assert!(at >= issued_at && at <= expires, "{at} outside the life");
        if lifetime > min_valid.as_secs() {
            let latest = expires.as_second() - min_valid.as_secs() as i64;
            proptest::prop_assert!(at.as_second() <= latest, "{at} later than expires - min_valid");
            let lead = refresh_before.max((lifetime as f64 * fraction) as u64) as i64;
            if expires.as_second() - lead > issued {
                proptest::prop_assert!(at.as_second() <= expires.as_second() - lead + 1);
            }
        } else {
            proptest::prop_assert!(at < expires, "a short-lived token must still be renewed");
        }
    }

    /// Backoff stays between 100 ms and its cap (or Retry-After, capped
    /// at an hour), and never undercuts Retry-After.
    #[test]
    fn backoff_respects_its_cap_and_retry_after(
        failures in 0u32..100,
        cap in 1u64..3600,
        retry_after in proptest::option::of(0u64..100_000),
        unit in 0.0f64..=1.0,
    ) {
        let cap = Duration::from_secs(cap);
        let ra = retry_after.map(Duration::from_secs);
        let d = backoff(failures, cap, ra, unit);
        let honoured = ra.map_or(Duration::ZERO, |r| r.min(Duration::from_secs(3600)));
        proptest::prop_assert!(d >= Duration::from_millis(100));
        proptest::prop_assert!(d >= honoured);
        proptest::prop_assert!(d <= cap.max(honoured).max(Duration::from_millis(100)));
    }
}

#[test]
fn backoff_grows_is_capped_and_honours_retry_after() {
    let cap = Duration::from_secs(300);
    assert_eq!(backoff(0, cap, None, 1.0), Duration::from_secs(1));
    assert_eq!(backoff(3, cap, None, 1.0), Duration::from_secs(8));
    assert_eq!(backoff(30, cap, None, 1.0), cap);
    assert_eq!(backoff(30, cap, None, 0.0), Duration::from_millis(100));
    assert_eq!(
        backoff(0, cap, Some(Duration::from_secs(7)), 0.5),
        Duration::from_secs(7)
    );
    assert_eq!(
        backoff(0, cap, Some(Duration::from_secs(99_999)), 0.5),
        Duration::from_secs(3600)
    );
}

// The driver's state machine under paused tokio time: a fake token endpoint
// in-process, the real store in a temp dir, the broker in front. Hours of
// schedule run in milliseconds, and nothing sleeps for real.
mod driver {
    use std::path::Path;
    use std::sync::Arc;
    use std::time::Duration;

    use jiff::Timestamp;
    use zeroize::Zeroizing;

    use crate::broker::{Broker, BrokerError, HeadersRequest};
    use crate::clock::{self, Tokio};
    use crate::config;
    use crate::peer::Peer;
    use crate::store::{Record, Store};
    use crate::testing::{self, Answer, FakeEndpoint};

    const HOUR: Duration = Duration::from_secs(3600);

    fn origin() -> Timestamp {
        "2030-01-01T00:00:00Z".parse().unwrap()
    }

    fn root() -> Peer {
        Peer {
            uid: 0,
            gid: 0,
            pid: Some(1),
            groups: Box::new([]),
            exe: None,
        }
    }

    /// A broker holding one OAuth credential `c` of `kind` (plus `extra`
    /// TOML lines), with `endpoint` and a store in `dir`.
    fn broker(
        dir: &Path,
        kind: &str,
        extra: &str,
        endpoint: &Arc<FakeEndpoint>,
        record: Option<Record>,
    ) -> (Arc<Broker>, Arc<Store>) {
        let toml = format!(
            "[[credential]]\nname = \"c\"\nkind = \"{kind}\"\n\
             token_endpoint = \"https://as.example/token\"\nclient_id = \"tokend\"\n\
             auth_method = \"none\"\nallow = {{ uids = [0] }}\n{extra}\n"
        );
        let config = config::parse(Path::new("/etc/tokend.toml"), &toml).unwrap();
        let store = testing::store(dir);
        if let Some(record) = record {
            store.put("c", &record).unwrap();
        }
        let clock = Tokio::new(origin());
        let endpoint: Arc<dyn crate::oauth::TokenEndpoint> = endpoint.clone();
        let services = testing::services(Some(Arc::clone(&store)), endpoint, clock);
        let broker = Broker::start(config.credentials, config.daemon.admins, services).unwrap();
        (Arc::new(broker), store)
    }

    /// A broker holding `n` client-credentials credentials `c0`… at one
    /// issuer, whose gate lets `limit` requests in flight.
    fn many(dir: &Path, n: usize, limit: usize, endpoint: &Arc<FakeEndpoint>) -> Arc<Broker> {
        let toml: String = (0..n)
            .map(|i| {
                format!(
                    "[[credential]]\nname = \"c{i}\"\nkind = \"oauth_client_credentials\"\n\
                     token_endpoint = \"https://as.example/token\"\nclient_id = \"t{i}\"\n\
                     auth_method = \"none\"\nallow = {{ uids = [0] }}\n"
                )
            })
            .collect();
        let config = config::parse(Path::new("/etc/tokend.toml"), &toml).unwrap();
        let clock = Tokio::new(origin());
        let endpoint: Arc<dyn crate::oauth::TokenEndpoint> = endpoint.clone();
        let mut services = testing::services(Some(testing::store(dir)), endpoint, clock);
        services.refresh.gates = Arc::new(crate::refresh::Gates::new(limit));
        Arc::new(Broker::start(config.credentials, config.daemon.admins, services).unwrap())
    }

    async fn fetch_named(b: &Broker, name: &str, wait: Duration) -> Result<String, BrokerError> {
        let req = HeadersRequest {
            credential: name,
            ..Default::default()
        };
        b.get_headers(&root(), req, wait)
            .await
            .map(|g| g.token.fingerprint.clone())
    }

    /// Fifty credentials starting together at one issuer: never more than
    /// the gate's limit in flight, and all of them served.
    #[tokio::test(start_paused = true)]
    async fn an_issuer_sees_at_most_its_limit_in_flight() {
        let dir = tempfile::tempdir().unwrap();
        let endpoint = FakeEndpoint::new(Duration::from_millis(200), HOUR);
        let b = many(dir.path(), 50, 3, &endpoint);
        for i in 0..50 {
            fetch_named(&b, &format!("c{i}"), Duration::from_secs(30))
                .await
                .unwrap();
        }
        assert_eq!(endpoint.calls(), 50);
        assert_eq!(
            endpoint
                .max_in_flight
                .load(std::sync::atomic::Ordering::SeqCst),
            3
        );
        b.shutdown().await;
    }

    /// A `Retry-After` told to one credential holds back every credential
    /// of that issuer, not only the one that got it.
    #[tokio::test(start_paused = true)]
    async fn retry_after_slows_every_credential_of_the_issuer() {
        let endpoint = FakeEndpoint::new(Duration::from_secs(1), HOUR);
        endpoint.then(FakeEndpoint::unavailable(Some(Duration::from_secs(60))));
        let dir = tempfile::tempdir().unwrap();
        let b = many(dir.path(), 2, 1, &endpoint);
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert_eq!(endpoint.calls(), 1, "the second credential waited too");
        tokio::time::sleep(Duration::from_secs(40)).await;
        assert_eq!(endpoint.calls(), 3, "both asked once the pause was over");
        for name in ["c0", "c1"] {
            fetch_named(&b, name, Duration::ZERO).await.unwrap();
        }
        b.shutdown().await;
    }

    fn logged_in() -> Option<Record> {
        Some(Record {
            refresh_token: Some(Zeroizing::new("rt-1".into())),
            ..Record::default()
        })
    }

    async fn fetch(b: &Broker, wait: Duration) -> Result<(String, bool), BrokerError> {
        let req = HeadersRequest {
            credential: "c",
            ..Default::default()
        };
        b.get_headers(&root(), req, wait)
            .await
            .map(|g| (g.token.fingerprint.clone(), g.stale))
    }

    #[tokio::test(start_paused = true)]
    async fn renews_between_half_and_two_thirds_of_the_lifetime() {
        let dir = tempfile::tempdir().unwrap();
        let endpoint = FakeEndpoint::new(Duration::ZERO, HOUR);
        let (b, _) = broker(dir.path(), "oauth_client_credentials", "", &endpoint, None);
        let first = fetch(&b, Duration::from_secs(10)).await.unwrap().0;
        assert_eq!(endpoint.calls(), 1);
        tokio::time::sleep(Duration::from_secs(1790)).await;
        assert_eq!(endpoint.calls(), 1, "renewed before half the lifetime");
        tokio::time::sleep(Duration::from_secs(620)).await;
        assert_eq!(
            endpoint.calls(),
            2,
            "not renewed by two thirds of the lifetime"
        );
        let second = fetch(&b, Duration::from_secs(10)).await.unwrap().0;
        assert_ne!(first, second);
        b.shutdown().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_thousand_waiting_callers_share_one_request() {
        let dir = tempfile::tempdir().unwrap();
        let endpoint = FakeEndpoint::new(Duration::from_secs(2), HOUR);
        let (b, _) = broker(dir.path(), "oauth_client_credentials", "", &endpoint, None);
        let callers: Vec<_> = (0..1000)
            .map(|_| {
                let b = Arc::clone(&b);
                tokio::spawn(async move { fetch(&b, Duration::from_secs(10)).await })
            })
            .collect();
        let mut fingerprints = std::collections::HashSet::new();
        for c in callers {
            fingerprints.insert(c.await.unwrap().unwrap().0);
        }
        assert_eq!(endpoint.calls(), 1, "exactly one upstream request");
        assert_eq!(fingerprints.len(), 1, "every caller got the same token");
        b.shutdown().await;
    }

    #[tokio::test(start_paused = true)]
    async fn retries_back_off_and_honour_retry_after() {
        let dir = tempfile::tempdir().unwrap();
        let endpoint = FakeEndpoint::new(Duration::ZERO, HOUR);
        endpoint.then(FakeEndpoint::unavailable(Some(Duration::from_secs(120))));
        let (b, _) = broker(dir.path(), "oauth_client_credentials", "", &endpoint, None);
        let e = fetch(&b, Duration::from_secs(5)).await.unwrap_err();
        assert!(
            matches!(&e, BrokerError::Unavailable { reason, .. } if reason.contains("503")),
            "{e}"
        );
        assert_eq!(endpoint.calls(), 1);
        // Callers keep asking, but the driver waits out Retry-After.
        for _ in 0..10 {
            assert!(fetch(&b, Duration::from_secs(10)).await.is_err());
        }
        assert_eq!(endpoint.calls(), 1, "retried before Retry-After");
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert!(fetch(&b, Duration::from_secs(10)).await.is_ok());
        assert_eq!(endpoint.calls(), 2);
        b.shutdown().await;
    }

    #[tokio::test(start_paused = true)]
    async fn invalid_grant_needs_a_login_and_stops_calling() {
        let dir = tempfile::tempdir().unwrap();
        let endpoint = FakeEndpoint::new(Duration::ZERO, HOUR);
        endpoint.then(FakeEndpoint::invalid_grant());
        let (b, store) = broker(dir.path(), "oauth_refresh", "", &endpoint, logged_in());
        let e = fetch(&b, Duration::from_secs(10)).await.unwrap_err();
        assert!(matches!(e, BrokerError::NeedsLogin { .. }), "{e}");
        assert!(e.to_string().contains("tokenctl login c"), "{e}");
        tokio::time::sleep(10 * HOUR).await;
        assert!(fetch(&b, Duration::from_secs(10)).await.is_err());
        assert_eq!(endpoint.calls(), 1, "a dead grant is not presented again");
        assert_eq!(*endpoint.presented.lock().unwrap(), ["rt-1"]);
        // An admin's refresh answers the same class, typed by the driver.
        let e = b.refresh(&root(), "c").await.unwrap_err();
        assert!(matches!(e, BrokerError::NeedsLogin { .. }), "{e}");
        let record = store.get("c").unwrap().unwrap();
        assert!(
            record.needs_login.is_some(),
            "the reason is kept for restarts"
        );
        b.shutdown().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_rotated_refresh_token_is_stored_before_it_is_served() {
        let dir = tempfile::tempdir().unwrap();
        let endpoint = FakeEndpoint::new(Duration::ZERO, HOUR);
        endpoint.then(Answer::Tokens {
            lifetime: HOUR,
            refresh_token: Some("rt-2"),
        });
        let (b, store) = broker(dir.path(), "oauth_refresh", "", &endpoint, logged_in());
        fetch(&b, Duration::from_secs(10)).await.unwrap();
        let record = store.get("c").unwrap().unwrap();
        assert_eq!(
            record.refresh_token.as_deref().map(String::as_str),
            Some("rt-2")
        );
        assert_eq!(
            record.previous_refresh_token, None,
            "the consumed token is kept only for the opt-in retry"
        );
        assert_eq!(
            record.refreshing_since, None,
            "the in-flight marker is cleared"
        );
        tokio::time::sleep(HOUR).await;
        assert_eq!(*endpoint.presented.lock().unwrap(), ["rt-1", "rt-2"]);
        b.shutdown().await;
    }

    /// A refused refresh token is never followed by the consumed one unless
    /// the credential opts in: on a server with reuse detection that replay
    /// revokes the grant.
    #[tokio::test(start_paused = true)]
    async fn the_previous_refresh_token_is_presented_only_when_opted_in() {
        for (extra, presented) in [
            ("", &["rt-1", "rt-2"][..]),
            (
                "retry_previous_refresh_token = true",
                &["rt-1", "rt-2", "rt-1"][..],
            ),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let endpoint = FakeEndpoint::new(Duration::ZERO, HOUR);
            endpoint.then(Answer::Tokens {
                lifetime: HOUR,
                refresh_token: Some("rt-2"),
            });
            endpoint.then(FakeEndpoint::invalid_grant());
            endpoint.then(FakeEndpoint::invalid_grant());
            let (b, store) = broker(dir.path(), "oauth_refresh", extra, &endpoint, logged_in());
            fetch(&b, Duration::from_secs(10)).await.unwrap();
            let kept = store.get("c").unwrap().unwrap().previous_refresh_token;
            assert_eq!(kept.is_some(), !extra.is_empty(), "{extra:?}");
            tokio::time::sleep(HOUR).await;
            assert_eq!(*endpoint.presented.lock().unwrap(), presented, "{extra:?}");
            b.shutdown().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn serve_stale_hands_out_a_still_valid_token_while_refreshing_fails() {
        let dir = tempfile::tempdir().unwrap();
        for (serve_stale, expect_stale) in [(true, true), (false, false)] {
            let endpoint = FakeEndpoint::new(Duration::ZERO, HOUR);
            endpoint.then(Answer::Tokens {
                lifetime: Duration::from_secs(300),
                refresh_token: None,
            });
            for _ in 0..50 {
                endpoint.then(FakeEndpoint::unavailable(None));
            }
            let extra = format!("serve_stale = {serve_stale}\nmin_valid = \"60s\"");
            let sub = dir.path().join(serve_stale.to_string());
            std::fs::create_dir(&sub).unwrap();
            let (b, _) = broker(&sub, "oauth_client_credentials", &extra, &endpoint, None);
            let (first, stale) = fetch(&b, Duration::from_secs(10)).await.unwrap();
            assert!(!stale);
            // 250 s in: 50 s left, under min_valid, and every refresh fails.
            tokio::time::sleep(Duration::from_secs(250)).await;
            let got = fetch(&b, Duration::from_secs(1)).await;
            if expect_stale {
                assert_eq!(got.unwrap(), (first, true), "the same token, flagged stale");
            } else {
                let e = got.unwrap_err();
                assert!(matches!(e, BrokerError::Unavailable { .. }), "{e}");
            }
            // Past expiry nobody serves it.
            tokio::time::sleep(Duration::from_secs(60)).await;
            assert!(fetch(&b, Duration::from_secs(1)).await.is_err());
            b.shutdown().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_crash_mid_refresh_is_explained_after_restart() {
        let dir = tempfile::tempdir().unwrap();
        let endpoint = FakeEndpoint::new(Duration::ZERO, HOUR);
        endpoint.then(FakeEndpoint::invalid_grant());
        // The store as a crash between sending a refresh and storing its
        // answer leaves it: the marker set, the old refresh token.
        let crashed = Record {
            refreshing_since: Some(origin().as_second() - 60),
            ..logged_in().unwrap()
        };
        let (b, _) = broker(dir.path(), "oauth_refresh", "", &endpoint, Some(crashed));
        let e = fetch(&b, Duration::from_secs(10)).await.unwrap_err();
        assert!(
            e.to_string().contains("lost in a crash or a lost response"),
            "{e}"
        );
        b.shutdown().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_stored_access_token_is_served_without_a_request() {
        let dir = tempfile::tempdir().unwrap();
        let endpoint = FakeEndpoint::new(Duration::ZERO, HOUR);
        let stored = Record {
            access_token: Some(Zeroizing::new("stored-access".into())),
            access_expires_at: Some(clock::after(origin(), HOUR).as_second()),
            access_issued_at: Some(origin().as_second()),
            ..logged_in().unwrap()
        };
        let (b, _) = broker(dir.path(), "oauth_refresh", "", &endpoint, Some(stored));
        let (fingerprint, _) = fetch(&b, Duration::from_secs(10)).await.unwrap();
        assert_eq!(fingerprint, crate::oauth::fingerprint("stored-access"));
        assert_eq!(endpoint.calls(), 0);
        b.shutdown().await;
    }

    /// A token that lives less than min_valid used to be asked for again at
    /// once, and again (117 requests in 5 s); it is a failure that backs off,
    /// with the reason, however many callers ask.
    #[tokio::test(start_paused = true)]
    async fn tokens_shorter_than_min_valid_back_off_instead_of_storming() {
        let dir = tempfile::tempdir().unwrap();
        // Every answer: a token living 30 s, under min_valid 60 s.
        let endpoint = FakeEndpoint::new(Duration::ZERO, Duration::from_secs(30));
        let (b, _) = broker(
            dir.path(),
            "oauth_client_credentials",
            "min_valid = \"60s\"",
            &endpoint,
            None,
        );
        let callers: Vec<_> = (0..20)
            .map(|_| {
                let b = Arc::clone(&b);
                tokio::spawn(async move { fetch(&b, Duration::from_secs(5)).await })
            })
            .collect();
        for c in callers {
            let e = c.await.unwrap().unwrap_err();
            assert!(
                e.to_string()
                    .contains("live 30s, no longer than min_valid (1m 0s)"),
                "{e}"
            );
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
        // The first request and a few backed-off retries, not a storm.
        let calls = endpoint.calls();
        assert!((1..=12).contains(&calls), "{calls} token requests in 10 s");
        b.shutdown().await;
    }

    /// An answer whose access token is unusable but whose refresh token
    /// rotated: the new refresh token is stored and presented next, never
    /// the old one again.
    #[tokio::test(start_paused = true)]
    async fn a_rotated_refresh_token_in_an_unusable_answer_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let endpoint = FakeEndpoint::new(Duration::ZERO, HOUR);
        endpoint.then(Answer::Error(crate::oauth::TokenError::Unusable {
            reason: "the access token is empty or has characters that cannot go in a header".into(),
            refresh_token: Some("rt-2".into()),
        }));
        let (b, store) = broker(dir.path(), "oauth_refresh", "", &endpoint, logged_in());
        fetch(&b, Duration::from_secs(120)).await.unwrap();
        assert_eq!(*endpoint.presented.lock().unwrap(), ["rt-1", "rt-2"]);
        let record = store.get("c").unwrap().unwrap();
        assert_eq!(
            record.refresh_token.as_deref().map(String::as_str),
            Some("rt-2")
        );
        b.shutdown().await;
    }

    /// After `Invalidate`, the reported token is never handed out again:
    /// callers that ask at once wait for its replacement (one refresh for
    /// all of them).
    #[tokio::test(start_paused = true)]
    async fn a_reported_token_is_never_served_again() {
        let dir = tempfile::tempdir().unwrap();
        let endpoint = FakeEndpoint::new(Duration::from_secs(1), HOUR);
        let (b, _) = broker(dir.path(), "oauth_client_credentials", "", &endpoint, None);
        let (old, _) = fetch(&b, Duration::from_secs(10)).await.unwrap();
        let callers: Vec<_> = (0..50)
            .map(|_| {
                let (b, old) = (Arc::clone(&b), old.clone());
                tokio::spawn(async move {
                    b.invalidate(&root(), "c", &old).unwrap();
                    fetch(&b, Duration::from_secs(10)).await.unwrap().0
                })
            })
            .collect();
        for c in callers {
            assert_ne!(c.await.unwrap(), old, "the reported token was served again");
        }
        assert_eq!(endpoint.calls(), 2, "one refresh for all the reports");
        b.shutdown().await;
    }
}

/// An idle driver's task is its loop alone: the state of a refresh, a
/// login or a fleet call is boxed while it runs. Thousands of credentials
/// each held the largest of those states (17 KiB) before.
#[test]
fn an_idle_driver_task_stays_small() {
    let dir = tempfile::tempdir().unwrap();
    let toml = "[[credential]]\nname = \"c\"\nkind = \"oauth_client_credentials\"\n\
                token_endpoint = \"https://as.example/token\"\nclient_id = \"t\"\n\
                auth_method = \"none\"\n";
    let config = crate::config::parse(std::path::Path::new("/etc/t.toml"), toml).unwrap();
    let s = crate::testing::services(
        Some(crate::testing::store(dir.path())),
        crate::testing::http(),
        clock::system(),
    );
    let deps = Deps {
        store: s.store.unwrap(),
        endpoint: s.endpoint,
        settings: s.refresh,
        metrics: s.metrics,
        clock: s.clock,
        fleet: None,
    };
    let credential = Arc::new(config.credentials.into_iter().next().unwrap());
    let snapshot = Snapshot::new(State::Refreshing);
    let (tx, _rx) = watch::channel(Arc::new(snapshot));
    let (driver, _handle) = Driver::new(credential, tx, deps);
    let task = driver.run(CancellationToken::new());
    let size = size_of_val(&task);
    assert!(size < 4096, "the driver task is {size} bytes");
}
