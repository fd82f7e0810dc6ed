//! Prometheus metrics (OpenMetrics text). Per-credential gauges are rendered
//! from the statuses of the moment at scrape time, so they are never stale
//! and cost nothing between scrapes; the listener serving them is the
//! daemon's (`daemon::metrics_http`).

use std::sync::atomic::AtomicU64;
use std::time::Instant;

use jiff::Timestamp;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::status::Status;
use crate::token::State;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CredentialLabel {
    credential: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProxyLabel {
    proxy: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProxyStatusLabel {
    proxy: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InfoLabel {
    credential: String,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    credential: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GrpcLabel {
    method: &'static str,
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabel {
    method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SinkLabel {
    sink: String,
    result: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// Every metric tokend exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    info: Family<InfoLabel, Gauge>,
    expiry: Family<CredentialLabel, FloatGauge>,
    login_expiry: Family<CredentialLabel, FloatGauge>,
    state: Family<StateLabel, Gauge>,
    since_refresh: Family<CredentialLabel, FloatGauge>,
    refresh_attempts: Family<ResultLabel, Counter>,
    refresh_duration: Family<ResultLabel, Histogram>,
    grpc_requests: Family<GrpcLabel, Counter>,
    grpc_duration: Family<MethodLabel, Histogram>,
    alert_deliveries: Family<SinkLabel, Counter>,
    proxy_requests: Family<ProxyStatusLabel, Counter>,
    proxy_upstream: Family<ProxyLabel, Histogram>,
    proxy_retries: Family<ProxyLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("tokend");
        let info = Family::default();
        registry.register(
            "credential_info",
            "1 per configured credential, labelled with its kind (glean_token, oauth_refresh, \
             oauth_client_credentials), for joins: only glean_token expiries need a person",
            info.clone(),
        );
        let expiry = Family::default();
        registry.register(
            "credential_expiry_timestamp_seconds",
            "When the credential's current token expires (Unix time)",
            expiry.clone(),
        );
        let login_expiry = Family::default();
        registry.register(
            "credential_login_expiry_timestamp_seconds",
            "When the credential's login (refresh token) expires, by the configured \
             refresh_token_lifetime (Unix time)",
            login_expiry.clone(),
        );
        let state = Family::default();
        registry.register(
            "credential_state",
            "1 for the credential's current state",
            state.clone(),
        );
        let since_refresh = Family::default();
        registry.register(
            "credential_seconds_since_refresh",
            "Seconds since the credential last obtained a token",
            since_refresh.clone(),
        );
        let refresh_attempts = Family::default();
        registry.register(
            "refresh_attempts",
            "Token requests by result (ok, transient, permanent)",
            refresh_attempts.clone(),
        );
        let refresh_duration = Family::<ResultLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 15))
        });
        registry.register(
            "refresh_duration_seconds",
            "Duration of token requests",
            refresh_duration.clone(),
        );
        let grpc_requests = Family::default();
        registry.register(
            "grpc_requests",
            "gRPC calls by method and code",
            grpc_requests.clone(),
        );
        let grpc_duration = Family::<MethodLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.000_05, 2.0, 18))
        });
        registry.register(
            "grpc_request_duration_seconds",
            "gRPC call latency by method",
            grpc_duration.clone(),
        );
        let alert_deliveries = Family::default();
        registry.register(
            "alert_deliveries",
            "Alert deliveries by sink and result (ok, failed, dropped)",
            alert_deliveries.clone(),
        );
        let proxy_requests = Family::default();
        registry.register(
            "proxy_requests",
            "Requests answered by each [[proxy]], by HTTP status (tokend's own refusals included)",
            proxy_requests.clone(),
        );
        let proxy_upstream = Family::<ProxyLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 17))
        });
        registry.register(
            "proxy_upstream_duration_seconds",
            "Time from forwarding a request to the upstream's answer headers",
            proxy_upstream.clone(),
        );
        let proxy_retries = Family::default();
        registry.register(
            "proxy_retries",
            "Requests sent again with a replacement token after the upstream answered 401",
            proxy_retries.clone(),
        );
        Self {
            registry,
            proxy_requests,
            proxy_upstream,
            proxy_retries,
            info,
            expiry,
            login_expiry,
            state,
            since_refresh,
            refresh_attempts,
            refresh_duration,
            grpc_requests,
            grpc_duration,
            alert_deliveries,
        }
    }
}

impl Metrics {
    /// Counts and times one token request by its result.
    pub fn refresh(&self, result: &'static str, started: Instant) {
        let label = ResultLabel { result };
        self.refresh_attempts.get_or_create(&label).inc();
        self.refresh_duration
            .get_or_create(&label)
            .observe(started.elapsed().as_secs_f64());
    }

    /// Counts and times one call. Static labels: the per-call path
    /// allocates nothing here.
    pub fn grpc(&self, method: &'static str, code: tonic::Code, started: Instant) {
        self.grpc_requests
            .get_or_create(&GrpcLabel {
                method,
                code: code_name(code),
            })
            .inc();
        self.grpc_duration
            .get_or_create(&MethodLabel { method })
            .observe(started.elapsed().as_secs_f64());
    }

    /// Counts one alert delivery by sink and result.
    pub fn alert_delivery(&self, sink: &str, result: &str) {
        self.alert_deliveries
            .get_or_create(&SinkLabel {
                sink: sink.to_owned(),
                result: result.to_owned(),
            })
            .inc();
    }

    /// A request a proxy answered with `status`.
    pub fn proxy_request(&self, proxy: &str, status: u16) {
        self.proxy_requests
            .get_or_create(&ProxyStatusLabel {
                proxy: proxy.to_owned(),
                status,
            })
            .inc();
    }

    /// How long a proxy's upstream took to answer.
    pub fn proxy_upstream(&self, proxy: &str, took: std::time::Duration) {
        self.proxy_upstream
            .get_or_create(&ProxyLabel {
                proxy: proxy.to_owned(),
            })
            .observe(took.as_secs_f64());
    }

    /// A proxied request sent again after a 401.
    pub fn proxy_retry(&self, proxy: &str) {
        self.proxy_retries
            .get_or_create(&ProxyLabel {
                proxy: proxy.to_owned(),
            })
            .inc();
    }

    /// The exposition text, with per-credential gauges from `statuses`
    /// taken at `now`.
    pub fn render(&self, statuses: &[Status], now: Timestamp) -> String {
        self.info.clear();
        self.expiry.clear();
        self.login_expiry.clear();
        self.state.clear();
        self.since_refresh.clear();
        for s in statuses {
            let credential = s.name.to_string();
            self.info
                .get_or_create(&InfoLabel {
                    credential: credential.clone(),
                    kind: s.kind.as_str(),
                })
                .set(1);
            if let Some(at) = s.login_expires_at {
                self.login_expiry
                    .get_or_create(&CredentialLabel {
                        credential: credential.clone(),
                    })
                    .set(at.as_millisecond() as f64 / 1000.0);
            }
            if let Some(at) = s.expires_at {
                self.expiry
                    .get_or_create(&CredentialLabel {
                        credential: credential.clone(),
                    })
                    .set(at.as_millisecond() as f64 / 1000.0);
            }
            if let Some(at) = s.last_refresh {
                self.since_refresh
                    .get_or_create(&CredentialLabel {
                        credential: credential.clone(),
                    })
                    .set(now.duration_since(at).as_secs_f64());
            }
            for state in State::ALL {
                self.state
                    .get_or_create(&StateLabel {
                        credential: credential.clone(),
                        state: state.as_str().to_owned(),
                    })
                    .set(i64::from(s.state == state));
            }
        }
        let mut out = String::new();
        // Encoding into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// The name of a gRPC status code, as a label.
fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code as C;
    match code {
        C::Ok => "Ok",
        C::Cancelled => "Cancelled",
        C::Unknown => "Unknown",
        C::InvalidArgument => "InvalidArgument",
        C::DeadlineExceeded => "DeadlineExceeded",
        C::NotFound => "NotFound",
        C::AlreadyExists => "AlreadyExists",
        C::PermissionDenied => "PermissionDenied",
        C::ResourceExhausted => "ResourceExhausted",
        C::FailedPrecondition => "FailedPrecondition",
        C::Aborted => "Aborted",
        C::OutOfRange => "OutOfRange",
        C::Unimplemented => "Unimplemented",
        C::Internal => "Internal",
        C::Unavailable => "Unavailable",
        C::DataLoss => "DataLoss",
        C::Unauthenticated => "Unauthenticated",
    }
}
