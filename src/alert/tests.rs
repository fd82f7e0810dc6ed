use std::time::Duration;

use super::*;
use crate::clock::{Manual, SharedClock};
use crate::credential::CredentialKind;
use crate::store::StoreKey;
use crate::token::State;

fn settings() -> Settings {
    Settings {
        thresholds: vec![Duration::from_secs(3600), Duration::from_secs(60)],
        repeat_expiring: Duration::from_secs(86_400),
        repeat_failing: Duration::from_secs(3600),
        failing_after: Duration::from_secs(900),
        sweep: String::new(),
        digest: None,
        source: "host".into(),
        sinks: Vec::new(),
    }
}

fn status(state: State, expires_in: Option<i64>, now: Timestamp) -> Status {
    Status {
        expires_at: expires_in
            .map(|s| now.checked_add(jiff::SignedDuration::from_secs(s)).unwrap()),
        owner: Some("ops@corp.example".into()),
        ..Status::new("g", CredentialKind::GleanToken, state)
    }
}

#[test]
fn expiry_stages_escalate_to_expired() {
    let now: Timestamp = "2030-01-01T00:00:00Z".parse().unwrap();
    let st = settings();
    assert!(conditions(&status(State::Fresh, Some(7200), now), &st, now).is_empty());
    let c = conditions(&status(State::Fresh, Some(1800), now), &st, now);
    assert_eq!(
        (c[0].event, c[0].stage, c[0].severity),
        ("expiring", 0, Severity::Warning)
    );
    assert!(
        c[0].summary.contains("tokenctl import g") && c[0].summary.contains("ops@corp.example")
    );
    let c = conditions(&status(State::Fresh, Some(30), now), &st, now);
    assert_eq!((c[0].stage, c[0].severity), (1, Severity::Critical));
    let c = conditions(&status(State::Expired, Some(-5), now), &st, now);
    assert_eq!(
        (c[0].family, c[0].event, c[0].stage),
        ("expiry", "expired", 2)
    );
}

#[test]
fn an_unreachable_fleet_alerts_after_failing_after_and_escalates_once_expired() {
    let now: Timestamp = "2030-01-01T00:00:00Z".parse().unwrap();
    let st = settings();
    let mut s = status(State::Fresh, Some(7200), now);
    s.kind = CredentialKind::OAuthRefresh;
    s.fleet = Some(crate::token::FleetStatus {
        node: "web-2".into(),
        role: "unreachable",
        leader: None,
        unreachable_since: now.checked_sub(jiff::SignedDuration::from_secs(60)).ok(),
    });
    assert!(conditions(&s, &st, now).is_empty(), "a blip is not paged");
    let later = now
        .checked_add(jiff::SignedDuration::from_secs(900))
        .unwrap();
    let c = conditions(&s, &st, later);
    assert_eq!(
        (c[0].family, c[0].severity),
        ("fleet_unreachable", Severity::Warning)
    );
    assert!(c[0].summary.contains("etcd") && c[0].summary.contains("refreshes nothing"));
    s.state = State::Expired;
    assert_eq!(conditions(&s, &st, later)[0].severity, Severity::Critical);
    if let Some(f) = s.fleet.as_mut() {
        f.unreachable_since = None;
    }
    s.state = State::Fresh;
    assert!(
        conditions(&s, &st, later).is_empty(),
        "resolved once reachable"
    );
}

#[test]
fn refresh_failing_needs_a_failure_not_just_a_first_refresh() {
    let now: Timestamp = "2030-01-01T00:00:00Z".parse().unwrap();
    let st = settings();
    let mut s = status(State::Expired, None, now);
    s.kind = CredentialKind::OAuthClientCredentials;
    // Starting up, before the first token: no alert.
    assert!(conditions(&s, &st, now).is_empty());
    // Failing, with no token left: critical at once.
    s.failing_since = Some(now);
    let c = conditions(&s, &st, now);
    assert_eq!(
        (c[0].family, c[0].severity),
        ("refresh_failing", Severity::Critical)
    );
    // Stale (token still valid): only after `failing_after`.
    s.state = State::Stale;
    assert!(conditions(&s, &st, now).is_empty());
    s.failing_since = now.checked_sub(jiff::SignedDuration::from_secs(901)).ok();
    assert_eq!(conditions(&s, &st, now)[0].severity, Severity::Warning);
}

#[test]
fn bodies_match_their_formats() {
    let e = Event {
        event: "needs_login".into(),
        credential: "sso".into(),
        kind: "oauth_refresh".into(),
        severity: Severity::Critical,
        summary: "run `tokenctl login sso`".into(),
        expires_at: None,
        dedup_key: "sso/needs_login".into(),
        source: "host".into(),
        at: "2030-01-01T00:00:00Z".into(),
    };
    let pd = pagerduty_body(&e, "rk");
    assert_eq!(pd["event_action"], "trigger");
    assert_eq!(pd["payload"]["severity"], "critical");
    assert!(
        slack_body(&e)["text"]
            .as_str()
            .unwrap()
            .contains("tokenctl login sso")
    );
    let resolve = Event {
        event: "recovered".into(),
        ..e
    };
    assert_eq!(pagerduty_body(&resolve, "rk")["event_action"], "resolve");
}

fn at(s: &str) -> Timestamp {
    s.parse().unwrap()
}

/// An engine on a manual clock with no sinks but the log, and optionally a
/// store, for sweeps that never sleep.
fn engine(clock: &Arc<Manual>, store: Option<Arc<Store>>) -> Arc<Engine> {
    let mut st = settings();
    st.sinks.push(SinkSpec {
        name: "log".into(),
        min_severity: Severity::Info,
        credentials: Vec::new(),
        kind: SinkKind::Log,
    });
    Engine::start(
        st,
        store,
        crate::oauth::http_client(Duration::from_secs(1)),
        Arc::default(),
        Arc::clone(clock) as SharedClock,
    )
}

fn events(sent: &[Arc<Event>]) -> Vec<(&str, &str, Severity)> {
    sent.iter()
        .map(|e| (e.event.as_str(), e.dedup_key.as_str(), e.severity))
        .collect()
}

#[tokio::test]
async fn thresholds_escalate_repeat_and_resolve_on_one_key() {
    let clock = Manual::new(at("2030-01-01T00:00:00Z"));
    let engine = engine(&clock, None);
    let expiry = at("2030-01-01T02:00:00Z");
    let token = |state| Status {
        expires_at: Some(expiry),
        ..Status::new("g", CredentialKind::GleanToken, state)
    };
    // Two hours left: above every threshold, nothing.
    assert!(engine.sweep(&[token(State::Fresh)]).await.is_empty());
    // 59 minutes left: the first (1 h) threshold, a warning.
    clock.set(at("2030-01-01T01:01:00Z"));
    let sent = engine.sweep(&[token(State::Fresh)]).await;
    assert_eq!(events(&sent), [("expiring", "g/expiry", Severity::Warning)]);
    // A minute later: same stage, not due again (repeat is a day).
    clock.advance(Duration::from_secs(60));
    assert!(engine.sweep(&[token(State::Fresh)]).await.is_empty());
    // 30 s left: the last threshold escalates at once, critical, same key.
    clock.set(at("2030-01-01T01:59:30Z"));
    let sent = engine.sweep(&[token(State::Fresh)]).await;
    assert_eq!(
        events(&sent),
        [("expiring", "g/expiry", Severity::Critical)]
    );
    // Expired: escalates again on the same key.
    clock.set(at("2030-01-01T02:00:01Z"));
    let sent = engine.sweep(&[token(State::Expired)]).await;
    assert_eq!(events(&sent), [("expired", "g/expiry", Severity::Critical)]);
    let open = engine.open_alerts();
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].opened_at, at("2030-01-01T01:01:00Z").as_second());
    // A day later it repeats.
    clock.advance(Duration::from_secs(86_400));
    let sent = engine.sweep(&[token(State::Expired)]).await;
    assert_eq!(events(&sent), [("expired", "g/expiry", Severity::Critical)]);
    // Rotated (no expiry now): resolved, once.
    let rotated = Status::new("g", CredentialKind::GleanToken, State::Fresh);
    let sent = engine.sweep(std::slice::from_ref(&rotated)).await;
    assert_eq!(events(&sent), [("recovered", "g/expiry", Severity::Info)]);
    assert!(engine.open_alerts().is_empty());
    assert!(engine.sweep(&[rotated]).await.is_empty());
}

#[tokio::test]
async fn failing_refresh_repeats_hourly_and_a_removed_credential_resolves() {
    let clock = Manual::new(at("2030-01-01T00:00:00Z"));
    let engine = engine(&clock, None);
    let failing = Status {
        failing_since: Some(at("2029-12-31T23:00:00Z")),
        last_error: Some("refresh failing: 503".into()),
        ..Status::new("sso", CredentialKind::OAuthRefresh, State::Stale)
    };
    let sent = engine.sweep(std::slice::from_ref(&failing)).await;
    assert_eq!(
        events(&sent),
        [("refresh_failing", "sso/refresh_failing", Severity::Warning)]
    );
    assert!(sent[0].summary.contains("503"), "{}", sent[0].summary);
    clock.advance(Duration::from_secs(3599));
    assert!(
        engine
            .sweep(std::slice::from_ref(&failing))
            .await
            .is_empty()
    );
    clock.advance(Duration::from_secs(1));
    assert_eq!(engine.sweep(std::slice::from_ref(&failing)).await.len(), 1);
    let sent = engine.sweep(&[]).await;
    assert_eq!(
        events(&sent),
        [("recovered", "sso/refresh_failing", Severity::Info)]
    );
    assert!(sent[0].summary.contains("(removed)"), "{}", sent[0].summary);
}

#[tokio::test]
async fn a_refused_config_raises_and_resolves_its_own_alert() {
    let clock = Manual::new(at("2030-01-01T00:00:00Z"));
    let engine = engine(&clock, None);
    engine.set_config_problem(Some("tokend.toml:3:1: kind: unknown kind".into()));
    let sent = engine.sweep(&[]).await;
    assert_eq!(
        events(&sent),
        [("misconfigured", "config/reload", Severity::Critical)]
    );
    engine.set_config_problem(None);
    let sent = engine.sweep(&[]).await;
    assert_eq!(
        events(&sent),
        [("recovered", "config/reload", Severity::Info)]
    );
}

#[tokio::test]
async fn open_alerts_survive_a_restart_without_paging_again() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        Store::open(
            &dir.path().join("store.redb"),
            &StoreKey::from_bytes([7; 32]),
        )
        .unwrap(),
    );
    let clock = Manual::new(at("2030-01-01T00:00:00Z"));
    let needs_login = Status::new("sso", CredentialKind::OAuthRefresh, State::NeedsLogin);
    let first = engine(&clock, Some(Arc::clone(&store)));
    assert_eq!(
        first.sweep(std::slice::from_ref(&needs_login)).await.len(),
        1
    );
    drop(first);
    // The same condition after a restart: remembered, not sent again.
    let second = engine(&clock, Some(Arc::clone(&store)));
    assert_eq!(second.open_alerts().len(), 1);
    assert!(
        second
            .sweep(std::slice::from_ref(&needs_login))
            .await
            .is_empty()
    );
    // Resolved, and the store forgets it.
    let fresh = Status::new("sso", CredentialKind::OAuthRefresh, State::Fresh);
    assert_eq!(second.sweep(&[fresh]).await.len(), 1);
    let third = engine(&clock, Some(store));
    assert!(third.open_alerts().is_empty());
}

/// The digest used to list every credential to every sink, whatever its
/// `credentials` filter.
#[tokio::test]
async fn the_digest_honours_each_sinks_credential_filter() {
    let clock = Manual::new(at("2030-01-01T00:00:00Z"));
    let mut st = settings();
    for (name, filter) in [("all", vec![]), ("team-a", vec!["team-a-*".to_owned()])] {
        st.sinks.push(SinkSpec {
            name: name.into(),
            min_severity: Severity::Info,
            credentials: filter,
            kind: SinkKind::Log,
        });
    }
    let engine = Engine::start(
        st,
        None,
        crate::oauth::http_client(Duration::from_secs(1)),
        Arc::default(),
        Arc::clone(&clock) as SharedClock,
    );
    let soon = Some(at("2030-01-01T00:30:00Z"));
    let statuses = ["team-a-search", "team-b-chat"].map(|name| Status {
        expires_at: soon,
        ..Status::new(name, CredentialKind::GleanToken, State::Fresh)
    });
    let sent = engine.digest(&statuses);
    let summary = |sink: &str| {
        sent.iter()
            .find(|(s, _)| s == sink)
            .map(|(_, e)| e.summary.clone())
            .unwrap_or_else(|| panic!("no digest for {sink}: {sent:?}"))
    };
    assert!(summary("all").contains("team-a-search") && summary("all").contains("team-b-chat"));
    assert!(
        summary("team-a").contains("1 expiring") && summary("team-a").contains("team-a-search")
    );
    assert!(
        !summary("team-a").contains("team-b"),
        "{}",
        summary("team-a")
    );
}
