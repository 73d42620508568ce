//! The layer's behaviour in each mode, with an empty inner service: status
//! codes, headers, bodies, and what reaches the app.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::header::{CACHE_CONTROL, CONTENT_TYPE, COOKIE, LOCATION, RETRY_AFTER, SET_COOKIE};
use http::{Request, Response, StatusCode};
use tower::{Service, ServiceExt, service_fn};

use super::*;
use crate::backend::{Backend, ModeChange, PendingStart, WaiterLease};
use crate::clock::SystemClock;
use crate::config::Config;
use crate::mode::RetryAfter;

struct Site {
    _dir: tempfile::TempDir,
    config: Config,
    backend: Arc<dyn Backend>,
}

fn site() -> Site {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::with_state_dir(dir.path().join("state"));
    config.refresh_interval = Duration::from_millis(20);
    let backend = crate::backend::open(&config, SystemClock::shared()).unwrap();
    Site {
        _dir: dir,
        config,
        backend,
    }
}

type App = Maintenance<tower::util::BoxCloneService<Request<String>, Response<String>, Infallible>>;

fn app(layer: &MaintenanceLayer) -> App {
    let inner = service_fn(|req: Request<String>| async move {
        let banner = match req.extensions().get::<MaintenanceStatus>() {
            Some(s) => format!("app sees {}", s.mode),
            None => "app sees nothing".into(),
        };
        Ok::<_, Infallible>(Response::new(banner))
    });
    layer.layer(tower::util::BoxCloneService::new(inner))
}

async fn get(app: &mut App, req: Request<String>) -> Response<String> {
    app.ready().await.unwrap().call(req).await.unwrap()
}

fn req(path: &str) -> Request<String> {
    Request::builder().uri(path).body(String::new()).unwrap()
}

fn with_cookie(path: &str, cookie: &str) -> Request<String> {
    Request::builder()
        .uri(path)
        .header(COOKIE, cookie)
        .body(String::new())
        .unwrap()
}

/// Waits until the layer's snapshot shows `mode` (the refresh interval is
/// 20 ms; a hang guard, not a timing assertion).
async fn until_mode(layer: &MaintenanceLayer, mode: Mode) {
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
async fn online_passes_everyone_with_the_status() {
    let s = site();
    let layer = MaintenanceLayer::new(&s.config);
    let res = get(&mut app(&layer), req("/")).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.into_body(), "app sees ONLINE");
}

#[tokio::test]
async fn a_new_session_is_written_before_the_request_reaches_the_app() {
    let s = site();
    let layer = MaintenanceLayer::new(&s.config);
    let res = get(&mut app(&layer), with_cookie("/", "sessionid=abc123")).await;
    assert_eq!(res.status(), StatusCode::OK);
    let live = s.backend.session(&SessionKey::of(b"abc123")).unwrap();
    assert!(live.is_some(), "written at once");
    layer.handle().end("abc123");
    for _ in 0..500 {
        if s.backend
            .session(&SessionKey::of(b"abc123"))
            .unwrap()
            .is_none()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("logout never reached the storage");
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
    let layer = MaintenanceLayer::new(&s.config);
    let mut a = app(&layer);
    // Alice logged in here; Bob through another worker (only the storage knows).
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
    assert_eq!(
        get(&mut a, with_cookie("/", "sessionid=mallory"))
            .await
            .status(),
        StatusCode::SEE_OTHER
    );
    assert_eq!(get(&mut a, req("/")).await.status(), StatusCode::SEE_OTHER);
    assert!(
        s.backend
            .session(&SessionKey::of(b"mallory"))
            .unwrap()
            .is_none(),
        "nothing written for a newcomer"
    );
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
