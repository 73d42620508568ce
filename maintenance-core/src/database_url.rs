//! [`DatabaseUrl`]: a `postgres://` URL as `database_url` in manage.toml or
//! `$MANAGE_DATABASE_URL` gives it, parsed as libpq reads a connection URI
//! (`postgres[ql]://[user[:password]@][host][:port][/dbname][?key=value&…]`,
//! percent-decoding, `host=/dir` for a Unix socket), and checked when the
//! configuration is read, so a bad URL is named with its file and key.
//! Pure parsing, always built: the backend that connects is behind the
//! `postgres` feature. The password is never shown: `Display` and `Debug`
//! print `***` in its place.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// libpq's `sslmode`: whether TLS is tried, required, and what is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SslMode {
    /// Plain TCP only.
    Disable,
    /// Plain first; TLS only if the server insists.
    Allow,
    /// TLS when the server offers it, plain otherwise (libpq's default).
    #[default]
    Prefer,
    /// TLS, without checking the certificate.
    Require,
    /// TLS, the certificate checked against `sslrootcert`, not the name.
    VerifyCa,
    /// TLS, the certificate and the host name checked.
    VerifyFull,
}

impl SslMode {
    /// The name libpq gives it (`verify-full`).
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Allow => "allow",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    fn parse(text: &str) -> Option<SslMode> {
        [
            SslMode::Disable,
            SslMode::Allow,
            SslMode::Prefer,
            SslMode::Require,
            SslMode::VerifyCa,
            SslMode::VerifyFull,
        ]
        .into_iter()
        .find(|m| m.as_str() == text)
    }

    /// Whether the server's certificate is checked against a root.
    pub fn verifies(self) -> bool {
        matches!(self, SslMode::VerifyCa | SslMode::VerifyFull)
    }
}

/// Where the server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// A host name or address, over TCP.
    Tcp(String),
    /// A directory holding the server's Unix socket (`.s.PGSQL.<port>`).
    Unix(PathBuf),
}

/// Client-side TCP keepalives (libpq's `keepalives_*`) and
/// `tcp_user_timeout`; `None` keeps the backend's defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Keepalives {
    /// `keepalives=0` turns them off.
    pub enabled: Option<bool>,
    /// `keepalives_idle`: idle time before the first probe.
    pub idle: Option<Duration>,
    /// `keepalives_interval`: time between probes.
    pub interval: Option<Duration>,
    /// `keepalives_count`: probes lost before the connection is dead.
    pub count: Option<u32>,
    /// `tcp_user_timeout` (milliseconds in the URL): how long sent data may
    /// stay unacknowledged.
    pub user_timeout: Option<Duration>,
}

/// A parsed `postgres://` URL. The password is kept but never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl {
    /// The role to log in as; `None`: the user running the process.
    pub user: Option<String>,
    /// The password, if the URL has one.
    password: Option<String>,
    /// Where the server is; the libpq default is `localhost`.
    pub host: Host,
    /// The port; 5432 by default.
    pub port: u16,
    /// The database; `None`: named as the user.
    pub dbname: Option<String>,
    /// `sslmode`.
    pub sslmode: SslMode,
    /// `sslrootcert`: the PEM file of trusted roots for `verify-ca` and
    /// `verify-full` (libpq's default is `~/.postgresql/root.crt`).
    pub sslrootcert: Option<PathBuf>,
    /// `connect_timeout` in the URL (seconds), which wins over the file's.
    pub connect_timeout: Option<Duration>,
    /// `application_name`.
    pub application_name: Option<String>,
    /// Client-side keepalives.
    pub keepalives: Keepalives,
}

impl DatabaseUrl {
    /// Parses `text`; the error says what is wrong in a sentence that never
    /// holds the password.
    pub fn parse(text: &str) -> Result<DatabaseUrl, String> {
        let shape = "write postgres://USER:PASSWORD@HOST:PORT/DATABASE?sslmode=require";
        let rest = text
            .strip_prefix("postgres://")
            .or_else(|| text.strip_prefix("postgresql://"))
            .ok_or_else(|| {
                format!("not a PostgreSQL URL: it must start with postgres:// ({shape})")
            })?;
        let (before_query, query) = match rest.split_once('?') {
            Some((a, q)) => (a, Some(q)),
            None => (rest, None),
        };
        let (authority, path) = match before_query.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (before_query, None),
        };
        // A `/` or `?` left unencoded in the password ends the authority
        // early, so the rest of the password would be read as the host and
        // port, and shown in their errors: refuse before, saying nothing of
        // the pieces.
        let first_key = query.map_or("", |q| q.split(['=', '&']).next().unwrap_or(""));
        if !authority.contains('@') && (before_query.contains('@') || first_key.contains('@')) {
            return Err(
                "the URL has an `@` after its first `/` or `?`: a `/`, `?` or `@` in the user \
                 name or password must be percent-encoded (%2F, %3F, %40)"
                    .into(),
            );
        }
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let (user, password) = match userinfo {
            None => (None, None),
            Some(u) => match u.split_once(':') {
                Some((name, pw)) => (
                    nonempty(decode(name, "the user name")?),
                    Some(decode(pw, "the password")?),
                ),
                None => (nonempty(decode(u, "the user name")?), None),
            },
        };
        if hostport.contains(',') {
            return Err(
                "several hosts (host1,host2) are not supported: give one host, or put a proxy \
                 that fails over in front of them"
                    .into(),
            );
        }
        let (host_text, port_text) = split_host_port(hostport)?;
        let mut url = DatabaseUrl {
            user,
            password,
            host: Host::Tcp(match nonempty(decode(host_text, "the host")?) {
                Some(h) => h,
                None => "localhost".into(),
            }),
            port: 5432,
            dbname: match path {
                Some(p) => nonempty(decode(p, "the database name")?),
                None => None,
            },
            sslmode: SslMode::default(),
            sslrootcert: None,
            connect_timeout: None,
            application_name: None,
            keepalives: Keepalives::default(),
        };
        if let Some(p) = port_text {
            url.port = parse_port(p)?;
        }
        for pair in query
            .into_iter()
            .flat_map(|q| q.split('&'))
            .filter(|p| !p.is_empty())
        {
            let (key, value) = pair.split_once('=').ok_or_else(|| {
                format!(
                    "the parameter {:?} has no value: write key=value",
                    shown(pair)
                )
            })?;
            let key = decode(key, "a parameter name")?;
            let value = decode(value, "a parameter value")?;
            url.set(&key, &value)?;
        }
        Ok(url)
    }

    fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        let seconds = |v: &str| -> Result<Duration, String> {
            v.trim()
                .parse::<u64>()
                .map(Duration::from_secs)
                .map_err(|_| format!("{key}={v:?} is not a whole number of seconds"))
        };
        match key {
            "sslmode" => {
                self.sslmode = SslMode::parse(value).ok_or_else(|| {
                    format!(
                        "sslmode={value:?} is not one of disable, allow, prefer, require, \
                         verify-ca, verify-full"
                    )
                })?;
            }
            "sslrootcert" => self.sslrootcert = Some(PathBuf::from(value)),
            "host" if value.starts_with('/') => self.host = Host::Unix(PathBuf::from(value)),
            "host" if !value.is_empty() => self.host = Host::Tcp(value.to_owned()),
            "port" => self.port = parse_port(value)?,
            "user" => self.user = nonempty(value.to_owned()),
            "password" => self.password = Some(value.to_owned()),
            "dbname" => self.dbname = nonempty(value.to_owned()),
            "application_name" => self.application_name = Some(value.to_owned()),
            "connect_timeout" => self.connect_timeout = Some(seconds(value)?),
            "keepalives" => {
                self.keepalives.enabled = Some(match value {
                    "0" => false,
                    "1" => true,
                    _ => return Err(format!("keepalives={value:?} must be 0 or 1")),
                })
            }
            "keepalives_idle" => self.keepalives.idle = Some(seconds(value)?),
            "keepalives_interval" => self.keepalives.interval = Some(seconds(value)?),
            "keepalives_count" => {
                self.keepalives.count = Some(
                    value
                        .parse()
                        .map_err(|_| format!("keepalives_count={value:?} is not a whole number"))?,
                )
            }
            "tcp_user_timeout" => {
                self.keepalives.user_timeout =
                    Some(Duration::from_millis(value.parse().map_err(|_| {
                        format!("tcp_user_timeout={value:?} is not a whole number of milliseconds")
                    })?))
            }
            _ => {
                return Err(format!(
                    "unknown parameter {:?}: this backend reads sslmode, sslrootcert, host, port, \
                     user, password, dbname, application_name, connect_timeout, keepalives, \
                     keepalives_idle, keepalives_interval, keepalives_count and tcp_user_timeout",
                    shown(key)
                ));
            }
        }
        Ok(())
    }

    /// The password, for the connection's startup only.
    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    /// `host:port` (or the socket's path), for messages: never the user's
    /// password.
    pub fn endpoint(&self) -> String {
        match &self.host {
            Host::Tcp(h) if h.contains(':') => format!("[{h}]:{}", self.port),
            Host::Tcp(h) => format!("{h}:{}", self.port),
            Host::Unix(dir) => format!("{}/.s.PGSQL.{}", dir.display(), self.port),
        }
    }
}

impl fmt::Display for DatabaseUrl {
    /// The URL with `***` for the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("postgres://")?;
        if let Some(u) = &self.user {
            f.write_str(u)?;
            if self.password.is_some() {
                f.write_str(":***")?;
            }
            f.write_str("@")?;
        }
        match &self.host {
            Host::Tcp(h) if h.contains(':') => write!(f, "[{h}]:{}", self.port)?,
            Host::Tcp(h) => write!(f, "{h}:{}", self.port)?,
            Host::Unix(_) => write!(f, ":{}", self.port)?,
        }
        if let Some(d) = &self.dbname {
            write!(f, "/{d}")?;
        }
        if let Host::Unix(dir) = &self.host {
            write!(f, "?host={}", dir.display())?;
        }
        Ok(())
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({self})")
    }
}

fn nonempty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

/// What may be shown of a piece of the URL: at most 40 characters.
fn shown(s: &str) -> String {
    s.chars().take(40).collect()
}

fn parse_port(p: &str) -> Result<u16, String> {
    match p.parse::<u16>() {
        Ok(n) if n > 0 => Ok(n),
        // Digits are shown; anything else may be a piece of a password
        // written without its user (`postgres://user:secret/db`).
        _ if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => Err(format!(
            "the port {:?} is not a number from 1 to 65535",
            shown(p)
        )),
        _ => Err(
            "the port after the host's `:` is not a number from 1 to 65535 (a `:` in \
             the password must be percent-encoded, %3A, and the user and password come \
             before an `@`)"
                .into(),
        ),
    }
}

/// `host`, `host:port`, `[v6]`, `[v6]:port`.
fn split_host_port(s: &str) -> Result<(&str, Option<&str>), String> {
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or("an IPv6 address in the URL lacks its closing `]`")?;
        return match after {
            "" => Ok((host, None)),
            a => match a.strip_prefix(':') {
                Some(p) => Ok((host, Some(p))),
                None => Err("after an IPv6 address's `]` only `:PORT` may follow".into()),
            },
        };
    }
    Ok(match s.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (s, None),
    })
}

/// Percent-decodes `s`; `what` names the piece in the error, which never
/// shows the piece itself (it may be the password).
fn decode(s: &str, what: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| {
                    format!("{what} has a `%` not followed by two hex digits (write %25 for `%`)")
                })?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("{what} is not UTF-8 once percent-decoded"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_part_of_a_url() {
        let u = DatabaseUrl::parse(
            "postgresql://app:s%40cret@db.example:6432/site?sslmode=verify-full&sslrootcert=/etc/ca.pem&connect_timeout=3&keepalives_idle=2&tcp_user_timeout=5000",
        )
        .unwrap();
        assert_eq!(u.user.as_deref(), Some("app"));
        assert_eq!(u.password(), Some("s@cret"));
        assert_eq!(u.host, Host::Tcp("db.example".into()));
        assert_eq!(u.port, 6432);
        assert_eq!(u.dbname.as_deref(), Some("site"));
        assert_eq!(u.sslmode, SslMode::VerifyFull);
        assert_eq!(u.sslrootcert, Some(PathBuf::from("/etc/ca.pem")));
        assert_eq!(u.connect_timeout, Some(Duration::from_secs(3)));
        assert_eq!(u.keepalives.idle, Some(Duration::from_secs(2)));
        assert_eq!(u.keepalives.user_timeout, Some(Duration::from_millis(5000)));
        assert_eq!(u.endpoint(), "db.example:6432");
    }

    #[test]
    fn defaults_are_libpqs() {
        let u = DatabaseUrl::parse("postgres://").unwrap();
        assert_eq!(
            (u.host.clone(), u.port),
            (Host::Tcp("localhost".into()), 5432)
        );
        assert_eq!(u.sslmode, SslMode::Prefer);
        let u = DatabaseUrl::parse("postgres:///db?host=/run/postgresql").unwrap();
        assert_eq!(u.host, Host::Unix("/run/postgresql".into()));
        assert_eq!(u.endpoint(), "/run/postgresql/.s.PGSQL.5432");
        let u = DatabaseUrl::parse("postgres://[::1]:7000/x").unwrap();
        assert_eq!(u.endpoint(), "[::1]:7000");
    }

    #[test]
    fn the_password_is_never_shown() {
        let secret = "hunter2-very-secret";
        let u = DatabaseUrl::parse(&format!("postgres://app:{secret}@db:5432/x")).unwrap();
        assert!(!u.to_string().contains(secret), "{u}");
        assert!(!format!("{u:?}").contains(secret));
        assert_eq!(u.to_string(), "postgres://app:***@db:5432/x");
        for bad in [
            format!("postgres://app:{secret}@db:99999/x"),
            format!("postgres://app:{secret}%zz@db/x"),
            format!("postgres://app:{secret}@db/x?sslmode=sometimes"),
            format!("postgres://app:{secret}@db/x?password={secret}&what=1"),
            format!("mysql://app:{secret}@db/x"),
            // A `/`, `?` or `:` left unencoded in the password, or the
            // user and `@` forgotten: no piece of it is shown as a port.
            format!("postgres://app:{secret}/more@db/x"),
            format!("postgres://app:{secret}?more@db/x"),
            format!("postgres://app:{secret}#x/y@db/x"),
            format!("postgres://app:{secret}/x"),
            format!("postgres://{secret}:{secret}/x"),
            format!("postgres://db/x?port={secret}"),
        ] {
            let err = DatabaseUrl::parse(&bad).unwrap_err();
            assert!(!err.contains(secret), "{err}");
        }
    }

    #[test]
    fn bad_urls_say_what_is_wrong() {
        let err = |t: &str| DatabaseUrl::parse(t).unwrap_err();
        assert!(err("localhost:5432").contains("must start with postgres://"));
        assert!(err("postgres://h:0/x").contains("port"));
        assert!(err("postgres://h/x?sslmode=on").contains("verify-full"));
        assert!(err("postgres://a,b/x").contains("several hosts"));
        assert!(err("postgres://h/x?colour=blue").contains("unknown parameter \"colour\""));
        assert!(err("postgres://app:a/b@db/x").contains("must be percent-encoded (%2F, %3F, %40)"));
        assert!(err("postgres://h:99999/x").contains("\"99999\""));
        // An `@` in a query value is the value's.
        let u = DatabaseUrl::parse("postgres://db/x?password=p@ss").unwrap();
        assert_eq!(u.password(), Some("p@ss"));
    }
}
