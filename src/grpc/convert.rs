//! Every conversion between the daemon's domain types and the API's prost
//! messages, and the one mapping of [`BrokerError`] to a gRPC status. The
//! handlers only call these; timestamps and durations use the client
//! crate's conversions, so both ends of the socket read one mapping.

use std::time::Duration;

use tonic::{Code, Status};

use crate::alert::Open;
use crate::broker::{BrokerError, Grant, HeadersRequest, Reloaded};
use crate::proto;
use crate::status;
use crate::token::{State, Token};

pub(super) use tokend_client::convert::{timestamp as from_proto_timestamp, to_proto_timestamp};

/// A request's `min_valid`, refused when negative.
pub(super) fn min_valid(d: Option<prost_types::Duration>) -> Result<Option<Duration>, Status> {
    d.map(|d| {
        Duration::try_from(d)
            .map_err(|_| Status::invalid_argument("min_valid must be a non-negative duration"))
    })
    .transpose()
}

/// A `GetHeaders`/`WatchHeaders` request as the broker reads it.
pub(super) fn headers_request(
    r: &proto::GetHeadersRequest,
    min_valid: Option<Duration>,
) -> HeadersRequest<'_> {
    HeadersRequest {
        credential: &r.credential,
        act_as: &r.act_as,
        required_scopes: &r.required_scopes,
        min_valid,
    }
}

/// The headers of a grant.
pub(super) fn headers_response(grant: &Grant<'_>) -> proto::GetHeadersResponse {
    proto::GetHeadersResponse {
        headers: grant
            .headers()
            .map(|(name, value)| proto::Header {
                name: name.to_owned(),
                value: value.to_owned(),
            })
            .collect(),
        expires_at: grant.token.expires_at.map(to_proto_timestamp),
        token_fingerprint: grant.token.fingerprint.clone(),
        stale: grant.stale,
    }
}

/// A credential's status; empty strings for what is absent, as proto3 does.
pub(super) fn proxy_endpoint(p: &crate::config::ProxySettings) -> proto::ProxyEndpoint {
    proto::ProxyEndpoint {
        name: p.name.clone(),
        credential: p.credential.clone(),
        listen: p.listen.to_string(),
        upstream: p.upstream.clone(),
    }
}

pub(super) fn credential_status(s: status::Status) -> proto::CredentialStatus {
    proto::CredentialStatus {
        name: s.name.to_string(),
        kind: s.kind.as_str().to_owned(),
        permission: s
            .permission
            .map(|p| p.as_str().to_owned())
            .unwrap_or_default(),
        state: state(s.state) as i32,
        expires_at: s.expires_at.map(to_proto_timestamp),
        scopes: s.scopes,
        owner: s.owner.unwrap_or_default(),
        instance: s.instance.unwrap_or_default(),
        last_error: s.last_error.as_deref().unwrap_or_default().to_owned(),
        last_refresh: s.last_refresh.map(to_proto_timestamp),
        next_refresh: s.next_refresh.map(to_proto_timestamp),
        fleet: s.fleet.map(|f| proto::FleetMembership {
            node: f.node.to_string(),
            role: f.role.to_owned(),
            leader: f.leader.as_deref().unwrap_or_default().to_owned(),
            unreachable_since: f.unreachable_since.map(to_proto_timestamp),
        }),
    }
}

fn state(s: State) -> proto::CredentialState {
    match s {
        State::Fresh => proto::CredentialState::Fresh,
        State::Refreshing => proto::CredentialState::Refreshing,
        State::Stale => proto::CredentialState::Stale,
        State::Expired => proto::CredentialState::Expired,
        State::NeedsLogin => proto::CredentialState::NeedsLogin,
        State::Misconfigured => proto::CredentialState::Misconfigured,
    }
}

/// An open alert.
pub(super) fn alert(a: Open) -> proto::Alert {
    let ts = |s: i64| jiff::Timestamp::from_second(s).ok().map(to_proto_timestamp);
    proto::Alert {
        dedup_key: a.dedup_key,
        credential: a.credential,
        event: a.event,
        severity: a.severity.as_str().to_owned(),
        summary: a.summary,
        expires_at: a
            .expires_at
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
            .map(to_proto_timestamp),
        opened_at: ts(a.opened_at),
        last_sent: ts(a.last_sent),
    }
}

/// A token an admin command produced: its expiry and fingerprint only.
pub(super) fn refreshed(token: &Token) -> proto::RefreshResponse {
    proto::RefreshResponse {
        expires_at: token.expires_at.map(to_proto_timestamp),
        token_fingerprint: token.fingerprint.clone(),
    }
}

/// What a reload changed.
pub(super) fn reloaded(r: Reloaded) -> proto::ReloadResponse {
    proto::ReloadResponse {
        added: r.added,
        changed: r.changed,
        removed: r.removed,
        unchanged: u32::try_from(r.unchanged).unwrap_or(u32::MAX),
    }
}

/// A time sent by a client, refused (naming `field`) when out of range.
pub(super) fn time(t: prost_types::Timestamp, field: &str) -> Result<jiff::Timestamp, Status> {
    from_proto_timestamp(&t)
        .ok_or_else(|| Status::invalid_argument(format!("{field} is not a valid time")))
}

/// The gRPC code for each broker error: the one mapping (DESIGN §5).
pub(super) fn code(e: &BrokerError) -> Code {
    use BrokerError as E;
    match e {
        E::NotFound { .. } => Code::NotFound,
        E::CallerDenied { .. } | E::ActAsDenied { .. } | E::NotAdmin { .. } => {
            Code::PermissionDenied
        }
        E::ActAsRequired { .. }
        | E::ActAsRefused { .. }
        | E::ActAsInvalid { .. }
        | E::UnknownScope { .. }
        | E::InvalidInput(_)
        // Asking a credential for what its kind cannot do is a wrong
        // request, not a credential that needs a person.
        | E::WrongKind { .. }
        | E::NotApplicable { .. } => Code::InvalidArgument,
        E::MissingScopes { .. }
        | E::Expired { .. }
        | E::ExpiresTooSoon { .. }
        | E::NotImported { .. }
        | E::NeedsLogin { .. }
        | E::Misconfigured { .. } => Code::FailedPrecondition,
        E::Unavailable { .. } => Code::Unavailable,
        E::TooSoon { .. } => Code::ResourceExhausted,
        E::Store(_) | E::Internal(_) => Code::Internal,
    }
}

impl From<BrokerError> for Status {
    fn from(e: BrokerError) -> Self {
        Self::new(code(&e), e.to_string())
    }
}
