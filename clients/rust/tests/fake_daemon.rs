//! The client against a fake, in-process tokend on a real Unix socket: what
//! goes over the wire and comes back, without the daemon.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use secrecy::SecretString;
use tempfile::TempDir;
use tokend_client::proto::admin_server::{Admin, AdminServer};
use tokend_client::proto::token_broker_server::{TokenBroker, TokenBrokerServer};
use tokend_client::{Client, Error, HeadersRequest, State, proto};
use tokio::net::UnixListener;
use tokio::sync::oneshot;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::{Code, Request, Response, Status};

/// What a test's fake daemon was asked, to check the requests as sent.
#[derive(Debug, Clone, PartialEq)]
enum Seen {
    Headers(proto::GetHeadersRequest),
    Invalidate(proto::InvalidateRequest),
    PutRefreshToken(proto::PutRefreshTokenRequest),
    Import(proto::ImportSecretRequest),
    CompleteLogin(proto::CompleteLoginRequest),
    Logout(proto::LogoutRequest),
    TestAlert(proto::TestAlertRequest),
}

#[derive(Clone, Default)]
struct Fake {
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Fake {
    fn record(&self, seen: Seen) {
        self.seen.lock().unwrap().push(seen);
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

const EXPIRY: i64 = 1_900_000_000;
const NEEDS_LOGIN: &str =
    "gmail needs login: run `tokenctl login gmail` as an admin (the grant was revoked)";

fn ts(seconds: i64, nanos: i32) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp { seconds, nanos })
}

fn headers_for(credential: &str, round: u32) -> proto::GetHeadersResponse {
    proto::GetHeadersResponse {
        headers: vec![
            proto::Header {
                name: "Authorization".into(),
                value: format!("Bearer tok-{credential}-{round}"),
            },
            proto::Header {
                name: "X-Scio-ActAs".into(),
                value: "alice@example.com".into(),
            },
        ],
        expires_at: ts(EXPIRY + i64::from(round), 250_000_000),
        token_fingerprint: format!("fp{round}"),
        stale: round > 1,
    }
}

fn refreshed() -> proto::RefreshResponse {
    proto::RefreshResponse {
        expires_at: ts(EXPIRY, 0),
        token_fingerprint: "0123456789abcdef".into(),
    }
}

#[tonic::async_trait]
impl TokenBroker for Fake {
    async fn get_headers(
        &self,
        req: Request<proto::GetHeadersRequest>,
    ) -> Result<Response<proto::GetHeadersResponse>, Status> {
        let r = req.into_inner();
        self.record(Seen::Headers(r.clone()));
        match r.credential.as_str() {
            "gmail" => Err(Status::failed_precondition(NEEDS_LOGIN)),
            "nope" => Err(Status::not_found("no credential named \"nope\"")),
            "secret" => Err(Status::permission_denied("uid 1000 may not use \"secret\"")),
            name => Ok(Response::new(headers_for(name, 1))),
        }
    }

    type WatchHeadersStream =
        tokio_stream::Iter<std::vec::IntoIter<Result<proto::GetHeadersResponse, Status>>>;

    async fn watch_headers(
        &self,
        req: Request<proto::GetHeadersRequest>,
    ) -> Result<Response<Self::WatchHeadersStream>, Status> {
        let r = req.into_inner();
        let items = match r.credential.as_str() {
            "nope" => return Err(Status::not_found("no credential named \"nope\"")),
            "removed" => vec![
                Ok(headers_for("removed", 1)),
                Err(Status::not_found("\"removed\" was removed from the config")),
            ],
            name => vec![Ok(headers_for(name, 1)), Ok(headers_for(name, 2))],
        };
        Ok(Response::new(tokio_stream::iter(items)))
    }

    async fn invalidate(
        &self,
        req: Request<proto::InvalidateRequest>,
    ) -> Result<Response<proto::InvalidateResponse>, Status> {
        let r = req.into_inner();
        self.record(Seen::Invalidate(r.clone()));
        Ok(Response::new(proto::InvalidateResponse {
            refreshing: r.token_fingerprint == "fp1",
        }))
    }

    async fn who_am_i(
        &self,
        _: Request<proto::WhoAmIRequest>,
    ) -> Result<Response<proto::WhoAmIResponse>, Status> {
        Ok(Response::new(proto::WhoAmIResponse {
            uid: 1000,
            gid: 1000,
            groups: vec![27],
            pid: 0,
            admin: false,
            credentials: vec!["gmail".into()],
            proxies: vec![
                proto::ProxyEndpoint {
                    name: "glean".into(),
                    credential: "gmail".into(),
                    listen: "127.0.0.1:8787".into(),
                    upstream: "https://acme-be.glean.com".into(),
                },
                proto::ProxyEndpoint {
                    name: "glean-unix".into(),
                    credential: "gmail".into(),
                    listen: "unix:/run/tokend/glean.sock".into(),
                    upstream: "https://acme-be.glean.com".into(),
                },
            ],
        }))
    }

    async fn list_credentials(
        &self,
        _: Request<proto::ListCredentialsRequest>,
    ) -> Result<Response<proto::ListCredentialsResponse>, Status> {
        Ok(Response::new(proto::ListCredentialsResponse {
            credentials: vec![
                proto::CredentialStatus {
                    name: "gmail".into(),
                    kind: "oauth".into(),
                    state: proto::CredentialState::NeedsLogin as i32,
                    last_error: "invalid_grant: token revoked".into(),
                    ..Default::default()
                },
                proto::CredentialStatus {
                    name: "glean".into(),
                    kind: "glean_token".into(),
                    permission: "global".into(),
                    state: proto::CredentialState::Fresh as i32,
                    expires_at: ts(EXPIRY, 5),
                    scopes: vec!["search".into(), "chat".into()],
                    owner: "ops@example.com".into(),
                    last_refresh: ts(EXPIRY - 3600, 0),
                    next_refresh: ts(EXPIRY - 600, 0),
                    instance: "acme".into(),
                    last_error: String::new(),
                    fleet: None,
                },
                proto::CredentialStatus {
                    name: "future".into(),
                    kind: "oauth".into(),
                    state: 99,
                    ..Default::default()
                },
            ],
        }))
    }

    async fn list_alerts(
        &self,
        _: Request<proto::ListAlertsRequest>,
    ) -> Result<Response<proto::ListAlertsResponse>, Status> {
        Ok(Response::new(proto::ListAlertsResponse {
            alerts: vec![proto::Alert {
                dedup_key: "glean/expiring".into(),
                credential: "glean".into(),
                event: "expiring".into(),
                severity: "warning".into(),
                summary: "glean expires in 6d".into(),
                expires_at: ts(EXPIRY, 0),
                opened_at: ts(EXPIRY - 86_400, 0),
                last_sent: None,
            }],
        }))
    }
}

#[tonic::async_trait]
impl Admin for Fake {
    async fn refresh(
        &self,
        req: Request<proto::RefreshRequest>,
    ) -> Result<Response<proto::RefreshResponse>, Status> {
        match req.into_inner().credential.as_str() {
            "static" => Err(Status::failed_precondition(
                "\"static\" is a static token: nothing to refresh",
            )),
            _ => Ok(Response::new(refreshed())),
        }
    }

    async fn put_refresh_token(
        &self,
        req: Request<proto::PutRefreshTokenRequest>,
    ) -> Result<Response<proto::RefreshResponse>, Status> {
        self.record(Seen::PutRefreshToken(req.into_inner()));
        Ok(Response::new(refreshed()))
    }

    async fn import_secret(
        &self,
        req: Request<proto::ImportSecretRequest>,
    ) -> Result<Response<proto::ImportSecretResponse>, Status> {
        self.record(Seen::Import(req.into_inner()));
        Ok(Response::new(proto::ImportSecretResponse {}))
    }

    async fn begin_login(
        &self,
        req: Request<proto::BeginLoginRequest>,
    ) -> Result<Response<proto::BeginLoginResponse>, Status> {
        Ok(Response::new(proto::BeginLoginResponse {
            authorization_endpoint: "https://issuer.example/authorize".into(),
            client_id: format!("client-{}", req.into_inner().credential),
            scopes: vec!["openid".into(), "offline_access".into()],
            redirect_uri: "http://127.0.0.1:8765/callback".into(),
        }))
    }

    async fn complete_login(
        &self,
        req: Request<proto::CompleteLoginRequest>,
    ) -> Result<Response<proto::RefreshResponse>, Status> {
        self.record(Seen::CompleteLogin(req.into_inner()));
        Ok(Response::new(refreshed()))
    }

    async fn logout(
        &self,
        req: Request<proto::LogoutRequest>,
    ) -> Result<Response<proto::LogoutResponse>, Status> {
        let r = req.into_inner();
        self.record(Seen::Logout(r.clone()));
        Ok(Response::new(proto::LogoutResponse { revoked: r.revoke }))
    }

    async fn test_alert(
        &self,
        req: Request<proto::TestAlertRequest>,
    ) -> Result<Response<proto::TestAlertResponse>, Status> {
        let r = req.into_inner();
        self.record(Seen::TestAlert(r.clone()));
        if r.sink == "pager" {
            Ok(Response::new(proto::TestAlertResponse {}))
        } else {
            Err(Status::invalid_argument(format!(
                "no alert sink named {:?}",
                r.sink
            )))
        }
    }

    async fn reload(
        &self,
        _: Request<proto::ReloadRequest>,
    ) -> Result<Response<proto::ReloadResponse>, Status> {
        Ok(Response::new(proto::ReloadResponse {
            added: vec!["new".into()],
            changed: vec![],
            removed: vec!["old".into()],
            unchanged: 4,
        }))
    }
}

/// A fake daemon serving on `dir/tokend.sock` until `stop` is sent or the
/// test's runtime ends.
struct Daemon {
    fake: Fake,
    client: Client,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
    _dir: TempDir,
}

async fn start() -> Daemon {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("tokend.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    let fake = Fake::default();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tonic::transport::Server::builder()
        .add_service(TokenBrokerServer::new(fake.clone()))
        .add_service(AdminServer::new(fake.clone()));
    let task = tokio::spawn(async move {
        server
            .serve_with_incoming_shutdown(UnixListenerStream::new(listener), async {
                stopped.await.ok();
            })
            .await
            .unwrap();
    });
    let client = Client::connect(&socket).await.unwrap();
    assert_eq!(client.socket(), socket);
    Daemon {
        fake,
        client,
        stop,
        task,
        _dir: dir,
    }
}

fn at(seconds: i64, nanos: i32) -> Option<jiff::Timestamp> {
    Some(jiff::Timestamp::new(seconds, nanos).unwrap())
}

#[tokio::test]
async fn headers_round_trip() {
    let d = start().await;
    let req = HeadersRequest::new("glean")
        .act_as("alice@example.com")
        .scope("search")
        .min_valid(Duration::from_millis(90_500));
    let h = d.client.headers(&req).await.unwrap();

    assert_eq!(
        h.iter().collect::<Vec<_>>(),
        [
            ("Authorization", "Bearer tok-glean-1"),
            ("X-Scio-ActAs", "alice@example.com")
        ]
    );
    assert_eq!(h.bearer_token(), Some("tok-glean-1"));
    assert_eq!(h.get("x-scio-actas"), Some("alice@example.com"));
    assert_eq!(h.expires_at, at(EXPIRY + 1, 250_000_000));
    assert_eq!(h.fingerprint, "fp1");
    assert!(!h.stale);
    assert!(!format!("{h:?}").contains("tok-glean-1"));
    // As an `http::HeaderMap`: every header, values sensitive (kept out of
    // HTTP clients' debug output).
    let map = h.header_map();
    assert_eq!(map.len(), 2);
    assert_eq!(map["authorization"], "Bearer tok-glean-1");
    assert!(map["authorization"].is_sensitive());
    assert!(!format!("{map:?}").contains("tok-glean-1"));

    assert_eq!(
        d.fake.seen(),
        [Seen::Headers(proto::GetHeadersRequest {
            credential: "glean".into(),
            act_as: "alice@example.com".into(),
            required_scopes: vec!["search".into()],
            min_valid: Some(prost_types::Duration {
                seconds: 90,
                nanos: 500_000_000
            }),
        })]
    );
}

#[tokio::test]
async fn plain_request_sends_empty_fields() {
    let d = start().await;
    d.client.headers(&HeadersRequest::new("gh")).await.unwrap();
    assert_eq!(
        d.fake.seen(),
        [Seen::Headers(proto::GetHeadersRequest {
            credential: "gh".into(),
            ..Default::default()
        })]
    );
}

#[tokio::test]
async fn errors_keep_the_daemon_message() {
    let d = start().await;
    let e = d
        .client
        .headers(&HeadersRequest::new("gmail"))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, Error::FailedPrecondition(m) if m == NEEDS_LOGIN),
        "{e:?}"
    );
    assert_eq!(e.to_string(), NEEDS_LOGIN);
    assert_eq!(e.code(), Some(Code::FailedPrecondition));

    let e = d
        .client
        .headers(&HeadersRequest::new("nope"))
        .await
        .unwrap_err();
    assert!(matches!(&e, Error::NotFound(m) if m == "no credential named \"nope\""));

    let e = d
        .client
        .headers(&HeadersRequest::new("secret"))
        .await
        .unwrap_err();
    assert!(matches!(&e, Error::PermissionDenied(m) if m == "uid 1000 may not use \"secret\""));

    let e = d.client.test_alert("slack").await.unwrap_err();
    assert!(matches!(&e, Error::InvalidArgument(m) if m == "no alert sink named \"slack\""));
}

#[tokio::test]
async fn watch_yields_each_rotation_then_ends() {
    let d = start().await;
    let stream = d.client.watch(&HeadersRequest::new("gh")).await.unwrap();
    let all: Vec<_> = stream.collect().await;
    assert_eq!(all.len(), 2);
    let first = all[0].as_ref().unwrap();
    let second = all[1].as_ref().unwrap();
    assert_eq!(first.bearer_token(), Some("tok-gh-1"));
    assert_eq!(first.fingerprint, "fp1");
    assert_eq!(second.bearer_token(), Some("tok-gh-2"));
    assert_eq!(second.fingerprint, "fp2");
    assert_eq!(second.expires_at, at(EXPIRY + 2, 250_000_000));
    assert!(second.stale);
}

#[tokio::test]
async fn watch_ends_with_the_daemon_error() {
    let d = start().await;
    let mut stream = Box::pin(
        d.client
            .watch(&HeadersRequest::new("removed"))
            .await
            .unwrap(),
    );
    assert!(stream.next().await.unwrap().is_ok());
    let e = stream.next().await.unwrap().unwrap_err();
    assert!(matches!(&e, Error::NotFound(m) if m == "\"removed\" was removed from the config"));
    assert!(stream.next().await.is_none());

    let Err(e) = d.client.watch(&HeadersRequest::new("nope")).await else {
        panic!("watching a missing credential succeeded");
    };
    assert!(matches!(e, Error::NotFound(_)));
}

#[tokio::test]
async fn whoami_reads_an_absent_pid_as_none() {
    let d = start().await;
    let me = d.client.whoami().await.unwrap();
    assert_eq!(
        (me.uid, me.gid, me.groups.as_slice()),
        (1000, 1000, &[27][..])
    );
    assert_eq!(me.pid, None, "pid 0 means another pid namespace");
    assert!(!me.admin);
    assert_eq!(me.credentials, ["gmail"]);
    let urls: Vec<(String, Option<&str>)> =
        me.proxies.iter().map(|p| (p.url(), p.socket())).collect();
    assert_eq!(
        urls,
        [
            ("http://127.0.0.1:8787".to_owned(), None),
            (
                "http://localhost".to_owned(),
                Some("/run/tokend/glean.sock")
            )
        ]
    );
}

#[tokio::test]
async fn status_converts_states_and_empty_fields() {
    let d = start().await;
    let all = d.client.status().await.unwrap();
    assert_eq!(all.len(), 3);

    let gmail = &all[0];
    assert_eq!(gmail.name, "gmail");
    assert_eq!(gmail.state, State::NeedsLogin);
    assert_eq!(gmail.state.to_string(), "needs_login");
    assert_eq!(gmail.permission, None);
    assert_eq!(gmail.owner, None);
    assert_eq!(gmail.instance, None);
    assert_eq!(gmail.expires_at, None);
    assert_eq!(gmail.last_refresh, None);
    assert_eq!(
        gmail.last_error.as_deref(),
        Some("invalid_grant: token revoked")
    );

    let glean = &all[1];
    assert_eq!(glean.kind, "glean_token");
    assert_eq!(glean.state, State::Fresh);
    assert_eq!(glean.permission.as_deref(), Some("global"));
    assert_eq!(glean.expires_at, at(EXPIRY, 5));
    assert_eq!(glean.scopes, ["search", "chat"]);
    assert_eq!(glean.owner.as_deref(), Some("ops@example.com"));
    assert_eq!(glean.instance.as_deref(), Some("acme"));
    assert_eq!(glean.last_error, None);
    assert_eq!(glean.last_refresh, at(EXPIRY - 3600, 0));
    assert_eq!(glean.next_refresh, at(EXPIRY - 600, 0));

    assert_eq!(all[2].state, State::Unknown);
}

#[tokio::test]
async fn broker_calls() {
    let d = start().await;
    assert!(d.client.invalidate("gh", "fp1").await.unwrap());
    assert!(!d.client.invalidate("gh", "old").await.unwrap());

    let alerts = d.client.alerts().await.unwrap();
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].event, "expiring");
    assert_eq!(alerts[0].severity, "warning");
    assert_eq!(alerts[0].opened_at, at(EXPIRY - 86_400, 0));
    assert_eq!(alerts[0].last_sent, None);
    assert_eq!(
        d.fake.seen()[0],
        Seen::Invalidate(proto::InvalidateRequest {
            credential: "gh".into(),
            token_fingerprint: "fp1".into(),
        })
    );
}

#[tokio::test]
async fn admin_calls_send_what_they_are_given() {
    let d = start().await;
    let c = &d.client;

    let r = c.refresh("gh").await.unwrap();
    assert_eq!(r.expires_at, at(EXPIRY, 0));
    assert_eq!(r.fingerprint, "0123456789abcdef");
    let e = c.refresh("static").await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "\"static\" is a static token: nothing to refresh"
    );

    let refresh = SecretString::from("rt-1".to_owned());
    let access = SecretString::from("at-1".to_owned());
    let access_expiry = jiff::Timestamp::new(EXPIRY, 7).unwrap();
    c.put_refresh_token("gh", &refresh, None).await.unwrap();
    c.put_refresh_token("gh", &refresh, Some((&access, access_expiry)))
        .await
        .unwrap();
    c.import(
        "glean",
        &SecretString::from("glean-secret".to_owned()),
        None,
    )
    .await
    .unwrap();
    c.import(
        "glean",
        &SecretString::from("glean-secret".to_owned()),
        Some(access_expiry),
    )
    .await
    .unwrap();

    let login = c.begin_login("gh").await.unwrap();
    assert_eq!(
        login.authorization_endpoint,
        "https://issuer.example/authorize"
    );
    assert_eq!(login.client_id, "client-gh");
    assert_eq!(login.scopes, ["openid", "offline_access"]);
    assert_eq!(login.redirect_uri, "http://127.0.0.1:8765/callback");
    let done = c
        .complete_login(
            "gh",
            &SecretString::from("code-1".to_owned()),
            &SecretString::from("verifier-1".to_owned()),
            "http://127.0.0.1:8765/callback",
        )
        .await
        .unwrap();
    assert_eq!(done.fingerprint, "0123456789abcdef");

    assert!(c.logout("gh", true).await.unwrap());
    assert!(!c.logout("gh", false).await.unwrap());
    c.test_alert("pager").await.unwrap();

    let reloaded = c.reload().await.unwrap();
    assert_eq!(reloaded.added, ["new"]);
    assert!(reloaded.changed.is_empty());
    assert_eq!(reloaded.removed, ["old"]);
    assert_eq!(reloaded.unchanged, 4);

    assert_eq!(
        d.fake.seen(),
        [
            Seen::PutRefreshToken(proto::PutRefreshTokenRequest {
                credential: "gh".into(),
                refresh_token: "rt-1".into(),
                access_token: String::new(),
                access_token_expires_at: None,
            }),
            Seen::PutRefreshToken(proto::PutRefreshTokenRequest {
                credential: "gh".into(),
                refresh_token: "rt-1".into(),
                access_token: "at-1".into(),
                access_token_expires_at: ts(EXPIRY, 7),
            }),
            Seen::Import(proto::ImportSecretRequest {
                credential: "glean".into(),
                secret: "glean-secret".into(),
                expires_at: None,
            }),
            Seen::Import(proto::ImportSecretRequest {
                credential: "glean".into(),
                secret: "glean-secret".into(),
                expires_at: ts(EXPIRY, 7),
            }),
            Seen::CompleteLogin(proto::CompleteLoginRequest {
                credential: "gh".into(),
                code: "code-1".into(),
                code_verifier: "verifier-1".into(),
                redirect_uri: "http://127.0.0.1:8765/callback".into(),
            }),
            Seen::Logout(proto::LogoutRequest {
                credential: "gh".into(),
                revoke: true,
            }),
            Seen::Logout(proto::LogoutRequest {
                credential: "gh".into(),
                revoke: false,
            }),
            Seen::TestAlert(proto::TestAlertRequest {
                sink: "pager".into(),
            }),
        ]
    );
}

#[tokio::test]
async fn clones_share_the_connection() {
    let d = start().await;
    let calls = (0..8).map(|_| {
        let c = d.client.clone();
        tokio::spawn(async move { c.headers(&HeadersRequest::new("gh")).await })
    });
    for call in calls.collect::<Vec<_>>() {
        assert_eq!(call.await.unwrap().unwrap().fingerprint, "fp1");
    }
    // The raw channel reaches the same daemon.
    let mut raw = proto::token_broker_client::TokenBrokerClient::new(d.client.channel());
    let listed = raw
        .list_credentials(proto::ListCredentialsRequest {})
        .await
        .unwrap();
    assert_eq!(listed.into_inner().credentials.len(), 3);
}

#[tokio::test]
async fn daemon_gone_mid_session_is_a_transport_error() {
    let d = start().await;
    d.client.headers(&HeadersRequest::new("gh")).await.unwrap();
    d.stop.send(()).unwrap();
    d.task.await.unwrap();
    let e = d
        .client
        .headers(&HeadersRequest::new("gh"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(Code::Unavailable), "{e:?}");
    assert!(matches!(e, Error::Transport(_)), "{e:?}");
    assert!(!e.to_string().is_empty());
}

#[tokio::test]
async fn missing_socket_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("absent.sock");
    let e = Client::connect(&socket).await.unwrap_err();
    assert_eq!(e.path, socket);
    assert!(!e.access_denied);
    let message = e.to_string();
    assert!(
        message.starts_with(&format!("cannot reach tokend at {}: ", socket.display())),
        "{message}"
    );
    assert!(message.contains("No such file or directory"), "{message}");
    assert!(message.ends_with("is the daemon running? (socket from --socket or TOKEND_SOCKET)"));
    assert_eq!(message.matches("No such file").count(), 1, "{message}");

    // Through the call-level error too.
    let e = Error::from(e);
    assert_eq!(e.code(), None);
    assert_eq!(e.to_string(), message);
}

#[tokio::test]
async fn socket_without_listener_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("stale.sock");
    // A socket file left behind by a daemon that died.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    let e = tokend_client::channel(Path::new(&socket))
        .await
        .unwrap_err();
    assert!(!e.access_denied);
    assert!(e.reason().contains("refused"), "{}", e.reason());
}
