//! A TCP forwarder to the PostgreSQL test server that a test can cut or
//! stall: the database gone, as a stopped server or a cut link is to its
//! clients, without touching the server the other tests share.
//!
//! - [`Link::cut`]: every connection through it ends and each new one is
//!   closed at once (a stopped server: the client hears of it);
//! - [`Link::stall`]: nothing more goes through either way and new
//!   connections are never answered, while its own connections to the
//!   server stay open (a silent cut: the client hears nothing). A
//!   user-space forwarder answers the server's keepalives itself, so when
//!   the server would give up is the test's to play:
//!   [`Link::close_upstreams`] stands for it.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const UP: u8 = 0;
const REFUSING: u8 = 1;
const STALLED: u8 = 2;

/// A forwarder on a loopback port of its own to one server.
pub struct Link {
    addr: SocketAddr,
    state: Arc<AtomicU8>,
    refused: Arc<AtomicUsize>,
    /// Both ends of every connection made through it.
    live: Arc<Mutex<Vec<TcpStream>>>,
    /// Its own ends toward the server.
    upstreams: Arc<Mutex<Vec<TcpStream>>>,
}

impl Link {
    /// A link to `upstream` (`host:port`, see [`host_port`]), up.
    pub fn to(upstream: String) -> Link {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let addr = listener.local_addr().expect("the link's address");
        let link = Link {
            addr,
            state: Arc::new(AtomicU8::new(UP)),
            refused: Arc::new(AtomicUsize::new(0)),
            live: Arc::default(),
            upstreams: Arc::default(),
        };
        let (state, refused) = (Arc::clone(&link.state), Arc::clone(&link.refused));
        let (live, upstreams) = (Arc::clone(&link.live), Arc::clone(&link.upstreams));
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                match state.load(Ordering::SeqCst) {
                    REFUSING => {
                        let _ = conn.shutdown(Shutdown::Both);
                        refused.fetch_add(1, Ordering::SeqCst);
                        continue;
                    }
                    STALLED => {
                        // Never answered, never closed.
                        std::mem::forget(conn);
                        continue;
                    }
                    _ => {}
                }
                let Ok(server) = TcpStream::connect(&upstream) else {
                    let _ = conn.shutdown(Shutdown::Both);
                    continue;
                };
                let clones = (|| {
                    Some([
                        conn.try_clone().ok()?,
                        server.try_clone().ok()?,
                        server.try_clone().ok()?,
                        conn.try_clone().ok()?,
                        server.try_clone().ok()?,
                    ])
                })();
                let Some([c1, s1, s2, c2, s3]) = clones else {
                    continue;
                };
                lock(&live).extend([c1, s1]);
                lock(&upstreams).push(s2);
                // Cut while this one was being set up, after `cut` ended
                // those it found: it is not let through either. (`cut`
                // refuses before it ends the live ones, so either it found
                // this one or this sees the refusal.)
                if state.load(Ordering::SeqCst) == REFUSING {
                    let _ = conn.shutdown(Shutdown::Both);
                    let _ = server.shutdown(Shutdown::Both);
                    continue;
                }
                for (from, to) in [(c2, s3), (server, conn)] {
                    let state = Arc::clone(&state);
                    std::thread::spawn(move || pump(from, to, &state));
                }
            }
        });
        link
    }

    /// Its own `host:port`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `url` with its `host:port` replaced by the link's.
    pub fn url(&self, url: &str) -> String {
        url.replace(&host_port(url), &self.addr.to_string())
    }

    /// Ends every connection through the link, and closes new ones.
    pub fn cut(&self) {
        self.refuse_new();
        for s in lock(&self.live).drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    /// Closes new connections, leaving those through it as they are (a
    /// test that ends them on the server's side, to see the client's own
    /// retries refused).
    pub fn refuse_new(&self) {
        self.state.store(REFUSING, Ordering::SeqCst);
    }

    /// Forwards nothing more and answers nobody new, keeping every
    /// connection open: a silent cut.
    pub fn stall(&self) {
        self.state.store(STALLED, Ordering::SeqCst);
    }

    /// What the server's keepalives do in the end after a stall: its ends
    /// of the connections close, freeing their locks.
    pub fn close_upstreams(&self) {
        for s in lock(&self.upstreams).drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    /// Lets connections through again.
    pub fn restore(&self) {
        self.state.store(UP, Ordering::SeqCst);
    }

    /// How many connections it closed while refusing them.
    pub fn refused(&self) -> usize {
        self.refused.load(Ordering::SeqCst)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Copies `from` to `to` until either ends; while stalled, reads are
/// dropped and nothing is written.
fn pump(mut from: TcpStream, mut to: TcpStream, state: &AtomicU8) {
    let mut buf = [0u8; 16 * 1024];
    let _ = from.set_read_timeout(Some(Duration::from_millis(20)));
    loop {
        if state.load(Ordering::SeqCst) == STALLED {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        match from.read(&mut buf) {
            Ok(0) => break,
            // Read before the stall, dropped after it: the link is cut.
            Ok(_) if state.load(Ordering::SeqCst) == STALLED => {}
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    let _ = to.shutdown(Shutdown::Both);
}

/// `host:port` of a `postgres://user:pw@host:port/…` URL.
pub fn host_port(url: &str) -> String {
    let after = url.split_once('@').map_or(url, |(_, after)| after);
    after.split(['/', '?']).next().unwrap_or(after).to_owned()
}
