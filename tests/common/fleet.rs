//! Several tokend daemons sharing credentials through one real etcd, against
//! the test authorization server (rotation and reuse detection on).

use std::time::{Duration, Instant};

use super::etcd::Etcd;
use super::oidc::{OidcServer, POST_CLIENT};
use super::{Daemon, Workdir};
use secrecy::ExposeSecret;
use tokend::oauth::AuthMethod;
use tokend::proto::{
    CredentialState, CredentialStatus, GetHeadersRequest, ListCredentialsRequest,
    PutRefreshTokenRequest,
};

/// The lease TTL the fleet tests use: etcd's minimum, so failovers are quick.
pub const LEASE_TTL: Duration = Duration::from_secs(2);

/// One node: its own directory, socket and store.
pub struct Node {
    pub name: String,
    pub work: Workdir,
    pub daemon: Option<Daemon>,
}

pub struct TestFleet {
    pub etcd: Etcd,
    pub server: OidcServer,
    pub nodes: Vec<Node>,
    /// Holds etcd's data, the shared fleet key and the server's log.
    pub dir: tempfile::TempDir,
    /// Extra environment for every daemon (test hooks).
    pub env: Vec<(&'static str, &'static str)>,
}

impl TestFleet {
    /// `n` nodes, each configured with `[fleet]` (unless `fleet` is false)
    /// and `credentials(server)`, started. Access tokens live `ttl` seconds.
    pub fn start(
        n: usize,
        ttl: u64,
        fleet: bool,
        credentials: impl Fn(&OidcServer) -> String,
    ) -> Self {
        Self::start_env(n, ttl, fleet, &[], credentials)
    }

    /// Like [`TestFleet::start`], every daemon with `env` set.
    pub fn start_env(
        n: usize,
        ttl: u64,
        fleet: bool,
        env: &[(&'static str, &'static str)],
        credentials: impl Fn(&OidcServer) -> String,
    ) -> Self {
        super::require_root();
        let dir = tempfile::tempdir().expect("temp dir");
        let etcd = Etcd::start(dir.path());
        let server = OidcServer::start(ttl, &dir.path().join("oidc.log"));
        let key = fleet_key(dir.path());
        let mut nodes = Vec::new();
        for i in 0..n {
            let name = format!("node-{i}");
            let work = Workdir::new();
            super::write_secret(&work.path().join("client-secret"), POST_CLIENT.1);
            super::write_secret(
                &work.path().join("client-secret-basic"),
                super::oidc::BASIC_CLIENT.1,
            );
            let fleet_table = if fleet {
                fleet_table(&etcd, &name, &key)
            } else {
                String::new()
            };
            let text = format!(
                "{}\n{fleet_table}\n[alerts]\nsweep = \"* * * * * *\"\nrefresh_failing_after = \"1s\"\n{}",
                work.store_section(),
                credentials(&server)
            );
            work.write_config("", &text);
            nodes.push(Node {
                name,
                work,
                daemon: None,
            });
        }
        let mut fleet = Self {
            etcd,
            server,
            nodes,
            dir,
            env: env.to_vec(),
        };
        for i in 0..n {
            fleet.start_node(i);
        }
        fleet
    }

    pub fn start_node(&mut self, i: usize) {
        let daemon = Daemon::start_env(&self.nodes[i].work, &self.env);
        self.nodes[i].daemon = Some(daemon);
    }

    /// SIGKILLs node `i` and reaps it.
    pub fn kill_node(&mut self, i: usize) {
        if let Some(mut d) = self.nodes[i].daemon.take() {
            d.signal(nix::sys::signal::Signal::SIGKILL);
            d.wait();
        }
    }

    /// Whether node `i` runs and accepts connections (a node a test hook
    /// aborted does not).
    pub fn up(&self, i: usize) -> bool {
        self.nodes[i]
            .daemon
            .as_ref()
            .is_some_and(|d| std::os::unix::net::UnixStream::connect(&d.socket).is_ok())
    }

    pub fn daemon(&self, i: usize) -> &Daemon {
        self.nodes[i].daemon.as_ref().expect("node running")
    }

    /// Every node's logs, for failure messages.
    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .filter_map(|n| {
                n.daemon
                    .as_ref()
                    .map(|d| format!("--- {}\n{}", n.name, d.logs()))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// A fresh login (auth code + PKCE) handed to node `i` with its access
    /// token, as `tokenctl login` does.
    pub async fn login(&self, i: usize, name: &str) {
        let tokens = self
            .server
            .login(POST_CLIENT, AuthMethod::ClientSecretPost)
            .await;
        let exp = tokens.expires_at;
        let request = PutRefreshTokenRequest {
            credential: name.into(),
            refresh_token: tokens
                .refresh_token
                .as_ref()
                .expect("a refresh token")
                .expose_secret()
                .to_owned(),
            access_token: tokens.access_token.expose_secret().to_owned(),
            access_token_expires_at: Some(prost_types::Timestamp {
                seconds: exp.as_second(),
                nanos: 0,
            }),
        };
        self.daemon(i)
            .admin()
            .await
            .put_refresh_token(request)
            .await
            .expect("put the login on a node");
    }

    pub async fn status(&self, i: usize, name: &str) -> CredentialStatus {
        self.daemon(i)
            .client()
            .await
            .list_credentials(ListCredentialsRequest {})
            .await
            .unwrap()
            .into_inner()
            .credentials
            .into_iter()
            .find(|c| c.name == name)
            .expect("credential listed")
    }

    /// The running node that says it leads `name`, if any.
    pub async fn leader(&self, name: &str) -> Option<usize> {
        for i in 0..self.nodes.len() {
            if self.up(i)
                && self
                    .status(i, name)
                    .await
                    .fleet
                    .is_some_and(|f| f.role == "leader")
            {
                return Some(i);
            }
        }
        None
    }

    /// Waits (bounded) until a running node leads `name`.
    pub async fn wait_leader(&self, name: &str, within: Duration) -> usize {
        let deadline = Instant::now() + within;
        loop {
            if let Some(i) = self.leader(name).await {
                return i;
            }
            assert!(
                Instant::now() < deadline,
                "no leader within {within:?}:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The access token node `i` serves for `name`, if it serves one.
    pub async fn token(&self, i: usize, name: &str) -> Option<String> {
        let r = self
            .daemon(i)
            .client()
            .await
            .get_headers(GetHeadersRequest {
                credential: name.into(),
                ..Default::default()
            })
            .await
            .ok()?
            .into_inner();
        r.headers
            .iter()
            .find(|h| h.name == "Authorization")
            .and_then(|h| h.value.strip_prefix("Bearer "))
            .map(str::to_owned)
    }

    /// Waits (bounded) until every running node serves a token for `name`.
    pub async fn wait_all_serving(&self, name: &str, within: Duration) {
        let deadline = Instant::now() + within;
        for (i, n) in self.nodes.iter().enumerate() {
            if !self.up(i) {
                continue;
            }
            while self.token(i, name).await.is_none() {
                assert!(
                    Instant::now() < deadline,
                    "{} serves no token for {name} after {within:?}: {:?}\n{}",
                    n.name,
                    self.status(i, name).await,
                    self.logs()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    /// The authorization server's refusals, by `error: description`.
    pub async fn refusals(&self) -> serde_json::Map<String, serde_json::Value> {
        self.server.stats().await["errors"]
            .as_object()
            .cloned()
            .unwrap_or_default()
    }

    /// How many consumed refresh tokens were presented again (each revokes
    /// the grant).
    pub async fn replays(&self) -> u64 {
        self.server.stats().await["replays"].as_u64().unwrap_or(0)
    }

    /// How many refresh-token grants the server has seen.
    pub async fn refreshes(&self) -> u64 {
        self.server.stats().await["by_grant_type"]["refresh_token"]
            .as_u64()
            .unwrap_or(0)
    }

    /// Whether any running node says `name` needs a login; with its reason.
    pub async fn needs_login(&self, name: &str) -> Option<String> {
        for i in 0..self.nodes.len() {
            if !self.up(i) {
                continue;
            }
            let s = self.status(i, name).await;
            if s.state == CredentialState::NeedsLogin as i32 {
                return Some(s.last_error);
            }
        }
        None
    }
}

/// A fleet of one node for the client packages' tests: etcd, a fleet key,
/// and a `[fleet]` table plus a `shared` client-credentials credential at
/// `token_endpoint` (client secret from `client-secret` in the daemon's
/// work directory), to append to a daemon's config.
pub struct OneNode {
    pub etcd: Etcd,
    pub config: String,
    /// Holds etcd's data and the key.
    pub dir: tempfile::TempDir,
}

impl OneNode {
    pub fn start(node: &str, token_endpoint: &str) -> Self {
        super::require_root();
        let dir = tempfile::tempdir().expect("temp dir");
        let etcd = Etcd::start(dir.path());
        let key = fleet_key(dir.path());
        let config = format!(
            r#"
[[credential]]
name = "shared"
kind = "oauth_client_credentials"
token_endpoint = "{token_endpoint}"
client_id = "tokend"
client_secret = {{ file = "client-secret" }}
auth_method = "client_secret_post"
shared = true
allow = {{ uids = [0] }}

{}"#,
            fleet_table(&etcd, node, &key)
        );
        Self { etcd, config, dir }
    }

    /// Calls `list` (a client's credential listing, as a JSON array) until
    /// the `shared` credential shows a leader (at most 20 s), and returns
    /// that listing.
    pub fn once_led(
        &self,
        daemon: &Daemon,
        mut list: impl FnMut() -> serde_json::Value,
    ) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let got = list();
            let credentials = got.as_array().unwrap_or_else(|| panic!("{got}")).clone();
            let led = credentials
                .iter()
                .any(|c| c["name"] == "shared" && c["fleet"]["role"] == "leader");
            if led {
                return credentials;
            }
            assert!(
                Instant::now() < deadline,
                "the node never led: {got}\n{}",
                daemon.logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// A random fleet key in `dir`, as an operator would write it.
fn fleet_key(dir: &std::path::Path) -> std::path::PathBuf {
    let key = dir.join("fleet.key");
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).unwrap();
    std::fs::write(&key, bytes).unwrap();
    super::set_mode(&key, 0o600);
    key
}

/// A `[fleet]` table for node `node`.
pub fn fleet_table(etcd: &Etcd, node: &str, key: &std::path::Path) -> String {
    format!(
        "[fleet]\nendpoints = [\"{}\"]\nprefix = \"/tokend/test/\"\nnode = \"{node}\"\nlease_ttl = \"{}s\"\nkey_file = \"{}\"\n",
        etcd.url(),
        LEASE_TTL.as_secs(),
        key.display()
    )
}

/// What a run of leader kills found.
#[derive(Debug, Default)]
pub struct Kills {
    pub kills: usize,
    /// Kills that landed between the server's answer and the commit: the
    /// grant is lost, and the nodes said exactly that.
    pub window_cases: usize,
    /// From each kill until another node led.
    pub failovers: Vec<Duration>,
}

impl Kills {
    pub fn summary(&self) -> String {
        let mut f = self.failovers.clone();
        f.sort();
        let at = |q: f64| {
            f.get(((f.len() as f64 - 1.0) * q).round() as usize)
                .copied()
                .unwrap_or_default()
        };
        format!(
            "{} kills, {} in the answer→commit window; failover p50 {:?}, max {:?} (lease {LEASE_TTL:?})",
            self.kills,
            self.window_cases,
            at(0.5),
            at(1.0)
        )
    }
}

impl TestFleet {
    /// SIGKILLs the leader of `name` at a random point of its cycle (up to
    /// `cycle` after the previous recovery), `kills` times, restarting it
    /// each time. Checks after each kill that another node leads within a
    /// lease TTL plus a margin, and that the grant survives, or that its
    /// loss is reported as the answer→commit window (then logs in again).
    pub async fn kill_leaders(&mut self, name: &str, kills: usize, cycle: Duration) -> Kills {
        let mut report = Kills::default();
        for _ in 0..kills {
            let leader = self.wait_leader(name, Duration::from_secs(15)).await;
            tokio::time::sleep(cycle.mul_f64(fastrand::f64())).await;
            let Some(leader) = self.leader(name).await.filter(|l| *l == leader) else {
                continue;
            };
            let killed_at = Instant::now();
            self.kill_node(leader);
            report.kills += 1;
            let next = self
                .wait_leader(name, LEASE_TTL * 3 + Duration::from_secs(5))
                .await;
            report.failovers.push(killed_at.elapsed());
            assert_ne!(next, leader);
            self.start_node(leader);
            // Recovered: every node serves, or the grant is gone and says
            // it was lost in the window.
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if let Some(reason) = self.needs_login(name).await {
                    assert!(
                        reason.contains("lost in a crash or a lost response on node"),
                        "a grant lost outside the answer→commit window: {reason}\n{}",
                        self.logs()
                    );
                    report.window_cases += 1;
                    let any = self.wait_leader(name, Duration::from_secs(10)).await;
                    self.login(any, name).await;
                    self.wait_all_serving(name, Duration::from_secs(15)).await;
                    break;
                }
                let mut all = true;
                for i in 0..self.nodes.len() {
                    all &= !self.up(i) || self.token(i, name).await.is_some();
                }
                if all {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "the fleet did not recover after killing {}:\n{}",
                    self.nodes[leader].name,
                    self.logs()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        report
    }
}

impl TestFleet {
    /// The events of the alerts open on node `i`.
    pub async fn alerts(&self, i: usize) -> Vec<String> {
        self.daemon(i)
            .client()
            .await
            .list_alerts(tokend::proto::ListAlertsRequest {})
            .await
            .map(|r| r.into_inner().alerts.into_iter().map(|a| a.event).collect())
            .unwrap_or_default()
    }
}
