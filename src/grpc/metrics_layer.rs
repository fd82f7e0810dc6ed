//! gRPC metrics for every method as a tower layer: counted by method and
//! code, timed to the response headers, with static labels and an unboxed
//! future so a call costs no allocation here.

use std::sync::Arc;
use std::time::Instant;

use tonic::codegen::http;

use crate::metrics::Metrics;

/// Counts every gRPC call by method and code, and times it to its response
/// headers (the whole call for unary methods; the first message for
/// streams). The code is the `grpc-status` of a trailers-only (error)
/// response, else OK.
#[derive(Clone, Debug)]
pub(super) struct GrpcMetrics<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl GrpcMetrics<()> {
    pub(super) fn layer<S>(
        metrics: Arc<Metrics>,
    ) -> impl tower::Layer<S, Service = GrpcMetrics<S>> + Clone {
        tower::layer::layer_fn(move |inner| GrpcMetrics {
            inner,
            metrics: Arc::clone(&metrics),
        })
    }
}

/// The methods tokend serves, as static metric labels.
const METHODS: [&str; 18] = [
    "GetHeaders",
    "WatchHeaders",
    "Invalidate",
    "ListCredentials",
    "ListAlerts",
    "WhoAmI",
    "Refresh",
    "PutRefreshToken",
    "ImportSecret",
    "BeginLogin",
    "CompleteLogin",
    "Logout",
    "TestAlert",
    "Reload",
    "Check",
    "Watch",
    "ServerReflectionInfo",
    "other",
];

/// The label for a request path: one of [`METHODS`]. A local client
/// sending junk paths must not grow the metric set without bound.
fn method_label(path: &str) -> &'static str {
    let known = ["/tokend.v1.", "/grpc.health.v1.", "/grpc.reflection."];
    let name = path.rsplit('/').next().unwrap_or("");
    match METHODS.iter().find(|m| **m == name) {
        Some(m) if known.iter().any(|p| path.starts_with(p)) => m,
        _ => "other",
    }
}

impl<S, B, R> tower::Service<http::Request<B>> for GrpcMetrics<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Timed<S::Future>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        Timed {
            method: method_label(req.uri().path()),
            started: Instant::now(),
            metrics: Arc::clone(&self.metrics),
            inner: self.inner.call(req),
        }
    }
}

/// A call's future that records it when the response headers are ready;
/// no boxing, so counting costs no allocation per call.
#[pin_project::pin_project]
pub struct Timed<F> {
    #[pin]
    inner: F,
    method: &'static str,
    started: Instant,
    metrics: Arc<Metrics>,
}

impl<F, R, E> Future for Timed<F>
where
    F: Future<Output = Result<http::Response<R>, E>>,
{
    type Output = F::Output;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let this = self.project();
        let out = std::task::ready!(this.inner.poll(cx));
        if let Ok(r) = &out {
            let code = r
                .headers()
                .get("grpc-status")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<i32>().ok())
                .map_or(tonic::Code::Ok, tonic::Code::from_i32);
            this.metrics.grpc(this.method, code, *this.started);
        }
        std::task::Poll::Ready(out)
    }
}
