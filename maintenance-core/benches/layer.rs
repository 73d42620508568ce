//! The cost the `MaintenanceLayer` adds to a request, over an empty inner
//! service called directly: ONLINE (no cookie, and a known session),
//! PENDING with a known session, and a request turned away while OFFLINE.
//! Compare each with the empty service given the same request (with or
//! without the cookie header).
//! Run with `cargo bench -p maintenance-core --features tower --bench layer`.

use std::convert::Infallible;
use std::future::Future;
use std::hint::black_box;
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

/// Polls a future that is ready at once (the empty service's, and the
/// layer's for a known session or an early answer).
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

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut config = Config::with_state_dir(dir.path().join("state"));
    config.refresh_interval = Duration::from_millis(20);
    let backend: Arc<dyn Backend> =
        maintenance_core::backend::open(&config, SystemClock::shared()).expect("open the state");
    let empty = service_fn(|_req: Request<String>| async {
        Ok::<_, Infallible>(Response::new(String::new()))
    });
    // The app vouches for its one logged-in user.
    let layer = MaintenanceLayer::builder(&config)
        .touch_every(Duration::from_secs(3600))
        .vouch(|id: &str| id == "benchsession01")
        .build();
    let mut svc = layer.layer(empty);
    let mut bare = empty;

    let mut g = c.benchmark_group("layer");
    g.bench_function("empty service alone", |b| {
        b.iter(|| now(bare.call(black_box(request(None)))).expect("infallible"))
    });
    g.bench_function("empty service alone, request with a cookie", |b| {
        b.iter(|| {
            now(bare.call(black_box(request(Some("sessionid=benchsession01")))))
                .expect("infallible")
        })
    });
    g.bench_function("online, no session", |b| {
        b.iter(|| now(svc.call(black_box(request(None)))).expect("infallible"))
    });
    // Make the session known (the first request has it vouched for and
    // written).
    let known = Some("sessionid=benchsession01");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(svc.call(request(known))).expect("infallible");
    assert!(
        backend
            .session(&maintenance_core::session::SessionKey::of(
                b"benchsession01"
            ))
            .expect("read the sessions")
            .is_some(),
        "the bench's session was not recorded"
    );
    g.bench_function("online, known session", |b| {
        b.iter(|| now(svc.call(black_box(request(known)))).expect("infallible"))
    });
    let waiter = match backend
        .begin_pending(&ModeChange::by_this_process())
        .expect("pending")
    {
        PendingStart::Waiting { waiter, .. } => waiter,
        PendingStart::AlreadyOffline(_) => unreachable!("a fresh site is online"),
    };
    wait_for(&layer, Mode::Pending);
    g.bench_function("pending, known session", |b| {
        b.iter(|| now(svc.call(black_box(request(known)))).expect("infallible"))
    });
    backend
        .force_offline(&ModeChange::by_this_process())
        .expect("offline");
    drop(waiter);
    wait_for(&layer, Mode::Offline);
    g.bench_function("offline, turned away", |b| {
        b.iter(|| {
            let res = now(svc.call(black_box(request(None)))).expect("infallible");
            assert_eq!(res.status(), 303);
            res
        })
    });
    g.finish();
    c.final_summary();
}
