//! Talking to OAuth 2.0 token endpoints (RFC 6749): discovery, the
//! `refresh_token` and `client_credentials` grants, and telling apart the
//! failures that retrying can fix from those only a person can.
//!
//! Written on reqwest directly rather than the `oauth2` crate: providers need
//! extra form fields (Glue's `subject`), extra headers, and access to the raw
//! error body and `Retry-After`, and the classification of errors drives the
//! daemon's state machine, so it is clearer to own these ~300 lines.

mod endpoint;

use std::time::Duration;

use base64::Engine as _;
use jiff::Timestamp;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

pub use endpoint::{Http, TokenEndpoint};

/// The HTTP client for token endpoints: rustls with the ring provider,
/// `timeout` per request, no redirects (a token endpoint that redirects is
/// misconfigured, and following it would resend credentials elsewhere).
pub fn http_client(timeout: Duration) -> reqwest::Client {
    // Fails only when a provider is already installed, which is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("tokend/", env!("CARGO_PKG_VERSION")))
        .build()
        // Building fails only if TLS cannot initialise at all.
        .expect("cannot initialise the HTTP client")
}

/// How long a refresh-token request may take before tokend gives up on its
/// answer (see `request_token`): longer than any healthy endpoint needs.
pub const REFRESH_TIMEOUT: Duration = Duration::from_secs(60);

/// How the client authenticates at the token endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthMethod {
    /// `client_id` and `client_secret` in the form body.
    ClientSecretPost,
    /// HTTP Basic with the form-urlencoded id and secret (RFC 6749 §2.3.1).
    ClientSecretBasic,
    /// A public client: `client_id` in the body, no secret.
    None,
}

impl AuthMethod {
    /// Every method's config name, for error messages.
    pub const NAMES: [&str; 3] = ["client_secret_post", "client_secret_basic", "none"];

    /// The method a config name (RFC 8414's spelling) means; `None` if unknown.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "client_secret_post" => Some(Self::ClientSecretPost),
            "client_secret_basic" => Some(Self::ClientSecretBasic),
            "none" => Some(Self::None),
            _ => None,
        }
    }

    /// The method's name as in config and RFC 8414 metadata.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClientSecretPost => "client_secret_post",
            Self::ClientSecretBasic => "client_secret_basic",
            Self::None => "none",
        }
    }
}

/// A client of one token endpoint.
#[derive(Debug)]
pub struct Client {
    /// The client's id at the authorization server.
    pub client_id: String,
    /// The client's secret; `None` for a public client.
    pub client_secret: Option<SecretString>,
    /// How the id and secret are sent to the token endpoint.
    pub auth_method: AuthMethod,
    /// Scopes to request; sent as `scope` with every grant but
    /// `authorization_code`.
    pub scopes: Vec<String>,
    /// Extra form fields sent with every token request, e.g. Glue's `subject`.
    pub extra_params: Vec<(String, String)>,
}

/// Which grant to request.
#[derive(Clone, Copy, Debug)]
pub enum Grant<'a> {
    /// Trade this refresh token for a new access token.
    RefreshToken(&'a SecretString),
    /// Authenticate as the client itself; no user, no refresh token.
    ClientCredentials,
    /// Finish a login: trade an authorization code for tokens.
    AuthorizationCode {
        /// The code the authorization endpoint redirected with.
        code: &'a SecretString,
        /// The PKCE code verifier whose challenge began the login.
        verifier: &'a SecretString,
        /// The redirect URI the authorization request used.
        redirect_uri: &'a str,
    },
}

impl Grant<'_> {
    /// The grant's `grant_type` value.
    pub fn name(&self) -> &'static str {
        match self {
            Self::RefreshToken(_) => "refresh_token",
            Self::ClientCredentials => "client_credentials",
            Self::AuthorizationCode { .. } => "authorization_code",
        }
    }
}

/// A successful token response.
#[derive(Debug)]
pub struct Tokens {
    /// The new access token.
    pub access_token: SecretString,
    /// Present when the server issued (possibly rotated) a refresh token.
    pub refresh_token: Option<SecretString>,
    /// From `expires_in`, else the JWT's `exp`, else the caller's default.
    pub expires_at: Timestamp,
    /// Scopes granted, when the server said (RFC 6749 §5.1).
    pub scope: Option<String>,
}

/// Why a token request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// Worth retrying later: network trouble, timeouts, 5xx, 429.
    #[error("{reason}")]
    Transient {
        /// What went wrong, for logs and callers; never holds a secret.
        reason: String,
        /// The server's `Retry-After`, when it sent one.
        retry_after: Option<Duration>,
        /// Whether the server answered. When it did not (timeout, reset), it
        /// may still have processed the request, e.g. rotated the refresh
        /// token in an answer that was lost.
        answered: bool,
    },
    /// The server answered 2xx with tokens that cannot be used (a bad
    /// access token, a wrong `token_type`, an expiry out of range). Retried
    /// like [`TokenError::Transient`]; but a valid refresh token in the
    /// answer may already have replaced the one presented, so it is carried
    /// here to be committed: replaying the old one would revoke the grant.
    #[error("{reason}")]
    Unusable {
        /// What is wrong with the answer; never holds a secret.
        reason: String,
        /// The answer's refresh token, when it is itself valid.
        refresh_token: Option<SecretString>,
    },
    /// Retrying cannot help until something changes: the grant is gone
    /// (`invalid_grant`) or the client is refused.
    #[error("{}", permanent_message(code, description.as_deref()))]
    Permanent {
        /// The RFC 6749 §5.2 `error` code.
        code: String,
        /// The provider's `error_description`, sanitised.
        description: Option<String>,
    },
}

fn permanent_message(code: &str, description: Option<&str>) -> String {
    match description {
        Some(d) => format!("{code}: {d}"),
        None => code.to_owned(),
    }
}

impl TokenError {
    /// `invalid_grant`: the refresh token was revoked, expired or already used;
    /// only a new login helps.
    pub fn is_invalid_grant(&self) -> bool {
        matches!(self, Self::Permanent { code, .. } if code == "invalid_grant")
    }
}

/// The parts of a token response we use (RFC 6749 §5.1).
#[derive(Deserialize)]
struct RawTokens {
    access_token: String,
    #[serde(default)]
    token_type: Option<String>,
    #[serde(default)]
    expires_in: Option<serde_json::Value>,
    #[serde(default)]
    refresh_token: Option<String>,
    #[serde(default)]
    scope: Option<String>,
}

/// An error response (RFC 6749 §5.2).
#[derive(Deserialize)]
struct RawError {
    error: String,
    #[serde(default)]
    error_description: Option<String>,
}

/// Requests tokens for `grant` from `endpoint`. Never logs or returns a
/// secret: error texts come from the status line and the provider's error
/// code and description only.
pub async fn request_token(
    http: &reqwest::Client,
    endpoint: &str,
    client: &Client,
    grant: Grant<'_>,
    default_lifetime: Duration,
    now: Timestamp,
) -> Result<Tokens, TokenError> {
    let mut form: Vec<(&str, &str)> = vec![("grant_type", grant.name())];
    match grant {
        Grant::RefreshToken(rt) => form.push(("refresh_token", rt.expose_secret())),
        Grant::ClientCredentials => {}
        Grant::AuthorizationCode {
            code,
            verifier,
            redirect_uri,
        } => {
            form.push(("code", code.expose_secret()));
            form.push(("code_verifier", verifier.expose_secret()));
            form.push(("redirect_uri", redirect_uri));
        }
    }
    let scope = client.scopes.join(" ");
    if !scope.is_empty() && !matches!(grant, Grant::AuthorizationCode { .. }) {
        form.push(("scope", &scope));
    }
    for (k, v) in &client.extra_params {
        form.push((k, v));
    }
    let mut req = authenticate(http.post(endpoint), &mut form, client)?;
    if matches!(grant, Grant::RefreshToken(_)) {
        // Giving up on a refresh the server may already have carried out
        // loses the rotated refresh token: presenting the old one again is
        // a replay, and strict servers then revoke the whole grant. So wait
        // long for an answer; only an unanswered connection fails fast.
        req = req.timeout(REFRESH_TIMEOUT);
    }
    let response = send_form(req, &form).await?;
    let status = response.status();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, now));
    let body = read_body(response, "the token endpoint's answer", retry_after).await?;
    if status.is_success() {
        return parse_tokens(&body, default_lifetime, now);
    }
    Err(classify_error(status.as_u16(), &body, retry_after))
}

/// Adds the client's authentication (RFC 6749 §2.3.1) to a request to the
/// token or revocation endpoint: Basic header, or form fields.
fn authenticate<'a>(
    req: reqwest::RequestBuilder,
    form: &mut Vec<(&'a str, &'a str)>,
    client: &'a Client,
) -> Result<reqwest::RequestBuilder, TokenError> {
    let req = req.header("Accept", "application/json");
    match (client.auth_method, &client.client_secret) {
        (AuthMethod::ClientSecretBasic, Some(secret)) => {
            // Both parts are form-urlencoded before Basic (§2.3.1).
            let user = form_urlencode(&client.client_id);
            let pass = form_urlencode(secret.expose_secret());
            let basic = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
            let mut value = reqwest::header::HeaderValue::try_from(format!("Basic {basic}"))
                .map_err(|_| TokenError::Permanent {
                    code: "invalid_client".into(),
                    description: Some("client credentials cannot be sent in a header".into()),
                })?;
            value.set_sensitive(true);
            return Ok(req.header(reqwest::header::AUTHORIZATION, value));
        }
        (AuthMethod::ClientSecretPost, Some(secret)) => {
            form.push(("client_id", &client.client_id));
            form.push(("client_secret", secret.expose_secret()));
        }
        _ => form.push(("client_id", &client.client_id)),
    }
    Ok(req)
}

/// Revokes `token` at a revocation endpoint (RFC 7009). A 200 means the
/// token is gone (or was already invalid).
pub async fn revoke(
    http: &reqwest::Client,
    endpoint: &str,
    client: &Client,
    token: &SecretString,
    hint: &str,
) -> Result<(), TokenError> {
    let mut form = vec![("token", token.expose_secret()), ("token_type_hint", hint)];
    let req = authenticate(http.post(endpoint), &mut form, client)?;
    let response = send_form(req, &form).await?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let body = read_body(response, "the revocation endpoint's answer", None)
        .await
        .unwrap_or_default();
    Err(classify_error(status.as_u16(), &body, None))
}

/// The most of an answer (token, revocation, discovery) read: real ones are
/// a few KiB.
pub const MAX_BODY: usize = 1024 * 1024;

/// The largest access or refresh token accepted. Tokens travel in headers,
/// which gRPC clients and HTTP servers cap at 8–16 KiB.
pub const MAX_TOKEN: usize = 16 * 1024;

/// Reads `response`'s body, refusing one over [`MAX_BODY`] as soon as it
/// passes the limit instead of buffering it.
async fn read_body(
    mut response: reqwest::Response,
    what: &str,
    retry_after: Option<Duration>,
) -> Result<Vec<u8>, TokenError> {
    let transient = |reason: String, answered| TokenError::Transient {
        reason,
        retry_after,
        answered,
    };
    if response
        .content_length()
        .is_some_and(|n| n > MAX_BODY as u64)
    {
        return Err(transient(
            format!("{what} is over the {} MiB limit", MAX_BODY >> 20),
            true,
        ));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| {
        transient(
            format!("reading {what} failed: {}", describe_transport_error(&e)),
            false,
        )
    })? {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(transient(
                format!("{what} is over the {} MiB limit", MAX_BODY >> 20),
                true,
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Posts `form`; a failure to get any answer is transient and unanswered.
async fn send_form(
    req: reqwest::RequestBuilder,
    form: &[(&str, &str)],
) -> Result<reqwest::Response, TokenError> {
    req.form(form)
        .send()
        .await
        .map_err(|e| TokenError::Transient {
            reason: describe_transport_error(&e),
            retry_after: None,
            answered: false,
        })
}

/// Classifies an error response: RFC 6749 codes that retrying cannot fix are
/// permanent, and so is a bare 401 (the client is refused); 5xx, 429 and
/// anything unrecognised are transient.
pub fn classify_error(status: u16, body: &[u8], retry_after: Option<Duration>) -> TokenError {
    const PERMANENT: [&str; 5] = [
        "invalid_grant",
        "invalid_client",
        "unauthorized_client",
        "invalid_scope",
        "unsupported_grant_type",
    ];
    let parsed: Option<RawError> = serde_json::from_slice(body).ok();
    match parsed {
        Some(e) if PERMANENT.contains(&e.error.as_str()) && status < 500 => TokenError::Permanent {
            code: e.error,
            description: e.error_description.map(|d| sanitise(&d)),
        },
        _ if status == 401 => TokenError::Permanent {
            code: "invalid_client".into(),
            description: Some("the token endpoint answered 401 Unauthorized".into()),
        },
        Some(e) => TokenError::Transient {
            reason: format!(
                "token endpoint answered {status}: {}",
                permanent_message(
                    &e.error,
                    e.error_description.map(|d| sanitise(&d)).as_deref()
                )
            ),
            retry_after,
            answered: true,
        },
        None => TokenError::Transient {
            reason: format!("token endpoint answered {status}"),
            retry_after,
            answered: true,
        },
    }
}

/// Parses a successful token response. A valid refresh token survives
/// any other problem with the answer (see [`TokenError::Unusable`]).
pub fn parse_tokens(
    body: &[u8],
    default_lifetime: Duration,
    now: Timestamp,
) -> Result<Tokens, TokenError> {
    let raw: RawTokens = serde_json::from_slice(body).map_err(|e| TokenError::Transient {
        reason: format!(
            "token response is not the JSON RFC 6749 describes ({})",
            json_problem(&e)
        ),
        retry_after: None,
        answered: true,
    })?;
    let valid =
        |s: &str| !s.is_empty() && s.len() <= MAX_TOKEN && s.bytes().all(|b| b.is_ascii_graphic());
    // An empty refresh token is no refresh token (some servers send "").
    let refresh_token = raw.refresh_token.filter(|r| !r.is_empty());
    if refresh_token.as_deref().is_some_and(|r| !valid(r)) {
        return Err(TokenError::Transient {
            reason: token_problem("refresh", refresh_token.as_deref().unwrap_or_default()),
            retry_after: None,
            answered: true,
        });
    }
    let unusable = |reason: String| TokenError::Unusable {
        reason,
        refresh_token: refresh_token.as_deref().map(Into::into),
    };
    if let Some(t) = &raw.token_type
        && !t.eq_ignore_ascii_case("bearer")
    {
        return Err(unusable(format!(
            "token_type `{}` is not Bearer",
            sanitise(t)
        )));
    }
    if !valid(&raw.access_token) {
        return Err(unusable(token_problem("access", &raw.access_token)));
    }
    let expires_in = raw.expires_in.as_ref().and_then(|v| match v {
        // Some servers send a string; RFC 6749 says a number.
        serde_json::Value::Number(n) => n.as_i64().or_else(|| n.as_u64().map(|_| i64::MAX)),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    });
    let after = |d: jiff::SignedDuration| now.saturating_add(d).ok();
    let expires_at = match expires_in {
        // A negative lifetime is a token expired on arrival, not "unknown".
        Some(secs) => after(jiff::SignedDuration::from_secs(secs.max(0))),
        None => jwt_expiry(&raw.access_token)
            .or_else(|| after(jiff::SignedDuration::try_from(default_lifetime).ok()?)),
    };
    let Some(expires_at) = expires_at else {
        return Err(unusable("token expiry is out of range".into()));
    };
    Ok(Tokens {
        access_token: raw.access_token.into(),
        refresh_token: refresh_token.map(Into::into),
        expires_at,
        scope: raw.scope,
    })
}

/// Why a token cannot be used, without its content.
fn token_problem(which: &str, token: &str) -> String {
    if token.len() > MAX_TOKEN {
        format!(
            "the {which} token is {} bytes, over the {} KiB limit tokens in headers can use",
            token.len(),
            MAX_TOKEN >> 10
        )
    } else {
        format!("the {which} token is empty or has characters that cannot go in a header")
    }
}

/// What is wrong with a JSON answer and where, without serde's own text,
/// which can quote a value (`invalid type: integer \`12345\``) that may be a
/// token.
fn json_problem(e: &serde_json::Error) -> String {
    let kind = match e.classify() {
        serde_json::error::Category::Io => "unreadable",
        serde_json::error::Category::Syntax => "not JSON",
        serde_json::error::Category::Data => "a field is missing or of the wrong type",
        serde_json::error::Category::Eof => "cut short",
    };
    format!("{kind}, line {} column {}", e.line(), e.column())
}

/// The `exp` claim of a JWT, read without verifying the signature: we are
/// the token's client, not its audience, and only want to know when to renew.
pub fn jwt_expiry(token: &str) -> Option<Timestamp> {
    let claims = jwt_claims(token)?;
    let exp = claims.get("exp")?;
    let secs = exp.as_i64().or_else(|| exp.as_f64().map(|f| f as i64))?;
    Timestamp::from_second(secs).ok()
}

/// The claims of a JWT (compact JWS) without verifying it.
pub fn jwt_claims(token: &str) -> Option<serde_json::Map<String, serde_json::Value>> {
    let mut parts = token.split('.');
    let (_header, payload, _sig) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || payload.len() > 64 * 1024 {
        return None;
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        serde_json::Value::Object(map) => Some(map),
        _ => None,
    }
}

/// `Retry-After` as seconds or an HTTP date (RFC 9110 §10.2.3).
pub fn parse_retry_after(value: &str, now: Timestamp) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate_to_timestamp(value)?;
    Some(crate::clock::between(now, at))
}

/// IMF-fixdate, the one format servers send today: `Sun, 06 Nov 1994 08:49:37 GMT`.
fn httpdate_to_timestamp(s: &str) -> Option<Timestamp> {
    let rest = s.split_once(", ")?.1;
    let mut it = rest.split(' ');
    let (day, month, year, time, zone) =
        (it.next()?, it.next()?, it.next()?, it.next()?, it.next()?);
    if zone != "GMT" {
        return None;
    }
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = MONTHS.iter().position(|m| *m == month)? + 1;
    format!("{year}-{month:02}-{day:0>2}T{time}Z").parse().ok()
}

/// A metadata document (RFC 8414 / OpenID Connect Discovery), the fields we use.
#[derive(Clone, Debug, Deserialize)]
pub struct Metadata {
    /// The issuer identifier the document claims; `None` if it omits it.
    pub issuer: Option<String>,
    /// Where token requests go.
    pub token_endpoint: String,
    /// Where a login sends the browser; `None` if the issuer has none.
    #[serde(default)]
    pub authorization_endpoint: Option<String>,
    /// Where tokens are revoked (RFC 7009); `None` if the issuer has none.
    #[serde(default)]
    pub revocation_endpoint: Option<String>,
    /// PKCE methods offered, e.g. `S256`; empty if unadvertised.
    #[serde(default)]
    pub code_challenge_methods_supported: Vec<String>,
    /// Client authentication methods offered; empty means RFC 8414's default,
    /// `client_secret_basic`.
    #[serde(default)]
    pub token_endpoint_auth_methods_supported: Vec<String>,
}

/// Refuses metadata that does not belong to `issuer` (RFC 8414 §3.3: the
/// document's `issuer` must be the one asked about, or anyone who can
/// answer there can redirect logins and token requests), or whose endpoints
/// would carry secrets in cleartext or are not web addresses at all (the
/// authorization endpoint is handed to a browser opener).
pub fn check_metadata(metadata: Metadata, issuer: &str) -> Result<Metadata, TokenError> {
    let refuse = |description: String| TokenError::Permanent {
        code: "invalid_metadata".into(),
        description: Some(description),
    };
    if let Some(claimed) = &metadata.issuer
        && claimed.trim_end_matches('/') != issuer.trim_end_matches('/')
    {
        return Err(refuse(format!(
            "the discovery document at {} names another issuer ({}); check `issuer`",
            sanitise(issuer),
            sanitise(claimed)
        )));
    }
    let endpoints = [
        ("token_endpoint", Some(&metadata.token_endpoint)),
        (
            "authorization_endpoint",
            metadata.authorization_endpoint.as_ref(),
        ),
        ("revocation_endpoint", metadata.revocation_endpoint.as_ref()),
    ];
    for (name, endpoint) in endpoints {
        let Some(endpoint) = endpoint else { continue };
        let ok = reqwest::Url::parse(endpoint).is_ok_and(|u| match u.scheme() {
            "https" => u.host_str().is_some(),
            "http" => u.host_str().is_some_and(|h| {
                h == "localhost"
                    || h.trim_start_matches('[')
                        .trim_end_matches(']')
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback())
            }),
            _ => false,
        });
        if !ok {
            return Err(refuse(format!(
                "the issuer's {name} is not an https URL (plain http only on loopback)"
            )));
        }
    }
    Ok(metadata)
}

/// Fetches `issuer`'s metadata from RFC 8414's well-known path, falling back
/// to OpenID Connect's.
pub async fn discover(http: &reqwest::Client, issuer: &str) -> Result<Metadata, TokenError> {
    let base = issuer.trim_end_matches('/');
    let mut last = None;
    for path in ["oauth-authorization-server", "openid-configuration"] {
        let url = format!("{base}/.well-known/{path}");
        match http
            .get(&url)
            .header("Accept", "application/json")
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => {
                let body = read_body(r, &url, None).await?;
                let metadata: Metadata =
                    serde_json::from_slice(&body).map_err(|e| TokenError::Transient {
                        reason: format!(
                            "{url} is not an authorization server metadata document ({})",
                            json_problem(&e)
                        ),
                        retry_after: None,
                        answered: true,
                    })?;
                return check_metadata(metadata, issuer);
            }
            Ok(r) => last = Some(format!("{url} answered {}", r.status())),
            Err(e) => {
                return Err(TokenError::Transient {
                    reason: format!(
                        "discovery at {url} failed: {}",
                        describe_transport_error(&e)
                    ),
                    retry_after: None,
                    answered: false,
                });
            }
        }
    }
    Err(TokenError::Transient {
        reason: last.unwrap_or_default(),
        retry_after: None,
        answered: true,
    })
}

/// A transport error without its URL's query (none is ever secret here, but
/// the habit is cheap) and with the innermost cause, which says what failed.
fn describe_transport_error(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    let mut source: &dyn std::error::Error = e;
    while let Some(next) = source.source() {
        source = next;
    }
    format!("{kind}: {source}")
}

/// Keeps a provider's text printable and bounded before it reaches a log,
/// an error or an alert.
fn sanitise(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(300).collect()
}

fn form_urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// A short, non-reversible name for a token, for `Invalidate` reports and
/// logs: the first 16 hex digits of its SHA-256.
pub fn fingerprint(token: &str) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(token.as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests;
