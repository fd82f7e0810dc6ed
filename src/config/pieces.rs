//! Reading a config's `[[credential]]` tables one at a time.
//!
//! The TOML crate builds the whole document before serde sees any of it.
//! For 10 000 credentials that is about 80 MiB of short-lived tables and
//! spans, and the credentials validated from them were allocated in
//! between, so glibc could give little of it back: the daemon idled at
//! 53 MiB for 16 MiB of live data. A config is therefore read in pieces:
//! everything outside the credential tables as one document (the
//! credentials blanked out, so every position stays where it was), then
//! each `[[credential]]` with its subtables as a document of its own,
//! validated before the next is read. The parser's state never exceeds one
//! credential's, and the credentials lie packed together.
//!
//! The pieces are found by looking for table headers at the start of lines.
//! A line that only looks like one, inside a multi-line string or array,
//! leaves the piece before it unterminated, and that piece fails to parse.
//! Any piece that fails sends the whole file back through the one-document
//! reader, so what a config means, and every error it gets, is exactly what
//! reading it whole gives.

use std::ops::Range;

use serde::Deserialize;

use super::raw::{RawConfig, RawCredential};

/// A config cut at its credential tables.
pub(super) struct Pieces {
    /// The file with each credential table blanked out: every byte but
    /// newlines a space, so offsets into it are offsets into the file.
    rest: String,
    /// Where each `[[credential]]` table, with its subtables, is.
    credentials: Vec<Range<usize>>,
}

/// What a table header opens.
#[derive(Debug, PartialEq, Eq)]
enum Header {
    /// `[[credential]]`: the next credential.
    Credential,
    /// `[credential.…]` or `[[credential.…]]`: part of the credential
    /// above it.
    WithinCredential,
    /// Any other table.
    Other,
}

/// The table header `line` opens, if it is one.
fn header(line: &str) -> Option<Header> {
    let line = line.trim_start();
    let (keys, array) = match line.strip_prefix("[[") {
        Some(rest) => (rest.split_once("]]")?.0, true),
        None => (line.strip_prefix('[')?.split_once(']')?.0, false),
    };
    let keys = keys.trim();
    Some(match keys.split_once('.') {
        None if array && keys == "credential" => Header::Credential,
        Some((first, _)) if first.trim_end() == "credential" => Header::WithinCredential,
        // `[credential]`, quoted keys and the like go to the rest, where
        // they are a credential written another way and the whole-file
        // reader takes over.
        _ => Header::Other,
    })
}

impl Pieces {
    /// Cuts `text` at its table headers.
    pub(super) fn of(text: &str) -> Self {
        let mut credentials = Vec::new();
        let mut open: Option<usize> = None;
        let mut at = 0;
        for line in text.split_inclusive('\n') {
            match header(line) {
                Some(Header::Credential) => {
                    if let Some(start) = open.replace(at) {
                        credentials.push(start..at);
                    }
                }
                Some(Header::WithinCredential) | None => {}
                Some(Header::Other) => {
                    if let Some(start) = open.take() {
                        credentials.push(start..at);
                    }
                }
            }
            at += line.len();
        }
        if let Some(start) = open {
            credentials.push(start..text.len());
        }
        let mut rest = String::with_capacity(if credentials.is_empty() {
            0
        } else {
            text.len()
        });
        let mut from = 0;
        for piece in &credentials {
            rest.push_str(&text[from..piece.start]);
            rest.extend(
                text.as_bytes()[piece.clone()]
                    .iter()
                    .map(|&b| if b == b'\n' { '\n' } else { ' ' }),
            );
            from = piece.end;
        }
        if !credentials.is_empty() {
            rest.push_str(&text[from..]);
        }
        Self { rest, credentials }
    }

    /// Whether there is anything to gain: a file without credential tables
    /// is read whole.
    pub(super) fn any(&self) -> bool {
        !self.credentials.is_empty()
    }

    /// Everything but the credentials; `None` if it does not parse, or
    /// holds credentials written some other way (then the whole-file
    /// reader decides what they mean).
    pub(super) fn rest(&self) -> Option<RawConfig> {
        let raw: RawConfig = toml::from_str(&self.rest).ok()?;
        raw.credential.is_empty().then_some(raw)
    }

    /// Each credential with the offset its spans are relative to, read as
    /// it is asked for; `Err` for a piece that does not parse on its own.
    pub(super) fn credentials<'t>(
        &self,
        text: &'t str,
    ) -> impl Iterator<Item = Result<(usize, RawCredential), Unreadable>> + 't {
        /// A piece: one `[[credential]]` table and nothing else.
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct One {
            credential: Vec<RawCredential>,
        }
        let pieces = self.credentials.clone();
        pieces.into_iter().map(move |piece| {
            let one: One = toml::from_str(&text[piece.clone()]).map_err(|_| Unreadable)?;
            let [credential] =
                <[RawCredential; 1]>::try_from(one.credential).map_err(|_| Unreadable)?;
            Ok((piece.start, credential))
        })
    }
}

/// A piece that does not parse on its own: read the file whole instead.
#[derive(Debug)]
pub(super) struct Unreadable;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_told_apart() {
        for (line, want) in [
            ("[[credential]]\n", Some(Header::Credential)),
            (
                "  [[ credential ]] # the next one\n",
                Some(Header::Credential),
            ),
            ("[credential.allow]\n", Some(Header::WithinCredential)),
            ("[[credential.allow]]\n", Some(Header::WithinCredential)),
            (
                "[ credential . extra_headers ]\n",
                Some(Header::WithinCredential),
            ),
            ("[credential]\n", Some(Header::Other)),
            ("[[\"credential\"]]\n", Some(Header::Other)),
            ("[daemon]\n", Some(Header::Other)),
            ("[[proxy]]\n", Some(Header::Other)),
            ("[[credentials]]\n", Some(Header::Other)),
            ("name = \"[[credential]]\"\n", None),
            ("# [[credential]]\n", None),
            ("[unclosed\n", None),
        ] {
            assert_eq!(header(line), want, "{line:?}");
        }
    }

    #[test]
    fn the_rest_keeps_every_offset() {
        let text = "[daemon]\nsocket = \"/s\"\n\n[[credential]]\nname = \"é\"\n\
                    [credential.allow]\nuids = [0]\n[[proxy]]\nname = \"p\"\n";
        let pieces = Pieces::of(text);
        assert_eq!(pieces.credentials.len(), 1);
        let piece = pieces.credentials[0].clone();
        assert!(text[piece.clone()].starts_with("[[credential]]"));
        assert!(text[piece.clone()].ends_with("uids = [0]\n"));
        assert_eq!(pieces.rest.len(), text.len());
        assert_eq!(
            pieces.rest.match_indices('\n').collect::<Vec<_>>(),
            text.match_indices('\n').collect::<Vec<_>>()
        );
        assert!(pieces.rest[piece].trim().is_empty());
        assert!(pieces.rest.ends_with("[[proxy]]\nname = \"p\"\n"));
    }
}
