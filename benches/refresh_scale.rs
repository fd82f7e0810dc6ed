//! Refresh scheduling at scale: 10 000 `oauth_client_credentials`
//! credentials against one local token endpoint (one issuer) that takes
//! `LATENCY` to answer, with a short TTL. Reports the startup wave at the
//! issuer (requests per 250 ms from the first to the last first token: peak
//! against mean, and the most requests in flight at once, which the
//! per-issuer gate bounds), the share of renewals on time, the peak renewals
//! per second after startup (jitter must spread them), the daemon's CPU
//! seconds per 1 000 requests and its RSS; then a restart, after which
//! credentials whose stored token is still good must not ask again.
//!
//! Run: `cargo bench --bench refresh_scale`. Prints numbers; asserts nothing.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

const CREDENTIALS: usize = 10_000;
const TTL: u64 = 30;
const MIN_VALID: u64 = 5;
const RUN: Duration = Duration::from_secs(100);
/// How long the issuer takes per answer: a real identity provider's order.
const LATENCY: Duration = Duration::from_millis(5);

/// Requests in flight at the issuer now, and the most seen at once.
static IN_FLIGHT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
static MAX_IN_FLIGHT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Token requests seen by the endpoint: (credential index, when).
type Seen = Arc<Mutex<Vec<(usize, Instant)>>>;

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let seen: Seen = Arc::default();
    let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
    let port = listener.local_addr().unwrap().port();
    rt.spawn(serve(listener, Arc::clone(&seen)));

    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("store.key");
    std::fs::write(&key, [7u8; 32]).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut config = format!(
        "[daemon]\nsocket = \"{}\"\n\n[store]\npath = \"{}\"\nkey_file = \"{}\"\n",
        dir.path().join("tokend.sock").display(),
        dir.path().join("store.redb").display(),
        key.display()
    );
    for i in 0..CREDENTIALS {
        config.push_str(&format!(
            "\n[[credential]]\nname = \"cc-{i}\"\nkind = \"oauth_client_credentials\"\n\
             token_endpoint = \"http://127.0.0.1:{port}/token\"\nclient_id = \"cc-{i}\"\n\
             client_secret = {{ env = \"BENCH_SECRET\" }}\nauth_method = \"client_secret_post\"\n\
             min_valid = \"{MIN_VALID}s\"\n"
        ));
    }
    let config_path = dir.path().join("tokend.toml");
    std::fs::write(&config_path, config).unwrap();

    let started = Instant::now();
    let mut daemon = spawn(&config_path);
    let pid = daemon.id();
    let mut peak_rss = 0;
    while started.elapsed() < RUN {
        std::thread::sleep(Duration::from_secs(1));
        peak_rss = peak_rss.max(rss_kib(pid));
    }
    let cpu = cpu_seconds(pid);
    // A clean stop, as systemd would, then a start on the same store.
    let _ = Command::new("kill").arg(pid.to_string()).status();
    let _ = daemon.wait();
    let snapshot = seen.lock().unwrap().clone();
    report(&snapshot, started, cpu, peak_rss, dir.path());

    let before = seen.lock().unwrap().len();
    let restarted = Instant::now();
    let mut daemon = spawn(&config_path);
    std::thread::sleep(Duration::from_secs(2));
    let after: Vec<Instant> = seen.lock().unwrap()[before..].iter().map(|s| s.1).collect();
    let _ = daemon.kill();
    let _ = daemon.wait();
    // Renewals falling due in these 2 s happen either way: with a 30 s TTL
    // renewed at 1/2 to 2/3 of it, about 2/10 of the credentials per 2 s.
    println!(
        "  restart: {} token requests in the first 2 s after exec (without the stored tokens it would be {CREDENTIALS}; renewals due anyway ≈ {:.0})",
        after
            .iter()
            .filter(|t| **t - restarted < Duration::from_secs(2))
            .count(),
        CREDENTIALS as f64 * 2.0 / 10.0
    );
}

fn spawn(config: &Path) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_tokend"))
        .arg("--config")
        .arg(config)
        .env("BENCH_SECRET", "bench-secret")
        .env("TOKEND_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start tokend")
}

fn report(seen: &[(usize, Instant)], started: Instant, cpu: f64, peak_rss: u64, _dir: &Path) {
    let mut by_cred: HashMap<usize, Vec<Instant>> = HashMap::new();
    let mut per_second: HashMap<u64, usize> = HashMap::new();
    for &(i, at) in seen {
        by_cred.entry(i).or_default().push(at);
        *per_second.entry((at - started).as_secs()).or_default() += 1;
    }
    // A renewal is on time when it came before the previous token had less
    // than min_valid left (issued at request time + TTL).
    let deadline = Duration::from_secs(TTL - MIN_VALID);
    let (mut renewals, mut on_time) = (0usize, 0usize);
    for times in by_cred.values() {
        for pair in times.windows(2) {
            renewals += 1;
            if pair[1] - pair[0] <= deadline {
                on_time += 1;
            }
        }
    }
    // Startup: every credential's first token, requested at once.
    let firsts: Vec<Duration> = by_cred.values().map(|t| t[0] - started).collect();
    let first = firsts.iter().min().copied().unwrap_or_default();
    let all = firsts.iter().max().copied().unwrap_or_default();
    let settled = all.as_secs() + 2;
    let peak_after_start = per_second
        .iter()
        .filter(|(s, _)| **s >= settled)
        .map(|(_, n)| *n)
        .max()
        .unwrap_or(0);
    println!(
        "refresh scheduling: {CREDENTIALS} oauth_client_credentials credentials, TTL {TTL}s, min_valid {MIN_VALID}s, {}s run",
        RUN.as_secs()
    );
    println!("  token requests:            {}", seen.len());
    println!("  credentials served:        {}", by_cred.len());
    println!(
        "  startup: first token request {:.1}s after exec, all {} first tokens by {:.1}s",
        first.as_secs_f64(),
        firsts.len(),
        all.as_secs_f64()
    );
    // The startup wave at the issuer, in 250 ms buckets.
    let (from, to) = (first, all.max(first + Duration::from_millis(250)));
    let buckets = ((to - from).as_millis() / 250 + 1) as usize;
    let mut wave = vec![0usize; buckets];
    for f in &firsts {
        wave[((*f - from).as_millis() / 250) as usize] += 1;
    }
    let mean = firsts.len() as f64 / buckets as f64;
    let peak = wave.iter().copied().max().unwrap_or(0);
    println!(
        "  startup wave: {} buckets of 250 ms, mean {mean:.0}, peak {peak} ({:.2}× the mean); at most {} requests in flight at the issuer",
        buckets,
        peak as f64 / mean.max(1.0),
        MAX_IN_FLIGHT.load(std::sync::atomic::Ordering::Relaxed)
    );
    let step = buckets.div_ceil(12);
    let histogram: Vec<String> = wave
        .chunks(step)
        .map(|c| (c.iter().sum::<usize>() / c.len()).to_string())
        .collect();
    println!(
        "  startup histogram (requests per 250 ms, {} ms per column): {}",
        step * 250,
        histogram.join(" ")
    );
    println!("  renewals:                  {renewals}");
    println!(
        "  renewed on time:           {on_time} ({:.2}%)",
        100.0 * on_time as f64 / renewals.max(1) as f64
    );
    println!(
        "  peak renewals/s after start: {peak_after_start} (uniform over the jitter window would be {:.0})",
        CREDENTIALS as f64 / (TTL as f64 / 6.0)
    );
    println!(
        "  daemon CPU: {cpu:.1} s total, {:.2} s per 1 000 token requests",
        cpu / seen.len().max(1) as f64 * 1000.0
    );
    println!("  daemon peak RSS: {} MiB", peak_rss / 1024);
}

/// A minimal HTTP/1.1 token endpoint: answers every POST with a fresh token
/// living `TTL` seconds; records which credential asked (its client_id).
async fn serve(listener: TcpListener, seen: Seen) {
    let counter = Arc::new(std::sync::atomic::AtomicU64::new(0));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let seen = Arc::clone(&seen);
        let counter = Arc::clone(&counter);
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut read = BufReader::new(read);
            loop {
                let mut len = 0usize;
                let mut line = String::new();
                loop {
                    line.clear();
                    if read.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    if line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0u8; len];
                if read.read_exact(&mut body).await.is_err() {
                    return;
                }
                let body = String::from_utf8_lossy(&body);
                let index = body
                    .split('&')
                    .find_map(|kv| kv.strip_prefix("client_id=cc-"))
                    .and_then(|i| i.parse().ok())
                    .unwrap_or(usize::MAX);
                seen.lock().unwrap().push((index, Instant::now()));
                let now = IN_FLIGHT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                MAX_IN_FLIGHT.fetch_max(now, std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(LATENCY).await;
                IN_FLIGHT.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let json = format!(
                    "{{\"access_token\":\"tok-{n}\",\"token_type\":\"Bearer\",\"expires_in\":{TTL}}}"
                );
                let response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{json}",
                    json.len()
                );
                if write.write_all(response.as_bytes()).await.is_err() {
                    return;
                }
            }
        });
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: f64 = fields.get(11).and_then(|u| u.parse().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|s| s.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}
