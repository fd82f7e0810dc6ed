//! `GetHeaders` over the real socket against the real daemon, next to two
//! baselines driven by the same load: a raw Unix-socket request/response
//! doing the same framing work (the floor), and a do-nothing tonic server
//! with default settings serving the same `TokenBroker` service (what
//! tokend's transport would cost untuned). p50/p99/p99.9 latency and calls/s
//! at 1, 16 and 64 clients, for a Glean token and for a cached OAuth token,
//! in interleaved rounds so a busy machine disturbs all alike, with each
//! server process's CPU time per call (what its calls/s would be if the
//! client had cores of its own); then the cost
//! of `tokenctl headers` as a whole process; and the daemon's memory at idle
//! with 10, 1 000 and 10 000 credentials and after 1 000 000 calls.
//!
//! Run: `cargo bench --bench get_headers` (`-- calls` for the calls only).
//! With `TOKEND_BENCH_BEFORE=/path/to/an/older/tokend`, that binary is
//! measured too, in the same rounds, and compared with this one. Prints
//! tables; asserts nothing.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

mod common;

use common::{
    Load, cache_oauth_tokens, grpc_load, grpc_load_of, oauth_credentials, pct, print_row, rss_kib,
    serve_tonic_baseline_if_asked, start, start_bin, start_tonic_baseline,
};

/// One round of one load; every row is [`ROUNDS`] of them, short and many
/// so that other work on the machine lands in a few rounds, not in a row.
const RUN: Duration = Duration::from_secs(1);
const ROUNDS: usize = 10;
const CLIENTS: [usize; 3] = [1, 16, 64];
/// OAuth credentials configured next to the 1 000 Glean ones: one per
/// client at 64 clients, as the Glean load has.
const OAUTH: usize = 64;

/// What a round measures.
enum Target {
    Raw(PathBuf),
    /// The tonic server's socket and process.
    Tonic(PathBuf, u32),
    /// A daemon's socket and process, and whether to ask for the OAuth
    /// credentials.
    Tokend(PathBuf, u32, bool),
}

impl Target {
    /// One round: its load, and the server's CPU time per call in µs, all
    /// and in the kernel (NaN for the raw baseline, whose server threads
    /// are in this process).
    fn load(&self, clients: usize) -> (Load, Cpu) {
        let pid = match self {
            Self::Raw(_) => None,
            Self::Tonic(_, pid) | Self::Tokend(_, pid, _) => Some(*pid),
        };
        let cpu_before = pid.map(cpu_us);
        let load = match self {
            Self::Raw(socket) => raw_load(socket, clients),
            Self::Tonic(socket, _) | Self::Tokend(socket, _, false) => {
                grpc_load(socket, clients, RUN)
            }
            Self::Tokend(socket, _, true) => {
                grpc_load_of(socket, clients, RUN, |c| format!("oauth-{:04}", c % OAUTH))
            }
        };
        let calls = load.lat.len().max(1) as f64;
        let cpu = match (pid, cpu_before) {
            (Some(pid), Some(before)) => {
                let after = cpu_us(pid);
                Cpu {
                    all: (after.all - before.all) / calls,
                    kernel: (after.kernel - before.kernel) / calls,
                }
            }
            _ => Cpu {
                all: f64::NAN,
                kernel: f64::NAN,
            },
        };
        (load, cpu)
    }
}

/// CPU time in µs: user and system, and system alone.
#[derive(Clone, Copy)]
struct Cpu {
    all: f64,
    kernel: f64,
}

/// A process's CPU time so far over all its threads (dead ones included);
/// clock-tick resolution (10 ms), so a round of a second is good to about
/// 1 %.
fn cpu_us(pid: u32) -> Cpu {
    static TICK_US: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    let tick = *TICK_US.get_or_init(|| {
        let out = Command::new("getconf").arg("CLK_TCK").output();
        let hz: f64 = out
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0);
        1e6 / hz
    });
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // After the command's closing parenthesis, utime and stime are the
    // 12th and 13th fields (the line's 14th and 15th).
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
    let (user, system) = ticks(11).zip(ticks(12)).unwrap_or((f64::NAN, f64::NAN));
    Cpu {
        all: (user + system) * tick,
        kernel: system * tick,
    }
}

/// Starts `bin` with 1 000 Glean and [`OAUTH`] OAuth credentials, their
/// tokens cached.
fn start_daemon(bin: &Path, dir: &Path) -> (std::process::Child, PathBuf) {
    std::fs::create_dir_all(dir).expect("daemon dir");
    // Quiet about the OAuth credentials' missing login until it is stored.
    let quiet = [("TOKEND_LOG", "warn,tokend::refresh::publish=off")];
    let started = start_bin(bin, dir, 1_000, "", &quiet, &oauth_credentials(dir, OAUTH));
    cache_oauth_tokens(&started.1, OAUTH);
    started
}

fn main() {
    serve_tonic_baseline_if_asked();
    let calls_only = std::env::args().any(|a| a == "calls");
    let dir = tempfile::tempdir().expect("temp dir");
    println!(
        "machine: {} cores; clients, daemon and baselines share them",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    // Memory at idle by credential count.
    let mut idle = Vec::new();
    for n in [10, 1_000, 10_000] {
        if calls_only {
            break;
        }
        let (mut daemon, _socket) = start(dir.path(), n);
        std::thread::sleep(Duration::from_millis(500));
        idle.push((n, rss_kib(daemon.id())));
        let _ = daemon.kill();
        let _ = daemon.wait();
    }

    let (mut daemon, socket) = start_daemon(
        Path::new(env!("CARGO_BIN_EXE_tokend")),
        &dir.path().join("this"),
    );
    let before = std::env::var_os("TOKEND_BENCH_BEFORE")
        .map(|bin| start_daemon(Path::new(&bin), &dir.path().join("before")));
    let (mut tonic, tonic_socket) = start_tonic_baseline(dir.path());
    let mut targets = vec![
        (
            "raw baseline (echo framing)",
            Target::Raw(raw_server(dir.path())),
        ),
        (
            "default tonic server",
            Target::Tonic(tonic_socket, tonic.id()),
        ),
        (
            "tokend GetHeaders, Glean",
            Target::Tokend(socket.clone(), daemon.id(), false),
        ),
        (
            "tokend GetHeaders, OAuth",
            Target::Tokend(socket.clone(), daemon.id(), true),
        ),
    ];
    if let Some((child, before)) = &before {
        let pid = child.id();
        targets.push(("before: Glean", Target::Tokend(before.clone(), pid, false)));
        targets.push(("before: OAuth", Target::Tokend(before.clone(), pid, true)));
    }
    println!(
        "\nrequest/response over a Unix socket, {ROUNDS} interleaved rounds of {}s per row",
        RUN.as_secs()
    );
    println!(
        "{:>28}  {:>8}  {:>10}  {:>9}  {:>9}  {:>9}",
        "", "clients", "calls/s", "p50 µs", "p99 µs", "p99.9 µs"
    );
    let mut results = Vec::new();
    for clients in CLIENTS {
        let mut rounds: Vec<Vec<(Load, Cpu)>> = targets.iter().map(|_| Vec::new()).collect();
        for round in 0..ROUNDS {
            // Each round starts one target later, so none is always first.
            for i in 0..targets.len() {
                let t = (i + round) % targets.len();
                rounds[t].push(targets[t].1.load(clients));
            }
        }
        let merged: Vec<Rows> = rounds
            .into_iter()
            .map(|r| {
                let figures = r.iter().map(|(l, cpu)| Figures::of(l, *cpu)).collect();
                (
                    Load::merge(r.into_iter().map(|(l, _)| l).collect()),
                    figures,
                )
            })
            .collect();
        for ((what, _), (load, _)) in targets.iter().zip(&merged) {
            print_row(what, clients, load);
        }
        for ((what, target), (_, figures)) in targets.iter().zip(&merged) {
            if !matches!(target, Target::Raw(_)) {
                let median = |f: fn(&Figures) -> f64| {
                    let mut v: Vec<f64> = figures.iter().map(f).collect();
                    v.sort_by(f64::total_cmp);
                    pct(&v, 0.5)
                };
                println!(
                    "{what:>28}  {clients:>8}  server CPU {:.1} µs per call, {:.1} of it in the \
                     kernel (median rounds)",
                    median(|f| f.cpu),
                    median(|f| f.kernel)
                );
            }
        }
        results.push((clients, merged));
    }
    println!("\nratios round by round: median [lowest–highest] of {ROUNDS} rounds");
    println!(
        "{:>7}  {:>28}  {:>22}  {:>22}  {:>22}  {:>22}",
        "clients", "", "p50", "p99", "calls/s", "server CPU per call"
    );
    // Indexes into `targets`.
    let mut pairs = vec![
        ("tokend Glean / tonic", 2, 1),
        ("tokend OAuth / tonic", 3, 1),
        ("tokend OAuth / tokend Glean", 3, 2),
        ("tokend Glean / raw", 2, 0),
    ];
    if before.is_some() {
        pairs.push(("before Glean / tonic", 4, 1));
        pairs.push(("tokend Glean / before", 2, 4));
        pairs.push(("tokend OAuth / before", 3, 5));
    }
    for (clients, rows) in &results {
        for &(what, subject, base) in &pairs {
            let (subject, base) = (&rows[subject], &rows[base]);
            println!(
                "{clients:>7}  {what:>28}  {:>22}  {:>22}  {:>22}  {:>22}",
                ratio(subject, base, |r| r.p50),
                ratio(subject, base, |r| r.p99),
                ratio(subject, base, |r| r.rate),
                ratio(subject, base, |r| r.cpu),
            );
        }
    }
    if let Some((mut before, _)) = before {
        let _ = before.kill();
        let _ = before.wait();
    }
    let _ = tonic.kill();
    let _ = tonic.wait();
    if calls_only {
        let _ = daemon.kill();
        let _ = daemon.wait();
        return;
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

/// A round's p50, p99, calls/s and the server's CPU µs per call (all,
/// and in the kernel).
#[derive(Clone, Copy)]
struct Figures {
    p50: f64,
    p99: f64,
    rate: f64,
    cpu: f64,
    kernel: f64,
}

impl Figures {
    fn of(l: &Load, cpu: Cpu) -> Self {
        Self {
            p50: pct(&l.lat, 0.5),
            p99: pct(&l.lat, 0.99),
            rate: l.rate,
            cpu: cpu.all,
            kernel: cpu.kernel,
        }
    }
}

/// A target's rounds merged, and each round's figures.
type Rows = (Load, Vec<Figures>);

/// `subject / base` for one figure, round by round (each against the same
/// round's base): the median round, and the lowest and highest. A round
/// another process disturbed moves one end of the range, not the median.
fn ratio(subject: &Rows, base: &Rows, figure: fn(&Figures) -> f64) -> String {
    let mut per_round: Vec<f64> = subject
        .1
        .iter()
        .zip(&base.1)
        .map(|(s, b)| figure(s) / figure(b))
        .collect();
    per_round.sort_by(f64::total_cmp);
    let (lo, hi) = (per_round[0], per_round[per_round.len() - 1]);
    format!("{:.2}x [{lo:.2}–{hi:.2}]", pct(&per_round, 0.5))
}

/// A minimal Unix-socket server doing what tokend's transport must at
/// least do: read a length-prefixed request (the size of a GetHeaders call)
/// and write a length-prefixed response (the size of its answer). One thread
/// per connection, blocking I/O: the floor for the socket round trip.
fn raw_server(dir: &Path) -> PathBuf {
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
