//! The person's side of an OAuth login (authorization code + PKCE S256,
//! RFC 6749 §4.1, RFC 7636, RFC 8252 for the loopback redirect): the
//! authorization URL, and receiving the redirect either on a one-shot
//! loopback listener or pasted from the browser's address bar.
//!
//! The code exchange itself happens in the daemon (`Admin.CompleteLogin`),
//! which holds the client secret: the code and verifier are useless without
//! it, and the refresh token never passes through this process.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use reqwest::Url;
use secrecy::SecretString;
use sha2::Digest as _;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

/// Why a login ended without a code.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoginError {
    /// The callback's `state` is not the one this login sent.
    #[error(
        "the callback's state does not match this login's (a forged or stale callback); \
         nothing was stored, run the login again"
    )]
    WrongState,
    /// The authorization server reported an error (the person declined, say).
    #[error("the authorization server refused the login: {error}{}", description.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Refused {
        /// The callback's `error` code, e.g. `access_denied`.
        error: String,
        /// The callback's `error_description`, if it sent one.
        description: Option<String>,
    },
    /// A request reached the listener on another path than the redirect's.
    #[error(
        "a request arrived for {path} instead of the redirect path {expected}; the login was \
         ended so nothing unexpected is accepted, run it again"
    )]
    WrongPath {
        /// The path the request arrived for.
        path: String,
        /// The redirect URI's path.
        expected: String,
    },
    /// A pasted address is not on the redirect URI's scheme, host and port.
    #[error(
        "the pasted address is on {origin}, not on the redirect URI's {expected}; paste the \
         address the browser ends on after logging in"
    )]
    WrongOrigin {
        /// The pasted address's scheme, host and port.
        origin: String,
        /// The redirect URI's scheme, host and port.
        expected: String,
    },
    /// The callback has no `code`.
    #[error("the callback carries no authorization code")]
    NoCode,
    /// Nobody completed the login in time.
    #[error("no callback arrived within {}; run the login again", crate::clock::human(*.0))]
    Timeout(Duration),
    /// The redirect URI cannot be listened on here.
    #[error(
        "redirect_uri {0} is not an http://127.0.0.1, [::1] or localhost address this machine \
         can listen on; use --paste to complete the login from another machine"
    )]
    NotLoopback(String),
    /// Listening failed.
    #[error("cannot listen on {addr} for the redirect: {source}")]
    Listen {
        /// The address it tried to listen on, `host:port`.
        addr: String,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// What was pasted is not a URL.
    #[error("what was pasted is not a URL: paste the whole address from the browser's address bar")]
    NotAUrl,
}

/// A PKCE verifier and its S256 challenge.
pub struct Pkce {
    /// The secret verifier, sent only with the code exchange.
    pub verifier: SecretString,
    /// The verifier's SHA-256, base64url-encoded, sent in the authorization
    /// URL.
    pub challenge: String,
}

impl Pkce {
    /// 64 bytes of randomness, base64url-encoded: 86 characters, within
    /// RFC 7636's 43–128 and far above its 256-bit entropy advice.
    pub fn new() -> Self {
        let verifier = random(64);
        let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(sha2::Sha256::digest(verifier.as_bytes()));
        Self {
            verifier: verifier.into(),
            challenge,
        }
    }
}

impl Default for Pkce {
    fn default() -> Self {
        Self::new()
    }
}

/// `bytes` random bytes from the kernel, base64url-encoded.
pub fn random(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).expect("the kernel's random source failed");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
}

/// The URL to open in a browser.
pub fn authorization_url(
    endpoint: &str,
    client_id: &str,
    redirect_uri: &str,
    scopes: &[String],
    state: &str,
    challenge: &str,
) -> Result<Url, LoginError> {
    let scope = scopes.join(" ");
    let mut params = vec![
        ("response_type", "code"),
        ("client_id", client_id),
        ("redirect_uri", redirect_uri),
        ("state", state),
        ("code_challenge", challenge),
        ("code_challenge_method", "S256"),
    ];
    if !scope.is_empty() {
        params.push(("scope", &scope));
    }
    Url::parse_with_params(endpoint, params).map_err(|_| LoginError::NotAUrl)
}

/// The code from a redirect to `redirect_uri`, after checking its path and
/// `state`, and that it is not an error.
pub fn parse_callback(
    callback: &Url,
    redirect_uri: &Url,
    state: &str,
) -> Result<SecretString, LoginError> {
    if callback.origin() != redirect_uri.origin() {
        return Err(LoginError::WrongOrigin {
            origin: callback.origin().ascii_serialization(),
            expected: redirect_uri.origin().ascii_serialization(),
        });
    }
    if callback.path() != redirect_uri.path() {
        return Err(LoginError::WrongPath {
            path: callback.path().to_owned(),
            expected: redirect_uri.path().to_owned(),
        });
    }
    let param = |name: &str| {
        callback
            .query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    };
    // An error callback is checked for state too: a forged "access denied"
    // must not pass as the provider's word.
    if param("state").as_deref() != Some(state) {
        return Err(LoginError::WrongState);
    }
    if let Some(error) = param("error") {
        let clean = |s: String| s.chars().filter(|c| !c.is_control()).take(300).collect();
        return Err(LoginError::Refused {
            error: clean(error),
            description: param("error_description").map(clean),
        });
    }
    param("code")
        .map(SecretString::from)
        .ok_or(LoginError::NoCode)
}

/// A pasted redirect URL, as [`parse_callback`] checks it.
pub fn parse_pasted(
    pasted: &str,
    redirect_uri: &Url,
    state: &str,
) -> Result<SecretString, LoginError> {
    let url = Url::parse(pasted.trim()).map_err(|_| LoginError::NotAUrl)?;
    parse_callback(&url, redirect_uri, state)
}

/// Listeners on the loopback redirect URI (for `localhost`, on both
/// 127.0.0.1 and ::1, since the browser may resolve it either way), bound
/// before the person is sent to the browser so that a busy port fails the
/// login up front and no redirect can arrive before anyone listens.
#[derive(Debug)]
pub struct CallbackListener {
    listeners: Vec<TcpListener>,
    redirect_uri: Url,
}

/// Connections served at once while waiting for the callback; more are
/// closed. Any local user can connect, so one idle connection must not hold
/// up the real callback, and a crowd must not exhaust tokenctl.
pub const MAX_CALLBACK_CONNECTIONS: usize = 16;

impl CallbackListener {
    /// Listens on the address of `redirect_uri`, which must be an http
    /// loopback address.
    pub async fn bind(redirect_uri: &Url) -> Result<Self, LoginError> {
        Ok(Self {
            listeners: listen(redirect_uri).await?,
            redirect_uri: redirect_uri.clone(),
        })
    }

    /// Waits for one callback and returns its code. The browser gets a page
    /// telling the person to go back to the terminal; the code is never
    /// shown. Connections are served concurrently, each with a bounded
    /// request head read within a timeout (see [`crate::http_head`]); one
    /// that sends nothing, or too much, is answered and dropped without
    /// ending the login. A favicon request is answered and ignored; a
    /// request for any other path ends the login.
    pub async fn receive(self, state: &str, timeout: Duration) -> Result<SecretString, LoginError> {
        let (tx, mut rx) = tokio::sync::mpsc::channel(1);
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CALLBACK_CONNECTIONS));
        let redirect = Arc::new(self.redirect_uri);
        let state: Arc<str> = state.into();
        // Dropped on return: every accept loop and connection task ends.
        let mut tasks = tokio::task::JoinSet::new();
        for listener in self.listeners {
            let (tx, slots, redirect, state) = (
                tx.clone(),
                Arc::clone(&slots),
                Arc::clone(&redirect),
                Arc::clone(&state),
            );
            tasks.spawn(async move {
                let mut connections = tokio::task::JoinSet::new();
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    };
                    let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                        continue;
                    };
                    let (tx, redirect, state) =
                        (tx.clone(), Arc::clone(&redirect), Arc::clone(&state));
                    connections.spawn(async move {
                        if let Some(result) = callback(stream, &redirect, &state).await {
                            let _ = tx.send(result).await;
                        }
                        drop(slot);
                    });
                    // Reap finished connections so the set stays small.
                    while connections.try_join_next().is_some() {}
                }
            });
        }
        drop(tx);
        let result = tokio::time::timeout(timeout, rx.recv())
            .await
            .map_err(|_| LoginError::Timeout(timeout))?;
        tasks.abort_all();
        result.ok_or(LoginError::Timeout(timeout))?
    }
}

/// Serves one connection to the callback listener: `None` when it did not
/// carry a request that decides the login (nothing sent, too much, a
/// favicon).
async fn callback(
    stream: tokio::net::TcpStream,
    redirect_uri: &Url,
    state: &str,
) -> Option<Result<SecretString, LoginError>> {
    use crate::http_head::{HeadError, read_head, request_line};
    let (mut read, mut write) = stream.into_split();
    let head = match read_head(&mut read).await {
        Ok(head) => head,
        Err(HeadError::TooLarge) => {
            let _ = respond(&mut write, 431, "Request too large").await;
            return None;
        }
        Err(HeadError::TimedOut | HeadError::Closed) => return None,
    };
    let Some((_, target)) = request_line(&head) else {
        let _ = respond(&mut write, 400, "Not an HTTP request").await;
        return None;
    };
    if target == "/favicon.ico" {
        let _ = respond(&mut write, 404, "Not found").await;
        return None;
    }
    let result = redirect_uri
        .join(target)
        .map_err(|_| LoginError::NotAUrl)
        .and_then(|url| parse_callback(&url, redirect_uri, state));
    let page = match &result {
        Ok(_) => "Login received. Return to the terminal; you can close this page.",
        Err(_) => "Login failed. Return to the terminal for the reason.",
    };
    let _ = respond(&mut write, if result.is_ok() { 200 } else { 400 }, page).await;
    Some(result)
}

/// Binds the redirect URI's loopback address: `localhost` on both 127.0.0.1
/// and ::1 (either may be missing, not both).
async fn listen(redirect_uri: &Url) -> Result<Vec<TcpListener>, LoginError> {
    let not_loopback = || LoginError::NotLoopback(redirect_uri.to_string());
    if redirect_uri.scheme() != "http" {
        return Err(not_loopback());
    }
    let hosts: &[&str] = match redirect_uri.host_str() {
        Some("127.0.0.1") => &["127.0.0.1"],
        Some("localhost") => &["127.0.0.1", "[::1]"],
        Some("[::1]") => &["[::1]"],
        _ => return Err(not_loopback()),
    };
    let port = redirect_uri
        .port_or_known_default()
        .ok_or_else(not_loopback)?;
    let mut listeners = Vec::new();
    let mut first_error = None;
    for host in hosts {
        let addr = format!("{host}:{port}");
        match TcpListener::bind(&addr).await {
            Ok(l) => listeners.push(l),
            Err(source) => {
                first_error.get_or_insert(LoginError::Listen { addr, source });
            }
        }
    }
    match (listeners.is_empty(), first_error) {
        (true, Some(e)) => Err(e),
        // `localhost` without IPv6 (or IPv4) on this machine: one will do,
        // unless the other failed because the port is taken there.
        (false, Some(LoginError::Listen { addr, source }))
            if source.kind() == std::io::ErrorKind::AddrInUse =>
        {
            Err(LoginError::Listen { addr, source })
        }
        _ => Ok(listeners),
    }
}

async fn respond(
    write: &mut tokio::net::tcp::OwnedWriteHalf,
    status: u16,
    text: &str,
) -> std::io::Result<()> {
    let body =
        format!("<!doctype html><meta charset=utf-8><title>tokend login</title><p>{text}</p>\n");
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        431 => "Request Header Fields Too Large",
        _ => "Bad Request",
    };
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/html; charset=utf-8\r\n\
         Cache-Control: no-store\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    write.write_all(response.as_bytes()).await?;
    write.shutdown().await
}

impl std::fmt::Debug for Pkce {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Pkce {{ verifier: [redacted], challenge: {} }}",
            self.challenge
        )
    }
}

/// How `tokenctl login` runs.
#[derive(Clone, Debug)]
pub struct LoginOptions {
    /// Try to open the URL in the desktop session's browser.
    pub open_browser: bool,
    /// No listener: the person pastes the address the browser ends on.
    pub paste: bool,
    /// Give up when nobody completes the login within this time.
    pub timeout: Duration,
}

/// Why a login flow failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoginFlowError {
    /// The daemon refused a step (not an admin, not an OAuth credential,
    /// the issuer cannot do PKCE, the code exchange failed).
    #[error(transparent)]
    Call(#[from] tokend_client::Error),
    /// The person's side of the login failed.
    #[error("login for `{name}` failed: {source}")]
    Failed {
        /// The credential.
        name: String,
        /// What went wrong.
        source: LoginError,
    },
    /// The pasted address could not be read.
    #[error("cannot read the pasted address: {0}")]
    Stdin(std::io::Error),
    /// The daemon named a redirect URI that is not a URL.
    #[error("bad redirect_uri {0}")]
    BadRedirect(String),
}

/// Runs a whole login for credential `name`: the daemon checks the issuer
/// and names the endpoints, the person logs in in a browser, and the daemon
/// exchanges the code (it holds the client secret, and the refresh token
/// never passes through this process). `say` shows instructions.
pub async fn run(
    client: &tokend_client::Client,
    name: &str,
    options: &LoginOptions,
    say: impl Fn(&str),
) -> Result<tokend_client::Refreshed, LoginFlowError> {
    let failed = |source| LoginFlowError::Failed {
        name: name.to_owned(),
        source,
    };
    let info = client.begin_login(name).await?;
    let redirect = Url::parse(&info.redirect_uri)
        .map_err(|_| LoginFlowError::BadRedirect(info.redirect_uri.clone()))?;
    let state = random(24);
    let pkce = Pkce::new();
    let url = authorization_url(
        &info.authorization_endpoint,
        &info.client_id,
        &info.redirect_uri,
        &info.scopes,
        &state,
        &pkce.challenge,
    )
    .map_err(failed)?;
    let code = if options.paste {
        say(&format!(
            "Open this URL in a browser and log in:\n\n  {url}\n"
        ));
        say("Then paste the whole address the browser ends on (it may show an error page):");
        let mut line = zeroize::Zeroizing::new(String::new());
        std::io::stdin()
            .read_line(&mut line)
            .map_err(LoginFlowError::Stdin)?;
        parse_pasted(&line, &redirect, &state)
    } else {
        let listener = CallbackListener::bind(&redirect).await.map_err(failed)?;
        say(&format!(
            "Open this URL in a browser and log in (waiting up to {}):\n\n  {url}\n",
            crate::clock::human(options.timeout)
        ));
        if options.open_browser {
            open_browser(url.as_str());
        }
        listener.receive(&state, options.timeout).await
    }
    .map_err(failed)?;
    Ok(client
        .complete_login(name, &code, &pkce.verifier, &info.redirect_uri)
        .await?)
}

/// Best effort: a desktop session's opener, detached, output discarded.
fn open_browser(url: &str) {
    let has_display =
        std::env::var_os("DISPLAY").is_some() || std::env::var_os("WAYLAND_DISPLAY").is_some();
    if has_display {
        let _ = std::process::Command::new("xdg-open")
            .arg(url)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
    }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    fn redirect() -> Url {
        Url::parse("http://127.0.0.1:9090/oauth/callback").unwrap()
    }

    #[test]
    fn pkce_challenge_is_s256_of_the_verifier() {
        let p = Pkce::new();
        assert_eq!(p.verifier.expose_secret().len(), 86);
        let expected = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(sha2::Sha256::digest(p.verifier.expose_secret().as_bytes()));
        assert_eq!(p.challenge, expected);
        assert!(!format!("{p:?}").contains(p.verifier.expose_secret()));
    }

    #[test]
    fn callbacks_are_checked() {
        let ok =
            Url::parse("http://127.0.0.1:9090/oauth/callback?code=abc&state=s1&iss=x").unwrap();
        assert_eq!(
            parse_callback(&ok, &redirect(), "s1")
                .unwrap()
                .expose_secret(),
            "abc"
        );
        assert!(matches!(
            parse_callback(&ok, &redirect(), "s2"),
            Err(LoginError::WrongState)
        ));
        let denied = Url::parse(
            "http://127.0.0.1:9090/oauth/callback?error=access_denied&error_description=no%0Athanks&state=s1",
        )
        .unwrap();
        let e = parse_callback(&denied, &redirect(), "s1").unwrap_err();
        assert_eq!(
            e.to_string(),
            "the authorization server refused the login: access_denied (nothanks)"
        );
        let other = Url::parse("http://127.0.0.1:9090/admin?code=abc&state=s1").unwrap();
        assert!(matches!(
            parse_callback(&other, &redirect(), "s1"),
            Err(LoginError::WrongPath { .. })
        ));
        assert!(matches!(
            parse_pasted("not a url", &redirect(), "s1"),
            Err(LoginError::NotAUrl)
        ));
        assert!(matches!(
            parse_pasted(
                "https://evil.example:9090/oauth/callback?code=a&state=s1",
                &redirect(),
                "s1"
            ),
            Err(LoginError::WrongOrigin { .. })
        ));
        assert!(matches!(
            parse_pasted(
                "http://127.0.0.1:9090/oauth/callback?state=s1",
                &redirect(),
                "s1"
            ),
            Err(LoginError::NoCode)
        ));
    }

    #[test]
    fn authorization_url_carries_pkce_and_state() {
        let url = authorization_url(
            "https://as.example/auth",
            "cid",
            "http://127.0.0.1:9090/oauth/callback",
            &["a".into(), "b".into()],
            "st",
            "ch",
        )
        .unwrap();
        let q: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
        assert_eq!(q["code_challenge_method"], "S256");
        assert_eq!(q["code_challenge"], "ch");
        assert_eq!(q["state"], "st");
        assert_eq!(q["scope"], "a b");
        assert_eq!(q["redirect_uri"], "http://127.0.0.1:9090/oauth/callback");
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    async fn send(addr: &str, bytes: &[u8]) -> String {
        use tokio::io::AsyncReadExt;
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let _ = s.write_all(bytes).await;
        let mut out = String::new();
        let _ = s.read_to_string(&mut out).await;
        out
    }

    /// One idle connection used to hold the listener (one connection at a
    /// time, no timeout) so the real callback never got in; a 400 MB line
    /// grew tokenctl to 415 MB.
    #[tokio::test]
    async fn strangers_on_the_callback_port_do_not_hold_up_the_login() {
        let port = free_port();
        let redirect = Url::parse(&format!("http://127.0.0.1:{port}/cb")).unwrap();
        let listener = CallbackListener::bind(&redirect).await.unwrap();
        let waiting = tokio::spawn(listener.receive("st", Duration::from_secs(20)));
        let addr = format!("127.0.0.1:{port}");
        // Idle, and never closed while the login waits.
        let _idle = tokio::net::TcpStream::connect(&addr).await.unwrap();
        // Far too much.
        let huge = vec![b'A'; 1 << 20];
        assert!(send(&addr, &huge).await.starts_with("HTTP/1.1 431"));
        // The real callback gets through at once.
        let answer = send(
            &addr,
            b"GET /cb?state=st&code=the-code HTTP/1.1\r\nHost: x\r\n\r\n",
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        let code = tokio::time::timeout(Duration::from_secs(2), waiting)
            .await
            .expect("the login ends with the callback")
            .unwrap()
            .unwrap();
        assert_eq!(code.expose_secret(), "the-code");
    }

    /// `localhost` may resolve to ::1 in the browser: both are listened on.
    #[tokio::test]
    async fn localhost_is_listened_on_for_ipv4_and_ipv6() {
        let port = free_port();
        let redirect = Url::parse(&format!("http://localhost:{port}/cb")).unwrap();
        let listener = CallbackListener::bind(&redirect).await.unwrap();
        let v6 = std::net::TcpListener::bind("[::1]:0").is_ok();
        assert_eq!(listener.listeners.len(), if v6 { 2 } else { 1 });
        let waiting = tokio::spawn(listener.receive("st", Duration::from_secs(20)));
        let addr = if v6 {
            format!("[::1]:{port}")
        } else {
            format!("127.0.0.1:{port}")
        };
        send(&addr, b"GET /cb?state=st&code=c6 HTTP/1.1\r\n\r\n").await;
        let code = waiting.await.unwrap().unwrap();
        assert_eq!(code.expose_secret(), "c6");
    }
}
