//! `GetHeaders` over the real socket against the real daemon, next to a raw
//! Unix-socket request/response baseline doing the same framing work:
//! p50/p99/p99.9 latency and calls/s at 1, 16 and 64 clients; the cost of
//! `tokenctl headers` as a whole process; and the daemon's memory at idle
//! with 10, 1 000 and 10 000 credentials and after 1 000 000 calls.
//!
//! Run: `cargo bench --bench get_headers`. Prints tables; asserts nothing.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

mod common;

use common::{Load, grpc_load, pct, print_row, rss_kib, start};

const RUN: Duration = Duration::from_secs(4);
const CLIENTS: [usize; 3] = [1, 16, 64];

fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    println!(
        "machine: {} cores; client and daemon share them",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    // Memory at idle by credential count.
    let mut idle = Vec::new();
    for n in [10, 1_000, 10_000] {
        let (mut daemon, _socket) = start(dir.path(), n);
        std::thread::sleep(Duration::from_millis(500));
        idle.push((n, rss_kib(daemon.id())));
        let _ = daemon.kill();
        let _ = daemon.wait();
    }

    let (mut daemon, socket) = start(dir.path(), 1_000);
    println!(
        "\nrequest/response over a Unix socket, {}s per row",
        RUN.as_secs()
    );
    println!(
        "{:>28}  {:>8}  {:>10}  {:>9}  {:>9}  {:>9}",
        "", "clients", "calls/s", "p50 µs", "p99 µs", "p99.9 µs"
    );
    let baseline = baseline_server(dir.path());
    let mut ratios = Vec::new();
    for clients in CLIENTS {
        let raw = raw_load(&baseline, clients);
        let grpc = grpc_load(&socket, clients, RUN);
        print_row("raw baseline (echo framing)", clients, &raw);
        print_row("tokend GetHeaders", clients, &grpc);
        ratios.push((
            clients,
            raw.rate / grpc.rate,
            pct(&grpc.lat, 0.5) / pct(&raw.lat, 0.5),
        ));
    }
    println!("\ntokend's cost relative to the raw baseline:");
    for (clients, throughput, latency) in ratios {
        println!(
            "  {clients:>2} clients: {throughput:.1}x fewer calls/s, {latency:.1}x the p50 latency"
        );
    }

    // A shell script's view: one whole `tokenctl headers` process per call.
    let mut times = Vec::new();
    for _ in 0..200 {
        let t = Instant::now();
        let out = Command::new(env!("CARGO_BIN_EXE_tokenctl"))
            .args(["--socket"])
            .arg(&socket)
            .args(["headers", "cred-0000"])
            .output()
            .expect("tokenctl");
        assert!(out.status.success());
        times.push(t.elapsed().as_secs_f64() * 1e6);
    }
    times.sort_by(f64::total_cmp);
    println!(
        "\n`tokenctl headers` as a process, 200 runs: p50 {:.0} µs, p99 {:.0} µs",
        pct(&times, 0.5),
        pct(&times, 0.99)
    );

    // No growth after a million calls.
    let before = rss_kib(daemon.id());
    let started = Instant::now();
    let mut calls = 0;
    while calls < 1_000_000 {
        calls += grpc_load(&socket, 16, Duration::from_secs(2)).lat.len();
    }
    let after = rss_kib(daemon.id());
    println!(
        "\n{calls} calls in {:.1}s; daemon RSS {before} KiB before, {after} KiB after",
        started.elapsed().as_secs_f64()
    );
    println!("\ndaemon RSS at idle:");
    for (n, kib) in idle {
        println!("  {n:>6} credentials: {kib:>7} KiB");
    }
    let _ = daemon.kill();
    let _ = daemon.wait();
}

/// A minimal Unix-socket server doing what tokend's transport must at
/// least do: read a length-prefixed request (the size of a GetHeaders call)
/// and write a length-prefixed response (the size of its answer). One thread
/// per connection, blocking I/O: the floor for the socket round trip.
fn baseline_server(dir: &Path) -> PathBuf {
    let path = dir.join("baseline.sock");
    let _ = std::fs::remove_file(&path);
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let response = [7u8; 80];
                let mut len = [0u8; 4];
                let mut buf = vec![0u8; 1024];
                while stream.read_exact(&mut len).is_ok() {
                    let n = u32::from_be_bytes(len) as usize;
                    if stream.read_exact(&mut buf[..n]).is_err() {
                        return;
                    }
                    let mut out = Vec::with_capacity(84);
                    out.extend_from_slice(&(response.len() as u32).to_be_bytes());
                    out.extend_from_slice(&response);
                    if stream.write_all(&out).is_err() {
                        return;
                    }
                }
            });
        }
    });
    path
}

fn raw_load(path: &Path, clients: usize) -> Load {
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let path = path.to_owned();
            std::thread::spawn(move || {
                let mut s = std::os::unix::net::UnixStream::connect(&path).unwrap();
                let request = [1u8; 30];
                let mut lat = Vec::with_capacity(200_000);
                let mut resp = [0u8; 84];
                let end = Instant::now() + RUN;
                while Instant::now() < end {
                    let t = Instant::now();
                    let mut out = Vec::with_capacity(34);
                    out.extend_from_slice(&(request.len() as u32).to_be_bytes());
                    out.extend_from_slice(&request);
                    s.write_all(&out).unwrap();
                    s.read_exact(&mut resp).unwrap();
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
    Load::of(lat, RUN)
}
