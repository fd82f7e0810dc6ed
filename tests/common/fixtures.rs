//! Credential tables and waits that many tests share, written once.

#![allow(dead_code)] // each test binary uses a different subset

use std::fmt;
use std::time::{Duration, Instant};

use tokend::proto::GetHeadersRequest;
use tokend::proto::token_broker_client::TokenBrokerClient;
use tonic::transport::Channel;

/// A `glean_token` credential table: by default a user token with SEARCH,
/// its secret in the work directory's `secret` file, allowed to root.
#[derive(Clone, Debug)]
pub struct Glean {
    name: String,
    permission: &'static str,
    scopes: &'static str,
    secret: String,
    allow: String,
    extra: Vec<String>,
}

impl Glean {
    pub fn user(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            permission: "user",
            scopes: r#"["SEARCH"]"#,
            secret: r#"{ file = "secret" }"#.into(),
            allow: "{ uids = [0] }".into(),
            extra: Vec::new(),
        }
    }

    /// A global token whose root callers may act as anyone at corp.example.
    pub fn global(name: &str) -> Self {
        Self {
            permission: "global",
            allow: r#"{ uids = [0], act_as = ["*@corp.example"] }"#.into(),
            ..Self::user(name)
        }
    }

    pub fn permission(mut self, permission: &'static str) -> Self {
        self.permission = permission;
        self
    }

    /// Scopes as a TOML array, e.g. `["SEARCH", "CHAT"]`.
    pub fn scopes(mut self, scopes: &'static str) -> Self {
        self.scopes = scopes;
        self
    }

    /// The secret from this file of the work directory.
    pub fn secret_file(mut self, file: &str) -> Self {
        self.secret = format!("{{ file = \"{file}\" }}");
        self
    }

    /// The secret from environment variable `var`.
    pub fn secret_env(mut self, var: &str) -> Self {
        self.secret = format!("{{ env = \"{var}\" }}");
        self
    }

    /// Who may fetch it, as a TOML table or array.
    pub fn allow(mut self, allow: impl Into<String>) -> Self {
        self.allow = allow.into();
        self
    }

    /// The secret imported into the store (`tokenctl import`).
    pub fn stored(mut self) -> Self {
        self.secret = "{ store = true }".into();
        self
    }

    /// Any further `key = value` line.
    pub fn with(mut self, line: impl Into<String>) -> Self {
        self.extra.push(line.into());
        self
    }
}

impl fmt::Display for Glean {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "\n[[credential]]")?;
        writeln!(f, "name = \"{}\"", self.name)?;
        writeln!(f, "kind = \"glean_token\"")?;
        writeln!(f, "permission = \"{}\"", self.permission)?;
        writeln!(f, "scopes = {}", self.scopes)?;
        writeln!(f, "secret = {}", self.secret)?;
        writeln!(f, "allow = {}", self.allow)?;
        self.extra.iter().try_for_each(|l| writeln!(f, "{l}"))
    }
}

/// An OAuth credential table for the test authorization server's clients,
/// allowed to root.
#[derive(Clone, Debug)]
pub struct OAuth {
    lines: Vec<String>,
    allow: String,
}

impl OAuth {
    /// `oauth_refresh` with issuer discovery, the post client (secret in
    /// the work directory's `client-secret`), scope `api`.
    pub fn refresh(name: &str, issuer: &str, client_id: &str) -> Self {
        Self {
            lines: vec![
                format!("name = \"{name}\""),
                "kind = \"oauth_refresh\"".into(),
                format!("issuer = \"{issuer}\""),
                format!("client_id = \"{client_id}\""),
                r#"client_secret = { file = "client-secret" }"#.into(),
                r#"auth_method = "client_secret_post""#.into(),
            ],
            allow: "{ uids = [0] }".into(),
        }
    }

    /// `oauth_client_credentials` at `token_endpoint`, the basic client
    /// (secret in `client-secret-basic`), with Glue's `subject`.
    pub fn client_credentials(name: &str, token_endpoint: &str, client_id: &str) -> Self {
        Self {
            lines: vec![
                format!("name = \"{name}\""),
                "kind = \"oauth_client_credentials\"".into(),
                format!("token_endpoint = \"{token_endpoint}\""),
                format!("client_id = \"{client_id}\""),
                r#"client_secret = { file = "client-secret-basic" }"#.into(),
                r#"auth_method = "client_secret_basic""#.into(),
                r#"extra_params = { subject = "wks_123", redirect_uri = "https://glue.example/callback" }"#.into(),
            ],
            allow: "{ uids = [0] }".into(),
        }
    }

    pub fn min_valid(self, min_valid: &str) -> Self {
        self.with(format!("min_valid = \"{min_valid}\""))
    }

    /// Any further `key = value` line.
    pub fn with(mut self, line: impl Into<String>) -> Self {
        self.lines.push(line.into());
        self
    }

    /// Who may fetch it, as a TOML table or array.
    pub fn allow(mut self, allow: impl Into<String>) -> Self {
        self.allow = allow.into();
        self
    }
}

impl fmt::Display for OAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "\n[[credential]]")?;
        self.lines.iter().try_for_each(|l| writeln!(f, "{l}"))?;
        writeln!(f, "allow = {}", self.allow)
    }
}

/// Asks for `request`'s headers until the token's fingerprint is no longer
/// `old` (a refresh landed), and returns the new one; fails after `within`.
pub async fn wait_for_new_token(
    client: &mut TokenBrokerClient<Channel>,
    request: &GetHeadersRequest,
    old: &str,
    within: Duration,
) -> String {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(r) = client.get_headers(request.clone()).await {
            let r = r.into_inner();
            if r.token_fingerprint != old {
                return r.token_fingerprint;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{}: the token {old} was not replaced within {within:?}",
            request.credential
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
