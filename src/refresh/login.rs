//! Commands a person starts through `tokenctl`: login (discovery, then the
//! code exchange), a refresh token handed in directly, and logout.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroizing;

use super::{Driver, DriverError, LoginInfo};
use crate::credential::OAuthGrant;
use crate::oauth::{self, TokenError};
use crate::store::Record;
use crate::token::{State, Token};

impl Driver {
    fn login_only(&self) -> Result<(), DriverError> {
        match self.oauth().grant {
            OAuthGrant::RefreshToken => Ok(()),
            OAuthGrant::ClientCredentials => Err(DriverError::NotApplicable(format!(
                "credential `{}` uses client credentials; there is nothing to log in to",
                self.name()
            ))),
        }
    }

    /// Checks that the issuer can run the login tokend will ask for: an
    /// authorization endpoint, S256 PKCE, and the configured client
    /// authentication (RFC 8414's default is client_secret_basic).
    pub(super) async fn begin_login(&mut self) -> Result<LoginInfo, DriverError> {
        self.login_only()?;
        let name = self.name().to_owned();
        let auth_method = self.oauth().client.auth_method;
        let metadata = self
            .metadata()
            .await
            .map_err(|e| issuer_error(&e, e.to_string()))?;
        let authorization_endpoint = metadata.authorization_endpoint.clone().ok_or_else(|| {
            DriverError::Misconfigured(
                format!(
                    "the issuer advertises no authorization_endpoint; `{name}` cannot log in there"
                )
                .into(),
            )
        })?;
        supports_login(metadata, auth_method, &name)
            .map_err(|e| DriverError::Misconfigured(e.into()))?;
        let oauth = self.oauth();
        Ok(LoginInfo {
            authorization_endpoint,
            client_id: oauth.client.client_id.clone(),
            scopes: oauth.client.scopes.clone(),
            redirect_uri: oauth.redirect_uri.clone(),
        })
    }

    /// Exchanges a login's code; the refresh token is committed before
    /// anything is served.
    pub(super) async fn complete_login(
        &mut self,
        code: &SecretString,
        verifier: &SecretString,
        redirect_uri: &str,
    ) -> Result<Arc<Token>, DriverError> {
        self.login_only()?;
        let endpoint = self
            .endpoint()
            .await
            .map_err(|e| issuer_error(&e, e.to_string()))?;
        let now = self.now();
        let oauth = self.oauth();
        let grant = oauth::Grant::AuthorizationCode {
            code,
            verifier,
            redirect_uri,
        };
        let lifetime = oauth.schedule.default_lifetime;
        let tokens = self
            .deps
            .endpoint
            .request(&endpoint, &oauth.client, grant, lifetime, now)
            .await
            .map_err(|e| issuer_error(&e, format!("the code exchange failed: {e}")))?;
        let Some(refresh_token) = tokens.refresh_token.as_ref() else {
            return Err(DriverError::Misconfigured(
                "the authorization server issued no refresh token; it may need the \
                 `offline_access` scope in the credential's scopes"
                    .into(),
            ));
        };
        let mut record = Record {
            refresh_token: Some(Zeroizing::new(refresh_token.expose_secret().to_owned())),
            logged_in_at: Some(now.as_second()),
            ..Record::default()
        };
        if self.seat.is_some() {
            // The whole fleet takes the new grant, access token included.
            record.access_token = Some(Zeroizing::new(
                tokens.access_token.expose_secret().to_owned(),
            ));
            record.access_expires_at = Some(tokens.expires_at.as_second());
            record.access_issued_at = Some(now.as_second());
            record.scope.clone_from(&tokens.scope);
            self.replace_shared(&record).await.map_err(fleet_error)?;
        }
        self.persist(record).await.map_err(store_error)?;
        self.forget_failures();
        tracing::info!("logged in");
        self.succeeded(tokens, None, now, Duration::ZERO).await;
        self.outcome()
    }

    /// Forgets the refresh token, revoking it at the issuer first if asked.
    pub(super) async fn logout(&mut self, revoke: bool) -> Result<bool, DriverError> {
        self.login_only()?;
        let mut revoked = false;
        if revoke && let Some(rt) = self.record.refresh_token.clone() {
            let endpoint = self
                .metadata()
                .await
                .map_err(|e| issuer_error(&e, e.to_string()))?
                .revocation_endpoint
                .clone()
                .ok_or_else(|| {
                    DriverError::NotApplicable(
                        "the issuer advertises no revocation_endpoint; nothing was changed".into(),
                    )
                })?;
            let rt = SecretString::from(rt.as_str());
            self.deps
                .endpoint
                .revoke(&endpoint, &self.oauth().client, &rt, "refresh_token")
                .await
                .map_err(|e| {
                    issuer_error(&e, format!("revocation failed, nothing was changed: {e}"))
                })?;
            revoked = true;
        }
        let message = format!("logged out; run `tokenctl login {}`", self.name());
        if self.seat.is_some() {
            // Every node stops serving the grant, and none refreshes it.
            let record = Record {
                needs_login: Some(message.clone()),
                ..Record::default()
            };
            self.replace_shared(&record).await.map_err(fleet_error)?;
        }
        self.forget().await?;
        self.unconfirmed_refresh = None;
        tracing::info!(revoked, "logged out");
        self.reset(State::NeedsLogin, message);
        Ok(revoked)
    }

    /// Stores a refresh token handed in directly (and an access token to
    /// serve until the first refresh).
    pub(super) async fn put_refresh_token(
        &mut self,
        refresh_token: SecretString,
        access_token: Option<(SecretString, Timestamp)>,
    ) -> Result<Arc<Token>, DriverError> {
        if self.oauth().grant != OAuthGrant::RefreshToken {
            return Err(DriverError::NotApplicable(format!(
                "credential `{}` does not use refresh tokens",
                self.name()
            )));
        }
        let now = self.now();
        let mut record = Record {
            refresh_token: Some(Zeroizing::new(refresh_token.expose_secret().to_owned())),
            logged_in_at: Some(now.as_second()),
            ..Record::default()
        };
        if let Some((access, exp)) = &access_token {
            record.access_token = Some(Zeroizing::new(access.expose_secret().to_owned()));
            record.access_expires_at = Some(exp.as_second());
            record.access_issued_at = Some(now.as_second());
        }
        if self.seat.is_some() {
            self.replace_shared(&record).await.map_err(fleet_error)?;
        }
        self.persist(record).await.map_err(store_error)?;
        self.forget_failures();
        tracing::info!("new refresh token stored");
        match access_token {
            Some((access, exp)) => {
                let token = self.new_token(access.expose_secret(), Some(exp), now, None);
                self.publish_token(Arc::clone(&token), now);
                Ok(token)
            }
            None if !self.may_refresh() => Err(DriverError::Unavailable(
                format!(
                    "stored for the fleet; the leader of `{}` refreshes it now",
                    self.name()
                )
                .into(),
            )),
            None => {
                self.refresh().await;
                self.outcome()
            }
        }
    }

    /// The issuer's metadata (RFC 8414), fetched on first use.
    pub(super) async fn metadata(&mut self) -> Result<&oauth::Metadata, TokenError> {
        if self.metadata.is_none() {
            let Some(issuer) = self.oauth().issuer.clone() else {
                return Err(TokenError::Permanent {
                    code: "no_issuer".into(),
                    description: Some(format!(
                        "credential `{}` has only a token_endpoint; set issuer so the \
                         authorization and revocation endpoints can be discovered",
                        self.name()
                    )),
                });
            };
            let metadata = self.deps.endpoint.discover(&issuer).await?;
            tracing::info!(token_endpoint = %metadata.token_endpoint, "discovered");
            self.metadata = Some(metadata);
        }
        Ok(self.metadata.as_ref().expect("set above"))
    }
}

/// An issuer's refusal or absence during a command, described by
/// `message`: a permanent refusal needs the configuration fixed; anything
/// else may pass.
fn issuer_error(e: &TokenError, message: String) -> DriverError {
    match e {
        TokenError::Permanent { .. } => DriverError::Misconfigured(message.into()),
        _ => DriverError::Unavailable(message.into()),
    }
}

fn store_error(e: super::record::CommitError) -> DriverError {
    DriverError::Store(e.to_string())
}

fn fleet_error(e: crate::fleet::FleetError) -> DriverError {
    DriverError::Unavailable(format!("the fleet did not take the new grant: {e}").into())
}

/// Whether an issuer can run tokend's login: S256 PKCE, and the configured
/// client authentication (RFC 8414's default when it lists none is
/// client_secret_basic).
pub(super) fn supports_login(
    metadata: &oauth::Metadata,
    auth_method: oauth::AuthMethod,
    name: &str,
) -> Result<(), String> {
    if !metadata
        .code_challenge_methods_supported
        .iter()
        .any(|m| m == "S256")
    {
        return Err(format!(
            "the issuer does not advertise S256 PKCE (code_challenge_methods_supported: {:?}); \
             tokend will not log in without it",
            metadata.code_challenge_methods_supported
        ));
    }
    let methods = &metadata.token_endpoint_auth_methods_supported;
    let supported = if methods.is_empty() {
        auth_method == oauth::AuthMethod::ClientSecretBasic
    } else {
        methods.iter().any(|m| m == auth_method.as_str())
    };
    if supported {
        Ok(())
    } else {
        Err(format!(
            "the issuer does not support auth_method `{}` (it offers {methods:?}); set \
             auth_method for `{name}` to one of those",
            auth_method.as_str()
        ))
    }
}
