//! One call's HTTP/2 stream, served with the `h2` crate directly: the
//! request body read from h2's [`RecvStream`], the answer written to its
//! [`SendResponse`].
//!
//! This is what hyper's HTTP/2 server did around each call (its
//! `H2Stream`, `Incoming` body and `PipeToSendStream`), less what tokend
//! never uses (CONNECT and upgrades, `date` headers, keep-alive pings, a
//! content length taken from the body) and less its per-call glue: a
//! `GetHeaders` answer ([`UnaryBody`]) is written as the response headers,
//! its one DATA frame and the `grpc-status: 0` trailers in one go, with no
//! body to poll frame by frame. Every other call's tonic body is piped
//! with flow control, as hyper piped it.
//!
//! While a call has not answered, or its body waits for its next message
//! (`WatchHeaders` waits for hours), the client's RST_STREAM is watched:
//! a cancelled call's future is dropped then, freeing what it holds (a
//! watch and its place in the per-uid quota).

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use h2::server::SendResponse;
use h2::{Reason, RecvStream, SendStream};
use http::header::{CONNECTION, HeaderName, TE, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderMap, HeaderValue};
use http_body::{Body, Frame};

use super::dispatch::ResponseBody;
use super::unary::UnaryBody;

/// A request's body, as tonic's services and `unary` read it: h2's DATA
/// frames, each released to flow control as it is handed on (so the
/// client's window reopens as the call consumes it), then its trailers.
pub(super) struct RecvBody {
    recv: RecvStream,
    data_done: bool,
}

impl RecvBody {
    pub(super) fn new(recv: RecvStream) -> Self {
        Self {
            recv,
            data_done: false,
        }
    }
}

impl Body for RecvBody {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        let this = &mut *self;
        if !this.data_done {
            match ready!(this.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    // Fails only once the stream is gone, when the window
                    // no longer matters.
                    let _ = this.recv.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                // RST_STREAM(NO_ERROR) is a client done sending early
                // (RFC 9113 §8.1): the body ends, it does not fail.
                Some(Err(e)) if e.reason() == Some(Reason::NO_ERROR) => return Poll::Ready(None),
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => this.data_done = true,
            }
        }
        match ready!(this.recv.poll_trailers(cx)) {
            Ok(trailers) => Poll::Ready(trailers.map(|t| Ok(Frame::trailers(t)))),
            Err(e) if e.reason() == Some(Reason::NO_ERROR) => Poll::Ready(None),
            Err(e) => Poll::Ready(Some(Err(e))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.recv.is_end_stream()
    }
}

/// One call: its answer (`F`, the dispatcher's future), then, for tonic's
/// calls, its body piped to the stream. Done when the answer is written,
/// or the client reset the stream, or the stream failed; failures end only
/// this call, as in hyper (logged at debug, never with the call's data).
#[pin_project::pin_project(project = RespondProj)]
pub(super) enum Respond<F> {
    Answering {
        #[pin]
        answer: F,
        reply: SendResponse<Bytes>,
    },
    Piping(Pipe),
    Done,
}

impl<F> Respond<F> {
    pub(super) fn new(answer: F, reply: SendResponse<Bytes>) -> Self {
        Self::Answering { answer, reply }
    }
}

impl<F: Future<Output = http::Response<ResponseBody>>> Future for Respond<F> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let (response, reply) = match self.as_mut().project() {
            RespondProj::Answering { answer, reply } => match answer.poll(cx) {
                Poll::Ready(response) => (response, reply),
                Poll::Pending => {
                    // Not answered yet: a client that gives up resets the
                    // stream, and the call is dropped with this future.
                    return match reply.poll_reset(cx) {
                        Poll::Ready(reason) => {
                            tracing::debug!(?reason, "call reset by the client");
                            self.set(Self::Done);
                            Poll::Ready(())
                        }
                        Poll::Pending => Poll::Pending,
                    };
                }
            },
            RespondProj::Piping(pipe) => {
                ready!(pipe.poll(cx));
                self.set(Self::Done);
                return Poll::Ready(());
            }
            RespondProj::Done => return Poll::Ready(()),
        };
        let (mut head, body) = response.into_parts();
        let next = match body {
            http_body_util::Either::Left(unary) => {
                send_unary(reply, http::Response::from_parts(head, ()), unary);
                Self::Done
            }
            http_body_util::Either::Right(body) => {
                strip_connection_headers(&mut head.headers);
                let end = body.is_end_stream();
                match reply.send_response(http::Response::from_parts(head, ()), end) {
                    Ok(tx) if !end => Self::Piping(Pipe {
                        tx,
                        body,
                        waiting: None,
                    }),
                    Ok(_) => Self::Done,
                    Err(e) => {
                        tracing::debug!(error = %e, "sending a response failed");
                        reply.send_reset(Reason::INTERNAL_ERROR);
                        Self::Done
                    }
                }
            }
        };
        self.set(next);
        if let RespondProj::Piping(pipe) = self.as_mut().project() {
            ready!(pipe.poll(cx));
            self.set(Self::Done);
        }
        Poll::Ready(())
    }
}

/// Writes a `GetHeaders` answer: its headers, then its message and the OK
/// trailers, or, for an error, the headers alone (trailers-only). The
/// message is a few hundred bytes, so it goes to h2 whole: h2 holds what
/// the client's window does not yet admit and sends it as the window opens.
fn send_unary(reply: &mut SendResponse<Bytes>, head: http::Response<()>, body: UnaryBody) {
    let Some(message) = body.into_message() else {
        if let Err(e) = reply.send_response(head, true) {
            tracing::debug!(error = %e, "sending a response failed");
        }
        return;
    };
    let sent = reply.send_response(head, false).and_then(|mut tx| {
        tx.send_data(message, false)?;
        let mut trailers = HeaderMap::with_capacity(1);
        trailers.insert(GRPC_STATUS.clone(), HeaderValue::from_static("0"));
        tx.send_trailers(trailers)
    });
    if let Err(e) = sent {
        tracing::debug!(error = %e, "sending a response failed");
        reply.send_reset(Reason::INTERNAL_ERROR);
    }
}

static GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");

/// A tonic body being written to its stream: hyper's `PipeToSendStream`.
pub(super) struct Pipe {
    tx: SendStream<Bytes>,
    body: tonic::body::Body,
    /// A chunk taken from the body that waits for the stream's window,
    /// and whether it ends the body.
    waiting: Option<(Bytes, bool)>,
}

impl Pipe {
    /// Writes what the body has until it waits, ends or the client resets
    /// the stream. Ready when there is nothing more to write.
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        match self.poll_pipe(cx) {
            Poll::Ready(Err(e)) => {
                tracing::debug!(error = %e, "writing a response body failed");
                Poll::Ready(())
            }
            Poll::Ready(Ok(())) => Poll::Ready(()),
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_pipe(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), h2::Error>> {
        loop {
            // Registered before every wait, on the body or for window, so a
            // reset wakes the call and ends it.
            if let Poll::Ready(reason) = self.tx.poll_reset(cx)? {
                return Poll::Ready(Err(reason.into()));
            }
            if let Some((chunk, end)) = self.waiting.take() {
                while self.tx.capacity() == 0 {
                    match self.tx.poll_capacity(cx) {
                        Poll::Ready(Some(Ok(_))) => {}
                        Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(e)),
                        // The stream can no longer send (the client reset it).
                        Poll::Ready(None) => return Poll::Ready(Err(Reason::CANCEL.into())),
                        Poll::Pending => {
                            self.waiting = Some((chunk, end));
                            return Poll::Pending;
                        }
                    }
                }
                self.tx.send_data(chunk, end)?;
                if end {
                    return Poll::Ready(Ok(()));
                }
                continue;
            }
            // The next frame is polled before any window is reserved: a
            // reservation held while the body waits would pin the
            // connection's window against the other streams (hyper #4003).
            match ready!(Pin::new(&mut self.body).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(chunk) => {
                        let end = self.body.is_end_stream();
                        if !chunk.has_remaining() {
                            self.tx.send_data(chunk, end)?;
                            if end {
                                return Poll::Ready(Ok(()));
                            }
                            continue;
                        }
                        // A claim on the window, not the whole chunk: h2
                        // raises it to what is buffered in `send_data`.
                        self.tx.reserve_capacity(1);
                        self.waiting = Some((chunk, end));
                    }
                    Err(frame) => {
                        if let Ok(trailers) = frame.into_trailers() {
                            self.tx.reserve_capacity(0);
                            self.tx.send_trailers(trailers)?;
                            return Poll::Ready(Ok(()));
                        }
                    }
                },
                Some(Err(status)) => {
                    // tonic's bodies end with trailers, errors included; a
                    // body that fails resets the stream, as hyper did.
                    tracing::debug!(code = ?status.code(), "response body failed");
                    self.tx.send_reset(Reason::INTERNAL_ERROR);
                    return Poll::Ready(Ok(()));
                }
                None => {
                    self.tx.send_data(Bytes::new(), true)?;
                    return Poll::Ready(Ok(()));
                }
            }
        }
    }
}

/// Removes what HTTP/2 forbids in a response (RFC 9113 §8.2.2), which h2
/// would refuse to send, as hyper removed it. tonic's services set none of
/// these; this keeps a header added to them some day from failing calls.
fn strip_connection_headers(headers: &mut HeaderMap) {
    static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
    static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
    for name in [
        &KEEP_ALIVE,
        &PROXY_CONNECTION,
        &TRANSFER_ENCODING,
        &UPGRADE,
        &TE,
    ] {
        headers.remove(name);
    }
    if let Some(listed) = headers.remove(CONNECTION)
        && let Ok(listed) = listed.to_str()
    {
        for name in listed.split(',') {
            headers.remove(name.trim());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_headers_are_removed_from_responses() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("content-type", "application/grpc"),
            ("connection", "x-hop, keep-alive"),
            ("x-hop", "1"),
            ("keep-alive", "5"),
            ("transfer-encoding", "chunked"),
            ("te", "trailers"),
            ("upgrade", "h2c"),
            ("proxy-connection", "close"),
        ] {
            h.insert(k, HeaderValue::from_static(v));
        }
        strip_connection_headers(&mut h);
        assert_eq!(h.len(), 1);
        assert_eq!(h["content-type"], "application/grpc");
    }
}
