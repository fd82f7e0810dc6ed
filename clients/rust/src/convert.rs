//! Every conversion between the wire ([`proto`]) and this crate's types, in
//! one place so the rules (empty string = absent, unknown enum value =
//! [`State::Unknown`], invalid timestamp = absent) are stated once.
//!
//! The time conversions are public so the daemon's server side uses the
//! same ones rather than writing them again.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

use crate::proto;
use crate::types::{
    Alert, CredentialStatus, FleetMembership, Headers, HeadersRequest, LoginInfo, ProxyEndpoint,
    Refreshed, Reloaded, State, WhoAmI,
};

/// The largest duration protobuf allows (about 10 000 years, per
/// `google/protobuf/duration.proto`); other languages' servers reject more.
const MAX_DURATION_SECONDS: i64 = 315_576_000_000;

/// A protobuf timestamp as a jiff one; `None` when it is outside jiff's range
/// (years -9999 to 9999) or its nanos are not within ±999 999 999, which a
/// server should refuse as invalid input.
pub fn timestamp(t: &prost_types::Timestamp) -> Option<jiff::Timestamp> {
    jiff::Timestamp::new(t.seconds, t.nanos).ok()
}

/// A jiff timestamp as a protobuf one, normalized as protobuf requires
/// (nanos in `0..1e9`, also before 1970, where jiff's own nanos are
/// negative).
pub fn to_proto_timestamp(t: jiff::Timestamp) -> prost_types::Timestamp {
    let (mut seconds, mut nanos) = (t.as_second(), t.subsec_nanosecond());
    if nanos < 0 {
        seconds -= 1;
        nanos += 1_000_000_000;
    }
    prost_types::Timestamp { seconds, nanos }
}

/// A duration as a protobuf one, saturating at protobuf's maximum (about
/// 10 000 years) rather than failing: no token lives that long, so the
/// request means the same.
pub fn to_proto_duration(d: Duration) -> prost_types::Duration {
    match i64::try_from(d.as_secs()) {
        Ok(seconds) if seconds < MAX_DURATION_SECONDS => prost_types::Duration {
            seconds,
            // Below 1e9, so it fits.
            nanos: i32::try_from(d.subsec_nanos()).unwrap_or(999_999_999),
        },
        _ => prost_types::Duration {
            seconds: MAX_DURATION_SECONDS,
            nanos: 0,
        },
    }
}

/// A protobuf duration as a std one; `None` when it is negative, which a
/// server should refuse as invalid input.
pub fn duration(d: &prost_types::Duration) -> Option<Duration> {
    Duration::try_from(*d).ok()
}

/// The state with wire number `value`; numbers this client does not know
/// (including 0, unspecified) are [`State::Unknown`].
pub fn state(value: i32) -> State {
    proto::CredentialState::try_from(value).map_or(State::Unknown, State::from)
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

fn time(t: Option<&prost_types::Timestamp>) -> Option<jiff::Timestamp> {
    t.and_then(timestamp)
}

impl From<proto::CredentialState> for State {
    fn from(s: proto::CredentialState) -> Self {
        use proto::CredentialState as S;
        match s {
            S::Unspecified => Self::Unknown,
            S::Fresh => Self::Fresh,
            S::Refreshing => Self::Refreshing,
            S::Stale => Self::Stale,
            S::Expired => Self::Expired,
            S::NeedsLogin => Self::NeedsLogin,
            S::Misconfigured => Self::Misconfigured,
        }
    }
}

impl From<State> for proto::CredentialState {
    fn from(s: State) -> Self {
        match s {
            State::Unknown => Self::Unspecified,
            State::Fresh => Self::Fresh,
            State::Refreshing => Self::Refreshing,
            State::Stale => Self::Stale,
            State::Expired => Self::Expired,
            State::NeedsLogin => Self::NeedsLogin,
            State::Misconfigured => Self::Misconfigured,
        }
    }
}

impl From<&HeadersRequest> for proto::GetHeadersRequest {
    fn from(r: &HeadersRequest) -> Self {
        Self {
            credential: r.credential.clone(),
            act_as: r.act_as.clone().unwrap_or_default(),
            required_scopes: r.scopes.clone(),
            min_valid: r.min_valid.map(to_proto_duration),
        }
    }
}

impl From<proto::GetHeadersResponse> for Headers {
    fn from(r: proto::GetHeadersResponse) -> Self {
        Self {
            expires_at: time(r.expires_at.as_ref()),
            fingerprint: r.token_fingerprint,
            stale: r.stale,
            headers: r
                .headers
                .into_iter()
                .map(|h| (h.name, SecretString::from(h.value)))
                .collect(),
        }
    }
}

impl From<proto::CredentialStatus> for CredentialStatus {
    fn from(c: proto::CredentialStatus) -> Self {
        Self {
            state: state(c.state),
            expires_at: time(c.expires_at.as_ref()),
            last_refresh: time(c.last_refresh.as_ref()),
            next_refresh: time(c.next_refresh.as_ref()),
            fleet: c.fleet.map(|f| FleetMembership {
                unreachable_since: time(f.unreachable_since.as_ref()),
                leader: non_empty(f.leader),
                node: f.node,
                role: f.role,
            }),
            name: c.name,
            kind: c.kind,
            permission: non_empty(c.permission),
            scopes: c.scopes,
            owner: non_empty(c.owner),
            instance: non_empty(c.instance),
            last_error: non_empty(c.last_error),
        }
    }
}

impl From<proto::Alert> for Alert {
    fn from(a: proto::Alert) -> Self {
        Self {
            expires_at: time(a.expires_at.as_ref()),
            opened_at: time(a.opened_at.as_ref()),
            last_sent: time(a.last_sent.as_ref()),
            dedup_key: a.dedup_key,
            credential: a.credential,
            event: a.event,
            severity: a.severity,
            summary: a.summary,
        }
    }
}

impl From<proto::RefreshResponse> for Refreshed {
    fn from(r: proto::RefreshResponse) -> Self {
        Self {
            expires_at: time(r.expires_at.as_ref()),
            fingerprint: r.token_fingerprint,
        }
    }
}

impl From<proto::BeginLoginResponse> for LoginInfo {
    fn from(r: proto::BeginLoginResponse) -> Self {
        Self {
            authorization_endpoint: r.authorization_endpoint,
            client_id: r.client_id,
            scopes: r.scopes,
            redirect_uri: r.redirect_uri,
        }
    }
}

impl From<proto::WhoAmIResponse> for WhoAmI {
    fn from(r: proto::WhoAmIResponse) -> Self {
        Self {
            uid: r.uid,
            gid: r.gid,
            groups: r.groups,
            pid: (r.pid > 0).then_some(r.pid),
            admin: r.admin,
            credentials: r.credentials,
            proxies: r
                .proxies
                .into_iter()
                .map(|p| ProxyEndpoint {
                    name: p.name,
                    credential: p.credential,
                    listen: p.listen,
                    upstream: p.upstream,
                })
                .collect(),
        }
    }
}

impl From<proto::ReloadResponse> for Reloaded {
    fn from(r: proto::ReloadResponse) -> Self {
        Self {
            added: r.added,
            changed: r.changed,
            removed: r.removed,
            unchanged: r.unchanged,
        }
    }
}

/// The secret's text for a request message. The copy lives only as long
/// as the message, which is dropped once sent.
pub(crate) fn expose(secret: &SecretString) -> String {
    secret.expose_secret().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(seconds: i64, nanos: i32) -> prost_types::Timestamp {
        prost_types::Timestamp { seconds, nanos }
    }

    #[test]
    fn timestamps_round_trip_with_nanos() {
        let t: jiff::Timestamp = "2026-03-01T12:34:56.123456789Z".parse().unwrap();
        let p = to_proto_timestamp(t);
        assert_eq!(p, ts(t.as_second(), 123_456_789));
        assert_eq!(timestamp(&p), Some(t));
        assert_eq!(
            timestamp(&ts(1_700_000_000, 5)),
            Some(jiff::Timestamp::new(1_700_000_000, 5).unwrap())
        );
        assert_eq!(to_proto_timestamp(jiff::Timestamp::UNIX_EPOCH), ts(0, 0));
    }

    #[test]
    fn timestamps_before_1970_have_positive_nanos_on_the_wire() {
        // 1969-12-31T23:59:59.5Z
        let t = jiff::Timestamp::new(0, -500_000_000).unwrap();
        let p = to_proto_timestamp(t);
        assert_eq!(p, ts(-1, 500_000_000));
        assert_eq!(timestamp(&p), Some(t));
        assert_eq!(p, p.normalized(), "protobuf's canonical form");
    }

    #[test]
    fn invalid_timestamps_are_absent() {
        assert_eq!(timestamp(&ts(i64::MAX, 0)), None);
        assert_eq!(timestamp(&ts(0, 1_000_000_000)), None);
    }

    #[test]
    fn durations_convert_and_saturate() {
        assert_eq!(
            to_proto_duration(Duration::new(90, 250)),
            prost_types::Duration {
                seconds: 90,
                nanos: 250
            }
        );
        let max = prost_types::Duration {
            seconds: MAX_DURATION_SECONDS,
            nanos: 0,
        };
        assert_eq!(to_proto_duration(Duration::MAX), max);
        assert_eq!(
            to_proto_duration(Duration::from_secs(MAX_DURATION_SECONDS as u64 + 1)),
            max
        );
        assert_eq!(
            duration(&to_proto_duration(Duration::new(5, 7))),
            Some(Duration::new(5, 7))
        );
        assert_eq!(
            duration(&prost_types::Duration {
                seconds: -1,
                nanos: 0
            }),
            None
        );
    }

    #[test]
    fn state_numbers() {
        assert_eq!(state(0), State::Unknown);
        assert_eq!(state(1), State::Fresh);
        assert_eq!(state(2), State::Refreshing);
        assert_eq!(state(3), State::Stale);
        assert_eq!(state(4), State::Expired);
        assert_eq!(state(5), State::NeedsLogin);
        assert_eq!(state(6), State::Misconfigured);
        assert_eq!(state(99), State::Unknown);
        assert_eq!(state(-1), State::Unknown);
        for n in 1..=6 {
            assert_eq!(proto::CredentialState::from(state(n)) as i32, n);
        }
    }

    #[test]
    fn empty_strings_are_absent() {
        let c = CredentialStatus::from(proto::CredentialStatus {
            name: "gh".into(),
            kind: "oauth".into(),
            state: 99,
            ..Default::default()
        });
        assert_eq!(
            c,
            CredentialStatus {
                name: "gh".into(),
                kind: "oauth".into(),
                permission: None,
                state: State::Unknown,
                expires_at: None,
                scopes: vec![],
                owner: None,
                instance: None,
                last_error: None,
                last_refresh: None,
                next_refresh: None,
                fleet: None,
            }
        );
        let c = CredentialStatus::from(proto::CredentialStatus {
            name: "glean".into(),
            kind: "glean_token".into(),
            permission: "global".into(),
            state: proto::CredentialState::Stale as i32,
            expires_at: Some(ts(1_800_000_000, 1)),
            scopes: vec!["search".into()],
            owner: "ops@example.com".into(),
            last_error: "401 from issuer".into(),
            last_refresh: Some(ts(1_700_000_000, 0)),
            next_refresh: Some(ts(1_700_000_600, 0)),
            instance: "acme".into(),
            fleet: Some(proto::FleetMembership {
                node: "web-2".into(),
                role: "follower".into(),
                leader: "web-1".into(),
                unreachable_since: None,
            }),
        });
        let fleet = c.fleet.as_ref().unwrap();
        assert_eq!(
            (fleet.role.as_str(), fleet.leader.as_deref()),
            ("follower", Some("web-1"))
        );
        assert_eq!(c.permission.as_deref(), Some("global"));
        assert_eq!(c.state, State::Stale);
        assert_eq!(c.expires_at, jiff::Timestamp::new(1_800_000_000, 1).ok());
        assert_eq!(c.owner.as_deref(), Some("ops@example.com"));
        assert_eq!(c.instance.as_deref(), Some("acme"));
        assert_eq!(c.last_error.as_deref(), Some("401 from issuer"));
        assert_eq!(c.last_refresh, jiff::Timestamp::new(1_700_000_000, 0).ok());
        assert_eq!(c.next_refresh, jiff::Timestamp::new(1_700_000_600, 0).ok());
    }

    #[test]
    fn request_to_wire() {
        let wire = proto::GetHeadersRequest::from(&HeadersRequest::new("gh"));
        assert_eq!(
            wire,
            proto::GetHeadersRequest {
                credential: "gh".into(),
                ..Default::default()
            }
        );
        let wire = proto::GetHeadersRequest::from(
            &HeadersRequest::new("g")
                .act_as("a@example.com")
                .scope("s")
                .min_valid(Duration::from_millis(1500)),
        );
        assert_eq!(wire.act_as, "a@example.com");
        assert_eq!(wire.required_scopes, ["s"]);
        assert_eq!(
            wire.min_valid,
            Some(prost_types::Duration {
                seconds: 1,
                nanos: 500_000_000
            })
        );
    }

    #[test]
    fn responses_from_wire() {
        let h = Headers::from(proto::GetHeadersResponse {
            headers: vec![proto::Header {
                name: "Authorization".into(),
                value: "Bearer t".into(),
            }],
            expires_at: Some(ts(1_800_000_000, 0)),
            token_fingerprint: "fp".into(),
            stale: true,
        });
        assert_eq!(h.bearer_token(), Some("t"));
        assert_eq!(h.expires_at, jiff::Timestamp::new(1_800_000_000, 0).ok());
        assert_eq!(h.fingerprint, "fp");
        assert!(h.stale);

        let a = Alert::from(proto::Alert {
            dedup_key: "k".into(),
            event: "expiring".into(),
            opened_at: Some(ts(5, 0)),
            ..Default::default()
        });
        assert_eq!(a.opened_at, jiff::Timestamp::new(5, 0).ok());
        assert_eq!((a.expires_at, a.last_sent), (None, None));

        let r = Reloaded::from(proto::ReloadResponse {
            added: vec!["a".into()],
            changed: vec![],
            removed: vec!["r".into()],
            unchanged: 3,
        });
        assert_eq!(r.added, ["a"]);
        assert_eq!(r.removed, ["r"]);
        assert_eq!(r.unchanged, 3);
    }
}
