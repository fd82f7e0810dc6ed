//! `GetHeaders` without tonic's generic unary machinery.
//!
//! Behind the generated service, one cached `GetHeaders` went through
//! tonic's `Grpc::unary`: the request body boxed into a `Streaming` with a
//! boxed decoder and an 8 KiB buffer, three boxed futures (the generated
//! service, `async_trait`, the unary adapter), the response message turned
//! into a one-item stream, and an `EncodeBody` boxed again. For the call
//! that is nearly all of the socket's traffic that was more work than the
//! broker's decision. Here the length-prefixed message is read from the
//! request body (bounded by [`MAX_REQUEST`]), handed to the same handler as
//! the generated service's method (`BrokerService::get_headers_for`), and
//! the answer goes back as one message that `stream` writes as one DATA
//! frame, then the `grpc-status: 0` trailers.
//!
//! What a client sees is what tonic sent: the same headers, frames and
//! trailers; errors as trailers-only responses built by tonic's own
//! `Status::into_http`, with tonic's codes and messages for a compressed
//! or unsupported encoding, an oversize, truncated or missing message and a
//! message that is not protobuf. Unlike tonic, which decoded any number of
//! messages and answered the first, a second message is refused.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body::Body;
use http_body_util::BodyExt;
use prost::Message;
use tonic::Status;
use tonic::metadata::MetadataValue;

use super::MAX_REQUEST;
use super::token_broker::BrokerService;
use crate::peer::Peer;
use crate::proto;

/// The path of the one method served here.
pub(super) const GET_HEADERS: &str = "/tokend.v1.TokenBroker/GetHeaders";

/// The gRPC message prefix: compressed flag and length.
const PREFIX: usize = 5;

/// Answers a `GetHeaders` call. The headers are read before the future is
/// made, which then holds only the body.
pub(super) fn get_headers<'a, B>(
    broker: &'a BrokerService,
    peer: &'a Peer,
    req: Request<B>,
) -> impl Future<Output = Response<UnaryBody>> + Send + 'a
where
    B: Body<Data = Bytes> + Send + Unpin + 'a,
    B::Error: Into<tonic::codegen::StdError>,
{
    let checked =
        refuse_encoding(req.headers()).map(|()| (super::wait_for(req.headers()), req.into_body()));
    async move {
        let answer = async {
            let (wait, body) = checked?;
            let r: proto::GetHeadersRequest = read_message(body).await?;
            broker.get_headers_for(peer, wait, r).await
        };
        match answer.await {
            Ok(message) => ok(&message),
            Err(status) => status.into_http(),
        }
    }
}

/// tonic's answer to a request compressed with any `grpc-encoding` but
/// `identity` (the service enables none), with its `grpc-accept-encoding`.
fn refuse_encoding(headers: &HeaderMap) -> Result<(), Status> {
    static GRPC_ENCODING: http::HeaderName = http::HeaderName::from_static("grpc-encoding");
    let Some(value) = headers.get(&GRPC_ENCODING) else {
        return Ok(());
    };
    if value == "identity" {
        return Ok(());
    }
    let name = match value.to_str() {
        Ok(s) => s.to_owned(),
        Err(_) => format!("{:?}", value.as_bytes()),
    };
    let mut status = Status::unimplemented(format!(
        "Content is compressed with `{name}` which isn't supported"
    ));
    status.metadata_mut().insert(
        "grpc-accept-encoding",
        MetadataValue::from_static("identity"),
    );
    Err(status)
}

/// What remains to read of the message being decoded.
enum Want {
    Prefix,
    Message(usize),
}

/// Decodes the one length-prefixed message in `body`, as tonic's unary
/// server does. A message longer than [`MAX_REQUEST`] is refused from its
/// prefix, so the buffer never holds more than one message and one DATA
/// frame; a second message is refused.
async fn read_message<M, B>(mut body: B) -> Result<M, Status>
where
    M: Message + Default,
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<tonic::codegen::StdError>,
{
    let mut buf = BytesMut::new();
    let mut want = Want::Prefix;
    let mut first = None;
    loop {
        loop {
            match want {
                Want::Prefix if buf.len() >= PREFIX => {
                    match buf.get_u8() {
                        0 => {}
                        1 => {
                            return Err(Status::internal(
                                "protocol error: received message with compressed-flag but no \
                                 grpc-encoding was specified",
                            ));
                        }
                        f => {
                            return Err(Status::internal(format!(
                                "protocol error: received message with invalid compression flag: \
                                 {f} (valid flags are 0 and 1), while sending request"
                            )));
                        }
                    }
                    let len = buf.get_u32() as usize;
                    if len > MAX_REQUEST {
                        return Err(Status::out_of_range(format!(
                            "Error, decoded message length too large: found {len} bytes, the \
                             limit is: {MAX_REQUEST} bytes"
                        )));
                    }
                    want = Want::Message(len);
                }
                Want::Message(len) if buf.len() >= len => {
                    if first.is_some() {
                        // tonic decoded any number and answered the first;
                        // a unary call has one, and more is only work.
                        return Err(Status::internal(
                            "protocol error: a unary call carried more than one request message",
                        ));
                    }
                    let message =
                        M::decode(&buf[..len]).map_err(|e| Status::internal(e.to_string()))?;
                    buf.advance(len);
                    first = Some(message);
                    want = Want::Prefix;
                }
                _ => break,
            }
        }
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    buf.extend_from_slice(&data);
                }
            }
            Some(Err(e)) => {
                let status = Status::from_error(e.into());
                // A stream the client cancelled ends the body, as in tonic.
                if status.code() == tonic::Code::Cancelled {
                    break;
                }
                return Err(status);
            }
            None => break,
        }
    }
    if !buf.is_empty() {
        return Err(Status::internal("Unexpected EOF decoding stream."));
    }
    first.ok_or_else(|| Status::internal("Missing request message."))
}

/// A successful answer: `content-type: application/grpc`, the message,
/// then `grpc-status: 0`.
fn ok(message: &impl Message) -> Response<UnaryBody> {
    let len = message.encoded_len();
    let mut data = BytesMut::with_capacity(PREFIX + len);
    data.put_u8(0);
    // Our responses are a few hundred bytes; a length over u32 cannot occur.
    data.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
    message
        .encode(&mut data)
        .expect("the buffer was sized by encoded_len");
    let mut response = Response::new(UnaryBody {
        message: Some(data.freeze()),
    });
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    response
}

/// A `GetHeaders` answer's body: its one message, which `stream` writes
/// as one DATA frame followed by the `grpc-status: 0` trailers; or nothing
/// (a trailers-only error response, whose status is in the headers).
#[derive(Debug, Default)]
pub(super) struct UnaryBody {
    message: Option<Bytes>,
}

impl UnaryBody {
    /// The length-prefixed message, if the call succeeded.
    pub(super) fn into_message(self) -> Option<Bytes> {
        self.message
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body::Frame;
    use http_body_util::StreamBody;
    use std::convert::Infallible;

    fn framed(flag: u8, message: &[u8]) -> Vec<u8> {
        let mut out = vec![flag];
        out.extend_from_slice(&u32::try_from(message.len()).unwrap().to_be_bytes());
        out.extend_from_slice(message);
        out
    }

    async fn read(chunks: Vec<Vec<u8>>) -> Result<proto::GetHeadersRequest, Status> {
        let frames = chunks
            .into_iter()
            .map(|c| Ok::<_, Infallible>(Frame::data(Bytes::from(c))));
        read_message(StreamBody::new(futures_util::stream::iter(frames))).await
    }

    fn request(name: &str) -> Vec<u8> {
        proto::GetHeadersRequest {
            credential: name.into(),
            ..Default::default()
        }
        .encode_to_vec()
    }

    #[tokio::test]
    async fn a_message_split_or_whole_decodes_and_a_second_is_refused() {
        let whole = framed(0, &request("a"));
        assert_eq!(read(vec![whole.clone()]).await.unwrap().credential, "a");
        let bytes: Vec<Vec<u8>> = whole.iter().map(|b| vec![*b]).collect();
        assert_eq!(read(bytes).await.unwrap().credential, "a");
        let mut two = whole;
        two.extend(framed(0, &request("b")));
        let e = read(vec![two]).await.unwrap_err();
        assert_eq!(
            (e.code(), e.message()),
            (
                tonic::Code::Internal,
                "protocol error: a unary call carried more than one request message"
            )
        );
        // An empty message is a valid request.
        let empty = read(vec![framed(0, &[])]).await.unwrap();
        assert_eq!(empty, proto::GetHeadersRequest::default());
    }

    #[tokio::test]
    async fn bad_bodies_get_tonics_codes_and_messages() {
        let cases: Vec<(Vec<Vec<u8>>, tonic::Code, &str)> = vec![
            (
                vec![framed(1, &request("a"))],
                tonic::Code::Internal,
                "protocol error: received message with compressed-flag but no grpc-encoding was \
                 specified",
            ),
            (
                vec![framed(7, &request("a"))],
                tonic::Code::Internal,
                "protocol error: received message with invalid compression flag: 7 (valid flags \
                 are 0 and 1), while sending request",
            ),
            (
                vec![framed(0, &vec![0; MAX_REQUEST + 1])[..PREFIX].to_vec()],
                tonic::Code::OutOfRange,
                "Error, decoded message length too large: found 65537 bytes, the limit is: 65536 \
                 bytes",
            ),
            (
                vec![framed(0, &request("a"))[..7].to_vec()],
                tonic::Code::Internal,
                "Unexpected EOF decoding stream.",
            ),
            (vec![], tonic::Code::Internal, "Missing request message."),
            (
                vec![framed(0, &[0])],
                tonic::Code::Internal,
                "failed to decode Protobuf message: invalid tag value: 0",
            ),
        ];
        for (chunks, code, message) in cases {
            let e = read(chunks).await.unwrap_err();
            assert_eq!((e.code(), e.message()), (code, message));
        }
    }

    #[test]
    fn only_identity_encoding_is_accepted_as_tonic_answers() {
        let mut headers = HeaderMap::new();
        assert!(refuse_encoding(&headers).is_ok());
        headers.insert("grpc-encoding", HeaderValue::from_static("identity"));
        assert!(refuse_encoding(&headers).is_ok());
        headers.insert("grpc-encoding", HeaderValue::from_static("gzip"));
        let response = refuse_encoding(&headers).unwrap_err().into_http::<()>();
        let h = response.headers();
        assert_eq!(h["grpc-status"], "12");
        assert_eq!(
            h["grpc-message"],
            "Content%20is%20compressed%20with%20%60gzip%60%20which%20isn't%20supported"
        );
        assert_eq!(h["grpc-accept-encoding"], "identity");
    }

    #[test]
    fn an_answer_is_one_length_prefixed_message() {
        let response = ok(&proto::GetHeadersRequest {
            credential: "a".into(),
            ..Default::default()
        });
        assert_eq!(response.headers()["content-type"], "application/grpc");
        assert_eq!(response.headers().len(), 1, "no content-length");
        let message = response.into_body().into_message().unwrap();
        assert_eq!(&message[..], &framed(0, &request("a"))[..]);
        let refused = Status::internal("x").into_http::<UnaryBody>();
        assert!(
            refused.into_body().into_message().is_none(),
            "trailers-only"
        );
    }
}
