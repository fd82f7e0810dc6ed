//! The `:authority` values stock gRPC stacks send on a Unix socket, byte for
//! byte, from a small raw HTTP/2 client against the real daemon: grpc C-core
//! (Python, Ruby, PHP, C++) sends the percent-encoded socket path, grpc-java
//! and grpcurl the raw path, Go and grpc-js `localhost`. Many calls share one
//! connection, so the later ones name the authority by HPACK index, as
//! grpcio does.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use common::{CANARY, Daemon, Workdir};
use prost::Message;
use tokend::proto::{GetHeadersRequest, GetHeadersResponse};

const CREDENTIALS: &str = r#"
[[credential]]
name = "user"
kind = "glean_token"
permission = "user"
scopes = ["SEARCH"]
secret = { file = "secret" }
allow = { uids = [0] }

[[credential]]
name = "forbidden"
kind = "glean_token"
permission = "user"
scopes = ["SEARCH"]
secret = { file = "secret" }
allow = { uids = [4242] }
"#;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const ACK: u8 = 0x1;

/// One HTTP/2 connection speaking just enough of the protocol for unary
/// gRPC calls: its own HPACK encoder (dynamic table on, no Huffman) and a
/// decoder for the daemon's answers.
struct RawClient {
    sock: UnixStream,
    encoder: loona_hpack::Encoder<'static>,
    decoder: loona_hpack::Decoder<'static>,
    next_stream: u32,
}

/// What a call got back.
#[derive(Debug)]
struct Answer {
    grpc_status: Option<String>,
    grpc_message: Option<String>,
    body: Vec<u8>,
}

impl RawClient {
    fn connect(daemon: &Workdir) -> Self {
        let mut sock = UnixStream::connect(daemon.socket()).expect("connect to the daemon");
        sock.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        sock.write_all(PREFACE).unwrap();
        let mut client = Self {
            sock,
            encoder: loona_hpack::Encoder::new(),
            decoder: loona_hpack::Decoder::new(),
            next_stream: 1,
        };
        client.frame(SETTINGS, 0, 0, &[]);
        client
    }

    fn frame(&mut self, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
        let len = u32::try_from(payload.len()).unwrap().to_be_bytes();
        let mut bytes = len[1..].to_vec();
        bytes.extend([kind, flags]);
        bytes.extend(stream.to_be_bytes());
        bytes.extend(payload);
        self.sock.write_all(&bytes).expect("write a frame");
    }

    fn read_frame(&mut self) -> (u8, u8, u32, Vec<u8>) {
        let mut head = [0; 9];
        self.sock
            .read_exact(&mut head)
            .expect("read a frame header from the daemon");
        let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
        let mut payload = vec![0; len];
        self.sock
            .read_exact(&mut payload)
            .expect("read a frame payload");
        let stream = u32::from_be_bytes(head[5..9].try_into().unwrap()) & 0x7fff_ffff;
        (head[3], head[4], stream, payload)
    }

    /// A unary `GetHeaders` call with `authority` as `:authority`.
    fn get_headers(&mut self, authority: &[u8], credential: &str) -> Answer {
        let stream = self.next_stream;
        self.next_stream += 2;
        let fields: [(&[u8], &[u8]); 7] = [
            (b":method", b"POST"),
            (b":scheme", b"http"),
            (b":path", b"/tokend.v1.TokenBroker/GetHeaders"),
            (b":authority", authority),
            (b"content-type", b"application/grpc"),
            (b"te", b"trailers"),
            (b"user-agent", b"raw-h2-test/1.0"),
        ];
        let block = self.encoder.encode(fields);
        self.frame(HEADERS, END_HEADERS, stream, &block);
        let message = GetHeadersRequest {
            credential: credential.into(),
            ..Default::default()
        }
        .encode_to_vec();
        let mut body = vec![0];
        body.extend(u32::try_from(message.len()).unwrap().to_be_bytes());
        body.extend(message);
        self.frame(DATA, END_STREAM, stream, &body);

        let mut answer = Answer {
            grpc_status: None,
            grpc_message: None,
            body: Vec::new(),
        };
        loop {
            let (kind, flags, id, payload) = self.read_frame();
            match kind {
                SETTINGS if flags & ACK == 0 => self.frame(SETTINGS, ACK, 0, &[]),
                PING if flags & ACK == 0 => self.frame(PING, ACK, 0, &payload),
                GOAWAY => panic!("the daemon closed the connection: GOAWAY {payload:?}"),
                RST_STREAM if id == stream => panic!(
                    "the daemon reset the call (RST_STREAM {payload:?}): it refused the \
                     authority {:?}",
                    String::from_utf8_lossy(authority)
                ),
                HEADERS if id == stream => {
                    assert_ne!(flags & END_HEADERS, 0, "the daemon's headers fit one frame");
                    let fields = self
                        .decoder
                        .decode(&payload)
                        .expect("decode the daemon's headers");
                    for (name, value) in fields {
                        let value = String::from_utf8(value).unwrap();
                        match &name[..] {
                            b"grpc-status" => answer.grpc_status = Some(value),
                            b"grpc-message" => answer.grpc_message = Some(value),
                            _ => {}
                        }
                    }
                    if flags & END_STREAM != 0 {
                        return answer;
                    }
                }
                DATA if id == stream => {
                    answer.body.extend(&payload);
                    if flags & END_STREAM != 0 {
                        return answer;
                    }
                }
                _ => {}
            }
        }
    }
}

fn canary_served(answer: &Answer) -> bool {
    let message = answer.body.get(5..).expect("a gRPC message");
    let response = GetHeadersResponse::decode(message).expect("a GetHeadersResponse");
    response
        .headers
        .iter()
        .any(|h| h.name == "Authorization" && h.value == format!("Bearer {CANARY}"))
}

fn start() -> (Workdir, Daemon) {
    common::require_root();
    let work = Workdir::new();
    work.write_config("", CREDENTIALS);
    let daemon = Daemon::start(&work);
    (work, daemon)
}

#[test]
fn every_authority_stock_clients_send_is_accepted() {
    let (work, _daemon) = start();
    let path = work.socket().display().to_string();
    let percent = path.trim_start_matches('/').replace('/', "%2F");
    let authorities = [
        ("grpc C-core (percent-encoded path)", percent.as_str()),
        ("grpc-java, grpcurl (raw path)", path.as_str()),
        ("Go, grpc-js", "localhost"),
        ("tonic", "tonic"),
    ];
    for (client, authority) in authorities {
        let mut conn = RawClient::connect(&work);
        // The first call adds the authority to the dynamic table; the rest
        // name it by index.
        for call in 0..30 {
            let answer = conn.get_headers(authority.as_bytes(), "user");
            assert_eq!(
                answer.grpc_status.as_deref(),
                Some("0"),
                "{client}, call {call}: {answer:?}"
            );
            assert!(
                canary_served(&answer),
                "{client}, call {call}: no Authorization header"
            );
        }
    }
}

#[test]
fn a_denied_call_with_a_path_authority_is_permission_denied() {
    let (work, _daemon) = start();
    let path = work.socket().display().to_string();
    let mut conn = RawClient::connect(&work);
    let answer = conn.get_headers(path.as_bytes(), "forbidden");
    assert_eq!(answer.grpc_status.as_deref(), Some("7"), "{answer:?}");
    // And the connection goes on serving.
    let answer = conn.get_headers(path.as_bytes(), "user");
    assert_eq!(answer.grpc_status.as_deref(), Some("0"), "{answer:?}");
}

#[test]
fn existing_clients_on_the_same_daemon_are_unaffected() {
    let (_work, daemon) = start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = daemon.typed().await;
        let headers = client
            .headers(&tokend_client::HeadersRequest::new("user"))
            .await
            .expect("the typed Rust client still works");
        assert_eq!(headers.bearer_token(), Some(CANARY));
    });
}
