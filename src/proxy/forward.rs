//! One proxied request: the caller's identity and Glean's rules checked
//! first, the caller's credentials swapped for the credential's headers,
//! then forwarded with both bodies streaming; a 401 reported to the broker
//! and the request sent once more with the replacement when its body was
//! kept.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;

use super::{MAX_HEAD, RETRY_BODY, TOKEN_WAIT, UPSTREAM_CONNECT_TIMEOUT, scopes};
use crate::broker::{Broker, BrokerError, HeadersRequest};
use crate::config::{ProxyListen, ProxySettings};
use crate::glean;
use crate::metrics::Metrics;
use crate::peer::Peer;

/// What the caller gets back: an upstream answer streaming through, or
/// tokend's own.
type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Headers that describe one hop, not the request (RFC 9110 §7.6.1), and
/// those tokend sets itself: never passed on from the caller.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// The act-as headers callers send: Glean's, its legacy one, and the
/// spelling Glean's MCP server uses. Any of them is read as the caller's
/// act-as; all are dropped, and tokend's own is added.
const ACT_AS_HEADERS: [&str; 3] = ["x-glean-actas", "x-scio-actas", "x-glean-act-as"];

/// Forwards one proxy's requests.
pub struct Forwarder {
    settings: ProxySettings,
    /// `settings.upstream`, parsed once: each request only sets its path
    /// and query on a copy (reparsing the host cost 6 % of a call).
    base: reqwest::Url,
    broker: Arc<Broker>,
    metrics: Arc<Metrics>,
    http: reqwest::Client,
}

impl Forwarder {
    /// A forwarder for `settings`, trusting the system's roots and its
    /// `ca_file`. The error names the file and what is wrong with it.
    pub fn new(
        settings: ProxySettings,
        broker: Arc<Broker>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, String> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::Client::builder()
            .connect_timeout(UPSTREAM_CONNECT_TIMEOUT)
            .read_timeout(settings.upstream_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .pool_idle_timeout(Duration::from_secs(90));
        if let Some(path) = &settings.ca_file {
            let pem = std::fs::read(path)
                .map_err(|e| format!("cannot read ca_file {}: {e}", path.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|_| format!("ca_file {} holds no PEM certificate", path.display()))?;
            if certs.is_empty() {
                return Err(format!(
                    "ca_file {} holds no PEM certificate",
                    path.display()
                ));
            }
            builder = builder.tls_certs_merge(certs);
        }
        let http = builder
            .build()
            .map_err(|e| format!("cannot set up TLS: {e}"))?;
        let base = reqwest::Url::parse(&settings.upstream)
            .map_err(|e| format!("upstream `{}` is not a URL: {e}", settings.upstream))?;
        Ok(Self {
            base,
            settings,
            broker,
            metrics,
            http,
        })
    }

    /// What it was built from.
    pub fn settings(&self) -> &ProxySettings {
        &self.settings
    }

    /// The proxy's name.
    pub fn name(&self) -> &str {
        &self.settings.name
    }

    /// Where it listens.
    pub fn listen(&self) -> &ProxyListen {
        &self.settings.listen
    }

    /// Answers one request from `peer`; never fails (errors become answers).
    pub async fn handle(&self, peer: &Peer, req: Request<Incoming>) -> Response<Body> {
        let started = Instant::now();
        let (method, path) = (req.method().clone(), req.uri().path().to_owned());
        let response = match self.forward(peer, req).await {
            Ok(r) => r,
            Err(refusal) => refusal.into_response(),
        };
        let status = response.status().as_u16();
        self.metrics.proxy_request(&self.settings.name, status);
        tracing::info!(
            target: "audit",
            proxy = %self.settings.name,
            credential = %self.settings.credential,
            uid = peer.uid,
            pid = peer.pid.unwrap_or(0),
            %method,
            %path,
            status,
            ms = started.elapsed().as_millis() as u64,
            "proxied"
        );
        response
    }

    async fn forward(
        &self,
        peer: &Peer,
        req: Request<Incoming>,
    ) -> Result<Response<Body>, Refusal> {
        let (parts, body) = req.into_parts();
        // hyper enforces its buffer size only while a head is incomplete, so
        // a head read whole can be larger: measured here too.
        let head = parts.uri.to_string().len()
            + parts
                .headers
                .iter()
                .map(|(n, v)| n.as_str().len() + v.len() + 4)
                .sum::<usize>();
        if head > MAX_HEAD {
            return Err(Refusal::new(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                format!(
                    "the request line and headers are over {} KiB",
                    MAX_HEAD / 1024
                ),
            ));
        }
        let Some(path_and_query) = parts
            .uri
            .path_and_query()
            .filter(|_| parts.uri.scheme().is_none())
            .filter(|p| p.path().starts_with('/'))
        else {
            return Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                "send requests in origin form (`POST /rest/api/v1/search`), not as a proxy \
                 request for another host; tokend sends them to the configured upstream",
            ));
        };
        let act_as = caller_act_as(&parts.headers)?;
        // Glean's scope names are those of Glean-issued tokens; what an
        // OAuth token may do is the authorization server's grant, and Glean
        // decides.
        let scope = if self.broker.is_glean_token(&self.settings.credential) {
            scopes::required(path_and_query.path())
        } else {
            None
        };
        let required: Vec<String> = scope.iter().map(|s| (*s).to_owned()).collect();
        let request = HeadersRequest {
            credential: &self.settings.credential,
            act_as: act_as.as_deref().unwrap_or(""),
            required_scopes: &required,
            min_valid: None,
        };
        let grant_headers = |grant: crate::broker::Grant<'_>| {
            let headers: Vec<(String, String)> = grant
                .headers()
                .map(|(n, v)| (n.to_owned(), v.to_owned()))
                .collect();
            (headers, grant.token.fingerprint.clone())
        };
        let (headers, fingerprint) = self
            .broker
            .get_headers_unless_failing(peer, request, TOKEN_WAIT)
            .await
            .map(grant_headers)
            .map_err(|e| Refusal::broker(e, scope))?;

        let length = content_length(&parts.headers)?;
        let max = self.settings.max_request_body;
        if length.is_some_and(|n| n > max) {
            return Err(too_large(&self.settings.name, max));
        }
        // A small body (or none) is kept for a retry after 401; a large or
        // chunked one streams through once, bounded by max_request_body.
        let (kept, first_body) = match length {
            Some(n) if n <= RETRY_BODY => {
                let bytes = Limited::new(body, n as usize)
                    .collect()
                    .await
                    .map_err(|_| {
                        Refusal::new(
                            StatusCode::BAD_REQUEST,
                            "the request body ended early or was longer than its Content-Length",
                        )
                    })?
                    .to_bytes();
                (Some(bytes.clone()), reqwest::Body::from(bytes))
            }
            _ => (None, reqwest::Body::wrap(Limited::new(body, max as usize))),
        };
        let mut url = self.base.clone();
        url.set_path(&format!(
            "{}{}",
            self.base.path().trim_end_matches('/'),
            path_and_query.path()
        ));
        url.set_query(path_and_query.query());
        let forwarded = forwarded_headers(&parts.headers);
        let send = |headers: &[(String, String)], body: reqwest::Body| {
            let mut request = self
                .http
                .request(parts.method.clone(), url.clone())
                .headers(forwarded.clone())
                .body(body);
            for (name, value) in headers {
                request = request.header(name, value);
            }
            request.send()
        };
        let started = Instant::now();
        let mut response = send(&headers, first_body)
            .await
            .map_err(|e| self.unreachable(&e))?;
        if response.status() == StatusCode::UNAUTHORIZED
            && let Some(bytes) = kept
        {
            // Reported once however many requests met it; the broker then
            // withholds the token and waits for its replacement.
            let _ = self
                .broker
                .invalidate(peer, &self.settings.credential, &fingerprint);
            if let Ok(grant) = self
                .broker
                .get_headers_unless_failing(peer, request, TOKEN_WAIT)
                .await
            {
                let (headers, _) = grant_headers(grant);
                self.metrics.proxy_retry(&self.settings.name);
                response = send(&headers, reqwest::Body::from(bytes))
                    .await
                    .map_err(|e| self.unreachable(&e))?;
            }
        }
        self.metrics
            .proxy_upstream(&self.settings.name, started.elapsed());
        Ok(answer(response))
    }

    /// Why sending failed, as the caller's answer: the caller's body over
    /// the limit (413), the upstream's silence (504), or the upstream
    /// unreachable or failing mid-request (502).
    fn unreachable(&self, e: &reqwest::Error) -> Refusal {
        let mut causes = std::iter::successors(std::error::Error::source(e), |s| s.source());
        if causes.any(|s| s.is::<http_body_util::LengthLimitError>()) {
            return too_large(&self.settings.name, self.settings.max_request_body);
        }
        let upstream = origin(&self.settings.upstream);
        if e.is_timeout() {
            return Refusal::new(
                StatusCode::GATEWAY_TIMEOUT,
                format!(
                    "upstream {upstream} did not answer within {} (proxy.{}.upstream_timeout)",
                    humantime::format_duration(self.settings.upstream_timeout),
                    self.settings.name
                ),
            );
        }
        let what = if e.is_connect() {
            "cannot be reached"
        } else {
            "failed mid-request"
        };
        // The error's URL may carry the caller's query: not repeated.
        let cause = std::error::Error::source(e).map_or_else(String::new, |s| format!(": {s}"));
        Refusal::new(
            StatusCode::BAD_GATEWAY,
            format!("upstream {upstream} {what}{cause}"),
        )
    }
}

/// The upstream's scheme, host and port, for messages.
fn origin(url: &str) -> &str {
    let rest = url.find("://").map_or(0, |i| i + 3);
    url[rest..].find('/').map_or(url, |end| &url[..rest + end])
}

/// The caller's act-as, from any of the headers callers use; two different
/// ones are refused rather than guessed between.
fn caller_act_as(headers: &HeaderMap) -> Result<Option<String>, Refusal> {
    let mut found: Option<String> = None;
    for name in ACT_AS_HEADERS {
        for value in headers.get_all(name) {
            let value = value.to_str().map_err(|_| {
                Refusal::new(
                    StatusCode::BAD_REQUEST,
                    "X-Glean-ActAs is not a valid email",
                )
            })?;
            let value = value.trim();
            if value.is_empty() {
                continue;
            }
            match &found {
                Some(f) if !f.eq_ignore_ascii_case(value) => {
                    return Err(Refusal::new(
                        StatusCode::BAD_REQUEST,
                        "the request names two different users to act as; send one X-Glean-ActAs",
                    ));
                }
                _ => found = Some(value.to_owned()),
            }
        }
    }
    Ok(found)
}

fn content_length(headers: &HeaderMap) -> Result<Option<u64>, Refusal> {
    headers
        .get(header::CONTENT_LENGTH)
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    Refusal::new(StatusCode::BAD_REQUEST, "Content-Length is not a number")
                })
        })
        .transpose()
}

fn too_large(proxy: &str, max: u64) -> Refusal {
    Refusal::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!(
            "the request body is over this proxy's limit of {max} bytes (proxy.{proxy}.max_request_body)"
        ),
    )
}

/// The caller's headers that go upstream: all but hop-by-hop ones (and any
/// the `Connection` header names), `Host` (the upstream's is set), and the
/// credentials and act-as that tokend replaces.
fn forwarded_headers(headers: &HeaderMap) -> HeaderMap {
    let named_by_connection: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|n| n.trim().to_ascii_lowercase())
        .collect();
    let mut out = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        let n = name.as_str();
        let dropped = HOP_BY_HOP.contains(&n)
            || ACT_AS_HEADERS.contains(&n)
            || named_by_connection.iter().any(|c| c == n)
            || name == header::HOST
            || name == header::AUTHORIZATION
            || n.eq_ignore_ascii_case(glean::AUTH_TYPE_HEADER);
        if !dropped {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

/// The upstream's answer for the caller, its body streaming through, less
/// its hop-by-hop headers.
fn answer(response: reqwest::Response) -> Response<Body> {
    let response: Response<reqwest::Body> = response.into();
    let (mut parts, body) = response.into_parts();
    let named: Vec<HeaderName> = parts
        .headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::try_from(n.trim()).ok())
        .collect();
    for name in HOP_BY_HOP
        .iter()
        .copied()
        .map(HeaderName::from_static)
        .chain(named)
    {
        parts.headers.remove(name);
    }
    Response::from_parts(
        parts,
        body.map_err(|e| Box::new(e) as BoxError).boxed_unsync(),
    )
}

/// A request the proxy answers itself.
#[derive(Debug)]
struct Refusal {
    status: StatusCode,
    message: String,
}

impl Refusal {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    /// The broker's refusal as an HTTP answer, like Glean's own where Glean
    /// has one (400 for a global token without act-as, 403 for a missing
    /// scope), so clients handle it as they would Glean's.
    fn broker(e: BrokerError, scope: Option<&str>) -> Self {
        use BrokerError as E;
        let status = match &e {
            E::CallerDenied { .. } | E::ActAsDenied { .. } | E::NotFound { .. } => {
                StatusCode::FORBIDDEN
            }
            E::MissingScopes { .. } | E::UnknownScope { .. } => StatusCode::FORBIDDEN,
            E::ActAsRequired { .. } | E::ActAsRefused { .. } | E::ActAsInvalid { .. } => {
                StatusCode::BAD_REQUEST
            }
            E::Internal(_) | E::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        };
        let message = match (&e, scope) {
            (E::ActAsRequired { .. }, _) => {
                format!("Required header missing: {}; {e}", glean::ACT_AS_HEADER)
            }
            (E::MissingScopes { .. }, Some(scope)) => {
                format!("this path needs the {scope} scope: {e}")
            }
            _ => e.to_string(),
        };
        Self::new(status, message)
    }

    fn into_response(self) -> Response<Body> {
        let body = Full::new(Bytes::from(format!("tokend: {}\n", self.message)))
            .map_err(|never| match never {})
            .boxed_unsync();
        let mut response = Response::new(body);
        *response.status_mut() = self.status;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        response
    }
}
