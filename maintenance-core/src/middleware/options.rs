//! What a [`MaintenanceLayer`](super::MaintenanceLayer) is told: how to turn
//! requests away, who always passes, which cookie names a session, who
//! vouches for a session, and how much the layer may write.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;

use crate::site_path::SitePath;

/// How a turned-away request is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TurnAway {
    /// `303 See Other` to the maintenance URL, as django-site-maintenance's middleware does.
    Redirect,
    /// `503 Service Unavailable` with `Retry-After` and a maintenance page.
    Unavailable,
}

/// What the layer does before it has ever read the state (it cannot).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WithoutState {
    /// Turn everyone away (the default): a site that cannot tell whether
    /// it is offline does not serve.
    FailClosed,
    /// Let everyone through.
    FailOpen,
}

/// What the app's own predicate sees of a request.
#[derive(Debug)]
pub struct RequestHead<'a> {
    /// The method.
    pub method: &'a http::Method,
    /// The URI.
    pub uri: &'a http::Uri,
    /// The headers.
    pub headers: &'a http::HeaderMap,
    /// The extensions (the app's own, e.g. an authenticated user).
    pub extensions: &'a http::Extensions,
}

/// The app's own rule for who passes during maintenance (staff users).
pub type Predicate = Arc<dyn Fn(&RequestHead<'_>) -> bool + Send + Sync>;

/// Finds the peer's address in a request's extensions (axum puts it in
/// `ConnectInfo<SocketAddr>`).
pub type PeerAddress = fn(&http::Extensions) -> Option<IpAddr>;

/// The app's answer to "is this session id a logged-in user?", given to
/// [`LayerBuilder::vouch`](super::LayerBuilder::vouch). Any
/// `Fn(&str) -> bool + Send + Sync + 'static` is one.
///
/// Called on a thread of the layer's own, never on the async runtime, so it
/// may block (a query to the app's session store). It is asked at most once
/// per new id while its answer is remembered, and at most
/// [`session_cap`](super::LayerBuilder::session_cap) times per refresh
/// interval, whatever arrives. It must know every session the app issued
/// (read the primary, not a lagging replica): an id it rejects is turned
/// away while PENDING.
pub trait SessionValidator: Send + Sync + 'static {
    /// Whether `id` (the session cookie's value) belongs to a user who is
    /// logged in.
    fn is_logged_in(&self, id: &str) -> bool;
}

impl<F> SessionValidator for F
where
    F: Fn(&str) -> bool + Send + Sync + 'static,
{
    fn is_logged_in(&self, id: &str) -> bool {
        self(id)
    }
}

/// Where the layer's log lines go (one line each, without a trailing
/// newline). The default writes `manage: LINE` to stderr.
pub type LogSink = Arc<dyn Fn(&str) + Send + Sync>;

/// The default cap on new session ids per refresh interval: at most this
/// many are looked at (validator calls, storage checks) and at most this
/// many new session entries are written.
pub const DEFAULT_SESSION_CAP: u32 = 1_000;

/// How many vouched sessions the layer remembers, per unit of the cap.
pub(crate) const KNOWN_PER_CAP: usize = 100;

/// How many rejected ids the layer remembers in each of its two
/// generations, per unit of the cap.
pub(crate) const REJECTED_PER_CAP: usize = 10;

/// The layer's options. Build them with the layer's methods.
#[derive(Clone)]
pub struct LayerOptions {
    pub(crate) cookie_name: CookieName,
    pub(crate) turn_away: TurnAway,
    pub(crate) maintenance_url: SitePath,
    pub(crate) maintenance_page: Option<Arc<str>>,
    pub(crate) read_only_page: Option<Arc<str>>,
    pub(crate) pass_prefixes: Vec<SitePath>,
    pub(crate) api_prefixes: Vec<SitePath>,
    pub(crate) bypass_prefix: SitePath,
    pub(crate) bypass_cookie: CookieName,
    pub(crate) bypass_ttl: Duration,
    pub(crate) signing_key: Arc<[u8]>,
    pub(crate) allow: Vec<IpNet>,
    pub(crate) trusted_proxies: Vec<IpNet>,
    pub(crate) predicate: Option<Predicate>,
    pub(crate) peer_address: PeerAddress,
    pub(crate) without_state: WithoutState,
    pub(crate) touch_every: Duration,
    pub(crate) check_timeout: Duration,
    pub(crate) validator: Option<Arc<dyn SessionValidator>>,
    pub(crate) session_cap: u32,
    pub(crate) log: LogSink,
}

impl std::fmt::Debug for LayerOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LayerOptions")
            .field("cookie_name", &self.cookie_name)
            .field("turn_away", &self.turn_away)
            .field("maintenance_url", &self.maintenance_url)
            .field("pass_prefixes", &self.pass_prefixes)
            .field("api_prefixes", &self.api_prefixes)
            .field("bypass_prefix", &self.bypass_prefix)
            .field("allow", &self.allow)
            .field("trusted_proxies", &self.trusted_proxies)
            .field("without_state", &self.without_state)
            .field("vouch", &self.validator.is_some())
            .field("session_cap", &self.session_cap)
            .finish_non_exhaustive()
    }
}

/// A cookie's name, with whether a `Cookie` pair can carry it, decided
/// once: a name with a `;` in it names none.
#[derive(Debug, Clone)]
pub(crate) struct CookieName {
    pub(crate) text: String,
    pub(crate) usable: bool,
}

impl CookieName {
    /// Cookie name `text`.
    pub fn new(text: impl Into<String>) -> Self {
        let text = text.into();
        let usable = !text.contains(';');
        CookieName { text, usable }
    }
}

impl std::fmt::Display for CookieName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// The default session cookie.
pub const DEFAULT_COOKIE: &str = "sessionid";
/// The default bypass cookie.
pub const DEFAULT_BYPASS_COOKIE: &str = "manage_bypass";

fn peer_from_socket_addr(ext: &http::Extensions) -> Option<IpAddr> {
    ext.get::<std::net::SocketAddr>().map(|a| a.ip())
}

impl LayerOptions {
    pub(crate) fn new(config: &crate::config::Config) -> Self {
        LayerOptions {
            cookie_name: CookieName::new(DEFAULT_COOKIE),
            turn_away: TurnAway::Redirect,
            maintenance_url: config.maintenance_url.clone(),
            maintenance_page: None,
            read_only_page: None,
            pass_prefixes: Vec::new(),
            api_prefixes: Vec::new(),
            bypass_prefix: config.bypass_prefix.clone(),
            bypass_cookie: CookieName::new(DEFAULT_BYPASS_COOKIE),
            bypass_ttl: Duration::from_secs(12 * 3600),
            signing_key: random_key().into(),
            allow: Vec::new(),
            trusted_proxies: Vec::new(),
            predicate: None,
            peer_address: peer_from_socket_addr,
            without_state: WithoutState::FailClosed,
            touch_every: Duration::from_secs(5),
            check_timeout: Duration::from_millis(500),
            validator: None,
            session_cap: DEFAULT_SESSION_CAP,
            log: Arc::new(|line: &str| eprintln!("manage: {line}")),
        }
    }

    /// How many vouched sessions the layer remembers.
    pub(crate) fn max_known(&self) -> usize {
        (self.session_cap as usize).saturating_mul(KNOWN_PER_CAP)
    }
}

/// `path` as a [`SitePath`] for builder method `method`.
///
/// # Panics
///
/// When `path` is not a usable path: a programmer's error in a literal,
/// like tower-http's on an impossible CORS setting. A value read at run
/// time is checked first with [`SitePath::parse`], and the `SitePath`
/// passed on, which cannot fail here.
#[track_caller]
pub(crate) fn site_path<P>(method: &str, path: P) -> SitePath
where
    P: TryInto<SitePath>,
    P::Error: std::fmt::Display,
{
    match path.try_into() {
        Ok(p) => p,
        Err(e) => panic!("MaintenanceLayer::builder().{method}(…): {e}"),
    }
}

/// 32 random bytes from the system, for a per-process signing key.
pub(crate) fn random_key() -> Vec<u8> {
    crate::random::bytes::<32>().to_vec()
}

/// Parses an address or a CIDR range (`10.0.0.0/8`, `::1`, `192.0.2.7`).
pub fn parse_cidr(text: &str) -> Result<IpNet, String> {
    let t = text.trim();
    if let Ok(net) = t.parse::<IpNet>() {
        return Ok(net);
    }
    t.parse::<IpAddr>()
        .map(IpNet::from)
        .map_err(|_| format!("{text:?} is neither an IP address nor a CIDR range like 10.0.0.0/8"))
}
