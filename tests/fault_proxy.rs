//! Tests for the fault-injecting proxy in `tests/common/fault_proxy.rs`,
//! against a tiny upstream HTTP server, with raw socket clients (and one
//! reqwest client, the kind the daemon uses).

#[path = "common/fault_proxy.rs"]
mod fault_proxy;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fault_proxy::{FaultProxy, Mode};

/// A request as the upstream server saw it.
#[derive(Clone, Debug)]
struct UpstreamSeen {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl UpstreamSeen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A one-request-per-connection HTTP server on its own thread. Paths
/// starting `/chunked` get a chunked body, `/eof` a body ended by closing
/// the connection, anything else `200 OK` with a `Content-Length` body
/// `upstream:<method> <path> <request body>`. Threads are leaked.
struct Upstream {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<UpstreamSeen>>>,
}

impl Upstream {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let log = Arc::clone(&log);
                std::thread::spawn(move || {
                    let _ = serve_upstream(stream, &log);
                });
            }
        });
        Self { addr, seen }
    }

    fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    fn last(&self) -> UpstreamSeen {
        self.seen
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("upstream saw nothing")
    }
}

fn serve_upstream(stream: TcpStream, log: &Mutex<Vec<UpstreamSeen>>) -> io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    let (start, headers) = read_head(&mut reader)?;
    let mut parts = start.split(' ');
    let method = parts.next().unwrap_or_default().to_owned();
    let path = parts.next().unwrap_or_default().to_owned();
    let length = header(&headers, "content-length").map_or(0, |v| v.parse().unwrap());
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    log.lock().unwrap().push(UpstreamSeen {
        method: method.clone(),
        path: path.clone(),
        headers,
        body: body.clone(),
    });
    if path.starts_with("/chunked") {
        writer.write_all(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Upstream: yes\r\n\r\n\
              5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n",
        )?;
    } else if path.starts_with("/eof") {
        writer.write_all(b"HTTP/1.1 200 OK\r\nX-Upstream: yes\r\n\r\nuntil the end")?;
    } else {
        let text = format!(
            "upstream:{method} {path} {}",
            String::from_utf8_lossy(&body)
        );
        write!(
            writer,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Upstream: yes\r\n\
             Content-Length: {}\r\n\r\n{text}",
            text.len()
        )?;
    }
    writer.flush()
}

fn read_head(reader: &mut impl BufRead) -> io::Result<(String, Vec<(String, String)>)> {
    let mut start = String::new();
    if reader.read_line(&mut start)? == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':').expect("header line");
        headers.push((name.to_owned(), value.trim().to_owned()));
    }
    Ok((start.trim_end().to_owned(), headers))
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// A response as a raw client read it (the proxy always sends
/// `Content-Length`).
#[derive(Debug)]
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }
}

/// A raw keep-alive client connection to the proxy.
struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Client {
    fn connect(proxy: &FaultProxy) -> Self {
        let stream = TcpStream::connect(proxy.addr()).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Self {
            reader: BufReader::new(stream.try_clone().unwrap()),
            writer: stream,
        }
    }

    fn send_raw(&mut self, raw: &[u8]) {
        self.writer.write_all(raw).unwrap();
        self.writer.flush().unwrap();
    }

    fn send(&mut self, method: &str, path: &str, body: &str) {
        let raw = format!(
            "{method} {path} HTTP/1.1\r\nHost: auth.test\r\n\
             Content-Type: application/x-www-form-urlencoded\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        self.send_raw(raw.as_bytes());
    }

    fn read_response(&mut self) -> io::Result<Response> {
        let (start, headers) = read_head(&mut self.reader)?;
        let status = start.split(' ').nth(1).unwrap().parse().unwrap();
        let length = header(&headers, "content-length")
            .expect("proxy responses carry Content-Length")
            .parse()
            .unwrap();
        let mut body = vec![0; length];
        self.reader.read_exact(&mut body)?;
        Ok(Response {
            status,
            headers,
            body: String::from_utf8(body).unwrap(),
        })
    }

    fn request(&mut self, method: &str, path: &str, body: &str) -> Response {
        self.send(method, path, body);
        self.read_response().unwrap()
    }
}

#[test]
fn pass_relays_status_headers_and_body() {
    let upstream = Upstream::start();
    let proxy = FaultProxy::start(upstream.addr);
    assert_eq!(
        proxy.url(),
        format!("http://127.0.0.1:{}", proxy.addr().port())
    );

    let mut client = Client::connect(&proxy);
    let response = client.request("POST", "/token", "grant_type=refresh_token");
    assert_eq!(response.status, 200);
    assert_eq!(response.header("x-upstream"), Some("yes"));
    assert_eq!(response.header("content-type"), Some("text/plain"));
    assert_eq!(
        response.body,
        "upstream:POST /token grant_type=refresh_token"
    );

    let seen = upstream.last();
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.path, "/token");
    assert_eq!(seen.body, b"grant_type=refresh_token");
    assert_eq!(seen.header("connection"), Some("close"));
    assert_eq!(seen.header("host"), Some("auth.test"));
    assert_eq!(seen.header("content-length"), Some("24"));

    let requests = proxy.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].method, "POST");
    assert_eq!(requests[0].path, "/token");
    assert_eq!(requests[0].mode, "Pass");
}

#[test]
fn keep_alive_connection_carries_several_requests() {
    let upstream = Upstream::start();
    let proxy = FaultProxy::start(upstream.addr);
    let mut client = Client::connect(&proxy);

    let first = client.request("GET", "/one", "");
    assert_eq!(first.body, "upstream:GET /one ");
    assert_eq!(first.header("connection"), None);
    let second = client.request("POST", "/two", "a=b");
    assert_eq!(second.body, "upstream:POST /two a=b");

    // Two pipelined requests in one write.
    client.send_raw(b"GET /three HTTP/1.1\r\nHost: x\r\n\r\nGET /four HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(client.read_response().unwrap().body, "upstream:GET /three ");
    assert_eq!(client.read_response().unwrap().body, "upstream:GET /four ");

    assert_eq!(upstream.count(), 4);
    assert_eq!(proxy.count(""), 4);

    // `Connection: close` from the client is honoured after the response.
    client.send_raw(b"GET /five HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let last = client.read_response().unwrap();
    assert_eq!(last.header("connection"), Some("close"));
    let mut rest = Vec::new();
    assert_eq!(client.reader.read_to_end(&mut rest).unwrap(), 0);
}

#[test]
fn chunked_bodies_are_reframed() {
    let upstream = Upstream::start();
    let proxy = FaultProxy::start(upstream.addr);
    let mut client = Client::connect(&proxy);

    // Chunked request body: upstream gets it with Content-Length.
    client.send_raw(
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
          3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n",
    );
    let response = client.read_response().unwrap();
    assert_eq!(response.body, "upstream:POST /echo abcdefg");
    let seen = upstream.last();
    assert_eq!(seen.header("content-length"), Some("7"));
    assert_eq!(seen.header("transfer-encoding"), None);

    // Chunked and EOF-delimited responses reach the client with Content-Length.
    let chunked = client.request("GET", "/chunked", "");
    assert_eq!(chunked.body, "hello world");
    assert_eq!(chunked.header("transfer-encoding"), None);
    assert_eq!(chunked.header("x-upstream"), Some("yes"));
    let eof = client.request("GET", "/eof", "");
    assert_eq!(eof.body, "until the end");
    // ... and the connection still works.
    assert_eq!(client.request("GET", "/x", "").status, 200);
}

#[test]
fn status_mode_answers_without_reaching_upstream() {
    let upstream = Upstream::start();
    let proxy = FaultProxy::start(upstream.addr);
    let mut client = Client::connect(&proxy);
    assert_eq!(client.request("GET", "/warm", "").status, 200);
    assert_eq!(upstream.count(), 1);

    proxy.set_mode(Mode::Status(503));
    let response = client.request("POST", "/token", "grant_type=x");
    assert_eq!(response.status, 503);
    assert_eq!(response.header("content-type"), Some("application/json"));
    assert_eq!(response.body, r#"{"error":"temporarily_unavailable"}"#);
    assert_eq!(upstream.count(), 1, "upstream must not be contacted");

    // Keep-alive survives an injected status.
    proxy.set_mode(Mode::Pass);
    assert_eq!(client.request("GET", "/after", "").status, 200);
    assert_eq!(upstream.count(), 2);

    let modes: Vec<String> = proxy.requests().into_iter().map(|s| s.mode).collect();
    assert_eq!(modes, ["Pass", "Status(503)", "Pass"]);
}

#[test]
fn too_many_requests_carries_retry_after() {
    let upstream = Upstream::start();
    let proxy = FaultProxy::start(upstream.addr);
    proxy.set_mode(Mode::TooManyRequests {
        retry_after_secs: 7,
    });
    let mut client = Client::connect(&proxy);
    let response = client.request("POST", "/token", "a=b");
    assert_eq!(response.status, 429);
    assert_eq!(response.header("retry-after"), Some("7"));
    assert_eq!(response.header("content-type"), Some("application/json"));
    assert_eq!(response.body, r#"{"error":"temporarily_unavailable"}"#);
    assert_eq!(upstream.count(), 0);
    assert_eq!(
        proxy.requests()[0].mode,
        "TooManyRequests { retry_after_secs: 7 }"
    );
}

#[test]
fn reset_mode_breaks_the_connection() {
    let upstream = Upstream::start();
    let proxy = FaultProxy::start(upstream.addr);
    proxy.set_mode(Mode::Reset);
    let mut client = Client::connect(&proxy);
    client.send("POST", "/token", "a=b");
    let mut buf = [0u8; 64];
    match client.reader.read(&mut buf) {
        Ok(0) => {}
        Ok(n) => panic!("unexpected bytes: {:?}", String::from_utf8_lossy(&buf[..n])),
        Err(e) => assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{e}"),
    }
    assert_eq!(upstream.count(), 0);
    assert_eq!(proxy.count("/token"), 1);
    assert_eq!(proxy.requests()[0].mode, "Reset");
}

#[test]
fn black_hole_never_answers_and_drop_releases_it() {
    let upstream = Upstream::start();
    let proxy = FaultProxy::start(upstream.addr);
    proxy.set_mode(Mode::BlackHole);
    let mut client = Client::connect(&proxy);
    client
        .writer
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    client.send("POST", "/token", "a=b");
    let mut buf = [0u8; 64];
    let err = client
        .reader
        .read(&mut buf)
        .expect_err("black hole answered");
    assert!(
        matches!(
            err.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ),
        "{err}"
    );
    assert_eq!(proxy.count("/token"), 1);
    assert_eq!(proxy.requests()[0].mode, "BlackHole");
    assert_eq!(upstream.count(), 0);

    // Dropping the proxy closes the held connection promptly.
    let started = Instant::now();
    drop(proxy);
    assert!(started.elapsed() < Duration::from_secs(2));
    client
        .writer
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    match client.reader.read(&mut buf) {
        Ok(0) => {}
        Ok(n) => panic!("unexpected bytes: {:?}", String::from_utf8_lossy(&buf[..n])),
        Err(e) => assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{e}"),
    }
}

#[test]
fn dropping_the_proxy_stops_accepting() {
    let upstream = Upstream::start();
    let proxy = FaultProxy::start(upstream.addr);
    let addr = proxy.addr();
    drop(proxy);
    assert!(TcpStream::connect(addr).is_err());
}

#[test]
fn mode_for_prefix_applies_only_to_that_prefix() {
    let upstream = Upstream::start();
    let proxy = FaultProxy::start(upstream.addr);
    proxy.set_mode_for("/token", Mode::Status(503));
    let mut client = Client::connect(&proxy);

    assert_eq!(client.request("POST", "/token", "a=b").status, 503);
    assert_eq!(client.request("POST", "/token?x=1", "").status, 503);
    assert_eq!(client.request("GET", "/jwks", "").status, 200);
    assert_eq!(upstream.count(), 1);

    // The longest matching prefix wins; re-setting a prefix replaces it.
    proxy.set_mode_for("/token/special", Mode::Pass);
    assert_eq!(client.request("GET", "/token/special", "").status, 200);
    assert_eq!(client.request("GET", "/token/other", "").status, 503);
    proxy.set_mode_for("/token", Mode::Status(500));
    assert_eq!(client.request("GET", "/token", "").status, 500);

    // The default mode does not override a prefix.
    proxy.set_mode(Mode::Status(502));
    assert_eq!(client.request("GET", "/jwks", "").status, 502);
    assert_eq!(client.request("GET", "/token", "").status, 500);
    proxy.clear_modes_for();
    assert_eq!(client.request("GET", "/token", "").status, 502);

    assert_eq!(proxy.count("/token"), 7);
    assert_eq!(proxy.count("/token/"), 2);
    assert_eq!(proxy.count("/jwks"), 2);
    assert_eq!(proxy.count(""), 9);
    let requests = proxy.requests();
    let paths: Vec<&str> = requests.iter().map(|s| s.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/token",
            "/token?x=1",
            "/jwks",
            "/token/special",
            "/token/other",
            "/token",
            "/jwks",
            "/token",
            "/token",
        ]
    );
    assert!(requests.windows(2).all(|w| w[0].at <= w[1].at));

    proxy.reset_counts();
    assert_eq!(proxy.count(""), 0);
    assert!(proxy.requests().is_empty());
}

#[test]
fn unreachable_upstream_gives_502() {
    // A port nothing listens on: bind, note it, close.
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let proxy = FaultProxy::start(addr);
    let mut client = Client::connect(&proxy);
    let response = client.request("GET", "/token", "");
    assert_eq!(response.status, 502);
    assert_eq!(response.header("content-type"), Some("application/json"));
}

#[tokio::test]
async fn works_with_reqwest_from_an_async_test() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let upstream = Upstream::start();
    let proxy = FaultProxy::start(upstream.addr);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let token_url = format!("{}/token", proxy.url());

    for _ in 0..2 {
        let response = http
            .post(&token_url)
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.text().await.unwrap(),
            "upstream:POST /token grant_type=client_credentials"
        );
    }

    proxy.set_mode(Mode::TooManyRequests {
        retry_after_secs: 3,
    });
    let response = http.post(&token_url).send().await.unwrap();
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "3");

    proxy.set_mode(Mode::Reset);
    let err = http.post(&token_url).send().await.unwrap_err();
    assert!(!err.is_timeout(), "{err:?}");

    proxy.set_mode(Mode::BlackHole);
    let err = http
        .post(&token_url)
        .timeout(Duration::from_millis(300))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err:?}");

    assert_eq!(proxy.count("/token"), 5);
    assert_eq!(upstream.count(), 2);
    drop(proxy); // joins the proxy thread from inside an async context
}
