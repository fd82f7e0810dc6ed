//! `[fleet]`: the etcd cluster through which hosts share credentials (see
//! `crate::fleet`).

use std::time::Duration;

use serde_spanned::Spanned;

use super::context::{Cleartext, Context};
use super::raw::RawFleet;
use crate::fleet::{Settings, Tls};

/// Keys live under this prefix unless `prefix` says otherwise.
pub const DEFAULT_FLEET_PREFIX: &str = "/tokend/";
/// The largest CA or certificate file read for TLS to etcd.
const MAX_PEM: u64 = 1024 * 1024;
/// How long a node's lease outlives its last keep-alive by default.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(10);
/// The range `lease_ttl` may be set in: etcd's minimum TTL is 2 s, and a
/// leader gone for longer than 5 minutes is an outage, not a hiccup.
pub const LEASE_TTL_RANGE: std::ops::RangeInclusive<Duration> =
    Duration::from_secs(2)..=Duration::from_secs(300);

impl Context<'_> {
    /// Validates `[fleet]`.
    pub(super) fn fleet(&mut self, raw: Spanned<RawFleet>) -> Option<Settings> {
        let at = raw.span();
        let raw = raw.into_inner();
        let problems_before = self.problems.len();
        let mut endpoints = Vec::new();
        match &raw.endpoints {
            None => self.problem(
                at.clone(),
                "fleet.endpoints",
                "missing; list etcd's client URLs, e.g. [\"https://etcd-1:2379\"]".into(),
            ),
            Some(list) if list.get_ref().is_empty() => self.problem(
                list.span(),
                "fleet.endpoints",
                "empty; list etcd's client URLs, e.g. [\"https://etcd-1:2379\"]".into(),
            ),
            Some(list) => {
                for e in list.get_ref() {
                    // The etcd password and the (sealed) records travel to it.
                    if let Some(url) = self.http_url(
                        e.get_ref(),
                        e.span(),
                        "fleet.endpoints",
                        Cleartext::LoopbackOnly,
                        false,
                        "https://etcd-1:2379",
                    ) {
                        endpoints.push(url.as_str().trim_end_matches('/').to_owned());
                    }
                }
            }
        }
        let prefix = match &raw.prefix {
            None => DEFAULT_FLEET_PREFIX.to_owned(),
            Some(p) => {
                let ok = p.get_ref().ends_with('/')
                    && p.get_ref().len() <= 200
                    && !p.get_ref().chars().any(char::is_control);
                if !ok {
                    self.problem(
                        p.span(),
                        "fleet.prefix",
                        "a key prefix ends with `/`, holds no control characters and is at most \
                         200 bytes; write e.g. \"/tokend/prod/\""
                            .into(),
                    );
                }
                p.get_ref().clone()
            }
        };
        let node = match &raw.node {
            Some(n) => {
                if !super::credential::valid_name(n.get_ref()) || n.get_ref().len() > 128 {
                    self.problem(
                        n.span(),
                        "fleet.node",
                        "node names hold only letters, digits, `-`, `_` and `.` (at most 128); \
                         write e.g. \"web-3\""
                            .into(),
                    );
                }
                n.get_ref().clone()
            }
            None => match nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
            {
                Some(h) if super::credential::valid_name(&h) && h.len() <= 128 => h,
                _ => {
                    self.problem(
                        at.clone(),
                        "fleet.node",
                        "the host name cannot name this node; set node, e.g. \"web-3\"".into(),
                    );
                    String::new()
                }
            },
        };
        let lease_ttl = match &raw.lease_ttl {
            None => DEFAULT_LEASE_TTL,
            Some(d) => match self.duration(d, "fleet.lease_ttl") {
                Some(t) if LEASE_TTL_RANGE.contains(&t) && t.subsec_nanos() == 0 => t,
                Some(_) => {
                    self.problem(
                        d.span(),
                        "fleet.lease_ttl",
                        "must be whole seconds from 2s (etcd's minimum) to 5m; write e.g. \"10s\""
                            .into(),
                    );
                    DEFAULT_LEASE_TTL
                }
                None => DEFAULT_LEASE_TTL,
            },
        };
        let auth = match (&raw.user, &raw.password) {
            (None, None) => None,
            (Some(user), Some(_)) => self
                .secret(
                    raw.password.as_ref(),
                    at.clone(),
                    "fleet.password",
                    super::context::SOURCES,
                )
                .map(|(_, password)| (user.get_ref().clone(), password)),
            (Some(user), None) => {
                self.problem(
                    user.span(),
                    "fleet.password",
                    "missing; etcd authentication needs both user and password".into(),
                );
                None
            }
            (None, Some(p)) => {
                self.problem(
                    p.span(),
                    "fleet.user",
                    "missing; etcd authentication needs both user and password".into(),
                );
                None
            }
        };
        let ca = raw
            .tls_ca_file
            .as_deref()
            .and_then(|p| self.pem(p, at.clone(), "fleet.tls_ca_file"));
        let identity = match (&raw.tls_cert_file, &raw.tls_key_file) {
            (Some(cert), Some(key)) => {
                let cert = self.pem(cert, at.clone(), "fleet.tls_cert_file");
                let key = self.private_key(key, at.clone());
                cert.zip(key)
            }
            (None, None) => None,
            _ => {
                self.problem(
                    at.clone(),
                    "fleet.tls_cert_file",
                    "a client certificate needs both tls_cert_file and tls_key_file".into(),
                );
                None
            }
        };
        let tls = Tls {
            configured: raw.tls_ca_file.is_some()
                || raw.tls_cert_file.is_some()
                || raw.tls_key_file.is_some(),
            ca,
            identity,
        };
        if tls.configured && endpoints.iter().any(|e| e.starts_with("http://")) {
            self.problem(
                at,
                "fleet.endpoints",
                "TLS files are set, but an endpoint uses http://; use https:// for every \
                 endpoint, or remove the tls_* files"
                    .into(),
            );
        }
        (self.problems.len() == problems_before).then_some(Settings {
            endpoints,
            prefix,
            node,
            lease_ttl,
            key_file: raw.key_file.map(|p| self.path(&p)),
            auth,
            tls,
        })
    }

    /// The PEM file at `path` (at most [`MAX_PEM`] bytes, read no further),
    /// or a problem naming it and why it cannot be read (never its content).
    fn pem(
        &mut self,
        path: &std::path::Path,
        at: std::ops::Range<usize>,
        field: &str,
    ) -> Option<Vec<u8>> {
        use std::io::Read as _;
        let path = &self.path(path);
        let mut bytes = Vec::new();
        let read =
            std::fs::File::open(path).and_then(|f| f.take(MAX_PEM + 1).read_to_end(&mut bytes));
        match read {
            Ok(_) if bytes.len() as u64 <= MAX_PEM => Some(bytes),
            Ok(_) => {
                let message = format!("{} is larger than 1 MiB; name a PEM file", path.display());
                self.problem(at, field, message);
                None
            }
            Err(e) => {
                self.problem(at, field, format!("cannot read {}: {e}", path.display()));
                None
            }
        }
    }

    /// The client certificate's private key: a secret, so read as secret
    /// files are (private to the daemon's user, at most 64 KiB).
    fn private_key(
        &mut self,
        path: &std::path::Path,
        at: std::ops::Range<usize>,
    ) -> Option<zeroize::Zeroizing<Vec<u8>>> {
        match crate::secret::read_private_file(&self.path(path)) {
            Ok(key) => Some(zeroize::Zeroizing::new(key.as_bytes().to_vec())),
            Err(e) => {
                self.problem(at, "fleet.tls_key_file", e.to_string());
                None
            }
        }
    }
}
