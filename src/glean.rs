//! Glean's rules for its own API tokens: permissions, scopes, and the shape of
//! an `X-Glean-ActAs` identity.
//!
//! Glean fixes a token's permission and scopes when the token is created, so
//! tokend checks them locally: a caller learns that a token cannot serve its
//! request from tokend, with advice, instead of from a 400/403 at the API.

use std::fmt;
use std::str::FromStr;

/// Header a global token must carry to name the user it acts for.
pub const ACT_AS_HEADER: &str = "X-Glean-ActAs";

/// Header that tells Glean a bearer token is an OAuth access token (from
/// Glean's authorization server or an SSO provider), not a Glean-issued one.
pub const AUTH_TYPE_HEADER: &str = "X-Glean-Auth-Type";

/// Who a Glean token acts for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Permission {
    /// Acts for the one user fixed at creation; `X-Glean-ActAs` must be empty.
    User,
    /// Acts for any user named in `X-Glean-ActAs`, which is required.
    Global,
    /// Acts for an anonymous user; `X-Glean-ActAs` must be empty.
    Anonymous,
}

impl Permission {
    /// Every permission, e.g. to list the valid choices.
    pub const ALL: [Self; 3] = [Self::User, Self::Global, Self::Anonymous];

    /// The name in the config's `permission` field and in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Global => "global",
            Self::Anonymous => "anonymous",
        }
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Permission {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(s))
            .ok_or(())
    }
}

/// The Client API scopes Glean documents; a token holds one or more.
const SCOPES: [&str; 18] = [
    "ACTIVITY",
    "AGENTS",
    "ANNOUNCEMENTS",
    "ANSWERS",
    "CHAT",
    "COLLECTIONS",
    "DOCPERMISSIONS",
    "DOCUMENTS",
    "ENTITIES",
    "FEED",
    "FEEDBACK",
    "INSIGHTS",
    "PEOPLE",
    "PINS",
    "SEARCH",
    "SHORTCUTS",
    "SUMMARIZE",
    "VERIFICATION",
];

/// One Glean scope, an index into the list of Glean's scopes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scope(u8);

impl Scope {
    /// Every scope name, for error messages that list the valid choices.
    pub fn names() -> &'static [&'static str] {
        &SCOPES
    }

    /// The scope's name as Glean spells it, in upper case.
    pub fn as_str(self) -> &'static str {
        SCOPES[usize::from(self.0)]
    }

    /// The known scope closest in spelling to `s`, to suggest on a typo.
    pub fn closest(s: &str) -> Option<&'static str> {
        let s = s.to_ascii_uppercase();
        SCOPES
            .iter()
            .map(|known| (edit_distance(&s, known), *known))
            .filter(|(d, _)| *d <= 2)
            .min()
            .map(|(_, known)| known)
    }
}

impl FromStr for Scope {
    type Err = ();

    /// Case-insensitive, since Glean's console shows upper case but people
    /// type either.
    fn from_str(s: &str) -> Result<Self, ()> {
        SCOPES
            .iter()
            .position(|known| known.eq_ignore_ascii_case(s))
            .and_then(|i| u8::try_from(i).ok())
            .map(Self)
            .ok_or(())
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of scopes as a bit mask: checking a request's scopes against a
/// token's allocates nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScopeSet(u32);

impl ScopeSet {
    /// Adds `scope` to the set.
    pub fn insert(&mut self, scope: Scope) {
        self.0 |= 1 << scope.0;
    }

    /// Whether `scope` is in the set.
    pub fn contains(self, scope: Scope) -> bool {
        self.0 & (1 << scope.0) != 0
    }

    /// Whether the set holds no scope.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The scopes in `self` that `other` lacks.
    pub fn missing_from(self, other: Self) -> Self {
        Self(self.0 & !other.0)
    }

    /// The scopes in the set, in Glean's documented order.
    pub fn iter(self) -> impl Iterator<Item = Scope> {
        (0..SCOPES.len() as u8)
            .map(Scope)
            .filter(move |s| self.contains(*s))
    }
}

impl FromIterator<Scope> for ScopeSet {
    fn from_iter<I: IntoIterator<Item = Scope>>(iter: I) -> Self {
        let mut set = Self::default();
        for scope in iter {
            set.insert(scope);
        }
        set
    }
}

impl fmt::Display for ScopeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, scope) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(scope.as_str())?;
        }
        Ok(())
    }
}

/// Whether `s` can be sent as an `X-Glean-ActAs` email: one `@`, a non-empty
/// local part, a dotted domain, no whitespace or control characters (the value
/// goes into an HTTP header, so CR/LF must never pass).
pub fn is_valid_email(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && local
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"@()<>[]\\,;:\"".contains(&b));
    let domain_ok = domain.len() <= 253
        && domain.split('.').count() >= 2
        && domain.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    local_ok && domain_ok && s.len() <= 254
}

/// A pattern over act-as emails: `*` matches any run of characters, the rest
/// matches itself ignoring ASCII case (email domains are case-insensitive, and
/// Glean resolves users case-insensitively).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActAsPattern(String);

impl ActAsPattern {
    /// Patterns must contain an `@` so that `*` alone cannot be written by
    /// accident; `*@*` says "anyone" explicitly.
    pub fn parse(s: &str) -> Option<Self> {
        let ok = s.contains('@') && s.bytes().all(|b| b.is_ascii_graphic());
        ok.then(|| Self(s.to_ascii_lowercase()))
    }

    /// The pattern as written, in lower case.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `email` matches the pattern, ignoring ASCII case.
    pub fn matches(&self, email: &str) -> bool {
        glob_match(self.0.as_bytes(), email.as_bytes())
    }
}

impl fmt::Display for ActAsPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Iterative `*` glob (pattern in lower case; text compared ignoring ASCII
/// case) with single-star backtracking: linear in practice and
/// never recursive, so a hostile pattern cannot blow the stack.
pub(crate) fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t].to_ascii_lowercase() {
            p += 1;
            t += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&b| b == b'*')
}

/// Levenshtein distance, for "did you mean" hints on short names.
fn edit_distance(a: &str, b: &str) -> usize {
    let b = b.as_bytes();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.bytes().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_parse_case_insensitively_and_suggest_on_typos() {
        assert_eq!("search".parse::<Scope>().unwrap().as_str(), "SEARCH");
        assert!("SERACH".parse::<Scope>().is_err());
        assert_eq!(Scope::closest("SERACH"), Some("SEARCH"));
        assert_eq!(Scope::closest("BANANAS"), None);
    }

    #[test]
    fn scope_sets_report_what_is_missing() {
        let have: ScopeSet = ["SEARCH", "CHAT"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let want: ScopeSet = ["SEARCH", "PEOPLE", "FEED"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(want.missing_from(have).to_string(), "FEED, PEOPLE");
        assert!(have.missing_from(have).is_empty());
    }

    #[test]
    fn emails() {
        for ok in ["a@b.co", "first.last+tag@corp.example.com", "x_y@a-b.io"] {
            assert!(is_valid_email(ok), "{ok}");
        }
        for bad in [
            "",
            "a",
            "@b.co",
            "a@",
            "a@b",
            "a@@b.co",
            "a b@c.co",
            "a@b.co\r\nX-Evil: 1",
            "a@-b.co",
            "a@b..co",
        ] {
            assert!(!is_valid_email(bad), "{bad:?}");
        }
    }

    #[test]
    fn act_as_patterns() {
        let p = ActAsPattern::parse("*@Corp.Example").unwrap();
        assert!(p.matches("alice@corp.example"));
        assert!(p.matches("Bob@CORP.example"));
        assert!(!p.matches("alice@corp.example.evil"));
        assert!(!p.matches("alice@other.example"));
        let p = ActAsPattern::parse("svc-*@corp.example").unwrap();
        assert!(p.matches("svc-build@corp.example"));
        assert!(!p.matches("alice@corp.example"));
        assert!(ActAsPattern::parse("*@*").unwrap().matches("a@b.c"));
        assert!(ActAsPattern::parse("*").is_none());
        assert!(ActAsPattern::parse("a b@c").is_none());
    }
}
