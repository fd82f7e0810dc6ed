//! GetHeaders round trips over the real socket against the real daemon:
//! p50/p99 latency and calls/s with 1 and 32 concurrent clients, and the
//! daemon's resident memory at idle with 1 000 credentials configured.
//!
//! Run: `cargo bench --bench get_headers` (needs root only if the tests do;
//! here it runs as whoever you are). Prints a table; nothing is asserted.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokend::proto::GetHeadersRequest;
use tokend::proto::token_broker_client::TokenBrokerClient;

const CREDENTIALS: usize = 1000;
const RUN: Duration = Duration::from_secs(5);

fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "glean_bench_token\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let uid = nix::unistd::geteuid().as_raw();
    let mut config = format!(
        "[daemon]\nsocket = \"{}\"\n",
        dir.path().join("tokend.sock").display()
    );
    for i in 0..CREDENTIALS {
        config.push_str(&format!(
            "\n[[credential]]\nname = \"cred-{i:04}\"\nkind = \"glean_token\"\n\
             permission = \"user\"\nscopes = [\"SEARCH\", \"CHAT\"]\n\
             expires_at = \"2099-01-01T00:00:00Z\"\nsecret = {{ file = \"secret\" }}\n\
             allow = {{ uids = [{uid}] }}\n"
        ));
    }
    let config_path = dir.path().join("tokend.toml");
    std::fs::write(&config_path, config).unwrap();
    let socket = dir.path().join("tokend.sock");
    let mut daemon = start(&config_path, &socket);
    let pid = daemon.id();

    std::thread::sleep(Duration::from_millis(500));
    let idle_rss = rss_kib(pid);

    println!("tokend GetHeaders over a Unix socket ({CREDENTIALS} credentials configured)");
    println!(
        "{:>8}  {:>10}  {:>10}  {:>10}  {:>10}",
        "clients", "calls", "calls/s", "p50 µs", "p99 µs"
    );
    for clients in [1, 32] {
        let (calls, lat) = load(&socket, clients);
        println!(
            "{clients:>8}  {calls:>10}  {:>10.0}  {:>10.1}  {:>10.1}",
            calls as f64 / RUN.as_secs_f64(),
            percentile(&lat, 0.50),
            percentile(&lat, 0.99)
        );
    }
    println!("daemon RSS at idle with {CREDENTIALS} credentials: {idle_rss} KiB");
    println!("daemon RSS after the runs above: {} KiB", rss_kib(pid));
    let _ = daemon.kill();
    let _ = daemon.wait();
}

fn start(config: &Path, socket: &Path) -> Child {
    let child = Command::new(env!("CARGO_BIN_EXE_tokend"))
        .arg("--config")
        .arg(config)
        .env("TOKEND_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start tokend");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::os::unix::net::UnixStream::connect(socket).is_err() {
        assert!(Instant::now() < deadline, "tokend did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
    child
}

/// `clients` connections, each calling in a loop for [`RUN`]; returns the
/// number of calls and every call's latency in µs, sorted.
fn load(socket: &Path, clients: usize) -> (usize, Vec<f64>) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(clients.min(2))
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for c in 0..clients {
            let mut client: TokenBrokerClient<_> =
                tokend::client::connect(socket).await.expect("connect");
            tasks.push(tokio::spawn(async move {
                let name = format!("cred-{:04}", c % CREDENTIALS);
                let mut lat = Vec::with_capacity(200_000);
                let end = Instant::now() + RUN;
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
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        all.sort_by(f64::total_cmp);
        (all.len(), all)
    })
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}
