//! Just enough HPACK (RFC 7541) for the authority layer: a decoder that
//! follows a client's header blocks, dynamic table and all, so the layer
//! knows every field the client meant.
//!
//! Written here rather than taken from a crate because h2 keeps its codec
//! private, and the HPACK crates on crates.io rebuild a hash table for every
//! Huffman-coded string (about 10 µs each), which would have cost tokend
//! more than half its `GetHeaders` throughput. Decoding here is
//! table-driven: the Huffman code is canonical, so per-length first codes
//! and a symbol list derived from the code lengths decode it.

use std::collections::VecDeque;
use std::sync::LazyLock;

/// Why a header block cannot be decoded. Every variant is a compression
/// error: the connection cannot go on.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum HpackError {
    /// The block ends inside a field.
    #[error("a header block ends inside a field")]
    Truncated,
    /// An integer does not fit in 28 bits.
    #[error("an HPACK integer is too large")]
    Overflow,
    /// A field names a table entry that does not exist.
    #[error("HPACK index {0} is not in the table")]
    BadIndex(usize),
    /// A Huffman-coded string is malformed (EOS inside, or bad padding).
    #[error("a Huffman-coded string is malformed")]
    Huffman,
    /// A dynamic table size update beyond what was advertised, or after the
    /// first field of a block.
    #[error("a dynamic table size update is out of place or above {0} bytes")]
    TableSize(usize),
}

/// A dynamic table entry: name and value.
type Entry = (Box<[u8]>, Box<[u8]>);

/// A client's HPACK state, as the server side sees it.
#[derive(Debug)]
pub struct Decoder {
    /// Newest first, as HPACK indexes it.
    table: VecDeque<Entry>,
    size: usize,
    max_size: usize,
    /// The size we advertise (SETTINGS_HEADER_TABLE_SIZE): a client may not
    /// go above it.
    limit: usize,
    name: Vec<u8>,
    value: Vec<u8>,
    memo: Memo,
}

/// RFC 7541 §4.1: an entry's size counts 32 bytes of overhead.
const ENTRY_OVERHEAD: usize = 32;
const STATIC_LEN: usize = STATIC_TABLE.len();

impl Decoder {
    /// A decoder for a new connection whose server advertises a dynamic
    /// table of `limit` bytes (4096 unless SETTINGS say otherwise).
    pub fn new(limit: usize) -> Self {
        Self {
            table: VecDeque::new(),
            size: 0,
            max_size: limit,
            limit,
            name: Vec::new(),
            value: Vec::new(),
            memo: Memo::default(),
        }
    }

    /// Decodes one whole header block (fragments joined), calling `field`
    /// with each name, value and whether it was sent "never indexed", and
    /// updating the dynamic table as the client's encoder did.
    pub fn decode(
        &mut self,
        mut block: &[u8],
        mut field: impl FnMut(&[u8], &[u8], bool),
    ) -> Result<(), HpackError> {
        let mut fields_seen = false;
        while let Some(&first) = block.first() {
            if first & 0x80 != 0 {
                let index = integer(&mut block, 7)?;
                let (name, value) = self.entry(index)?;
                field(name, value, false);
            } else if first & 0xe0 == 0x20 {
                let size = integer(&mut block, 5)?;
                if fields_seen || size > self.limit {
                    return Err(HpackError::TableSize(self.limit));
                }
                self.max_size = size;
                self.evict(0);
                continue;
            } else {
                let (prefix, index, never) = match first {
                    b if b & 0x40 != 0 => (6, true, false),
                    b => (4, false, b & 0x10 != 0),
                };
                let name_index = integer(&mut block, prefix)?;
                let mut name = std::mem::take(&mut self.name);
                let mut value = std::mem::take(&mut self.value);
                name.clear();
                if name_index == 0 {
                    string(&mut block, &mut name, &mut self.memo)?;
                } else {
                    name.extend_from_slice(self.entry(name_index)?.0);
                }
                string(&mut block, &mut value, &mut self.memo)?;
                field(&name, &value, never);
                if index {
                    self.insert(&name, &value);
                }
                (self.name, self.value) = (name, value);
            }
            fields_seen = true;
        }
        Ok(())
    }

    fn entry(&self, index: usize) -> Result<(&[u8], &[u8]), HpackError> {
        match index {
            0 => Err(HpackError::BadIndex(0)),
            i if i <= STATIC_LEN => Ok(STATIC_TABLE[i - 1]),
            i => self
                .table
                .get(i - STATIC_LEN - 1)
                .map(|(n, v)| (&n[..], &v[..]))
                .ok_or(HpackError::BadIndex(i)),
        }
    }

    /// RFC 7541 §4.4: an entry larger than the table empties it and is not
    /// added.
    fn insert(&mut self, name: &[u8], value: &[u8]) {
        let size = name.len() + value.len() + ENTRY_OVERHEAD;
        if size > self.max_size {
            self.table.clear();
            self.size = 0;
            return;
        }
        self.evict(size);
        self.table.push_front((name.into(), value.into()));
        self.size += size;
    }

    /// Drops the oldest entries until `room` more bytes fit.
    fn evict(&mut self, room: usize) {
        while self.size + room > self.max_size {
            let Some((n, v)) = self.table.pop_back() else {
                break;
            };
            self.size -= n.len() + v.len() + ENTRY_OVERHEAD;
        }
    }
}

/// RFC 7541 §5.1: an integer with an N-bit prefix.
fn integer(block: &mut &[u8], prefix: u8) -> Result<usize, HpackError> {
    let (&first, mut rest) = block.split_first().ok_or(HpackError::Truncated)?;
    let mask = (1usize << prefix) - 1;
    let mut value = usize::from(first) & mask;
    if value == mask {
        let mut shift = 0;
        loop {
            let (&b, tail) = rest.split_first().ok_or(HpackError::Truncated)?;
            rest = tail;
            if shift > 21 {
                return Err(HpackError::Overflow);
            }
            value += usize::from(b & 0x7f) << shift;
            shift += 7;
            if b & 0x80 == 0 {
                break;
            }
        }
    }
    *block = rest;
    Ok(value)
}

/// RFC 7541 §5.2: a string literal, Huffman-coded or not, into `out`.
fn string(block: &mut &[u8], out: &mut Vec<u8>, memo: &mut Memo) -> Result<(), HpackError> {
    let huffman = block.first().ok_or(HpackError::Truncated)? & 0x80 != 0;
    let len = integer(block, 7)?;
    if len > block.len() {
        return Err(HpackError::Truncated);
    }
    let (raw, rest) = block.split_at(len);
    *block = rest;
    out.clear();
    if huffman {
        memo.huffman_decode(raw, out)
    } else {
        out.extend_from_slice(raw);
        Ok(())
    }
}

/// How many decoded Huffman strings a connection remembers, and the
/// longest (as sent) it remembers.
const MEMO_ENTRIES: usize = 4;
const MEMO_MAX: usize = 128;

/// A Huffman-coded string as sent, and decoded.
type Remembered = (Box<[u8]>, Box<[u8]>);

/// The last few Huffman strings a client sent, decoded, per connection (at
/// most [`MEMO_ENTRIES`] of [`MEMO_MAX`] bytes). Clients repeat some
/// literals verbatim on every request: h2, under tonic's client, never
/// indexes `:path`, so each call's path arrives as the same Huffman-coded
/// bytes, and decoding it bit by bit was over half of this layer's cost per
/// call (about 5 000 instructions). A repeat is a comparison and a copy.
#[derive(Debug, Default)]
struct Memo {
    /// At most [`MEMO_ENTRIES`].
    entries: Vec<Remembered>,
    /// The entry to replace next once full: the oldest.
    next: usize,
}

impl Memo {
    /// [`huffman_decode`], from memory when `raw` was seen lately.
    fn huffman_decode(&mut self, raw: &[u8], out: &mut Vec<u8>) -> Result<(), HpackError> {
        if let Some((_, decoded)) = self.entries.iter().find(|(sent, _)| **sent == *raw) {
            out.extend_from_slice(decoded);
            return Ok(());
        }
        huffman_decode(raw, out)?;
        if raw.len() <= MEMO_MAX {
            let entry = (raw.into(), out.as_slice().into());
            match self.entries.get_mut(self.next) {
                Some(oldest) => *oldest = entry,
                None => self.entries.push(entry),
            }
            self.next = (self.next + 1) % MEMO_ENTRIES;
        }
        Ok(())
    }
}

/// The canonical Huffman code's decoding tables, by code length.
struct Huffman {
    /// The first code of each length.
    first: [u32; 31],
    /// How many codes have each length.
    count: [u32; 31],
    /// Where each length's symbols start in `symbols`.
    offset: [u16; 31],
    /// Symbols ordered by (code length, symbol): the canonical order.
    symbols: [u16; 257],
}

static HUFFMAN: LazyLock<Huffman> = LazyLock::new(|| {
    let mut h = Huffman {
        first: [0; 31],
        count: [0; 31],
        offset: [0; 31],
        symbols: [0; 257],
    };
    let mut order: Vec<u16> = (0..257).collect();
    order.sort_by_key(|&s| (CODE_LENGTHS[usize::from(s)], s));
    h.symbols.copy_from_slice(&order);
    for &len in &CODE_LENGTHS {
        h.count[usize::from(len)] += 1;
    }
    let (mut code, mut offset) = (0u32, 0u16);
    for len in 1..31 {
        code = (code + h.count[len - 1]) << 1;
        h.first[len] = code;
        h.offset[len] = offset;
        offset += h.count[len] as u16;
    }
    h
});

/// Decodes a Huffman-coded string (RFC 7541 §5.2, Appendix B) into `out`.
fn huffman_decode(raw: &[u8], out: &mut Vec<u8>) -> Result<(), HpackError> {
    let h = &*HUFFMAN;
    let (mut code, mut len) = (0u32, 0usize);
    for &byte in raw {
        for bit in (0..8).rev() {
            code = code << 1 | u32::from(byte >> bit & 1);
            len += 1;
            if code < h.first[len] + h.count[len] {
                let symbol = h.symbols[usize::from(h.offset[len]) + (code - h.first[len]) as usize];
                // EOS (256) must not appear inside a string.
                out.push(u8::try_from(symbol).map_err(|_| HpackError::Huffman)?);
                (code, len) = (0, 0);
            } else if len == 30 {
                return Err(HpackError::Huffman);
            }
        }
    }
    // Padding: fewer than 8 bits, all ones (the start of EOS).
    if len > 7 || code != (1 << len) - 1 {
        return Err(HpackError::Huffman);
    }
    Ok(())
}

/// Code lengths of the HPACK Huffman code (RFC 7541 Appendix B), by symbol
/// (256 is EOS). The code is canonical, so the codes follow from these.
const CODE_LENGTHS: [u8; 257] = [
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 30, 28,
    28, 28, 28, 28, 28, 28, 28, 28, 6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, 5, 5,
    5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10, 13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, 15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6,
    6, 5, 6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, 20, 22, 20, 20, 22, 22, 22, 23, 22,
    23, 23, 23, 23, 23, 24, 23, 24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, 22,
    21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, 21, 21, 22, 21, 23, 22, 23, 23, 20,
    22, 22, 22, 23, 22, 22, 23, 26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, 19,
    21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, 20, 24, 20, 21, 22, 21, 21, 23, 22,
    22, 25, 25, 24, 24, 26, 23, 26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26, 30,
];

/// The static table (RFC 7541 Appendix A); index 1 is the first entry.
const STATIC_TABLE: [(&[u8], &[u8]); 61] = [
    (b":authority", b""),
    (b":method", b"GET"),
    (b":method", b"POST"),
    (b":path", b"/"),
    (b":path", b"/index.html"),
    (b":scheme", b"http"),
    (b":scheme", b"https"),
    (b":status", b"200"),
    (b":status", b"204"),
    (b":status", b"206"),
    (b":status", b"304"),
    (b":status", b"400"),
    (b":status", b"404"),
    (b":status", b"500"),
    (b"accept-charset", b""),
    (b"accept-encoding", b"gzip, deflate"),
    (b"accept-language", b""),
    (b"accept-ranges", b""),
    (b"accept", b""),
    (b"access-control-allow-origin", b""),
    (b"age", b""),
    (b"allow", b""),
    (b"authorization", b""),
    (b"cache-control", b""),
    (b"content-disposition", b""),
    (b"content-encoding", b""),
    (b"content-language", b""),
    (b"content-length", b""),
    (b"content-location", b""),
    (b"content-range", b""),
    (b"content-type", b""),
    (b"cookie", b""),
    (b"date", b""),
    (b"etag", b""),
    (b"expect", b""),
    (b"expires", b""),
    (b"from", b""),
    (b"host", b""),
    (b"if-match", b""),
    (b"if-modified-since", b""),
    (b"if-none-match", b""),
    (b"if-range", b""),
    (b"if-unmodified-since", b""),
    (b"last-modified", b""),
    (b"link", b""),
    (b"location", b""),
    (b"max-forwards", b""),
    (b"proxy-authenticate", b""),
    (b"proxy-authorization", b""),
    (b"range", b""),
    (b"referer", b""),
    (b"refresh", b""),
    (b"retry-after", b""),
    (b"server", b""),
    (b"set-cookie", b""),
    (b"strict-transport-security", b""),
    (b"transfer-encoding", b""),
    (b"user-agent", b""),
    (b"vary", b""),
    (b"via", b""),
    (b"www-authenticate", b""),
];

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn decode_all(d: &mut Decoder, block: &[u8]) -> Result<Vec<(String, String)>, HpackError> {
        let mut out = Vec::new();
        d.decode(block, |n, v, _| {
            out.push((
                String::from_utf8_lossy(n).into_owned(),
                String::from_utf8_lossy(v).into_owned(),
            ));
        })?;
        Ok(out)
    }

    /// Decodes with an independent implementation, for comparison.
    fn reference(d: &mut loona_hpack::Decoder<'_>, block: &[u8]) -> Vec<(String, String)> {
        d.decode(block)
            .unwrap()
            .into_iter()
            .map(|(n, v)| {
                (
                    String::from_utf8_lossy(&n).into_owned(),
                    String::from_utf8_lossy(&v).into_owned(),
                )
            })
            .collect()
    }

    /// RFC 7541 C.4: three requests, Huffman-coded, sharing the table.
    #[test]
    fn rfc7541_requests_with_huffman() {
        let mut d = Decoder::new(4096);
        let first = decode_all(&mut d, &hex("8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff")).unwrap();
        let want = [
            (":method", "GET"),
            (":scheme", "http"),
            (":path", "/"),
            (":authority", "www.example.com"),
        ];
        assert_eq!(first, want.map(|(n, v)| (n.to_owned(), v.to_owned())));
        assert_eq!(d.size, 57);
        let second = decode_all(&mut d, &hex("8286 84be 5886 a8eb 1064 9cbf")).unwrap();
        assert_eq!(second[3], (":authority".into(), "www.example.com".into()));
        assert_eq!(second[4], ("cache-control".into(), "no-cache".into()));
        assert_eq!(d.size, 110);
        let third = decode_all(
            &mut d,
            &hex("8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf"),
        )
        .unwrap();
        assert_eq!(third[4], ("custom-key".into(), "custom-value".into()));
        assert_eq!(d.size, 164);
    }

    /// RFC 7541 C.6: responses with a 256-byte table, so entries are
    /// evicted; checked against an independent decoder.
    #[test]
    fn rfc7541_responses_with_eviction() {
        let blocks = [
            "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6 \
             2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3",
            "4883 640e ffc1 c0bf",
            "88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab \
             77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f \
             9587 3160 65c0 03ed 4ee5 b106 3d50 07",
        ];
        let mut ours = Decoder::new(256);
        let mut theirs = loona_hpack::Decoder::new();
        theirs.set_max_table_size(256);
        for (block, size) in blocks.iter().zip([222, 222, 215]) {
            let block = hex(block);
            assert_eq!(
                decode_all(&mut ours, &block).unwrap(),
                reference(&mut theirs, &block)
            );
            assert_eq!(ours.size, size);
        }
        assert_eq!(ours.table.len(), 3);
    }

    #[test]
    fn size_updates_are_bounded_and_only_first() {
        let mut d = Decoder::new(4096);
        // Update to 0 (empties the table), then a field.
        assert!(decode_all(&mut d, &[0x20, 0x82]).is_ok());
        assert_eq!(d.max_size, 0);
        // Above what we advertise.
        assert_eq!(
            decode_all(&mut d, &[0x3f, 0xe2, 0x1f]), // 4097
            Err(HpackError::TableSize(4096))
        );
        // After a field.
        assert_eq!(
            decode_all(&mut d, &[0x82, 0x20]),
            Err(HpackError::TableSize(4096))
        );
    }

    #[test]
    fn malformed_blocks_are_errors() {
        let mut d = Decoder::new(4096);
        assert_eq!(decode_all(&mut d, &[0xbe]), Err(HpackError::BadIndex(62)));
        assert_eq!(decode_all(&mut d, &[0x80]), Err(HpackError::BadIndex(0)));
        assert_eq!(
            decode_all(&mut d, &[0x41, 0x05, b'a']),
            Err(HpackError::Truncated)
        );
        assert_eq!(
            decode_all(&mut d, &[0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]),
            Err(HpackError::Overflow)
        );
        // EOS inside a string; padding of 8 bits; padding of zeros.
        assert_eq!(
            decode_all(&mut d, &[0x41, 0x84, 0xff, 0xff, 0xff, 0xff]),
            Err(HpackError::Huffman)
        );
        assert_eq!(
            decode_all(&mut d, &[0x41, 0x81, 0xff]),
            Err(HpackError::Huffman)
        );
        assert_eq!(
            decode_all(&mut d, &[0x41, 0x81, 0x00]),
            Err(HpackError::Huffman)
        );
    }

    /// Huffman-codes `s` with the canonical code the decoder derives.
    fn huffman_encode(s: &[u8]) -> Vec<u8> {
        let h = &*HUFFMAN;
        let (mut out, mut acc, mut bits) = (Vec::new(), 0u64, 0);
        for &b in s {
            let len = usize::from(CODE_LENGTHS[usize::from(b)]);
            let pos = h.symbols.iter().position(|&x| x == u16::from(b)).unwrap();
            let code = h.first[len] + (pos - usize::from(h.offset[len])) as u32;
            acc = acc << len | u64::from(code);
            bits += len;
            while bits >= 8 {
                out.push((acc >> (bits - 8)) as u8);
                bits -= 8;
            }
        }
        if bits > 0 {
            out.push((acc << (8 - bits)) as u8 | (0xff >> bits));
        }
        out
    }

    /// Literal fields (without indexing, new names), Huffman-coded.
    fn literals(fields: &[(&str, &str)]) -> Vec<u8> {
        let mut block = vec![];
        for (n, v) in fields {
            block.push(0x00);
            for s in [n, v] {
                let coded = huffman_encode(s.as_bytes());
                assert!(coded.len() < 127);
                block.push(0x80 | coded.len() as u8);
                block.extend_from_slice(&coded);
            }
        }
        block
    }

    #[test]
    fn repeated_huffman_strings_decode_alike_from_memory() {
        let paths = ["/a.B/C", "/a.B/D", "/a.B/E", "/a.B/F", "/a.B/G", "/a.B/H"];
        let mut d = Decoder::new(4096);
        // More distinct strings than remembered, in turns and repeated, so
        // entries are both found and replaced.
        for round in 0..3 {
            for (i, path) in paths.iter().enumerate() {
                let value = paths[(i + round) % paths.len()];
                let fields = [(":path", *path), ("x-v", value), (":path", *path)];
                let want = fields.map(|(n, v)| (n.to_owned(), v.to_owned()));
                assert_eq!(decode_all(&mut d, &literals(&fields)).unwrap(), want);
            }
        }
        assert_eq!(d.memo.entries.len(), MEMO_ENTRIES);
        // A malformed string is refused even where a good one was remembered.
        let mut bad = literals(&[(":path", "/a.B/H")]);
        *bad.last_mut().unwrap() &= 0xfe;
        assert_eq!(decode_all(&mut d, &bad), Err(HpackError::Huffman));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn huffman_round_trips(s in proptest::collection::vec(any::<u8>(), 0..100)) {
            let mut out = Vec::new();
            huffman_decode(&huffman_encode(&s), &mut out).unwrap();
            prop_assert_eq!(out, s);
        }

        /// Blocks from an independent stateful encoder, table evictions
        /// included, decode as that implementation's decoder does.
        #[test]
        fn agrees_with_an_independent_codec(
            blocks in proptest::collection::vec(
                proptest::collection::vec(("[a-c]{1,3}", "[x-z]{0,200}"), 1..8),
                1..20,
            ),
        ) {
            let mut encoder = loona_hpack::Encoder::new();
            let mut theirs = loona_hpack::Decoder::new();
            let mut ours = Decoder::new(4096);
            for fields in blocks {
                let block = encoder.encode(fields.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())));
                prop_assert_eq!(decode_all(&mut ours, &block).unwrap(), reference(&mut theirs, &block));
            }
        }

        #[test]
        fn garbage_never_panics(block in proptest::collection::vec(any::<u8>(), 0..500)) {
            let _ = decode_all(&mut Decoder::new(4096), &block);
        }
    }
}
