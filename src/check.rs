//! `tokenctl check`: one real call to a Glean instance with the daemon's
//! headers, and the outcome translated into what to do, after the table in
//! Glean's troubleshooting guide.

use std::time::Duration;

/// What a check found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The test search succeeded.
    Works,
    /// 401: the token is invalid or expired.
    TokenRejected,
    /// 403: the token lacks the scope the call needs.
    MissingScope {
        /// The scope the test call needs.
        scope: &'static str,
    },
    /// 400 `Required header missing: X-Glean-ActAs`: a global token used
    /// without act-as.
    NeedsActAs,
    /// 401 `Invalid identity`: the act-as email is not a Glean user.
    InvalidIdentity,
    /// Anything else.
    Unexpected {
        /// The HTTP status Glean answered.
        status: u16,
        /// The start of Glean's answer (200 characters), control characters
        /// removed.
        body: String,
    },
}

/// The test call Glean documents: `POST /rest/api/v1/search`.
pub const SEARCH_PATH: &str = "/rest/api/v1/search";

impl Verdict {
    /// Reads Glean's answer to the test search.
    pub fn from_response(status: u16, body: &str) -> Self {
        match status {
            200..=299 => Self::Works,
            400 if body.contains("Required header missing: X-Glean-ActAs") => Self::NeedsActAs,
            401 if body.contains("Invalid identity") => Self::InvalidIdentity,
            401 => Self::TokenRejected,
            403 => Self::MissingScope { scope: "SEARCH" },
            _ => Self::Unexpected {
                status,
                body: body.chars().filter(|c| !c.is_control()).take(200).collect(),
            },
        }
    }

    /// Whether the check passed.
    pub fn is_ok(&self) -> bool {
        *self == Self::Works
    }

    /// What to tell the person, for credential `name`.
    pub fn advice(&self, name: &str, act_as: Option<&str>, oauth: bool) -> String {
        let renew = if oauth {
            format!("log in again with `tokenctl login {name}`")
        } else {
            format!(
                "create a new token in Glean's admin console and rotate it in (`tokenctl import \
                 {name}` for stored secrets, else update its secret file)"
            )
        };
        match self {
            Self::Works => format!("ok: `{name}` works (test search answered 200)"),
            Self::TokenRejected => {
                format!("Glean answered 401: the token of `{name}` is invalid or expired; {renew}")
            }
            Self::MissingScope { scope } => format!(
                "Glean answered 403: the token of `{name}` lacks the {scope} scope the test \
                 search needs; scopes are fixed at creation, so create a token with {scope} and \
                 rotate it in"
            ),
            Self::NeedsActAs => format!(
                "Glean answered 400 (Required header missing: X-Glean-ActAs): `{name}` is a \
                 global token; pass --act-as EMAIL (and set permission = \"global\" in the config)"
            ),
            Self::InvalidIdentity => format!(
                "Glean answered 401 Invalid identity: {} is not a Glean user; act as an \
                 existing user's email",
                act_as.unwrap_or("the act-as email")
            ),
            Self::Unexpected { status, body } => {
                format!("Glean answered {status} to the test search: {body}")
            }
        }
    }
}

/// Sends Glean's test search to `instance` with `headers`.
pub async fn search(
    instance: &str,
    headers: &[(String, String)],
    timeout: Duration,
) -> Result<Verdict, String> {
    let http = crate::oauth::http_client(timeout);
    let mut req = http
        .post(format!("{}{SEARCH_PATH}", instance.trim_end_matches('/')))
        .header("Content-Type", "application/json")
        .body(r#"{"query":"test","pageSize":1}"#);
    for (name, value) in headers {
        req = req.header(name, value);
    }
    let response = req
        .send()
        .await
        .map_err(|e| format!("cannot reach {instance}: {e}"))?;
    let status = response.status().as_u16();
    let body = response.text().await.unwrap_or_default();
    Ok(Verdict::from_response(status, &body))
}

/// Why `tokenctl check` failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckError {
    /// The daemon refused a step.
    #[error(transparent)]
    Call(#[from] tokend_client::Error),
    /// No credential of that name is visible to the caller.
    #[error("{0}")]
    NotFound(String),
    /// A Glean token with no instance to test against.
    #[error("{0}")]
    NoInstance(String),
    /// The instance could not be reached.
    #[error("{0}")]
    Unreachable(String),
    /// The check ran and the credential does not work; what to do.
    #[error("{0}")]
    Failed(String),
}

/// Verifies credential `name` for real and says what was found: Glean's test
/// search on `instance` (default: the credential's) with the headers the
/// daemon serves. For an OAuth credential the token is described too (its
/// expiry, and its claims when it is a JWT); without an instance that is all
/// the check can do. Nothing here needs admin rights: it is one fetch, as
/// any caller the credential allows may make.
pub async fn run(
    client: &tokend_client::Client,
    name: &str,
    act_as: Option<String>,
    instance: Option<String>,
) -> Result<String, CheckError> {
    let status = client
        .status()
        .await?
        .into_iter()
        .find(|c| c.name == name)
        .ok_or_else(|| {
            CheckError::NotFound(format!("no credential named `{name}` that you may use"))
        })?;
    let oauth = status.kind != crate::credential::CredentialKind::GleanToken.as_str();
    let instance = instance.or(status.instance);
    let mut request = tokend_client::HeadersRequest::new(name);
    request.act_as.clone_from(&act_as);
    let headers = client.headers(&request).await?;
    let token = oauth.then(|| describe_token(&headers));
    let Some(instance) = instance else {
        return match token {
            Some(token) => Ok(format!(
                "ok: `{name}` has a token; set its `instance` (or pass --instance URL) to test \
                 it against Glean\n{token}"
            )),
            None => Err(CheckError::NoInstance(format!(
                "`{name}` has no instance: set instance in its config or pass --instance"
            ))),
        };
    };
    let pairs: Vec<(String, String)> = headers
        .iter()
        .map(|(n, v)| (n.to_owned(), v.to_owned()))
        .collect();
    let verdict = search(&instance, &pairs, Duration::from_secs(15))
        .await
        .map_err(CheckError::Unreachable)?;
    let advice = match &token {
        Some(_) => oauth_advice(&verdict, name, &headers),
        None => verdict.advice(name, act_as.as_deref(), false),
    };
    let text = match token {
        Some(token) => format!("{advice}\n{token}"),
        None => advice,
    };
    if verdict.is_ok() {
        Ok(text)
    } else {
        Err(CheckError::Failed(text))
    }
}

/// What Glean's answer means for an OAuth token, after Glean's guide to
/// OAuth access tokens: they are user tokens with every scope, accepted only
/// with `X-Glean-Auth-Type: OAUTH` once an admin allows OAuth token-based
/// access for the issuer and client id.
fn oauth_advice(verdict: &Verdict, name: &str, headers: &tokend_client::Headers) -> String {
    let claims = crate::oauth::jwt_claims(headers.bearer_token().unwrap_or_default());
    let claim = |keys: &[&str]| {
        let claims = claims.as_ref()?;
        keys.iter()
            .find_map(|k| claims.get(*k).and_then(|v| v.as_str()).map(str::to_owned))
    };
    let auth_type = headers.get(crate::glean::AUTH_TYPE_HEADER).is_some();
    match verdict {
        Verdict::TokenRejected if !auth_type => format!(
            "Glean answered 401: `{name}` sends no {header} header, so Glean took its OAuth \
             token for a Glean-issued one; add extra_headers = {{ \"{header}\" = \"OAUTH\" }} \
             to the credential, as Glean requires for every OAuth access token",
            header = crate::glean::AUTH_TYPE_HEADER
        ),
        Verdict::TokenRejected if claims.is_some() => format!(
            "Glean answered 401 to a well-formed OAuth token of `{name}`: usually OAuth \
             token-based access is off in Glean's Client API settings (\"Allow OAuth \
             token-based access\"), or the issuer{issuer} or this client ID{client} is not in \
             its allowed list, or the setting has not taken effect yet (up to 10 minutes after \
             saving); if all that is right, log in again with `tokenctl login {name}`",
            issuer = claim(&["iss"])
                .map(|i| format!(" ({i})"))
                .unwrap_or_default(),
            client = claim(&["azp", "client_id", "cid", "appid"])
                .map(|c| format!(" ({c})"))
                .unwrap_or_default(),
        ),
        Verdict::TokenRejected => format!(
            "Glean answered 401: the token of `{name}` is invalid, expired or not for this \
             instance; log in again with `tokenctl login {name}`, and check that OAuth \
             token-based access is on in Glean's Client API settings for this client ID \
             (changes take up to 10 minutes)"
        ),
        Verdict::MissingScope { .. } => format!(
            "Glean answered 403: OAuth tokens carry every scope, so the user{user} behind the \
             token of `{name}` may not search in Glean; check that user's access in Glean",
            user = claim(&["email", "preferred_username", "upn", "sub"])
                .map(|u| format!(" ({u})"))
                .unwrap_or_default(),
        ),
        other => other.advice(name, None, true),
    }
}

/// The token's expiry and, for a JWT, its claims: what an OAuth check shows.
fn describe_token(headers: &tokend_client::Headers) -> String {
    let expires_at = headers.expires_at;
    let mut out = format!(
        "token expires in {} (at {})\n",
        crate::clock::expires_in(expires_at, jiff::Timestamp::now()),
        expires_at.map_or_else(|| "never".into(), |t| t.to_string())
    );
    match crate::oauth::jwt_claims(headers.bearer_token().unwrap_or_default()) {
        Some(claims) => {
            out.push_str("JWT claims (signature NOT verified; tokend is the token's client):\n");
            let mut claims: Vec<_> = claims.into_iter().collect();
            claims.sort_by(|a, b| a.0.cmp(&b.0));
            for (k, v) in claims {
                out.push_str(&format!("  {k}: {v}\n"));
            }
        }
        None => out.push_str("the access token is opaque (not a JWT)\n"),
    }
    out.trim_end().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gleans_table() {
        assert_eq!(Verdict::from_response(200, "{}"), Verdict::Works);
        assert_eq!(
            Verdict::from_response(401, "Unauthorized"),
            Verdict::TokenRejected
        );
        assert_eq!(
            Verdict::from_response(401, "Invalid identity"),
            Verdict::InvalidIdentity
        );
        assert_eq!(
            Verdict::from_response(400, "Bad Request: Required header missing: X-Glean-ActAs"),
            Verdict::NeedsActAs
        );
        assert_eq!(
            Verdict::from_response(403, "Forbidden"),
            Verdict::MissingScope { scope: "SEARCH" }
        );
        assert!(matches!(
            Verdict::from_response(500, "boom"),
            Verdict::Unexpected { status: 500, .. }
        ));
        assert!(
            Verdict::NeedsActAs
                .advice("g", None, false)
                .contains("pass --act-as")
        );
    }
}
