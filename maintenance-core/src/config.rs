//! `Config`: the settings the CLI and the web app share, from `manage.toml`
//! (found by walking up from the current directory, like `Cargo.toml`), the
//! environment and explicit overrides.
//!
//! Precedence, highest first: an explicit override (a command-line flag),
//! the environment (`MANAGE_STATE_DIR`, `MANAGE_CONFIG`,
//! `MANAGE_DATABASE_URL`), the file, the defaults. A relative `state_dir` in
//! the file is relative to the file.
//!
//! The backend: `backend = "postgres"` with `database_url` in the file, or
//! `$MANAGE_DATABASE_URL` alone, which selects PostgreSQL by itself and wins
//! over the file's `backend` and `database_url`; otherwise the file backend.
//! `MANAGE_STATE_DIR` and `--state-dir` only say where the file backend's
//! directory is (a child of a PostgreSQL run gets `MANAGE_STATE_DIR` too).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

pub use crate::database_url::DatabaseUrl;
use crate::site_path::SitePath;

/// The file name searched for.
pub const FILE_NAME: &str = "manage.toml";
/// Environment variable naming the state directory.
pub const ENV_STATE_DIR: &str = "MANAGE_STATE_DIR";
/// Environment variable naming the configuration file.
pub const ENV_CONFIG: &str = "MANAGE_CONFIG";
/// Environment variable giving the PostgreSQL URL: it selects the postgres
/// backend by itself and wins over the file.
pub const ENV_DATABASE_URL: &str = "MANAGE_DATABASE_URL";
/// Default `site`: the name the PostgreSQL backend keeps this site's rows
/// under, when manage.toml names none. Two sites on one server need two
/// names.
pub const DEFAULT_SITE: &str = "default";
/// Default `[postgres] schema`: where the PostgreSQL backend's tables are.
pub const DEFAULT_SCHEMA: &str = "manage";
/// Default `[postgres] connect_timeout`: how long a connection may take
/// before the server counts as not there.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Default session timeout: 900 s, as django-site-maintenance's.
pub const DEFAULT_SESSION_TIMEOUT: Duration = Duration::from_secs(900);
/// Default lock timeout: 1 s, as django-site-maintenance's.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(1);
/// Default refresh interval of the web layers' snapshot (the settle time
/// of I2 is twice it).
pub const DEFAULT_REFRESH_INTERVAL: Duration = Duration::from_millis(250);
/// Default `max_stale`: how long a web layer that cannot read the mode
/// keeps answering by its last snapshot before `on_stale` decides.
pub const DEFAULT_MAX_STALE: Duration = Duration::from_secs(60);
/// Default maintenance URL.
pub const DEFAULT_MAINTENANCE_URL: &str = "/maintenance.html";
/// Default prefix of the bypass path: visiting `<prefix><secret>` once sets
/// the bypass cookie.
pub const DEFAULT_BYPASS_PREFIX: &str = "/_maintenance/bypass/";
/// Default bound of the file backend's history (`[history] max_size`): past
/// it, `history.jsonl` is rotated to `history.jsonl.1`.
pub const DEFAULT_HISTORY_MAX_SIZE: u64 = 1024 * 1024;
/// The smallest `[history] max_size` accepted: a few entries.
pub const MIN_HISTORY_MAX_SIZE: u64 = 1024;
/// Default time limit of one hook (`[hooks] timeout`), after which it is
/// killed.
pub const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(10);

/// Which backend keeps the state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// A state directory on this host.
    #[default]
    File,
    /// A PostgreSQL database, shared by every host of the site.
    Postgres,
}

/// What a web layer does once it could not read the mode for `max_stale`
/// (`on_stale` in manage.toml).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnStale {
    /// Fail static: keep answering by the last snapshot (writes stay
    /// refused on it, as on any snapshot older than the settle time).
    #[default]
    Static,
    /// Fail closed: turn users away as OFFLINE (503, the maintenance page)
    /// until the mode can be read again.
    Closed,
}

/// Where a setting's value came from, so `status -v` can say it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A command-line flag or an explicit override.
    Override,
    /// An environment variable.
    Env(&'static str),
    /// The configuration file.
    File(PathBuf),
    /// The built-in default.
    Default,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Override => f.write_str("command line"),
            Source::Env(var) => write!(f, "${var}"),
            Source::File(p) => write!(f, "{}", p.display()),
            Source::Default => f.write_str("default"),
        }
    }
}

/// The resolved configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The backend keeping the state.
    pub backend: BackendKind,
    /// The state directory (file backend).
    pub state_dir: PathBuf,
    /// Where `state_dir` came from.
    pub state_dir_source: Source,
    /// The PostgreSQL backend's settings (read whichever backend is used).
    pub postgres: PostgresSettings,
    /// The group that shares the state, if any.
    pub group: Option<String>,
    /// A user trusted to own the state directory, besides root and the
    /// running user (the deploy user who created it, say).
    pub owner: Option<String>,
    /// How long a web session stays live after its last request.
    pub session_timeout: Duration,
    /// Where turned-away web requests are sent; it always passes itself.
    pub maintenance_url: SitePath,
    /// The bypass path's prefix, shared by the CLI (which prints the URL)
    /// and the web layer (which answers it) — and nginx, which must pass it.
    pub bypass_prefix: SitePath,
    /// How long a single-instance command waits for the running one.
    pub lock_timeout: Duration,
    /// How often web layers refresh their snapshot of the mode; PENDING's
    /// settle time (I2) is twice it.
    pub refresh_interval: Duration,
    /// How long a web layer that cannot read the mode keeps answering by
    /// its last snapshot before [`on_stale`](Self::on_stale) decides; at
    /// least twice `refresh_interval` (by default 60 s, or twice
    /// `refresh_interval` when that is longer).
    pub max_stale: Duration,
    /// What a web layer does once its snapshot is `max_stale` old.
    pub on_stale: OnStale,
    /// The configuration file read, if any.
    pub file: Option<PathBuf>,
    /// `[alias]`: name → argv.
    pub aliases: BTreeMap<String, Vec<String>>,
    /// `[commands.NAME]`: policy set in the file, by command name.
    pub commands: BTreeMap<String, crate::policy::PolicyOverride>,
    /// `[hooks]`: the programs run after every mode change.
    pub hooks: HookSettings,
    /// `[history] max_size`: the file backend rotates its history past
    /// this many bytes.
    pub history_max_size: u64,
    /// Owner and mode of the configuration file, from the descriptor it
    /// was read through: hooks are taken only from a file that passes
    /// their trust check ([`crate::hooks`]).
    pub file_stat: Option<FileStat>,
}

/// The PostgreSQL backend's settings: `database_url` and `site` at the top
/// of manage.toml, `schema` and `connect_timeout` under `[postgres]`.
#[derive(Debug, Clone, PartialEq)]
pub struct PostgresSettings {
    /// The server, from `$MANAGE_DATABASE_URL` or `database_url`; its
    /// password is never printed.
    pub url: Option<DatabaseUrl>,
    /// Where `url` came from.
    pub url_source: Source,
    /// This site's name: its rows, locks and keys are its own, so two sites
    /// on one server never see each other.
    pub site: String,
    /// The schema holding the backend's tables.
    pub schema: String,
    /// How long a connection may take.
    pub connect_timeout: Duration,
}

impl Default for PostgresSettings {
    fn default() -> Self {
        PostgresSettings {
            url: None,
            url_source: Source::Default,
            site: DEFAULT_SITE.to_owned(),
            schema: DEFAULT_SCHEMA.to_owned(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        }
    }
}

/// `[hooks]` in `manage.toml`, as read (not yet checked for trust: see
/// [`crate::hooks::Hooks::from_config`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookSettings {
    /// `on_change`: each program's argv, its path made absolute against the
    /// file's directory (never looked up on `PATH`).
    pub on_change: Vec<Vec<String>>,
    /// `timeout`: how long one hook may run before it is killed.
    pub timeout: Duration,
}

impl Default for HookSettings {
    fn default() -> Self {
        HookSettings {
            on_change: Vec::new(),
            timeout: DEFAULT_HOOK_TIMEOUT,
        }
    }
}

/// Who owns a file and its permission bits, as `fstat` said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStat {
    /// The owner's uid.
    pub uid: u32,
    /// The group's gid.
    pub gid: u32,
    /// The mode, type bits included.
    pub mode: u32,
}

/// Explicit overrides, from command-line flags or a program's own choice.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--config FILE`.
    pub config_file: Option<PathBuf>,
    /// `--state-dir DIR`.
    pub state_dir: Option<PathBuf>,
    /// `--lock-timeout SECS`.
    pub lock_timeout: Option<Duration>,
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read configuration file {}: {cause}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why (said once: it is no `source()` too).
        cause: std::io::Error,
    },
    /// The file is not valid TOML or has a bad or unknown key.
    #[error("{}:{line}: {}{message}", path.display(), key.as_deref().map(|k| format!("key `{k}`: ")).unwrap_or_default())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The 1-based line.
        line: usize,
        /// The key at fault, when known.
        key: Option<String>,
        /// What is wrong.
        message: String,
    },
    /// No state directory could be determined.
    #[error(
        "no state directory: set `state_dir` in {FILE_NAME}, ${ENV_STATE_DIR} or --state-dir \
         (there is no home directory to default to)"
    )]
    NoStateDir,
    /// A setting that parsed but cannot be used (a bad URL in the
    /// environment, `backend = "postgres"` without a URL).
    #[error("{origin}: `{key}`: {message}")]
    Setting {
        /// The file, or `$VARIABLE`, it came from.
        origin: String,
        /// The key.
        key: &'static str,
        /// What is wrong and what to do.
        message: String,
    },
}

/// The file's shape. Unknown keys are errors.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    backend: Option<BackendKind>,
    state_dir: Option<PathBuf>,
    #[serde(default, deserialize_with = "opt_url")]
    database_url: Option<DatabaseUrl>,
    #[serde(default, deserialize_with = "opt_site")]
    site: Option<String>,
    #[serde(default)]
    postgres: FilePostgres,
    group: Option<String>,
    owner: Option<String>,
    #[serde(default, deserialize_with = "opt_duration")]
    session_timeout: Option<Duration>,
    maintenance_url: Option<SitePath>,
    bypass_prefix: Option<SitePath>,
    #[serde(default, deserialize_with = "opt_duration")]
    lock_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "opt_duration")]
    refresh_interval: Option<Duration>,
    #[serde(default, deserialize_with = "opt_duration")]
    max_stale: Option<Duration>,
    on_stale: Option<OnStale>,
    #[serde(default)]
    alias: BTreeMap<String, AliasValue>,
    #[serde(default)]
    commands: BTreeMap<String, crate::policy::PolicyOverride>,
    #[serde(default)]
    hooks: FileHooks,
    #[serde(default)]
    history: FileHistory,
}

/// `[hooks]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileHooks {
    #[serde(default)]
    on_change: Vec<HookProgram>,
    #[serde(default, deserialize_with = "opt_duration")]
    timeout: Option<Duration>,
}

/// `[postgres]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FilePostgres {
    #[serde(default, deserialize_with = "opt_schema")]
    schema: Option<String>,
    #[serde(default, deserialize_with = "opt_duration")]
    connect_timeout: Option<Duration>,
}

fn opt_url<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DatabaseUrl>, D::Error> {
    let text = String::deserialize(d)?;
    DatabaseUrl::parse(&text)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

/// A site name: 1 to 100 printable characters, no space at either end.
/// (Stored as a value, never as an identifier: PostgreSQL's 63-byte limit
/// on names does not apply, and two names differing anywhere are two
/// sites.)
pub fn check_site(text: &str) -> Result<(), String> {
    let shown = || text.chars().take(100).collect::<String>();
    if text.is_empty() || text.chars().count() > 100 {
        return Err(format!(
            "{:?} is not a site name: a site name has 1 to 100 characters",
            shown()
        ));
    }
    if text.chars().any(char::is_control) || text.trim() != text {
        return Err(format!(
            "{:?} is not a site name: a site name has no control characters and no spaces at \
             either end",
            shown()
        ));
    }
    Ok(())
}

fn opt_site<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let text = String::deserialize(d)?;
    check_site(&text).map_err(serde::de::Error::custom)?;
    Ok(Some(text))
}

/// A schema name: a plain SQL identifier (`manage`, `ops_state`): a
/// lowercase letter or `_`, then lowercase letters, digits or `_`, at most
/// 63 bytes; not one of PostgreSQL's own (`pg_…`, `information_schema`) nor
/// `public`, where the backend's tables (`modes`, `tasks`, `sessions`, …)
/// would sit among the application's.
pub fn check_schema(text: &str) -> Result<(), String> {
    if text.starts_with("pg_") || text == "information_schema" || text == "public" {
        return Err(format!(
            "{text:?} is not a schema of manage's own: `pg_…` and information_schema are \
             PostgreSQL's, and in public manage's tables would sit among the application's; \
             name a schema for manage alone (the default is `{DEFAULT_SCHEMA}`)"
        ));
    }
    let mut chars = text.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    if !first_ok
        || text.len() > 63
        || !chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        return Err(format!(
            "{:?} is not a plain schema name: use lowercase letters, digits and `_`, starting \
             with a letter or `_`, at most 63 characters",
            text.chars().take(70).collect::<String>()
        ));
    }
    Ok(())
}

fn opt_schema<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let text = String::deserialize(d)?;
    check_schema(&text).map_err(serde::de::Error::custom)?;
    Ok(Some(text))
}

/// `[history]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileHistory {
    #[serde(default, deserialize_with = "opt_size")]
    max_size: Option<u64>,
}

/// One entry of `on_change`: a program's path, or an array of its path and
/// arguments.
#[derive(Debug)]
struct HookProgram(Vec<String>);

impl<'de> Deserialize<'de> for HookProgram {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Path(String),
            Argv(Vec<String>),
        }
        const SHAPE: &str = "each entry of on_change is a program's path (\"/usr/local/bin/notify\") \
                             or an array of its path and arguments ([\"/usr/local/bin/notify\", \"--channel\", \"ops\"])";
        let argv = match Raw::deserialize(d)
            .map_err(|_| serde::de::Error::custom(format!("not a program: {SHAPE}")))?
        {
            Raw::Path(p) => vec![p],
            Raw::Argv(a) => a,
        };
        match argv.first() {
            None => Err(serde::de::Error::custom(format!("an empty array: {SHAPE}"))),
            Some(p) if p.trim().is_empty() => Err(serde::de::Error::custom(format!(
                "an empty program path: {SHAPE}"
            ))),
            Some(p) if p.contains('\0') || argv.iter().any(|a| a.contains('\0')) => {
                Err(serde::de::Error::custom(
                    "a NUL character cannot be part of a program's path or argument",
                ))
            }
            Some(_) => Ok(HookProgram(argv)),
        }
    }
}

/// A size in `manage.toml`: a number of bytes (`1048576`) or a string with
/// a unit (`"512KiB"`, `"1MiB"`, `"1M"`; K, M and G count 1024s).
fn opt_size<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Int(i64),
        Text(String),
    }
    let bytes = match Raw::deserialize(d).map_err(|_| {
        serde::de::Error::custom(
            "not a size: write bytes (1048576) or units (\"512KiB\", \"1MiB\")",
        )
    })? {
        Raw::Int(n) => u64::try_from(n)
            .map_err(|_| serde::de::Error::custom(format!("{n} {NEGATIVE_SIZE}")))?,
        Raw::Text(t) => parse_size(&t).map_err(serde::de::Error::custom)?,
    };
    if bytes < MIN_HISTORY_MAX_SIZE {
        return Err(serde::de::Error::custom(format!(
            "{bytes} bytes is too small to hold a few entries: give at least {MIN_HISTORY_MAX_SIZE} (\"1KiB\")"
        )));
    }
    Ok(Some(bytes))
}

const NEGATIVE_SIZE: &str =
    "cannot be negative: give a size in bytes (1048576) or units (\"1MiB\")";

/// `"512KiB"`, `"1MiB"`, `"2G"`, `"4096"`: bytes, K/M/G counting 1024s.
fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let unit = unit.trim();
    let shape = || {
        format!(
            "{text:?} is not a size: write bytes (1048576) or a number with a unit (\"512KiB\", \"1MiB\", \"1G\")"
        )
    };
    if t.starts_with('-') {
        return Err(format!("{text:?} {NEGATIVE_SIZE}"));
    }
    let n: u64 = digits.parse().map_err(|_| shape())?;
    let factor: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(shape()),
    };
    n.checked_mul(factor)
        .ok_or_else(|| format!("{text:?} is too large for a size"))
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum AliasValue {
    Line(String),
    Argv(Vec<String>),
}

/// A duration as a command-line flag (`--timeout`, `--grace`,
/// `--lock-timeout`, …) or `manage.toml` gives it: seconds (`60`, `0.25`)
/// or a length with units (`15m`, `1h30m`, `250ms`, as humantime reads
/// them). The error says what is wrong: not a duration, negative, or too
/// large.
pub fn parse_seconds(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if let Ok(secs) = t.parse::<f64>() {
        return seconds(secs).map_err(|e| format!("{text:?} {e}"));
    }
    if t.starts_with('-') {
        return Err(format!("{text:?} {NEGATIVE}"));
    }
    let parsed = humantime::parse_duration(t).map_err(|e| {
        let unit = match e {
            humantime::DurationError::NumberOverflow => return format!("{text:?} {TOO_LARGE}"),
            humantime::DurationError::UnknownUnit { unit, .. } => {
                format!(" (no unit {unit:?}: ns, us, ms, s, m, h, d, w, M, y)")
            }
            _ => String::new(),
        };
        format!(
            "{text:?} is not a duration{unit}; write seconds (900, 0.25) or units (\"15m\", \
             \"1h30m\", \"250ms\")"
        )
    })?;
    bounded(parsed).map_err(|e| format!("{text:?} {e}"))
}

const NEGATIVE: &str = "cannot be negative: give a duration of 0 or more";
const TOO_LARGE: &str = "is too large for a duration: give at most 100 years (3153600000)";

/// The longest duration taken, in the file and on the command line: 100
/// years. Longer is refused as it is read: so far off means "never", and
/// what the code does with a duration — twice `refresh_interval` for the
/// settle time, a deadline on a clock — would overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// `d`, or why it is too long.
fn bounded(d: Duration) -> Result<Duration, &'static str> {
    if d > MAX_DURATION {
        return Err(TOO_LARGE);
    }
    Ok(d)
}

/// A number of seconds as a duration, or why it is none.
fn seconds(secs: f64) -> Result<Duration, &'static str> {
    if secs.is_nan() {
        return Err("is not a number of seconds");
    }
    if secs < 0.0 {
        return Err(NEGATIVE);
    }
    Duration::try_from_secs_f64(secs)
        .map_err(|_| TOO_LARGE)
        .and_then(bounded)
}

/// A duration in `manage.toml`: a number of seconds (`900`, `0.25`) or a
/// string [`parse_seconds`] takes (`"15m"`, `"250ms"`).
fn opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Int(u64),
        Float(f64),
        Text(String),
    }
    let raw = Raw::deserialize(d)?;
    let dur = match raw {
        Raw::Int(s) => bounded(Duration::from_secs(s))
            .map_err(|e| serde::de::Error::custom(format!("{s} {e}")))?,
        Raw::Float(s) => seconds(s).map_err(|e| serde::de::Error::custom(format!("{s} {e}")))?,
        Raw::Text(t) => parse_seconds(&t).map_err(serde::de::Error::custom)?,
    };
    Ok(Some(dur))
}

impl Config {
    /// Loads the configuration as the CLI does: from the process's current
    /// directory and environment, with `overrides` on top.
    pub fn load(overrides: &Overrides) -> Result<Config, ConfigError> {
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
        Self::load_from(&cwd, &|k| std::env::var_os(k), overrides)
    }

    /// Loads the configuration from an explicit file, as a web app given its
    /// path does. The environment's state directory still takes precedence.
    pub fn from_file(path: impl Into<PathBuf>) -> Result<Config, ConfigError> {
        Self::load(&Overrides {
            config_file: Some(path.into()),
            ..Overrides::default()
        })
    }

    /// A configuration with every default and the given state directory:
    /// for tests and programs that set everything themselves.
    pub fn with_state_dir(state_dir: impl Into<PathBuf>) -> Config {
        Config {
            backend: BackendKind::File,
            state_dir: state_dir.into(),
            state_dir_source: Source::Override,
            postgres: PostgresSettings::default(),
            group: None,
            owner: None,
            session_timeout: DEFAULT_SESSION_TIMEOUT,
            maintenance_url: default_maintenance_url(),
            bypass_prefix: default_bypass_prefix(),
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
            refresh_interval: DEFAULT_REFRESH_INTERVAL,
            max_stale: DEFAULT_MAX_STALE,
            on_stale: OnStale::Static,
            file: None,
            aliases: BTreeMap::new(),
            commands: BTreeMap::new(),
            hooks: HookSettings::default(),
            history_max_size: DEFAULT_HISTORY_MAX_SIZE,
            file_stat: None,
        }
    }

    /// Loads the configuration as seen from `cwd` with the environment `env`.
    pub fn load_from(
        cwd: &Path,
        env: &dyn Fn(&str) -> Option<OsString>,
        overrides: &Overrides,
    ) -> Result<Config, ConfigError> {
        let nonempty = |k: &str| env(k).filter(|v| !v.is_empty()).map(PathBuf::from);
        let file_path = match (&overrides.config_file, nonempty(ENV_CONFIG)) {
            (Some(p), _) => Some(cwd.join(p)),
            (None, Some(p)) => Some(cwd.join(p)),
            (None, None) => find_upwards(cwd),
        };
        let (file, file_stat) = match &file_path {
            Some(p) => {
                let (file, stat) = parse_file(p)?;
                (file, Some(stat))
            }
            None => (FileConfig::default(), None),
        };
        let file_dir = file_path
            .as_deref()
            .and_then(Path::parent)
            .map(Path::to_path_buf);

        let postgres = postgres_settings(&file, file_path.as_deref(), env)?;
        let backend = if postgres.url_source == Source::Env(ENV_DATABASE_URL) {
            BackendKind::Postgres
        } else {
            file.backend.unwrap_or_default()
        };
        if backend == BackendKind::Postgres && postgres.url.is_none() {
            return Err(ConfigError::Setting {
                origin: file_path
                    .as_deref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| FILE_NAME.to_owned()),
                key: "database_url",
                message: format!(
                    "backend = \"postgres\" needs the server's URL: set database_url = \
                     \"postgres://USER:PASSWORD@HOST:5432/DATABASE\", or ${ENV_DATABASE_URL}"
                ),
            });
        }

        let (state_dir, state_dir_source) = if let Some(d) = &overrides.state_dir {
            (cwd.join(d), Source::Override)
        } else if let Some(d) = nonempty(ENV_STATE_DIR) {
            (cwd.join(d), Source::Env(ENV_STATE_DIR))
        } else if let (Some(d), Some(p)) = (&file.state_dir, &file_path) {
            let base = file_dir.clone().unwrap_or_else(|| cwd.to_path_buf());
            (base.join(d), Source::File(p.clone()))
        } else {
            match default_state_dir(env) {
                Ok(d) => (d, Source::Default),
                // The PostgreSQL backend keeps no state directory.
                Err(_) if backend == BackendKind::Postgres => (PathBuf::new(), Source::Default),
                Err(e) => return Err(e),
            }
        };

        let aliases = file
            .alias
            .into_iter()
            .map(|(k, v)| {
                let argv = match v {
                    AliasValue::Line(l) => l.split_whitespace().map(str::to_owned).collect(),
                    AliasValue::Argv(a) => a,
                };
                (k, argv)
            })
            .collect();

        let refresh_interval = file.refresh_interval.unwrap_or(DEFAULT_REFRESH_INTERVAL);
        let max_stale = file
            .max_stale
            .unwrap_or(DEFAULT_MAX_STALE.max(refresh_interval * 2));
        if max_stale < refresh_interval * 2 {
            return Err(ConfigError::Setting {
                origin: file_path
                    .as_deref()
                    .map_or_else(|| FILE_NAME.to_owned(), |p| p.display().to_string()),
                key: "max_stale",
                message: format!(
                    "{} is shorter than twice refresh_interval ({}): a layer would give up on \
                     the mode after one missed read; set max_stale to at least {}",
                    humantime::format_duration(max_stale),
                    humantime::format_duration(refresh_interval),
                    humantime::format_duration(refresh_interval * 2)
                ),
            });
        }
        Ok(Config {
            backend,
            state_dir,
            state_dir_source,
            postgres,
            group: file.group.filter(|g| !g.is_empty()),
            owner: file.owner.filter(|o| !o.is_empty()),
            session_timeout: file.session_timeout.unwrap_or(DEFAULT_SESSION_TIMEOUT),
            maintenance_url: file.maintenance_url.unwrap_or_else(default_maintenance_url),
            bypass_prefix: file.bypass_prefix.unwrap_or_else(default_bypass_prefix),
            lock_timeout: overrides
                .lock_timeout
                .or(file.lock_timeout)
                .unwrap_or(DEFAULT_LOCK_TIMEOUT),
            refresh_interval,
            max_stale,
            on_stale: file.on_stale.unwrap_or_default(),
            hooks: HookSettings {
                on_change: file
                    .hooks
                    .on_change
                    .into_iter()
                    .map(|HookProgram(mut argv)| {
                        let base = file_dir.clone().unwrap_or_else(|| cwd.to_path_buf());
                        let path: PathBuf = base
                            .join(&argv[0])
                            .components()
                            .filter(|c| *c != std::path::Component::CurDir)
                            .collect();
                        argv[0] = path.to_string_lossy().into_owned();
                        argv
                    })
                    .collect(),
                timeout: file.hooks.timeout.unwrap_or(DEFAULT_HOOK_TIMEOUT),
            },
            history_max_size: file.history.max_size.unwrap_or(DEFAULT_HISTORY_MAX_SIZE),
            file_stat,
            file: file_path,
            aliases,
            commands: file.commands,
        })
    }
}

/// The PostgreSQL settings: the URL from the environment or the file, the
/// rest from the file.
fn postgres_settings(
    file: &FileConfig,
    file_path: Option<&Path>,
    env: &dyn Fn(&str) -> Option<OsString>,
) -> Result<PostgresSettings, ConfigError> {
    let from_env = env(ENV_DATABASE_URL).filter(|v| !v.is_empty());
    let (url, url_source) = match (from_env, &file.database_url, file_path) {
        (Some(v), _, _) => {
            let text = v.into_string().map_err(|_| ConfigError::Setting {
                origin: format!("${ENV_DATABASE_URL}"),
                key: "database_url",
                message: "is not UTF-8".into(),
            })?;
            let url = DatabaseUrl::parse(&text).map_err(|message| ConfigError::Setting {
                origin: format!("${ENV_DATABASE_URL}"),
                key: "database_url",
                message,
            })?;
            (Some(url), Source::Env(ENV_DATABASE_URL))
        }
        (None, Some(u), Some(p)) => (Some(u.clone()), Source::File(p.to_path_buf())),
        _ => (None, Source::Default),
    };
    Ok(PostgresSettings {
        url,
        url_source,
        site: file.site.clone().unwrap_or_else(|| DEFAULT_SITE.to_owned()),
        schema: file
            .postgres
            .schema
            .clone()
            .unwrap_or_else(|| DEFAULT_SCHEMA.to_owned()),
        connect_timeout: file
            .postgres
            .connect_timeout
            .unwrap_or(DEFAULT_CONNECT_TIMEOUT),
    })
}

fn default_maintenance_url() -> SitePath {
    SitePath::parse(DEFAULT_MAINTENANCE_URL).expect("the default maintenance URL is a valid path")
}

fn default_bypass_prefix() -> SitePath {
    SitePath::parse(DEFAULT_BYPASS_PREFIX).expect("the default bypass prefix is a valid path")
}

/// The nearest `manage.toml` in `start` or one of its ancestors.
pub fn find_upwards(start: &Path) -> Option<PathBuf> {
    // `stat(2)` (links followed, as `Path::is_file`), without std's first
    // failing `statx` asking the kernel once more whether it has `statx`.
    let is_file = |p: &Path| {
        rustix::fs::stat(p).is_ok_and(|st| {
            rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::RegularFile
        })
    };
    start
        .ancestors()
        .map(|dir| dir.join(FILE_NAME))
        .find(|p| is_file(p))
}

/// Reads and parses the file, with its owner and mode from the descriptor
/// it was read through (what the hooks' trust check judges is what was
/// read).
fn parse_file(path: &Path) -> Result<(FileConfig, FileStat), ConfigError> {
    use std::io::Read;
    use std::os::unix::fs::MetadataExt;
    let read_err = |cause| ConfigError::Read {
        path: path.to_path_buf(),
        cause,
    };
    let mut f = std::fs::File::open(path).map_err(read_err)?;
    let meta = f.metadata().map_err(read_err)?;
    let stat = FileStat {
        uid: meta.uid(),
        gid: meta.gid(),
        mode: meta.mode(),
    };
    let mut text = String::with_capacity(meta.len() as usize);
    f.read_to_string(&mut text).map_err(read_err)?;
    let parsed = toml::from_str::<FileConfig>(&text).map_err(|e| {
        let offset = e.span().map(|s| s.start).unwrap_or(0).min(text.len());
        let line = text[..offset].matches('\n').count() + 1;
        let line_text = text.lines().nth(line - 1).unwrap_or("");
        let key = key_of(e.message()).or_else(|| {
            line_text
                .split_once('=')
                .map(|(k, _)| k.trim().trim_matches('"').to_owned())
                .filter(|k| !k.is_empty())
        });
        ConfigError::Parse {
            path: path.to_path_buf(),
            line,
            key,
            message: e.message().trim().to_owned(),
        }
    })?;
    Ok((parsed, stat))
}

/// The key an "unknown field `x`" message names.
fn key_of(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    Some(rest.split('`').next()?.to_owned())
}

/// The per-user state directory: the platform's state directory, or its
/// data-local directory where it has none (macOS).
fn default_state_dir(env: &dyn Fn(&str) -> Option<OsString>) -> Result<PathBuf, ConfigError> {
    // `directories` reads $HOME itself; consult our env only to refuse early
    // when a test (or a daemon) has none.
    if env("HOME").is_none() {
        return Err(ConfigError::NoStateDir);
    }
    let dirs = directories::ProjectDirs::from("", "", "manage").ok_or(ConfigError::NoStateDir)?;
    Ok(dirs
        .state_dir()
        .unwrap_or_else(|| dirs.data_local_dir())
        .to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> + use<> {
        let map: HashMap<String, OsString> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        move |k| map.get(k).cloned()
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn defaults_without_a_file() {
        let tmp = tempfile::tempdir().unwrap();
        let c = Config::load_from(
            tmp.path(),
            &env_of(&[("HOME", "/home/x")]),
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(c.session_timeout, Duration::from_secs(900));
        assert_eq!(c.lock_timeout, Duration::from_secs(1));
        assert_eq!(c.refresh_interval, Duration::from_millis(250));
        assert_eq!(c.state_dir_source, Source::Default);
        assert_eq!(c.maintenance_url.as_str(), "/maintenance.html");
        assert_eq!(c.bypass_prefix.as_str(), "/_maintenance/bypass/");
        assert!(c.file.is_none());
    }

    #[test]
    fn max_stale_and_on_stale_default_to_a_minute_and_static_and_are_checked() {
        let tmp = tempfile::tempdir().unwrap();
        let load = |text: &str| {
            write(tmp.path(), "manage.toml", text);
            Config::load_from(
                tmp.path(),
                &env_of(&[("HOME", "/home/x")]),
                &Overrides::default(),
            )
        };
        let c = load("").unwrap();
        assert_eq!(c.max_stale, Duration::from_secs(60));
        assert_eq!(c.on_stale, OnStale::Static);
        // Never shorter than twice a long refresh interval by default.
        let c = load("refresh_interval = \"1h\"\n").unwrap();
        assert_eq!(c.max_stale, Duration::from_secs(7200));
        let c = load("max_stale = \"5m\"\non_stale = \"closed\"\n").unwrap();
        assert_eq!(c.max_stale, Duration::from_secs(300));
        assert_eq!(c.on_stale, OnStale::Closed);

        let e = load("refresh_interval = \"1s\"\nmax_stale = \"1s\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("manage.toml"), "{e}");
        assert!(e.contains("`max_stale`"), "{e}");
        assert!(e.contains("at least 2s"), "{e}");
        let e = load("on_stale = \"open\"\n").unwrap_err().to_string();
        assert!(e.contains("manage.toml:1"), "{e}");
        assert!(e.contains("on_stale"), "{e}");
        assert!(e.contains("static") && e.contains("closed"), "{e}");
    }

    #[test]
    fn finds_the_file_by_walking_up_and_resolves_state_dir_against_it() {
        let tmp = tempfile::tempdir().unwrap();
        let file = write(
            tmp.path(),
            "site/manage.toml",
            "state_dir = \"var/state\"\nsession_timeout = \"15m\"\nrefresh_interval = 0.1\ngroup = \"www-data\"\n",
        );
        let deep = tmp.path().join("site/a/b");
        std::fs::create_dir_all(&deep).unwrap();
        let c = Config::load_from(&deep, &env_of(&[]), &Overrides::default()).unwrap();
        assert_eq!(c.file.as_deref(), Some(file.as_path()));
        assert_eq!(c.state_dir, tmp.path().join("site/var/state"));
        assert_eq!(c.state_dir_source, Source::File(file));
        assert_eq!(c.session_timeout, Duration::from_secs(900));
        assert_eq!(c.refresh_interval, Duration::from_millis(100));
        assert_eq!(c.group.as_deref(), Some("www-data"));
    }

    #[test]
    fn flag_beats_env_beats_file() {
        let tmp = tempfile::tempdir().unwrap();
        write(
            tmp.path(),
            "manage.toml",
            "state_dir = \"from-file\"\nlock_timeout = 3\n",
        );
        let env = env_of(&[(ENV_STATE_DIR, "/from/env")]);
        let c = Config::load_from(tmp.path(), &env, &Overrides::default()).unwrap();
        assert_eq!(c.state_dir, PathBuf::from("/from/env"));
        assert_eq!(c.state_dir_source, Source::Env(ENV_STATE_DIR));
        assert_eq!(c.lock_timeout, Duration::from_secs(3));
        let o = Overrides {
            state_dir: Some("/from/flag".into()),
            lock_timeout: Some(Duration::from_millis(10)),
            ..Default::default()
        };
        let c = Config::load_from(tmp.path(), &env, &o).unwrap();
        assert_eq!(c.state_dir, PathBuf::from("/from/flag"));
        assert_eq!(c.state_dir_source, Source::Override);
        assert_eq!(c.lock_timeout, Duration::from_millis(10));
    }

    #[test]
    fn config_env_and_flag_name_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        write(tmp.path(), "manage.toml", "state_dir = \"walked\"\n");
        let other = write(tmp.path(), "etc/site.toml", "state_dir = \"/abs/state\"\n");
        let env = env_of(&[(ENV_CONFIG, other.to_str().unwrap())]);
        let c = Config::load_from(tmp.path(), &env, &Overrides::default()).unwrap();
        assert_eq!(c.state_dir, PathBuf::from("/abs/state"));
        let o = Overrides {
            config_file: Some(tmp.path().join("manage.toml")),
            ..Default::default()
        };
        let c = Config::load_from(tmp.path(), &env, &o).unwrap();
        assert_eq!(c.state_dir, tmp.path().join("walked"));
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let tmp = tempfile::tempdir().unwrap();
        let p = write(
            tmp.path(),
            "manage.toml",
            "state_dir = \"s\"\n\nsesion_timeout = 5\n",
        );
        let err = Config::load_from(tmp.path(), &env_of(&[]), &Overrides::default()).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with(&format!("{}:3: key `sesion_timeout`", p.display())),
            "{msg}"
        );
        assert!(
            msg.contains("session_timeout"),
            "lists the known keys: {msg}"
        );
    }

    #[test]
    fn bad_value_names_file_line_and_key() {
        let tmp = tempfile::tempdir().unwrap();
        let p = write(
            tmp.path(),
            "manage.toml",
            "# site\nlock_timeout = \"soon\"\n",
        );
        let msg = Config::load_from(tmp.path(), &env_of(&[]), &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(
            msg.starts_with(&format!("{}:2: key `lock_timeout`", p.display())),
            "{msg}"
        );
        assert!(msg.contains("\"soon\" is not a duration"), "{msg}");
    }

    /// Fuzzing (`fuzz/`, target `config`): a duration too long to double
    /// panicked in `load_from` (`refresh_interval * 2`, the settle time).
    /// Every duration past `MAX_DURATION` is refused as it is read, naming
    /// the key, in each form the file takes.
    #[test]
    fn a_duration_too_long_to_double_is_refused_naming_its_key() {
        let tmp = tempfile::tempdir().unwrap();
        for (input, key) in [
            ("refresh_interval = 1e19\n", "refresh_interval"),
            (
                "refresh_interval = 9223372036854775807\n",
                "refresh_interval",
            ),
            (
                "refresh_interval = \"18446744073709551615s\"\n",
                "refresh_interval",
            ),
            ("max_stale = 1e19\nrefresh_interval = 1e19\n", "max_stale"),
            ("session_timeout = \"101 years\"\n", "session_timeout"),
        ] {
            let path = write(
                tmp.path(),
                "manage.toml",
                &format!("state_dir = \"s\"\n{input}"),
            );
            let err = Config::load_from(tmp.path(), &env_of(&[]), &Overrides::default())
                .unwrap_err()
                .to_string();
            assert!(err.contains(&path.display().to_string()), "{input}: {err}");
            assert!(err.contains(key), "{input}: {err}");
            assert!(err.contains("too large"), "{input}: {err}");
        }
        assert_eq!(parse_seconds("3153600000"), Ok(MAX_DURATION));
        assert!(
            parse_seconds("3153600001")
                .unwrap_err()
                .contains("too large")
        );
    }

    /// A flag takes every form the file takes, and says what is wrong
    /// with the rest: not a duration, negative, or too large.
    #[test]
    fn flags_take_the_durations_the_file_takes() {
        for (text, want) in [
            ("60", Duration::from_secs(60)),
            ("0", Duration::ZERO),
            ("0.25", Duration::from_millis(250)),
            ("15m", Duration::from_secs(900)),
            ("1h30m", Duration::from_secs(5400)),
            ("1h 30m", Duration::from_secs(5400)),
            ("250ms", Duration::from_millis(250)),
        ] {
            assert_eq!(parse_seconds(text), Ok(want), "{text}");
        }
        for (text, said) in [
            ("soon", "\"soon\" is not a duration"),
            ("", "is not a duration"),
            ("NaN", "is not a number of seconds"),
            ("-1", "\"-1\" cannot be negative"),
            ("-0.5", "cannot be negative"),
            ("-15m", "\"-15m\" cannot be negative"),
            (
                "99999999999999999999",
                "\"99999999999999999999\" is too large",
            ),
            ("inf", "is too large"),
            ("99999999999999999999s", "is too large"),
            (
                "15x",
                "\"15x\" is not a duration (no unit \"x\": ns, us, ms",
            ),
        ] {
            let err = parse_seconds(text).unwrap_err();
            assert!(err.contains(said), "{text:?}: {err}");
        }
        // The parser's own wording (a byte offset) stays out of it.
        let err = parse_seconds("abc").unwrap_err();
        assert_eq!(
            err,
            "\"abc\" is not a duration; write seconds (900, 0.25) or units (\"15m\", \"1h30m\", \"250ms\")"
        );
        let tmp = tempfile::tempdir().unwrap();
        for (value, want) in [("\"1h30m\"", "5400"), ("\"0.5\"", "0.5"), ("90", "90")] {
            write(
                tmp.path(),
                "manage.toml",
                &format!("state_dir = \"s\"\nlock_timeout = {value}\n"),
            );
            let c = Config::load_from(tmp.path(), &env_of(&[]), &Overrides::default()).unwrap();
            assert_eq!(c.lock_timeout, parse_seconds(want).unwrap(), "{value}");
        }
        for (value, said) in [("-1", "cannot be negative"), ("-2.5", "cannot be negative")] {
            write(
                tmp.path(),
                "manage.toml",
                &format!("state_dir = \"s\"\nlock_timeout = {value}\n"),
            );
            let msg = Config::load_from(tmp.path(), &env_of(&[]), &Overrides::default())
                .unwrap_err()
                .to_string();
            assert!(
                msg.contains("key `lock_timeout`") && msg.contains(said),
                "{msg}"
            );
        }
    }

    #[test]
    fn broken_toml_names_the_line() {
        let tmp = tempfile::tempdir().unwrap();
        write(tmp.path(), "manage.toml", "state_dir = \"s\"\ngroup = \n");
        let msg = Config::load_from(tmp.path(), &env_of(&[]), &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(msg.contains("manage.toml:2:"), "{msg}");
    }

    #[test]
    fn missing_explicit_file_is_an_error_naming_it() {
        let tmp = tempfile::tempdir().unwrap();
        let o = Overrides {
            config_file: Some("nope.toml".into()),
            ..Default::default()
        };
        let msg = Config::load_from(tmp.path(), &env_of(&[]), &o)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("nope.toml"), "{msg}");
    }

    #[test]
    fn aliases_take_a_line_or_an_array() {
        let tmp = tempfile::tempdir().unwrap();
        write(
            tmp.path(),
            "manage.toml",
            "state_dir = \"s\"\n[alias]\ndeploy = \"offline run -- migrate\"\nhi = [\"hello\", \"big world\"]\n",
        );
        let c = Config::load_from(tmp.path(), &env_of(&[]), &Overrides::default()).unwrap();
        assert_eq!(c.aliases["deploy"], ["offline", "run", "--", "migrate"]);
        assert_eq!(c.aliases["hi"], ["hello", "big world"]);
    }

    #[test]
    fn commands_tables_set_policies_and_reject_unknown_keys() {
        let tmp = tempfile::tempdir().unwrap();
        write(
            tmp.path(),
            "manage.toml",
            "state_dir = \"s\"\n[commands.report]\ndrain = \"stop\"\ninstances = \"concurrent\"\n",
        );
        let c = Config::load_from(tmp.path(), &env_of(&[]), &Overrides::default()).unwrap();
        assert_eq!(c.commands["report"].drain, Some(crate::policy::Drain::Stop));
        write(
            tmp.path(),
            "manage.toml",
            "state_dir = \"s\"\n[commands.report]\ndrian = \"stop\"\n",
        );
        let msg = Config::load_from(tmp.path(), &env_of(&[]), &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(msg.contains("manage.toml:3: key `drian`"), "{msg}");
        write(
            tmp.path(),
            "manage.toml",
            "state_dir = \"s\"\n[commands.report]\ndrain = \"later\"\n",
        );
        let msg = Config::load_from(tmp.path(), &env_of(&[]), &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("manage.toml:3:") && msg.contains("later"),
            "{msg}"
        );
    }

    #[test]
    fn site_paths_are_read_checked() {
        let tmp = tempfile::tempdir().unwrap();
        write(
            tmp.path(),
            "manage.toml",
            "state_dir = \"s\"\nmaintenance_url = \"/down/\"\nbypass_prefix = \"/_let-me-in\"\n",
        );
        let c = Config::load_from(tmp.path(), &env_of(&[]), &Overrides::default()).unwrap();
        assert_eq!(c.maintenance_url.as_str(), "/down/");
        assert_eq!(c.bypass_prefix.join("s3cret"), "/_let-me-in/s3cret");
    }

    /// Every unusable `maintenance_url` or `bypass_prefix` is refused when
    /// the file is read, naming the file, the line, the key, the value, what
    /// is wrong and what a valid value looks like.
    #[test]
    fn unusable_site_paths_name_file_line_key_and_the_fix() {
        let tmp = tempfile::tempdir().unwrap();
        for key in ["maintenance_url", "bypass_prefix"] {
            for (value, problem) in [
                ("/", "`/` alone would match every request"),
                ("", "it is empty"),
                ("maintenance.html", "does not start with `/`"),
                ("https://status.example.com/", "does not start with `/`"),
                ("/maintenance.html?from=site", "query or fragment"),
                ("/maintenance.html#top", "query or fragment"),
                ("/a/../admin", "`.` or `..` segment"),
                ("/%2e%2e/admin", "`.` or `..` segment"),
                ("/a/./b", "`.` or `..` segment"),
                ("/a//b", "empty segment"),
                ("/down for maintenance", "must be percent-encoded"),
                ("/down\\u0007", "must be percent-encoded"),
                ("/a%2Fb", "encodes `/`"),
                ("/a%00", "control character"),
                ("/a%zz", "invalid percent escape"),
                ("/a%c3", "UTF-8"),
            ] {
                let p = write(
                    tmp.path(),
                    "manage.toml",
                    &format!("state_dir = \"s\"\n\n{key} = \"{value}\"\n"),
                );
                let msg = Config::load_from(tmp.path(), &env_of(&[]), &Overrides::default())
                    .unwrap_err()
                    .to_string();
                let shown = value.replace("\\u0007", "\u{7}");
                assert!(
                    msg.starts_with(&format!("{}:3: key `{key}`: {shown:?}", p.display())),
                    "{key} = {value:?}: {msg}"
                );
                assert!(msg.contains(problem), "{key} = {value:?}: {msg}");
                assert!(
                    msg.contains("write an absolute path such as \"/maintenance.html\""),
                    "{msg}"
                );
            }
        }
    }

    #[test]
    fn hooks_and_the_history_bound_are_read_with_program_paths_made_absolute() {
        let tmp = tempfile::tempdir().unwrap();
        let site = tmp.path().join("site");
        write(
            &site,
            "manage.toml",
            "state_dir = \"s\"\n[hooks]\non_change = [\"./notify.sh\", [\"/usr/bin/logger\", \"-t\", \"site\"]]\ntimeout = \"3s\"\n[history]\nmax_size = \"64KiB\"\n",
        );
        let c = Config::load_from(&site, &env_of(&[]), &Overrides::default()).unwrap();
        let notify = site.join("notify.sh").to_string_lossy().into_owned();
        assert_eq!(
            c.hooks.on_change,
            [
                vec![notify],
                vec!["/usr/bin/logger".into(), "-t".into(), "site".into()]
            ]
        );
        assert_eq!(c.hooks.timeout, Duration::from_secs(3));
        assert_eq!(c.history_max_size, 64 * 1024);
        let stat = c.file_stat.expect("the file's owner, as read");
        assert_eq!(stat.uid, rustix::process::geteuid().as_raw());
        // Without them: no hooks, ten seconds, a mebibyte.
        write(&site, "manage.toml", "state_dir = \"s\"\n");
        let c = Config::load_from(&site, &env_of(&[]), &Overrides::default()).unwrap();
        assert!(c.hooks.on_change.is_empty());
        assert_eq!(c.hooks.timeout, Duration::from_secs(10));
        assert_eq!(c.history_max_size, 1024 * 1024);
    }

    #[test]
    fn bad_hooks_and_history_settings_name_file_line_key_and_the_fix() {
        let tmp = tempfile::tempdir().unwrap();
        for (text, key, said) in [
            ("[hooks]\non_change = [[]]\n", "on_change", "an empty array"),
            (
                "[hooks]\non_change = [\"\"]\n",
                "on_change",
                "an empty program path",
            ),
            (
                "[hooks]\non_change = [3]\n",
                "on_change",
                "is a program's path",
            ),
            (
                "[hooks]\non_change = \"/bin/true\"\n",
                "on_change",
                "invalid type",
            ),
            (
                "[hooks]\ntimeout = \"soon\"\n",
                "timeout",
                "\"soon\" is not a duration",
            ),
            ("[hooks]\non_chnage = []\n", "on_chnage", "unknown field"),
            // The time limit is `[hooks] timeout`; any other name is refused,
            // never ignored, and the message names the keys it takes.
            (
                "[hooks]\nhook_timeout = \"5s\"\n",
                "hook_timeout",
                "unknown field `hook_timeout`, expected `on_change` or `timeout`",
            ),
            (
                "\nhook_timeout = \"5s\"\n",
                "hook_timeout",
                "unknown field `hook_timeout`, expected one of",
            ),
            (
                "[history]\nmax_size = \"big\"\n",
                "max_size",
                "is not a size",
            ),
            ("[history]\nmax_size = 10\n", "max_size", "too small"),
            (
                "[history]\nmax_size = -1\n",
                "max_size",
                "cannot be negative",
            ),
        ] {
            let p = write(
                tmp.path(),
                "manage.toml",
                &format!("state_dir = \"s\"\n{text}"),
            );
            let msg = Config::load_from(tmp.path(), &env_of(&[]), &Overrides::default())
                .unwrap_err()
                .to_string();
            assert!(
                msg.starts_with(&format!("{}:3: key `{key}`", p.display())),
                "{text:?}: {msg}"
            );
            assert!(msg.contains(said), "{text:?}: {msg}");
        }
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("512k"), Ok(512 << 10));
        assert_eq!(parse_size("2 G"), Ok(2 << 30));
        assert!(
            parse_size("99999999999G")
                .unwrap_err()
                .contains("too large")
        );
    }

    #[test]
    fn postgres_is_chosen_in_the_file_with_its_settings() {
        let tmp = tempfile::tempdir().unwrap();
        write(
            tmp.path(),
            "manage.toml",
            "backend = \"postgres\"\ndatabase_url = \"postgres://app:pw@db:5433/site\"\nsite = \"shop\"\n[postgres]\nschema = \"ops\"\nconnect_timeout = \"2s\"\n",
        );
        let c = Config::load_from(tmp.path(), &env_of(&[]), &Overrides::default()).unwrap();
        assert_eq!(c.backend, BackendKind::Postgres);
        let pg = &c.postgres;
        assert_eq!(pg.url.as_ref().unwrap().endpoint(), "db:5433");
        assert_eq!((pg.site.as_str(), pg.schema.as_str()), ("shop", "ops"));
        assert_eq!(pg.connect_timeout, Duration::from_secs(2));
        // Defaults without the keys.
        let d = PostgresSettings::default();
        assert_eq!(
            (d.site.as_str(), d.schema.as_str()),
            (DEFAULT_SITE, DEFAULT_SCHEMA)
        );
    }

    #[test]
    fn the_database_url_variable_selects_postgres_and_wins_over_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        write(
            tmp.path(),
            "manage.toml",
            "state_dir = \"s\"\ndatabase_url = \"postgres://file-host/x\"\n",
        );
        let env = env_of(&[
            (ENV_DATABASE_URL, "postgres://env-host:6000/y"),
            (ENV_STATE_DIR, "/also/set"),
        ]);
        let c = Config::load_from(tmp.path(), &env, &Overrides::default()).unwrap();
        assert_eq!(c.backend, BackendKind::Postgres);
        assert_eq!(c.postgres.url.as_ref().unwrap().endpoint(), "env-host:6000");
        assert_eq!(c.postgres.url_source, Source::Env(ENV_DATABASE_URL));
        // Without the variable, the file's URL alone does not choose it.
        let c = Config::load_from(tmp.path(), &env_of(&[]), &Overrides::default()).unwrap();
        assert_eq!(c.backend, BackendKind::File);
    }

    #[test]
    fn bad_postgres_settings_name_the_file_or_variable_and_the_key_never_the_password() {
        let tmp = tempfile::tempdir().unwrap();
        for (text, key, says) in [
            (
                "database_url = \"mysql://a:topsecret@h/x\"\n",
                "database_url",
                "postgres://",
            ),
            (
                "database_url = \"postgres://a:topsecret@h/x?sslmode=maybe\"\n",
                "database_url",
                "verify-full",
            ),
            ("site = \"\"\n", "site", "1 to 100"),
            (
                "[postgres]\nschema = \"Drop Table\"\n",
                "schema",
                "plain schema name",
            ),
            (
                "[postgres]\nconect_timeout = 3\n",
                "conect_timeout",
                "connect_timeout",
            ),
            (
                "backend = \"postgres\"\n",
                "database_url",
                "needs the server's URL",
            ),
        ] {
            let p = write(tmp.path(), "manage.toml", text);
            let msg = Config::load_from(tmp.path(), &env_of(&[]), &Overrides::default())
                .unwrap_err()
                .to_string();
            assert!(msg.starts_with(&p.display().to_string()), "{msg}");
            assert!(msg.contains(&format!("`{key}`")), "{msg}");
            assert!(msg.contains(says), "{msg}");
            assert!(!msg.contains("topsecret"), "{msg}");
        }
        std::fs::remove_file(tmp.path().join("manage.toml")).unwrap();
        let env = env_of(&[
            (ENV_DATABASE_URL, "postgres://a:topsecret@h:0/x"),
            ("HOME", "/h"),
        ]);
        let msg = Config::load_from(tmp.path(), &env, &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(
            msg.starts_with("$MANAGE_DATABASE_URL: `database_url`: the port"),
            "{msg}"
        );
        assert!(!msg.contains("topsecret"), "{msg}");
    }

    #[test]
    fn hostile_site_and_schema_names_are_refused_naming_file_key_and_value() {
        let tmp = tempfile::tempdir().unwrap();
        let long = "x".repeat(101);
        for (text, key, value, says) in [
            // PostgreSQL's own schemas, and the application's.
            (
                "[postgres]\nschema = \"pg_catalog\"\n",
                "schema",
                "\"pg_catalog\"",
                "PostgreSQL's",
            ),
            (
                "[postgres]\nschema = \"pg_mine\"\n",
                "schema",
                "\"pg_mine\"",
                "PostgreSQL's",
            ),
            (
                "[postgres]\nschema = \"information_schema\"\n",
                "schema",
                "\"information_schema\"",
                "PostgreSQL's",
            ),
            (
                "[postgres]\nschema = \"public\"\n",
                "schema",
                "\"public\"",
                "application's",
            ),
            (
                "[postgres]\nschema = \"\"\n",
                "schema",
                "\"\"",
                "plain schema name",
            ),
            (
                "[postgres]\nschema = \"a\\\"b\"\n",
                "schema",
                "a\\\"b",
                "plain schema name",
            ),
            ("site = \"\"\n", "site", "\"\"", "1 to 100"),
            (
                "site = \"a\\u0000b\"\n",
                "site",
                "\"a\\0b\"",
                "control characters",
            ),
            ("site = \" shop\"\n", "site", "\" shop\"", "spaces at"),
            (
                &format!("site = \"{long}\"\n"),
                "site",
                "\"xxxx",
                "1 to 100",
            ),
        ] {
            let p = write(tmp.path(), "manage.toml", text);
            let msg = Config::load_from(tmp.path(), &env_of(&[]), &Overrides::default())
                .unwrap_err()
                .to_string();
            assert!(msg.starts_with(&p.display().to_string()), "{msg}");
            assert!(msg.contains(&format!("`{key}`")), "{msg}");
            assert!(msg.contains(value), "{text}: {msg}");
            assert!(msg.contains(says), "{msg}");
        }
        // Quotes, backslashes, unicode and SQL are a site's name like any
        // other (stored as a value, quoted), and so are names longer than
        // PostgreSQL's 63-byte identifiers.
        for site in [
            "it's; DROP TABLE x; --",
            "a\\b\"c",
            "ünïcødé 🚀",
            &"é".repeat(100),
        ] {
            check_site(site).unwrap();
        }
        check_schema("select").unwrap();
    }

    #[test]
    fn no_home_and_no_setting_is_a_clear_error() {
        let tmp = tempfile::tempdir().unwrap();
        let err = Config::load_from(tmp.path(), &env_of(&[]), &Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("set `state_dir`"), "{err}");
    }
}
