//! The socket under every connection, made by us (not by tokio-postgres) so
//! that its descriptor is ours to hand to a child (I3) and to let go of
//! without a goodbye. [`Socket`] is the stream the driver reads and writes;
//! [`Detach`] takes the socket away from it: the stream leaves the
//! runtime's reactor, this process's descriptor is closed, and from then on
//! the driver's writes (its `Terminate`) go nowhere and its reads see EOF.
//! A child that inherited the descriptor keeps the server connection — and
//! the advisory locks on it — open: the server never sees EOF while it
//! lives.
//!
//! **Silence.** A server process that stops answering (stopped, hung, a
//! proxy that holds the connection and forwards nothing) keeps the TCP
//! connection up — its kernel acknowledges and answers keepalives — so
//! neither keepalives nor `tcp_user_timeout` end it, and a statement sent
//! would wait forever. So once bytes are written and until bytes come
//! back, the socket allows [`Socket::new`]'s `answer_timeout` of silence
//! (plus the wait a statement asks for, [`Detach::allow`]), then fails
//! reads with `TimedOut`: the driver ends the connection, and the call
//! waiting on it gets an error. An idle connection (nothing asked) is
//! never timed: a task's lock connection sits idle for hours.

use std::future::Future;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// A connected TCP or Unix stream.
#[derive(Debug)]
pub(super) enum Stream {
    /// TCP.
    Tcp(tokio::net::TcpStream),
    /// A Unix-domain socket.
    Unix(tokio::net::UnixStream),
}

impl Stream {
    fn fd(&self) -> RawFd {
        match self {
            Stream::Tcp(s) => s.as_raw_fd(),
            Stream::Unix(s) => s.as_raw_fd(),
        }
    }
}

/// Where a backend's sockets note the last time a server left a request
/// unanswered past the guard, and how long it was given: the moment, and
/// the wait (`Target::recent_silence`).
pub(super) type SilenceNote = Arc<Mutex<Option<(std::time::Instant, Duration)>>>;

#[derive(Debug)]
struct Shared {
    stream: Mutex<Option<Stream>>,
    fd: RawFd,
    silence: Mutex<Silence>,
    note: SilenceNote,
}

/// The bound on the server's silence after a request (module docs).
#[derive(Debug)]
struct Silence {
    /// How long the server may stay silent after a request.
    answer_timeout: Duration,
    /// More for the next request only (a lock it waits for).
    allowance: Duration,
    /// Armed while a request awaits its first byte of answer.
    deadline: Option<Pin<Box<Sleep>>>,
    /// Set once the server let a request go unanswered that long: the
    /// connection ended by its silence, not by the server.
    went_silent: Option<Duration>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Stream>> {
        self.stream.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The stream a connection runs over; see the module docs.
#[derive(Debug)]
pub(super) struct Socket(Arc<Shared>);

/// The right to take the socket away from its connection.
#[derive(Debug, Clone)]
pub(super) struct Detach(Arc<Shared>);

impl Socket {
    /// Wraps a connected stream whose server may stay silent for
    /// `answer_timeout` after a request, a silence past it noted in
    /// `note`; returns it with its [`Detach`].
    pub(super) fn new(
        stream: Stream,
        answer_timeout: Duration,
        note: SilenceNote,
    ) -> (Socket, Detach) {
        let shared = Arc::new(Shared {
            note,
            fd: stream.fd(),
            stream: Mutex::new(Some(stream)),
            silence: Mutex::new(Silence {
                answer_timeout,
                allowance: Duration::ZERO,
                deadline: None,
                went_silent: None,
            }),
        });
        (Socket(Arc::clone(&shared)), Detach(shared))
    }

    fn silence(&self) -> std::sync::MutexGuard<'_, Silence> {
        self.0.silence.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Detach {
    /// The descriptor, while the socket is attached.
    pub(super) fn fd(&self) -> Option<RawFd> {
        self.0.lock().as_ref().map(|_| self.0.fd)
    }

    /// Lets the server stay silent `wait` longer after the next request:
    /// a statement that waits on a lock for up to `wait`.
    pub(super) fn allow(&self, wait: Duration) {
        self.0
            .silence
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .allowance = wait;
    }

    /// How long the server left a request unanswered, when that is what
    /// ended the connection (module docs): a connection that went silent,
    /// which a new one to the same server would likely find too.
    pub(super) fn went_silent(&self) -> Option<Duration> {
        self.0
            .silence
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .went_silent
    }

    /// Takes the socket from its connection and closes this process's
    /// descriptor, without sending anything: a child holding the same
    /// socket keeps the server connection. Idempotent.
    pub(super) fn detach(&self) {
        let taken = self.0.lock().take();
        // `into_std` takes the socket out of the reactor first, so no event
        // of the child's socket ever reaches this runtime.
        match taken {
            Some(Stream::Tcp(s)) => drop(s.into_std()),
            Some(Stream::Unix(s)) => drop(s.into_std()),
            None => {}
        }
    }
}

impl AsyncRead for Socket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let read = match self.0.lock().as_mut() {
            Some(Stream::Tcp(s)) => Pin::new(s).poll_read(cx, buf),
            Some(Stream::Unix(s)) => Pin::new(s).poll_read(cx, buf),
            // Detached: end of stream.
            None => return Poll::Ready(Ok(())),
        };
        let mut silence = self.silence();
        match read {
            Poll::Ready(Ok(())) if buf.filled().len() > before => {
                silence.deadline = None;
                silence.allowance = Duration::ZERO;
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                let expired = silence
                    .deadline
                    .as_mut()
                    .is_some_and(|d| d.as_mut().poll(cx).is_ready());
                if !expired {
                    return Poll::Pending;
                }
                let waited = silence.answer_timeout + silence.allowance;
                silence.went_silent = Some(waited);
                *self.0.note.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some((std::time::Instant::now(), waited));
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "the server sent nothing for {} after a request",
                        humantime::format_duration(waited)
                    ),
                )))
            }
            other => other,
        }
    }
}

impl Socket {
    /// After `n` bytes written: a request now awaits its answer. The
    /// deadline is polled once here, so that it wakes the connection's
    /// task even if no read is polled after this write.
    fn arm(&self, n: usize, cx: &mut Context<'_>) {
        let mut silence = self.silence();
        if n > 0 && silence.deadline.is_none() {
            let at = Instant::now() + silence.answer_timeout + silence.allowance;
            let mut deadline = Box::pin(tokio::time::sleep_until(at));
            let _ = deadline.as_mut().poll(cx);
            silence.deadline = Some(deadline);
        }
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let written = match self.0.lock().as_mut() {
            Some(Stream::Tcp(s)) => Pin::new(s).poll_write(cx, buf),
            Some(Stream::Unix(s)) => Pin::new(s).poll_write(cx, buf),
            // Detached: the bytes go nowhere, the server hears nothing.
            None => return Poll::Ready(Ok(buf.len())),
        };
        if let Poll::Ready(Ok(n)) = written {
            self.arm(n, cx);
        }
        written
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.0.lock().as_mut() {
            Some(Stream::Tcp(s)) => Pin::new(s).poll_flush(cx),
            Some(Stream::Unix(s)) => Pin::new(s).poll_flush(cx),
            None => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.0.lock().as_mut() {
            Some(Stream::Tcp(s)) => Pin::new(s).poll_shutdown(cx),
            Some(Stream::Unix(s)) => Pin::new(s).poll_shutdown(cx),
            // Never a FIN on a socket a child still holds.
            None => Poll::Ready(Ok(())),
        }
    }
}
