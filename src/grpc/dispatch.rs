//! Every call on the socket: routed, given its deadline, and counted.
//!
//! This is what tonic's `transport::Server` stacked around our services
//! (the caller's [`Peer`] in the request extensions, `grpc-timeout`
//! enforced, errors recovered into gRPC statuses), done once per call
//! without its boxing. Calls go, by path:
//! - `GetHeaders`, nearly all of the traffic, to `unary` (no tonic codec);
//! - any other `tokend.v1.TokenBroker` path to the generated
//!   `TokenBrokerServer`, which answers unknown methods there as it did
//!   behind the router (`UNIMPLEMENTED`);
//! - everything else (Admin, health, reflection, unknown services) to
//!   tonic's router.
//!
//! Every call is counted in the metrics by method and code, including the
//! ones whose deadline expired.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::Either;
use hyper::body::Incoming;
use tonic::Status;
use tonic::body::Body;
use tonic::server::NamedService;
use tonic::service::Routes;
use tower::ServiceExt;

use super::metrics_layer::{grpc_code, method_label};
use super::token_broker::BrokerService;
use super::unary::{self, UnaryBody};
use crate::metrics::Metrics;
use crate::peer::Peer;
use crate::proto::token_broker_server::TokenBrokerServer;

type Broker = TokenBrokerServer<BrokerService>;

/// What a call answers with: the direct path's body or tonic's.
pub(super) type ResponseBody = Either<UnaryBody, Body>;

/// The services of every connection.
pub(super) struct Calls {
    pub(super) metrics: Arc<Metrics>,
    /// The service behind the direct path and `broker`.
    pub(super) service: Arc<BrokerService>,
    pub(super) broker: Broker,
    pub(super) routes: Routes,
}

impl Calls {
    /// Answers one call from `peer`.
    pub(super) async fn call(
        &self,
        peer: &Arc<Peer>,
        mut req: http::Request<Incoming>,
    ) -> http::Response<ResponseBody> {
        let started = Instant::now();
        let method = method_label(req.uri().path());
        let deadline = grpc_timeout(req.headers());
        let answer = async {
            if req.uri().path() == unary::GET_HEADERS {
                return unary::get_headers(&self.service, peer, req)
                    .await
                    .map(Either::Left);
            }
            req.extensions_mut().insert(Arc::clone(peer));
            let answer = if is_broker(req.uri().path()) {
                self.broker.clone().oneshot(req).await
            } else {
                self.routes.clone().oneshot(req).await
            };
            match answer {
                Ok(response) => response.map(Either::Right),
                Err(never) => match never {},
            }
        };
        let response = match deadline {
            None => answer.await,
            // tonic's deadline: the call is dropped and answered CANCELLED.
            Some(d) => tokio::time::timeout(d, answer).await.unwrap_or_else(|_| {
                Status::cancelled("Timeout expired")
                    .into_http::<()>()
                    .map(|()| Either::Right(Body::empty()))
            }),
        };
        self.metrics
            .grpc(method, grpc_code(response.headers()), started);
        response
    }
}

/// Whether `path` names a method of `tokend.v1.TokenBroker`.
fn is_broker(path: &str) -> bool {
    path.strip_prefix('/')
        .and_then(|p| p.strip_prefix(Broker::NAME))
        .is_some_and(|method| method.starts_with('/'))
}

/// The caller's deadline from `grpc-timeout`, read as tonic's server reads
/// it: at most 8 digits and a unit; anything else is no deadline.
fn grpc_timeout(headers: &http::HeaderMap) -> Option<Duration> {
    let value = headers.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.len() > 8 {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_services_own_paths_go_straight_to_it() {
        for path in [
            "/tokend.v1.TokenBroker/GetHeaders",
            "/tokend.v1.TokenBroker/WatchHeaders",
            "/tokend.v1.TokenBroker/NoSuchMethod",
            "/tokend.v1.TokenBroker/",
        ] {
            assert!(is_broker(path), "{path}");
        }
        for path in [
            "/tokend.v1.Admin/Reload",
            "/tokend.v1.TokenBrokerX/GetHeaders",
            "/tokend.v1.TokenBroker",
            "tokend.v1.TokenBroker/GetHeaders",
            "/grpc.health.v1.Health/Check",
            "/",
        ] {
            assert!(!is_broker(path), "{path}");
        }
    }

    #[test]
    fn deadlines_are_read_as_tonic_reads_them() {
        let t = |v: &'static str| {
            let mut h = http::HeaderMap::new();
            h.insert("grpc-timeout", http::HeaderValue::from_static(v));
            grpc_timeout(&h)
        };
        assert_eq!(t("500m"), Some(Duration::from_millis(500)));
        assert_eq!(t("99999999H"), Some(Duration::from_secs(99_999_999 * 3600)));
        assert_eq!(t("2S"), Some(Duration::from_secs(2)));
        assert_eq!(t("100000000S"), None, "more than 8 digits");
        assert_eq!(t("18446744073709551615S"), None);
        assert_eq!(t("5x"), None);
        assert_eq!(t(""), None);
        assert_eq!(grpc_timeout(&http::HeaderMap::new()), None);
    }
}
