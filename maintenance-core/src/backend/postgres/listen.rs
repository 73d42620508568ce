//! LISTEN: one connection per backend, listening on the site's channel
//! ([`keys::channel`](super::keys::channel)), that hears every mode change
//! of the site, from any process on any host, the moment it commits (every
//! write of the mode record sends `NOTIFY <channel>, '<generation>'` in its
//! own transaction, `modes.rs`).
//!
//! - Started by the first [`Listener::subscribe`], never before: a
//!   command that never waits opens no LISTEN connection.
//! - The connection is made by the backend's own path
//!   ([`Target::connect_listening`](super::connect::Target::connect_listening):
//!   our socket, keepalives, TLS as `sslmode` says) and runs nothing but
//!   its `LISTEN`. Its notifications are forwarded to every [`Subscription`]
//!   in this process through a watch of [`Heard`].
//! - **Lost, and made again.** When the connection ends (the server
//!   terminated it, a restart, keepalives giving up on a partition),
//!   [`Heard::listening`] turns false and [`Heard::losses`] moves; the
//!   listener connects again after 100 ms, doubling to 5 s while attempts
//!   fail. Each connection made moves [`Heard::connects`]: NOTIFY has no
//!   replay, so a subscriber re-reads the state whenever it moves (changes
//!   made while nobody listened were not heard). A waiter falls back to its
//!   own periodic re-read while the listener is not listening (`watch.rs`).
//! - It ends when its backend is gone and no subscription is left.
//!
//! What a PostgreSQL LISTEN cannot do, and so this does not either: a
//! connection through PgBouncer in transaction mode hears nothing
//! reliably (`offline doctor` reports such a pooler); notifications come
//! at commit only.

use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use super::{Inner, sql};
use crate::error::Result;

/// The first wait before connecting again after a loss.
const FIRST_RETRY: Duration = Duration::from_millis(100);
/// The longest wait between attempts.
const LAST_RETRY: Duration = Duration::from_secs(5);

/// What the listener has heard so far, as its subscribers see it. Counters
/// only grow; a subscriber compares them with the ones it saw last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct Heard {
    /// Whether the LISTEN connection is up: every change committed while
    /// it stays up is heard.
    pub listening: bool,
    /// LISTEN connections made so far.
    pub connects: u64,
    /// Attempts failed and connections lost so far.
    pub losses: u64,
    /// Notifications heard so far.
    pub notifications: u64,
    /// The generation the last notification carried.
    pub generation: Option<u64>,
}

impl Heard {
    /// Whether the first attempt to listen is over (made or failed).
    fn settled(&self) -> bool {
        self.connects > 0 || self.losses > 0
    }
}

/// A backend's listener: the site's channel, and the watch its task
/// feeds once started.
#[derive(Debug)]
pub(super) struct Listener {
    channel: String,
    heard: watch::Receiver<Heard>,
    /// The feeding side, until the first subscription starts the task.
    unstarted: Mutex<Option<watch::Sender<Heard>>>,
}

impl Listener {
    /// A listener for `channel`, not started.
    pub(super) fn new(channel: String) -> Listener {
        let (tx, rx) = watch::channel(Heard::default());
        Listener {
            channel,
            heard: rx,
            unstarted: Mutex::new(Some(tx)),
        }
    }

    /// The channel's name.
    #[cfg(test)]
    pub(super) fn channel(&self) -> &str {
        &self.channel
    }

    /// The `NOTIFY` of `generation` on the channel, one statement.
    pub(super) fn notify_sql(&self, generation: u64) -> String {
        format!("NOTIFY {}, '{generation}'", sql::ident(&self.channel))
    }

    /// What was heard so far.
    #[cfg(test)]
    pub(super) fn heard(&self) -> Heard {
        *self.heard.borrow()
    }

    /// A subscription to `inner`'s listener, starting it on first use
    /// (on the backend's runtime), once its first attempt to listen is
    /// over or `deadline` passes: from then on, a change that commits while
    /// [`Heard::listening`] is heard.
    pub(super) async fn subscribe(inner: &Arc<Inner>, deadline: Instant) -> Subscription {
        let this = &inner.listener;
        let start = this
            .unstarted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(tx) = start {
            tokio::spawn(listen(Arc::downgrade(inner), this.channel.clone(), tx));
        }
        let mut rx = this.heard.clone();
        let _ = tokio::time::timeout_at(deadline.into(), rx.wait_for(Heard::settled)).await;
        let seen = *rx.borrow_and_update();
        Subscription { rx, seen }
    }
}

/// One subscriber's view of its listener.
#[derive(Debug)]
pub(super) struct Subscription {
    rx: watch::Receiver<Heard>,
    seen: Heard,
}

impl Subscription {
    /// What was heard as of the last [`news`](Self::news).
    pub(super) fn seen(&self) -> Heard {
        self.seen
    }

    /// Resolves at the next event a reader of the state at `generation`
    /// must act on: a notification of another generation (a change), or the
    /// connection lost or made again (re-read: changes may have gone
    /// unheard). Notifications of `generation` itself (the change the
    /// reader already has, heard late) are passed over. Never resolves once
    /// the listener is gone.
    pub(super) async fn news(&mut self, generation: u64) -> Heard {
        loop {
            let now = *self.rx.borrow_and_update();
            let before = std::mem::replace(&mut self.seen, now);
            if now.connects != before.connects
                || now.losses != before.losses
                || (now.notifications != before.notifications && now.generation != Some(generation))
            {
                return now;
            }
            if self.rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

/// [`Backend::changes`](crate::Backend::changes): a [`Subscription`] to
/// the backend's listener, waited on from the caller's thread. Every
/// notification is news (the reader does not track generations), and so is
/// a connection lost or made again (the listener counts both).
#[derive(Debug)]
pub(super) struct Feed {
    inner: Arc<Inner>,
    /// Taken on the first wait, on the backend's runtime.
    subscription: Option<Subscription>,
}

impl Feed {
    pub(super) fn new(inner: &Arc<Inner>) -> Feed {
        Feed {
            inner: Arc::clone(inner),
            subscription: None,
        }
    }
}

/// No mode record has this generation: every notification is news.
const ANY: u64 = u64::MAX;

impl crate::backend::ChangeFeed for Feed {
    fn wait(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let inner = Arc::clone(&self.inner);
        let taken = self.subscription.take();
        let waited = super::runtime::block_on(async move {
            match taken {
                // The first look: listening from now on, so the reader's
                // next read sees every change after it.
                None => Ok((Listener::subscribe(&inner, deadline).await, true)),
                Some(mut sub) => {
                    let news = tokio::time::timeout_at(deadline.into(), sub.news(ANY))
                        .await
                        .is_ok();
                    Ok((sub, news))
                }
            }
        });
        match waited {
            Ok((sub, news)) => {
                self.subscription = Some(sub);
                news
            }
            // The runtime is gone: nothing will be pushed again.
            Err(_) => {
                std::thread::sleep(timeout);
                false
            }
        }
    }
}

/// The listener's task: connects, LISTENs, forwards what it hears; again
/// after a loss, with backoff; ends when its backend and every
/// subscription are gone.
async fn listen(inner: Weak<Inner>, channel: String, tx: watch::Sender<Heard>) {
    let mut retry = FIRST_RETRY;
    loop {
        let Some(strong) = inner.upgrade() else {
            return;
        };
        let (notices, mut heard) = mpsc::unbounded_channel();
        let made = tokio::select! {
            made = connect(&strong, &channel, notices) => made,
            () = tx.closed() => return,
        };
        // Not kept alive by its own listener.
        drop(strong);
        match made {
            Ok(conn) => {
                retry = FIRST_RETRY;
                tx.send_modify(|h| {
                    h.listening = true;
                    h.connects += 1;
                });
                loop {
                    tokio::select! {
                        n = heard.recv() => match n {
                            Some(n) if n.channel() == channel => tx.send_modify(|h| {
                                h.notifications += 1;
                                h.generation = n.payload().parse().ok();
                            }),
                            Some(_) => {}
                            // The connection ended.
                            None => break,
                        },
                        () = tx.closed() => return,
                    }
                }
                drop(conn);
            }
            Err(e) => {
                // Said once per loss streak, not at every retry.
                if retry == FIRST_RETRY {
                    eprintln!(
                        "warning: cannot listen for mode changes ({e}); waits re-read the mode \
                         until the listener connects again"
                    );
                }
            }
        }
        tx.send_modify(|h| {
            h.listening = false;
            h.losses += 1;
        });
        tokio::select! {
            () = tokio::time::sleep(retry) => {}
            () = tx.closed() => return,
        }
        retry = (retry * 2).min(LAST_RETRY);
    }
}

/// A connection LISTENing on `channel`, its notifications sent to
/// `notices`.
async fn connect(
    inner: &Inner,
    channel: &str,
    notices: super::connect::Notices,
) -> Result<super::connect::Conn> {
    let conn = inner.target.connect_listening(notices).await?;
    sql::run(&conn.client, &format!("LISTEN {}", sql::ident(channel)))
        .await
        .map_err(|e| inner.pg_error(e))?;
    Ok(conn)
}
