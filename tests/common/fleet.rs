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
}

impl TestFleet {
    /// `n` nodes, each configured with `[fleet]` (unless `fleet` is false)
    /// and `credentials(server)`, started. Access tokens live `ttl` seconds.
    pub fn start(n: usize, ttl: u64, fleet: bool, credentials: impl Fn(&OidcServer) -> String) -> Self {
        super::require_root();
        let dir = tempfile::tempdir().expect("temp dir");
        let etcd = Etcd::start(dir.path());
        let server = OidcServer::start(ttl, &dir.path().join("oidc.log"));
        let key = dir.path().join("fleet.key");
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).unwrap();
        std::fs::write(&key, bytes).unwrap();
        super::set_mode(&key, 0o600);
        let mut nodes = Vec::new();
        for i in 0..n {
            let name = format!("node-{i}");
            let work = Workdir::new();
            super::write_secret(&work.path().join("client-secret"), POST_CLIENT.1);
            super::write_secret(&work.path().join("client-secret-basic"), super::oidc::BASIC_CLIENT.1);
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
        };
        for i in 0..n {
            fleet.start_node(i);
        }
        fleet
    }

    pub fn start_node(&mut self, i: usize) {
        let daemon = Daemon::start(&self.nodes[i].work);
        self.nodes[i].daemon = Some(daemon);
    }

    pub fn daemon(&self, i: usize) -> &Daemon {
        self.nodes[i].daemon.as_ref().expect("node running")
    }

    /// Every node's logs, for failure messages.
    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .filter_map(|n| n.daemon.as_ref().map(|d| format!("--- {}\n{}", n.name, d.logs())))
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
        for (i, n) in self.nodes.iter().enumerate() {
            if n.daemon.is_some()
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
            if n.daemon.is_none() {
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
        for (i, n) in self.nodes.iter().enumerate() {
            if n.daemon.is_none() {
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

/// A `[fleet]` table for node `node`.
pub fn fleet_table(etcd: &Etcd, node: &str, key: &std::path::Path) -> String {
    format!(
        "[fleet]\nendpoints = [\"{}\"]\nprefix = \"/tokend/test/\"\nnode = \"{node}\"\nlease_ttl = \"{}s\"\nkey_file = \"{}\"\n",
        etcd.url(),
        LEASE_TTL.as_secs(),
        key.display()
    )
}
