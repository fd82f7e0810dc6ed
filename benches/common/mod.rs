//! What the benchmarks share: the real daemon on a temp socket, a tonic
//! `GetHeaders` load against it, and a default tonic server to compare with.

#![allow(dead_code)] // each benchmark uses a different subset

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokend::proto::admin_client::AdminClient;
use tokend::proto::token_broker_client::TokenBrokerClient;
use tokend::proto::token_broker_server::{TokenBroker, TokenBrokerServer};
use tokend::proto::{
    GetHeadersRequest, GetHeadersResponse, Header, InvalidateRequest, InvalidateResponse,
    ListAlertsRequest, ListAlertsResponse, ListCredentialsRequest, ListCredentialsResponse,
    PutRefreshTokenRequest, WhoAmIRequest, WhoAmIResponse,
};
use tonic::{Request, Response, Status};

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
    start_bin(
        Path::new(env!("CARGO_BIN_EXE_tokend")),
        dir,
        n,
        tag,
        env,
        extra,
    )
}

/// [`start_with`] for another build of the daemon, `bin` (an older one, to
/// compare with).
pub fn start_bin(
    bin: &Path,
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
    let child = Command::new(bin)
        .arg("--config")
        .arg(&config_path)
        .env("TOKEND_LOG", "warn")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start tokend");
    wait_for_socket(&socket, "tokend");
    (child, socket)
}

/// Waits (at most 30 s) until `what` accepts connections on `socket`.
fn wait_for_socket(socket: &Path, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::os::unix::net::UnixStream::connect(socket).is_err() {
        assert!(Instant::now() < deadline, "{what} did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `clients` tonic connections calling `GetHeaders` in a loop for `run`,
/// client `c` for `cred-{c % 1000}` (the credentials [`start`] configures).
pub fn grpc_load(socket: &Path, clients: usize, run: Duration) -> Load {
    grpc_load_of(socket, clients, run, |c| format!("cred-{:04}", c % 1000))
}

/// [`grpc_load`] with client `c` asking for the credential `name(c)`.
pub fn grpc_load_of(
    socket: &Path,
    clients: usize,
    run: Duration,
    name: impl Fn(usize) -> String,
) -> Load {
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
            let name = name(c);
            tasks.push(tokio::spawn(async move {
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

/// The environment variable that makes a benchmark's child process serve
/// [`start_tonic_baseline`]'s server instead of benchmarking.
const TONIC_BASELINE: &str = "TOKEND_BENCH_TONIC_BASELINE";

/// The baseline tokend's transport is measured against: a tonic server
/// with `Server::builder()`'s defaults on the default (multi-thread)
/// runtime, serving the `TokenBroker` service from the same proto on a Unix
/// socket, whose `GetHeaders` answers a fixed response of a Glean token's
/// size and does nothing else. It is this benchmark binary re-executed, so
/// it runs in a process of its own as tokend does; `main` must call
/// [`serve_tonic_baseline_if_asked`] first.
pub fn start_tonic_baseline(dir: &Path) -> (Child, PathBuf) {
    let socket = dir.join("tonic-baseline.sock");
    let child = Command::new(std::env::current_exe().expect("the bench's own path"))
        .env(TONIC_BASELINE, &socket)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the tonic baseline");
    wait_for_socket(&socket, "the tonic baseline");
    (child, socket)
}

/// In the child [`start_tonic_baseline`] starts: serves the baseline until
/// killed and never returns. Elsewhere, returns at once.
pub fn serve_tonic_baseline_if_asked() {
    let Some(socket) = std::env::var_os(TONIC_BASELINE) else {
        return;
    };
    // What `#[tokio::main]` builds: a worker per core.
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let served = rt.block_on(async {
        let listener = tokio::net::UnixListener::bind(&socket).expect("bind the baseline socket");
        tonic::transport::Server::builder()
            .add_service(TokenBrokerServer::new(FixedHeaders::default()))
            .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener))
            .await
    });
    served.expect("the tonic baseline failed");
    std::process::exit(0);
}

/// The baseline's service: `GetHeaders` answers a fixed Glean-sized
/// response (an `Authorization` header, an expiry, a fingerprint); the
/// other methods are not served.
struct FixedHeaders(GetHeadersResponse);

impl Default for FixedHeaders {
    fn default() -> Self {
        Self(GetHeadersResponse {
            headers: vec![Header {
                name: "Authorization".into(),
                value: "Bearer glean_bench_token_0123456789abcdefghijklmn".into(),
            }],
            expires_at: Some(prost_types::Timestamp {
                seconds: 4_070_908_800,
                nanos: 0,
            }),
            token_fingerprint: "0123456789abcdef".into(),
            stale: false,
        })
    }
}

type NoStream =
    std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<GetHeadersResponse, Status>> + Send>>;

#[tonic::async_trait]
impl TokenBroker for FixedHeaders {
    async fn get_headers(
        &self,
        _: Request<GetHeadersRequest>,
    ) -> Result<Response<GetHeadersResponse>, Status> {
        Ok(Response::new(self.0.clone()))
    }

    type WatchHeadersStream = NoStream;

    async fn watch_headers(
        &self,
        _: Request<GetHeadersRequest>,
    ) -> Result<Response<NoStream>, Status> {
        Err(Status::unimplemented("baseline"))
    }

    async fn invalidate(
        &self,
        _: Request<InvalidateRequest>,
    ) -> Result<Response<InvalidateResponse>, Status> {
        Err(Status::unimplemented("baseline"))
    }

    async fn list_credentials(
        &self,
        _: Request<ListCredentialsRequest>,
    ) -> Result<Response<ListCredentialsResponse>, Status> {
        Err(Status::unimplemented("baseline"))
    }

    async fn list_alerts(
        &self,
        _: Request<ListAlertsRequest>,
    ) -> Result<Response<ListAlertsResponse>, Status> {
        Err(Status::unimplemented("baseline"))
    }

    async fn who_am_i(
        &self,
        _: Request<WhoAmIRequest>,
    ) -> Result<Response<WhoAmIResponse>, Status> {
        Err(Status::unimplemented("baseline"))
    }
}

/// A `[store]` and `n` `oauth_refresh` credentials `oauth-0000`… (a Glean
/// OAuth login: a scope and an extra header), for [`start_with`]'s `extra`.
/// Their token endpoint is a closed port: [`cache_oauth_tokens`] gives each
/// a day-long access token, so no refresh is due during a benchmark.
pub fn oauth_credentials(dir: &Path, n: usize) -> String {
    let key = dir.join("store.key");
    std::fs::write(&key, [7u8; 32]).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let uid = nix::unistd::geteuid().as_raw();
    let mut extra = format!(
        "\n[store]\npath = \"{}\"\nkey_file = \"{}\"\n",
        dir.join(format!("store-{n}.redb")).display(),
        key.display()
    );
    for i in 0..n {
        extra.push_str(&format!(
            "\n[[credential]]\nname = \"oauth-{i:04}\"\nkind = \"oauth_refresh\"\n\
             token_endpoint = \"http://127.0.0.1:9/token\"\nclient_id = \"tokend-bench\"\n\
             auth_method = \"none\"\nscopes = [\"SEARCH\"]\n\
             extra_headers = {{ \"X-Glean-Auth-Type\" = \"OAUTH\" }}\n\
             allow = {{ uids = [{uid}] }}\n"
        ));
    }
    extra
}

/// Logs in [`oauth_credentials`]' `n` credentials as `tokenctl login`
/// would: a refresh token and an access token valid for a day, which the
/// daemon serves from its cache.
pub fn cache_oauth_tokens(socket: &Path, n: usize) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut admin = AdminClient::new(tokend_client::channel(socket).await.expect("connect"));
        let expires = jiff::Timestamp::now().as_second() + 86_400;
        for i in 0..n {
            admin
                .put_refresh_token(PutRefreshTokenRequest {
                    credential: format!("oauth-{i:04}"),
                    refresh_token: format!("rt-bench-{i}"),
                    access_token: format!("oauth_bench_access_token_{i:04}_0123456789abcdef"),
                    access_token_expires_at: Some(prost_types::Timestamp {
                        seconds: expires,
                        nanos: 0,
                    }),
                })
                .await
                .expect("PutRefreshToken");
        }
    });
}
