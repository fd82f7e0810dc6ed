//! The cost of the authority layer (`grpc/authority.rs`), measured in one
//! run against a baseline without it:
//!
//! - cached `GetHeaders` through the real daemon over its socket, 1/16/64
//!   tonic clients, against a second daemon started with the test-only
//!   `TOKEND_TEST_NO_AUTHORITY_LAYER` (same binary, same config); rounds
//!   alternate between the two so drift hits both alike, and a third daemon
//!   without the layer gives the noise floor (the same comparison between
//!   two identical daemons);
//! - the layer alone, in process: feeding a connection of grpcio-like
//!   requests through `Rewriter` (passing through, and re-encoding
//!   percent-encoded authorities), next to copying the same bytes.
//!
//! Run: `cargo bench --bench authority_layer`. Prints tables; asserts nothing.

mod common;

use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::{Load, grpc_load, pct, print_row, start_env};
use tokend::grpc::authority::Rewriter;

const ROUND: Duration = Duration::from_secs(2);
const ROUNDS: usize = 5;

fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut with, with_socket) = start_env(dir.path(), 1_000, "-layer", &[]);
    let bypass = [("TOKEND_TEST_NO_AUTHORITY_LAYER", "1")];
    let (mut bare, bare_socket) = start_env(dir.path(), 1_000, "-bare", &bypass);
    let (mut twin, twin_socket) = start_env(dir.path(), 1_000, "-twin", &bypass);
    println!(
        "GetHeaders, {ROUNDS} alternating rounds of {}s per side",
        ROUND.as_secs()
    );
    println!(
        "{:>28}  {:>8}  {:>10}  {:>9}  {:>9}  {:>9}",
        "", "clients", "calls/s", "p50 µs", "p99 µs", "p99.9 µs"
    );
    let mut ratios = Vec::new();
    for clients in [1, 16, 64] {
        let (mut base, mut layer, mut same) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            base.push(grpc_load(&bare_socket, clients, ROUND));
            layer.push(grpc_load(&with_socket, clients, ROUND));
            same.push(grpc_load(&twin_socket, clients, ROUND));
        }
        let (base, layer, same) = (Load::merge(base), Load::merge(layer), Load::merge(same));
        print_row("without the layer", clients, &base);
        print_row("with the layer", clients, &layer);
        print_row("without, second daemon", clients, &same);
        let change = |l: &Load| {
            (
                (pct(&l.lat, 0.5) / pct(&base.lat, 0.5) - 1.0) * 100.0,
                (l.rate / base.rate - 1.0) * 100.0,
            )
        };
        ratios.push((clients, change(&layer), change(&same)));
    }
    println!("\nagainst the daemon without the layer (noise: two daemons without it):");
    for (clients, (p50, rate), (noise_p50, noise_rate)) in ratios {
        println!(
            "  {clients:>2} clients: with the layer p50 {p50:+.1} %, calls/s {rate:+.1} % \
             (noise: p50 {noise_p50:+.1} %, calls/s {noise_rate:+.1} %)"
        );
    }
    for daemon in [&mut with, &mut bare, &mut twin] {
        let _ = daemon.kill();
        let _ = daemon.wait();
    }

    println!("\nthe layer alone, 10 000 grpcio-like requests on one connection:");
    let copy = time_per_request(&connection(b"localhost"), || {
        |input: &mut BytesMut, out: &mut BytesMut| {
            out.extend_from_slice(input);
            input.clear();
        }
    });
    println!("  copying the bytes (baseline): {copy:>6.0} ns/request");
    for (what, authority) in [
        ("passing through (localhost)", &b"localhost"[..]),
        (
            "re-encoding (percent path)",
            &b"run%2Ftokend%2Ftokend.sock"[..],
        ),
    ] {
        let bytes = connection(authority);
        let ns = time_per_request(&bytes, || {
            let mut rewriter = Rewriter::new();
            move |input: &mut BytesMut, out: &mut BytesMut| {
                rewriter.feed(input, out).expect("a valid connection");
            }
        });
        println!(
            "  {what}: {ns:>6.0} ns/request ({:.1}x the copy)",
            ns / copy
        );
    }
}

const REQUESTS: usize = 10_000;

/// A client preface and `REQUESTS` unary calls encoded as grpcio does:
/// one stateful HPACK encoder, so repeated fields are indexed.
fn connection(authority: &[u8]) -> Vec<u8> {
    let frame = |out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]| {
        out.extend_from_slice(&u32::try_from(payload.len()).unwrap().to_be_bytes()[1..]);
        out.extend_from_slice(&[kind, flags]);
        out.extend_from_slice(&stream.to_be_bytes());
        out.extend_from_slice(payload);
    };
    let mut encoder = loona_hpack::Encoder::new();
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    frame(&mut out, 0x4, 0, 0, &[]);
    for i in 0..REQUESTS {
        let stream = 2 * u32::try_from(i).unwrap() + 1;
        let fields: [(&[u8], &[u8]); 8] = [
            (b":method", b"POST"),
            (b":scheme", b"http"),
            (b":path", b"/tokend.v1.TokenBroker/GetHeaders"),
            (b":authority", authority),
            (b"te", b"trailers"),
            (b"content-type", b"application/grpc"),
            (
                b"user-agent",
                b"grpc-python/1.76.0 grpc-c/51.0.0 (linux; chttp2)",
            ),
            (b"grpc-accept-encoding", b"identity, deflate, gzip"),
        ];
        let block = encoder.encode(fields);
        frame(&mut out, 0x1, 0x4, stream, &block);
        frame(&mut out, 0x0, 0x1, stream, b"\0\0\0\0\x0b\n\tcred-0001");
    }
    out
}

/// Feeds `bytes` in 4 KiB reads, as a socket would deliver them, to a fresh
/// feeder from `make` per pass; the best of five passes, in ns per request.
fn time_per_request<F: FnMut(&mut BytesMut, &mut BytesMut)>(
    bytes: &[u8],
    mut make: impl FnMut() -> F,
) -> f64 {
    let mut best = f64::MAX;
    for _ in 0..5 {
        let mut feed = make();
        let (mut input, mut out) = (BytesMut::new(), BytesMut::with_capacity(bytes.len()));
        let t = Instant::now();
        for chunk in bytes.chunks(4096) {
            input.extend_from_slice(chunk);
            feed(&mut input, &mut out);
        }
        best = best.min(t.elapsed().as_nanos() as f64 / REQUESTS as f64);
        assert_eq!(input.len(), 0);
    }
    best
}
