//! [`Client`]: one method per RPC of tokend's `TokenBroker` and `Admin`
//! services.

use std::path::{Path, PathBuf};

use jiff::Timestamp;
use secrecy::SecretString;
use tokio_stream::{Stream, StreamExt};
use tonic::transport::Channel;

use crate::convert::{expose, to_proto_timestamp};
use crate::proto::admin_client::AdminClient;
use crate::proto::token_broker_client::TokenBrokerClient;
use crate::{
    Alert, ConnectError, CredentialStatus, Error, Headers, HeadersRequest, LoginInfo, Refreshed,
    Reloaded, WhoAmI, proto,
};

/// A connection to tokend, shared by all calls.
///
/// Cloning is cheap (the clones share one HTTP/2 connection), so hand a
/// clone to each task rather than wrapping it in a lock. The daemon knows
/// the caller from the socket's peer credentials, so nothing here carries
/// an identity; calls the caller may not make fail with
/// [`Error::PermissionDenied`].
#[derive(Debug, Clone)]
pub struct Client {
    channel: Channel,
    socket: PathBuf,
}

impl Client {
    /// Connects to the daemon at `socket` (usually
    /// [`socket_from_env`](crate::socket_from_env)). Connects at once, so a
    /// missing daemon is reported here, with advice for a person.
    pub async fn connect(socket: impl AsRef<Path>) -> Result<Self, ConnectError> {
        let socket = socket.as_ref();
        Ok(Self {
            channel: crate::channel(socket).await?,
            socket: socket.to_owned(),
        })
    }

    /// The underlying channel, for services this crate does not wrap (gRPC
    /// health, reflection) or the raw clients in [`proto`].
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// The socket this client dialled, for messages that name the daemon.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    fn broker(&self) -> TokenBrokerClient<Channel> {
        TokenBrokerClient::new(self.channel.clone())
    }

    fn admin(&self) -> AdminClient<Channel> {
        AdminClient::new(self.channel.clone())
    }

    /// Status of every credential the caller may fetch (all of them for an
    /// admin), as `tokenctl status` shows it.
    pub async fn status(&self) -> Result<Vec<CredentialStatus>, Error> {
        let response = self
            .broker()
            .list_credentials(proto::ListCredentialsRequest {})
            .await?;
        Ok(response
            .into_inner()
            .credentials
            .into_iter()
            .map(CredentialStatus::from)
            .collect())
    }

    /// The headers to send with one API request. For OAuth credentials the
    /// call waits for a refresh already under way, so the answer is valid
    /// for at least the request's (or the credential's) `min_valid`.
    pub async fn headers(&self, req: &HeadersRequest) -> Result<Headers, Error> {
        let response = self
            .broker()
            .get_headers(proto::GetHeadersRequest::from(req))
            .await?;
        Ok(Headers::from(response.into_inner()))
    }

    /// The current headers at once, then again after every rotation, for
    /// long-lived callers that keep headers in memory.
    ///
    /// The stream ends with [`Error::FailedPrecondition`] when the credential
    /// needs a person (login, import, config fix), [`Error::NotFound`] when
    /// it is removed, and [`Error::Unavailable`] if the daemon goes away;
    /// watch again (after a pause) to resume.
    pub async fn watch(
        &self,
        req: &HeadersRequest,
    ) -> Result<impl Stream<Item = Result<Headers, Error>> + Send + 'static, Error> {
        let response = self
            .broker()
            .watch_headers(proto::GetHeadersRequest::from(req))
            .await?;
        Ok(response
            .into_inner()
            .map(|message| message.map(Headers::from).map_err(Error::from)))
    }

    /// Reports that the API answered 401 to the token with `fingerprint`
    /// ([`Headers::fingerprint`]), so tokend replaces it at once. Answers
    /// whether a refresh started; `false` when the token was already
    /// replaced (fetch headers again) or cannot be refreshed.
    pub async fn invalidate(&self, credential: &str, fingerprint: &str) -> Result<bool, Error> {
        let response = self
            .broker()
            .invalidate(proto::InvalidateRequest {
                credential: credential.to_owned(),
                token_fingerprint: fingerprint.to_owned(),
            })
            .await?;
        Ok(response.into_inner().refreshing)
    }

    /// Open alerts about the credentials the caller may see.
    pub async fn alerts(&self) -> Result<Vec<Alert>, Error> {
        let response = self
            .broker()
            .list_alerts(proto::ListAlertsRequest {})
            .await?;
        Ok(response
            .into_inner()
            .alerts
            .into_iter()
            .map(Alert::from)
            .collect())
    }

    /// Who the daemon sees on this connection, whether that is an admin, and
    /// which credentials it may fetch.
    pub async fn whoami(&self) -> Result<WhoAmI, Error> {
        let response = self.broker().who_am_i(proto::WhoAmIRequest {}).await?;
        Ok(WhoAmI::from(response.into_inner()))
    }

    /// Admin: refreshes `credential` now, whatever its schedule, and answers
    /// with the new token's expiry.
    pub async fn refresh(&self, credential: &str) -> Result<Refreshed, Error> {
        let response = self
            .admin()
            .refresh(proto::RefreshRequest {
                credential: credential.to_owned(),
            })
            .await?;
        Ok(Refreshed::from(response.into_inner()))
    }

    /// Admin: stores a refresh token obtained elsewhere, and optionally the
    /// access token issued with it (with its expiry) so it is served at once
    /// instead of after a first refresh.
    pub async fn put_refresh_token(
        &self,
        credential: &str,
        refresh_token: &SecretString,
        access_token: Option<(&SecretString, Timestamp)>,
    ) -> Result<Refreshed, Error> {
        let response = self
            .admin()
            .put_refresh_token(proto::PutRefreshTokenRequest {
                credential: credential.to_owned(),
                refresh_token: expose(refresh_token),
                access_token: access_token.map(|(t, _)| expose(t)).unwrap_or_default(),
                access_token_expires_at: access_token.map(|(_, at)| to_proto_timestamp(at)),
            })
            .await?;
        Ok(Refreshed::from(response.into_inner()))
    }

    /// Admin: stores a Glean token's secret (credentials with
    /// `secret = { store = true }`), with the expiry chosen when it was
    /// created if known, so tokend can warn before it lapses.
    pub async fn import(
        &self,
        credential: &str,
        secret: &SecretString,
        expires_at: Option<Timestamp>,
    ) -> Result<(), Error> {
        self.admin()
            .import_secret(proto::ImportSecretRequest {
                credential: credential.to_owned(),
                secret: expose(secret),
                expires_at: expires_at.map(to_proto_timestamp),
            })
            .await?;
        Ok(())
    }

    /// Admin: what a login needs to send a person to the authorization
    /// server. The daemon discovers the issuer and checks it supports S256
    /// PKCE, so the login fails here rather than in the browser.
    pub async fn begin_login(&self, credential: &str) -> Result<LoginInfo, Error> {
        let response = self
            .admin()
            .begin_login(proto::BeginLoginRequest {
                credential: credential.to_owned(),
            })
            .await?;
        Ok(LoginInfo::from(response.into_inner()))
    }

    /// Admin: has the daemon exchange the authorization `code` and its PKCE
    /// `verifier` with its own client credentials, and store the tokens:
    /// the client secret and refresh token never reach the caller.
    /// `redirect_uri` must be the one the authorization request used.
    pub async fn complete_login(
        &self,
        credential: &str,
        code: &SecretString,
        verifier: &SecretString,
        redirect_uri: &str,
    ) -> Result<Refreshed, Error> {
        let response = self
            .admin()
            .complete_login(proto::CompleteLoginRequest {
                credential: credential.to_owned(),
                code: expose(code),
                code_verifier: expose(verifier),
                redirect_uri: redirect_uri.to_owned(),
            })
            .await?;
        Ok(Refreshed::from(response.into_inner()))
    }

    /// Admin: forgets the refresh token, first revoking it at the issuer
    /// when `revoke` is set. Answers whether the issuer confirmed the
    /// revocation.
    pub async fn logout(&self, credential: &str, revoke: bool) -> Result<bool, Error> {
        let response = self
            .admin()
            .logout(proto::LogoutRequest {
                credential: credential.to_owned(),
                revoke,
            })
            .await?;
        Ok(response.into_inner().revoked)
    }

    /// Admin: re-reads the config and its secrets, as SIGHUP does. An
    /// invalid config is refused whole ([`Error::FailedPrecondition`] naming
    /// file, line and field) and the running one keeps serving.
    pub async fn reload(&self) -> Result<Reloaded, Error> {
        let response = self.admin().reload(proto::ReloadRequest {}).await?;
        Ok(Reloaded::from(response.into_inner()))
    }

    /// Admin: sends a test event through the alert sink named `sink`, to
    /// check its delivery before a real alert depends on it.
    pub async fn test_alert(&self, sink: &str) -> Result<(), Error> {
        self.admin()
            .test_alert(proto::TestAlertRequest {
                sink: sink.to_owned(),
            })
            .await?;
        Ok(())
    }
}
