//! One accepted connection: h2's HTTP/2 server connection, with every
//! call's stream run inside the connection's own task.
//!
//! hyper's server (under tonic's too) hands each stream's future to an
//! executor, and tonic's is `tokio::spawn`: a task allocated per call, the
//! stream woken from the connection task when its request arrives and the
//! connection task woken back from the stream's to write the answer, and on
//! the multi-thread runtime each of those wakes may rouse the other worker
//! to steal the work, on a machine where the client needs the cores. Here
//! [`Driven`] accepts the connection's streams and polls them right after
//! the connection, in the same task: a cached `GetHeaders` is read,
//! answered and written in one run of that task, with no spawn and no
//! allocation for it but its future's box. A call is polled as soon as it
//! is accepted; only one that has to wait joins the set of running calls.
//!
//! Wakes that happen while the task is running (a stream queueing its
//! answer wakes the connection) are noted instead of rescheduling the task,
//! and the loop in [`Driven::poll`] goes round again; a few rounds at most,
//! then it yields, so a busy connection cannot starve the runtime.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, Stream};
use futures_util::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite};

/// Where a connection's streams come from: h2's server connection (whose
/// `poll_accept` also reads and writes the connection), or a fake in the
/// tests.
pub(super) trait Accept {
    /// A new stream.
    type Stream;
    /// Why the connection failed.
    type Error;

    /// The next stream; `None` once the connection is closed.
    fn poll_accept(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Self::Stream, Self::Error>>>;
}

impl<T: AsyncRead + AsyncWrite + Unpin> Accept for h2::server::Connection<T, Bytes> {
    type Stream = Streamed;
    type Error = h2::Error;

    fn poll_accept(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Self::Stream, h2::Error>>> {
        Self::poll_accept(self, cx)
    }
}

/// Not being polled: a wake reschedules the task.
const IDLE: u8 = 0;
/// Being polled: a wake is noted and the poll loop runs again.
const POLLING: u8 = 1;
/// Being polled and woken since the round began.
const WOKEN: u8 = 2;

/// How many rounds one poll runs before yielding to the runtime.
const ROUNDS: usize = 8;

/// The waker the connection and its streams see.
#[derive(Default)]
struct Wakes {
    state: AtomicU8,
    task: AtomicWaker,
}

impl Wake for Wakes {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        match self
            .state
            .compare_exchange(POLLING, WOKEN, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) | Err(WOKEN) => {}
            Err(_) => self.task.wake(),
        }
    }
}

/// A stream h2 accepted: its request and where to answer it.
pub(super) type Streamed = (
    http::Request<h2::RecvStream>,
    h2::server::SendResponse<Bytes>,
);

/// A connection (`C`) and its streams, each made a future (`F`) by `call`
/// and polled together.
pub(super) struct Driven<C, M, F> {
    conn: C,
    call: M,
    /// Calls that did not answer on their first poll.
    running: FuturesUnordered<Pin<Box<F>>>,
    wakes: Arc<Wakes>,
    waker: Waker,
}

impl<C, M, F> Driven<C, M, F> {
    /// Drives `conn`, answering each of its streams with `call`.
    pub(super) fn new(conn: C, call: M) -> Self {
        let wakes = Arc::new(Wakes::default());
        Self {
            conn,
            call,
            running: FuturesUnordered::new(),
            waker: Waker::from(Arc::clone(&wakes)),
            wakes,
        }
    }

    /// The connection, e.g. to shut it down gracefully.
    pub(super) fn conn(&mut self) -> &mut C {
        &mut self.conn
    }
}

impl<C, M, F> Future for Driven<C, M, F>
where
    C: Accept + Unpin,
    M: FnMut(C::Stream) -> F + Unpin,
    F: Future<Output = ()>,
{
    /// The connection's; streams still running when it ends are dropped
    /// (a connection ends when its streams are done, or when it failed and
    /// they can no longer answer).
    type Output = Result<(), C::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        this.wakes.task.register(cx.waker());
        this.wakes.state.store(POLLING, Ordering::Release);
        let mut inner = Context::from_waker(&this.waker);
        for _ in 0..ROUNDS {
            // h2 refuses streams beyond its concurrency limit, so this
            // takes at most that many.
            loop {
                match this.conn.poll_accept(&mut inner) {
                    Poll::Ready(Some(Ok(stream))) => {
                        // A cached `GetHeaders` has its request whole by
                        // now and answers on its first poll: polled here,
                        // it never joins the set (whose node, queueing
                        // and own waker cost more than the box).
                        let mut call = Box::pin((this.call)(stream));
                        if call.as_mut().poll(&mut inner).is_pending() {
                            // Polled again, with its own waker, from the set.
                            this.running.push(call);
                        }
                    }
                    Poll::Pending => break,
                    Poll::Ready(end) => {
                        this.wakes.state.store(IDLE, Ordering::Release);
                        return Poll::Ready(end.transpose().map(|_| ()));
                    }
                }
            }
            while let Poll::Ready(Some(())) = Pin::new(&mut this.running).poll_next(&mut inner) {}
            // Done unless something woke us during this round.
            if this
                .wakes
                .state
                .compare_exchange(POLLING, IDLE, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                return Poll::Pending;
            }
            this.wakes.state.store(POLLING, Ordering::Release);
        }
        // Still busy: let other tasks run, and come back.
        this.wakes.state.store(IDLE, Ordering::Release);
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::{Mutex, PoisonError};

    /// A connection that offers `n` streams, each of which yields once and
    /// then wakes the connection when done; it ends once all have run.
    struct Fake {
        offered: usize,
        done: Arc<AtomicUsize>,
        waker: Arc<Mutex<Option<Waker>>>,
        n: usize,
    }

    impl Accept for Fake {
        type Stream = ();
        type Error = std::convert::Infallible;

        fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<(), Self::Error>>> {
            *self.waker.lock().unwrap_or_else(PoisonError::into_inner) = Some(cx.waker().clone());
            if self.offered < self.n {
                self.offered += 1;
                return Poll::Ready(Some(Ok(())));
            }
            if self.done.load(Ordering::SeqCst) == self.n {
                Poll::Ready(None)
            } else {
                Poll::Pending
            }
        }
    }

    #[tokio::test]
    async fn streams_run_in_the_connections_task_and_the_connection_sees_them_finish() {
        for n in [0, 1, 3, 50] {
            let done = Arc::new(AtomicUsize::new(0));
            let waker = Arc::new(Mutex::new(None::<Waker>));
            let conn = Fake {
                offered: 0,
                done: Arc::clone(&done),
                waker: Arc::clone(&waker),
                n,
            };
            let call = |()| {
                let (done, waker) = (Arc::clone(&done), Arc::clone(&waker));
                let mut yielded = false;
                std::future::poll_fn(move |cx| {
                    if !yielded {
                        yielded = true;
                        cx.waker().wake_by_ref();
                        return Poll::Pending;
                    }
                    done.fetch_add(1, Ordering::SeqCst);
                    if let Some(w) = &*waker.lock().unwrap_or_else(PoisonError::into_inner) {
                        w.wake_by_ref();
                    }
                    Poll::Ready(())
                })
            };
            tokio::time::timeout(std::time::Duration::from_secs(5), Driven::new(conn, call))
                .await
                .expect("no lost wake-up")
                .unwrap();
            assert_eq!(done.load(Ordering::SeqCst), n);
        }
    }
}
