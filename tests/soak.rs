//! Soak: 50 OAuth credentials with short token lifetimes against the real
//! authorization server behind the fault proxy cycling through its modes,
//! 32 concurrent clients calling `GetHeaders`, and random SIGKILL restarts.
//! Prints calls made, failures by code, tokens served below `min_valid`,
//! refresh tokens lost, and peak RSS.
//!
//! Not part of `cargo test` (its target has `test = false`). Run:
//! `cargo test --release --test soak -- 600` (the argument is seconds;
//! default 60). As root, like the other tests.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::fault_proxy::{FaultProxy, Mode};
use common::oidc::{BASIC_CLIENT, OidcServer, POST_CLIENT};
use common::{Daemon, Workdir};
use nix::sys::signal::Signal;
use secrecy::ExposeSecret;
use tokend::oauth::AuthMethod;
use tokend::proto::token_broker_client::TokenBrokerClient;
use tokend::proto::{GetHeadersRequest, ListCredentialsRequest, PutRefreshTokenRequest};

const REFRESH_CREDENTIALS: usize = 10;
const CC_CREDENTIALS: usize = 40;
const CLIENTS: usize = 32;
const TTL: u64 = 6;
const MIN_VALID: f64 = 2.0;

#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    below_min_valid: AtomicU64,
    failed: Mutex<BTreeMap<String, u64>>,
}

fn main() {
    let seconds: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(60);
    common::require_root();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(soak(Duration::from_secs(seconds)));
}

async fn soak(duration: Duration) {
    let work = Workdir::new();
    common::write_secret(&work.path().join("post-secret"), POST_CLIENT.1);
    common::write_secret(&work.path().join("basic-secret"), BASIC_CLIENT.1);
    let server = OidcServer::start(TTL, &work.path().join("oidc.log"));
    let proxy = Arc::new(FaultProxy::start(server.addr()));
    let endpoint = format!("{}/token", proxy.url());
    let mut text = work.store_section();
    for i in 0..REFRESH_CREDENTIALS {
        text.push_str(&format!(
            "\n[[credential]]\nname = \"rt-{i}\"\nkind = \"oauth_refresh\"\ntoken_endpoint = \"{endpoint}\"\n\
             client_id = \"{}\"\nclient_secret = {{ file = \"post-secret\" }}\nauth_method = \"client_secret_post\"\n\
             min_valid = \"{MIN_VALID}s\"\nallow = {{ uids = [0] }}\n",
            POST_CLIENT.0
        ));
    }
    for i in 0..CC_CREDENTIALS {
        text.push_str(&format!(
            "\n[[credential]]\nname = \"cc-{i}\"\nkind = \"oauth_client_credentials\"\n\
             token_endpoint = \"{endpoint}\"\nclient_id = \"{}\"\nclient_secret = {{ file = \"basic-secret\" }}\n\
             auth_method = \"client_secret_basic\"\nmin_valid = \"{MIN_VALID}s\"\nallow = {{ uids = [0] }}\n",
            BASIC_CLIENT.0
        ));
    }
    work.write_config("http_timeout = \"1s\"\nmax_backoff = \"3s\"", &text);
    let daemon = Arc::new(Mutex::new(Daemon::start(&work)));
    {
        let channel = tokend_client::channel(&work.socket())
            .await
            .expect("connect");
        let mut admin = tokend::proto::admin_client::AdminClient::new(channel);
        for i in 0..REFRESH_CREDENTIALS {
            let tokens = server
                .login(POST_CLIENT, AuthMethod::ClientSecretPost)
                .await;
            admin
                .put_refresh_token(PutRefreshTokenRequest {
                    credential: format!("rt-{i}"),
                    refresh_token: tokens.refresh_token.unwrap().expose_secret().to_owned(),
                    ..Default::default()
                })
                .await
                .expect("PutRefreshToken");
        }
    }
    println!(
        "soak: {REFRESH_CREDENTIALS} oauth_refresh + {CC_CREDENTIALS} oauth_client_credentials credentials, TTL {TTL}s, min_valid {MIN_VALID}s, {CLIENTS} clients, {}s",
        duration.as_secs()
    );

    let tally = Arc::new(Tally::default());
    let done = Arc::new(AtomicBool::new(false));
    let socket = work.socket();
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let (tally, done, socket) = (Arc::clone(&tally), Arc::clone(&done), socket.clone());
        tasks.push(tokio::spawn(async move {
            let mut client = None;
            let mut n = c;
            while !done.load(Ordering::Relaxed) {
                n = n.wrapping_mul(31).wrapping_add(7);
                let name = if n % 5 == 0 {
                    format!("rt-{}", n % REFRESH_CREDENTIALS)
                } else {
                    format!("cc-{}", n % CC_CREDENTIALS)
                };
                if client.is_none() {
                    match tokend_client::channel(&socket)
                        .await
                        .map(TokenBrokerClient::new)
                    {
                        Ok(c) => client = Some(c),
                        Err(_) => {
                            count(&tally, "unreachable (restarting)");
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            continue;
                        }
                    }
                }
                let mut req = tonic::Request::new(GetHeadersRequest {
                    credential: name,
                    ..Default::default()
                });
                req.set_timeout(Duration::from_secs(3));
                match client.as_mut().unwrap().get_headers(req).await {
                    Ok(r) => {
                        let r = r.into_inner();
                        let exp = r.expires_at.unwrap();
                        let exp = exp.seconds as f64 + f64::from(exp.nanos) / 1e9;
                        let now = jiff::Timestamp::now();
                        let now = now.as_second() as f64 + f64::from(now.subsec_nanosecond()) / 1e9;
                        // tokend checks at answer time; allow 100 ms of transit.
                        if exp - now < MIN_VALID - 0.1 {
                            tally.below_min_valid.fetch_add(1, Ordering::Relaxed);
                        }
                        tally.ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(s)
                        if s.code() == tonic::Code::Unavailable
                            && s.message().contains("transport") =>
                    {
                        count(&tally, "unreachable (restarting)");
                        client = None;
                    }
                    Err(s) => {
                        count(&tally, &format!("{:?}", s.code()));
                        if s.code() == tonic::Code::Unknown || s.code() == tonic::Code::Cancelled {
                            client = None;
                        }
                    }
                }
            }
        }));
    }

    // Faults: a new proxy mode every 5 s, half the time passing through.
    let modes = [
        Mode::Pass,
        Mode::Status(503),
        Mode::Pass,
        Mode::TooManyRequests {
            retry_after_secs: 1,
        },
        Mode::Pass,
        Mode::Reset,
        Mode::Pass,
        Mode::BlackHole,
        Mode::Pass,
        Mode::Delay(Duration::from_millis(700)),
    ];
    let started = Instant::now();
    let mut next_mode = started;
    let mut next_kill = started + Duration::from_secs(fastrand::u64(10..25));
    let mut mode_index = 0;
    let (mut restarts, mut peak_rss) = (0, 0);
    while started.elapsed() < duration {
        if Instant::now() >= next_mode {
            proxy.set_mode_for("/token", modes[mode_index % modes.len()].clone());
            mode_index += 1;
            next_mode += Duration::from_secs(5);
        }
        if Instant::now() >= next_kill {
            let mut d = daemon.lock().unwrap();
            d.signal(Signal::SIGKILL);
            d.wait();
            *d = Daemon::start(&work);
            restarts += 1;
            next_kill = Instant::now() + Duration::from_secs(fastrand::u64(10..25));
        }
        let pid = daemon.lock().unwrap().pid();
        peak_rss = peak_rss.max(rss_kib(pid));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    done.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    proxy.clear_modes_for();
    proxy.set_mode(Mode::Pass);

    // Refresh tokens lost: oauth_refresh credentials that need a login now.
    let socket = work.socket();
    let mut client = TokenBrokerClient::new(tokend_client::channel(&socket).await.unwrap());
    let list = client
        .list_credentials(ListCredentialsRequest {})
        .await
        .unwrap()
        .into_inner();
    let lost: Vec<_> = list
        .credentials
        .iter()
        .filter(|c| c.kind == "oauth_refresh" && c.last_error.contains("login"))
        .collect();
    let in_window = lost
        .iter()
        .filter(|c| c.last_error.contains("lost in a crash"))
        .count();

    println!(
        "duration:                 {:.0}s",
        started.elapsed().as_secs_f64()
    );
    println!("daemon restarts (SIGKILL): {restarts}");
    println!("fault modes cycled:       {mode_index}");
    println!(
        "calls answered:           {}",
        tally.ok.load(Ordering::Relaxed)
    );
    println!("calls failed, by code:");
    for (code, n) in tally.failed.lock().unwrap().iter() {
        println!("  {code:<28} {n}");
    }
    println!(
        "tokens served below min_valid: {} (must be 0)",
        tally.below_min_valid.load(Ordering::Relaxed)
    );
    println!(
        "refresh tokens lost:      {} (must be 0); of them reported as lost in the crash window: {in_window}",
        lost.len()
    );
    for c in &lost {
        println!("  {}: {}", c.name, c.last_error);
    }
    println!("peak RSS:                 {} KiB", peak_rss);
}

fn count(t: &Tally, code: &str) {
    *t.failed.lock().unwrap().entry(code.to_owned()).or_default() += 1;
}

fn rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}
