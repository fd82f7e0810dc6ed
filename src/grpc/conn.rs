//! One accepted connection: hyper's HTTP/2 server, with every call's
//! stream run inside the connection's own task.
//!
//! hyper (under tonic's server too) hands each stream's future to an
//! executor, and tonic's is `tokio::spawn`: a task allocated per call, the
//! stream woken from the connection task when its request arrives and the
//! connection task woken back from the stream's to write the answer, and on
//! the multi-thread runtime each of those wakes may rouse the other worker
//! to steal the work, on a machine where the client needs the cores. Here
//! [`Streams`] only queues the stream, and [`Driven`] polls the queued
//! streams right after the connection, in the same task: a cached
//! `GetHeaders` is read, answered and written in one run of that task.
//!
//! Wakes that happen while the task is running (a stream queueing its
//! answer wakes the connection) are noted instead of rescheduling the task,
//! and the loop in [`Driven::poll`] goes round again; a few rounds at most,
//! then it yields, so a busy connection cannot starve the runtime.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};

use futures_util::stream::{FuturesUnordered, Stream};
use futures_util::task::AtomicWaker;

type StreamFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// hyper's executor for one connection: queues each stream's future for
/// that connection's [`Driven`] to poll. hyper calls it only while the
/// connection is being polled, so the queue is drained right after.
#[derive(Clone, Default)]
pub(super) struct Streams {
    queued: Arc<Mutex<Vec<StreamFuture>>>,
}

impl<F: Future<Output = ()> + Send + 'static> hyper::rt::Executor<F> for Streams {
    fn execute(&self, fut: F) {
        self.queued
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Box::pin(fut));
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

/// A connection future (`C`) and its streams, polled together.
#[pin_project::pin_project]
pub(super) struct Driven<C> {
    #[pin]
    conn: C,
    streams: Streams,
    running: FuturesUnordered<StreamFuture>,
    wakes: Arc<Wakes>,
    waker: Waker,
}

impl<C: Future> Driven<C> {
    /// Drives `conn`, whose streams `streams` queues.
    pub(super) fn new(conn: C, streams: Streams) -> Self {
        let wakes = Arc::new(Wakes::default());
        Self {
            conn,
            streams,
            running: FuturesUnordered::new(),
            waker: Waker::from(Arc::clone(&wakes)),
            wakes,
        }
    }

    /// The connection, e.g. to shut it down gracefully.
    pub(super) fn conn(self: Pin<&mut Self>) -> Pin<&mut C> {
        self.project().conn
    }
}

impl<C: Future> Future for Driven<C> {
    /// The connection's; streams still running when it ends are dropped
    /// (a connection ends when its streams are done, or when it failed and
    /// they can no longer answer).
    type Output = C::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<C::Output> {
        let mut this = self.project();
        this.wakes.task.register(cx.waker());
        this.wakes.state.store(POLLING, Ordering::Release);
        let mut inner = Context::from_waker(this.waker);
        for _ in 0..ROUNDS {
            if let Poll::Ready(out) = this.conn.as_mut().poll(&mut inner) {
                this.wakes.state.store(IDLE, Ordering::Release);
                return Poll::Ready(out);
            }
            {
                let mut queued = this
                    .streams
                    .queued
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                for stream in queued.drain(..) {
                    this.running.push(stream);
                }
            }
            while let Poll::Ready(Some(())) = Pin::new(&mut *this.running).poll_next(&mut inner) {}
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

    /// A connection that spawns `n` streams through the executor, each
    /// waking the connection when done, and ends once all have run.
    struct Fake {
        exec: Streams,
        spawned: bool,
        done: Arc<AtomicUsize>,
        n: usize,
    }

    impl Future for Fake {
        type Output = usize;
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<usize> {
            if !self.spawned {
                self.spawned = true;
                for _ in 0..self.n {
                    let done = Arc::clone(&self.done);
                    let waker = cx.waker().clone();
                    let mut yielded = false;
                    hyper::rt::Executor::execute(
                        &self.exec,
                        std::future::poll_fn(move |cx| {
                            if !yielded {
                                yielded = true;
                                cx.waker().wake_by_ref();
                                return Poll::Pending;
                            }
                            done.fetch_add(1, Ordering::SeqCst);
                            waker.wake_by_ref();
                            Poll::Ready(())
                        }),
                    );
                }
            }
            let done = self.done.load(Ordering::SeqCst);
            if done == self.n {
                Poll::Ready(done)
            } else {
                Poll::Pending
            }
        }
    }

    #[tokio::test]
    async fn streams_run_in_the_connections_task_and_the_connection_sees_them_finish() {
        for n in [0, 1, 3, 50] {
            let exec = Streams::default();
            let conn = Fake {
                exec: exec.clone(),
                spawned: false,
                done: Arc::default(),
                n,
            };
            let done =
                tokio::time::timeout(std::time::Duration::from_secs(5), Driven::new(conn, exec))
                    .await
                    .expect("no lost wake-up");
            assert_eq!(done, n);
        }
    }
}
