//! `[[credential]]` tables into [`Credential`]s: the fields common to all
//! kinds, then each kind's own.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_spanned::Spanned;

use super::context::{Cleartext, Context, SOURCES, SOURCES_OR_STORE};
use super::raw::{RawCredential, RawHeaders, RawSecret};
use super::{DEFAULT_LIFETIME, DEFAULT_MIN_VALID, DEFAULT_REDIRECT_URI, DEFAULT_REFRESH_FRACTION};
use crate::credential::{
    Credential, CredentialKind, GleanSecret, GleanToken, Kind, OAuthCredential, OAuthGrant,
    Schedule,
};
use crate::glean::{self, Permission, Scope, ScopeSet};
use crate::oauth::{self, AuthMethod};

/// Builds the dotted field path of a credential's field.
type Field<'a> = &'a dyn Fn(&str) -> String;

/// Form fields tokend sets itself, refused in `extra_params`.
const RESERVED_PARAMS: [&str; 7] = [
    "grant_type",
    "refresh_token",
    "client_id",
    "client_secret",
    "scope",
    "code",
    "code_verifier",
];

impl Context<'_> {
    /// One credential, or `None` (with its problems recorded).
    pub(super) fn credential(&mut self, raw: RawCredential) -> Option<Credential> {
        let name = raw.name.get_ref().clone();
        let field = |f: &str| format!("credential.{name}.{f}");
        let problems_before = self.problems.len();
        if !valid_name(&name) {
            self.problem(
                raw.name.span(),
                &field("name"),
                "names may hold only letters, digits, `-`, `_` and `.`, and must not be empty"
                    .into(),
            );
        }
        let allow = raw
            .allow
            .0
            .iter()
            .map(|a| self.allow(a, &field("allow")))
            .collect();
        let min_valid = raw
            .min_valid
            .as_ref()
            .and_then(|d| self.duration(d, &field("min_valid")))
            .unwrap_or(DEFAULT_MIN_VALID);
        let kind = match CredentialKind::parse(raw.kind.get_ref()) {
            Some(CredentialKind::GleanToken) => self.glean_token(&raw, &field).map(Kind::Glean),
            Some(CredentialKind::OAuthRefresh) => self
                .oauth(&raw, OAuthGrant::RefreshToken, &field)
                .map(Kind::OAuth),
            Some(CredentialKind::OAuthClientCredentials) => self
                .oauth(&raw, OAuthGrant::ClientCredentials, &field)
                .map(Kind::OAuth),
            None => {
                let known: Vec<&str> = CredentialKind::ALL.iter().map(|k| k.as_str()).collect();
                self.problem(
                    raw.kind.span(),
                    &field("kind"),
                    format!(
                        "unknown kind `{}`; known kinds: {}",
                        raw.kind.get_ref(),
                        known.join(", ")
                    ),
                );
                None
            }
        };
        let kind = kind?;
        (self.problems.len() == problems_before).then(|| Credential {
            name: Arc::from(name),
            allow,
            min_valid,
            kind,
        })
    }

    fn glean_token(&mut self, raw: &RawCredential, field: Field<'_>) -> Option<GleanToken> {
        let allowed = ["permission", "expires_at", "owner", "secret", "instance"];
        self.only_fields(raw, "glean_token", &allowed, field);
        let permission = self.permission(raw, field);
        let scopes = self.glean_scopes(raw, field);
        let expires_at = raw.expires_at.as_ref().and_then(|e| {
            e.get_ref()
                .parse::<jiff::Timestamp>()
                .map_err(|_| {
                    let message = format!(
                        "`{}` is not an RFC 3339 time; write it like \"2027-03-31T00:00:00Z\"",
                        e.get_ref()
                    );
                    self.problem(e.span(), &field("expires_at"), message);
                })
                .ok()
        });
        let owner = raw.owner.as_ref().and_then(|o| {
            if glean::is_valid_email(o.get_ref()) {
                return Some(o.get_ref().clone());
            }
            let message = format!("`{}` is not an email address", o.get_ref());
            self.problem(o.span(), &field("owner"), message);
            None
        });
        self.act_as_rules(raw, permission, field);
        let instance = self.instance(raw, field);
        let secret = self.glean_secret(raw, field);
        Some(GleanToken {
            permission: permission?,
            scopes,
            expires_at,
            owner,
            instance,
            secret: secret?,
        })
    }

    /// The Glean backend the credential is for: `tokenctl check` sends its
    /// test search there.
    fn instance(&mut self, raw: &RawCredential, field: Field<'_>) -> Option<String> {
        self.url(
            &raw.instance,
            &field("instance"),
            Cleartext::LoopbackOnly,
            "https://acme-be.glean.com",
        )
        .map(|u| u.trim_end_matches('/').to_owned())
    }

    fn permission(&mut self, raw: &RawCredential, field: Field<'_>) -> Option<Permission> {
        let Some(p) = &raw.permission else {
            self.problem(
                raw.kind.span(),
                &field("permission"),
                "missing; set permission = \"user\", \"global\" or \"anonymous\" as chosen when \
                 the token was created in Glean"
                    .into(),
            );
            return None;
        };
        p.get_ref()
            .parse::<Permission>()
            .map_err(|()| {
                let message = format!(
                    "unknown permission `{}`; use \"user\", \"global\" or \"anonymous\"",
                    p.get_ref()
                );
                self.problem(p.span(), &field("permission"), message);
            })
            .ok()
    }

    fn glean_scopes(&mut self, raw: &RawCredential, field: Field<'_>) -> ScopeSet {
        let mut scopes = ScopeSet::default();
        let list = match &raw.scopes {
            None => {
                let message = "missing; list the scopes the token was created with, e.g. \
                               scopes = [\"SEARCH\"]";
                self.problem(raw.kind.span(), &field("scopes"), message.into());
                return scopes;
            }
            Some(list) if list.get_ref().is_empty() => {
                let message = "empty; a Glean token has at least one scope";
                self.problem(list.span(), &field("scopes"), message.into());
                return scopes;
            }
            Some(list) => list,
        };
        for s in list.get_ref() {
            match s.get_ref().parse::<Scope>() {
                Ok(scope) => scopes.insert(scope),
                Err(()) => {
                    let hint = Scope::closest(s.get_ref())
                        .map(|c| format!(" (did you mean {c}?)"))
                        .unwrap_or_default();
                    let message = format!(
                        "unknown scope `{}`{hint}; Glean's scopes are {}",
                        s.get_ref(),
                        Scope::names().join(", ")
                    );
                    self.problem(s.span(), &field("scopes"), message);
                }
            }
        }
        scopes
    }

    /// Global tokens need act-as patterns; other tokens may not have any.
    fn act_as_rules(
        &mut self,
        raw: &RawCredential,
        permission: Option<Permission>,
        field: Field<'_>,
    ) {
        let rules = &raw.allow.0;
        if permission == Some(Permission::Global) {
            if !rules.is_empty() && rules.iter().all(|a| a.act_as.is_empty()) {
                self.problem(
                    raw.kind.span(),
                    &field("allow.act_as"),
                    "a global token needs act_as patterns saying whom callers may act as, \
                     e.g. allow = { uids = [1000], act_as = [\"*@corp.example\"] }"
                        .into(),
                );
            }
        } else if let Some(p) = rules.iter().flat_map(|a| a.act_as.first()).next() {
            self.problem(
                p.span(),
                &field("allow.act_as"),
                "only global tokens act as other users; remove act_as or fix the permission".into(),
            );
        }
    }

    fn glean_secret(&mut self, raw: &RawCredential, field: Field<'_>) -> Option<GleanSecret> {
        match raw.secret.as_ref().map(|s| (s, s.get_ref())) {
            Some((_, RawSecret::Store(true))) => Some(GleanSecret::Stored),
            Some((s, RawSecret::Store(false))) => {
                self.problem(
                    s.span(),
                    &field("secret.store"),
                    "`store = false` names no secret; use `store = true` (imported with \
                     `tokenctl import`) or a file, credential or env source"
                        .into(),
                );
                None
            }
            _ => self
                .secret(
                    raw.secret.as_ref(),
                    raw.kind.span(),
                    &field("secret"),
                    SOURCES_OR_STORE,
                )
                .map(|(source, secret)| GleanSecret::Configured { source, secret }),
        }
    }

    /// An http(s) URL as written, or a problem that quotes no more of it
    /// than its scheme and host.
    fn url(
        &mut self,
        v: &Option<Spanned<String>>,
        field: &str,
        cleartext: Cleartext,
        example: &str,
    ) -> Option<String> {
        let u = v.as_ref()?;
        self.http_url(u.get_ref(), u.span(), field, cleartext, false, example)
            .map(|_| u.get_ref().clone())
    }

    fn oauth(
        &mut self,
        raw: &RawCredential,
        grant: OAuthGrant,
        field: Field<'_>,
    ) -> Option<OAuthCredential> {
        let mut allowed = vec![
            "issuer",
            "token_endpoint",
            "client_id",
            "client_secret",
            "auth_method",
            "extra_params",
            "extra_headers",
            "serve_stale",
            "refresh_before",
            "refresh_fraction",
            "default_lifetime",
            "owner",
            "instance",
            "shared",
        ];
        if grant == OAuthGrant::RefreshToken {
            allowed.extend([
                "redirect_uri",
                "refresh_token_lifetime",
                "retry_previous_refresh_token",
            ]);
        }
        self.only_fields(raw, raw.kind.get_ref(), &allowed, field);
        // The client secret and refresh tokens travel to the token endpoint
        // (the issuer's, when discovered).
        let issuer = self.url(
            &raw.issuer,
            &field("issuer"),
            Cleartext::LoopbackOnly,
            "https://acme-be.glean.com",
        );
        let token_endpoint = self.url(
            &raw.token_endpoint,
            &field("token_endpoint"),
            Cleartext::LoopbackOnly,
            "https://auth.example/oauth/token",
        );
        // tokenctl's own listener, plain http on this host.
        let redirect_uri = self
            .url(
                &raw.redirect_uri,
                &field("redirect_uri"),
                Cleartext::Allowed,
                DEFAULT_REDIRECT_URI,
            )
            .unwrap_or_else(|| DEFAULT_REDIRECT_URI.to_owned());
        if raw.issuer.is_none() && raw.token_endpoint.is_none() {
            self.problem(
                raw.kind.span(),
                &field("issuer"),
                "missing; set issuer (discovered through RFC 8414) or token_endpoint".into(),
            );
        }
        let client = self.oauth_client(raw, field);
        let extra_headers = self.extra_headers(raw.extra_headers.as_ref(), field);
        let refresh_token_lifetime = raw.refresh_token_lifetime.as_ref().and_then(|d| {
            self.nonzero_duration(
                d,
                &field("refresh_token_lifetime"),
                "a login that ends at once would always be expiring; write the source's \
                 policy, e.g. \"90d\", or remove it",
            )
        });
        let schedule = self.schedule(raw, field);
        let instance = self.instance(raw, field);
        Some(OAuthCredential {
            grant,
            issuer,
            token_endpoint,
            instance,
            redirect_uri,
            client: client?,
            extra_headers,
            refresh_token_lifetime,
            serve_stale: raw.serve_stale.as_ref().is_some_and(|s| *s.get_ref()),
            schedule,
            shared: raw.shared.as_ref().is_some_and(|s| *s.get_ref()),
            retry_previous_refresh_token: raw
                .retry_previous_refresh_token
                .as_ref()
                .is_some_and(|s| *s.get_ref()),
        })
    }

    /// The OAuth client: id, authentication, scopes, extra form fields.
    fn oauth_client(&mut self, raw: &RawCredential, field: Field<'_>) -> Option<oauth::Client> {
        let at = raw.kind.span();
        let client_id = match &raw.client_id {
            Some(c) if !c.get_ref().is_empty() => Some(c.get_ref().clone()),
            other => {
                self.problem(
                    other.as_ref().map_or(at.clone(), Spanned::span),
                    &field("client_id"),
                    "missing or empty; set the OAuth client's id".into(),
                );
                None
            }
        };
        let auth_method = match &raw.auth_method {
            None => AuthMethod::ClientSecretBasic,
            Some(m) => AuthMethod::parse(m.get_ref()).unwrap_or_else(|| {
                let message = format!(
                    "unknown method `{}`; use one of {}",
                    m.get_ref(),
                    AuthMethod::NAMES.join(", ")
                );
                self.problem(m.span(), &field("auth_method"), message);
                AuthMethod::ClientSecretBasic
            }),
        };
        let client_secret = match (auth_method, &raw.client_secret) {
            (AuthMethod::None, None) => None,
            (AuthMethod::None, Some(s)) => {
                self.problem(
                    s.span(),
                    &field("client_secret"),
                    "a public client (auth_method = \"none\") sends no secret; remove it".into(),
                );
                None
            }
            (_, s) => self
                .secret(s.as_ref(), at, &field("client_secret"), SOURCES)
                .map(|(_, secret)| secret),
        };
        let scopes = raw
            .scopes
            .as_ref()
            .map(|list| list.get_ref().iter().map(|s| s.get_ref().clone()).collect())
            .unwrap_or_default();
        let extra_params = self.extra_params(raw.extra_params.as_ref(), field);
        Some(oauth::Client {
            client_id: client_id?,
            client_secret,
            auth_method,
            scopes,
            extra_params,
        })
    }

    fn extra_params(
        &mut self,
        raw: Option<&Spanned<BTreeMap<String, String>>>,
        field: Field<'_>,
    ) -> Vec<(String, String)> {
        let Some(m) = raw else { return Vec::new() };
        if let Some(k) = m
            .get_ref()
            .keys()
            .find(|k| RESERVED_PARAMS.contains(&k.as_str()))
        {
            let message = format!("`{k}` is set by tokend itself; remove it from extra_params");
            self.problem(m.span(), &field("extra_params"), message);
        }
        m.get_ref().clone().into_iter().collect()
    }

    fn extra_headers(
        &mut self,
        raw: Option<&Spanned<RawHeaders>>,
        field: Field<'_>,
    ) -> Vec<(String, String)> {
        let Some(m) = raw else { return Vec::new() };
        self.headers(m.get_ref(), &field("extra_headers"), &["authorization"])
    }

    /// When to renew: `refresh_before`, `refresh_fraction`, `default_lifetime`.
    fn schedule(&mut self, raw: &RawCredential, field: Field<'_>) -> Schedule {
        let refresh_before = raw
            .refresh_before
            .as_ref()
            .and_then(|d| self.duration(d, &field("refresh_before")))
            .unwrap_or_default();
        let default_lifetime = raw
            .default_lifetime
            .as_ref()
            .and_then(|d| {
                self.nonzero_duration(
                    d,
                    &field("default_lifetime"),
                    "a token that lives no time would be renewed without pause; write e.g. \
                     \"1h\" (the default)",
                )
            })
            .unwrap_or(DEFAULT_LIFETIME);
        let refresh_fraction = match &raw.refresh_fraction {
            None => DEFAULT_REFRESH_FRACTION,
            Some(f) if (0.0..1.0).contains(f.get_ref()) => *f.get_ref(),
            Some(f) => {
                let message = format!(
                    "{} is not a fraction of the lifetime; write a number from 0 up to (not \
                     including) 1, e.g. 0.33",
                    f.get_ref()
                );
                self.problem(f.span(), &field("refresh_fraction"), message);
                DEFAULT_REFRESH_FRACTION
            }
        };
        Schedule {
            refresh_before,
            refresh_fraction,
            default_lifetime,
        }
    }
}

/// Credential and proxy names: letters, digits, `-`, `_` and `.`, not empty
/// (they appear in metrics labels, alert keys and file-like contexts).
pub(super) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}
