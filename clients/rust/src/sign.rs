//! Sending an HTTP request with tokend's headers (feature `reqwest`): the
//! glue every service would otherwise write, slightly wrong. It adds every
//! header tokend returns (`Authorization`, and `X-Glean-ActAs` or
//! `X-Glean-Auth-Type` where the credential needs them), and when the API
//! answers 401 it reports the token with `Invalidate` and retries once with
//! the replacement (tokend never hands out a reported token again).

use crate::{Client, Error, Headers, HeadersRequest};

/// Why [`send`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// tokend refused or could not be reached.
    #[error(transparent)]
    Tokend(#[from] Error),
    /// The HTTP request itself failed.
    #[error(transparent)]
    Http(#[from] reqwest::Error),
}

/// Adds `headers` to `request` (see [`Headers::header_map`]).
pub fn sign(request: reqwest::RequestBuilder, headers: &Headers) -> reqwest::RequestBuilder {
    request.headers(headers.header_map())
}

/// Sends `request` with the headers of `req`'s credential. On a 401 it
/// reports the token and sends a copy of the request once more with the
/// replacement; a request whose body cannot be copied (a stream) is sent
/// once.
pub async fn send(
    client: &Client,
    req: &HeadersRequest,
    request: reqwest::RequestBuilder,
) -> Result<reqwest::Response, SendError> {
    let retry = request.try_clone();
    let headers = client.headers(req).await?;
    let response = sign(request, &headers).send().await?;
    let Some(retry) = retry.filter(|_| response.status() == reqwest::StatusCode::UNAUTHORIZED)
    else {
        return Ok(response);
    };
    client
        .invalidate(&req.credential, &headers.fingerprint)
        .await?;
    let headers = client.headers(req).await?;
    Ok(sign(retry, &headers).send().await?)
}
