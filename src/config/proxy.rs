//! `[[proxy]]`: a local HTTP endpoint that forwards requests upstream with a
//! credential's headers added (see `crate::proxy`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde_spanned::Spanned;

use super::context::{Cleartext, Context};
use super::raw::RawProxy;
use crate::credential::{Credential, Kind};

/// Request bodies a proxy accepts by default.
pub const DEFAULT_MAX_REQUEST_BODY: u64 = 10 * 1024 * 1024;
/// The most `max_request_body` may be set to.
pub const MAX_MAX_REQUEST_BODY: u64 = 1024 * 1024 * 1024;
/// How long the upstream may stay silent by default while a request or an
/// answer is in flight (a streamed chat answer pauses while it thinks).
pub const DEFAULT_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(120);
/// The range `upstream_timeout` may be set in.
pub const UPSTREAM_TIMEOUT_RANGE: std::ops::RangeInclusive<Duration> =
    Duration::from_secs(1)..=Duration::from_secs(600);

/// Where a proxy listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProxyListen {
    /// A loopback TCP address; callers are identified by the kernel's
    /// socket table.
    Tcp(SocketAddr),
    /// A Unix socket; callers are identified by their peer credentials.
    Unix(PathBuf),
}

impl ProxyListen {
    /// Port 0: the kernel picks a free port (`tokenctl proxy-env` tells
    /// which), so two such listeners never clash.
    pub fn any_port(&self) -> bool {
        matches!(self, Self::Tcp(a) if a.port() == 0)
    }
}

impl std::fmt::Display for ProxyListen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Tcp(a) => write!(f, "{a}"),
            Self::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// One validated `[[proxy]]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxySettings {
    /// Unique; names its metrics and audit lines.
    pub name: String,
    /// Where callers connect.
    pub listen: ProxyListen,
    /// Whose headers are injected; its `allow` decides who may call.
    pub credential: String,
    /// Scheme, host and port (and an optional base path) requests go to.
    pub upstream: String,
    /// Extra trusted roots (PEM), beside the system's.
    pub ca_file: Option<PathBuf>,
    /// Larger request bodies are refused with 413.
    pub max_request_body: u64,
    /// The longest silence from the upstream mid-request or mid-answer
    /// before the caller gets 504.
    pub upstream_timeout: Duration,
}

impl Context<'_> {
    /// Validates one `[[proxy]]` against the credentials already read.
    pub(super) fn proxy(
        &mut self,
        raw: RawProxy,
        credentials: &[Credential],
    ) -> Option<ProxySettings> {
        let name = raw.name.get_ref().clone();
        let field = |f: &str| format!("proxy.{name}.{f}");
        if !super::credential::valid_name(&name) {
            let message =
                "names may hold only letters, digits, `-`, `_` and `.`, and must not be empty"
                    .to_owned();
            self.problem(raw.name.span(), &field("name"), message);
        }
        let listen = self.proxy_listen(&raw.listen, &field("listen"));
        let credential = credentials
            .iter()
            .find(|c| *c.name == **raw.credential.get_ref());
        let instance = match credential.map(|c| &c.kind) {
            None => {
                let message = format!(
                    "no credential named `{}`; name one of the [[credential]] tables",
                    raw.credential.get_ref()
                );
                self.problem(raw.credential.span(), &field("credential"), message);
                None
            }
            Some(Kind::Glean(g)) => g.instance.clone(),
            Some(Kind::OAuth(o)) => o.instance.clone(),
        };
        let upstream = match &raw.upstream {
            Some(u) => self
                .http_url(
                    u.get_ref(),
                    u.span(),
                    &field("upstream"),
                    Cleartext::LoopbackOnly,
                    false,
                    "https://acme-be.glean.com",
                )
                .map(|u| u.as_str().trim_end_matches('/').to_owned()),
            None if credential.is_some() && instance.is_none() => {
                let message = format!(
                    "missing; set upstream (e.g. \"https://acme-be.glean.com\") or the \
                     credential `{}`'s instance",
                    raw.credential.get_ref()
                );
                self.problem(raw.name.span(), &field("upstream"), message);
                None
            }
            None => instance,
        };
        let ca_file = raw.ca_file.as_ref().and_then(|f| {
            let path = self.path(f.get_ref());
            match std::fs::metadata(&path) {
                Ok(m) if m.is_file() => Some(path),
                Ok(_) => {
                    let message = format!("{} is not a regular file", path.display());
                    self.problem(f.span(), &field("ca_file"), message);
                    None
                }
                Err(e) => {
                    let message = format!("cannot read {}: {e}", path.display());
                    self.problem(f.span(), &field("ca_file"), message);
                    None
                }
            }
        });
        let max_request_body = match &raw.max_request_body {
            None => Some(DEFAULT_MAX_REQUEST_BODY),
            Some(s) => match parse_size(s.get_ref()) {
                Some(n) if (1..=MAX_MAX_REQUEST_BODY).contains(&n) => Some(n),
                _ => {
                    let message = format!(
                        "`{}` is not a size from 1 byte to 1GiB; write e.g. \"10MiB\" or \
                         \"512KiB\"",
                        s.get_ref()
                    );
                    self.problem(s.span(), &field("max_request_body"), message);
                    None
                }
            },
        };
        let upstream_timeout = match &raw.upstream_timeout {
            None => Some(DEFAULT_UPSTREAM_TIMEOUT),
            Some(d) => self.duration(d, &field("upstream_timeout")).and_then(|t| {
                if UPSTREAM_TIMEOUT_RANGE.contains(&t) {
                    Some(t)
                } else {
                    let message = format!(
                        "`{}` is outside 1s to 10m; the upstream's silence is bounded",
                        d.get_ref()
                    );
                    self.problem(d.span(), &field("upstream_timeout"), message);
                    None
                }
            }),
        };
        Some(ProxySettings {
            name,
            listen: listen?,
            credential: credential?.name.to_string(),
            upstream: upstream?,
            ca_file,
            max_request_body: max_request_body?,
            upstream_timeout: upstream_timeout?,
        })
    }

    /// `unix:/path`, or a loopback `ip:port`: a proxy hands out the use of
    /// a credential, so it never listens where another host could reach it.
    fn proxy_listen(&mut self, raw: &Spanned<String>, field: &str) -> Option<ProxyListen> {
        let value = raw.get_ref();
        if let Some(path) = value.strip_prefix("unix:") {
            if path.starts_with('/') {
                return Some(ProxyListen::Unix(path.into()));
            }
            let message = "a Unix socket needs an absolute path, e.g. \
                           \"unix:/run/tokend/glean.sock\""
                .to_owned();
            self.problem(raw.span(), field, message);
            return None;
        }
        let problem = match value.parse::<SocketAddr>() {
            Ok(addr) if addr.ip().is_loopback() => return Some(ProxyListen::Tcp(addr)),
            Ok(addr) => format!(
                "{} is not a loopback address: a proxy lends its credential to whoever \
                 connects, so it listens on 127.0.0.1, [::1] or a Unix socket only",
                addr.ip()
            ),
            Err(_) => format!(
                "`{value}` is neither \"unix:/path\" nor an ip:port; write e.g. \
                 \"127.0.0.1:8787\""
            ),
        };
        self.problem(raw.span(), field, problem);
        None
    }
}

/// `"10MiB"`, `"512KiB"`, `"1GiB"`, `"1048576"` (bytes); also KB/MB/GB as
/// powers of ten.
pub fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let number: u64 = number.parse().ok()?;
    let unit = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return None,
    };
    number.checked_mul(unit)
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("10MiB"), Some(10 << 20));
        assert_eq!(parse_size("512 KiB"), Some(512 << 10));
        assert_eq!(parse_size("1000"), Some(1000));
        assert_eq!(parse_size("2MB"), Some(2_000_000));
        assert_eq!(parse_size("ten"), None);
        assert_eq!(parse_size("1TiB"), None);
        assert_eq!(parse_size("99999999999999999999GiB"), None);
    }
}
