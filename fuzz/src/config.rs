//! The `config` target: `manage.toml` as `Config::load_from` reads it.
//!
//! Holds: loading never panics; an error names the file; a loaded
//! configuration keeps its own rules (`max_stale` at least twice
//! `refresh_interval`, a history bound of at least `MIN_HISTORY_MAX_SIZE`,
//! site paths that parse again to themselves); and the configuration
//! written back as TOML loads to the same settings.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use maintenance_core::config::{
    Config, MIN_HISTORY_MAX_SIZE, OnStale, Overrides, Source, parse_seconds,
};
use maintenance_core::site_path::SitePath;

/// The directory the file is written in, one per process.
fn dir() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("a temporary directory"))
        .path()
}

/// Loads `text` as `name` in the process's directory, with a home
/// directory and no `MANAGE_*` variables.
fn load(name: &str, text: &[u8]) -> (PathBuf, Result<Config, String>) {
    let path = dir().join(name);
    std::fs::write(&path, text).expect("write the file under test");
    let env = |k: &str| (k == "HOME").then(|| OsString::from("/nonexistent-home"));
    let overrides = Overrides {
        config_file: Some(path.clone()),
        ..Overrides::default()
    };
    let loaded = Config::load_from(dir(), &env, &overrides).map_err(|e| e.to_string());
    (path, loaded)
}

/// The check.
pub fn check(data: &[u8]) {
    let (path, loaded) = load("manage.toml", data);
    let config = match loaded {
        Ok(c) => c,
        Err(message) => {
            assert!(
                message.contains(&path.display().to_string()),
                "an error that does not name the file: {message}"
            );
            return;
        }
    };
    assert!(
        config.max_stale >= config.refresh_interval * 2,
        "max_stale below twice refresh_interval was accepted"
    );
    assert!(config.history_max_size >= MIN_HISTORY_MAX_SIZE);
    for p in [&config.maintenance_url, &config.bypass_prefix] {
        assert_eq!(SitePath::parse(p.as_str()).as_ref(), Ok(p));
    }
    for argv in &config.hooks.on_change {
        assert!(!argv.is_empty() && !argv[0].trim().is_empty());
    }

    // Written back, it loads to the same settings.
    let text = toml::to_string(&written_back(&config)).expect("a table serialises");
    let (_, again) = load("again.toml", text.as_bytes());
    let again = again.unwrap_or_else(|e| panic!("written back as\n{text}\nit fails: {e}"));
    assert_eq!(same_settings(&again), same_settings(&config), "{text}");
}

/// A duration as manage.toml takes it, exactly.
fn duration(d: Duration) -> toml::Value {
    let text = humantime::format_duration(d).to_string();
    assert_eq!(parse_seconds(&text), Ok(d), "{d:?} written as {text:?}");
    toml::Value::String(text)
}

fn strings(v: &[String]) -> toml::Value {
    toml::Value::Array(v.iter().cloned().map(toml::Value::String).collect())
}

/// The settings of `c` as a manage.toml would give them (the backend and
/// its URL, whose password is not shown, and `[commands]` left out).
fn written_back(c: &Config) -> toml::Table {
    let mut t = toml::Table::new();
    let s = |v: &str| toml::Value::String(v.to_owned());
    if let (Source::File(_), Some(d)) = (&c.state_dir_source, c.state_dir.to_str()) {
        t.insert("state_dir".into(), s(d));
    }
    t.insert("site".into(), s(&c.postgres.site));
    let mut pg = toml::Table::new();
    pg.insert("schema".into(), s(&c.postgres.schema));
    pg.insert(
        "connect_timeout".into(),
        duration(c.postgres.connect_timeout),
    );
    t.insert("postgres".into(), toml::Value::Table(pg));
    if let Some(g) = &c.group {
        t.insert("group".into(), s(g));
    }
    if let Some(o) = &c.owner {
        t.insert("owner".into(), s(o));
    }
    t.insert("session_timeout".into(), duration(c.session_timeout));
    t.insert("lock_timeout".into(), duration(c.lock_timeout));
    t.insert("refresh_interval".into(), duration(c.refresh_interval));
    t.insert("max_stale".into(), duration(c.max_stale));
    t.insert("maintenance_url".into(), s(c.maintenance_url.as_str()));
    t.insert("bypass_prefix".into(), s(c.bypass_prefix.as_str()));
    let on_stale = match c.on_stale {
        OnStale::Static => "static",
        OnStale::Closed => "closed",
    };
    t.insert("on_stale".into(), s(on_stale));
    let alias = c
        .aliases
        .iter()
        .map(|(k, v)| (k.clone(), strings(v)))
        .collect();
    t.insert("alias".into(), toml::Value::Table(alias));
    let mut hooks = toml::Table::new();
    hooks.insert(
        "on_change".into(),
        toml::Value::Array(c.hooks.on_change.iter().map(|a| strings(a)).collect()),
    );
    hooks.insert("timeout".into(), duration(c.hooks.timeout));
    t.insert("hooks".into(), toml::Value::Table(hooks));
    let mut history = toml::Table::new();
    history.insert("max_size".into(), s(&c.history_max_size.to_string()));
    t.insert("history".into(), toml::Value::Table(history));
    t
}

/// The settings [`written_back`] writes, to compare.
fn same_settings(c: &Config) -> String {
    let state_dir = matches!(c.state_dir_source, Source::File(_)).then_some(&c.state_dir);
    format!(
        "{state_dir:?} {} {} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {} {} {:?} {:?} {:?} {:?} {}",
        c.postgres.site,
        c.postgres.schema,
        c.postgres.connect_timeout,
        c.group,
        c.owner,
        c.session_timeout,
        c.lock_timeout,
        c.refresh_interval,
        c.max_stale,
        c.maintenance_url,
        c.bypass_prefix,
        c.on_stale,
        c.aliases,
        c.hooks.on_change,
        c.hooks.timeout,
        c.history_max_size,
    )
}
