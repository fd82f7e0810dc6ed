//! A fault-injecting HTTP/1.1 reverse proxy for integration tests.
//!
//! It sits between the daemon under test (an OAuth client) and a real
//! authorization server on 127.0.0.1, and per request either relays the
//! exchange or injects a failure: a fixed status, a 429 with `Retry-After`,
//! a TCP reset, or a black hole that never answers.
//!
//! The proxy runs on its own background thread with its own single-threaded
//! tokio runtime, so it works the same from plain `#[test]` functions and
//! from `#[tokio::test]` ones (whatever their flavour), and keeps working
//! while a test blocks its own thread. Dropping the [`FaultProxy`] stops it:
//! the listener closes, every connection task (black holes included) is
//! dropped so their sockets close, and `drop` returns once the thread has
//! exited.
//!
//! Client side, it speaks keep-alive HTTP/1.1 (several requests per
//! connection, pipelining tolerated); request bodies may be framed by
//! `Content-Length` or `Transfer-Encoding: chunked`. In [`Mode::Pass`] each
//! request goes to upstream on a fresh connection with `Connection: close`
//! and a `Content-Length` body; the whole response is read (by
//! `Content-Length`, chunked, or until EOF) and re-framed to the client with
//! `Content-Length`. The `Host` header is passed through unchanged, so an
//! upstream that builds URLs from it points them back at the proxy.
//!
//! I/O errors on either side never panic; the affected connection is just
//! dropped. If upstream cannot be reached or answers garbage, the client
//! gets a 502 with a small JSON body.

#![allow(dead_code)] // each test binary uses a different subset

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

/// Longest request or status line, or header line, accepted.
const MAX_LINE: u64 = 16 * 1024;
/// Most header lines accepted in one message.
const MAX_HEADERS: usize = 200;
/// Largest body accepted from either side.
const MAX_BODY: usize = 64 * 1024 * 1024;

/// What the proxy does with a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Forward to upstream and relay the response.
    Pass,
    /// Like `Pass`, after holding the request this long: a slow server, so
    /// callers pile up behind one in-flight request.
    Delay(Duration),
    /// Answer with this status and a small JSON error body, without
    /// contacting upstream. The body's `error` is `temporarily_unavailable`
    /// for 5xx, `invalid_client` for 401, `invalid_request` for other 4xx,
    /// and `server_error` otherwise.
    Status(u16),
    /// Answer 429 with `Retry-After: N` and
    /// `{"error":"temporarily_unavailable"}`, without contacting upstream.
    TooManyRequests { retry_after_secs: u64 },
    /// Read the request, then close the connection with `SO_LINGER` 0 so the
    /// peer sees a TCP RST.
    Reset,
    /// Read the request and never answer. The connection stays open until
    /// the client closes it or the proxy is dropped.
    BlackHole,
}

/// One request the proxy received, recorded before it was acted on.
#[derive(Clone, Debug)]
pub struct Seen {
    /// When the request head had been read.
    pub at: Instant,
    /// The request method, e.g. `POST`.
    pub method: String,
    /// The request target in origin form, query string included
    /// (`/token`, `/authorize?x=1`); an absolute-form target is reduced to it.
    pub path: String,
    /// Which mode handled it: the `Debug` form of [`Mode`], e.g. `Pass`,
    /// `Status(503)`, `TooManyRequests { retry_after_secs: 2 }`, `Reset`,
    /// `BlackHole`.
    pub mode: String,
}

struct State {
    default: Mode,
    /// Per-prefix overrides; the longest matching prefix wins.
    overrides: Vec<(String, Mode)>,
    seen: Vec<Seen>,
}

impl State {
    fn mode_for(&self, path: &str) -> Mode {
        self.overrides
            .iter()
            .filter(|(prefix, _)| path.starts_with(prefix.as_str()))
            .max_by_key(|(prefix, _)| prefix.len())
            .map_or_else(|| self.default.clone(), |(_, mode)| mode.clone())
    }
}

type Shared = Arc<Mutex<State>>;

fn lock(state: &Shared) -> MutexGuard<'_, State> {
    // A panicking test thread must not wedge the proxy.
    state.lock().unwrap_or_else(|poison| poison.into_inner())
}

/// A running fault-injecting proxy; see the module docs.
pub struct FaultProxy {
    addr: SocketAddr,
    state: Shared,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl FaultProxy {
    /// Binds 127.0.0.1:0 and forwards to `upstream` (e.g. 127.0.0.1:PORT),
    /// starting in [`Mode::Pass`]. The proxy runs on its own thread and
    /// runtime, so this may be called from sync or async tests alike.
    ///
    /// Panics if the listener or runtime cannot be set up.
    pub fn start(upstream: SocketAddr) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("fault proxy: bind");
        listener
            .set_nonblocking(true)
            .expect("fault proxy: set_nonblocking");
        let addr = listener.local_addr().expect("fault proxy: local_addr");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("fault proxy: runtime");
        let state: Shared = Arc::new(Mutex::new(State {
            default: Mode::Pass,
            overrides: Vec::new(),
            seen: Vec::new(),
        }));
        let (shutdown, stop) = oneshot::channel::<()>();
        let task_state = Arc::clone(&state);
        let thread = std::thread::Builder::new()
            .name(format!("fault-proxy-{}", addr.port()))
            .spawn(move || {
                runtime.block_on(async move {
                    let Ok(listener) = TcpListener::from_std(listener) else {
                        return;
                    };
                    tokio::select! {
                        () = accept_loop(listener, upstream, task_state) => {}
                        _ = stop => {}
                    }
                });
                // Dropping the runtime drops every connection task, closing
                // their sockets (black holes included).
                drop(runtime);
            })
            .expect("fault proxy: spawn thread");
        Self {
            addr,
            state,
            shutdown: Some(shutdown),
            thread: Some(thread),
        }
    }

    /// The address the proxy listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Sets the mode for requests arriving from now on whose path matches no
    /// prefix given to [`set_mode_for`](Self::set_mode_for).
    pub fn set_mode(&self, mode: Mode) {
        lock(&self.state).default = mode;
    }

    /// Sets the mode for requests arriving from now on whose path starts with
    /// `path_prefix`. Setting the same prefix again replaces its mode; when
    /// several prefixes match, the longest wins.
    pub fn set_mode_for(&self, path_prefix: &str, mode: Mode) {
        let mut state = lock(&self.state);
        match state
            .overrides
            .iter_mut()
            .find(|(prefix, _)| prefix == path_prefix)
        {
            Some(entry) => entry.1 = mode,
            None => state.overrides.push((path_prefix.to_owned(), mode)),
        }
    }

    /// Forgets every [`set_mode_for`](Self::set_mode_for) override, so all
    /// requests use the default mode again.
    pub fn clear_modes_for(&self) {
        lock(&self.state).overrides.clear();
    }

    /// Every request seen since start (or the last
    /// [`reset_counts`](Self::reset_counts)), in arrival order.
    pub fn requests(&self) -> Vec<Seen> {
        lock(&self.state).seen.clone()
    }

    /// How many requests seen had a path starting with `path_prefix`
    /// (`""` counts them all).
    pub fn count(&self, path_prefix: &str) -> usize {
        lock(&self.state)
            .seen
            .iter()
            .filter(|seen| seen.path.starts_with(path_prefix))
            .count()
    }

    /// Forgets the requests seen so far. Modes are kept.
    pub fn reset_counts(&self) {
        lock(&self.state).seen.clear();
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn accept_loop(listener: TcpListener, upstream: SocketAddr, state: Shared) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                tokio::spawn(serve_client(stream, upstream, Arc::clone(&state)));
            }
            // E.g. EMFILE: back off briefly rather than spin.
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// A parsed message head: the start line's parts and the header fields.
struct Head {
    start: String,
    headers: Vec<(String, String)>,
}

impl Head {
    fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every comma-separated token of every `name` field, lowercased.
    fn tokens(&self, name: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| v.split(','))
            .map(|t| t.trim().to_ascii_lowercase())
            .filter(|t| !t.is_empty())
            .collect()
    }
}

enum Framing {
    Empty,
    Length(usize),
    Chunked,
    UntilEof,
}

fn invalid(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_owned())
}

/// Reads one CRLF- (or LF-) terminated line, without the terminator.
/// Returns `None` on EOF before any byte.
async fn read_line<R: AsyncBufRead + Unpin>(reader: &mut R) -> io::Result<Option<String>> {
    let mut buf = Vec::new();
    let n = (&mut *reader)
        .take(MAX_LINE)
        .read_until(b'\n', &mut buf)
        .await?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() != Some(&b'\n') {
        return Err(if n as u64 >= MAX_LINE {
            invalid("line too long")
        } else {
            io::ErrorKind::UnexpectedEof.into()
        });
    }
    buf.pop();
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    String::from_utf8(buf)
        .map(Some)
        .map_err(|_| invalid("line is not UTF-8"))
}

/// Reads a message head. Returns `None` on a clean EOF before it starts.
async fn read_head<R: AsyncBufRead + Unpin>(reader: &mut R) -> io::Result<Option<Head>> {
    // RFC 9112 §2.2: ignore empty lines before the start line.
    let start = loop {
        match read_line(reader).await? {
            None => return Ok(None),
            Some(line) if line.is_empty() => continue,
            Some(line) => break line,
        }
    };
    let mut headers = Vec::new();
    loop {
        let line = read_line(reader)
            .await?
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        if line.is_empty() {
            break;
        }
        if headers.len() >= MAX_HEADERS {
            return Err(invalid("too many headers"));
        }
        let (name, value) = line.split_once(':').ok_or_else(|| invalid("bad header"))?;
        if name.is_empty() || name.ends_with([' ', '\t']) {
            return Err(invalid("bad header name"));
        }
        headers.push((name.to_owned(), value.trim().to_owned()));
    }
    Ok(Some(Head { start, headers }))
}

/// The body framing given by `Transfer-Encoding` / `Content-Length`, or
/// `default` when neither is present.
fn body_framing(head: &Head, default: Framing) -> io::Result<Framing> {
    let codings = head.tokens("transfer-encoding");
    if let Some(last) = codings.last() {
        return if last == "chunked" {
            Ok(Framing::Chunked)
        } else {
            Ok(Framing::UntilEof)
        };
    }
    let mut length = None;
    for (name, value) in &head.headers {
        if name.eq_ignore_ascii_case("content-length") {
            for part in value.split(',') {
                let n: usize = part
                    .trim()
                    .parse()
                    .map_err(|_| invalid("bad Content-Length"))?;
                if length.is_some_and(|l| l != n) {
                    return Err(invalid("conflicting Content-Length"));
                }
                length = Some(n);
            }
        }
    }
    match length {
        Some(0) => Ok(Framing::Empty),
        Some(n) if n > MAX_BODY => Err(invalid("body too large")),
        Some(n) => Ok(Framing::Length(n)),
        None => Ok(default),
    }
}

async fn read_body<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    framing: Framing,
) -> io::Result<Vec<u8>> {
    match framing {
        Framing::Empty => Ok(Vec::new()),
        Framing::Length(n) => {
            let mut body = vec![0; n];
            reader.read_exact(&mut body).await?;
            Ok(body)
        }
        Framing::UntilEof => {
            let mut body = Vec::new();
            (&mut *reader)
                .take(MAX_BODY as u64 + 1)
                .read_to_end(&mut body)
                .await?;
            if body.len() > MAX_BODY {
                return Err(invalid("body too large"));
            }
            Ok(body)
        }
        Framing::Chunked => {
            let mut body = Vec::new();
            loop {
                let line = read_line(reader)
                    .await?
                    .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
                let size = line.split(';').next().unwrap_or("").trim();
                let size =
                    usize::from_str_radix(size, 16).map_err(|_| invalid("bad chunk size"))?;
                if size == 0 {
                    // Trailer fields, dropped, up to the final empty line.
                    loop {
                        match read_line(reader).await? {
                            Some(line) if line.is_empty() => return Ok(body),
                            Some(_) => {}
                            None => return Err(io::ErrorKind::UnexpectedEof.into()),
                        }
                    }
                }
                if body.len().saturating_add(size) > MAX_BODY {
                    return Err(invalid("body too large"));
                }
                let at = body.len();
                body.resize(at + size, 0);
                reader.read_exact(&mut body[at..]).await?;
                match read_line(reader).await? {
                    Some(line) if line.is_empty() => {}
                    _ => return Err(invalid("bad chunk terminator")),
                }
            }
        }
    }
}

/// Header fields a proxy must not forward (RFC 9110 §7.6.1), plus the
/// framing ones it rewrites.
fn is_hop_by_hop(name: &str, connection_tokens: &[String]) -> bool {
    const HOP: &[&str] = &[
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
    ];
    let lower = name.to_ascii_lowercase();
    HOP.contains(&lower.as_str()) || connection_tokens.contains(&lower)
}

/// Reduces an absolute-form target (`http://host/p?q`) to origin form.
fn origin_form(target: &str) -> String {
    if target.starts_with('/') || target == "*" {
        return target.to_owned();
    }
    match target.split_once("://") {
        Some((_, rest)) => match rest.find(['/', '?']) {
            Some(i) if rest[i..].starts_with('?') => format!("/{}", &rest[i..]),
            Some(i) => rest[i..].to_owned(),
            None => "/".to_owned(),
        },
        None => target.to_owned(),
    }
}

fn reason(status: u16) -> &'static str {
    http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Unknown")
}

fn error_body(status: u16) -> String {
    let error = match status {
        429 | 500..=599 => "temporarily_unavailable",
        401 => "invalid_client",
        400..=499 => "invalid_request",
        _ => "server_error",
    };
    format!("{{\"error\":\"{error}\"}}")
}

/// A complete response with a `Content-Length` body (none for statuses
/// that cannot carry one).
fn simple_response(status: u16, extra: &[(&str, String)], body: &str, close: bool) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status} {}\r\n", reason(status));
    for (name, value) in extra {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    if status_has_body(status) {
        out.push_str("Content-Type: application/json\r\n");
        out.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    if close {
        out.push_str("Connection: close\r\n");
    }
    out.push_str("\r\n");
    if status_has_body(status) {
        out.push_str(body);
    }
    out.into_bytes()
}

fn status_has_body(status: u16) -> bool {
    !matches!(status, 100..=199 | 204 | 304)
}

async fn serve_client(stream: TcpStream, upstream: SocketAddr, state: Shared) {
    let mut client = BufReader::new(stream);
    loop {
        let head = match read_head(&mut client).await {
            Ok(Some(head)) => head,
            Ok(None) => return,
            Err(e) => {
                if e.kind() == io::ErrorKind::InvalidData {
                    let _ = client
                        .get_mut()
                        .write_all(&simple_response(
                            400,
                            &[],
                            "{\"error\":\"invalid_request\"}",
                            true,
                        ))
                        .await;
                }
                return;
            }
        };
        let mut parts = head.start.split_whitespace();
        let (Some(method), Some(target), Some(version), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            let body = simple_response(400, &[], "{\"error\":\"invalid_request\"}", true);
            let _ = client.get_mut().write_all(&body).await;
            return;
        };
        let method = method.to_owned();
        let path = origin_form(target);
        let http10 = version == "HTTP/1.0";
        let connection = head.tokens("connection");
        let close = if http10 {
            !connection.iter().any(|t| t == "keep-alive")
        } else {
            connection.iter().any(|t| t == "close")
        };

        let mode = {
            let mut state = lock(&state);
            let mode = state.mode_for(&path);
            state.seen.push(Seen {
                at: Instant::now(),
                method: method.clone(),
                path: path.clone(),
                mode: format!("{mode:?}"),
            });
            mode
        };

        let Ok(framing) = body_framing(&head, Framing::Empty) else {
            let body = simple_response(400, &[], "{\"error\":\"invalid_request\"}", true);
            let _ = client.get_mut().write_all(&body).await;
            return;
        };
        if matches!(framing, Framing::UntilEof) {
            // A request body with an unknown transfer coding cannot be framed.
            let body = simple_response(501, &[], "{\"error\":\"server_error\"}", true);
            let _ = client.get_mut().write_all(&body).await;
            return;
        }
        let expects_continue = head
            .get("expect")
            .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
        if expects_continue
            && !matches!(framing, Framing::Empty)
            && client
                .get_mut()
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .await
                .is_err()
        {
            return;
        }
        let Ok(body) = read_body(&mut client, framing).await else {
            return;
        };

        let response = match mode {
            Mode::Pass | Mode::Delay(_) => {
                if let Mode::Delay(d) = mode {
                    tokio::time::sleep(d).await;
                }
                match forward(upstream, &method, &path, &head, &body, close).await {
                    Ok(response) => response,
                    Err(_) => simple_response(502, &[], "{\"error\":\"bad_gateway\"}", close),
                }
            }
            Mode::Status(status) => simple_response(status, &[], &error_body(status), close),
            Mode::TooManyRequests { retry_after_secs } => simple_response(
                429,
                &[("Retry-After", retry_after_secs.to_string())],
                &error_body(429),
                close,
            ),
            Mode::Reset => {
                let _ = client.get_ref().set_zero_linger();
                return; // dropping the stream sends the RST
            }
            Mode::BlackHole => {
                // Swallow anything else the client sends until it gives up;
                // the proxy's shutdown drops this task otherwise.
                let mut sink = [0u8; 4096];
                while let Ok(n) = client.read(&mut sink).await {
                    if n == 0 {
                        break;
                    }
                }
                return;
            }
        };
        if client.get_mut().write_all(&response).await.is_err() || close {
            let _ = client.get_mut().shutdown().await;
            return;
        }
    }
}

/// Sends one request to upstream on a fresh connection and returns the
/// response re-framed for the client.
async fn forward(
    upstream: SocketAddr,
    method: &str,
    path: &str,
    head: &Head,
    body: &[u8],
    client_close: bool,
) -> io::Result<Vec<u8>> {
    let connection = head.tokens("connection");
    let mut request = format!("{method} {path} HTTP/1.1\r\n");
    let mut has_host = false;
    for (name, value) in &head.headers {
        if is_hop_by_hop(name, &connection) || name.eq_ignore_ascii_case("expect") {
            continue;
        }
        has_host |= name.eq_ignore_ascii_case("host");
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    if !has_host {
        request.push_str(&format!("Host: {upstream}\r\n"));
    }
    if !body.is_empty() || matches!(method, "POST" | "PUT" | "PATCH") {
        request.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    request.push_str("Connection: close\r\n\r\n");

    let stream = TcpStream::connect(upstream).await?;
    let _ = stream.set_nodelay(true);
    let mut upstream = BufReader::new(stream);
    let mut bytes = request.into_bytes();
    bytes.extend_from_slice(body);
    upstream.get_mut().write_all(&bytes).await?;
    upstream.get_mut().flush().await?;

    // Skip interim 1xx responses; relay the final one.
    let (status, status_line, head) = loop {
        let head = read_head(&mut upstream)
            .await?
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        let mut parts = head.start.splitn(3, ' ');
        let (Some(_version), Some(code)) = (parts.next(), parts.next()) else {
            return Err(invalid("bad status line"));
        };
        let status: u16 = code.parse().map_err(|_| invalid("bad status code"))?;
        let phrase = parts.next().unwrap_or("").to_owned();
        if (100..200).contains(&status) && status != 101 {
            continue;
        }
        break (status, format!("HTTP/1.1 {status} {phrase}"), head);
    };
    let framing = if method == "HEAD" || !status_has_body(status) {
        Framing::Empty
    } else {
        body_framing(&head, Framing::UntilEof)?
    };
    let body = read_body(&mut upstream, framing).await?;

    let connection = head.tokens("connection");
    let mut out = format!("{}\r\n", status_line.trim_end());
    for (name, value) in &head.headers {
        let keep_length = method == "HEAD" && name.eq_ignore_ascii_case("content-length");
        if is_hop_by_hop(name, &connection) && !keep_length {
            continue;
        }
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    if method != "HEAD" && status_has_body(status) {
        out.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    if client_close {
        out.push_str("Connection: close\r\n");
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    out.extend_from_slice(&body);
    Ok(out)
}
