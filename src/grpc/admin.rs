//! `tokend.v1.Admin`: operator actions. The broker checks who may; each
//! success is recorded on the `audit` target.

use std::sync::Arc;

use secrecy::SecretString;
use tonic::{Request, Response, Status};

use super::convert::{self, refreshed, reloaded};
use super::{ReloadHandle, peer};
use crate::alert::{Engine, TestAlertError};
use crate::broker::Broker;
use crate::proto;
use crate::proto::admin_server::Admin;

/// Maps the `Admin` service to the broker, the alert engine and the
/// reloader.
#[derive(Debug)]
pub(super) struct AdminService {
    pub(super) broker: Arc<Broker>,
    pub(super) alerts: Option<Arc<Engine>>,
    pub(super) reload: Option<ReloadHandle>,
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn refresh(
        &self,
        req: Request<proto::RefreshRequest>,
    ) -> Result<Response<proto::RefreshResponse>, Status> {
        let peer = peer(&req)?;
        let r = req.into_inner();
        let token = self.broker.refresh(&peer, &r.credential).await?;
        tracing::info!(target: "audit", credential = %r.credential, uid = peer.uid, "admin refresh");
        Ok(Response::new(refreshed(&token)))
    }

    async fn put_refresh_token(
        &self,
        req: Request<proto::PutRefreshTokenRequest>,
    ) -> Result<Response<proto::RefreshResponse>, Status> {
        let peer = peer(&req)?;
        let r = req.into_inner();
        let access = match (r.access_token.is_empty(), r.access_token_expires_at) {
            (true, _) => None,
            (false, Some(at)) => Some((
                SecretString::from(r.access_token),
                convert::time(at, "access_token_expires_at")?,
            )),
            (false, None) => {
                return Err(Status::invalid_argument(
                    "access_token needs access_token_expires_at",
                ));
            }
        };
        let refresh_token = SecretString::from(r.refresh_token);
        let token = self
            .broker
            .put_refresh_token(&peer, &r.credential, refresh_token, access)
            .await?;
        tracing::info!(target: "audit", credential = %r.credential, uid = peer.uid, "refresh token stored");
        Ok(Response::new(refreshed(&token)))
    }

    async fn import_secret(
        &self,
        req: Request<proto::ImportSecretRequest>,
    ) -> Result<Response<proto::ImportSecretResponse>, Status> {
        let peer = peer(&req)?;
        let r = req.into_inner();
        let expires_at = r
            .expires_at
            .map(|t| convert::time(t, "expires_at"))
            .transpose()?;
        let secret = SecretString::from(r.secret);
        self.broker
            .import_secret(&peer, &r.credential, secret, expires_at)
            .await?;
        tracing::info!(target: "audit", credential = %r.credential, uid = peer.uid, "secret imported");
        Ok(Response::new(proto::ImportSecretResponse {}))
    }

    async fn begin_login(
        &self,
        req: Request<proto::BeginLoginRequest>,
    ) -> Result<Response<proto::BeginLoginResponse>, Status> {
        let peer = peer(&req)?;
        let info = self
            .broker
            .begin_login(&peer, &req.get_ref().credential)
            .await?;
        Ok(Response::new(proto::BeginLoginResponse {
            authorization_endpoint: info.authorization_endpoint,
            client_id: info.client_id,
            scopes: info.scopes,
            redirect_uri: info.redirect_uri,
        }))
    }

    async fn complete_login(
        &self,
        req: Request<proto::CompleteLoginRequest>,
    ) -> Result<Response<proto::RefreshResponse>, Status> {
        let peer = peer(&req)?;
        let r = req.into_inner();
        let (code, verifier) = (
            SecretString::from(r.code),
            SecretString::from(r.code_verifier),
        );
        let token = self
            .broker
            .complete_login(&peer, &r.credential, code, verifier, r.redirect_uri)
            .await?;
        tracing::info!(target: "audit", credential = %r.credential, uid = peer.uid, "logged in");
        Ok(Response::new(refreshed(&token)))
    }

    async fn reload(
        &self,
        req: Request<proto::ReloadRequest>,
    ) -> Result<Response<proto::ReloadResponse>, Status> {
        let peer = peer(&req)?;
        self.broker.require_admin(&peer, "reload the config")?;
        let reload = self
            .reload
            .as_ref()
            .ok_or_else(|| Status::unavailable("reloading is not available"))?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let stopping = || Status::unavailable("tokend is shutting down");
        reload.send(tx).await.map_err(|_| stopping())?;
        let done = rx
            .await
            .map_err(|_| stopping())?
            .map_err(Status::failed_precondition)?;
        tracing::info!(target: "audit", uid = peer.uid, "config reloaded");
        Ok(Response::new(reloaded(done)))
    }

    async fn test_alert(
        &self,
        req: Request<proto::TestAlertRequest>,
    ) -> Result<Response<proto::TestAlertResponse>, Status> {
        let peer = peer(&req)?;
        self.broker.require_admin(&peer, "send test alerts")?;
        let engine = self.alerts.as_ref().ok_or_else(|| {
            Status::failed_precondition("no [alerts] table in the config: no sinks to test")
        })?;
        engine
            .test(&req.get_ref().sink)
            .await
            .map_err(|e| match e {
                TestAlertError::NoSuchSink(_) => Status::not_found(e.to_string()),
                TestAlertError::Failed { .. } => Status::unavailable(e.to_string()),
            })?;
        Ok(Response::new(proto::TestAlertResponse {}))
    }

    async fn logout(
        &self,
        req: Request<proto::LogoutRequest>,
    ) -> Result<Response<proto::LogoutResponse>, Status> {
        let peer = peer(&req)?;
        let r = req.into_inner();
        let revoked = self.broker.logout(&peer, &r.credential, r.revoke).await?;
        tracing::info!(target: "audit", credential = %r.credential, uid = peer.uid, revoked, "logged out");
        Ok(Response::new(proto::LogoutResponse { revoked }))
    }
}
