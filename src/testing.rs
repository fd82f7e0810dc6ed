//! Fixtures for the unit tests: an in-process token endpoint whose answers
//! are scripted and whose calls are counted, and the services a broker
//! needs around it. Compiled only for tests.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use jiff::Timestamp;
use secrecy::{ExposeSecret, SecretString};

use crate::broker::Services;
use crate::clock::{self, SharedClock};
use crate::oauth::{Client, Grant, Metadata, TokenEndpoint, TokenError, Tokens};
use crate::refresh;
use crate::store::{Store, StoreKey};

/// What the fake endpoint answers to one request.
#[derive(Debug)]
pub(crate) enum Answer {
    /// Tokens living `lifetime`, with a rotated refresh token if given.
    Tokens {
        lifetime: Duration,
        refresh_token: Option<&'static str>,
    },
    /// A failure.
    Error(TokenError),
}

/// A token endpoint in the test's process: answers from a script (then
/// tokens living `default_lifetime`), after `latency` of tokio time.
#[derive(Debug)]
pub(crate) struct FakeEndpoint {
    calls: AtomicUsize,
    script: Mutex<VecDeque<Answer>>,
    /// The refresh tokens presented, in order (`-` for other grants).
    pub(crate) presented: Mutex<Vec<String>>,
    latency: Duration,
    default_lifetime: Duration,
    in_flight: AtomicUsize,
    /// The most requests in flight at once so far.
    pub(crate) max_in_flight: AtomicUsize,
}

impl FakeEndpoint {
    pub(crate) fn new(latency: Duration, default_lifetime: Duration) -> Arc<Self> {
        Arc::new(Self {
            calls: AtomicUsize::new(0),
            script: Mutex::default(),
            presented: Mutex::default(),
            latency,
            default_lifetime,
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
        })
    }

    /// Queues the answer to a coming request.
    pub(crate) fn then(&self, answer: Answer) -> &Self {
        self.script.lock().unwrap().push_back(answer);
        self
    }

    /// How many token requests arrived.
    pub(crate) fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// A transient failure, as a 503 with `Retry-After` would be.
    pub(crate) fn unavailable(retry_after: Option<Duration>) -> Answer {
        Answer::Error(TokenError::Transient {
            reason: "the token endpoint answered 503 Service Unavailable".into(),
            retry_after,
            answered: true,
        })
    }

    /// `invalid_grant`: the refresh token is dead.
    pub(crate) fn invalid_grant() -> Answer {
        Answer::Error(TokenError::Permanent {
            code: "invalid_grant".into(),
            description: Some("grant request is invalid".into()),
        })
    }
}

impl TokenEndpoint for FakeEndpoint {
    fn request<'a>(
        &'a self,
        _endpoint: &'a str,
        _client: &'a Client,
        grant: Grant<'a>,
        _default_lifetime: Duration,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<Tokens, TokenError>> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        let presented = match grant {
            Grant::RefreshToken(rt) => rt.expose_secret().to_owned(),
            _ => "-".to_owned(),
        };
        self.presented.lock().unwrap().push(presented);
        let answer = self.script.lock().unwrap().pop_front();
        Box::pin(async move {
            let now_in_flight = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.max_in_flight
                .fetch_max(now_in_flight, Ordering::SeqCst);
            tokio::time::sleep(self.latency).await;
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            let (lifetime, refresh_token) = match answer {
                Some(Answer::Error(e)) => return Err(e),
                Some(Answer::Tokens {
                    lifetime,
                    refresh_token,
                }) => (lifetime, refresh_token),
                None => (self.default_lifetime, None),
            };
            Ok(Tokens {
                access_token: SecretString::from(format!("access-{n}")),
                refresh_token: refresh_token.map(SecretString::from),
                expires_at: clock::after(now, lifetime),
                scope: None,
            })
        })
    }

    fn discover<'a>(&'a self, issuer: &'a str) -> BoxFuture<'a, Result<Metadata, TokenError>> {
        Box::pin(async move {
            Ok(Metadata {
                issuer: Some(issuer.to_owned()),
                token_endpoint: format!("{issuer}/token"),
                authorization_endpoint: Some(format!("{issuer}/auth")),
                revocation_endpoint: None,
                code_challenge_methods_supported: vec!["S256".into()],
                token_endpoint_auth_methods_supported: vec!["none".into()],
            })
        })
    }

    fn revoke<'a>(
        &'a self,
        _endpoint: &'a str,
        _client: &'a Client,
        _token: &'a SecretString,
        _hint: &'a str,
    ) -> BoxFuture<'a, Result<(), TokenError>> {
        Box::pin(async { Ok(()) })
    }
}

/// A broker's services around `endpoint` (the real HTTP one when `None`).
pub(crate) fn services(
    store: Option<Arc<Store>>,
    endpoint: Arc<dyn TokenEndpoint>,
    clock: SharedClock,
) -> Services {
    Services {
        store,
        endpoint,
        refresh: refresh::Settings {
            max_backoff: Duration::from_secs(300),
            gates: Arc::new(refresh::Gates::new(
                crate::config::DEFAULT_ISSUER_CONCURRENCY,
            )),
        },
        metrics: Arc::default(),
        clock,
        fleet: None,
    }
}

/// The real HTTP endpoint, for tests that never reach it.
pub(crate) fn http() -> Arc<dyn TokenEndpoint> {
    Arc::new(crate::oauth::Http(crate::oauth::http_client(
        Duration::from_secs(1),
    )))
}

/// A fresh store in `dir`.
pub(crate) fn store(dir: &Path) -> Arc<Store> {
    Arc::new(Store::open(&dir.join("store.redb"), &StoreKey::from_bytes([7; 32])).unwrap())
}
