//! A TCP proxy in front of the PostgreSQL test server that a test can
//! stall: from then on it forwards nothing either way and connects nobody
//! new, as a cut link would, while its own connections to the server stay
//! open — as the server's stay until its keepalives end them, which
//! [`Proxy::close_upstreams`] stands for. (A user-space proxy answers the
//! server's keepalives itself, so the server's bound is the test's to
//! play, not the kernel's.)

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A running proxy to one server.
pub struct Proxy {
    port: u16,
    stalled: Arc<AtomicBool>,
    upstreams: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    /// A proxy to the server `url` names (`postgres://user:pw@host:port/…`).
    pub fn to(url: &str) -> Proxy {
        let target = url
            .split('@')
            .nth(1)
            .and_then(|h| h.split('/').next())
            .expect("a URL with host:port")
            .to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let port = listener.local_addr().expect("the proxy's port").port();
        let stalled = Arc::new(AtomicBool::new(false));
        let upstreams = Arc::new(Mutex::new(Vec::new()));
        let (s, u) = (Arc::clone(&stalled), Arc::clone(&upstreams));
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                if s.load(Ordering::SeqCst) {
                    // Cut off: never answered.
                    std::mem::forget(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(&target) else {
                    continue;
                };
                u.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(server.try_clone().expect("clone a socket"));
                let pairs = [
                    (
                        client.try_clone().expect("clone a socket"),
                        server.try_clone().expect("clone a socket"),
                    ),
                    (server, client),
                ];
                for (from, to) in pairs {
                    let s = Arc::clone(&s);
                    std::thread::spawn(move || pump(from, to, &s));
                }
            }
        });
        Proxy {
            port,
            stalled,
            upstreams,
        }
    }

    /// `url` with its `host:port` replaced by the proxy's.
    pub fn url(&self, url: &str) -> String {
        let (head, tail) = url.split_once('@').expect("a URL with user@host");
        let rest = tail.split_once('/').map_or("", |(_, r)| r);
        format!("{head}@127.0.0.1:{}/{rest}", self.port)
    }

    /// Cuts the link: nothing more goes through, nobody new gets in.
    pub fn stall(&self) {
        self.stalled.store(true, Ordering::SeqCst);
    }

    /// What the server's keepalives do in the end: its ends of the
    /// connections close, freeing their locks.
    pub fn close_upstreams(&self) {
        for s in self
            .upstreams
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream, stalled: &AtomicBool) {
    let mut buf = [0u8; 16384];
    let _ = from.set_read_timeout(Some(Duration::from_millis(20)));
    loop {
        if stalled.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        }
        match from.read(&mut buf) {
            Ok(0) => {
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
            // Read before the stall, dropped after it: the link is cut.
            Ok(_) if stalled.load(Ordering::SeqCst) => {}
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
    }
}
