//! Refresh scheduling at scale: 10 000 `oauth_client_credentials`
//! credentials against a fast local token endpoint with a short TTL.
//! Reports the share of refreshes that happened on time, the peak refreshes
//! per second (jitter must spread them), the daemon's CPU seconds per 1 000
//! refreshes, and its RSS.
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
    let mut daemon = Command::new(env!("CARGO_BIN_EXE_tokend"))
        .arg("--config")
        .arg(&config_path)
        .env("BENCH_SECRET", "bench-secret")
        .env("TOKEND_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start tokend");
    let pid = daemon.id();
    let mut peak_rss = 0;
    while started.elapsed() < RUN {
        std::thread::sleep(Duration::from_secs(1));
        peak_rss = peak_rss.max(rss_kib(pid));
    }
    let cpu = cpu_seconds(pid);
    let _ = daemon.kill();
    let _ = daemon.wait();

    let seen = seen.lock().unwrap().clone();
    report(&seen, started, cpu, peak_rss, dir.path());
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
