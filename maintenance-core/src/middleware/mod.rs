//! `MaintenanceLayer`: the tower middleware that gates web requests by the
//! site's mode — django-site-maintenance's `MaintenanceMiddleware` and context processor.
//! It stays one file of about 800 lines, as tower-http's middlewares do:
//! the layer, its service, its response future and the one `decide` that
//! every request goes through belong together; the builder, the responses,
//! the state thread and vouching have files of their own.
//!
//! ```
//! use std::convert::Infallible;
//! use maintenance_core::Config;
//! use maintenance_core::middleware::{MaintenanceLayer, MaintenanceStatus};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! # let dir = tempfile::tempdir().unwrap();
//! let config = Config::with_state_dir(dir.path()); // or Config::load(&Default::default())?
//! let layer = MaintenanceLayer::builder(&config)
//!     .vouch(|id: &str| id == "alice") // the app's own session store answers
//!     .build();
//! let app = ServiceBuilder::new()
//!     .layer(layer)
//!     .service(service_fn(|req: http::Request<String>| async move {
//!         // A banner's text: a status comes only with something to say
//!         // (PENDING, OFFLINE, read-only, a window announced).
//!         let banner = match req.extensions().get::<MaintenanceStatus>() {
//!             Some(status) => format!("{} since {}", status.mode, status.since),
//!             None => String::new(),
//!         };
//!         Ok::<_, Infallible>(http::Response::new(banner))
//!     }));
//! let res = app.oneshot(http::Request::new(String::new())).await.unwrap();
//! assert_eq!(res.into_body(), "", "ONLINE, nothing announced: no banner");
//! # }
//! ```
//!
//! With axum: `Router::new().route(…).layer(MaintenanceLayer::new(&config))`.
//!
//! Only sessions the app vouches for count — a logged-in user, not anyone
//! who sends a cookie of the right shape. The app says so in two ways,
//! which work together:
//!
//! - its login response carries a [`VouchedSession`] extension (logout an
//!   [`EndedSession`]): the layer records the session before that response
//!   goes out;
//! - a [`SessionValidator`] given to [`LayerBuilder::vouch`] answers for a
//!   cookie the layer has not seen (a login made before this process
//!   started, or through another worker), once per new id.
//!
//! A cookie nobody vouched for is no session: nothing is written for it, it
//! does not hold off OFFLINE, and while PENDING it is turned away like a
//! newcomer.
//!
//! - ONLINE: every request passes. A vouched session is marked active — a
//!   new one is written at once (the request waits for the layer's thread
//!   to write it), a known one at most every few seconds, in batches.
//!   Sessions are kept in memory by raw id, hashed only when written: the
//!   hot path does no disk I/O.
//! - PENDING: a session that was live passes (this process knew it, or the
//!   storage does: another worker may have seen it); everyone else is
//!   turned away. With the state machine's settle time this keeps I2.
//! - OFFLINE: everyone is turned away — a 303 to the maintenance URL, or a
//!   503 with `Retry-After` and a page; JSON for API clients; always
//!   `Cache-Control: no-store`. A response, never an error.
//! - READONLY_PENDING and READONLY: safe requests (GET, HEAD, OPTIONS) pass
//!   for everyone, as while ONLINE; unsafe ones get a 503 with
//!   `Retry-After` and the operator's message (JSON for API clients), for
//!   everyone, exempt or not. A PENDING begun from READONLY is a PENDING
//!   whose unsafe requests are refused too. The unsafe requests this
//!   process let in are counted, and published while READONLY_PENDING so
//!   that the drain waits for them ([`readonly`](self) module: `readonly.rs`).
//! - Always pass: the maintenance URL (also as a prefix, and with a query:
//!   never a redirect loop), the configured prefixes (health checks, static
//!   files), a holder of the bypass cookie, allow-listed addresses, and the
//!   app's own predicate. Paths match by whole decoded segments, and a path
//!   that could mean two things matches none ([`crate::site_path`]).
//! - Every request that passes while there is something to tell users
//!   carries a [`MaintenanceStatus`] (any mode but ONLINE, or a window
//!   scheduled ahead once its notice period has begun); while ONLINE with
//!   nothing announced none does.
//!
//! Whatever arrives, what the layer writes and remembers is bounded by its
//! session cap ([`DEFAULT_SESSION_CAP`] per refresh interval, see
//! [`LayerBuilder::session_cap`]).
//!
//! The mode comes from a snapshot refreshed on the layer's own thread every
//! `refresh_interval`; a PENDING whose waiter died reads ONLINE within that
//! bound. If the state cannot be read the last snapshot stays (logged once);
//! before any snapshot the layer fails closed unless told otherwise.

mod known;
mod local;
mod options;
mod readonly;
mod response;
mod snapshot;
mod state;
#[cfg(test)]
mod tests;
mod vouch;
mod writes;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant, SystemTime};

use http::{Request, Response};
use tokio::sync::oneshot;
use tower_layer::Layer;
use tower_service::Service;

use self::known::View;
pub use self::options::{
    DEFAULT_BYPASS_COOKIE, DEFAULT_COOKIE, DEFAULT_SESSION_CAP, LayerOptions, LogSink, PeerAddress,
    Predicate, RequestHead, SessionValidator, TurnAway, WithoutState, parse_cidr,
};
use self::readonly::WriteGuard;
#[doc(hidden)]
pub use self::response::cookie_for_fuzzing;
pub use self::snapshot::Snapshot;
use self::state::{Job, Shared};
use self::vouch::Then;
use crate::clock::Timestamp;
use crate::config::Config;
use crate::mode::{Mode, RetryAfter};
use crate::schedule::ScheduleRecord;
use crate::session::SessionKey;
use crate::site_path::{RequestPath, SitePath};

/// What a page may show about maintenance: the context processor's
/// equivalent, in the extensions of every passing request while there is
/// something to tell users — any mode but ONLINE, or a window announced
/// ahead ([`MaintenanceStatus::scheduled`]). While the site is ONLINE with
/// nothing announced there is none (nor without a state, when the layer
/// fails open): a page shows no banner then, and the request pays for no
/// extension map (with axum: `Option<Extension<MaintenanceStatus>>`). The
/// mode at any moment, ONLINE included, is [`MaintenanceLayer::snapshot`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaintenanceStatus {
    /// The mode (PENDING: show a "going offline soon" banner).
    pub mode: Mode,
    /// Whether unsafe requests are refused now (READONLY_PENDING,
    /// READONLY, a PENDING begun from READONLY): hide the page's forms, and
    /// say why.
    pub writes_refused: bool,
    /// Since when.
    pub since: Timestamp,
    /// The operator's message.
    pub message: Option<String>,
    /// When users should come back.
    pub retry_after: Option<RetryAfter>,
    /// A window scheduled ahead (`offline on --at`), once its notice
    /// period has begun, so a page can say "maintenance at 02:00": when
    /// ([`ScheduleRecord::at`]), and the operator's message. Each layer
    /// sees it set, ended, or gone with its killed waiting process within
    /// one refresh interval.
    pub scheduled: Option<Arc<ScheduleRecord>>,
}

/// In the extensions of every unsafe request (any method but GET, HEAD and
/// OPTIONS) the layer lets through to the app: the instant the layer
/// admitted it, and the instant the read of the snapshot it was admitted
/// on began, both on this host's wall clock. The read-only drain's promise
/// (I2) is about these: no write is admitted on a snapshot read begun
/// after READONLY_PENDING was committed, nor later than the settle time
/// after that (`README.md`, "read-only"). A handler may log them; the
/// read-only race test checks them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteAdmission {
    /// When the layer decided to let the request in.
    pub admitted: SystemTime,
    /// When the read of the mode snapshot it decided on began.
    pub snapshot_read: SystemTime,
}

/// In the extensions of a request that passed only because it is exempt —
/// the bypass cookie, the allow-list, the app's predicate — while the site
/// is not ONLINE. Such a user browses OFFLINE too: a login they make must
/// not be recorded as a session, or the waiting `offline on` would wait for
/// them ([`MaintenanceHandle::touch`] is for the others).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaintenanceExempt;

/// Put in a response's extensions by the app's login: the app vouches that
/// session `.0` (the id it just set in the session cookie) is a logged-in
/// user. The layer records the session before the response goes out (it
/// waits at most 500 ms for its thread), so a waiting `offline on` counts
/// the user. Ignored on a request that passed only as exempt
/// ([`MaintenanceExempt`]) or while OFFLINE, and for an id that could not
/// be a session cookie (1 to 256 ASCII letters, digits, `-`, `_`).
///
/// With axum: `(StatusCode::SEE_OTHER, [(SET_COOKIE, …)],
/// Extension(VouchedSession(id)))`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VouchedSession(pub String);

/// Put in a response's extensions by the app's logout: session `.0` ended,
/// and stops holding off maintenance at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndedSession(pub String);

/// The layer. Cheap to clone; every clone shares one snapshot, one session
/// cache and one thread.
#[derive(Clone)]
pub struct MaintenanceLayer {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for MaintenanceLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MaintenanceLayer")
            .field("options", &self.shared.options)
            .finish()
    }
}

/// A builder for a [`MaintenanceLayer`].
#[derive(Debug)]
pub struct LayerBuilder {
    config: Config,
    options: LayerOptions,
}

impl MaintenanceLayer {
    /// A layer with the defaults: cookie `sessionid`, a 303 to the
    /// configured maintenance URL, fail closed before the first snapshot.
    pub fn new(config: &Config) -> Self {
        Self::builder(config).build()
    }

    /// A builder, to set options before the layer starts.
    pub fn builder(config: &Config) -> LayerBuilder {
        LayerBuilder {
            config: config.clone(),
            options: LayerOptions::new(config),
        }
    }

    /// A handle for the app: record a login, end a session on logout.
    pub fn handle(&self) -> MaintenanceHandle {
        MaintenanceHandle {
            shared: Arc::clone(&self.shared),
        }
    }

    /// The current snapshot, if the state was ever read.
    pub fn snapshot(&self) -> Option<Arc<Snapshot>> {
        self.shared.sessions.snapshot()
    }
}

impl LayerBuilder {
    /// The session cookie's name (default `sessionid`).
    pub fn cookie_name(mut self, name: impl Into<String>) -> Self {
        self.options.cookie_name = options::CookieName::new(name);
        self
    }

    /// Turn requests away with a 303 to the maintenance URL (the default).
    pub fn redirect(mut self) -> Self {
        self.options.turn_away = TurnAway::Redirect;
        self
    }

    /// Turn requests away with a 503, `Retry-After` and a maintenance page:
    /// `page` (HTML), or a small built-in one showing the operator's message.
    pub fn unavailable(mut self, page: Option<String>) -> Self {
        self.options.turn_away = TurnAway::Unavailable;
        self.options.maintenance_page = page.map(Into::into);
        self
    }

    /// The page (HTML) of the 503 an unsafe request gets while writes are
    /// refused (always a 503, whatever [`redirect`](Self::redirect) says:
    /// a redirect would drop what the form sent). Default: a small built-in
    /// page showing the operator's message.
    pub fn read_only_page(mut self, page: impl Into<String>) -> Self {
        self.options.read_only_page = Some(page.into().into());
        self
    }

    /// Paths at or below `prefix`, by whole segments, always pass (health
    /// checks, static files): `"/healthz"` passes `/healthz` and
    /// `/healthz/live`, not `/healthzX` nor `/healthz/../admin`. See
    /// [`SitePath`] for the rules.
    ///
    /// # Panics
    ///
    /// When `prefix` is a string that is not a valid [`SitePath`] (`"/"`,
    /// `"healthz"`, `"/a/../b"`, …): a programmer's error in a literal. Pass
    /// a [`SitePath`] checked with [`SitePath::parse`] for a value read at
    /// run time.
    #[track_caller]
    pub fn pass_prefix<P>(mut self, prefix: P) -> Self
    where
        P: TryInto<SitePath>,
        P::Error: std::fmt::Display,
    {
        let prefix = options::site_path("pass_prefix", prefix);
        self.options.pass_prefixes.push(prefix);
        self
    }

    /// Paths at or below `prefix`, by whole segments, are an API: turned
    /// away with JSON.
    ///
    /// # Panics
    ///
    /// As [`pass_prefix`](Self::pass_prefix).
    #[track_caller]
    pub fn api_prefix<P>(mut self, prefix: P) -> Self
    where
        P: TryInto<SitePath>,
        P::Error: std::fmt::Display,
    {
        let prefix = options::site_path("api_prefix", prefix);
        self.options.api_prefixes.push(prefix);
        self
    }

    /// The bypass path's prefix (default: `bypass_prefix` from manage.toml,
    /// `/_maintenance/bypass/`): the secret is the one segment below it.
    ///
    /// # Panics
    ///
    /// As [`pass_prefix`](Self::pass_prefix).
    #[track_caller]
    pub fn bypass_prefix<P>(mut self, prefix: P) -> Self
    where
        P: TryInto<SitePath>,
        P::Error: std::fmt::Display,
    {
        self.options.bypass_prefix = options::site_path("bypass_prefix", prefix);
        self
    }

    /// The app's own secret key, which signs bypass cookies. Without one a
    /// random per-process key is used, so cookies do not outlive a restart
    /// nor work across workers.
    pub fn signing_key(mut self, key: impl AsRef<[u8]>) -> Self {
        self.options.signing_key = key.as_ref().to_vec().into();
        self
    }

    /// How long a bypass cookie lasts (default 12 h).
    pub fn bypass_ttl(mut self, ttl: Duration) -> Self {
        self.options.bypass_ttl = ttl;
        self
    }

    /// Lets an address or CIDR range through during maintenance.
    pub fn allow(mut self, cidr: &str) -> Result<Self, String> {
        self.options.allow.push(parse_cidr(cidr)?);
        Ok(self)
    }

    /// Trusts `X-Forwarded-For` from this proxy address or range.
    pub fn trust_proxy(mut self, cidr: &str) -> Result<Self, String> {
        self.options.trusted_proxies.push(parse_cidr(cidr)?);
        Ok(self)
    }

    /// Lets a request through during maintenance when `predicate` says so
    /// (staff users).
    pub fn allow_if(
        mut self,
        predicate: impl Fn(&RequestHead<'_>) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.options.predicate = Some(Arc::new(predicate));
        self
    }

    /// Where the peer's address is found in a request's extensions (axum:
    /// `|e| e.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip())`).
    pub fn peer_address(mut self, find: PeerAddress) -> Self {
        self.options.peer_address = find;
        self
    }

    /// What to do before the state was ever read.
    pub fn without_state(mut self, choice: WithoutState) -> Self {
        self.options.without_state = choice;
        self
    }

    /// How often, at most, a known session is written again (default
    /// 5 s). Repeat touches wait in one batch, written in one call (one
    /// statement on PostgreSQL) `touch_every` after its first: storage
    /// sees a session's activity within twice this. A session whose stored
    /// entry could expire before the batch goes is written at once.
    pub fn touch_every(mut self, every: Duration) -> Self {
        self.options.touch_every = every;
        self
    }

    /// The app's validator: asked whether a session cookie the layer has
    /// not seen belongs to a logged-in user (`|id: &str| sessions.contains(id)`).
    /// Called on a thread of the layer's own (it may block), once per new
    /// id: a vouched id is remembered, a rejected one too (a bounded cache,
    /// for up to a minute). Without a validator only the app's
    /// [`VouchedSession`] markers and [`MaintenanceHandle::touch`] record
    /// sessions.
    pub fn vouch(mut self, validator: impl SessionValidator) -> Self {
        self.options.validator = Some(Arc::new(validator));
        self
    }

    /// The session cap (default [`DEFAULT_SESSION_CAP`], at least 1): per
    /// refresh interval, at most this many new session ids are looked at
    /// (validator calls, and storage checks while PENDING) and at most this
    /// many new session entries are written. Past it, in that interval, a
    /// new id passes as no session (turned away while PENDING), and a new
    /// session the app vouched for is remembered and held off OFFLINE by
    /// one overflow entry of this process until later intervals write it.
    /// One log line says when either is reached. The layer also remembers
    /// at most 100 × cap sessions and 20 × cap rejected ids.
    pub fn session_cap(mut self, cap: u32) -> Self {
        self.options.session_cap = cap.max(1);
        self
    }

    /// Where the layer's log lines go (default: `manage: LINE` on stderr):
    /// e.g. `|line| tracing::warn!("{line}")`.
    pub fn log_to(mut self, sink: impl Fn(&str) + Send + Sync + 'static) -> Self {
        self.options.log = Arc::new(sink);
        self
    }

    /// Starts the layer: reads the first snapshot and starts its thread.
    pub fn build(self) -> MaintenanceLayer {
        MaintenanceLayer {
            shared: state::start(&self.config, self.options),
        }
    }
}

/// The app's handle on sessions: record a login at once, end a session on
/// logout.
#[derive(Clone)]
pub struct MaintenanceHandle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for MaintenanceHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MaintenanceHandle").finish_non_exhaustive()
    }
}

impl MaintenanceHandle {
    /// The app vouches for session `id` (a login, as [`VouchedSession`]
    /// does from a response): records it as active now, and waits until it
    /// is written. Ignored for an id the layer would not record.
    pub async fn touch(&self, id: &str) {
        if !response::valid_session_id(id) {
            return;
        }
        let (tx, rx) = oneshot::channel();
        self.shared.record(id, Some(tx));
        let _ = tokio::time::timeout(self.shared.options.check_timeout, rx).await;
    }

    /// Ends session `id` (a logout): it stops holding maintenance off.
    pub fn end(&self, id: &str) {
        if !response::valid_session_id(id) {
            return;
        }
        self.shared.end(id);
    }
}

impl<S> Layer<S> for MaintenanceLayer {
    type Service = Maintenance<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Maintenance {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}

/// The middleware service.
#[derive(Clone)]
pub struct Maintenance<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> std::fmt::Debug for Maintenance<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Maintenance").finish_non_exhaustive()
    }
}

/// What the layer decided about one request.
enum Decision {
    Pass,
    /// Pass, as exempt (marked with [`MaintenanceExempt`]).
    PassExempt,
    /// Pass once the layer's thread has written this new session.
    PassAfterWrite(oneshot::Receiver<()>),
    /// Ask the storage whether the session is live; pass if so.
    Check(oneshot::Receiver<bool>, bool),
    TurnAway(bool),
    /// An unsafe request while writes are refused: the read-only 503.
    RefuseWrite(bool),
    Bypass([u8; 32]),
}

impl<S> Maintenance<S> {
    fn decide<B>(&self, req: &Request<B>, view: &View, write: bool) -> Decision {
        let snapshot = view.snapshot.as_deref();
        let o = &self.shared.options;
        // `None`: a path that could mean two things passes no prefix.
        let path = RequestPath::parse(req.uri().path());
        if let Some(path) = &path
            && (o.maintenance_url.matches(path) || o.pass_prefixes.iter().any(|p| p.matches(path)))
        {
            return Decision::Pass;
        }
        if let Some(hash) = snapshot.and_then(|s| s.bypass)
            && let Some(secret) = path.as_ref().and_then(|p| o.bypass_prefix.child_of(p))
            && response::secret_matches(&secret, &hash)
        {
            return Decision::Bypass(hash);
        }
        let json = || response::wants_json(o, path.as_ref(), req.headers());
        let Some(snap) = snapshot else {
            return match o.without_state {
                WithoutState::FailOpen => Decision::Pass,
                WithoutState::FailClosed if self.exempt(req, None) => Decision::PassExempt,
                WithoutState::FailClosed => Decision::TurnAway(json()),
            };
        };
        let session = response::session_cookie(req.headers(), &o.cookie_name);
        match snap.mode {
            Mode::Online => match session {
                Some(id) => self.note_session(view, id),
                None => Decision::Pass,
            },
            _ if write && snap.writes_refused => Decision::RefuseWrite(json()),
            // Reads go on: sessions are noted as ONLINE notes them, so a
            // later PENDING counts them.
            Mode::ReadOnlyPending | Mode::ReadOnly => match session {
                Some(id) => self.note_session(view, id),
                None => Decision::Pass,
            },
            _ if self.exempt(req, Some(snap)) => Decision::PassExempt,
            Mode::Pending => match session {
                Some(id) if self.touch_known(view, id, true) => Decision::Pass,
                Some(id) => self.admit(id, json()),
                None => Decision::TurnAway(json()),
            },
            Mode::Offline => Decision::TurnAway(json()),
        }
    }

    /// Records activity of a passing session: a known one is written again
    /// at most every `touch_every`; a new one is asked of the app's
    /// validator (within the cap), and written before the request goes on
    /// if it vouches for it. Without a validator a new id is no session.
    fn note_session(&self, view: &View, id: &[u8]) -> Decision {
        if self.touch_known(view, id, false) {
            return Decision::Pass;
        }
        let Some(id) = session_id(id) else {
            return Decision::Pass;
        };
        let shared = &self.shared;
        if shared.vouch.is_none() || shared.is_rejected(id) || !shared.take_lookup() {
            return Decision::Pass;
        }
        let (tx, rx) = oneshot::channel();
        if shared.look_up(id, Then::Record(tx)) {
            Decision::PassAfterWrite(rx)
        } else {
            Decision::Pass
        }
    }

    /// While PENDING, a session this process did not see live: it passes if
    /// the app vouches for it (when there is a validator) and the storage
    /// says it was live; looked at within the cap, else turned away.
    fn admit(&self, id: &[u8], json: bool) -> Decision {
        let Some(id) = session_id(id) else {
            return Decision::TurnAway(json);
        };
        let shared = &self.shared;
        if shared.is_rejected(id) || !shared.take_lookup() {
            return Decision::TurnAway(json);
        }
        let (tx, rx) = oneshot::channel();
        if shared.vouch.is_none() {
            shared.send(Job::Check(SessionKey::of(id.as_bytes()), tx));
        } else if !shared.look_up(id, Then::Admit(tx)) {
            return Decision::TurnAway(json);
        }
        Decision::Check(rx, json)
    }

    /// For a session this process knows (and, with `live`, saw within the
    /// timeout): notes its activity — written again at most every
    /// `touch_every`, in the layer's next batch, or at once when its
    /// stored entry could expire before that batch goes — and says
    /// `true`. One lookup, one clock read.
    fn touch_known(&self, view: &View, id: &[u8], live: bool) -> bool {
        let shared = &self.shared;
        let timeout = shared.session_timeout.as_secs();
        let touched = shared.sessions.with(view, id, |seen| {
            let last = seen.written()?;
            let now = shared.now_secs();
            let idle = now.saturating_sub(last);
            if live && idle >= timeout {
                return None;
            }
            let again = idle >= shared.options.touch_every.as_secs() && seen.rewrite(last, now);
            Some(again.then_some(idle))
        });
        match touched.flatten() {
            None => false,
            Some(again) => {
                match again {
                    Some(idle) if idle.saturating_add(shared.lapse_secs) >= timeout => {
                        shared.send(Job::Lapsing(SessionKey::of(id)));
                    }
                    Some(_) => shared.send(Job::Again(SessionKey::of(id))),
                    None => {}
                }
                true
            }
        }
    }

    /// Who passes whatever the mode: bypass cookie, allow-list, predicate.
    fn exempt<B>(&self, req: &Request<B>, snapshot: Option<&Snapshot>) -> bool {
        let o = &self.shared.options;
        if let Some(hash) = snapshot.and_then(|s| s.bypass)
            && let Some(value) = response::cookie(req.headers(), &o.bypass_cookie)
            && response::bypass_cookie_valid(o, &hash, value)
        {
            return true;
        }
        if !o.allow.is_empty()
            && let Some(client) = self.client_address(req)
            && o.allow.iter().any(|net| net.contains(&client))
        {
            return true;
        }
        if let Some(p) = &o.predicate {
            let head = RequestHead {
                method: req.method(),
                uri: req.uri(),
                headers: req.headers(),
                extensions: req.extensions(),
            };
            return p(&head);
        }
        false
    }

    /// The client's address: the peer's, or — only when the peer is a
    /// trusted proxy — the nearest untrusted hop of `X-Forwarded-For`.
    /// Without a peer address, none (the allow-list fails closed).
    fn client_address<B>(&self, req: &Request<B>) -> Option<std::net::IpAddr> {
        let o = &self.shared.options;
        let peer = (o.peer_address)(req.extensions())?;
        let trusted = |ip: &std::net::IpAddr| o.trusted_proxies.iter().any(|n| n.contains(ip));
        if !trusted(&peer) {
            return Some(peer);
        }
        let hops: Vec<std::net::IpAddr> = req
            .headers()
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|h| h.trim().parse().ok())
            .collect::<Option<Vec<_>>>()?;
        Some(
            hops.into_iter()
                .rev()
                .find(|ip| !trusted(ip))
                .unwrap_or(peer),
        )
    }
}

/// A session id checked by [`response::session_cookie`] (ASCII), as text.
fn session_id(id: &[u8]) -> Option<&str> {
    std::str::from_utf8(id).ok()
}

/// The status a passing request carries: none while ONLINE with nothing
/// announced ([`MaintenanceStatus`] says why).
fn status_of(snapshot: Option<&Snapshot>) -> Option<MaintenanceStatus> {
    let s = snapshot.filter(|s| s.mode != Mode::Online || s.scheduled.is_some())?;
    Some(MaintenanceStatus {
        mode: s.mode,
        writes_refused: s.writes_refused,
        since: s.since,
        message: s.message.clone(),
        retry_after: s.retry_after,
        scheduled: s.scheduled.clone(),
    })
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Maintenance<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: From<String> + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        // Counted before the view (and so the snapshot) is loaded:
        // readonly.rs says why that order keeps the read-only drain whole.
        let write = WriteGuard::begin(&self.shared, req.method());
        let view = self.shared.sessions.view();
        let snap = view.snapshot.as_deref();
        // A write is admitted only on a fresh snapshot: one `Instant`
        // read and comparison, for unsafe requests only (readonly.rs says
        // why); the same instant stamps its admission.
        let now = write.as_ref().and(snap).map(|s| (s, Instant::now()));
        if let Some((s, now)) = now
            && !s.writes_refused
            && now >= s.fresh_until
        {
            return self.after_fresh_refresh(req, write);
        }
        let decision = self.decide(&req, &view, write.is_some());
        let o = &self.shared.options;
        let pass = |req: &mut Request<ReqBody>| {
            if let Some(status) = status_of(snap) {
                req.extensions_mut().insert(status);
            }
            if let Some((s, now)) = now {
                let (at, wall) = s.read_began;
                req.extensions_mut().insert(WriteAdmission {
                    admitted: wall + now.saturating_duration_since(at),
                    snapshot_read: wall,
                });
            }
        };
        // The app's login and logout markers count on a request that passed
        // on its own standing, never as exempt nor while OFFLINE.
        let markers = || {
            snap.is_none_or(|s| s.mode != Mode::Offline)
                .then(|| Arc::clone(&self.shared))
        };
        match decision {
            Decision::Pass => {
                pass(&mut req);
                let markers = markers();
                ResponseFuture::inner(self.inner.call(req), markers, write)
            }
            Decision::PassExempt => {
                pass(&mut req);
                req.extensions_mut().insert(MaintenanceExempt);
                ResponseFuture::inner(self.inner.call(req), None, write)
            }
            Decision::TurnAway(json) => ResponseFuture::early(response::turned_away(o, snap, json)),
            Decision::RefuseWrite(json) => match snap {
                Some(snap) => ResponseFuture::early(readonly::refused(o, snap, json)),
                None => ResponseFuture::early(response::turned_away(o, snap, json)),
            },
            Decision::Bypass(hash) => ResponseFuture::early(response::bypass_granted(o, &hash)),
            Decision::PassAfterWrite(rx) => {
                pass(&mut req);
                let timeout = o.check_timeout;
                let ready = self.inner.clone();
                let mut svc = std::mem::replace(&mut self.inner, ready);
                let markers = markers();
                ResponseFuture::boxed(
                    async move {
                        // Written (or the disk is slow: the user is not held up
                        // longer than the timeout; the write still lands).
                        let _ = tokio::time::timeout(timeout, rx).await;
                        svc.call(req).await
                    },
                    markers,
                    write,
                )
            }
            Decision::Check(rx, json) => {
                pass(&mut req);
                let timeout = o.check_timeout;
                let ready = self.inner.clone();
                let mut svc = std::mem::replace(&mut self.inner, ready);
                let shared = Arc::clone(&self.shared);
                let turned: Response<ResBody> = response::turned_away(o, snap, json);
                let id = response::cookie(req.headers(), &o.cookie_name).map(str::to_owned);
                let markers = markers();
                ResponseFuture::boxed(
                    async move {
                        match tokio::time::timeout(timeout, rx).await {
                            Ok(Ok(true)) => {
                                if let Some(id) = id {
                                    shared.remember(&id);
                                }
                                svc.call(req).await
                            }
                            _ => Ok(turned),
                        }
                    },
                    markers,
                    write,
                )
            }
        }
    }
}

impl<S> Maintenance<S> {
    /// An unsafe request whose snapshot is stale (the layer's thread is
    /// late): waits, at most `check_timeout`, for the thread's next
    /// snapshot, then is decided on that one; answered as READONLY would
    /// answer it when none comes in time. It stays counted in flight
    /// throughout, so a drain the late thread then sees publishes it.
    fn after_fresh_refresh<ReqBody, ResBody>(
        &mut self,
        req: Request<ReqBody>,
        write: Option<WriteGuard>,
    ) -> ResponseFuture<S::Future, ResBody, S::Error>
    where
        S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        ReqBody: Send + 'static,
        ResBody: From<String> + Send + 'static,
    {
        let ready = self.inner.clone();
        let mut this = Maintenance {
            inner: std::mem::replace(&mut self.inner, ready),
            shared: Arc::clone(&self.shared),
        };
        let deadline = tokio::time::Instant::now() + self.shared.options.check_timeout;
        ResponseFuture::boxed(
            async move {
                let shared = Arc::clone(&this.shared);
                let fresh = || {
                    shared
                        .sessions
                        .view()
                        .snapshot
                        .as_deref()
                        .is_some_and(|s| s.writes_refused || Instant::now() < s.fresh_until)
                };
                loop {
                    let notified = std::pin::pin!(shared.refreshed.notified());
                    let mut notified = notified;
                    notified.as_mut().enable();
                    if fresh() {
                        // Counted again by the call before this guard goes.
                        let future = this.call(req);
                        drop(write);
                        return future.await;
                    }
                    if tokio::time::timeout_at(deadline, notified).await.is_err() {
                        break;
                    }
                }
                let view = shared.sessions.view();
                let json = response::wants_json(
                    &shared.options,
                    RequestPath::parse(req.uri().path()).as_ref(),
                    req.headers(),
                );
                Ok(match view.snapshot.as_deref() {
                    Some(snap) => readonly::refused(&shared.options, snap, json),
                    None => response::turned_away(&shared.options, None, json),
                })
            },
            None,
            None,
        )
    }
}

/// Applies the app's markers on a response: ends an [`EndedSession`], and
/// records a [`VouchedSession`] — returning the wait for its write.
fn apply_markers<B>(shared: &Shared, response: &mut Response<B>) -> Option<oneshot::Receiver<()>> {
    let extensions = response.extensions_mut();
    if let Some(EndedSession(id)) = extensions.remove::<EndedSession>()
        && response::valid_session_id(&id)
    {
        shared.end(&id);
    }
    let VouchedSession(id) = extensions.remove::<VouchedSession>()?;
    if !response::valid_session_id(&id) {
        return None;
    }
    let (tx, rx) = oneshot::channel();
    shared.record(&id, Some(tx));
    Some(rx)
}

pin_project_lite::pin_project! {
    /// The layer's response future: the inner service's, an early answer,
    /// or a short wait on the layer's thread before either; then, when the
    /// app's response vouches for a new session, a short wait for its write.
    pub struct ResponseFuture<F, B, E> {
        #[pin]
        kind: Kind<F, B, E>,
        markers: Option<Arc<Shared>>,
        // An unsafe request counts as in flight while this lives.
        write: Option<WriteGuard>,
    }
}

pin_project_lite::pin_project! {
    #[project = KindProj]
    enum Kind<F, B, E> {
        Inner { #[pin] future: F },
        Early { response: Option<Response<B>> },
        Waiting { future: Pin<Box<dyn Future<Output = Result<Response<B>, E>> + Send>> },
        // Boxed: a timer is large, and rare here; every other request's
        // future stays small.
        Written {
            response: Option<Response<B>>,
            write: Pin<Box<tokio::time::Timeout<oneshot::Receiver<()>>>>,
        },
    }
}

impl<F, B, E> ResponseFuture<F, B, E> {
    /// The inner service's future; `write` counts an unsafe request in
    /// flight until it ends.
    fn inner(future: F, markers: Option<Arc<Shared>>, write: Option<WriteGuard>) -> Self {
        ResponseFuture {
            kind: Kind::Inner { future },
            markers,
            write,
        }
    }

    fn early(response: Response<B>) -> Self {
        ResponseFuture {
            kind: Kind::Early {
                response: Some(response),
            },
            markers: None,
            write: None,
        }
    }

    /// A wait before the inner service's future, boxed; `write` as for
    /// [`ResponseFuture::inner`].
    fn boxed(
        future: impl Future<Output = Result<Response<B>, E>> + Send + 'static,
        markers: Option<Arc<Shared>>,
        write: Option<WriteGuard>,
    ) -> Self {
        ResponseFuture {
            kind: Kind::Waiting {
                future: Box::pin(future),
            },
            markers,
            write,
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F, B, E>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            let result = match this.kind.as_mut().project() {
                KindProj::Inner { future } => ready!(future.poll(cx)),
                KindProj::Early { response } => {
                    return Poll::Ready(Ok(response.take().expect("polled after completion")));
                }
                KindProj::Waiting { future } => ready!(future.as_mut().poll(cx)),
                KindProj::Written { response, write } => {
                    // Written, or the disk is slow: the write still lands.
                    let _ = ready!(write.as_mut().poll(cx));
                    return Poll::Ready(Ok(response.take().expect("polled after completion")));
                }
            };
            let Some(shared) = this.markers.take() else {
                return Poll::Ready(result);
            };
            let mut response = result?;
            let Some(written) = apply_markers(&shared, &mut response) else {
                return Poll::Ready(Ok(response));
            };
            this.kind.set(Kind::Written {
                response: Some(response),
                write: Box::pin(tokio::time::timeout(shared.options.check_timeout, written)),
            });
        }
    }
}
