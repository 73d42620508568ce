//! The cost the `MaintenanceLayer` adds to a request, over an empty inner
//! service called directly: ONLINE (no cookie, a known session, a known
//! session among a browser's other cookies), PENDING with a known session,
//! and a request turned away while OFFLINE. Each is compared with the empty
//! service given the same request: every iteration builds its request and
//! drops the response, as a server does (built outside the timed part, a
//! batch of requests would be freed out of order, which costs the
//! allocator more than the layer does), and the difference is what the
//! layer adds. Once more before a router-like service, which inserts an
//! extension into every request as axum's `Router` does (while ONLINE
//! with nothing announced the layer inserts none itself: its
//! `MaintenanceStatus` comes only with something to show). It ends with
//! one table: each added cost beside its target.
//! Run with `cargo bench -p maintenance-core --features tower --bench layer`.

use std::convert::Infallible;
use std::future::Future;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use criterion::Criterion;
use http::{Request, Response};
use maintenance_core::backend::{Backend, ModeChange, PendingStart};
use maintenance_core::middleware::MaintenanceLayer;
use maintenance_core::mode::Mode;
use maintenance_core::{Config, SystemClock};
use tower::{Layer, Service, service_fn};

const GROUP: &str = "layer";
const EMPTY: &str = "empty service alone";
const EMPTY_COOKIE: &str = "empty service alone, request with a cookie";
const EMPTY_BROWSER: &str = "empty service alone, a browser's cookies";
const ONLINE: &str = "online, no session";
const KNOWN: &str = "online, known session";
const KNOWN_BROWSER: &str = "online, known session, a browser's cookies";
const PENDING: &str = "pending, known session";
const OFFLINE: &str = "offline, turned away";
const EMPTY_ROUTED: &str = "router-like service alone, request with a cookie";
const KNOWN_ROUTED: &str = "online, known session, before a router-like service";

/// The session cookie alone.
const COOKIE: &str = "sessionid=benchsession01";
/// What a browser sends to a typical site: the session among others.
const BROWSER: &str = "csrftoken=Zq3v9XbT1mR8kLp2Ws7Yd4Hc6Nf0Ja5E; _ga=GA1.1.1234567890.1700000000; \
    sessionid=benchsession01; theme=dark; _ga_X1Y2Z3=GS1.1.1700000000.3.1.1700000123.0.0.0";

/// The table's rows: the figure, the layer's benchmark, the empty
/// service's with the same request, and the target (ns added), if any.
const ROWS: &[(&str, &str, &str, Option<f64>)] = &[
    ("ONLINE, no session", ONLINE, EMPTY, None),
    ("ONLINE, known session", KNOWN, EMPTY_COOKIE, Some(100.0)),
    (
        "ONLINE, known session, a browser's cookies",
        KNOWN_BROWSER,
        EMPTY_BROWSER,
        None,
    ),
    (
        "ONLINE, known session, before a router",
        KNOWN_ROUTED,
        EMPTY_ROUTED,
        None,
    ),
    ("PENDING, known session", PENDING, EMPTY_COOKIE, None),
    ("OFFLINE, turned away (303)", OFFLINE, EMPTY, None),
];

/// Polls a future that is ready at once (the empty service's, and the
/// layer's for a known session or an early answer).
/// What the router-like service puts in each request's extensions.
#[derive(Clone)]
struct Routed(#[expect(dead_code, reason = "only ever stored")] usize);

fn now<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
}

fn request(cookie: Option<&str>) -> Request<String> {
    let mut b = Request::builder().uri("/account");
    if let Some(c) = cookie {
        b = b.header("cookie", c);
    }
    b.body(String::new()).expect("a valid request")
}

fn wait_for(layer: &MaintenanceLayer, mode: Mode) {
    while layer.snapshot().is_none_or(|s| s.mode != mode) {
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// One benchmark: `svc` called with a fresh `request(cookie)` each time.
fn bench<S>(
    c: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    svc: &mut S,
    cookie: Option<&str>,
) where
    S: Service<Request<String>, Response = Response<String>, Error = Infallible>,
{
    c.bench_function(name, |b| {
        b.iter(|| now(svc.call(black_box(request(cookie)))).expect("infallible"))
    });
}

/// Where criterion writes its estimates: `$CRITERION_HOME`, else the
/// target directory this bench was built in (`target/release/deps/…`).
fn criterion_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return PathBuf::from(home);
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.parent()?.join("criterion")))
        .unwrap_or_else(|| PathBuf::from("target/criterion"))
}

/// The median, in ns, of benchmark `name` in its last run.
fn median(dir: &Path, name: &str) -> Option<f64> {
    let path = dir.join(GROUP).join(name).join("new/estimates.json");
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    doc["median"]["point_estimate"].as_f64()
}

/// Prints each added cost (the layer's median minus the empty service's
/// with the same request) beside its target, for the benchmarks that ran.
fn table(dir: &Path) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let mut lines = vec![format!(
        "\n{:<44} {:>9} {:>9} {:>9}  target",
        "layer, per request (medians)", "layer", "empty", "added"
    )];
    for (label, with, without, target) in ROWS {
        let (Some(a), Some(b)) = (median(dir, with), median(dir, without)) else {
            continue;
        };
        let added = a - b;
        let verdict = match target {
            Some(t) if added <= *t => format!("≤ {t} ns: met"),
            Some(t) => format!("≤ {t} ns: MISSED"),
            None => "-".to_owned(),
        };
        lines.push(format!(
            "{label:<44} {a:>6.0} ns {b:>6.0} ns {added:>6.0} ns  {verdict}"
        ));
    }
    for line in lines {
        let _ = writeln!(out, "{line}");
    }
}

fn main() {
    let dir = criterion_dir();
    let mut c = Criterion::default()
        .output_directory(&dir)
        .configure_from_args();
    let state = tempfile::tempdir().expect("a temporary directory");
    let mut config = Config::with_state_dir(state.path().join("state"));
    config.refresh_interval = Duration::from_millis(20);
    let backend: Arc<dyn Backend> =
        maintenance_core::backend::open(&config, SystemClock::shared()).expect("open the state");
    let empty = service_fn(|_req: Request<String>| async {
        Ok::<_, Infallible>(Response::new(String::new()))
    });
    // An app's router puts something in every request's extensions, as
    // axum's `Router` does (`OriginalUri`): the extension map is then made
    // by whoever inserts first, the layer (a `MaintenanceStatus` while
    // there is something to show) or the router.
    let routed = service_fn(|mut req: Request<String>| async move {
        let len = req.uri().path().len();
        req.extensions_mut().insert(Routed(len));
        Ok::<_, Infallible>(Response::new(String::new()))
    });
    // The app vouches for its one logged-in user.
    let layer = MaintenanceLayer::builder(&config)
        .touch_every(Duration::from_secs(3600))
        .vouch(|id: &str| id == "benchsession01")
        .build();
    let mut svc = layer.layer(empty);
    let mut bare = empty;
    let mut routed_svc = layer.layer(routed);
    let mut bare_routed = routed;

    let mut g = c.benchmark_group(GROUP);
    bench(&mut g, EMPTY, &mut bare, None);
    bench(&mut g, EMPTY_COOKIE, &mut bare, Some(COOKIE));
    bench(&mut g, EMPTY_BROWSER, &mut bare, Some(BROWSER));
    bench(&mut g, EMPTY_ROUTED, &mut bare_routed, Some(COOKIE));
    bench(&mut g, ONLINE, &mut svc, None);
    // Make the session known (the first request has it vouched for and
    // written).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(svc.call(request(Some(COOKIE))))
        .expect("infallible");
    assert!(
        backend
            .session(&maintenance_core::session::SessionKey::of(
                b"benchsession01"
            ))
            .expect("read the sessions")
            .is_some(),
        "the bench's session was not recorded"
    );
    bench(&mut g, KNOWN, &mut svc, Some(COOKIE));
    bench(&mut g, KNOWN_BROWSER, &mut svc, Some(BROWSER));
    bench(&mut g, KNOWN_ROUTED, &mut routed_svc, Some(COOKIE));
    let waiter = match backend
        .begin_pending(&ModeChange::by_this_process())
        .expect("pending")
    {
        PendingStart::Waiting { waiter, .. } => waiter,
        PendingStart::AlreadyOffline(_) => unreachable!("a fresh site is online"),
    };
    wait_for(&layer, Mode::Pending);
    bench(&mut g, PENDING, &mut svc, Some(COOKIE));
    backend
        .force_offline(&ModeChange::by_this_process())
        .expect("offline");
    drop(waiter);
    wait_for(&layer, Mode::Offline);
    g.bench_function(OFFLINE, |b| {
        b.iter(|| {
            let res = now(svc.call(black_box(request(None)))).expect("infallible");
            assert_eq!(res.status(), 303);
            res
        })
    });
    g.finish();
    c.final_summary();
    table(&dir);
}
