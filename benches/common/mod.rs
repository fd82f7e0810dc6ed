//! What the benchmarks share: the real daemon on a temp socket and a tonic
//! `GetHeaders` load against it.

#![allow(dead_code)] // each benchmark uses a different subset

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokend::proto::GetHeadersRequest;
use tokend::proto::token_broker_client::TokenBrokerClient;

/// One load run's outcome.
pub struct Load {
    /// Calls per second.
    pub rate: f64,
    /// Latencies in µs, sorted.
    pub lat: Vec<f64>,
}

impl Load {
    /// Every call's latency (µs, any order) over `run`.
    pub fn of(mut lat: Vec<f64>, run: Duration) -> Self {
        lat.sort_by(f64::total_cmp);
        Self {
            rate: lat.len() as f64 / run.as_secs_f64(),
            lat,
        }
    }

    /// Rounds of equal length as one load: the mean rate, all latencies.
    pub fn merge(rounds: Vec<Self>) -> Self {
        let n = rounds.len() as f64;
        let rate = rounds.iter().map(|l| l.rate).sum::<f64>() / n;
        let mut all: Vec<f64> = rounds.into_iter().flat_map(|l| l.lat).collect();
        all.sort_by(f64::total_cmp);
        Self { rate, lat: all }
    }
}

/// One table row: rate and p50/p99/p99.9 latency.
pub fn print_row(what: &str, clients: usize, l: &Load) {
    println!(
        "{what:>28}  {clients:>8}  {:>10.0}  {:>9.1}  {:>9.1}  {:>9.1}",
        l.rate,
        pct(&l.lat, 0.5),
        pct(&l.lat, 0.99),
        pct(&l.lat, 0.999)
    );
}

/// Starts `tokend` with `n` Glean credentials on a fresh socket.
pub fn start(dir: &Path, n: usize) -> (Child, PathBuf) {
    start_env(dir, n, "", &[])
}

/// [`start`] with `tag` in the socket's and config's names and extra
/// environment for the daemon.
pub fn start_env(dir: &Path, n: usize, tag: &str, env: &[(&str, &str)]) -> (Child, PathBuf) {
    start_with(dir, n, tag, env, "")
}

/// [`start_env`] with `extra` (more TOML tables, e.g. `[[proxy]]`) at the
/// end of the config.
pub fn start_with(
    dir: &Path,
    n: usize,
    tag: &str,
    env: &[(&str, &str)],
    extra: &str,
) -> (Child, PathBuf) {
    let secret = dir.join("secret");
    std::fs::write(&secret, "glean_bench_token\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let uid = nix::unistd::geteuid().as_raw();
    let socket = dir.join(format!("tokend-{n}{tag}.sock"));
    let mut config = format!("[daemon]\nsocket = \"{}\"\n", socket.display());
    for i in 0..n {
        config.push_str(&format!(
            "\n[[credential]]\nname = \"cred-{i:04}\"\nkind = \"glean_token\"\n\
             permission = \"user\"\nscopes = [\"SEARCH\", \"CHAT\"]\n\
             expires_at = \"2099-01-01T00:00:00Z\"\nsecret = {{ file = \"secret\" }}\n\
             allow = {{ uids = [{uid}] }}\n"
        ));
    }
    config.push_str(extra);
    let config_path = dir.join(format!("tokend-{n}{tag}.toml"));
    std::fs::write(&config_path, config).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_tokend"))
        .arg("--config")
        .arg(&config_path)
        .env("TOKEND_LOG", "warn")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start tokend");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        assert!(Instant::now() < deadline, "tokend did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
    (child, socket)
}

/// `clients` tonic connections calling `GetHeaders` in a loop for `run`.
pub fn grpc_load(socket: &Path, clients: usize, run: Duration) -> Load {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(clients.min(2))
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for c in 0..clients {
            let mut client: TokenBrokerClient<_> =
                TokenBrokerClient::new(tokend_client::channel(socket).await.expect("connect"));
            tasks.push(tokio::spawn(async move {
                let name = format!("cred-{:04}", c % 1000);
                let mut lat = Vec::with_capacity(100_000);
                let end = Instant::now() + run;
                while Instant::now() < end {
                    let t = Instant::now();
                    let r = client
                        .get_headers(GetHeadersRequest {
                            credential: name.clone(),
                            required_scopes: vec!["SEARCH".into()],
                            ..Default::default()
                        })
                        .await;
                    lat.push(t.elapsed().as_secs_f64() * 1e6);
                    r.expect("GetHeaders");
                }
                lat
            }));
        }
        let mut lat = Vec::new();
        for t in tasks {
            lat.extend(t.await.unwrap());
        }
        Load::of(lat, run)
    })
}

/// The `p` quantile of sorted values.
pub fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

/// A process's resident memory.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Lets this process, and the daemons it starts, hold `needed` open files:
/// the soft limit raised to the hard one.
pub fn raise_fd_limit(needed: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid, owned struct.
    #[allow(unsafe_code)]
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = lim.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
    }
    assert!(
        lim.rlim_cur >= needed,
        "this bench needs {needed} open files; raise the hard limit (`ulimit -Hn {needed}` as root)"
    );
}
