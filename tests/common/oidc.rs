//! The real authorization server of the OAuth tests (`tests/oidc`, built on
//! the certified `oidc-provider`), installed on first use and started per
//! test on a free port.

#![allow(dead_code)] // each test binary uses a different subset

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine as _;
use secrecy::{ExposeSecret, SecretString};
use sha2::Digest as _;
use tokend::oauth::{self, AuthMethod};

/// The loopback redirect URI the test clients are registered with.
pub const REDIRECT_URI: &str = "http://127.0.0.1:9090/oauth/callback";

/// The static clients of `tests/oidc/server.js`.
pub const POST_CLIENT: (&str, &str) = ("tokend-post", "post-secret");
pub const BASIC_CLIENT: (&str, &str) = ("tokend-basic", "basic-secret");

fn oidc_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oidc")
}

/// Runs `npm ci` in `tests/oidc` unless its packages are already there.
/// Serialised across threads and test processes with a lock file.
pub fn ensure_installed() {
    static ONCE: Mutex<bool> = Mutex::new(false);
    let mut done = ONCE.lock().unwrap_or_else(|e| e.into_inner());
    if *done {
        return;
    }
    let dir = oidc_dir();
    let lock = std::fs::File::create(dir.join(".install.lock")).expect("create install lock");
    let _guard = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .expect("lock tests/oidc for npm ci");
    if !dir.join("node_modules/oidc-provider/package.json").exists() {
        let out = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--prefix"])
            .arg(&dir)
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run npm ({e}): install Node.js 20 and npm to run the OAuth tests")
            });
        assert!(
            out.status.success(),
            "npm ci in tests/oidc failed (needs Node.js 20, npm and the npm registry):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    *done = true;
}

/// A running test authorization server; stopped on drop.
pub struct OidcServer {
    child: Child,
    pub issuer: String,
    pub port: u16,
    http: reqwest::Client,
}

impl OidcServer {
    /// Starts the server with access tokens living `ttl_secs`.
    pub fn start(ttl_secs: u64, log: &Path) -> Self {
        ensure_installed();
        let mut child = Command::new("node")
            .arg(oidc_dir().join("server.js"))
            .env("PORT", "0")
            .env("ACCESS_TOKEN_TTL", ttl_secs.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(log).expect("oidc log"))
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run node ({e}): install Node.js 20 to run the OAuth tests")
            });
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("read the server's first line");
        let ready: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|_| {
            panic!(
                "the test authorization server did not start: {line:?}\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            )
        });
        let http = browser();
        Self {
            child,
            issuer: ready["issuer"].as_str().expect("issuer").to_owned(),
            port: ready["port"].as_u64().expect("port") as u16,
            http,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn token_endpoint(&self) -> String {
        format!("{}/token", self.issuer)
    }

    /// A full authorization-code + PKCE (S256) login as `alice`, driving the
    /// authorization URL like a browser; the code is exchanged with tokend's
    /// own token client. Returns the token response.
    pub async fn login(&self, client: (&str, &str), method: AuthMethod) -> oauth::Tokens {
        let verifier = random_string(64);
        let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(sha2::Sha256::digest(verifier.as_bytes()));
        let state = random_string(24);
        let url = reqwest::Url::parse_with_params(
            &format!("{}/auth", self.issuer),
            [
                ("response_type", "code"),
                ("client_id", client.0),
                ("redirect_uri", REDIRECT_URI),
                ("scope", "api"),
                ("state", &state),
                ("code_challenge", &challenge),
                ("code_challenge_method", "S256"),
            ],
        )
        .unwrap();
        // A fresh browser for each login: its own session, so its own grant
        // (one session would reuse one grant for every login, and a replayed
        // refresh token then revokes all of them together).
        let browser = browser();
        let response = browser
            .get(url)
            .send()
            .await
            .expect("authorization request");
        let location = response
            .headers()
            .get("location")
            .and_then(|l| l.to_str().ok())
            .unwrap_or_else(|| panic!("no redirect to the client: {}", response.status()));
        let callback = reqwest::Url::parse(location).unwrap();
        let param = |name: &str| {
            callback
                .query_pairs()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.into_owned())
        };
        assert_eq!(
            param("state").as_deref(),
            Some(state.as_str()),
            "{callback}"
        );
        let code = SecretString::from(param("code").expect("code in the callback"));
        let verifier = SecretString::from(verifier);
        oauth::request_token(
            &oauth::http_client(Duration::from_secs(10)),
            &self.token_endpoint(),
            &client_of(client, method),
            oauth::Grant::AuthorizationCode {
                code: &code,
                verifier: &verifier,
                redirect_uri: REDIRECT_URI,
            },
            Duration::from_secs(60),
            jiff::Timestamp::now(),
        )
        .await
        .expect("code exchange")
    }

    /// Requests `/token` with a refresh token directly, outside tokend.
    pub async fn refresh_directly(
        &self,
        refresh_token: &str,
        client: (&str, &str),
    ) -> Result<oauth::Tokens, oauth::TokenError> {
        let rt = SecretString::from(refresh_token);
        oauth::request_token(
            &oauth::http_client(Duration::from_secs(10)),
            &self.token_endpoint(),
            &client_of(client, AuthMethod::ClientSecretPost),
            oauth::Grant::RefreshToken(&rt),
            Duration::from_secs(60),
            jiff::Timestamp::now(),
        )
        .await
    }

    async fn get(&self, path: &str) -> serde_json::Value {
        self.http
            .get(format!("{}{path}", self.issuer))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn post(&self, path: &str, form: &[(&str, &str)]) {
        let r = self
            .http
            .post(format!("{}{path}", self.issuer))
            .form(form)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{path}: {}", r.status());
    }

    /// Token-endpoint requests counted by grant type.
    pub async fn stats(&self) -> serde_json::Value {
        self.get("/test/stats").await
    }

    /// Every token request's form fields (secrets redacted by the server).
    pub async fn token_requests(&self) -> Vec<serde_json::Value> {
        self.get("/test/token-requests")
            .await
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    pub async fn rotate_secret(&self, client_id: &str, secret: &str) {
        self.post(
            "/test/rotate-secret",
            &[("client_id", client_id), ("client_secret", secret)],
        )
        .await;
    }

    /// Revokes every grant: refresh tokens then fail with `invalid_grant`.
    pub async fn revoke_grants(&self) {
        self.post("/test/revoke-grants", &[]).await;
    }

    /// RFC 7662 introspection of `token`, as the post client.
    pub async fn introspect(&self, token: &str) -> serde_json::Value {
        self.http
            .post(format!("{}/token/introspection", self.issuer))
            .form(&[
                ("token", token),
                ("client_id", POST_CLIENT.0),
                ("client_secret", POST_CLIENT.1),
            ])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

impl Drop for OidcServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP client acting as a browser: keeps cookies and follows the
/// authorization redirects, but stops at the client's redirect URI, as a
/// browser handing over to a native app would.
fn browser() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::custom(|attempt| {
            if attempt.url().port() == Some(9090) {
                attempt.stop()
            } else {
                attempt.follow()
            }
        }))
        .timeout(Duration::from_secs(10))
        // Node closes an idle connection after 5 s; reusing one it is
        // closing that instant fails with "connection reset" (it did once
        // in CI). Idle connections are dropped well before.
        .pool_idle_timeout(Duration::from_secs(2))
        .build()
        .unwrap()
}

pub fn client_of(client: (&str, &str), method: AuthMethod) -> oauth::Client {
    oauth::Client {
        client_id: client.0.to_owned(),
        client_secret: Some(SecretString::from(client.1)),
        auth_method: method,
        scopes: Vec::new(),
        extra_params: Vec::new(),
    }
}

fn random_string(len: usize) -> String {
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~";
    (0..len)
        .map(|_| CHARS[fastrand::usize(..CHARS.len())] as char)
        .collect()
}

/// Shows a token only by fingerprint, for assertions' messages.
pub fn fp(token: &SecretString) -> String {
    oauth::fingerprint(token.expose_secret())
}
