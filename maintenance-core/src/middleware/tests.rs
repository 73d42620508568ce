//! The layer's behaviour in each mode, with an empty inner service: status
//! codes, headers, bodies, and what reaches the app; which sessions count,
//! and the bounds on what the layer writes and remembers.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::header::{CACHE_CONTROL, CONTENT_TYPE, COOKIE, LOCATION, RETRY_AFTER, SET_COOKIE};
use http::{Request, Response, StatusCode};
use tower::{Service, ServiceExt, service_fn};

use super::state::UNWRITTEN_CAP;
use super::*;
use crate::backend::{Backend, ModeChange, PendingStart, WaiterLease};
use crate::clock::SystemClock;
use crate::config::Config;
use crate::mode::RetryAfter;

pub(super) struct TempState {
    _dir: tempfile::TempDir,
    pub(super) config: Config,
    pub(super) backend: Arc<dyn Backend>,
}

pub(super) fn site() -> TempState {
    site_refreshed_every(Duration::from_millis(20))
}

/// A site whose layers refresh every `every`: an hour makes the whole test
/// one refresh interval, so the per-interval cap is never reset under it.
fn site_refreshed_every(every: Duration) -> TempState {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::with_state_dir(dir.path().join("state"));
    config.refresh_interval = every;
    let backend = crate::backend::open(&config, SystemClock::shared()).unwrap();
    TempState {
        _dir: dir,
        config,
        backend,
    }
}

pub(super) type App =
    Maintenance<tower::util::BoxCloneService<Request<String>, Response<String>, Infallible>>;

/// The app: says which mode it sees; `/login/ID` vouches for session ID
/// with a [`VouchedSession`] marker, `/logout/ID` ends it.
pub(super) fn app(layer: &MaintenanceLayer) -> App {
    let inner = service_fn(|req: Request<String>| async move {
        let banner = match req.extensions().get::<MaintenanceStatus>() {
            Some(s) => format!("app sees {}", s.mode),
            None => "app sees nothing".into(),
        };
        let mut res = Response::new(banner);
        let path = req.uri().path();
        if let Some(id) = path.strip_prefix("/login/") {
            res.extensions_mut().insert(VouchedSession(id.into()));
        }
        if let Some(id) = path.strip_prefix("/logout/") {
            res.extensions_mut().insert(EndedSession(id.into()));
        }
        Ok::<_, Infallible>(res)
    });
    layer.layer(tower::util::BoxCloneService::new(inner))
}

fn stored(b: &Arc<dyn Backend>, id: &str) -> bool {
    b.session(&SessionKey::of(id.as_bytes())).unwrap().is_some()
}

/// The keys of every live session in the storage.
fn stored_keys(b: &Arc<dyn Backend>) -> std::collections::BTreeSet<SessionKey> {
    b.sessions().unwrap().into_iter().map(|e| e.key).collect()
}

fn keys_of(ids: &[String]) -> std::collections::BTreeSet<SessionKey> {
    ids.iter().map(|id| SessionKey::of(id.as_bytes())).collect()
}

/// A builder whose requests wait up to a minute for the layer's threads
/// (the app's 500 ms): a hang guard, so that what these tests check does
/// not depend on how fast a loaded machine runs those threads.
pub(super) fn patient(config: &Config) -> LayerBuilder {
    let mut builder = MaintenanceLayer::builder(config);
    builder.options.check_timeout = Duration::from_secs(60);
    builder
}

/// Polls until `done` holds (a hang guard, not a timing assertion).
pub(super) async fn until(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("never {what}");
}

/// A log sink that keeps the lines.
fn log_kept() -> (
    Arc<Mutex<Vec<String>>>,
    impl Fn(&str) + Send + Sync + 'static,
) {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let keep = Arc::clone(&lines);
    (lines, move |line: &str| {
        keep.lock().unwrap().push(line.to_owned())
    })
}

fn lines_with(lines: &Mutex<Vec<String>>, needle: &str) -> usize {
    lines
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains(needle))
        .count()
}

pub(super) async fn get(app: &mut App, req: Request<String>) -> Response<String> {
    app.ready().await.unwrap().call(req).await.unwrap()
}

pub(super) fn req(path: &str) -> Request<String> {
    Request::builder().uri(path).body(String::new()).unwrap()
}

pub(super) fn with_cookie(path: &str, cookie: &str) -> Request<String> {
    Request::builder()
        .uri(path)
        .header(COOKIE, cookie)
        .body(String::new())
        .unwrap()
}

/// Waits until the layer's snapshot shows `mode` (the refresh interval is
/// 20 ms; a hang guard, not a timing assertion).
pub(super) async fn until_mode(layer: &MaintenanceLayer, mode: Mode) {
    for _ in 0..500 {
        if layer.snapshot().is_some_and(|s| s.mode == mode) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the snapshot never showed {mode}");
}

fn pending(b: &Arc<dyn Backend>) -> Box<dyn WaiterLease> {
    match b.begin_pending(&ModeChange::by_this_process()).unwrap() {
        PendingStart::Waiting { waiter, .. } => waiter,
        PendingStart::AlreadyOffline(_) => panic!("offline already"),
    }
}

#[tokio::test]
async fn online_passes_everyone_with_no_status_to_show() {
    let s = site();
    let layer = patient(&s.config).build();
    let res = get(&mut app(&layer), req("/")).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        res.into_body(),
        "app sees nothing",
        "nothing to show while ONLINE"
    );
}

/// The reproduction: a cookie of the right shape that nobody vouched for
/// was written as a live session, held off OFFLINE, and — seen once while
/// ONLINE — kept passing while PENDING.
#[tokio::test]
async fn a_cookie_nobody_vouched_for_is_no_session() {
    let s = site();
    let layer = patient(&s.config).build();
    let mut a = app(&layer);
    let res = get(&mut a, with_cookie("/", "sessionid=forged0123")).await;
    assert_eq!(
        res.status(),
        StatusCode::OK,
        "ONLINE: it passes as a visitor"
    );
    assert!(
        s.backend.sessions().unwrap().is_empty(),
        "a forged id was written as a live session"
    );
    let _w = pending(&s.backend);
    until_mode(&layer, Mode::Pending).await;
    assert_eq!(
        get(&mut a, with_cookie("/", "sessionid=forged0123"))
            .await
            .status(),
        StatusCode::SEE_OTHER,
        "a forged id seen while ONLINE got in while PENDING"
    );
}

/// Without a validator the storage still vouches while PENDING: a session
/// another worker recorded (its login's marker) passes here too.
#[tokio::test]
async fn without_a_validator_a_session_another_worker_recorded_passes_while_pending() {
    let s = site();
    let layer = patient(&s.config).build();
    let mut a = app(&layer);
    let other = patient(&s.config).build();
    assert_eq!(
        get(&mut app(&other), req("/login/bob")).await.status(),
        StatusCode::OK
    );
    let _w = pending(&s.backend);
    until_mode(&layer, Mode::Pending).await;
    let res = get(&mut a, with_cookie("/", "sessionid=bob")).await;
    assert_eq!(res.into_body(), "app sees PENDING");
}

#[tokio::test]
async fn a_vouched_session_is_written_before_the_request_reaches_the_app() {
    let s = site();
    let layer = patient(&s.config).vouch(|id: &str| id == "abc123").build();
    // The app looks at the storage when the request reaches it.
    let backend = Arc::clone(&s.backend);
    let inner = service_fn(move |_req: Request<String>| {
        let seen = if stored(&backend, "abc123") {
            "stored"
        } else {
            "not stored"
        };
        async move { Ok::<_, Infallible>(Response::new(seen.to_owned())) }
    });
    let mut a = layer.layer(tower::util::BoxCloneService::new(inner));
    let res = get(&mut a, with_cookie("/", "sessionid=abc123")).await;
    assert_eq!(res.into_body(), "stored", "written before the app ran");
    layer.handle().end("abc123");
    until("the logout reached the storage", || {
        !stored(&s.backend, "abc123")
    })
    .await;
}

#[tokio::test]
async fn a_forged_cookie_is_not_recorded_and_is_turned_away_while_pending() {
    let s = site();
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    let layer = patient(&s.config)
        .vouch(move |id: &str| {
            counted.fetch_add(1, Ordering::SeqCst);
            id == "alice"
        })
        .build();
    let mut a = app(&layer);
    for cookie in ["sessionid=alice", "sessionid=mallory", "sessionid=mallory"] {
        assert_eq!(
            get(&mut a, with_cookie("/", cookie)).await.status(),
            StatusCode::OK
        );
    }
    assert_eq!(
        stored_keys(&s.backend),
        keys_of(&["alice".into()]),
        "only the vouched session is written"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2, "once per new id");
    let _w = pending(&s.backend);
    until_mode(&layer, Mode::Pending).await;
    assert_eq!(
        get(&mut a, with_cookie("/", "sessionid=alice"))
            .await
            .into_body(),
        "app sees PENDING"
    );
    for cookie in ["sessionid=mallory", "sessionid=eve"] {
        assert_eq!(
            get(&mut a, with_cookie("/", cookie)).await.status(),
            StatusCode::SEE_OTHER,
            "{cookie} while PENDING"
        );
    }
    assert!(!stored(&s.backend, "mallory") && !stored(&s.backend, "eve"));
}

#[tokio::test]
async fn the_login_marker_records_the_session_before_the_response_and_logout_ends_it() {
    let s = site();
    let layer = patient(&s.config).build();
    let mut a = app(&layer);
    let res = get(&mut a, req("/login/s3ss10n")).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(
        res.extensions().get::<VouchedSession>().is_none(),
        "the marker stays inside"
    );
    assert!(stored(&s.backend, "s3ss10n"), "written before the response");
    // Known from then on: it passes while PENDING.
    let w = pending(&s.backend);
    until_mode(&layer, Mode::Pending).await;
    let res = get(&mut a, with_cookie("/", "sessionid=s3ss10n")).await;
    assert_eq!(res.into_body(), "app sees PENDING");
    let res = get(&mut a, with_cookie("/logout/s3ss10n", "sessionid=s3ss10n")).await;
    assert_eq!(res.status(), StatusCode::OK);
    until("the logout reached the storage", || {
        !stored(&s.backend, "s3ss10n")
    })
    .await;
    assert_eq!(
        get(&mut a, with_cookie("/", "sessionid=s3ss10n"))
            .await
            .status(),
        StatusCode::SEE_OTHER,
        "a logged-out session no longer passes"
    );
    drop(w);
    // An exempt login (here the app's predicate, OFFLINE) records nothing:
    // that user browses OFFLINE anyway.
    s.backend
        .force_offline(&ModeChange::by_this_process())
        .unwrap();
    let staff = patient(&s.config)
        .allow_if(|head| head.headers.get("x-staff").is_some())
        .build();
    until_mode(&staff, Mode::Offline).await;
    let login = Request::builder()
        .uri("/login/staff1")
        .header("x-staff", "1")
        .body(String::new())
        .unwrap();
    assert_eq!(get(&mut app(&staff), login).await.status(), StatusCode::OK);
    assert!(
        !stored(&s.backend, "staff1"),
        "an exempt login was recorded"
    );
}

#[tokio::test]
async fn past_the_cap_new_sessions_are_held_by_one_overflow_entry_and_it_is_logged() {
    let s = site_refreshed_every(Duration::from_secs(3600));
    let (lines, sink) = log_kept();
    let layer = patient(&s.config).session_cap(3).log_to(sink).build();
    let mut a = app(&layer);
    let ids: Vec<String> = (0..10).map(|i| format!("user{i}")).collect();
    for id in &ids {
        let res = get(&mut a, req(&format!("/login/{id}"))).await;
        assert_eq!(res.status(), StatusCode::OK, "{id} is never refused");
    }
    let keys = stored_keys(&s.backend);
    assert_eq!(
        keys.len(),
        4,
        "three sessions and one overflow entry: {keys:?}"
    );
    assert!(keys_of(&ids[..3]).is_subset(&keys), "{keys:?}");
    assert!(
        keys_of(&ids[3..]).is_disjoint(&keys),
        "past the cap: {keys:?}"
    );
    assert!(
        ids.iter().all(|id| layer.shared.knows(id)),
        "every vouched user is remembered, and passes while PENDING"
    );
    assert_eq!(lines_with(&lines, "wrote 3 new sessions"), 1, "{lines:?}");
}

#[tokio::test]
async fn sessions_past_the_cap_get_their_own_entries_later_and_the_overflow_entry_ends() {
    let s = site();
    let layer = patient(&s.config)
        .session_cap(2)
        .log_to(|_: &str| {})
        .build();
    let ids: Vec<String> = (0..12).map(|i| format!("burst{i}")).collect();
    // All at once, so that most fall in one interval.
    let logins: Vec<_> = ids
        .iter()
        .map(|id| {
            let mut a = app(&layer);
            let r = req(&format!("/login/{id}"));
            tokio::spawn(async move { get(&mut a, r).await.status() })
        })
        .collect();
    for login in logins {
        assert_eq!(login.await.unwrap(), StatusCode::OK);
    }
    let want = keys_of(&ids);
    until(
        "every session had an entry of its own and the overflow ended",
        || stored_keys(&s.backend) == want,
    )
    .await;
}

#[tokio::test]
async fn rejected_ids_are_remembered_and_a_flood_costs_at_most_the_cap_in_validator_calls() {
    let s = site_refreshed_every(Duration::from_secs(3600));
    let (lines, sink) = log_kept();
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    let layer = patient(&s.config)
        .session_cap(50)
        .log_to(sink)
        .vouch(move |_: &str| {
            counted.fetch_add(1, Ordering::SeqCst);
            false
        })
        .build();
    let mut a = app(&layer);
    for _ in 0..3 {
        let res = get(&mut a, with_cookie("/", "sessionid=forged-same")).await;
        assert_eq!(res.status(), StatusCode::OK);
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "a rejected id is remembered"
    );
    // The flood: distinct forged ids, far past the cap.
    for i in 0..2_000 {
        let res = get(&mut a, with_cookie("/", &format!("sessionid=forged{i}"))).await;
        assert_eq!(res.status(), StatusCode::OK, "ONLINE: everyone passes");
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        50,
        "the cap bounds validator calls"
    );
    assert_eq!(
        lines_with(&lines, "looked at 50 new session ids"),
        1,
        "{lines:?}"
    );
    assert!(s.backend.sessions().unwrap().is_empty(), "nothing written");
    assert!(
        layer.shared.sessions.read().unwrap().is_empty(),
        "nothing remembered as a session"
    );
    assert!(layer.shared.rejected.read().unwrap().len() <= 2 * 10 * 50);
}

#[tokio::test]
async fn the_sessions_the_layer_remembers_are_bounded() {
    let s = site_refreshed_every(Duration::from_secs(3600));
    let layer = patient(&s.config)
        .session_cap(1)
        .log_to(|_: &str| {})
        .build();
    let handle = layer.handle();
    for i in 0..150 {
        handle.touch(&format!("many{i}")).await;
    }
    assert_eq!(
        layer.shared.sessions.read().unwrap().len(),
        100,
        "100 × the cap"
    );
    assert_eq!(
        stored_keys(&s.backend).len(),
        2,
        "one written in this interval, and the overflow entry"
    );
}

#[tokio::test]
async fn hostile_cookies_are_no_session_and_create_nothing() {
    let s = site();
    let layer = MaintenanceLayer::new(&s.config);
    let mut a = app(&layer);
    let long = format!("sessionid={}", "x".repeat(10_000));
    for cookie in [
        "sessionid=../../etc",
        "sessionid=a/b",
        "sessionid=..",
        "sessionid=a%00b",
        long.as_str(),
    ] {
        let res = get(&mut a, with_cookie("/", cookie)).await;
        assert_eq!(res.status(), StatusCode::OK, "{cookie}");
    }
    assert!(s.backend.sessions().unwrap().is_empty());
}

#[tokio::test]
async fn offline_redirects_to_the_maintenance_url_without_a_loop() {
    let s = site();
    s.backend
        .force_offline(&ModeChange::by_this_process())
        .unwrap();
    let layer = MaintenanceLayer::new(&s.config);
    let mut a = app(&layer);
    let res = get(&mut a, req("/account")).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(res.headers()[LOCATION], "/maintenance.html");
    assert_eq!(res.headers()[CACHE_CONTROL], "no-store");
    for path in [
        "/maintenance.html",
        "/maintenance.html?from=/x",
        "/maintenance.html/logo.png",
    ] {
        let res = get(&mut a, req(path)).await;
        assert_eq!(res.status(), StatusCode::OK, "{path} passes");
        assert_eq!(res.into_body(), "app sees OFFLINE");
    }
}

#[tokio::test]
async fn offline_unavailable_says_503_with_retry_after_and_the_message() {
    let s = site();
    let change = ModeChange::by_this_process()
        .message(Some("Upgrading <db>".into()))
        .retry_after(Some(RetryAfter::Seconds(600)));
    s.backend.force_offline(&change).unwrap();
    let layer = MaintenanceLayer::builder(&s.config)
        .unavailable(None)
        .build();
    let res = get(&mut app(&layer), req("/")).await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(res.headers()[RETRY_AFTER], "600");
    assert_eq!(res.headers()[CACHE_CONTROL], "no-store");
    assert!(
        res.headers()[CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(res.into_body().contains("Upgrading &lt;db&gt;"));
}

#[tokio::test]
async fn without_retry_after_the_header_is_absent_never_empty() {
    let s = site();
    s.backend
        .force_offline(&ModeChange::by_this_process())
        .unwrap();
    let layer = MaintenanceLayer::builder(&s.config)
        .unavailable(Some("<p>down</p>".into()))
        .build();
    let res = get(&mut app(&layer), req("/")).await;
    assert!(res.headers().get(RETRY_AFTER).is_none());
    assert_eq!(res.into_body(), "<p>down</p>");
}

#[tokio::test]
async fn api_clients_get_json() {
    let s = site();
    s.backend
        .force_offline(&ModeChange::by_this_process().message(Some("back soon".into())))
        .unwrap();
    let layer = MaintenanceLayer::builder(&s.config)
        .api_prefix("/api/")
        .build();
    let mut a = app(&layer);
    for r in [
        req("/api/items"),
        Request::builder()
            .uri("/x")
            .header("accept", "application/json")
            .body(String::new())
            .unwrap(),
    ] {
        let res = get(&mut a, r).await;
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(res.headers()[CONTENT_TYPE], "application/json");
        let doc: serde_json::Value = serde_json::from_str(res.body()).unwrap();
        assert_eq!(doc["mode"], "OFFLINE");
        assert_eq!(doc["message"], "back soon");
    }
}

#[tokio::test]
async fn pass_prefixes_always_pass() {
    let s = site();
    s.backend
        .force_offline(&ModeChange::by_this_process())
        .unwrap();
    let layer = MaintenanceLayer::builder(&s.config)
        .pass_prefix("/healthz")
        .pass_prefix("/static/")
        .build();
    let mut a = app(&layer);
    assert_eq!(get(&mut a, req("/healthz")).await.status(), StatusCode::OK);
    assert_eq!(
        get(&mut a, req("/static/app.css")).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        get(&mut a, req("/stat")).await.status(),
        StatusCode::SEE_OTHER
    );
}

/// Prefixes match whole segments of the decoded path, and a path that
/// could mean two things passes none: what would slip past a raw
/// `starts_with` is turned away while OFFLINE.
#[tokio::test]
async fn exempt_paths_match_whole_decoded_segments_and_fail_closed() {
    let s = site();
    s.backend
        .force_offline(&ModeChange::by_this_process())
        .unwrap();
    let layer = MaintenanceLayer::builder(&s.config)
        .pass_prefix("/healthz")
        .pass_prefix(crate::site_path::SitePath::parse("/static/").unwrap())
        .api_prefix("/api")
        .build();
    let mut a = app(&layer);
    for path in [
        "/healthz",
        "/healthz/",
        "/healthz/live?verbose=1",
        "//healthz",
        "/health%7a",
        "/static/app.css",
        "/static",
        "/maintenance.html",
        "/maintenance.html?from=%2Faccount",
        "/maintenance%2Ehtml",
    ] {
        let res = get(&mut a, req(path)).await;
        assert_eq!(res.status(), StatusCode::OK, "{path} passes");
        assert_eq!(res.into_body(), "app sees OFFLINE", "{path}");
    }
    for path in [
        "/healthzX",
        "/healthz.php",
        "/healthz;x=1",
        "/healthz/../admin",
        "/healthz/./../admin",
        "/healthz/%2e%2e/admin",
        "/healthz/%2E%2e/admin",
        "/healthz/..;/admin",
        "/healthz%2F..%2Fadmin",
        "/healthz/..%5cadmin",
        "/healthz%00",
        "/healthz/%0d%0aX:1",
        "/healthz/%zz",
        "/healthz/%C0%AE%C0%AE/admin",
        "/%2e%2e/healthz",
        "/staticfiles/app.css",
        "/maintenance.htmlX",
        "/maintenance.html/../admin",
        "/_maintenance/bypass/",
    ] {
        let res = get(&mut a, req(path)).await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER, "{path} is turned away");
        assert_eq!(res.headers()[LOCATION], "/maintenance.html", "{path}");
    }
    // API prefixes by segment too: `/apiary` is a page, not an API.
    let res = get(&mut a, req("/api/items")).await;
    assert_eq!(res.headers()[CONTENT_TYPE], "application/json");
    let res = get(&mut a, req("/apiary")).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
}

#[test]
#[should_panic(expected = "pass_prefix(…): \"/\" is not a usable path on this site: `/` alone")]
fn a_prefix_that_would_pass_everything_is_a_programmers_error() {
    let s = site();
    let _ = MaintenanceLayer::builder(&s.config).pass_prefix("/");
}

#[test]
#[should_panic(expected = "api_prefix(…): \"api/\" is not a usable path on this site")]
fn a_relative_prefix_is_a_programmers_error() {
    let s = site();
    let _ = MaintenanceLayer::builder(&s.config).api_prefix("api/");
}

#[tokio::test]
async fn pending_lets_live_sessions_through_and_turns_new_ones_away() {
    let s = site();
    let layer = patient(&s.config)
        .vouch(|id: &str| ["alice", "bob", "carol"].contains(&id))
        .build();
    let mut a = app(&layer);
    // Alice logged in here; Bob through another worker (only the storage
    // knows); Carol's login is valid but was never live here nor there.
    assert_eq!(
        get(&mut a, with_cookie("/", "sessionid=alice"))
            .await
            .status(),
        StatusCode::OK
    );
    s.backend.touch_session(&SessionKey::of(b"bob")).unwrap();
    let _w = pending(&s.backend);
    until_mode(&layer, Mode::Pending).await;
    let res = get(&mut a, with_cookie("/", "sessionid=alice")).await;
    assert_eq!(res.into_body(), "app sees PENDING", "the banner can show");
    assert_eq!(
        get(&mut a, with_cookie("/", "sessionid=bob"))
            .await
            .status(),
        StatusCode::OK
    );
    for newcomer in ["carol", "mallory"] {
        assert_eq!(
            get(&mut a, with_cookie("/", &format!("sessionid={newcomer}")))
                .await
                .status(),
            StatusCode::SEE_OTHER,
            "{newcomer}"
        );
        assert!(
            !stored(&s.backend, newcomer),
            "nothing written for {newcomer}"
        );
    }
    assert_eq!(get(&mut a, req("/")).await.status(), StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn the_snapshot_sees_a_change_made_elsewhere() {
    let s = site();
    let layer = MaintenanceLayer::new(&s.config);
    let other = crate::backend::open(&s.config, SystemClock::shared()).unwrap();
    other.force_offline(&ModeChange::by_this_process()).unwrap();
    until_mode(&layer, Mode::Offline).await;
    other.go_online(&ModeChange::by_this_process()).unwrap();
    until_mode(&layer, Mode::Online).await;
    let w = pending(&other);
    until_mode(&layer, Mode::Pending).await;
    drop(w);
    until_mode(&layer, Mode::Online).await; // a lapsed PENDING reads ONLINE
}

#[tokio::test]
async fn the_bypass_secret_sets_a_cookie_that_lets_its_holder_browse() {
    let s = site();
    let secret = "let-me-in-123";
    let hash: String = {
        use sha2::Digest;
        sha2::Sha256::digest(secret.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    s.backend
        .force_offline(&ModeChange::by_this_process().bypass(Some(hash)))
        .unwrap();
    let layer = MaintenanceLayer::builder(&s.config)
        .signing_key("app key")
        .build();
    let mut a = app(&layer);
    let wrong = get(&mut a, req("/_maintenance/bypass/guess")).await;
    assert_eq!(wrong.status(), StatusCode::SEE_OTHER);
    assert_eq!(wrong.headers()[LOCATION], "/maintenance.html");
    assert!(wrong.headers().get(SET_COOKIE).is_none());
    let res = get(&mut a, req(&format!("/_maintenance/bypass/{secret}"))).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(res.headers()[LOCATION], "/");
    let set = res.headers()[SET_COOKIE].to_str().unwrap().to_owned();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Lax") && set.contains("Max-Age="),
        "{set}"
    );
    let cookie = set.split(';').next().unwrap().to_owned();
    let res = get(&mut a, with_cookie("/account", &cookie)).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.into_body(), "app sees OFFLINE");
    // A forged or tampered cookie does not pass.
    let forged = format!("{}x", &cookie[..cookie.len() - 1]);
    assert_eq!(
        get(&mut a, with_cookie("/", &forged)).await.status(),
        StatusCode::SEE_OTHER
    );
    // Another app key signs other cookies.
    let other = MaintenanceLayer::builder(&s.config)
        .signing_key("other key")
        .build();
    assert_eq!(
        get(&mut app(&other), with_cookie("/", &cookie))
            .await
            .status(),
        StatusCode::SEE_OTHER
    );
}

fn from(addr: &str, xff: Option<&str>) -> Request<String> {
    let mut b = Request::builder().uri("/");
    if let Some(x) = xff {
        b = b.header("x-forwarded-for", x);
    }
    let mut r = b.body(String::new()).unwrap();
    r.extensions_mut()
        .insert(addr.parse::<SocketAddr>().unwrap());
    r
}

#[tokio::test]
async fn allow_listed_addresses_pass_and_spoofing_does_not() {
    let s = site();
    s.backend
        .force_offline(&ModeChange::by_this_process())
        .unwrap();
    let layer = MaintenanceLayer::builder(&s.config)
        .allow("192.0.2.7")
        .unwrap()
        .allow("10.1.0.0/16")
        .unwrap()
        .trust_proxy("127.0.0.1")
        .unwrap()
        .build();
    let mut a = app(&layer);
    let ok = StatusCode::OK;
    let away = StatusCode::SEE_OTHER;
    assert_eq!(get(&mut a, from("192.0.2.7:5000", None)).await.status(), ok);
    assert_eq!(
        get(&mut a, from("10.1.200.3:5000", None)).await.status(),
        ok,
        "CIDR"
    );
    assert_eq!(
        get(&mut a, from("10.2.0.1:5000", None)).await.status(),
        away
    );
    assert_eq!(
        get(&mut a, from("127.0.0.1:5000", Some("192.0.2.7")))
            .await
            .status(),
        ok,
        "through the proxy"
    );
    assert_eq!(
        get(&mut a, from("198.51.100.1:5000", Some("192.0.2.7")))
            .await
            .status(),
        away,
        "X-Forwarded-For from an untrusted peer is ignored"
    );
    assert_eq!(
        get(
            &mut a,
            from("127.0.0.1:5000", Some("192.0.2.7, 198.51.100.9"))
        )
        .await
        .status(),
        away,
        "the nearest untrusted hop counts, not the leftmost"
    );
    assert_eq!(
        get(&mut a, req("/")).await.status(),
        away,
        "no peer address: fail closed"
    );
}

#[tokio::test]
async fn the_apps_predicate_lets_staff_through() {
    let s = site();
    s.backend
        .force_offline(&ModeChange::by_this_process())
        .unwrap();
    let layer = MaintenanceLayer::builder(&s.config)
        .allow_if(|head| head.headers.get("x-staff").is_some())
        .build();
    let mut a = app(&layer);
    let staff = Request::builder()
        .uri("/")
        .header("x-staff", "1")
        .body(String::new())
        .unwrap();
    assert_eq!(get(&mut a, staff).await.status(), StatusCode::OK);
    assert_eq!(get(&mut a, req("/")).await.status(), StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn without_a_readable_state_it_fails_closed_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, "").unwrap();
    let config = Config::with_state_dir(&file);
    let closed = MaintenanceLayer::builder(&config).unavailable(None).build();
    assert_eq!(
        get(&mut app(&closed), req("/")).await.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    let open = MaintenanceLayer::builder(&config)
        .without_state(WithoutState::FailOpen)
        .build();
    let res = get(&mut app(&open), req("/")).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.into_body(), "app sees nothing");
}

/// A passing request carries the scheduled window once its notice period
/// has begun, and not before; a schedule whose waiting process is gone is
/// no longer carried. While ONLINE the status is there only for the
/// window: before its notice and after it, a request carries none.
#[tokio::test]
async fn the_status_carries_a_scheduled_window_from_its_notice_on() {
    use crate::clock::Timestamp;
    use crate::schedule::ScheduleRecord;
    let s = site();
    let layer = patient(&s.config).build();
    let seen = |layer: &MaintenanceLayer| {
        layer
            .snapshot()
            .and_then(|snap| status_of(Some(&snap)))
            .and_then(|st| st.scheduled)
    };
    let inner = service_fn(|req: Request<String>| async move {
        let status = req.extensions().get::<MaintenanceStatus>();
        let said = match status.map(|s| (s.mode, s.scheduled.as_deref())) {
            Some((mode, Some(w))) => format!(
                "{mode}: maintenance at {}: {}",
                w.at,
                w.message.as_deref().unwrap_or("")
            ),
            Some((mode, None)) => format!("{mode}: a status without a window"),
            None => "nothing scheduled".into(),
        };
        Ok::<_, Infallible>(Response::new(said))
    });
    let mut a = layer.layer(tower::util::BoxCloneService::new(inner));
    let now = std::time::SystemTime::now();
    let at = Timestamp::at(now + Duration::from_secs(7200));
    // Told only from an hour before: not yet.
    let mut later =
        ScheduleRecord::by_this_process(at, Timestamp::at(now + Duration::from_secs(3600)));
    later.message = Some("Upgrading".into());
    let lease = s.backend.begin_schedule(&later).unwrap();
    // Two new snapshots later, one was read wholly after the schedule was
    // set (each snapshot is a new allocation; kept alive, so never reused).
    for _ in 0..2 {
        let before = layer.snapshot().unwrap();
        until("a refresh", || {
            !Arc::ptr_eq(&layer.snapshot().unwrap(), &before)
        })
        .await;
    }
    assert_eq!(seen(&layer), None, "told before its notice period");
    assert_eq!(get(&mut a, req("/")).await.into_body(), "nothing scheduled");
    drop(lease);
    // Told from now.
    let mut told = ScheduleRecord::by_this_process(at, Timestamp::at(now));
    told.message = Some("Upgrading".into());
    let lease = s.backend.begin_schedule(&told).unwrap();
    until("the schedule carried", || seen(&layer).is_some()).await;
    let res = get(&mut a, req("/")).await;
    assert_eq!(
        res.into_body(),
        format!("ONLINE: maintenance at {at}: Upgrading")
    );
    assert_eq!(layer.snapshot().unwrap().mode, Mode::Online);
    // Its waiting process gone: no longer carried.
    drop(lease);
    until("the schedule gone", || seen(&layer).is_none()).await;
    assert_eq!(get(&mut a, req("/")).await.into_body(), "nothing scheduled");
}

/// The layer's clock, read after its thread handled every job sent before
/// (the thread's clock moves whenever it wakes).
async fn layer_secs(layer: &MaintenanceLayer) -> u64 {
    use super::vouch::Registry;
    let (tx, rx) = tokio::sync::oneshot::channel();
    layer.shared.acknowledge(tx);
    rx.await.unwrap();
    layer.shared.now_secs()
}

/// Until the layer's clock reads `secs` (a hang guard, not a timing
/// assertion: the thread is woken to read it).
async fn until_layer_secs(layer: &MaintenanceLayer, secs: u64) {
    for _ in 0..2000 {
        if layer_secs(layer).await >= secs {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the layer's clock never reached {secs} s");
}

#[test]
fn a_repeat_touch_goes_at_once_within_the_batchs_lateness_of_the_timeout() {
    // touch_every, then the thread's wake-up (a refresh), then the hot
    // path's whole seconds.
    assert_eq!(
        state::lapse_secs(Duration::from_secs(5), Duration::from_millis(250)),
        8
    );
    assert_eq!(state::lapse_secs(Duration::from_secs(5), Duration::ZERO), 7);
    assert_eq!(state::lapse_secs(Duration::ZERO, Duration::ZERO), 2);
}

/// A repeat touch the batch would write only after the session's stored
/// entry could expire is written at once, as a new session's is, so that
/// a waiter never sees a live user's session lapse. (With an hour between
/// refreshes every repeat touch is such a one; without the rule it would
/// wait for the batch.)
#[tokio::test]
async fn a_repeat_touch_the_batch_would_write_too_late_is_written_at_once() {
    let s = site_refreshed_every(Duration::from_secs(3600));
    let layer = patient(&s.config)
        .touch_every(Duration::from_secs(1))
        .build();
    let mut a = app(&layer);
    assert_eq!(
        get(&mut a, req("/login/alice")).await.status(),
        StatusCode::OK
    );
    let first = s
        .backend
        .session(&SessionKey::of(b"alice"))
        .unwrap()
        .expect("written at login");
    // Past one five-second bucket of the file backend, so that a new
    // write shows.
    let t0 = layer_secs(&layer).await;
    until_layer_secs(&layer, t0 + 6).await;
    let res = get(&mut a, with_cookie("/", "sessionid=alice")).await;
    assert_eq!(res.status(), StatusCode::OK);
    // Every job sent before this one is done.
    layer_secs(&layer).await;
    let again = s
        .backend
        .session(&SessionKey::of(b"alice"))
        .unwrap()
        .expect("live");
    assert!(
        again.expires_at > first.expires_at,
        "written at once: {first:?}, then {again:?}"
    );
}

/// One web layer writes many sessions' repeat touches in one statement on
/// PostgreSQL, not one per session: every row the batch wrote carries one
/// transaction's id. New sessions were each written at once.
#[cfg(feature = "postgres")]
#[tokio::test]
async fn repeat_touches_of_many_sessions_reach_postgres_in_one_statement() {
    use crate::backend::postgres::PostgresBackend;
    use std::collections::BTreeSet;
    if !crate::conformance::postgres_available() {
        return;
    }
    const N: usize = 100;
    let mut config = crate::conformance::postgres_test_config("manage_test");
    config.refresh_interval = Duration::from_millis(20);
    let backend = PostgresBackend::open(&config, SystemClock::shared()).unwrap();
    let layer = patient(&config).touch_every(Duration::from_secs(2)).build();
    let mut a = app(&layer);
    let ids: Vec<String> = (0..N).map(|i| format!("user{i:03}")).collect();
    let keys: Vec<SessionKey> = ids.iter().map(|id| SessionKey::of(id.as_bytes())).collect();
    for id in &ids {
        assert_eq!(
            get(&mut a, req(&format!("/login/{id}"))).await.status(),
            StatusCode::OK
        );
    }
    let logins = backend.session_writers(&keys);
    assert!(logins.iter().all(Option::is_some), "each written at login");
    assert_eq!(
        logins.iter().collect::<BTreeSet<_>>().len(),
        N,
        "each new session written at once, by itself"
    );
    // Every session due to be written again (two seconds on), then one
    // request each.
    let t0 = layer_secs(&layer).await;
    until_layer_secs(&layer, t0 + 2).await;
    for id in &ids {
        let res = get(&mut a, with_cookie("/", &format!("sessionid={id}"))).await;
        assert_eq!(res.status(), StatusCode::OK);
    }
    let mut writers = Vec::new();
    until("every session's repeat touch was written", || {
        writers = backend.session_writers(&keys);
        writers.iter().zip(&logins).all(|(now, then)| now != then)
    })
    .await;
    let distinct: BTreeSet<_> = writers.iter().collect();
    assert_eq!(
        distinct.len(),
        1,
        "{N} repeat touches took {} statements",
        distinct.len()
    );
}

/// Push latency on PostgreSQL: the time from a mode change's commit (the
/// write's return, in another backend) to the layer's snapshot showing it,
/// with a refresh interval of an hour (so only the push can tell it), over
/// 60 changes; prints the median and p99. A measurement, not a check:
/// `cargo nextest run -p maintenance-core --all-features --run-ignored only
/// push_latency --no-capture`.
#[cfg(feature = "postgres")]
#[test]
#[ignore = "a measurement: prints the push latency"]
fn push_latency_from_commit_to_snapshot() {
    use crate::backend::postgres::PostgresBackend;
    if !crate::conformance::postgres_available() {
        return;
    }
    let mut config = crate::conformance::postgres_test_config("manage_test");
    config.refresh_interval = Duration::from_secs(3600);
    config.max_stale = Duration::from_secs(7200);
    let writer = PostgresBackend::open(&config, SystemClock::shared()).unwrap();
    let layer = patient(&config).build();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let wait_for = |mode: Mode| {
        while !layer.snapshot().is_some_and(|s| s.mode == mode) {
            assert!(std::time::Instant::now() < deadline, "never {mode}");
            std::hint::spin_loop();
        }
    };
    wait_for(Mode::Online);
    // The first four changes warm up (the LISTEN connection is made after
    // the layer's first read): not counted.
    let mut times = Vec::new();
    for i in 0..64 {
        let (mode, t0) = if i % 2 == 0 {
            writer
                .force_offline(&ModeChange::by_this_process())
                .unwrap();
            (Mode::Offline, std::time::Instant::now())
        } else {
            writer.go_online(&ModeChange::by_this_process()).unwrap();
            (Mode::Online, std::time::Instant::now())
        };
        wait_for(mode);
        if i >= 4 {
            times.push(t0.elapsed());
        }
    }
    times.sort();
    let p = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
    eprintln!(
        "push latency, commit to snapshot, {} changes: median {:?}, p99 {:?}, max {:?}",
        times.len(),
        p(0.5),
        p(0.99),
        times[times.len() - 1]
    );
}

/// Makes a directory immutable (`chattr +i`: no entry can be made in it,
/// whoever asks, root too) until dropped.
struct Immutable(std::path::PathBuf);

impl Immutable {
    /// `None`, saying why, where the flag cannot be set (not root, or a
    /// file system without it): the caller skips.
    fn set(dir: &std::path::Path) -> Option<Immutable> {
        let out = std::process::Command::new("chattr")
            .arg("+i")
            .arg(dir)
            .output();
        match out {
            Ok(out) if out.status.success() => Some(Immutable(dir.to_owned())),
            Ok(out) => {
                eprintln!(
                    "skipped: chattr +i {} (needs CAP_LINUX_IMMUTABLE and a file system with the \
                     flag): {}",
                    dir.display(),
                    String::from_utf8_lossy(&out.stderr)
                );
                None
            }
            Err(e) => {
                eprintln!("skipped: cannot run chattr: {e}");
                None
            }
        }
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        // Not asserted: a panic here while a failed test unwinds would
        // abort the run.
        let _ = std::process::Command::new("chattr")
            .arg("-i")
            .arg(&self.0)
            .status();
    }
}

/// While the sessions cannot be written (and the mode still reads), the
/// layer lets new sessions in and keeps UNWRITTEN_CAP of them in memory,
/// says once that its queue is full, counts the rest, and writes the queued
/// ones once the state takes writes again.
#[tokio::test]
async fn sessions_let_in_while_the_state_cannot_be_written_are_queued_up_to_the_cap_and_written_after()
 {
    let s = site_refreshed_every(Duration::from_secs(1));
    let (lines, sink) = log_kept();
    let layer = patient(&s.config)
        .session_cap(1_000_000)
        .log_to(sink)
        .build();
    let mut a = app(&layer);
    until_mode(&layer, Mode::Online).await;
    let past = 7;
    let ids: Vec<String> = (0..UNWRITTEN_CAP + past).map(|i| format!("q{i}")).collect();
    {
        let Some(_frozen) = Immutable::set(&s.config.state_dir.join("sessions")) else {
            return;
        };
        for id in &ids {
            let res = get(&mut a, req(&format!("/login/{id}"))).await;
            assert_eq!(res.status(), StatusCode::OK, "{id} is let in");
        }
        assert!(
            stored_keys(&s.backend).is_empty(),
            "nothing could be written"
        );
        assert_eq!(
            lines_with(&lines, "cannot write a new session"),
            1,
            "{:?}",
            lines.lock().unwrap()
        );
        assert_eq!(
            lines_with(&lines, "queue of unwritten sessions is full (10000)"),
            1,
            "{:?}",
            lines.lock().unwrap()
        );
        assert_eq!(lines_with(&lines, "wrote the"), 0, "not yet written");
    }
    let done = "wrote the 10000 new sessions it let in while the state could not be written, \
                and dropped 7 past its queue's bound (10000)";
    for _ in 0..6000 {
        if lines_with(&lines, "wrote the") > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(lines_with(&lines, done), 1, "{:?}", lines.lock().unwrap());
    let keys = stored_keys(&s.backend);
    assert_eq!(keys.len(), UNWRITTEN_CAP, "the queued ones, no more");
    assert!(keys_of(&ids[..UNWRITTEN_CAP]).is_subset(&keys));
    assert!(keys_of(&ids[UNWRITTEN_CAP..]).is_disjoint(&keys));
    assert!(stored(&s.backend, "q0") && stored(&s.backend, &format!("q{}", UNWRITTEN_CAP - 1)));
}
