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

/// Verifies credential `name` for real and says what was found: a Glean
/// token makes Glean's test search on `instance` (default: the
/// credential's); an OAuth credential is refreshed and its new token's
/// claims shown.
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
    if status.kind != crate::credential::CredentialKind::GleanToken.as_str() {
        return oauth(client, name).await;
    }
    let instance = instance.or(status.instance).ok_or_else(|| {
        CheckError::NoInstance(format!(
            "`{name}` has no instance: set instance in its config or pass --instance"
        ))
    })?;
    let mut request = tokend_client::HeadersRequest::new(name);
    request.act_as.clone_from(&act_as);
    let headers = client.headers(&request).await?;
    let headers: Vec<(String, String)> = headers
        .iter()
        .map(|(n, v)| (n.to_owned(), v.to_owned()))
        .collect();
    let verdict = search(&instance, &headers, Duration::from_secs(15))
        .await
        .map_err(CheckError::Unreachable)?;
    let advice = verdict.advice(name, act_as.as_deref(), false);
    if verdict.is_ok() {
        Ok(advice)
    } else {
        Err(CheckError::Failed(advice))
    }
}

/// OAuth: renew for real, then show what the server issued.
async fn oauth(client: &tokend_client::Client, name: &str) -> Result<String, CheckError> {
    client.refresh(name).await?;
    let headers = client
        .headers(&tokend_client::HeadersRequest::new(name))
        .await?;
    let expires_at = headers.expires_at;
    let mut out = format!(
        "ok: `{name}` refreshed; token expires in {} (at {})\n",
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
    Ok(out.trim_end().to_owned())
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
