//! The socket under every connection, made by us (not by tokio-postgres) so
//! that its descriptor is ours to hand to a child (I3) and to let go of
//! without a goodbye. [`Socket`] is the stream the driver reads and writes;
//! [`Detach`] takes the socket away from it: the stream leaves the
//! runtime's reactor, this process's descriptor is closed, and from then on
//! the driver's writes (its `Terminate`) go nowhere and its reads see EOF.
//! A child that inherited the descriptor keeps the server connection — and
//! the advisory locks on it — open: the server never sees EOF while it
//! lives.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

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

#[derive(Debug)]
struct Shared {
    stream: Mutex<Option<Stream>>,
    fd: RawFd,
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
    /// Wraps a connected stream; returns it with its [`Detach`].
    pub(super) fn new(stream: Stream) -> (Socket, Detach) {
        let shared = Arc::new(Shared {
            fd: stream.fd(),
            stream: Mutex::new(Some(stream)),
        });
        (Socket(Arc::clone(&shared)), Detach(shared))
    }
}

impl Detach {
    /// The descriptor, while the socket is attached.
    pub(super) fn fd(&self) -> Option<RawFd> {
        self.0.lock().as_ref().map(|_| self.0.fd)
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
        match self.0.lock().as_mut() {
            Some(Stream::Tcp(s)) => Pin::new(s).poll_read(cx, buf),
            Some(Stream::Unix(s)) => Pin::new(s).poll_read(cx, buf),
            // Detached: end of stream.
            None => Poll::Ready(Ok(())),
        }
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.0.lock().as_mut() {
            Some(Stream::Tcp(s)) => Pin::new(s).poll_write(cx, buf),
            Some(Stream::Unix(s)) => Pin::new(s).poll_write(cx, buf),
            // Detached: the bytes go nowhere, the server hears nothing.
            None => Poll::Ready(Ok(buf.len())),
        }
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
