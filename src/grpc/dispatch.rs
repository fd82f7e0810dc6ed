//! `tokend.v1.TokenBroker` calls straight to their service, ahead of
//! tonic's router.
//!
//! tonic routes every call through an axum router: a path match against
//! each service's route, and the request and response bodies boxed again
//! on the way in and out. For the calls that make up nearly all of the
//! socket's traffic (`GetHeaders`, `WatchHeaders`), that was more work per
//! call than the broker's own decision. This layer sits just inside the
//! metrics layer and hands any path under the service's prefix to the same
//! `TokenBrokerServer` the router would have picked, which answers unknown
//! methods there as it did behind the router (`UNIMPLEMENTED`); every
//! other path goes on to the router.

use std::convert::Infallible;
use std::task::{Context, Poll};

use futures_util::future::Either;
use tonic::body::Body;
use tonic::codegen::http;
use tonic::server::NamedService;

use super::token_broker::BrokerService;
use crate::proto::token_broker_server::TokenBrokerServer;

type Broker = TokenBrokerServer<BrokerService>;

/// The service's calls to `broker`, the rest to `routes`.
#[derive(Clone, Debug)]
pub(super) struct BrokerFirst<S> {
    routes: S,
    broker: Broker,
}

impl BrokerFirst<()> {
    pub(super) fn layer<S>(
        broker: Broker,
    ) -> impl tower::Layer<S, Service = BrokerFirst<S>> + Clone {
        tower::layer::layer_fn(move |routes| BrokerFirst {
            routes,
            broker: broker.clone(),
        })
    }
}

/// Whether `path` names a method of `tokend.v1.TokenBroker`.
fn is_broker(path: &str) -> bool {
    path.strip_prefix('/')
        .and_then(|p| p.strip_prefix(Broker::NAME))
        .is_some_and(|method| method.starts_with('/'))
}

impl<S> tower::Service<http::Request<Body>> for BrokerFirst<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Either<<Broker as tower::Service<http::Request<Body>>>::Future, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // The generated service is always ready.
        self.routes.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        if is_broker(req.uri().path()) {
            Either::Left(tower::Service::call(&mut self.broker, req))
        } else {
            Either::Right(self.routes.call(req))
        }
    }
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
}
