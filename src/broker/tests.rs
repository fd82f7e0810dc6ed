use std::path::Path;
use std::time::Duration;

use jiff::Timestamp;

use super::*;
use crate::config;
use crate::peer::Peer;
use crate::testing;

const CONFIG: &str = r#"
[[credential]]
name = "user"
kind = "glean_token"
permission = "user"
scopes = ["SEARCH"]
expires_at = "2030-01-01T00:00:00Z"
owner = "ops@corp.example"
secret = { env = "PATH" }
allow = { uids = [1000] }

[[credential]]
name = "global"
kind = "glean_token"
permission = "global"
scopes = ["SEARCH", "CHAT"]
secret = { env = "PATH" }
allow = [{ uids = [1000], act_as = ["*@corp.example"] }, { groups = [50], act_as = ["*@*"] }]
"#;

fn broker() -> Broker {
    let config = config::parse(Path::new("/etc/tokend.toml"), CONFIG).unwrap();
    let services = testing::services(None, testing::http(), crate::clock::system());
    Broker::start(config.credentials, config.daemon.admins, services).unwrap()
}

/// `try_get_headers`, which must not ask to wait for a Glean token.
fn get<'a>(
    b: &'a Broker,
    p: &Peer,
    r: HeadersRequest<'a>,
    now: Timestamp,
) -> Result<Grant<'a>, BrokerError> {
    b.try_get_headers(p, r, now)
        .map(|g| g.expect("Glean tokens never wait for a refresh"))
}

fn peer(uid: u32, groups: &[u32]) -> Peer {
    Peer {
        uid,
        gid: uid,
        pid: Some(42),
        groups: groups.into(),
        exe: None,
    }
}

fn req<'a>(name: &'a str, act_as: &'a str, scopes: &[&str]) -> HeadersRequest<'a> {
    // Leaked: a test's few strings, so requests can be Copy like real ones.
    let scopes: Vec<String> = scopes.iter().map(|s| s.to_string()).collect();
    HeadersRequest {
        credential: name,
        act_as,
        required_scopes: Vec::leak(scopes),
        min_valid: None,
    }
}

fn at(s: &str) -> Timestamp {
    s.parse().unwrap()
}

#[test]
fn user_token_yields_only_authorization() {
    let b = broker();
    let now = at("2029-01-01T00:00:00Z");
    let g = get(&b, &peer(1000, &[]), req("user", "", &["search"]), now).unwrap();
    let names: Vec<&str> = g.headers().map(|(n, _)| n).collect();
    assert_eq!(names, ["Authorization"]);
    assert!(g.token.authorization().starts_with("Bearer "));
    assert_eq!(g.token.expires_at, Some(at("2030-01-01T00:00:00Z")));
}

#[test]
fn act_as_rules_follow_the_callers_patterns() {
    let b = broker();
    let now = at("2029-01-01T00:00:00Z");
    let g = get(
        &b,
        &peer(1000, &[]),
        req("global", "a@corp.example", &[]),
        now,
    )
    .unwrap();
    let h: Vec<(&str, &str)> = g.headers().collect();
    assert_eq!(h[1], ("X-Glean-ActAs", "a@corp.example"));
    let e = get(
        &b,
        &peer(1000, &[]),
        req("global", "a@other.example", &[]),
        now,
    )
    .unwrap_err();
    assert!(matches!(e, BrokerError::ActAsDenied { .. }), "{e}");
    // Group 50's rule allows anyone.
    assert!(
        get(
            &b,
            &peer(7, &[50]),
            req("global", "a@other.example", &[]),
            now
        )
        .is_ok()
    );
    let e = get(&b, &peer(1000, &[]), req("global", "", &[]), now).unwrap_err();
    assert!(e.to_string().contains("X-Glean-ActAs"), "{e}");
    let e = get(&b, &peer(1000, &[]), req("global", "nobody", &[]), now).unwrap_err();
    assert!(matches!(e, BrokerError::ActAsInvalid { .. }));
    let e = get(
        &b,
        &peer(1000, &[]),
        req("user", "a@corp.example", &[]),
        now,
    )
    .unwrap_err();
    assert!(matches!(e, BrokerError::ActAsRefused { .. }));
}

#[test]
fn default_deny_and_unknown_names() {
    let b = broker();
    let now = at("2029-01-01T00:00:00Z");
    let e = get(&b, &peer(1001, &[]), req("user", "", &[]), now).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("uid 1001 (gid 1001, pid 42) may not use credential `user`")
    );
    // To anyone but an admin, an unknown name looks like a denied one:
    // the socket does not tell which names exist.
    let unknown = get(&b, &peer(1000, &[]), req("nope", "", &[]), now).unwrap_err();
    let denied = get(&b, &peer(1001, &[]), req("user", "", &[]), now).unwrap_err();
    assert!(
        matches!(unknown, BrokerError::CallerDenied { .. }),
        "{unknown}"
    );
    assert_eq!(
        unknown
            .to_string()
            .replace("nope", "X")
            .replace("1000", "N"),
        denied.to_string().replace("user", "X").replace("1001", "N")
    );
    let e = get(&b, &peer(0, &[]), req("nope", "", &[]), now).unwrap_err();
    assert!(matches!(e, BrokerError::NotFound { .. }), "admins learn it");
    assert_eq!(b.list(&peer(1001, &[]), now).len(), 0);
    assert_eq!(b.list(&peer(7, &[50]), now).len(), 1);
    assert_eq!(b.list(&peer(0, &[]), now).len(), 2);
}

#[test]
fn scopes_and_expiry() {
    let b = broker();
    let p = peer(1000, &[]);
    let now = at("2029-01-01T00:00:00Z");
    let e = get(&b, &p, req("user", "", &["SEARCH", "CHAT", "PEOPLE"]), now).unwrap_err();
    assert!(e.to_string().contains("lacks scope(s) CHAT, PEOPLE"), "{e}");
    let e = get(&b, &p, req("user", "", &["SERCH"]), now).unwrap_err();
    assert!(matches!(e, BrokerError::UnknownScope { .. }));
    let e = get(&b, &p, req("user", "", &[]), at("2030-01-01T03:00:00Z")).unwrap_err();
    assert!(
        e.to_string()
            .contains("expired at 2030-01-01T00:00:00Z (3h 0m ago)"),
        "{e}"
    );
    assert!(e.to_string().contains("owner: ops@corp.example"), "{e}");
    let e = get(&b, &p, req("user", "", &[]), at("2029-12-31T23:59:30Z")).unwrap_err();
    assert!(
        e.to_string()
            .contains("in 30s, sooner than the 1m 0s required"),
        "{e}"
    );
    // The credential's 60 s is a floor a caller cannot lower, only raise.
    let mut r = req("user", "", &[]);
    r.min_valid = Some(Duration::from_secs(10));
    assert!(get(&b, &p, r, at("2029-12-31T23:59:30Z")).is_err());
    let two_minutes_left = at("2029-12-31T23:58:00Z");
    assert!(get(&b, &p, r, two_minutes_left).is_ok());
    r.min_valid = Some(Duration::from_secs(300));
    let e = get(&b, &p, r, two_minutes_left).unwrap_err();
    assert!(
        e.to_string().contains("sooner than the 5m 0s required"),
        "{e}"
    );
    let list = b.list(&p, at("2031-01-01T00:00:00Z"));
    let names: Vec<&str> = list.iter().map(|s| &*s.name).collect();
    assert_eq!(names, ["global", "user"]);
    assert_eq!(
        (list[0].state, list[1].state),
        (State::Fresh, State::Expired)
    );
    // The status line's counts agree with the listing, at either instant.
    let counts = b.count_states(at("2031-01-01T00:00:00Z"));
    assert_eq!(
        counts.into_iter().collect::<Vec<_>>(),
        [("expired", 1), ("fresh", 1)]
    );
    let counts = b.count_states(now);
    assert_eq!(counts.into_iter().collect::<Vec<_>>(), [("fresh", 2)]);
}

/// A refused reload used to be partly applied: a changed credential's
/// channel got its new secret before a later credential failed.
#[test]
fn a_refused_reload_changes_nothing() {
    let b = broker();
    let now = at("2029-01-01T00:00:00Z");
    let before = get(&b, &peer(1000, &[]), req("user", "", &[]), now)
        .unwrap()
        .token
        .fingerprint
        .clone();
    // `user` changes its secret; the OAuth credential cannot start without
    // a store, so the reload fails after `user` was built.
    let changed = CONFIG.replacen(
        "secret = { env = \"PATH\" }",
        "secret = { env = \"HOME\" }",
        1,
    ) + "\n[[credential]]\nname = \"sso\"\nkind = \"oauth_client_credentials\"\n\
           token_endpoint = \"https://as.example/token\"\nclient_id = \"c\"\n\
           auth_method = \"none\"\nallow = { uids = [1000] }\n";
    let config = config::parse(Path::new("/etc/tokend.toml"), &changed).unwrap();
    let err = b.reload(config.credentials).unwrap_err();
    assert!(!err.to_string().is_empty());
    let after = get(&b, &peer(1000, &[]), req("user", "", &[]), now).unwrap();
    assert_eq!(
        after.token.fingerprint, before,
        "the old secret is still served"
    );
    assert!(b.slot("sso").is_err(), "nothing was added");
}
