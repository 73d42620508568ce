//! `mysite runserver`: the site's axum app behind `MaintenanceLayer`.
//! Untracked: the site must never hold off its own maintenance.
//!
//! - `POST /login` starts a session (cookie `sessionid`), `POST /logout`
//!   ends it; the app keeps its logins in memory and vouches for them to
//!   the layer — the login and logout responses carry the layer's
//!   markers, and its validator asks the same store about any other
//!   cookie, so a forged one is no session;
//! - `GET /` shows a page, with a banner while the site is going offline
//!   or read-only, and one during a scheduled window's notice
//!   ("maintenance at …", "read-only at …"), and the newest notes (the
//!   last [`NOTES_KEPT`]; older ones are dropped, so a busy site's page
//!   and memory stay bounded);
//!   its forms (log in, log out, leave a note) are hidden while writes are
//!   refused (READONLY), and the banner says why — a form sent anyway gets
//!   the layer's 503;
//! - `POST /notes` leaves a note (form field `text`). For the tests, a
//!   note with `hold=NAME` is saved only once the file `NAME` exists in
//!   `$MYSITE_HOLD_DIR` (when that is set): a write that stays in flight
//!   as long as a test wants;
//! - `/maintenance.html` is the maintenance page, `/healthz` always
//!   answers, `/api/…` answers JSON.

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{ConnectInfo, Extension, Form};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use maintenance_core::clock::format_age;
use maintenance_core::command::{Context, ManageCommand, StopToken, register};
use maintenance_core::middleware::{
    EndedSession, MaintenanceHandle, MaintenanceLayer, MaintenanceStatus, VouchedSession,
};
use maintenance_core::mode::Mode;
use maintenance_core::policy::{Policy, Tracking};
use maintenance_core::schedule::local_time;
use maintenance_core::{Config, anyhow, clap};

/// Serve the site's web app.
#[derive(Debug, clap::Args)]
pub struct Runserver {
    /// The address to listen on.
    #[arg(long, default_value = "127.0.0.1:8000")]
    addr: SocketAddr,
    /// Serve the same app without the maintenance layer (to measure its
    /// cost).
    #[arg(long)]
    without_maintenance: bool,
    /// Turn requests away with a 503 page instead of a redirect.
    #[arg(long)]
    unavailable: bool,
    /// Let this address or CIDR range through during maintenance
    /// (repeatable).
    #[arg(long, value_name = "CIDR")]
    allow: Vec<String>,
    /// Trust `X-Forwarded-For` from this proxy (repeatable).
    #[arg(long, value_name = "CIDR")]
    trust_proxy: Vec<String>,
    /// The layer's session cap: new session ids it looks at, and new
    /// sessions it writes, per refresh interval.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    session_cap: Option<u32>,
}

/// The app's own logins: the session ids it issued and that have not
/// logged out. In memory, so a restart logs everyone out.
#[derive(Debug, Clone, Default)]
pub struct Logins(Arc<Mutex<HashSet<String>>>);

impl Logins {
    fn ids(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `id` is a logged-in session.
    pub fn contains(&self, id: &str) -> bool {
        self.ids().contains(id)
    }
}

/// How many notes the home page keeps and shows: the newest.
pub const NOTES_KEPT: usize = 20;

/// The notes left on the home page, in memory: the newest [`NOTES_KEPT`].
#[derive(Debug, Clone, Default)]
pub struct Notes(Arc<Mutex<VecDeque<String>>>);

impl Notes {
    fn all(&self) -> std::sync::MutexGuard<'_, VecDeque<String>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps `note`, dropping the oldest past [`NOTES_KEPT`].
    fn push(&self, note: String) {
        let mut notes = self.all();
        if notes.len() >= NOTES_KEPT {
            notes.pop_front();
        }
        notes.push_back(note);
    }
}

/// The form of `POST /notes`.
#[derive(Debug, Default, serde::Deserialize)]
pub struct NoteForm {
    /// The note.
    #[serde(default)]
    text: String,
    /// For the tests: save it only once `$MYSITE_HOLD_DIR/<hold>` exists.
    #[serde(default)]
    hold: Option<String>,
}

impl ManageCommand for Runserver {
    const NAME: &'static str = "runserver";
    const POLICY: Policy = Policy::DEFAULT.tracking(Tracking::Untracked);

    fn run(self, ctx: &mut Context<'_>) -> anyhow::Result<()> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        let config = ctx.config().clone();
        let stop = ctx.stop_token().clone();
        let addr = runtime.block_on(serve(self, config, stop, ctx))?;
        writeln!(ctx.out(), "stopped serving {addr}")?;
        Ok(())
    }
}
register!(Runserver);

/// The app with its layer, as `runserver` serves it.
pub fn app(
    config: &Config,
    args: &Runserver,
) -> anyhow::Result<(Router, Option<MaintenanceHandle>)> {
    let logins = Logins::default();
    let routes = Router::new()
        .route("/", get(home))
        .route("/login", post(login))
        .route("/logout", post(logout))
        .route("/notes", post(leave_note))
        .route("/maintenance.html", get(maintenance_page))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/api/status", get(api_status))
        .layer(Extension(logins.clone()))
        .layer(Extension(Notes::default()));
    if args.without_maintenance {
        return Ok((routes, None));
    }
    let mut builder = MaintenanceLayer::builder(config)
        .pass_prefix("/healthz")
        .pass_prefix("/static/")
        .api_prefix("/api/")
        .peer_address(|ext| ext.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip()))
        // A cookie this app did not issue is no session.
        .vouch(move |id: &str| logins.contains(id));
    if let Some(cap) = args.session_cap {
        builder = builder.session_cap(cap);
    }
    if let Some(key) = std::env::var_os("MYSITE_SECRET_KEY") {
        builder = builder.signing_key(key.to_string_lossy().as_bytes());
    }
    if args.unavailable {
        builder = builder.unavailable(None);
    }
    for cidr in &args.allow {
        builder = builder.allow(cidr).map_err(anyhow::Error::msg)?;
    }
    for cidr in &args.trust_proxy {
        builder = builder.trust_proxy(cidr).map_err(anyhow::Error::msg)?;
    }
    let layer = builder.build();
    let handle = layer.handle();
    Ok((routes.layer(layer), Some(handle)))
}

async fn serve(
    args: Runserver,
    config: Config,
    stop: StopToken,
    ctx: &mut Context<'_>,
) -> anyhow::Result<SocketAddr> {
    let (app, _handle) = app(&config, &args)?;
    let listener = tokio::net::TcpListener::bind(args.addr).await?;
    let addr = listener.local_addr()?;
    writeln!(ctx.out(), "serving http://{addr}/")?;
    ctx.out().flush()?;
    let shutdown = async move {
        // The runner's first Ctrl-C or SIGTERM sets the stop request.
        let _ = tokio::task::spawn_blocking(
            move || while !stop.wait_timeout(Duration::from_secs(3600)) {},
        )
        .await;
    };
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await?;
    Ok(addr)
}

fn session_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|p| p.trim().split_once('='))
        .find(|(k, _)| *k == "sessionid")
        .map(|(_, v)| v.to_owned())
}

async fn home(
    status: Option<Extension<MaintenanceStatus>>,
    Extension(logins): Extension<Logins>,
    Extension(notes): Extension<Notes>,
    headers: HeaderMap,
) -> Html<String> {
    let message = |s: &MaintenanceStatus| {
        s.message
            .as_deref()
            .map(|m| format!(" {}", escape(m)))
            .unwrap_or_default()
    };
    let status = status.map(|s| s.0);
    let banner = match &status {
        Some(s) if s.writes_refused && s.mode == Mode::Pending => format!(
            "<p id=\"banner\">The site is read-only and going offline soon for maintenance: \
             changes cannot be saved, so the forms are hidden.{}</p>\n",
            message(s)
        ),
        Some(s) if s.writes_refused => format!(
            "<p id=\"banner\">The site is read-only for maintenance: you can read everything, \
             but changes cannot be saved now, so the forms are hidden.{}</p>\n",
            message(s)
        ),
        Some(s) if s.mode == Mode::Pending => format!(
            "<p id=\"banner\">The site is going offline soon for maintenance.{}</p>\n",
            message(s)
        ),
        Some(s) if s.mode == Mode::Offline => {
            "<p id=\"banner\">You are browsing during maintenance.</p>\n".into()
        }
        Some(s) => match s.scheduled.as_deref() {
            Some(w) if w.read_only => format!(
                "<p id=\"banner\">The site goes read-only for maintenance at {} (in {}): you \
                 can read it then, but not change anything.{}</p>\n",
                local_time(w.at),
                format_age(w.left(std::time::SystemTime::now())),
                w.message
                    .as_deref()
                    .map(|m| format!(" {}", escape(m)))
                    .unwrap_or_default()
            ),
            Some(w) => format!(
                "<p id=\"banner\">Maintenance is scheduled at {} (in {}).{}</p>\n",
                local_time(w.at),
                format_age(w.left(std::time::SystemTime::now())),
                w.message
                    .as_deref()
                    .map(|m| format!(" {}", escape(m)))
                    .unwrap_or_default()
            ),
            None => String::new(),
        },
        None => String::new(),
    };
    let forms = !status.as_ref().is_some_and(|s| s.writes_refused);
    let logged_in = session_id(&headers).is_some_and(|id| logins.contains(&id));
    let who = match (logged_in, forms) {
        (true, true) => {
            "<p id=\"who\">You are logged in.</p>\n<form method=\"post\" action=\"/logout\"><button id=\"logout\">Log out</button></form>\n"
        }
        (true, false) => "<p id=\"who\">You are logged in.</p>\n",
        (false, true) => {
            "<p id=\"who\">You are not logged in.</p>\n<form method=\"post\" action=\"/login\"><button id=\"login\">Log in</button></form>\n"
        }
        (false, false) => "<p id=\"who\">You are not logged in.</p>\n",
    };
    let list: String = notes
        .all()
        .iter()
        .map(|n| format!("<li class=\"note\">{}</li>", escape(n)))
        .collect();
    let note_form = if forms {
        "<form method=\"post\" action=\"/notes\" id=\"note-form\"><input name=\"text\" id=\"note-text\"><button id=\"note\">Leave a note</button></form>\n"
    } else {
        ""
    };
    Html(format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>mysite</title></head>\n<body>\n{banner}<h1>mysite</h1>\n{who}<ul id=\"notes\">{list}</ul>\n{note_form}</body></html>\n"
    ))
}

async fn leave_note(Extension(notes): Extension<Notes>, Form(form): Form<NoteForm>) -> Response {
    if let Some(hold) = form.hold.as_deref() {
        hold_until_released(hold).await;
    }
    notes.push(form.text);
    (StatusCode::SEE_OTHER, [(header::LOCATION, "/")]).into_response()
}

/// For the tests (`hold=NAME`): creates `$MYSITE_HOLD_DIR/NAME.held`, then
/// waits until `$MYSITE_HOLD_DIR/NAME` exists, at most a minute; does
/// nothing without `$MYSITE_HOLD_DIR` or for a name that is not plain
/// letters, digits and `-`.
async fn hold_until_released(name: &str) {
    let Some(dir) = std::env::var_os("MYSITE_HOLD_DIR") else {
        return;
    };
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return;
    }
    let dir = std::path::Path::new(&dir);
    // Says it is held, for the test waiting to know the write is in flight.
    let _ = std::fs::write(dir.join(format!("{name}.held")), "");
    let released = dir.join(name);
    for _ in 0..6000 {
        if released.exists() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn new_session_id() -> String {
    maintenance_core::random::hex::<16>()
}

async fn login(Extension(logins): Extension<Logins>) -> Response {
    let id = new_session_id();
    logins.ids().insert(id.clone());
    (
        StatusCode::SEE_OTHER,
        [
            (
                header::SET_COOKIE,
                format!("sessionid={id}; Path=/; HttpOnly; SameSite=Lax"),
            ),
            (header::LOCATION, "/".to_owned()),
        ],
        // The layer records the session before this response goes out, so
        // a waiting `offline on` counts the user (unless the login passed
        // only as exempt: allow-listed, bypass cookie).
        Extension(VouchedSession(id)),
    )
        .into_response()
}

async fn logout(Extension(logins): Extension<Logins>, headers: HeaderMap) -> Response {
    let mut response = (
        StatusCode::SEE_OTHER,
        [
            (
                header::SET_COOKIE,
                "sessionid=; Path=/; Max-Age=0".to_owned(),
            ),
            (header::LOCATION, "/".to_owned()),
        ],
    )
        .into_response();
    if let Some(id) = session_id(&headers).filter(|id| logins.ids().remove(id)) {
        // The session stops holding off maintenance at once.
        response.extensions_mut().insert(EndedSession(id));
    }
    response
}

async fn maintenance_page() -> Html<&'static str> {
    Html(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Maintenance</title></head>\n\
         <body><h1 id=\"maintenance\">Down for maintenance</h1><p>We will be back soon.</p></body></html>\n",
    )
}

async fn api_status(status: Option<Extension<MaintenanceStatus>>) -> Json<serde_json::Value> {
    let mode = status
        .as_ref()
        .map(|s| s.0.mode.to_string())
        .unwrap_or_else(|| "ONLINE".into());
    let scheduled = status
        .as_ref()
        .and_then(|s| s.0.scheduled.as_deref())
        .map(|w| serde_json::json!({ "at": w.at, "message": w.message }));
    Json(serde_json::json!({ "ok": true, "mode": mode, "scheduled": scheduled }))
}
