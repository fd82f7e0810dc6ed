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
//! ones whose deadline expired, and holds a place in its uid's quota of
//! calls in flight ([`MAX_CALLS_PER_UID`](super::MAX_CALLS_PER_UID)) until
//! its response headers are ready: a call still reading its request holds
//! up to [`MAX_REQUEST`](super::MAX_REQUEST) of it, so without the quota a
//! local user's connections could each hold that many times over.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http_body_util::Either;
use tonic::Status;
use tonic::body::Body;
use tonic::server::NamedService;
use tonic::service::Routes;
use tower::ServiceExt;

use super::metrics_layer::{grpc_code, method_label};
use super::stream::RecvBody;
use super::token_broker::BrokerService;
use super::unary::{self, UnaryBody};
use crate::metrics::Metrics;
use crate::peer::Peer;
use crate::proto::token_broker_server::TokenBrokerServer;
use crate::quota::{Place, Quota};

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
    /// Calls in flight per uid; each connection holds its uid's count.
    pub(super) in_flight: Quota,
}

impl Calls {
    /// Answers one call from `peer`: counted, within its deadline, or
    /// RESOURCE_EXHAUSTED at once when its uid had no `place` left among its
    /// calls in flight (taken from the connection's count of
    /// [`Calls::in_flight`]).
    ///
    /// The futures here are plain structs around the call's own, not
    /// `async` blocks holding them: each stream's future is moved into its
    /// allocation whole, so its size is paid in copying on every call.
    pub(super) fn call<'a>(
        &'a self,
        peer: &'a Arc<Peer>,
        place: Option<Place>,
        req: http::Request<RecvBody>,
    ) -> impl Future<Output = http::Response<ResponseBody>> + Send + 'a {
        use futures_util::future::{Either as Which, ready};
        let started = Instant::now();
        let method = method_label(req.uri().path());
        let inner = if place.is_some() {
            let deadline = grpc_timeout(req.headers());
            Which::Left(Deadline {
                sleep: deadline.map(tokio::time::sleep),
                inner: self.route(peer, req),
            })
        } else {
            Which::Right(ready(too_many_calls(peer.uid)))
        };
        Counted {
            inner,
            method,
            started,
            metrics: &self.metrics,
            place,
        }
    }

    /// The call's answer, by path.
    fn route<'a>(
        &'a self,
        peer: &'a Arc<Peer>,
        mut req: http::Request<RecvBody>,
    ) -> impl Future<Output = http::Response<ResponseBody>> + Send + 'a {
        use futures_util::future::{Either as Which, FutureExt};
        if req.uri().path() == unary::GET_HEADERS {
            return Which::Left(
                unary::get_headers(&self.service, peer, req).map(|r| r.map(Either::Left)),
            );
        }
        req.extensions_mut().insert(Arc::clone(peer));
        let answer = if is_broker(req.uri().path()) {
            Which::Left(self.broker.clone().oneshot(req))
        } else {
            Which::Right(self.routes.clone().oneshot(req))
        };
        Which::Right(answer.map(|answer| match answer {
            Ok(response) => response.map(Either::Right),
            Err(never) => match never {},
        }))
    }
}

/// A call within the caller's `grpc-timeout`, as tonic's server bounded
/// it: past the deadline the call is dropped and answered CANCELLED
/// "Timeout expired".
#[pin_project::pin_project]
struct Deadline<F> {
    #[pin]
    inner: F,
    #[pin]
    sleep: Option<tokio::time::Sleep>,
}

impl<F: Future<Output = http::Response<ResponseBody>>> Future for Deadline<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        if let Poll::Ready(response) = this.inner.poll(cx) {
            return Poll::Ready(response);
        }
        match this.sleep.as_pin_mut().map(|s| s.poll(cx)) {
            Some(Poll::Ready(())) => Poll::Ready(refusal(Status::cancelled("Timeout expired"))),
            _ => Poll::Pending,
        }
    }
}

/// The answer to a call over its uid's quota of calls in flight; the
/// request is not read.
fn too_many_calls(uid: u32) -> http::Response<ResponseBody> {
    refusal(Status::resource_exhausted(format!(
        "uid {uid} has {} calls in flight, the most one uid may; wait for some to finish",
        super::MAX_CALLS_PER_UID
    )))
}

/// `status` as a trailers-only response, as tonic answers an error.
fn refusal(status: Status) -> http::Response<ResponseBody> {
    status
        .into_http::<()>()
        .map(|()| Either::Right(Body::empty()))
}

/// A call counted by method and code when its response headers are ready,
/// holding its place among its uid's calls in flight until then.
#[pin_project::pin_project]
struct Counted<'a, F> {
    #[pin]
    inner: F,
    method: &'static str,
    started: Instant,
    metrics: &'a Metrics,
    place: Option<Place>,
}

impl<F: Future<Output = http::Response<ResponseBody>>> Future for Counted<'_, F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let response = std::task::ready!(this.inner.poll(cx));
        this.metrics
            .grpc(this.method, grpc_code(response.headers()), *this.started);
        this.place.take();
        Poll::Ready(response)
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
pub(super) fn grpc_timeout(headers: &http::HeaderMap) -> Option<Duration> {
    let value = headers.get(&super::GRPC_TIMEOUT)?.to_str().ok()?;
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

    #[tokio::test(start_paused = true)]
    async fn a_call_past_its_deadline_is_answered_cancelled_as_tonic_did() {
        let slow = Deadline {
            inner: std::future::pending::<http::Response<ResponseBody>>(),
            sleep: Some(tokio::time::sleep(Duration::from_millis(500))),
        };
        let response = slow.await;
        assert_eq!(response.headers()["grpc-status"], "1");
        assert_eq!(response.headers()["grpc-message"], "Timeout%20expired");
        assert_eq!(response.headers()["content-type"], "application/grpc");
        let quick = Deadline {
            inner: std::future::ready(http::Response::new(Either::Right(Body::empty()))),
            sleep: Some(tokio::time::sleep(Duration::ZERO)),
        };
        assert!(
            !quick.await.headers().contains_key("grpc-status"),
            "an answer ready in time wins"
        );
    }
}
