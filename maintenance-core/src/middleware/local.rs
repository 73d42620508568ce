//! The local override (`offline on --local --force`) as the layer sees it:
//! looked at on the layer's own thread at each refresh, never on the
//! request path, and published as an OFFLINE snapshot whatever the shared
//! mode's snapshot says. The shared snapshot is kept beside it, so that
//! `offline off --local` brings it back at the next refresh even while the
//! state cannot be read. Only a site whose state is shared (PostgreSQL)
//! has one: on the file backend this host's state *is* the site's.

use std::sync::Mutex;

use super::known::Known;
use super::snapshot::Snapshot;
use crate::config::{BackendKind, Config};
use crate::host::{HostDir, LocalOverride};
use crate::mode::Mode;

/// The shared snapshot and the override, for the layer's thread.
#[derive(Debug)]
pub(crate) struct LocalGate {
    config: Option<Config>,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    dir: Option<HostDir>,
    base: Option<Snapshot>,
    standing: Option<LocalOverride>,
    complained: bool,
}

impl LocalGate {
    /// The gate of a layer reading `config`'s state.
    pub fn new(config: &Config) -> Self {
        LocalGate {
            config: (config.backend != BackendKind::File).then(|| config.clone()),
            inner: Mutex::new(Inner::default()),
        }
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Publishes the shared mode's snapshot, overridden while the local
    /// override stands.
    pub fn publish(&self, known: &Known, snapshot: Snapshot) {
        let mut inner = self.inner();
        inner.base = Some(snapshot);
        publish(known, &inner);
    }

    /// Looks at the local override again (one `stat`, and a small read
    /// while it stands); publishes again when it came or went.
    pub fn recheck(&self, known: &Known, log: &dyn Fn(&str)) {
        let Some(config) = &self.config else { return };
        let mut inner = self.inner();
        if inner.dir.is_none() {
            // No directory yet: no override either.
            if !config.state_dir.exists() {
                return;
            }
            match HostDir::open(config) {
                Ok(d) => inner.dir = Some(d),
                Err(e) => {
                    if !inner.complained {
                        log(&format!(
                            "the maintenance layer cannot look for a local override: {e}"
                        ));
                        inner.complained = true;
                    }
                    return;
                }
            }
        }
        let read = inner.dir.as_ref().map(HostDir::local_override);
        let now = match read {
            Some(Ok(o)) => {
                inner.complained = false;
                o
            }
            Some(Err(e)) => {
                // An override that cannot be read still stands (fail
                // closed): someone set something there.
                if !inner.complained {
                    log(&format!(
                        "the maintenance layer treats the local override as standing: {e}"
                    ));
                    inner.complained = true;
                }
                Some(inner.standing.clone().unwrap_or_else(|| LocalOverride {
                    since: crate::clock::Timestamp::at(std::time::SystemTime::now()),
                    by: String::new(),
                    pid: 0,
                    message: None,
                }))
            }
            None => None,
        };
        if now.is_some() != inner.standing.is_some() {
            log(match now {
                Some(_) => "a local override stands: this host answers OFFLINE",
                None => "the local override was taken back: this host follows the shared mode",
            });
        }
        if now != inner.standing {
            inner.standing = now;
            publish(known, &inner);
        }
    }
}

fn publish(known: &Known, inner: &Inner) {
    match (&inner.standing, &inner.base) {
        (None, Some(base)) => known.set_snapshot(base.clone()),
        (None, None) => known.clear_snapshot(),
        (Some(o), base) => known.set_snapshot(Snapshot {
            mode: Mode::Offline,
            since: o.since,
            message: o
                .message
                .clone()
                .or_else(|| base.as_ref().and_then(|b| b.message.clone())),
            retry_after: base.as_ref().and_then(|b| b.retry_after),
            // OFFLINE turns every request away (the bypass still passes
            // its holders, as in any OFFLINE).
            writes_refused: false,
            bypass: base.as_ref().and_then(|b| b.bypass),
            scheduled: None,
            // Without the shared mode's snapshot nothing says whether a
            // read-only drain began: stale at once.
            fresh_until: base
                .as_ref()
                .map_or_else(std::time::Instant::now, |b| b.fresh_until),
            read_began: base.as_ref().map_or_else(
                || (std::time::Instant::now(), std::time::SystemTime::now()),
                |b| b.read_began,
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Timestamp;

    fn snapshot(mode: Mode) -> Snapshot {
        Snapshot {
            mode,
            since: Timestamp::at(std::time::SystemTime::UNIX_EPOCH),
            message: None,
            retry_after: None,
            writes_refused: mode == Mode::ReadOnly,
            bypass: None,
            scheduled: None,
            fresh_until: std::time::Instant::now(),
            read_began: (std::time::Instant::now(), std::time::SystemTime::now()),
        }
    }

    fn mode(known: &Known) -> Option<Mode> {
        known.snapshot().map(|s| s.mode)
    }

    fn shared_config(dir: &std::path::Path) -> Config {
        let mut config = Config::with_state_dir(dir);
        config.backend = BackendKind::Postgres;
        config
    }

    #[test]
    fn the_override_wins_over_the_shared_snapshot_until_it_is_taken_back() {
        let tmp = tempfile::tempdir().expect("tmp");
        let config = shared_config(tmp.path());
        let known = Known::new(8);
        let gate = LocalGate::new(&config);
        gate.publish(&known, snapshot(Mode::ReadOnly));
        gate.recheck(&known, &|_| {});
        assert_eq!(mode(&known), Some(Mode::ReadOnly));

        let host = HostDir::open(&config).expect("open");
        host.set_override(&LocalOverride::by_this_process(Some("db down".into())))
            .expect("set");
        gate.recheck(&known, &|_| {});
        let s = known.snapshot().expect("a snapshot");
        assert_eq!(s.mode, Mode::Offline);
        assert!(!s.writes_refused, "OFFLINE turns everyone away");
        assert_eq!(s.message.as_deref(), Some("db down"));
        // A new shared snapshot changes nothing while it stands.
        gate.publish(&known, snapshot(Mode::Online));
        assert_eq!(mode(&known), Some(Mode::Offline));

        host.clear_override().expect("clear");
        gate.recheck(&known, &|_| {});
        assert_eq!(
            mode(&known),
            Some(Mode::Online),
            "the shared snapshot is back"
        );
    }

    #[test]
    fn an_override_before_any_snapshot_answers_offline_and_its_end_leaves_none() {
        let tmp = tempfile::tempdir().expect("tmp");
        let config = shared_config(tmp.path());
        let known = Known::new(8);
        let gate = LocalGate::new(&config);
        let host = HostDir::open(&config).expect("open");
        host.set_override(&LocalOverride::by_this_process(None))
            .expect("set");
        gate.recheck(&known, &|_| {});
        assert_eq!(mode(&known), Some(Mode::Offline));
        host.clear_override().expect("clear");
        gate.recheck(&known, &|_| {});
        assert_eq!(mode(&known), None);
    }

    #[test]
    fn the_file_backend_has_no_local_override() {
        let tmp = tempfile::tempdir().expect("tmp");
        let config = Config::with_state_dir(tmp.path());
        let known = Known::new(8);
        let gate = LocalGate::new(&config);
        HostDir::open(&config)
            .expect("open")
            .set_override(&LocalOverride::by_this_process(None))
            .expect("set");
        gate.publish(&known, snapshot(Mode::Online));
        gate.recheck(&known, &|_| {});
        assert_eq!(mode(&known), Some(Mode::Online));
    }
}
