//! The authority layer's frame and HPACK parsing: any client bytes, read in
//! any sizes. Besides never panicking, what it forwards must be a stream h2
//! can follow: a second rewriter over its output (which, like h2, starts
//! from an empty table) accepts it and changes nothing. A forwarded block
//! that referenced a table entry h2 never saw would fail that second decode.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tokend::grpc::authority::Rewriter;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Feeds `input` in chunks of `chunk` bytes; returns what came out before
/// the end or the first error.
fn pass(input: &[u8], chunk: usize) -> (Vec<u8>, bool) {
    let mut rewriter = Rewriter::new();
    let (mut buf, mut out) = (BytesMut::new(), BytesMut::new());
    for piece in input.chunks(chunk) {
        buf.extend_from_slice(piece);
        if rewriter.feed(&mut buf, &mut out).is_err() {
            return (out.to_vec(), false);
        }
    }
    (out.to_vec(), true)
}

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, body)) = data.split_first() else {
        return;
    };
    let mut input = PREFACE.to_vec();
    input.extend_from_slice(body);
    let (first, _) = pass(&input, usize::from(chunk % 64) + 1);
    let (second, ok) = pass(&first, 4096);
    assert!(ok, "the forwarded stream does not decode from a fresh table");
    assert_eq!(first, second, "a second pass changed the forwarded stream");
});
