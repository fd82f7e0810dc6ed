//! Accepting whatever HTTP/2 `:authority` a client sends on the socket.
//!
//! For a Unix-socket target, grpc C-core (Python, Ruby, PHP, C++),
//! grpc-java, grpc-swift and grpcurl send the socket path, often
//! percent-encoded (`tmp%2Frun%2Ftokend.sock`), as `:authority`. The `h2`
//! crate under tonic accepts only an RFC 3986 `host[:port]` there and resets
//! every such stream with `PROTOCOL_ERROR` before tonic sees it, so those
//! clients could not call tokend without an undocumented channel option.
//! Authority means nothing on our socket (there are no virtual hosts), so
//! this layer sits between the accepted connection and h2 and replaces an
//! authority h2 would refuse with `localhost`. Server→client bytes pass
//! untouched.
//!
//! HPACK is stateful: a client's later blocks refer by index to entries its
//! earlier blocks added to the dynamic table (grpcio's second request names
//! its authority as a one-byte index). So the layer decodes every header
//! block with its own decoder, whose table mirrors the client's encoder.
//! While no rewrite was needed it forwards the client's bytes unchanged
//! (h2's table then mirrors the client's too). From the first block that
//! needs one, it re-encodes every block of the connection using only the
//! static table and literals that are not indexed, so h2's table is never
//! read again and cannot fall out of step with the client's.
//!
//! The HPACK decoding is in `hpack`. [`Rewriter`] is the sans-I/O core (frames in, frames out);
//! [`AuthorityStream`] puts it on a stream.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::Connected;

use super::hpack::{Decoder, HpackError};

/// The largest header block (HEADERS plus CONTINUATION fragments, as
/// encoded) a client may send. gRPC clients cap metadata at 8 KiB by
/// default; this leaves room and bounds what one connection can make us
/// buffer.
pub const MAX_HEADER_BLOCK: usize = 64 * 1024;

/// The largest decoded header list (RFC 7541 sizes: name + value + 32 per
/// field). A small block can reference a 4 KiB table entry many times over,
/// so the decoded size needs its own bound.
pub const MAX_HEADER_LIST: usize = 64 * 1024;

/// The dynamic table size h2 advertises (the protocol default); a client may
/// not grow its table beyond it.
const MAX_TABLE_SIZE: usize = 4096;

/// How long a new connection may take to send the HTTP/2 client preface
/// (24 bytes any client sends at once). A connection that sends nothing is
/// closed after it instead of holding a file descriptor forever.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What replaces an authority h2 would refuse.
const LOCALHOST: &[u8] = b"localhost";

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER: usize = 9;
/// The frame size every HTTP/2 peer must accept; re-encoded blocks are
/// split at it.
const MAX_FRAME: usize = 16_384;

const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;

/// Why a connection's client→server bytes cannot be carried on. The
/// connection is closed; h2 would have refused all of these too.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RewriteError {
    /// A header block is larger than [`MAX_HEADER_BLOCK`].
    #[error("an HTTP/2 header block exceeds {MAX_HEADER_BLOCK} bytes")]
    BlockTooLarge,
    /// A decoded header list is larger than [`MAX_HEADER_LIST`].
    #[error("an HTTP/2 header list exceeds {MAX_HEADER_LIST} bytes decoded")]
    ListTooLarge,
    /// A frame other than CONTINUATION for the same stream arrived inside a
    /// header block, or a CONTINUATION outside one.
    #[error("HTTP/2 protocol error: a header block was interrupted or continued out of place")]
    Interleaved,
    /// A HEADERS frame's padding or priority fields do not fit in it.
    #[error("HTTP/2 protocol error: a HEADERS frame is shorter than its padding")]
    BadPadding,
    /// The HPACK block cannot be decoded.
    #[error("HTTP/2 compression error: {0}")]
    Hpack(#[from] HpackError),
}

impl From<RewriteError> for io::Error {
    fn from(e: RewriteError) -> Self {
        Self::new(io::ErrorKind::InvalidData, e)
    }
}

#[derive(Debug, Clone, Copy)]
enum State {
    /// Matching the client preface; `usize` bytes of it seen so far.
    Preface(usize),
    /// Not HTTP/2 after all: everything passes through for h2 to refuse.
    Raw,
    /// At a frame boundary.
    FrameHeader,
    /// Forwarding the rest of a frame that carries no header block.
    Forward(usize),
}

/// The header block being collected: its frames as received, and its HPACK
/// fragments joined.
#[derive(Default)]
struct Block {
    stream: u32,
    /// The HEADERS frame's END_STREAM flag.
    end_stream: bool,
    /// The HEADERS frame's priority fields, kept as sent.
    priority: Option<[u8; 5]>,
    /// The frames exactly as received, to forward when nothing changes.
    raw: Vec<u8>,
    /// The HPACK fragments, joined.
    fragment: Vec<u8>,
    open: bool,
}

/// Rewrites invalid `:authority` values in an HTTP/2 client's byte stream
/// (see the module docs). Feed it what the client sent; it appends what h2
/// should read.
pub struct Rewriter {
    state: State,
    decoder: Decoder,
    block: Block,
    /// Set once a block needed rewriting: from then on every block is
    /// re-encoded.
    reencoding: bool,
    /// The current block re-encoded (reused between blocks).
    encoded: Vec<u8>,
}

impl Default for Rewriter {
    fn default() -> Self {
        Self {
            state: State::Preface(0),
            decoder: Decoder::new(MAX_TABLE_SIZE),
            block: Block::default(),
            reencoding: false,
            encoded: Vec::new(),
        }
    }
}

impl std::fmt::Debug for Rewriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rewriter")
            .field("state", &self.state)
            .field("reencoding", &self.reencoding)
            .finish_non_exhaustive()
    }
}

impl Rewriter {
    /// A rewriter for a new connection.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the client preface has yet to arrive in full.
    pub fn awaiting_preface(&self) -> bool {
        matches!(self.state, State::Preface(_))
    }

    /// Whether some block of this connection needed its authority replaced.
    pub fn rewrote(&self) -> bool {
        self.reencoding
    }

    /// Consumes what it can of `input` (a partial frame stays there until
    /// more arrives) and appends the bytes h2 should read to `out`.
    pub fn feed(&mut self, input: &mut BytesMut, out: &mut BytesMut) -> Result<(), RewriteError> {
        loop {
            match self.state {
                State::Raw => {
                    out.extend_from_slice(input);
                    input.clear();
                    return Ok(());
                }
                State::Preface(seen) => {
                    let n = (PREFACE.len() - seen).min(input.len());
                    if n == 0 {
                        return Ok(());
                    }
                    let matches = input[..n] == PREFACE[seen..seen + n];
                    out.extend_from_slice(&input[..n]);
                    input.advance(n);
                    self.state = match (matches, seen + n == PREFACE.len()) {
                        (false, _) => State::Raw,
                        (true, true) => State::FrameHeader,
                        (true, false) => State::Preface(seen + n),
                    };
                }
                State::Forward(rest) => {
                    let n = rest.min(input.len());
                    if n == 0 && rest > 0 {
                        return Ok(());
                    }
                    out.extend_from_slice(&input[..n]);
                    input.advance(n);
                    self.state = if n == rest {
                        State::FrameHeader
                    } else {
                        State::Forward(rest - n)
                    };
                }
                State::FrameHeader => {
                    if input.len() < FRAME_HEADER {
                        return Ok(());
                    }
                    let len = usize::from(input[0]) << 16
                        | usize::from(input[1]) << 8
                        | usize::from(input[2]);
                    let kind = input[3];
                    let stream =
                        u32::from_be_bytes([input[5], input[6], input[7], input[8]]) & 0x7fff_ffff;
                    let in_block = self.block.open;
                    if in_block && (kind != CONTINUATION || stream != self.block.stream)
                        || !in_block && kind == CONTINUATION
                    {
                        return Err(RewriteError::Interleaved);
                    }
                    if kind != HEADERS && kind != CONTINUATION {
                        out.extend_from_slice(&input[..FRAME_HEADER]);
                        input.advance(FRAME_HEADER);
                        self.state = State::Forward(len);
                        continue;
                    }
                    if self.block.raw.len() + len > MAX_HEADER_BLOCK {
                        return Err(RewriteError::BlockTooLarge);
                    }
                    if input.len() < FRAME_HEADER + len {
                        input.reserve(FRAME_HEADER + len - input.len());
                        return Ok(());
                    }
                    let end_headers = input[4] & END_HEADERS != 0;
                    self.header_frame(&input[..FRAME_HEADER + len])?;
                    input.advance(FRAME_HEADER + len);
                    if end_headers {
                        self.finish_block(out)?;
                    }
                }
            }
        }
    }

    /// Adds one HEADERS or CONTINUATION frame (header included) to the block.
    fn header_frame(&mut self, frame: &[u8]) -> Result<(), RewriteError> {
        let flags = frame[4];
        let mut payload = &frame[FRAME_HEADER..];
        let block = &mut self.block;
        if frame[3] == HEADERS {
            block.open = true;
            block.stream =
                u32::from_be_bytes([frame[5], frame[6], frame[7], frame[8]]) & 0x7fff_ffff;
            block.end_stream = flags & END_STREAM != 0;
            let mut pad = 0;
            if flags & PADDED != 0 {
                let (&n, rest) = payload.split_first().ok_or(RewriteError::BadPadding)?;
                pad = usize::from(n);
                payload = rest;
            }
            block.priority = None;
            if flags & PRIORITY != 0 {
                let (fields, rest) = payload
                    .split_first_chunk::<5>()
                    .ok_or(RewriteError::BadPadding)?;
                block.priority = Some(*fields);
                payload = rest;
            }
            payload = payload
                .get(
                    ..payload
                        .len()
                        .checked_sub(pad)
                        .ok_or(RewriteError::BadPadding)?,
                )
                .ok_or(RewriteError::BadPadding)?;
        }
        block.raw.extend_from_slice(frame);
        block.fragment.extend_from_slice(payload);
        Ok(())
    }

    /// Decodes the finished block (keeping the table in step with the
    /// client's) and forwards it as received or re-encoded.
    fn finish_block(&mut self, out: &mut BytesMut) -> Result<(), RewriteError> {
        let mut block = std::mem::take(&mut self.block);
        self.encoded.clear();
        let mut invalid_authority = false;
        let mut size = 0usize;
        let encoded = &mut self.encoded;
        let reencoding = self.reencoding;
        // Whether the rest of the block needs no re-encoding: on a
        // connection still forwarded as the client sent it, once a good
        // `:authority` has passed. A second `:authority` makes h2 refuse the
        // block as malformed whatever it says, so nothing after the first
        // can call for a rewrite. This spares most fields the scratch
        // encoding (1.6 k instructions of a `GetHeaders`).
        let mut done = false;
        self.decoder
            .decode(&block.fragment, |name, value, never_indexed| {
                size = size.saturating_add(name.len() + value.len() + 32);
                if size > MAX_HEADER_LIST || done {
                    return;
                }
                let authority = name == b":authority";
                let value = if authority && http::uri::Authority::try_from(value).is_err() {
                    invalid_authority = true;
                    LOCALHOST
                } else {
                    value
                };
                encode_field(name, value, never_indexed, encoded);
                done = authority && !reencoding && !invalid_authority;
            })?;
        if size > MAX_HEADER_LIST {
            return Err(RewriteError::ListTooLarge);
        }
        self.reencoding |= invalid_authority;
        if self.reencoding {
            write_block(&block, &self.encoded, out);
        } else {
            out.extend_from_slice(&block.raw);
        }
        // Keep the buffers' capacity for the next block.
        block.raw.clear();
        block.fragment.clear();
        block.open = false;
        self.block = block;
        Ok(())
    }
}

/// Frames a re-encoded block: one HEADERS frame (END_STREAM and priority as
/// the client sent them, no padding), then CONTINUATION frames if it does
/// not fit in [`MAX_FRAME`].
fn write_block(block: &Block, encoded: &[u8], out: &mut BytesMut) {
    let priority = block.priority.as_ref().map_or(&[][..], |p| &p[..]);
    let first = encoded.len().min(MAX_FRAME - priority.len());
    let (head, mut rest) = encoded.split_at(first);
    let mut flags = if block.end_stream { END_STREAM } else { 0 };
    if !priority.is_empty() {
        flags |= PRIORITY;
    }
    if rest.is_empty() {
        flags |= END_HEADERS;
    }
    frame_header(
        out,
        priority.len() + head.len(),
        HEADERS,
        flags,
        block.stream,
    );
    out.extend_from_slice(priority);
    out.extend_from_slice(head);
    while !rest.is_empty() {
        let (chunk, tail) = rest.split_at(rest.len().min(MAX_FRAME));
        rest = tail;
        let flags = if rest.is_empty() { END_HEADERS } else { 0 };
        frame_header(out, chunk.len(), CONTINUATION, flags, block.stream);
        out.extend_from_slice(chunk);
    }
}

fn frame_header(out: &mut BytesMut, len: usize, kind: u8, flags: u8, stream: u32) {
    let len = u32::try_from(len).expect("frames are at most MAX_FRAME bytes");
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.extend_from_slice(&[kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
}

/// Encodes one field without touching the dynamic table: a literal
/// "without indexing", or "never indexed" if the client sent it so (RFC 7541
/// §6.2.2, §6.2.3), with the name as a static-table index where there is
/// one.
fn encode_field(name: &[u8], value: &[u8], never_indexed: bool, out: &mut Vec<u8>) {
    let kind = if never_indexed { 0x10 } else { 0x00 };
    match static_name(name) {
        Some(index) => write_int(out, index, 4, kind),
        None => {
            out.push(kind);
            write_string(out, name);
        }
    }
    write_string(out, value);
}

fn write_string(out: &mut Vec<u8>, s: &[u8]) {
    write_int(out, s.len(), 7, 0);
    out.extend_from_slice(s);
}

/// RFC 7541 §5.1: `value` with an N-bit prefix after the pattern `bits`.
fn write_int(out: &mut Vec<u8>, mut value: usize, prefix: u8, bits: u8) {
    let mask = (1usize << prefix) - 1;
    if value < mask {
        out.push(bits | value as u8);
        return;
    }
    out.push(bits | mask as u8);
    value -= mask;
    while value >= 0x80 {
        out.push(value as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Static-table indexes (RFC 7541 Appendix A) of the names gRPC requests
/// carry.
fn static_name(name: &[u8]) -> Option<usize> {
    Some(match name {
        b":authority" => 1,
        b":method" => 2,
        b":path" => 4,
        b":scheme" => 6,
        b"accept-encoding" => 16,
        b"content-type" => 31,
        b"user-agent" => 58,
        _ => return None,
    })
}

/// A connection whose client→server bytes pass through a [`Rewriter`];
/// writes go straight to the inner stream.
#[derive(Debug)]
pub struct AuthorityStream<S> {
    inner: S,
    /// None only in benchmarks' baseline: reads go straight through.
    rewriter: Option<Rewriter>,
    input: BytesMut,
    output: BytesMut,
    eof: bool,
    /// Until the preface is in: when to give up on it.
    handshake: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S> AuthorityStream<S> {
    /// Wraps an accepted connection. Must run inside a tokio runtime (the
    /// handshake timer).
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            rewriter: Some(Rewriter::new()),
            input: BytesMut::new(),
            output: BytesMut::new(),
            eof: false,
            handshake: Some(Box::pin(tokio::time::sleep(HANDSHAKE_TIMEOUT))),
        }
    }

    /// Test builds only (feature `test-hooks`): a connection without the
    /// layer, the baseline its benchmark measures against.
    #[cfg(feature = "test-hooks")]
    pub fn bypassed(inner: S) -> Self {
        Self {
            rewriter: None,
            ..Self::new(inner)
        }
    }
}

impl<S: Connected> Connected for AuthorityStream<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for AuthorityStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let Some(rewriter) = &mut this.rewriter else {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        };
        loop {
            if !this.output.is_empty() {
                let n = this.output.len().min(buf.remaining());
                buf.put_slice(&this.output[..n]);
                this.output.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            this.input.reserve(8 * 1024);
            let read =
                tokio_util::io::poll_read_buf(Pin::new(&mut this.inner), cx, &mut this.input);
            let n = match read {
                Poll::Ready(n) => n?,
                Poll::Pending => {
                    if let Some(timer) = &mut this.handshake {
                        ready!(timer.as_mut().poll(cx));
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "no HTTP/2 preface within the handshake timeout",
                        )));
                    }
                    return Poll::Pending;
                }
            };
            if n == 0 {
                this.eof = true;
                continue;
            }
            rewriter.feed(&mut this.input, &mut this.output)?;
            if !rewriter.awaiting_preface() {
                this.handshake = None;
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AuthorityStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const DATA: u8 = 0x0;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = BytesMut::new();
        frame_header(&mut out, payload.len(), kind, flags, stream);
        out.extend_from_slice(payload);
        out.to_vec()
    }

    fn request(authority: &[u8], n: usize) -> Fields {
        vec![
            (b":method".to_vec(), b"POST".to_vec()),
            (b":scheme".to_vec(), b"http".to_vec()),
            (
                b":path".to_vec(),
                b"/tokend.v1.TokenBroker/GetHeaders".to_vec(),
            ),
            (b":authority".to_vec(), authority.to_vec()),
            (b"content-type".to_vec(), b"application/grpc".to_vec()),
            (b"te".to_vec(), b"trailers".to_vec()),
            (b"x-call".to_vec(), n.to_string().into_bytes()),
        ]
    }

    /// Runs `input` through a rewriter in chunks of the given sizes.
    fn run(input: &[u8], chunks: &[usize]) -> Result<Vec<u8>, RewriteError> {
        let mut rewriter = Rewriter::new();
        let (mut buf, mut out) = (BytesMut::new(), BytesMut::new());
        let mut rest = input;
        let mut sizes = chunks.iter().copied().cycle();
        while !rest.is_empty() {
            let n = sizes.next().unwrap_or(rest.len()).clamp(1, rest.len());
            buf.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
            rewriter.feed(&mut buf, &mut out)?;
        }
        Ok(out.to_vec())
    }

    type Fields = Vec<(Vec<u8>, Vec<u8>)>;

    /// What h2 would see: the preface, then each stream's header lists
    /// (decoded with one fresh decoder, as h2 does) and DATA payloads.
    #[derive(Debug, Default, PartialEq)]
    struct Seen {
        blocks: Vec<(u32, bool, Fields)>,
        data: Vec<Vec<u8>>,
    }

    fn parse(bytes: &[u8]) -> Seen {
        assert!(bytes.starts_with(PREFACE), "the preface is forwarded");
        let mut rest = &bytes[PREFACE.len()..];
        let mut decoder = loona_hpack::Decoder::new();
        let (mut seen, mut fragment, mut end_stream) = (Seen::default(), Vec::new(), false);
        while !rest.is_empty() {
            let len = usize::from(rest[0]) << 16 | usize::from(rest[1]) << 8 | usize::from(rest[2]);
            assert!(
                len <= MAX_FRAME,
                "no frame exceeds the minimum max frame size"
            );
            let (kind, flags) = (rest[3], rest[4]);
            let stream = u32::from_be_bytes(rest[5..9].try_into().unwrap());
            let mut payload = &rest[9..9 + len];
            rest = &rest[9 + len..];
            match kind {
                HEADERS | CONTINUATION => {
                    if kind == HEADERS {
                        end_stream = flags & END_STREAM != 0;
                        if flags & PADDED != 0 {
                            let pad = usize::from(payload[0]);
                            payload = &payload[1..payload.len() - pad];
                        }
                        if flags & PRIORITY != 0 {
                            payload = &payload[5..];
                        }
                    }
                    fragment.extend_from_slice(payload);
                    if flags & END_HEADERS != 0 {
                        let list = decoder
                            .decode(&fragment)
                            .expect("h2 can decode every block");
                        seen.blocks.push((stream, end_stream, list));
                        fragment.clear();
                    }
                }
                DATA => seen.data.push(payload.to_vec()),
                _ => {}
            }
        }
        seen
    }

    fn fixed(list: &[(Vec<u8>, Vec<u8>)]) -> Fields {
        list.iter()
            .map(|(n, v)| {
                let bad = n == b":authority" && http::uri::Authority::try_from(&v[..]).is_err();
                (n.clone(), if bad { LOCALHOST.to_vec() } else { v.clone() })
            })
            .collect()
    }

    /// A connection of `calls` requests encoded the way grpcio does it: one
    /// stateful encoder, so later requests name repeated fields by dynamic
    /// index. Returns the bytes and the header lists h2 should see.
    fn connection(authorities: &[&[u8]], continuation_at: Option<usize>) -> (Vec<u8>, Seen) {
        let mut encoder = loona_hpack::Encoder::new();
        let mut bytes = PREFACE.to_vec();
        bytes.extend(frame(0x4, 0, 0, &[])); // SETTINGS
        let mut expected = Seen::default();
        for (i, authority) in authorities.iter().enumerate() {
            let stream = 2 * u32::try_from(i).unwrap() + 1;
            let list = request(authority, i);
            let block = encoder.encode(list.iter().map(|(n, v)| (&n[..], &v[..])));
            match continuation_at {
                Some(at) if at < block.len() => {
                    bytes.extend(frame(HEADERS, 0, stream, &block[..at]));
                    bytes.extend(frame(CONTINUATION, END_HEADERS, stream, &block[at..]));
                }
                _ => bytes.extend(frame(HEADERS, END_HEADERS, stream, &block)),
            }
            let message = format!("request {i}").into_bytes();
            bytes.extend(frame(DATA, END_STREAM, stream, &message));
            expected.blocks.push((stream, false, fixed(&list)));
            expected.data.push(message);
        }
        (bytes, expected)
    }

    const PERCENT: &[u8] = b"%2Frun%2Ftokend%2Ftokend.sock";
    const RAW_PATH: &[u8] = b"/run/tokend/tokend.sock";

    #[test]
    fn valid_authorities_pass_through_byte_for_byte() {
        let (bytes, expected) = connection(&[b"localhost" as &[u8]; 20], None);
        let out = run(&bytes, &[4096]).unwrap();
        assert_eq!(out, bytes);
        assert_eq!(parse(&out), expected);
    }

    #[test]
    fn percent_encoded_and_raw_paths_become_localhost_across_indexed_reuse() {
        for authority in [PERCENT, RAW_PATH] {
            // The second and later requests name the authority by index.
            let (bytes, expected) = connection(&[authority; 50], None);
            let out = run(&bytes, &[7, 100, 3]).unwrap();
            let seen = parse(&out);
            assert_eq!(seen, expected);
            assert!(seen.blocks.iter().all(|(_, _, l)| l[3].1 == LOCALHOST));
        }
    }

    #[test]
    fn switching_mid_connection_keeps_tables_in_step() {
        let mut authorities: Vec<&[u8]> = vec![b"localhost"; 5];
        authorities.extend([PERCENT; 5]);
        authorities.extend([b"localhost" as &[u8]; 5]);
        let (bytes, expected) = connection(&authorities, Some(10));
        assert_eq!(parse(&run(&bytes, &[1]).unwrap()), expected);
    }

    /// Past a good `:authority`, a block of a connection forwarded as sent
    /// is not re-encoded: a second `:authority`, good or bad, goes to h2
    /// as the client wrote it (h2 refuses a repeated pseudo-header), and
    /// the connection goes on being forwarded byte for byte.
    #[test]
    fn a_second_authority_after_a_good_one_is_left_for_h2() {
        let mut encoder = loona_hpack::Encoder::new();
        let mut bytes = PREFACE.to_vec();
        let mut list = request(b"localhost", 0);
        list.insert(4, (b":authority".to_vec(), PERCENT.to_vec()));
        let block = encoder.encode(list.iter().map(|(n, v)| (&n[..], &v[..])));
        bytes.extend(frame(HEADERS, END_HEADERS, 1, &block));
        let next = request(b"localhost", 1);
        let block = encoder.encode(next.iter().map(|(n, v)| (&n[..], &v[..])));
        bytes.extend(frame(HEADERS, END_HEADERS | END_STREAM, 3, &block));
        let out = run(&bytes, &[5, 4096]).unwrap();
        assert_eq!(out, bytes);
        assert_eq!(parse(&out).blocks[0].2, list);
    }

    #[test]
    fn padding_is_dropped_and_priority_kept() {
        let mut encoder = loona_hpack::Encoder::new();
        let list = request(PERCENT, 0);
        let block = encoder.encode(list.iter().map(|(n, v)| (&n[..], &v[..])));
        let mut payload = vec![3]; // pad length
        payload.extend([0, 0, 0, 0, 15]); // depends on 0, weight 16
        payload.extend(&block);
        payload.extend([0; 3]);
        let mut bytes = PREFACE.to_vec();
        bytes.extend(frame(
            HEADERS,
            END_HEADERS | END_STREAM | PADDED | PRIORITY,
            1,
            &payload,
        ));
        let out = run(&bytes, &[]).unwrap();
        let header = &out[PREFACE.len()..PREFACE.len() + FRAME_HEADER];
        assert_eq!(header[4], END_HEADERS | END_STREAM | PRIORITY);
        assert_eq!(out[PREFACE.len() + FRAME_HEADER..][..5], [0, 0, 0, 0, 15]);
        assert_eq!(parse(&out).blocks, vec![(1, true, fixed(&list))]);
    }

    #[test]
    fn a_rewritten_block_larger_than_a_frame_is_continued() {
        let mut list = request(RAW_PATH, 0);
        list.push((b"x-big".to_vec(), vec![b'a'; 40_000]));
        let block = loona_hpack::Encoder::new().encode(list.iter().map(|(n, v)| (&n[..], &v[..])));
        let mut bytes = PREFACE.to_vec();
        for (i, chunk) in block.chunks(MAX_FRAME).enumerate() {
            let kind = if i == 0 { HEADERS } else { CONTINUATION };
            let last = (i + 1) * MAX_FRAME >= block.len();
            bytes.extend(frame(kind, if last { END_HEADERS } else { 0 }, 1, chunk));
        }
        assert_eq!(
            parse(&run(&bytes, &[5000]).unwrap()).blocks,
            vec![(1, false, fixed(&list))]
        );
    }

    #[test]
    fn limits_and_protocol_errors_close_the_connection() {
        let mut bytes = PREFACE.to_vec();
        for i in 0..5 {
            let flags = if i == 4 { END_HEADERS } else { 0 };
            let kind = if i == 0 { HEADERS } else { CONTINUATION };
            bytes.extend(frame(kind, flags, 1, &[0x82; MAX_FRAME]));
        }
        assert!(matches!(run(&bytes, &[]), Err(RewriteError::BlockTooLarge)));

        // One 4 KiB table entry referenced thousands of times.
        let mut block = vec![0x40, 0x01, b'x', 0x7f, 0x81, 0x1e]; // name "x", value 4000 bytes
        block.extend([b'v'; 4000]);
        block.extend([0xbe; 2000]); // index 62: that entry
        let mut bytes = PREFACE.to_vec();
        bytes.extend(frame(HEADERS, END_HEADERS, 1, &block));
        assert!(matches!(run(&bytes, &[]), Err(RewriteError::ListTooLarge)));

        let mut bytes = PREFACE.to_vec();
        bytes.extend(frame(HEADERS, 0, 1, &[0x82]));
        bytes.extend(frame(DATA, 0, 1, b"x"));
        assert!(matches!(run(&bytes, &[]), Err(RewriteError::Interleaved)));

        let mut bytes = PREFACE.to_vec();
        bytes.extend(frame(HEADERS, END_HEADERS | PADDED, 1, &[9, 0x82]));
        assert!(matches!(run(&bytes, &[]), Err(RewriteError::BadPadding)));

        let mut bytes = PREFACE.to_vec();
        bytes.extend(frame(
            HEADERS,
            END_HEADERS,
            1,
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f],
        ));
        assert!(matches!(run(&bytes, &[]), Err(RewriteError::Hpack(_))));
    }

    #[test]
    fn not_http2_passes_through_for_h2_to_refuse() {
        let bytes = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".repeat(3);
        assert_eq!(run(&bytes, &[2]).unwrap(), bytes);
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_without_a_preface_is_closed_after_the_timeout() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (client, server) = tokio::io::duplex(1024);
        let mut stream = AuthorityStream::new(server);
        let read = tokio::spawn(async move {
            let mut buf = [0; 64];
            stream.read(&mut buf).await
        });
        tokio::time::sleep(HANDSHAKE_TIMEOUT - Duration::from_millis(1)).await;
        assert!(!read.is_finished(), "closed before the timeout");
        tokio::time::sleep(Duration::from_millis(2)).await;
        let err = read.await.unwrap().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        drop(client);

        // A client that sent its preface may then stay idle.
        let (mut client, server) = tokio::io::duplex(1024);
        let mut stream = AuthorityStream::new(server);
        client.write_all(PREFACE).await.unwrap();
        let mut buf = [0; 64];
        assert_eq!(stream.read(&mut buf).await.unwrap(), PREFACE.len());
        let idle = tokio::time::timeout(HANDSHAKE_TIMEOUT * 10, stream.read(&mut buf)).await;
        assert!(
            idle.is_err(),
            "an idle connection after the preface stays open"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Any mix of authorities, any CONTINUATION split, any read sizes:
        /// h2 decodes exactly the client's headers, authorities fixed.
        #[test]
        fn never_desyncs(
            picks in proptest::collection::vec(0..3usize, 1..40),
            continuation in proptest::option::of(1..60usize),
            chunks in proptest::collection::vec(1..200usize, 1..8),
        ) {
            let choices: [&[u8]; 3] = [b"localhost:50051", PERCENT, RAW_PATH];
            let authorities: Vec<&[u8]> = picks.iter().map(|&i| choices[i]).collect();
            let (bytes, expected) = connection(&authorities, continuation);
            prop_assert_eq!(parse(&run(&bytes, &chunks).unwrap()), expected);
        }

        /// Random and truncated input never panics.
        #[test]
        fn garbage_never_panics(
            body in proptest::collection::vec(any::<u8>(), 0..2000),
            chunks in proptest::collection::vec(1..300usize, 1..8),
        ) {
            let mut bytes = PREFACE.to_vec();
            bytes.extend(body);
            let _ = run(&bytes, &chunks);
        }
    }
}
