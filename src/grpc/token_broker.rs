//! `tokend.v1.TokenBroker`: headers, their stream, `Invalidate`, listings.
//! Each fetch is audited (who, what for, the outcome; never the token).

use std::pin::Pin;
use std::sync::Arc;

use futures_util::Stream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use super::convert::{self, headers_request, min_valid};
use super::{peer, wait_for};
use crate::alert::Engine;
use crate::broker::{Broker, BrokerError, HeadersRequest};
use crate::clock::SharedClock;
use crate::peer::Peer;
use crate::proto;
use crate::proto::token_broker_server::TokenBroker;
use crate::quota::Quota;

/// Maps the `TokenBroker` service to the broker.
#[derive(Debug)]
pub(super) struct BrokerService {
    pub(super) broker: Arc<Broker>,
    pub(super) alerts: Option<Arc<Engine>>,
    pub(super) clock: SharedClock,
    /// Ends open `WatchHeaders` streams when the daemon stops, so draining
    /// does not wait for them.
    pub(super) shutdown: CancellationToken,
    /// `WatchHeaders` streams open per uid.
    pub(super) streams: Quota,
    /// Audit lines about refused calls, per uid.
    pub(super) denied: DeniedAudit,
    /// The proxies listening, for `WhoAmI`.
    pub(super) proxies: Arc<[crate::config::ProxySettings]>,
}

/// How many `WatchHeaders` streams one uid may hold open (each holds a task
/// and a subscription).
pub const MAX_STREAMS_PER_UID: usize = 256;

/// Bounds on request fields: a credential name, an `act_as` email, the
/// scopes. Anything larger is refused before it is audited or looked up.
const MAX_NAME: usize = 256;
const MAX_ACT_AS: usize = 320;
const MAX_SCOPES: usize = 32;
const MAX_SCOPE: usize = 64;

/// Refuses a request whose fields are over their bounds, naming the field.
fn check_fields(r: &proto::GetHeadersRequest) -> Result<(), Status> {
    let too_long = |field: &str, limit: usize| {
        Status::invalid_argument(format!("{field} is over {limit} bytes"))
    };
    if r.credential.len() > MAX_NAME {
        return Err(too_long("credential", MAX_NAME));
    }
    if r.act_as.len() > MAX_ACT_AS {
        return Err(too_long("act_as", MAX_ACT_AS));
    }
    if r.required_scopes.len() > MAX_SCOPES {
        return Err(Status::invalid_argument(format!(
            "required_scopes has more than {MAX_SCOPES} entries"
        )));
    }
    if r.required_scopes.iter().any(|s| s.len() > MAX_SCOPE) {
        return Err(too_long("a required scope", MAX_SCOPE));
    }
    Ok(())
}

impl BrokerService {
    /// `GetHeaders` for `peer`, waiting up to `wait` for a refresh: what
    /// both the direct unary path (`unary`) and the generated service's
    /// method answer.
    pub(super) async fn get_headers_for(
        &self,
        peer: &Peer,
        wait: std::time::Duration,
        r: proto::GetHeadersRequest,
    ) -> Result<proto::GetHeadersResponse, Status> {
        check_fields(&r)?;
        let request = headers_request(&r, min_valid(r.min_valid)?);
        let grant = self.broker.get_headers(peer, request, wait).await;
        self.denied.audit(peer, request, grant.as_ref().err());
        Ok(convert::headers_response(&grant?))
    }
}

type HeaderStream = Pin<Box<dyn Stream<Item = Result<proto::GetHeadersResponse, Status>> + Send>>;

#[tonic::async_trait]
impl TokenBroker for BrokerService {
    async fn get_headers(
        &self,
        req: Request<proto::GetHeadersRequest>,
    ) -> Result<Response<proto::GetHeadersResponse>, Status> {
        let peer = peer(&req)?;
        let wait = wait_for(req.metadata().as_ref());
        let answer = self.get_headers_for(&peer, wait, req.into_inner()).await?;
        Ok(Response::new(answer))
    }

    type WatchHeadersStream = HeaderStream;

    async fn watch_headers(
        &self,
        req: Request<proto::GetHeadersRequest>,
    ) -> Result<Response<HeaderStream>, Status> {
        let peer = peer(&req)?;
        let wait = wait_for(req.metadata().as_ref());
        let r = req.into_inner();
        check_fields(&r)?;
        let min_valid = min_valid(r.min_valid)?;
        let place = self.streams.admit(peer.uid).ok_or_else(|| {
            Status::resource_exhausted(format!(
                "uid {} has {MAX_STREAMS_PER_UID} WatchHeaders streams open, the most one uid \
                 may; close some first",
                peer.uid
            ))
        })?;
        let broker = Arc::clone(&self.broker);
        let mut rx = broker.watch(&peer, &r.credential)?;
        // The first set, or the error, answers the call itself.
        let first = {
            let request = headers_request(&r, min_valid);
            let grant = broker.get_headers(&peer, request, wait).await;
            self.denied.audit(&peer, request, grant.as_ref().err());
            let grant = grant?;
            (
                convert::headers_response(&grant),
                grant.token.fingerprint.clone(),
            )
        };
        let (tx, out) = tokio::sync::mpsc::channel(4);
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            // The uid's place is given back when the stream ends.
            let _place = place;
            let (first, mut sent) = first;
            if tx.send(Ok(first)).await.is_err() {
                return;
            }
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => {
                        let _ = tx.send(Err(Status::unavailable("tokend is shutting down"))).await;
                        return;
                    }
                    () = tx.closed() => return,
                    changed = rx.changed() => if changed.is_err() {
                        let _ = tx.send(Err(Status::not_found(format!(
                            "credential `{}` was removed", r.credential
                        )))).await;
                        return;
                    },
                }
                let request = headers_request(&r, min_valid);
                let next = match broker.get_headers(&peer, request, wait).await {
                    // The same token again (a state change, a reload that
                    // kept it): nothing new to send.
                    Ok(grant) if grant.token.fingerprint == sent => continue,
                    Ok(grant) => {
                        sent.clone_from(&grant.token.fingerprint);
                        Ok(convert::headers_response(&grant))
                    }
                    // Refreshing is failing but may recover: keep watching.
                    Err(BrokerError::Unavailable { .. }) => continue,
                    Err(e) => Err(Status::from(e)),
                };
                let end = next.is_err();
                if tx.send(next).await.is_err() || end {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(out),
        )))
    }

    async fn invalidate(
        &self,
        req: Request<proto::InvalidateRequest>,
    ) -> Result<Response<proto::InvalidateResponse>, Status> {
        let peer = peer(&req)?;
        let r = req.into_inner();
        if r.credential.len() > MAX_NAME || r.token_fingerprint.len() > 64 {
            return Err(Status::invalid_argument(format!(
                "credential is over {MAX_NAME} bytes or token_fingerprint over 64"
            )));
        }
        let refreshing = self
            .broker
            .invalidate(&peer, &r.credential, &r.token_fingerprint)?;
        Ok(Response::new(proto::InvalidateResponse { refreshing }))
    }

    async fn list_alerts(
        &self,
        req: Request<proto::ListAlertsRequest>,
    ) -> Result<Response<proto::ListAlertsResponse>, Status> {
        let peer = peer(&req)?;
        let alerts = self
            .alerts
            .iter()
            .flat_map(|engine| engine.open_alerts())
            .filter(|a| self.broker.visible(&peer, &a.credential))
            .map(convert::alert)
            .collect();
        Ok(Response::new(proto::ListAlertsResponse { alerts }))
    }

    async fn list_credentials(
        &self,
        req: Request<proto::ListCredentialsRequest>,
    ) -> Result<Response<proto::ListCredentialsResponse>, Status> {
        let peer = peer(&req)?;
        let credentials = self
            .broker
            .list(&peer, self.clock.now())
            .into_iter()
            .map(convert::credential_status)
            .collect();
        Ok(Response::new(proto::ListCredentialsResponse {
            credentials,
        }))
    }

    async fn who_am_i(
        &self,
        req: Request<proto::WhoAmIRequest>,
    ) -> Result<Response<proto::WhoAmIResponse>, Status> {
        let peer = peer(&req)?;
        let credentials = self.broker.fetchable(&peer);
        let proxies = self
            .proxies
            .iter()
            .filter(|p| credentials.contains(&p.credential))
            .map(convert::proxy_endpoint)
            .collect();
        Ok(Response::new(proto::WhoAmIResponse {
            uid: peer.uid,
            gid: peer.gid,
            groups: peer.groups.to_vec(),
            pid: peer.pid.unwrap_or(0),
            admin: self.broker.is_admin(&peer),
            credentials,
            proxies,
        }))
    }
}

/// Audit lines about refused calls allowed per uid per [`DENIED_WINDOW`];
/// the rest are counted and the count reported on the next line logged.
const DENIED_PER_WINDOW: u32 = 20;
const DENIED_WINDOW: std::time::Duration = std::time::Duration::from_secs(10);

/// Rate-limits audit lines about refused calls per uid, so one caller
/// hammering credentials it may not use cannot flood the log. Successful
/// fetches are always audited.
#[derive(Debug, Default)]
pub(super) struct DeniedAudit {
    /// Per uid: window start, lines logged in it, lines suppressed since
    /// the last one logged.
    uids: std::sync::Mutex<std::collections::HashMap<u32, (std::time::Instant, u32, u64)>>,
}

impl DeniedAudit {
    /// Records one header fetch on the `audit` log target: who asked and
    /// what for, and the outcome's gRPC code; the token never enters it.
    fn audit(&self, peer: &Peer, r: HeadersRequest<'_>, error: Option<&BrokerError>) {
        let suppressed = match error {
            None => 0,
            Some(_) => match self.admit(peer.uid) {
                Some(suppressed) => suppressed,
                None => return,
            },
        };
        let code = error.map_or(tonic::Code::Ok, convert::code);
        tracing::info!(
            target: "audit",
            credential = r.credential,
            uid = peer.uid,
            gid = peer.gid,
            pid = peer.pid,
            exe = peer.exe.as_deref().map(|e| e.display()).map(tracing::field::display),
            act_as = (!r.act_as.is_empty()).then_some(r.act_as),
            result = ?code,
            suppressed = (suppressed > 0).then_some(suppressed),
            "get_headers"
        );
    }

    /// Whether a refused call of `uid` may be logged now; if so, how many
    /// were suppressed before it.
    fn admit(&self, uid: u32) -> Option<u64> {
        let now = std::time::Instant::now();
        let mut uids = self.uids.lock().unwrap_or_else(|e| e.into_inner());
        if uids.len() > 4096 {
            uids.retain(|_, (start, _, suppressed)| {
                now.duration_since(*start) < DENIED_WINDOW || *suppressed > 0
            });
        }
        let (start, logged, suppressed) = uids.entry(uid).or_insert((now, 0, 0));
        if now.duration_since(*start) >= DENIED_WINDOW {
            (*start, *logged) = (now, 0);
        }
        if *logged >= DENIED_PER_WINDOW {
            *suppressed += 1;
            return None;
        }
        *logged += 1;
        Some(std::mem::take(suppressed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_calls_are_audited_at_a_bounded_rate_with_a_count() {
        let audit = DeniedAudit::default();
        for _ in 0..DENIED_PER_WINDOW {
            assert_eq!(audit.admit(7), Some(0));
        }
        for _ in 0..100 {
            assert_eq!(audit.admit(7), None);
        }
        assert_eq!(audit.admit(8), Some(0), "other uids are unaffected");
        // A new window: the next line carries what was suppressed.
        audit.uids.lock().unwrap().get_mut(&7).unwrap().0 -= DENIED_WINDOW;
        assert_eq!(audit.admit(7), Some(100));
        assert_eq!(audit.admit(7), Some(0));
    }

    #[test]
    fn oversize_fields_are_refused_naming_the_field() {
        let ok = proto::GetHeadersRequest {
            credential: "c".into(),
            ..Default::default()
        };
        assert!(check_fields(&ok).is_ok());
        for (req, field) in [
            (
                proto::GetHeadersRequest {
                    credential: "x".repeat(MAX_NAME + 1),
                    ..Default::default()
                },
                "credential is over 256 bytes",
            ),
            (
                proto::GetHeadersRequest {
                    act_as: "x".repeat(MAX_ACT_AS + 1),
                    ..ok.clone()
                },
                "act_as is over 320 bytes",
            ),
            (
                proto::GetHeadersRequest {
                    required_scopes: vec!["S".into(); MAX_SCOPES + 1],
                    ..ok
                },
                "required_scopes has more than 32",
            ),
        ] {
            let e = check_fields(&req).unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument);
            assert!(e.message().contains(field), "{}", e.message());
        }
    }
}
