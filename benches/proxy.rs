//! The `[[proxy]]` endpoint on loopback TCP: the real daemon with one
//! `glean_token` credential and one proxy in front of an HTTP/1.1 upstream
//! that runs in this process, next to the same clients talking to that
//! upstream directly. Calls/s and p50/p99/p99.9 latency at 1, 16 and 64
//! keep-alive clients and with a new connection per request; the daemon's
//! CPU per proxied call; its memory per idle connection and per request in
//! flight.
//!
//! Run: `cargo bench --bench proxy`. Prints tables; asserts nothing about
//! speed, only that every call is answered 200 and that the upstream sees
//! the credential's token in place of the placeholder.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Child;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

mod common;

use common::{Load, pct, print_row, raise_fd_limit, rss_kib, start_with};

/// Each row runs `ROUNDS` rounds of `ROUND`, alternating direct and
/// proxied, so a change in the machine's load hits both alike.
const ROUND: Duration = Duration::from_secs(1);
const ROUNDS: u32 = 4;
const CLIENTS: [usize; 3] = [1, 16, 64];
/// Client counts for the rows with a new connection per request.
const FRESH_CLIENTS: [usize; 2] = [1, 16];
/// Idle connections held for the memory measure.
const IDLE: usize = 500;
/// The proxy admits `MAX_CONNECTIONS_PER_UID` (256) connections per uid and
/// proxy, so the idle connections are spread over this many proxies.
const IDLE_PROXIES: usize = 2;
/// Requests held in flight for the memory measure.
const ACTIVE: usize = 200;
/// The request body clients send.
const BODY: &str =
    r#"{"query":"quarterly planning","pageSize":10,"requestOptions":{"facetBucketSize":10}}"#;
/// The credential's secret, as `common::start_with` writes it.
const TOKEN: &[u8] = b"Bearer glean_bench_token";
const PLACEHOLDER: &[u8] = b"Bearer placeholder";
/// `/proc/PID/stat` counts CPU time in ticks of 1/100 s (USER_HZ).
const TICK_US: f64 = 10_000.0;

fn main() {
    raise_fd_limit(4 * IDLE as u64 + 1024);
    let dir = tempfile::tempdir().expect("temp dir");
    println!(
        "machine: {} cores; clients, upstream and daemon share them",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let upstream = Upstream::start();

    let (mut daemon, proxies) = start_proxies(dir.path(), "-load", upstream.addr, 1);
    let proxy = proxies[0];
    // The proxy must have swapped the placeholder for the credential's token.
    load(proxy, 1, Duration::from_millis(200), false);
    assert!(
        upstream.state.with_token.load(Ordering::Relaxed) > 0
            && upstream.state.with_placeholder.load(Ordering::Relaxed) == 0,
        "the upstream did not see the credential's token"
    );

    println!(
        "\nPOST /rest/api/v1/search ({} B body, {} B answer) over loopback TCP, \
         {ROUNDS} alternating rounds of {}s per row",
        BODY.len(),
        answer().len() - answer_head_len(),
        ROUND.as_secs()
    );
    println!(
        "{:>28}  {:>8}  {:>10}  {:>9}  {:>9}  {:>9}",
        "", "clients", "calls/s", "p50 µs", "p99 µs", "p99.9 µs"
    );
    let mut compared = Vec::new();
    for (fresh, counts) in [(false, &CLIENTS[..]), (true, &FRESH_CLIENTS[..])] {
        for &clients in counts {
            let (mut direct, mut proxied) = (Vec::new(), Vec::new());
            let mut ticks = 0;
            for _ in 0..ROUNDS {
                direct.push(load(upstream.addr, clients, ROUND, fresh));
                let cpu = cpu_ticks(daemon.id());
                proxied.push(load(proxy, clients, ROUND, fresh));
                ticks += cpu_ticks(daemon.id()) - cpu;
            }
            let (direct, proxied) = (Load::merge(direct), Load::merge(proxied));
            let cpu_us = ticks as f64 * TICK_US;
            let how = if fresh { "new conn each" } else { "keep-alive" };
            print_row(&format!("direct, {how}"), clients, &direct);
            print_row(&format!("proxied, {how}"), clients, &proxied);
            compared.push((how, clients, direct, proxied, cpu_us));
        }
    }
    println!("\nthe proxy's cost relative to direct:");
    for (how, clients, direct, proxied, cpu_us) in &compared {
        let (d50, p50) = (pct(&direct.lat, 0.5), pct(&proxied.lat, 0.5));
        let (d99, p99) = (pct(&direct.lat, 0.99), pct(&proxied.lat, 0.99));
        println!(
            "  {how:>13}, {clients:>2} clients: {:+.0} µs p50, {:+.0} µs p99; \
             {:.1}x fewer calls/s, {:.1}x the p50, {:.1}x the p99; \
             daemon CPU {:.0} µs per call",
            p50 - d50,
            p99 - d99,
            direct.rate / proxied.rate,
            p50 / d50,
            p99 / d99,
            cpu_us / proxied.lat.len() as f64,
        );
    }
    let _ = daemon.kill();
    let _ = daemon.wait();

    // Memory: a fresh daemon for each measure, so memory freed by earlier
    // work does not hide the growth.
    println!("\ndaemon memory (VmRSS), a fresh daemon each, warmed by 200 proxied calls:");
    idle_memory(dir.path(), &upstream);
    active_memory(dir.path(), &upstream);
    println!(
        "\nupstream saw {} requests with the credential's token, {} with the placeholder",
        upstream.state.with_token.load(Ordering::Relaxed),
        upstream.state.with_placeholder.load(Ordering::Relaxed)
    );
}

/// `IDLE` connections held open on the proxies: first only connected (the
/// proxy then waits for a request head, up to its 10 s head timeout), then
/// each after one call (a keep-alive connection between requests).
fn idle_memory(dir: &Path, upstream: &Upstream) {
    let (mut daemon, proxies) = start_proxies(dir, "-idle", upstream.addr, IDLE_PROXIES);
    let pid = daemon.id();
    for proxy in &proxies {
        warm(*proxy);
    }
    std::thread::sleep(Duration::from_millis(500));
    let (rss0, fds0) = (rss_kib(pid), fd_count(pid));
    let started = Instant::now();
    let mut held: Vec<TcpStream> = (0..IDLE)
        .map(|i| connect(proxies[i % proxies.len()]))
        .collect();
    wait_for(
        || fd_count(pid) >= fds0 + IDLE,
        "the proxy to accept them all",
    );
    std::thread::sleep(Duration::from_millis(300));
    let (rss1, fds1) = (rss_kib(pid), fd_count(pid));
    let connected = started.elapsed();
    let mut buf = Vec::with_capacity(4096);
    for (i, s) in held.iter_mut().enumerate() {
        call(s, &request(proxies[i % proxies.len()], false), &mut buf);
    }
    std::thread::sleep(Duration::from_millis(300));
    let (rss2, fds2) = (rss_kib(pid), fd_count(pid));
    let elapsed = started.elapsed();
    println!(
        "  {IDLE} idle connections ({} proxies of {}), before: {rss0} KiB, {fds0} fds",
        proxies.len(),
        IDLE / proxies.len()
    );
    println!(
        "    connected, no request yet ({:.1}s after the first connect): {rss1} KiB, +{} fds: \
         {:.1} KiB per connection",
        connected.as_secs_f64(),
        fds1 - fds0,
        (rss1 as f64 - rss0 as f64) / IDLE as f64
    );
    println!(
        "    after one call each, idle keep-alive ({:.1}s): {rss2} KiB, +{} fds: \
         {:.1} KiB per connection",
        elapsed.as_secs_f64(),
        fds2 - fds0,
        (rss2 as f64 - rss0 as f64) / IDLE as f64
    );
    drop(held);
    let _ = daemon.kill();
    let _ = daemon.wait();
}

/// `ACTIVE` requests through one proxy at once, the upstream holding its
/// answers until all of them are in flight.
fn active_memory(dir: &Path, upstream: &Upstream) {
    let (mut daemon, proxies) = start_proxies(dir, "-active", upstream.addr, 1);
    let (pid, proxy) = (daemon.id(), proxies[0]);
    warm(proxy);
    std::thread::sleep(Duration::from_millis(500));
    let (rss0, fds0) = (rss_kib(pid), fd_count(pid));
    let state = &upstream.state;
    state.held.store(0, Ordering::SeqCst);
    *state.hold.lock().unwrap() = true;
    state.holding.store(true, Ordering::SeqCst);
    let clients: Vec<_> = (0..ACTIVE)
        .map(|_| {
            std::thread::spawn(move || {
                let mut s = connect(proxy);
                call(&mut s, &request(proxy, false), &mut Vec::new());
            })
        })
        .collect();
    wait_for(
        || state.held.load(Ordering::SeqCst) >= ACTIVE,
        "all requests to reach the upstream",
    );
    std::thread::sleep(Duration::from_millis(300));
    let (rss1, fds1) = (rss_kib(pid), fd_count(pid));
    state.holding.store(false, Ordering::SeqCst);
    *state.hold.lock().unwrap() = false;
    state.released.notify_all();
    for c in clients {
        c.join().expect("a held call");
    }
    println!(
        "  {ACTIVE} requests in flight (upstream holding its answers): before {rss0} KiB, \
         {fds0} fds; during {rss1} KiB, +{} fds: {:.1} KiB per request",
        fds1 - fds0,
        (rss1 as f64 - rss0 as f64) / ACTIVE as f64
    );
    let _ = daemon.kill();
    let _ = daemon.wait();
}

/// The daemon with one credential and `proxies` proxies to `upstream`, each
/// on its own loopback port; returns once every proxy accepts connections.
fn start_proxies(
    dir: &Path,
    tag: &str,
    upstream: SocketAddr,
    proxies: usize,
) -> (Child, Vec<SocketAddr>) {
    // All bound at once, so no port is handed out twice.
    let listeners: Vec<TcpListener> = (0..proxies)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("a free port"))
        .collect();
    let addrs: Vec<SocketAddr> = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
    drop(listeners);
    let mut extra = String::new();
    for (i, addr) in addrs.iter().enumerate() {
        extra.push_str(&format!(
            "\n[[proxy]]\nname = \"bench-{i}\"\nlisten = \"{addr}\"\n\
             credential = \"cred-0000\"\nupstream = \"http://{upstream}\"\n"
        ));
    }
    let (daemon, _socket) = start_with(dir, 1, tag, &[], &extra);
    for addr in &addrs {
        wait_for(|| TcpStream::connect(addr).is_ok(), "the proxy to listen");
    }
    (daemon, addrs)
}

/// Runs the first calls, which set up what every later one reuses (the
/// upstream connection pool, the blocking-thread pool the caller lookup
/// runs on).
fn warm(proxy: SocketAddr) {
    let mut buf = Vec::with_capacity(4096);
    let mut s = connect(proxy);
    for _ in 0..180 {
        call(&mut s, &request(proxy, false), &mut buf);
    }
    for _ in 0..20 {
        call_once(proxy, &request(proxy, true), &mut buf);
    }
}

/// `clients` threads calling `addr` in a loop for `run`, each on its own
/// keep-alive connection, or with a new connection per call (`fresh`).
fn load(addr: SocketAddr, clients: usize, run: Duration, fresh: bool) -> Load {
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            std::thread::spawn(move || {
                let request = request(addr, fresh);
                let mut buf = Vec::with_capacity(4096);
                let mut lat = Vec::with_capacity(200_000);
                let mut kept = (!fresh).then(|| connect(addr));
                let end = Instant::now() + run;
                while Instant::now() < end {
                    let t = Instant::now();
                    match &mut kept {
                        Some(s) => call(s, &request, &mut buf),
                        None => call_once(addr, &request, &mut buf),
                    }
                    lat.push(t.elapsed().as_secs_f64() * 1e6);
                }
                lat
            })
        })
        .collect();
    let lat = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    Load::of(lat, run)
}

/// The request clients send; with `close`, asking the server to close the
/// connection after its answer (one request per connection).
fn request(addr: SocketAddr, close: bool) -> Vec<u8> {
    let connection = if close { "Connection: close\r\n" } else { "" };
    format!(
        "POST /rest/api/v1/search HTTP/1.1\r\nHost: {addr}\r\n\
         Authorization: Bearer placeholder\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n{connection}\r\n{BODY}",
        BODY.len()
    )
    .into_bytes()
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_nodelay(true).unwrap();
    s
}

/// One call on `s`: the request out, a 200 with a Content-Length body back.
fn call(s: &mut TcpStream, request: &[u8], buf: &mut Vec<u8>) {
    s.write_all(request).expect("send the request");
    let (head, total) = read_message(s, buf)
        .expect("read the answer")
        .expect("an answer");
    let status = String::from_utf8_lossy(&buf[..head]);
    assert!(status.starts_with("HTTP/1.1 200 "), "{status}");
    assert!(
        header(&buf[..head], "content-length").is_some(),
        "an answer without Content-Length: {status}"
    );
    buf.drain(..total);
}

/// One call on a new connection, sent with `Connection: close`; waits for
/// the server to close first, so the TIME_WAIT sockets stay on the server's
/// side (the client's side would run out of ephemeral ports).
fn call_once(addr: SocketAddr, request: &[u8], buf: &mut Vec<u8>) {
    let mut s = connect(addr);
    call(&mut s, request, buf);
    let mut rest = [0u8; 1];
    assert_eq!(s.read(&mut rest).expect("the server's close"), 0);
}

/// Reads one HTTP/1.1 message (a head and a Content-Length body, or none)
/// into `buf`: the head's length and the message's, or `None` at a clean
/// end of stream.
fn read_message(s: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<Option<(usize, usize)>> {
    let mut chunk = [0u8; 4096];
    let head = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut chunk)?;
        if n == 0 {
            if buf.is_empty() {
                return Ok(None);
            }
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let length = header(&buf[..head], "content-length")
        .and_then(|v| std::str::from_utf8(v).ok()?.trim().parse::<usize>().ok())
        .unwrap_or(0);
    while buf.len() < head + length {
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(Some((head, head + length)))
}

/// The value of header `name` (lower case) in a message head.
fn header<'h>(head: &'h [u8], name: &str) -> Option<&'h [u8]> {
    head.split(|b| *b == b'\n').skip(1).find_map(|line| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let colon = line.iter().position(|b| *b == b':')?;
        line[..colon]
            .eq_ignore_ascii_case(name.as_bytes())
            .then(|| line[colon + 1..].trim_ascii())
    })
}

/// The upstream's answer: a search result of about 300 bytes of JSON.
fn answer() -> &'static [u8] {
    static ANSWER: OnceLock<Vec<u8>> = OnceLock::new();
    ANSWER.get_or_init(|| {
        let mut body = String::from(
            r#"{"results":[{"title":"Quarterly planning","url":"https://example.com/d/1","snippets":[{"text":""#,
        );
        let end = r#""}]}],"hasMoreResults":false,"trackingToken":"bench"}"#;
        while body.len() + end.len() < 300 {
            body.push('x');
        }
        body.push_str(end);
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    })
}

fn answer_head_len() -> usize {
    answer().windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4
}

/// The upstream: a thread per connection, blocking I/O, answering every
/// request with [`answer`]; it can hold its answers until released.
struct Upstream {
    addr: SocketAddr,
    state: Arc<State>,
}

#[derive(Default)]
struct State {
    /// Whether answers are held (read without the lock on the hot path).
    holding: AtomicBool,
    hold: Mutex<bool>,
    released: Condvar,
    /// Requests waiting while held.
    held: AtomicUsize,
    with_token: AtomicUsize,
    with_placeholder: AtomicUsize,
}

impl Upstream {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the upstream");
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State::default());
        let shared = Arc::clone(&state);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let state = Arc::clone(&shared);
                std::thread::spawn(move || {
                    let _ = serve(stream, &state);
                });
            }
        });
        Self { addr, state }
    }
}

fn serve(mut s: TcpStream, state: &State) -> io::Result<()> {
    s.set_nodelay(true)?;
    let mut buf = Vec::with_capacity(4096);
    while let Some((head, total)) = read_message(&mut s, &mut buf)? {
        let request = &buf[..head];
        assert!(
            request.starts_with(b"POST /rest/api/v1/search "),
            "{}",
            String::from_utf8_lossy(request)
        );
        match header(request, "authorization") {
            Some(TOKEN) => state.with_token.fetch_add(1, Ordering::Relaxed),
            Some(PLACEHOLDER) => state.with_placeholder.fetch_add(1, Ordering::Relaxed),
            other => panic!("unexpected Authorization {other:?}"),
        };
        let close = header(request, "connection").is_some_and(|v| v.eq_ignore_ascii_case(b"close"));
        if state.holding.load(Ordering::SeqCst) {
            let mut hold = state.hold.lock().unwrap();
            if *hold {
                state.held.fetch_add(1, Ordering::SeqCst);
                while *hold {
                    hold = state.released.wait(hold).unwrap();
                }
            }
        }
        s.write_all(answer())?;
        if close {
            return Ok(());
        }
        buf.drain(..total);
    }
    Ok(())
}

/// Open file descriptors of a process.
fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

/// A process's user and system CPU time, in ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces): state is the
    // first, utime the 12th, stime the 13th.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(vec![], |(_, rest)| rest.split_whitespace().collect());
    let field = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    field(11).unwrap_or(0) + field(12).unwrap_or(0)
}

fn wait_for(mut done: impl FnMut() -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}
