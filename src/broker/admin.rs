//! Operator commands: admin-only, each resolved to its credential once and
//! then forwarded to that credential's refresh driver (or, for imported
//! Glean secrets, written to the store).

use std::sync::Arc;

use jiff::Timestamp;
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::oneshot;
use zeroize::Zeroizing;

use super::{Broker, BrokerError, Slot};
use crate::credential::{GleanSecret, Kind};
use crate::peer::Peer;
use crate::refresh::{Command, LoginInfo, Reply};
use crate::store::{self, Record};
use crate::token::{Snapshot, State, Token};

impl Broker {
    /// Whether `peer` may call administrative methods and see everything.
    pub fn is_admin(&self, peer: &Peer) -> bool {
        self.admins.admits(peer)
    }

    /// Refuses `peer` unless it is an admin; `action` says what it tried.
    pub fn require_admin(&self, peer: &Peer, action: &'static str) -> Result<(), BrokerError> {
        if self.is_admin(peer) {
            Ok(())
        } else {
            Err(BrokerError::NotAdmin {
                uid: peer.uid,
                action,
            })
        }
    }

    /// The slot of `name` for an admin command on its refresh driver;
    /// `what` says why a credential without one cannot do it.
    fn driver_slot(
        &self,
        peer: &Peer,
        name: &str,
        action: &'static str,
        what: &'static str,
    ) -> Result<Arc<Slot>, BrokerError> {
        self.require_admin(peer, action)?;
        let slot = self.slot(name)?;
        if slot.driver.is_none() {
            return Err(wrong_kind(&slot, what));
        }
        Ok(slot)
    }

    /// Sends a command to `slot`'s driver and waits for its typed answer.
    async fn command<T>(
        &self,
        slot: &Slot,
        command: impl FnOnce(Reply<T>) -> Command,
    ) -> Result<T, BrokerError> {
        let name = &slot.credential.name;
        let gone = || BrokerError::Unavailable {
            name: Arc::clone(name),
            reason: "its refresh task has stopped (tokend is shutting down)".into(),
        };
        let driver = slot.driver.as_ref().ok_or_else(gone)?;
        let (reply, answer) = oneshot::channel();
        driver
            .commands
            .send(command(reply))
            .await
            .map_err(|_| gone())?;
        answer
            .await
            .map_err(|_| gone())?
            .map_err(|e| BrokerError::from_driver(name, e))
    }

    /// Refreshes `name` now (admin only) and returns the new token.
    pub async fn refresh(&self, peer: &Peer, name: &str) -> Result<Arc<Token>, BrokerError> {
        let what = "it does not refresh; rotate its secret instead";
        let slot = self.driver_slot(peer, name, "refresh credentials", what)?;
        self.command(&slot, |reply| Command::Refresh { reply })
            .await
    }

    /// Stores a refresh token (and optionally an access token) from a login.
    pub async fn put_refresh_token(
        &self,
        peer: &Peer,
        name: &str,
        refresh_token: SecretString,
        access_token: Option<(SecretString, Timestamp)>,
    ) -> Result<Arc<Token>, BrokerError> {
        let what = "it does not use refresh tokens";
        let slot = self.driver_slot(peer, name, "store refresh tokens", what)?;
        for t in std::iter::once(&refresh_token).chain(access_token.as_ref().map(|(a, _)| a)) {
            header_safe(t, name, "token")?;
        }
        self.command(&slot, |reply| Command::PutRefreshToken {
            refresh_token,
            access_token,
            reply,
        })
        .await
    }

    /// What a login for `name` needs (admin only); checks the issuer.
    pub async fn begin_login(&self, peer: &Peer, name: &str) -> Result<LoginInfo, BrokerError> {
        let what = "it is not an OAuth credential";
        let slot = self.driver_slot(peer, name, "log credentials in", what)?;
        self.command(&slot, |reply| Command::BeginLogin { reply })
            .await
    }

    /// Exchanges a login's authorization code and stores the tokens.
    pub async fn complete_login(
        &self,
        peer: &Peer,
        name: &str,
        code: SecretString,
        verifier: SecretString,
        redirect_uri: String,
    ) -> Result<Arc<Token>, BrokerError> {
        let what = "it is not an OAuth credential";
        let slot = self.driver_slot(peer, name, "log credentials in", what)?;
        self.command(&slot, |reply| Command::CompleteLogin {
            code,
            verifier,
            redirect_uri,
            reply,
        })
        .await
    }

    /// Forgets `name`'s refresh token, revoking it first if asked.
    pub async fn logout(&self, peer: &Peer, name: &str, revoke: bool) -> Result<bool, BrokerError> {
        let what = "it is not an OAuth credential";
        let slot = self.driver_slot(peer, name, "log credentials out", what)?;
        self.command(&slot, |reply| Command::Logout { revoke, reply })
            .await
    }

    /// Stores a Glean secret imported with `tokenctl import` (admin only) and
    /// serves it from now on.
    pub async fn import_secret(
        &self,
        peer: &Peer,
        name: &str,
        secret: SecretString,
        expires_at: Option<Timestamp>,
    ) -> Result<(), BrokerError> {
        self.require_admin(peer, "import secrets")?;
        let slot = self.slot(name)?;
        let Kind::Glean(g) = &slot.credential.kind else {
            let what = "only glean_token secrets are imported; use `tokenctl login`";
            return Err(wrong_kind(&slot, what));
        };
        if !matches!(g.secret, GleanSecret::Stored) {
            let what = "its secret is read from the config's source; set secret = { store = true } \
                        to import";
            return Err(wrong_kind(&slot, what));
        }
        header_safe(&secret, name, "secret")?;
        let record = Record {
            secret: Some(Zeroizing::new(secret.expose_secret().to_owned())),
            secret_expires_at: expires_at.map(Timestamp::as_second),
            ..Record::default()
        };
        let key = name.to_owned();
        store::blocking(self.store()?, move |s| s.put(&key, &record)).await?;
        let now = self.services.clock.now();
        let generation = super::generation(&slot.current) + 1;
        let token = Token::new(
            secret.expose_secret(),
            expires_at.or(g.expires_at),
            now,
            generation,
            None,
        );
        slot.current.send_replace(Arc::new(Snapshot {
            token: Some(Arc::new(token)),
            last_refresh: Some(now),
            ..Snapshot::new(State::Fresh)
        }));
        tracing::info!(credential = name, "secret imported");
        Ok(())
    }
}

fn wrong_kind(slot: &Slot, what: &'static str) -> BrokerError {
    BrokerError::WrongKind {
        name: Arc::clone(&slot.credential.name),
        kind: slot.credential.kind.kind(),
        what,
    }
}

/// Refuses a token or secret that cannot be sent in a header.
fn header_safe(value: &SecretString, name: &str, what: &str) -> Result<(), BrokerError> {
    let v = value.expose_secret();
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(())
    } else {
        Err(BrokerError::InvalidInput(format!(
            "the {what} for `{name}` is empty or holds characters that cannot go in a header"
        )))
    }
}
