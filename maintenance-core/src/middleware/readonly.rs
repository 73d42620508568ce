//! The read-only tier in the layer: while writes are refused
//! (READONLY_PENDING, READONLY, a PENDING begun from READONLY), an unsafe
//! request — any method but GET, HEAD and OPTIONS — gets a 503 with
//! `Retry-After` and the operator's message (JSON for API clients), for
//! everyone: the bypass cookie, the allow-list and the app's predicate let
//! their holders through OFFLINE, not write through READONLY. Safe requests
//! pass as while ONLINE.
//!
//! The unsafe requests this process lets in are counted while they are in
//! flight, in every mode, so that once the layer sees READONLY_PENDING its
//! thread publishes them ([`Backend::begin_writes`]) and the drain waits
//! for them (I2). A request counts itself *before* it loads the view
//! (which carries the snapshot), and the thread reads the count *after* it
//! stored a new snapshot, each behind a `SeqCst` fence: so either the
//! thread sees the request, or the request sees READONLY_PENDING and is
//! turned away — none slips between.
//!
//! The snapshot is published inside the known-session map's view
//! (`known.rs`), which the thread also replaces whole when it merges
//! sessions. That keeps the argument: every store of the view (a new
//! snapshot, or new sessions with the snapshot carried over) is made under
//! the map's writer lock from the view loaded under it, so once a
//! READONLY_PENDING snapshot is stored no later view carries an older one;
//! the thread stores it in `refresh`, then fences and reads the count in
//! `Publisher::after_refresh` (`writes.rs`), before any merge. A request's load after
//! that store sees READONLY_PENDING or newer, whatever merges ran between.
//!
//! **Fresh snapshots only admit writes.** The drain gives the layers a
//! settle time of two refresh intervals, counted from the moment its
//! waiter knew READONLY_PENDING committed (`transition.rs`,
//! `Progress::settle_from`: its begin returned), then looks at the writes
//! published. Each snapshot carries `fresh_until`: the instant its read
//! *began* (t0), plus two refresh intervals. A snapshot that says writes
//! pass began its read before that commit (a read begun after it sees
//! READONLY_PENDING), so t0 < the settle's start, and a write it admits
//! before t0 + 2 × interval is admitted before the settle has passed.
//! Not the record's `since`: on PostgreSQL that is the server's `now()`
//! at its transaction's start, before the gate was taken and the record
//! committed, and a read begun in between still sees the mode before.
//! Each unsafe request let in carries its
//! [`WriteAdmission`](super::WriteAdmission): t0, and the instant it was
//! admitted, from the same `Instant` read as the freshness check.
//! A write that finds its snapshot older waits, at most `check_timeout`,
//! for the thread's next one and is decided on it; none coming (the state
//! cannot be read, or the thread is that late) it is answered as READONLY
//! would answer it — a wait, not a refusal, so a thread a little late on a
//! loaded machine costs users a moment, not a 503; and a refusal after
//! the bound, since the layer then does not know whether a drain began.
//! It is counted in flight the whole time, so a drain the thread then
//! sees publishes it.
//!
//! **Publishing is one round trip.** Once this process has taken an unsafe
//! request, its thread makes the publishing ready ahead
//! ([`Backend::prepare_writes`]: on PostgreSQL a connection holding its
//! key, kept and reused), so the publication after a READONLY_PENDING
//! snapshot is one statement, not a connection made while the settle time
//! runs. What stays a timing assumption, as for every layer's refresh, is
//! that the thread's next refresh and that statement land within the
//! settle time.
//!
//! A safe request costs one comparison of its method (GET's), and an
//! ONLINE one nothing more: the write check comes after ONLINE's arm. An
//! unsafe one costs one `Instant` comparison more (its snapshot's age).
//!
//! [`Backend::begin_writes`]: crate::backend::Backend::begin_writes
//! [`Backend::prepare_writes`]: crate::backend::Backend::prepare_writes

use std::sync::Arc;

use http::header::{CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderValue, Method, Response, StatusCode};

use super::options::LayerOptions;
use super::response;
use super::snapshot::Snapshot;
use super::state::{Job, Shared};

/// The built-in page of a refused write; `{message}` is replaced (escaped).
const PAGE: &str = "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<title>Read-only for maintenance</title></head>\n<body><h1>Read-only for maintenance</h1>\n\
<p>{message}</p>\n</body></html>\n";

/// Whether `method` only reads: GET, HEAD, OPTIONS.
pub(crate) fn is_safe(method: &Method) -> bool {
    *method == Method::GET || *method == Method::HEAD || *method == Method::OPTIONS
}

/// One unsafe request in flight, from before the layer decides about it
/// until its response future ends (answered, or dropped).
pub(crate) struct WriteGuard {
    shared: Arc<Shared>,
}

impl WriteGuard {
    /// Counts the request when its method is unsafe; `None` (one
    /// comparison) when it is safe. Called before the snapshot is read.
    pub(crate) fn begin(shared: &Arc<Shared>, method: &Method) -> Option<WriteGuard> {
        if is_safe(method) {
            return None;
        }
        shared.in_flight.begin();
        Some(WriteGuard {
            shared: Arc::clone(shared),
        })
    }
}

impl Drop for WriteGuard {
    fn drop(&mut self) {
        if self.shared.in_flight.end() {
            self.shared.send(Job::WritesDone);
        }
    }
}

/// The 503 for an unsafe request while writes are refused.
pub(crate) fn refused<B: From<String>>(
    options: &LayerOptions,
    snapshot: &Snapshot,
    json: bool,
) -> Response<B> {
    let (content_type, body) = if json {
        let doc = serde_json::json!({
            "error": "read_only",
            "mode": snapshot.mode,
            "message": snapshot.message,
            "retry_after": snapshot.retry_after,
        });
        ("application/json", doc.to_string())
    } else {
        let page = match &options.read_only_page {
            Some(p) => p.to_string(),
            None => PAGE.replace(
                "{message}",
                &response::escape(snapshot.message.as_deref().unwrap_or(
                    "The site is read-only for maintenance: you can browse it, but changes \
                     cannot be saved now. Please try again soon.",
                )),
            ),
        };
        ("text/html; charset=utf-8", page)
    };
    let mut res = Response::new(B::from(body));
    *res.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    let h = res.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(v) = response::retry_after_value(snapshot.retry_after.as_ref()) {
        h.insert(RETRY_AFTER, v);
    }
    res
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::Arc;

    use http::header::{ACCEPT, CACHE_CONTROL, COOKIE, RETRY_AFTER};
    use http::{Method, Request, Response, StatusCode};
    use tower::{Layer, ServiceExt, service_fn};

    use super::super::tests::{app, get, patient, req, site, until, until_mode, with_cookie};
    use super::super::{MaintenanceStatus, VouchedSession};
    use crate::backend::{ModeChange, ReadOnlyStart};
    use crate::mode::{Mode, RetryAfter};

    fn with_method(method: &str, path: &str) -> Request<String> {
        Request::builder()
            .method(Method::from_bytes(method.as_bytes()).unwrap())
            .uri(path)
            .body(String::new())
            .unwrap()
    }

    fn read_only_change() -> ModeChange {
        ModeChange::by_this_process()
            .message(Some("Read-only during the <upgrade>".into()))
            .retry_after(Some(RetryAfter::Seconds(120)))
    }

    #[tokio::test]
    async fn unsafe_requests_get_a_503_and_safe_ones_pass_for_everyone_while_read_only() {
        let s = site();
        s.backend.go_read_only(&read_only_change()).unwrap();
        let layer = patient(&s.config)
            .vouch(|id: &str| id == "alice")
            // The predicate lets staff through OFFLINE; it writes nothing
            // through READONLY.
            .allow_if(|head| head.headers.get("x-staff").is_some())
            .build();
        until_mode(&layer, Mode::ReadOnly).await;
        let mut a = app(&layer);
        for r in [
            req("/"),
            with_cookie("/", "sessionid=alice"),
            with_method("HEAD", "/"),
            with_method("OPTIONS", "/"),
        ] {
            let what = format!("{} {:?}", r.method(), r.headers().get(COOKIE));
            let res = get(&mut a, r).await;
            assert_eq!(res.status(), StatusCode::OK, "{what}");
            assert_eq!(res.into_body(), "app sees READONLY", "{what}");
        }
        for method in ["POST", "PUT", "PATCH", "DELETE", "PURGE"] {
            let res = get(&mut a, with_method(method, "/notes")).await;
            assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE, "{method}");
            assert_eq!(res.headers()[RETRY_AFTER], "120");
            assert_eq!(res.headers()[CACHE_CONTROL], "no-store");
            let body = res.into_body();
            assert!(
                body.contains("Read-only during the &lt;upgrade&gt;"),
                "{body}"
            );
        }
        let mut staff = with_method("POST", "/notes");
        staff.headers_mut().insert("x-staff", "1".parse().unwrap());
        staff
            .headers_mut()
            .insert(COOKIE, "sessionid=alice".parse().unwrap());
        assert_eq!(
            get(&mut a, staff).await.status(),
            StatusCode::SERVICE_UNAVAILABLE,
            "exempt and logged in: still no write"
        );
        let mut api = with_method("POST", "/api/notes");
        api.headers_mut()
            .insert(ACCEPT, "application/json".parse().unwrap());
        let res = get(&mut a, api).await;
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        let doc: serde_json::Value = serde_json::from_str(res.body()).unwrap();
        assert_eq!(doc["error"], "read_only");
        assert_eq!(doc["mode"], "READONLY");
        assert_eq!(doc["message"], "Read-only during the <upgrade>");
        // ONLINE again: writes pass.
        s.backend.go_online(&ModeChange::by_this_process()).unwrap();
        until_mode(&layer, Mode::Online).await;
        assert_eq!(
            get(&mut a, with_method("POST", "/notes")).await.status(),
            StatusCode::OK
        );
    }

    #[tokio::test]
    async fn the_status_tells_pages_that_writes_are_refused() {
        let s = site();
        let layer = patient(&s.config).build();
        let inner = service_fn(|req: Request<String>| async move {
            let refused = req
                .extensions()
                .get::<MaintenanceStatus>()
                .map(|s| s.writes_refused);
            Ok::<_, Infallible>(Response::new(format!("{refused:?}")))
        });
        let mut a = layer.layer(tower::util::BoxCloneService::new(inner));
        // ONLINE with nothing announced: no status at all.
        assert_eq!(get(&mut a, req("/")).await.into_body(), "None");
        let w = match s.backend.begin_read_only(&read_only_change()).unwrap() {
            ReadOnlyStart::Waiting { waiter, .. } => waiter,
            ReadOnlyStart::Already(_) => panic!("a fresh site is online"),
        };
        until_mode(&layer, Mode::ReadOnlyPending).await;
        assert_eq!(get(&mut a, req("/")).await.into_body(), "Some(true)");
        drop(w);
        until_mode(&layer, Mode::Online).await;
        assert_eq!(get(&mut a, req("/")).await.into_body(), "None");
    }

    /// A PENDING begun from READONLY is a PENDING whose writes stay
    /// refused: a session that was live passes to read, not to write.
    #[tokio::test]
    async fn pending_from_read_only_lets_live_sessions_read_not_write() {
        let s = site();
        let layer = patient(&s.config).build();
        let mut a = app(&layer);
        assert_eq!(
            get(&mut a, req("/login/bob")).await.status(),
            StatusCode::OK
        );
        s.backend.go_read_only(&read_only_change()).unwrap();
        let _w = match s.backend.begin_pending(&ModeChange::by_this_process()) {
            Ok(crate::backend::PendingStart::Waiting { waiter, .. }) => waiter,
            other => panic!("PENDING from READONLY, got {other:?}"),
        };
        until_mode(&layer, Mode::Pending).await;
        let res = get(&mut a, with_cookie("/", "sessionid=bob")).await;
        assert_eq!(res.into_body(), "app sees PENDING");
        let mut post = with_method("POST", "/notes");
        post.headers_mut()
            .insert(COOKIE, "sessionid=bob".parse().unwrap());
        assert_eq!(
            get(&mut a, post).await.status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            get(&mut a, req("/")).await.status(),
            StatusCode::SEE_OTHER,
            "a newcomer is turned away as in any PENDING"
        );
    }

    /// The reproduction of the drain's blind spot: an unsafe request let in
    /// while ONLINE and still running when READONLY_PENDING begins is
    /// published by the layer, so the drain waits for it; it stops counting
    /// the moment it ends.
    #[tokio::test]
    async fn a_write_let_in_before_the_drain_is_published_until_it_ends() {
        let s = site();
        let layer = patient(&s.config).build();
        let (entered_tx, entered) = tokio::sync::mpsc::unbounded_channel::<()>();
        let release = Arc::new(tokio::sync::Notify::new());
        let go = Arc::clone(&release);
        let inner = service_fn(move |_req: Request<String>| {
            let entered = entered_tx.clone();
            let go = Arc::clone(&go);
            async move {
                let _ = entered.send(());
                go.notified().await;
                Ok::<_, Infallible>(Response::new("saved".to_owned()))
            }
        });
        let a = layer.layer(tower::util::BoxCloneService::new(inner));
        let mut entered = entered;
        let write = tokio::spawn(a.clone().oneshot(with_method("POST", "/notes")));
        entered.recv().await.unwrap();
        assert!(
            s.backend.writes_in_flight().unwrap().is_empty(),
            "nothing is published while ONLINE"
        );
        let w = match s.backend.begin_read_only(&read_only_change()).unwrap() {
            ReadOnlyStart::Waiting { waiter, .. } => waiter,
            ReadOnlyStart::Already(_) => panic!("a fresh site is online"),
        };
        until_mode(&layer, Mode::ReadOnlyPending).await;
        until("the write in flight was published", || {
            s.backend.writes_in_flight().unwrap().len() == 1
        })
        .await;
        // A new write is refused, and changes nothing of what is published.
        let res = a
            .clone()
            .oneshot(with_method("POST", "/notes"))
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(s.backend.writes_in_flight().unwrap().len(), 1);
        release.notify_one();
        let res = write.await.unwrap().unwrap();
        assert_eq!(res.into_body(), "saved");
        until("the ended write stopped counting", || {
            s.backend.writes_in_flight().unwrap().is_empty()
        })
        .await;
        drop(w);
    }

    /// A read-only window scheduled ahead (`--at TIME --read-only`) is
    /// carried with `read_only` from its notice on, so a page can say
    /// "read-only at 02:00"; until its time, writes pass as ever.
    #[tokio::test]
    async fn a_scheduled_read_only_window_is_carried_and_refuses_nothing_before_its_time() {
        use crate::clock::Timestamp;
        use crate::schedule::ScheduleRecord;
        let s = site();
        let layer = patient(&s.config).build();
        let inner = service_fn(|req: Request<String>| async move {
            let said = match req.extensions().get::<MaintenanceStatus>() {
                Some(st) => format!(
                    "refused {}, scheduled {:?}",
                    st.writes_refused,
                    st.scheduled.as_deref().map(|w| w.read_only)
                ),
                None => "no status".into(),
            };
            Ok::<_, Infallible>(Response::new(said))
        });
        let mut a = layer.layer(tower::util::BoxCloneService::new(inner));
        let now = std::time::SystemTime::now();
        let mut w = ScheduleRecord::by_this_process(
            Timestamp::at(now + std::time::Duration::from_secs(7200)),
            Timestamp::at(now),
        );
        w.read_only = true;
        let _lease = s.backend.begin_schedule(&w).unwrap();
        until("the schedule carried", || {
            layer
                .snapshot()
                .is_some_and(|snap| snap.scheduled.is_some())
        })
        .await;
        let res = get(&mut a, req("/")).await;
        assert_eq!(res.into_body(), "refused false, scheduled Some(true)");
        let res = get(&mut a, with_method("POST", "/notes")).await;
        assert_eq!(res.status(), StatusCode::OK, "not yet read-only");
        assert_eq!(res.into_body(), "refused false, scheduled Some(true)");
    }

    /// The reproduction of writes let in after a drain's settle time: a
    /// layer whose thread cannot read the mode keeps its last ONLINE
    /// snapshot, but once that is older than the settle time a write waits
    /// for a fresh one and, none coming, is refused; reads go on. A fresh
    /// read lets writes through again, and while the refresh is healthy no
    /// write is refused (many, over many refresh intervals).
    #[tokio::test]
    async fn a_write_on_a_snapshot_older_than_the_settle_time_is_refused_and_reads_go_on() {
        let s = site();
        s.backend.go_online(&ModeChange::by_this_process()).unwrap();
        let mut builder = patient(&s.config);
        builder.options.check_timeout = std::time::Duration::from_millis(100);
        let layer = builder.build();
        until_mode(&layer, Mode::Online).await;
        let mut a = app(&layer);
        for i in 0..100 {
            let res = get(&mut a, with_method("POST", "/notes")).await;
            assert_eq!(res.status(), StatusCode::OK, "write {i}, refresh healthy");
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        let file = s.config.state_dir.join("mode.json");
        let good = std::fs::read(&file).unwrap();
        std::fs::write(&file, b"not a mode record").unwrap();
        let mut refused = false;
        for _ in 0..1000 {
            let res = get(&mut a, with_method("POST", "/notes")).await;
            if res.status() == StatusCode::SERVICE_UNAVAILABLE {
                refused = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(refused, "a write on a stale snapshot was never refused");
        assert_eq!(layer.snapshot().map(|s| s.mode), Some(Mode::Online));
        assert_eq!(get(&mut a, req("/")).await.status(), StatusCode::OK);
        std::fs::write(&file, good).unwrap();
        let mut passed = false;
        for _ in 0..1000 {
            if get(&mut a, with_method("POST", "/notes")).await.status() == StatusCode::OK {
                passed = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(passed, "writes never passed again once the mode was read");
    }

    #[tokio::test]
    async fn a_login_during_read_only_is_refused_like_any_write() {
        let s = site();
        s.backend.go_read_only(&read_only_change()).unwrap();
        let layer = patient(&s.config).build();
        until_mode(&layer, Mode::ReadOnly).await;
        let inner = service_fn(|_req: Request<String>| async move {
            let mut res = Response::new("logged in".to_owned());
            res.extensions_mut().insert(VouchedSession("carol".into()));
            Ok::<_, Infallible>(res)
        });
        let mut a = layer.layer(tower::util::BoxCloneService::new(inner));
        let res = get(&mut a, with_method("POST", "/login")).await;
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(s.backend.sessions().unwrap().is_empty());
    }
}
