//! A Glean Client API emulator in the test's process: HTTP/1.1 on loopback
//! (a std `TcpListener`, a thread per connection, keep-alive), plain or,
//! with [`GleanApi::start_tls`], over TLS with a certificate from a CA the
//! test generates, serving `POST /rest/api/v1/search` and
//! `POST /rest/api/v1/chat` (also streamed: `"stream": true` answers
//! chunked NDJSON lines) under the header rules of Glean's token
//! documentation:
//!
//! - `Authorization: Bearer <token>` on every request; a token it does not
//!   know, revoked or expired: 401.
//! - Glean-issued tokens: GLOBAL ones need `X-Glean-ActAs` (or the legacy
//!   `X-Scio-ActAs`) naming a known user (400 `Required header missing:
//!   X-Glean-ActAs` without, 401 `Invalid identity` for a stranger); USER
//!   and ANONYMOUS ones must not send it (400).
//! - Scopes: search needs SEARCH, chat needs CHAT; 403 without.
//! - OAuth access tokens count only with `X-Glean-Auth-Type: OAUTH` (without
//!   it they are unknown Glean tokens: 401), as user tokens with every scope.
//!
//! It also issues those OAuth tokens: `POST /oauth/token` with
//! `grant_type=client_credentials` answers a new access token each time, so
//! tokend's `oauth_client_credentials` credentials can use it as their
//! token endpoint; and `POST /_emulator/revoke-oauth` (or
//! [`GleanApi::revoke_oauth`]) revokes every OAuth token issued so far,
//! mid-run. With [`GleanApi::trust_issuer`] it also accepts, as OAuth
//! tokens, access tokens that a real authorization server (the OAuth
//! tests' `OidcServer`) reports active at its introspection endpoint
//! (RFC 7662); [`GleanApi::revoke_oauth`] revokes those it has accepted so
//! far too; [`GleanApi::gather_oauth_refusals`] holds OAuth 401s back until
//! a number of them are pending, so concurrent clients all meet a revoked
//! token. Wordings of errors the documentation does not give are the
//! emulator's own.

#![allow(dead_code)] // each test binary uses a different subset

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

pub const SEARCH_PATH: &str = "/rest/api/v1/search";
pub const CHAT_PATH: &str = "/rest/api/v1/chat";
pub const TOKEN_PATH: &str = "/oauth/token";
pub const REVOKE_PATH: &str = "/_emulator/revoke-oauth";

/// A Glean-issued token's permission, fixed when it is created.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Permission {
    User,
    Global,
    Anonymous,
}

#[derive(Clone, Debug)]
struct Token {
    permission: Permission,
    scopes: Vec<String>,
    expires_at: Option<SystemTime>,
    revoked: bool,
}

/// One API request as the emulator judged it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    pub path: String,
    pub status: u16,
    /// The bearer token presented ("" without one).
    pub token: String,
    pub act_as: Option<String>,
    pub auth_type: Option<String>,
    /// Every header as received, names lowercased.
    pub headers: Vec<(String, String)>,
}

#[derive(Debug, Default)]
struct State {
    tokens: HashMap<String, Token>,
    oauth: HashMap<String, bool>,
    users: Vec<String>,
    seen: Vec<Seen>,
    issued: usize,
    /// An authorization server whose active access tokens count as OAuth
    /// tokens: (host:port, introspection path, client id, client secret).
    issuer: Option<(String, String, String, String)>,
    /// OAuth refusals (401s) held back until this many are pending, and
    /// how many have arrived.
    gather: Option<(usize, usize)>,
    /// OAuth tokens are accepted but their user may not use the API: 403.
    oauth_forbidden: bool,
    /// Streamed chat answers hold their last line until this is false.
    hold_last_line: bool,
    /// Streamed chat answers whose first line has been sent.
    first_lines_sent: usize,
}

/// A running emulator; its threads end with the test process.
pub struct GleanApi {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    /// Plain HTTP: the same as `addr` unless it serves TLS.
    plain: SocketAddr,
    /// With TLS: the PEM file of the CA that signed its certificate.
    ca_file: Option<PathBuf>,
}

/// Serves `state` on a new loopback port, over TLS with `tls`; the port.
fn accept(tls: Option<Arc<rustls::ServerConfig>>, state: &Arc<Mutex<State>>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the Glean emulator");
    let addr = listener.local_addr().expect("the emulator's address");
    let shared = Arc::clone(state);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let state = Arc::clone(&shared);
            let tls = tls.clone();
            std::thread::spawn(move || {
                let _ = match tls {
                    None => serve(stream, &state),
                    Some(config) => rustls::ServerConnection::new(config)
                        .map_err(std::io::Error::other)
                        .and_then(|c| serve(rustls::StreamOwned::new(c, stream), &state)),
                };
            });
        }
    });
    addr
}

impl GleanApi {
    /// Starts the emulator on a free loopback port, plain HTTP.
    /// alice@corp.example and bob@corp.example are its users.
    pub fn start() -> Self {
        Self::listen(None, None)
    }

    /// Starts the emulator over TLS: a CA generated now (its certificate
    /// written to `dir/glean-ca.pem`, see [`GleanApi::ca_file`]) signs a
    /// certificate for 127.0.0.1 and localhost.
    pub fn start_tls(dir: &Path) -> Self {
        let (config, ca_pem) = tls_config();
        let ca_file = dir.join("glean-ca.pem");
        std::fs::write(&ca_file, ca_pem).expect("write the test CA");
        Self::listen(Some(Arc::new(config)), Some(ca_file))
    }

    fn listen(tls: Option<Arc<rustls::ServerConfig>>, ca_file: Option<PathBuf>) -> Self {
        let state = Arc::new(Mutex::new(State {
            users: vec!["alice@corp.example".into(), "bob@corp.example".into()],
            ..State::default()
        }));
        let addr = accept(tls.clone(), &state);
        // With TLS, its token endpoint is also served in plain HTTP (same
        // state): tokend's OAuth client trusts only the system's roots, and
        // loopback http is allowed.
        let plain = if tls.is_some() {
            accept(None, &state)
        } else {
            addr
        };
        Self {
            addr,
            plain,
            state,
            ca_file,
        }
    }

    /// The instance's base URL, for `server_url` and `instance`.
    pub fn url(&self) -> String {
        let scheme = if self.ca_file.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.addr)
    }

    /// The CA file that makes its certificate trusted ([`start_tls`]).
    ///
    /// [`start_tls`]: GleanApi::start_tls
    pub fn ca_file(&self) -> &Path {
        self.ca_file.as_deref().expect("started with start_tls")
    }

    /// Streamed chat answers send their first line and then wait (at most
    /// 10 s) for [`GleanApi::release_last_line`] before the last.
    pub fn hold_last_line(&self) {
        self.lock().hold_last_line = true;
    }

    /// Lets held streamed answers finish.
    pub fn release_last_line(&self) {
        self.lock().hold_last_line = false;
    }

    /// How many streamed chat answers have sent their first line.
    pub fn first_lines_sent(&self) -> usize {
        self.lock().first_lines_sent
    }

    /// `/oauth/token`, always over plain HTTP.
    pub fn token_endpoint(&self) -> String {
        format!("http://{}{TOKEN_PATH}", self.plain)
    }

    pub fn revoke_url(&self) -> String {
        format!("http://{}{REVOKE_PATH}", self.plain)
    }

    /// Creates a Glean-issued token, as the admin console does.
    pub fn add_token(
        &self,
        secret: &str,
        permission: Permission,
        scopes: &[&str],
        expires_at: Option<SystemTime>,
    ) {
        let token = Token {
            permission,
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            expires_at,
            revoked: false,
        };
        self.lock().tokens.insert(secret.to_owned(), token);
    }

    /// Revokes a Glean-issued token.
    pub fn revoke(&self, secret: &str) {
        if let Some(t) = self.lock().tokens.get_mut(secret) {
            t.revoked = true;
        }
    }

    /// Revokes every OAuth token issued so far.
    pub fn revoke_oauth(&self) {
        revoke_all_oauth(&mut self.lock());
    }

    /// Accepts, as OAuth tokens, access tokens that the authorization
    /// server at `issuer` (`http://host:port[/path]`) reports active at
    /// `{issuer}/token/introspection`, asked as `client`
    /// (client_secret_post). Each is introspected once, when first
    /// presented.
    pub fn trust_issuer(&self, issuer: &str, client: (&str, &str)) {
        let rest = issuer
            .strip_prefix("http://")
            .unwrap_or_else(|| panic!("an http issuer: {issuer}"));
        let (host, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let prefix = prefix.trim_end_matches('/');
        let path = if prefix.is_empty() {
            "/token/introspection".to_owned()
        } else {
            format!("/{prefix}/token/introspection")
        };
        self.lock().issuer = Some((
            host.to_owned(),
            path,
            client.0.to_owned(),
            client.1.to_owned(),
        ));
    }

    /// Holds back the next OAuth refusals (401 to an OAuth token) until `n`
    /// of them are pending (at most 10 s), then answers them all: `n`
    /// concurrent clients all send the revoked token before any of them
    /// hears of it.
    pub fn gather_oauth_refusals(&self, n: usize) {
        self.lock().gather = Some((n, 0));
    }

    /// From now on, OAuth tokens it accepts belong to a user who may not use
    /// the API: 403, as Glean answers a user without access.
    pub fn forbid_oauth(&self) {
        self.lock().oauth_forbidden = true;
    }

    /// The API requests so far (search and chat), in order.
    pub fn seen(&self) -> Vec<Seen> {
        self.lock().seen.clone()
    }

    /// How many OAuth tokens `/oauth/token` issued.
    pub fn issued(&self) -> usize {
        self.lock().issued
    }

    /// Sends `POST path` with `headers` and a JSON body to the emulator;
    /// its status and body.
    pub fn post(&self, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
        let mut stream = TcpStream::connect(self.plain).expect("connect to the emulator");
        let body = r#"{"query":"test","pageSize":1}"#;
        let mut request = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n",
            self.addr,
            body.len()
        );
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        request.push_str(body);
        stream
            .write_all(request.as_bytes())
            .expect("send to the emulator");
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .expect("read the emulator's answer");
        let status = response
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status in {response:?}"));
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        (status, body)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn revoke_all_oauth(state: &mut State) {
    for revoked in state.oauth.values_mut() {
        *revoked = true;
    }
}

/// One parsed request.
struct Request {
    method: String,
    path: String,
    /// Names lowercased.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A CA and a server certificate it signed for 127.0.0.1 and localhost:
/// the server's TLS configuration and the CA's certificate (PEM).
fn tls_config() -> (rustls::ServerConfig, String) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "tokend test CA");
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().expect("CA key"))
        .expect("the CA's certificate");
    let key = KeyPair::generate().expect("server key");
    let server = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .expect("server parameters")
        .signed_by(&key, &ca)
        .expect("the server's certificate");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![server.der().clone()],
            rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der())
                .expect("the server's key"),
        )
        .expect("the server's TLS configuration");
    (config, ca.pem())
}

/// Reads one request; `None` at the end of the connection.
fn read_request<S: Read>(reader: &mut BufReader<S>) -> std::io::Result<Option<Request>> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let target = parts.next().unwrap_or_default();
    let path = target.split('?').next().unwrap_or_default().to_owned();
    let mut headers = Vec::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((name, value)) = l.split_once(':') {
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
    }
    let mut request = Request {
        method,
        path,
        headers,
        body: Vec::new(),
    };
    if request
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        loop {
            line.clear();
            reader.read_line(&mut line)?;
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or("0"), 16)
                .unwrap_or(0);
            if size == 0 {
                // The trailer section, up to its empty line.
                loop {
                    line.clear();
                    if reader.read_line(&mut line)? == 0 || line.trim_end().is_empty() {
                        break;
                    }
                }
                break;
            }
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk)?;
            chunk.truncate(size);
            request.body.extend_from_slice(&chunk);
        }
    } else if let Some(length) = request.header("content-length") {
        let mut body = vec![0; length.parse().unwrap_or(0)];
        reader.read_exact(&mut body)?;
        request.body = body;
    }
    Ok(Some(request))
}

fn serve<S: Read + Write>(stream: S, state: &Mutex<State>) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream);
    while let Some(request) = read_request(&mut reader)? {
        let (status, content_type, body) = answer(&request, state);
        let close = request
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let out = reader.get_mut();
        if status == 200 && request.path == CHAT_PATH && streamed(&request) {
            stream_lines(out, &body, state)?;
            continue;
        }
        write!(
            out,
            "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{}\r\n",
            reason(status),
            body.len(),
            if close { "Connection: close\r\n" } else { "" }
        )?;
        out.write_all(body.as_bytes())?;
        out.flush()?;
        if close {
            return Ok(());
        }
    }
    Ok(())
}

/// Whether a chat request asks for a streamed answer.
fn streamed(request: &Request) -> bool {
    serde_json::from_slice::<serde_json::Value>(&request.body)
        .is_ok_and(|v| v["stream"] == serde_json::Value::Bool(true))
}

/// A streamed chat answer, as Glean sends one: `text/plain`, chunked, one
/// JSON line per chunk; the last held while [`GleanApi::hold_last_line`]
/// says so.
fn stream_lines(out: &mut impl Write, message: &str, state: &Mutex<State>) -> std::io::Result<()> {
    let lock = || state.lock().unwrap_or_else(|e| e.into_inner());
    write!(
        out,
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nTransfer-Encoding: chunked\r\n\r\n"
    )?;
    let lines = [
        r#"{"messages":[{"author":"GLEAN_AI","messageType":"UPDATE","fragments":[{"text":"Searching…"}]}]}"#.to_owned(),
        message.to_owned(),
    ];
    for (i, line) in lines.iter().enumerate() {
        if i == 1 {
            let deadline = Instant::now() + Duration::from_secs(10);
            while lock().hold_last_line && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        let chunk = format!("{line}\n");
        write!(out, "{:x}\r\n{chunk}\r\n", chunk.len())?;
        out.flush()?;
        if i == 0 {
            lock().first_lines_sent += 1;
        }
    }
    write!(out, "0\r\n\r\n")?;
    out.flush()
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Status",
    }
}

const TEXT: &str = "text/plain; charset=utf-8";
const JSON: &str = "application/json";

/// An OAuth token the emulator has not seen yet, presented as one, is
/// introspected at the trusted issuer (outside the lock) and, when active,
/// accepted from then on.
fn admit_introspected(request: &Request, state: &Mutex<State>) {
    if !matches!(request.path.as_str(), SEARCH_PATH | CHAT_PATH)
        || !request
            .header("x-glean-auth-type")
            .is_some_and(|v| v.eq_ignore_ascii_case("OAUTH"))
    {
        return;
    }
    let Some(token) = bearer(request) else {
        return;
    };
    let issuer = {
        let state = state.lock().unwrap_or_else(|e| e.into_inner());
        if state.oauth.contains_key(token) {
            return;
        }
        state.issuer.clone()
    };
    let Some((host, path, id, secret)) = issuer else {
        return;
    };
    if introspect(&host, &path, &id, &secret, token).unwrap_or(false) {
        let mut state = state.lock().unwrap_or_else(|e| e.into_inner());
        state.oauth.entry(token.to_owned()).or_insert(false);
    }
}

/// RFC 7662 introspection of `token` over HTTP/1.0: whether it is active.
fn introspect(
    host: &str,
    path: &str,
    id: &str,
    secret: &str,
    token: &str,
) -> std::io::Result<bool> {
    let enc = |s: &str| -> String {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect()
    };
    let body = format!(
        "token={}&client_id={}&client_secret={}",
        enc(token),
        enc(id),
        enc(secret)
    );
    let mut stream = TcpStream::connect(host)?;
    write!(
        stream,
        "POST {path} HTTP/1.0\r\nHost: {host}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Accept: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let json = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let value: serde_json::Value = serde_json::from_str(json).unwrap_or_default();
    Ok(value["active"] == true)
}

fn answer(request: &Request, state: &Mutex<State>) -> (u16, &'static str, String) {
    admit_introspected(request, state);
    let answer = answer_now(request, state);
    if answer.0 == 401
        && request
            .header("x-glean-auth-type")
            .is_some_and(|v| v.eq_ignore_ascii_case("OAUTH"))
    {
        gather(state);
    }
    answer
}

/// Waits (at most 10 s) until the refusals [`GleanApi::gather_oauth_refusals`]
/// holds back are all pending.
fn gather(state: &Mutex<State>) {
    let lock = || state.lock().unwrap_or_else(|e| e.into_inner());
    match &mut lock().gather {
        Some((target, count)) if *count < *target => *count += 1,
        _ => return,
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if lock().gather.is_some_and(|(target, count)| count >= target) {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn answer_now(request: &Request, state: &Mutex<State>) -> (u16, &'static str, String) {
    let mut state = state.lock().unwrap_or_else(|e| e.into_inner());
    if request.method != "POST" {
        return (405, TEXT, "Method Not Allowed".into());
    }
    match request.path.as_str() {
        TOKEN_PATH => issue(request, &mut state),
        REVOKE_PATH => {
            revoke_all_oauth(&mut state);
            (200, JSON, "{}".into())
        }
        SEARCH_PATH | CHAT_PATH => {
            let (status, content_type, body) = judge(request, &state);
            let seen = Seen {
                path: request.path.clone(),
                status,
                token: bearer(request).unwrap_or_default().to_owned(),
                act_as: act_as(request).map(str::to_owned),
                auth_type: request.header("x-glean-auth-type").map(str::to_owned),
                headers: request.headers.clone(),
            };
            state.seen.push(seen);
            (status, content_type, body)
        }
        _ => (404, TEXT, "Not Found".into()),
    }
}

/// `POST /oauth/token`: a new OAuth access token per client-credentials
/// request.
fn issue(request: &Request, state: &mut State) -> (u16, &'static str, String) {
    let form = String::from_utf8_lossy(&request.body);
    if !form
        .split('&')
        .any(|kv| kv == "grant_type=client_credentials")
    {
        return (400, JSON, r#"{"error":"unsupported_grant_type"}"#.into());
    }
    state.issued += 1;
    let token = format!("glean_oauth_access_{}", state.issued);
    state.oauth.insert(token.clone(), false);
    (
        200,
        JSON,
        format!(r#"{{"access_token":"{token}","token_type":"Bearer","expires_in":3600}}"#),
    )
}

fn bearer(request: &Request) -> Option<&str> {
    let value = request.header("authorization")?;
    let (scheme, token) = value.split_once(' ')?;
    (scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty()).then(|| token.trim())
}

fn act_as(request: &Request) -> Option<&str> {
    request
        .header("x-glean-actas")
        .or_else(|| request.header("x-scio-actas"))
        .filter(|v| !v.is_empty())
}

/// The answer to an API call, by Glean's rules.
fn judge(request: &Request, state: &State) -> (u16, &'static str, String) {
    let unauthorized = (401, TEXT, "Unauthorized".to_owned());
    let Some(token) = bearer(request) else {
        return unauthorized;
    };
    let oauth = request
        .header("x-glean-auth-type")
        .is_some_and(|v| v.eq_ignore_ascii_case("OAUTH"));
    let (permission, scopes): (Permission, Option<&[String]>) = if oauth {
        match state.oauth.get(token) {
            Some(false) if state.oauth_forbidden => return (403, TEXT, "Forbidden".into()),
            Some(false) => (Permission::User, None),
            _ => return unauthorized,
        }
    } else {
        match state.tokens.get(token) {
            Some(t) if !t.revoked && t.expires_at.is_none_or(|at| at > SystemTime::now()) => {
                (t.permission, Some(&t.scopes))
            }
            _ => return unauthorized,
        }
    };
    match (permission, act_as(request)) {
        (Permission::Global, None) => {
            return (
                400,
                TEXT,
                "Bad Request: Required header missing: X-Glean-ActAs".into(),
            );
        }
        (Permission::Global, Some(user))
            if !state.users.iter().any(|u| u.eq_ignore_ascii_case(user)) =>
        {
            return (401, TEXT, "Invalid identity".into());
        }
        (Permission::User | Permission::Anonymous, Some(_)) => {
            return (
                400,
                TEXT,
                "Bad Request: X-Glean-ActAs must be empty for a token that is not GLOBAL".into(),
            );
        }
        _ => {}
    }
    let (scope, search) = if request.path == SEARCH_PATH {
        ("SEARCH", true)
    } else {
        ("CHAT", false)
    };
    // OAuth tokens carry every scope.
    if scopes.is_some_and(|s| !s.iter().any(|have| have == scope)) {
        return (403, TEXT, "Forbidden".into());
    }
    let n = state.seen.len() + 1;
    let query = serde_json::from_slice::<serde_json::Value>(&request.body)
        .ok()
        .and_then(|v| v["query"].as_str().map(str::to_owned))
        .unwrap_or_default()
        .replace(['"', '\\'], "");
    let body = if search {
        format!(
            r#"{{"results":[{{"title":"Quarterly report Q{n}","url":"https://docs.corp.example/q{n}","document":{{"datasource":"confluence"}},"snippets":[{{"snippet":"Revenue grew","text":"Revenue grew"}}]}}],"metadata":{{"searchedQuery":"{query}"}},"trackingToken":"tt-{n}","requestID":"req-{n}"}}"#
        )
    } else {
        format!(
            r#"{{"messages":[{{"author":"GLEAN_AI","messageType":"CONTENT","fragments":[{{"text":"Revenue grew {n}%."}}]}}],"chatId":"chat-{n}"}}"#
        )
    };
    (200, JSON, body)
}
