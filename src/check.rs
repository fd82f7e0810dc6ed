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
    MissingScope { scope: &'static str },
    /// 400 `Required header missing: X-Glean-ActAs`: a global token used
    /// without act-as.
    NeedsActAs,
    /// 401 `Invalid identity`: the act-as email is not a Glean user.
    InvalidIdentity,
    /// Anything else.
    Unexpected { status: u16, body: String },
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
