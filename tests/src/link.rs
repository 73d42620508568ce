//! A TCP forwarder to the PostgreSQL test server that a test can cut: the
//! database gone, as a stopped or unreachable server is to its clients,
//! without stopping the server the other tests share.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// A forwarder on a loopback port of its own to `upstream`. While it is
/// up it copies bytes both ways; [`cut`](Link::cut) ends every connection
/// through it, and from then on it closes each one it accepts (counting
/// them, [`refused`](Link::refused)) until [`restore`](Link::restore).
pub struct Link {
    addr: SocketAddr,
    up: Arc<AtomicBool>,
    refused: Arc<AtomicUsize>,
    live: Arc<Mutex<Vec<TcpStream>>>,
}

impl Link {
    /// A link to `upstream` (`host:port`), up.
    pub fn to(upstream: String) -> Link {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let addr = listener.local_addr().expect("the link's address");
        let up = Arc::new(AtomicBool::new(true));
        let refused = Arc::new(AtomicUsize::new(0));
        let live = Arc::new(Mutex::new(Vec::new()));
        let (u, r, l) = (Arc::clone(&up), Arc::clone(&refused), Arc::clone(&live));
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                if !u.load(Ordering::SeqCst) {
                    let _ = conn.shutdown(Shutdown::Both);
                    r.fetch_add(1, Ordering::SeqCst);
                    continue;
                }
                let Ok(server) = TcpStream::connect(&upstream) else {
                    let _ = conn.shutdown(Shutdown::Both);
                    continue;
                };
                let (Ok(c), Ok(s)) = (conn.try_clone(), server.try_clone()) else {
                    continue;
                };
                l.lock().expect("the link's connections").extend([c, s]);
                let (Ok(c), Ok(s)) = (conn.try_clone(), server.try_clone()) else {
                    continue;
                };
                for (mut from, mut to) in [(c, s), (server, conn)] {
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16 * 1024];
                        while let Ok(n) = from.read(&mut buf) {
                            if n == 0 || to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(Shutdown::Both);
                    });
                }
            }
        });
        Link {
            addr,
            up,
            refused,
            live,
        }
    }

    /// Its own `host:port`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Ends every connection through the link, and refuses new ones.
    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for s in self.live.lock().expect("the link's connections").drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    /// Refuses new connections, leaving those through it as they are (a
    /// test that ends them on the server's side, to see the client's own
    /// retries refused).
    pub fn refuse_new(&self) {
        self.up.store(false, Ordering::SeqCst);
    }

    /// Lets connections through again.
    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }

    /// How many connections it refused while cut.
    pub fn refused(&self) -> usize {
        self.refused.load(Ordering::SeqCst)
    }

    /// `url` with its `host:port` replaced by the link's.
    pub fn url(&self, url: &str) -> String {
        url.replace(&host_port(url), &self.addr.to_string())
    }
}

/// `host:port` of a `postgres://user:pw@host:port/…` URL.
pub fn host_port(url: &str) -> String {
    let after = url.split_once('@').map_or(url, |(_, after)| after);
    after.split(['/', '?']).next().unwrap_or(after).to_owned()
}
