//! Connecting: our own socket (so its descriptor can be handed to a child,
//! see `socket.rs`) with client keepalives and `tcp_user_timeout`, TLS as
//! `sslmode` says (`tls.rs`), then the PostgreSQL startup through
//! tokio-postgres's `connect_raw`, all within `connect_timeout`. Every
//! connection asks the server, through its startup options, for
//! keepalives of its own and no idle timeouts (a lock connection sits idle
//! for as long as its task runs).
//!
//! **Values and the bound they give.** Server side `tcp_keepalives_idle=14`,
//! `tcp_keepalives_interval=2`, `tcp_keepalives_count=3` and
//! `tcp_user_timeout=20s`: the server ends a silently partitioned holder's
//! connection, and frees its locks, no sooner than 14 + 3 × 2 = 20 s
//! ([`KEEPALIVE_BOUND`], B) after the last packet it received — and, when
//! the cut caught it with data unacknowledged (an answer to the task's own
//! check), 20 s after that data, instead of after the kernel's
//! retransmissions (about 15 minutes: keepalives are not sent while data is
//! outstanding). A live task checks its lock's connection every
//! [`HOLD_BEAT`] (so the last packet is at most that old when a cut
//! begins) and sees a silent cut within [`HOLD_DETECT`] (D); it then tries
//! to enter again for [`REENTER`] (for [`REENTER_ENDED`] from a connection
//! it saw end), is stopped, and is killed
//! [`STOP_GRACE`](crate::task::STOP_GRACE) (G) later: B is above
//! `HOLD_BEAT` + D + `REENTER` + G and `HOLD_BEAT` + `REENTER_ENDED` + G,
//! checked at compile time, so the command is gone before the server frees
//! its lock (I1 across a partition), even when what ended the connection
//! was not the server.
//! Client side the keepalives below
//! and `tcp_user_timeout=10s`: a client whose server went silent learns it
//! at its next call within about 10 s, and dropping a connection on a dead
//! socket never blocks for the kernel's 15 minutes. The URL's
//! `keepalives_*` and `tcp_user_timeout` override the client side.
//!
//! **Driving.** Each connection's protocol half runs as a task on the
//! backend's runtime ([`drive`]), polling `Connection::poll_message`: a
//! LISTEN connection's notifications go to the sender it was opened with
//! ([`Target::connect_listening`]), every other's are dropped. The task
//! ends with the connection, dropping that sender: its receiver learns the
//! connection is gone.
//!
//! Errors name `host:port` and what to check, never the password.

use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol, SockAddr, TcpKeepalive, Type};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_postgres::error::SqlState;
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::{AsyncMessage, Notification};

use super::socket::{Detach, SilenceNote, Socket, Stream};
use crate::database_url::{DatabaseUrl, Host, SslMode};
use crate::error::{Error, Result};

/// Client keepalive: idle time before the first probe.
pub(super) const KEEPALIVE_IDLE: Duration = Duration::from_secs(5);
/// Client keepalive: time between probes.
pub(super) const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(1);
/// Client keepalive: probes lost before the connection is dead.
pub(super) const KEEPALIVE_COUNT: u32 = 3;
/// How long sent data may stay unacknowledged.
pub(super) const TCP_USER_TIMEOUT: Duration = Duration::from_secs(10);
/// The server-side settings every connection asks for at startup: its
/// keepalives and `tcp_user_timeout` give [`KEEPALIVE_BOUND`] (the
/// timeout in milliseconds, 20,000 = B).
const SERVER_OPTIONS: &str = "-c tcp_keepalives_idle=14 -c tcp_keepalives_interval=2 \
     -c tcp_keepalives_count=3 -c tcp_user_timeout=20000 -c idle_session_timeout=0 \
     -c idle_in_transaction_session_timeout=0 -c standard_conforming_strings=on";

/// B: the server frees a silently cut-off connection's locks no sooner than
/// this after the last packet it received from it (`SERVER_OPTIONS`:
/// idle 14 s + 3 probes × 2 s, and `tcp_user_timeout` the same 20 s for
/// data it sent that was never acknowledged).
pub(super) const KEEPALIVE_BOUND: Duration = Duration::from_secs(14 + 3 * 2);
/// How often a live task checks its lock's connection: one round trip.
pub(super) const HOLD_BEAT: Duration = Duration::from_secs(1);
/// How long a check's answer may take before the lock's connection counts
/// as lost.
pub(super) const HOLD_ANSWER: Duration = Duration::from_secs(2);
/// D: a silent cut of a task's lock connection is seen within this (the
/// next check, then its answer's time).
pub(super) const HOLD_DETECT: Duration = Duration::from_secs(3);
/// How long a task whose lock's connection went silent tries to enter
/// again (connect, take its lock, pass the gate) before it is stopped.
pub(super) const REENTER: Duration = Duration::from_secs(2);
/// How long a task whose lock's connection the server ended (a restart,
/// `pg_terminate_backend`) tries to enter again before it is stopped: a
/// restart shorter than this stops nobody.
pub(super) const REENTER_ENDED: Duration = Duration::from_secs(6);

const _: () = assert!(
    HOLD_BEAT.as_millis() + HOLD_ANSWER.as_millis() <= HOLD_DETECT.as_millis()
        && HOLD_BEAT.as_millis()
            + HOLD_DETECT.as_millis()
            + REENTER.as_millis()
            + crate::task::STOP_GRACE.as_millis()
            < KEEPALIVE_BOUND.as_millis()
        && HOLD_BEAT.as_millis() + REENTER_ENDED.as_millis() + crate::task::STOP_GRACE.as_millis()
            < KEEPALIVE_BOUND.as_millis(),
    "the command must be gone before the server frees its lock"
);

/// Where and how to connect.
#[derive(Debug)]
pub(super) struct Target {
    /// The server.
    pub url: DatabaseUrl,
    /// The bound on one connection attempt.
    pub connect_timeout: Duration,
    /// The last silence of a server past the answer guard, on any of
    /// this target's connections.
    pub silence: SilenceNote,
}

/// Where a LISTEN connection's notifications go.
pub(super) type Notices = tokio::sync::mpsc::UnboundedSender<Notification>;

/// One open connection: its client, and the socket's [`Detach`].
#[derive(Debug)]
pub(super) struct Conn {
    /// The driver's client.
    pub client: tokio_postgres::Client,
    /// The socket under it.
    pub socket: Detach,
}

impl Target {
    /// `host:port`, for messages.
    pub fn endpoint(&self) -> String {
        self.url.endpoint()
    }

    /// A database error naming the server.
    pub fn error(&self, problem: impl Into<String>) -> Error {
        Error::Database {
            server: self.endpoint(),
            problem: scrub(problem.into(), self.url.password()),
        }
    }

    /// The server could not be reached ([`Error::Unreachable`]).
    pub fn unreachable(&self, problem: impl Into<String>) -> Error {
        Error::Unreachable {
            server: self.endpoint(),
            problem: scrub(problem.into(), self.url.password()),
        }
    }

    /// How long the server was left silent, when a connection of this
    /// target was given up for it a moment ago (within a second): what a
    /// connection found ended then most likely died of.
    pub fn recent_silence(&self) -> Option<Duration> {
        let note = *self.silence.lock().unwrap_or_else(|e| e.into_inner());
        note.and_then(|(at, waited)| (at.elapsed() < Duration::from_secs(1)).then_some(waited))
    }

    /// How long the server may stay silent after a request before the
    /// connection is given up (`socket.rs`): the connect timeout, or the
    /// `tcp_user_timeout` a silent network is given, whichever is longer.
    pub fn answer_timeout(&self) -> Duration {
        let connect = self.url.connect_timeout.unwrap_or(self.connect_timeout);
        connect.max(self.url.keepalives.user_timeout.unwrap_or(TCP_USER_TIMEOUT))
    }

    /// Opens a connection within `connect_timeout`; `sslmode=allow` tries
    /// plain first and TLS if the server refuses plain.
    pub async fn connect(&self) -> Result<Conn> {
        self.connect_with(None).await
    }

    /// [`connect`](Self::connect), the connection's notifications sent to
    /// `notices` (a LISTEN connection, `listen.rs`); `notices` is dropped
    /// when the connection ends.
    pub async fn connect_listening(&self, notices: Notices) -> Result<Conn> {
        self.connect_with(Some(notices)).await
    }

    async fn connect_with(&self, notices: Option<Notices>) -> Result<Conn> {
        let timeout = self.url.connect_timeout.unwrap_or(self.connect_timeout);
        let attempt = async {
            match self.url.sslmode {
                SslMode::Allow => match self.attempt(SslMode::Disable, notices.clone()).await {
                    Err(e) if wants_tls(&e) => self.attempt(SslMode::Require, notices).await,
                    other => other,
                },
                mode => self.attempt(mode, notices).await,
            }
        };
        match tokio::time::timeout(timeout, attempt).await {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(e)) => Err(self.describe(e)),
            Err(_) => Err(self.unreachable(format!(
                "no answer within {} (connect_timeout): check that the host and port in the \
                 database URL are right, that the server runs, and that no firewall drops the \
                 packets",
                humantime::format_duration(timeout)
            ))),
        }
    }

    async fn attempt(
        &self,
        mode: SslMode,
        notices: Option<Notices>,
    ) -> std::result::Result<Conn, Failure> {
        let (stream, is_unix) = self.socket().await?;
        let (socket, detach) =
            Socket::new(stream, self.answer_timeout(), Arc::clone(&self.silence));
        let mut config = tokio_postgres::Config::new();
        let me = crate::identity::Identity::current();
        let user = self.url.user.clone().unwrap_or_else(|| me.user.clone());
        config
            .user(&user)
            .dbname(self.url.dbname.as_deref().unwrap_or(&user))
            .application_name(self.url.application_name.as_deref().unwrap_or("manage"))
            .options(SERVER_OPTIONS);
        if let Some(pw) = self.url.password() {
            config.password(pw);
        }
        let client = if is_unix || mode == SslMode::Disable {
            config.ssl_mode(tokio_postgres::config::SslMode::Disable);
            let (client, connection) = config
                .connect_raw(socket, tokio_postgres::NoTls)
                .await
                .map_err(Failure::Pg)?;
            drive(connection, notices);
            client
        } else {
            config.ssl_mode(match mode {
                SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
                _ => tokio_postgres::config::SslMode::Require,
            });
            let tls = super::tls::client_config(&self.url).map_err(Failure::Setup)?;
            let mut maker = tokio_postgres_rustls::MakeRustlsConnect::new(tls);
            let host = match &self.url.host {
                Host::Tcp(h) => h.clone(),
                Host::Unix(_) => String::new(),
            };
            let connector = <tokio_postgres_rustls::MakeRustlsConnect as MakeTlsConnect<Socket>>::make_tls_connect(&mut maker, &host)
                .map_err(|e| Failure::Setup(e.to_string()))?;
            let (client, connection) = config
                .connect_raw(socket, connector)
                .await
                .map_err(Failure::Pg)?;
            drive(connection, notices);
            client
        };
        Ok(Conn {
            client,
            socket: detach,
        })
    }

    /// A connected socket of our own making.
    async fn socket(&self) -> std::result::Result<(Stream, bool), Failure> {
        let host = match &self.url.host {
            Host::Unix(dir) => {
                let path = dir.join(format!(".s.PGSQL.{}", self.url.port));
                return tokio::net::UnixStream::connect(&path)
                    .await
                    .map(|s| (Stream::Unix(s), true))
                    .map_err(Failure::Io);
            }
            Host::Tcp(h) => h.clone(),
        };
        let addrs: Vec<_> = tokio::net::lookup_host((host.as_str(), self.url.port))
            .await
            .map_err(|e| Failure::Resolve(host.clone(), e))?
            .collect();
        let mut last = None;
        for addr in addrs {
            match self.tcp(addr).await {
                Ok(s) => return Ok((Stream::Tcp(s), false)),
                Err(e) => last = Some(e),
            }
        }
        Err(Failure::Io(last.unwrap_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::NotFound, "the host has no address")
        })))
    }

    async fn tcp(&self, addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
        let k = &self.url.keepalives;
        let sock =
            socket2::Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        sock.set_tcp_nodelay(true)?;
        if k.enabled != Some(false) {
            let keepalive = TcpKeepalive::new()
                .with_time(k.idle.unwrap_or(KEEPALIVE_IDLE))
                .with_interval(k.interval.unwrap_or(KEEPALIVE_INTERVAL));
            #[cfg(any(target_os = "linux", target_os = "macos"))]
            let keepalive = keepalive.with_retries(k.count.unwrap_or(KEEPALIVE_COUNT));
            sock.set_tcp_keepalive(&keepalive)?;
        }
        #[cfg(target_os = "linux")]
        sock.set_tcp_user_timeout(Some(k.user_timeout.unwrap_or(TCP_USER_TIMEOUT)))?;
        sock.set_nonblocking(true)?;
        // A non-blocking connect: started here, finished by tokio.
        match sock.connect(&SockAddr::from(addr)) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(e) => return Err(e),
        }
        let stream = tokio::net::TcpStream::from_std(std::net::TcpStream::from(sock))?;
        stream.writable().await?;
        if let Some(e) = stream.take_error()? {
            return Err(e);
        }
        Ok(stream)
    }

    /// The [`Error`] for a failed attempt: what happened at `host:port`
    /// and what to check.
    fn describe(&self, failure: Failure) -> Error {
        let server = self.endpoint();
        match failure {
            Failure::Setup(problem) => self.error(problem),
            Failure::Resolve(host, e) => self.error(format!(
                "cannot resolve the host {host:?} ({e}): check the host in the database URL"
            )),
            Failure::Io(e) => self.unreachable(io_problem(&e)),
            Failure::Pg(e) => {
                if let Some(db) = e.as_db_error() {
                    let code = db.code();
                    let user = self
                        .url
                        .user
                        .clone()
                        .unwrap_or_else(|| crate::identity::Identity::current().user.clone());
                    let what = if *code == SqlState::INVALID_PASSWORD {
                        format!(
                            "password authentication failed for user {user:?}: check the user \
                             and password in the database URL"
                        )
                    } else if *code == SqlState::TOO_MANY_CONNECTIONS {
                        return Error::Refused(crate::error::Refusal::NoConnection {
                            command: None,
                            server,
                            message: db.message().to_owned(),
                        });
                    } else if matches!(code.code(), "57P01" | "57P02" | "57P03") {
                        // Starting up, shutting down, restarting: the
                        // server cannot be asked now, as when it is away
                        // (exit 69, and a wait goes on through it).
                        return self.unreachable(format!(
                            "{} ({}): the server is starting up or shutting down: run the \
                             command again once it answers",
                            db.message(),
                            code.code()
                        ));
                    } else if *code == SqlState::INVALID_CATALOG_NAME {
                        format!(
                            "{}: create the database (createdb) or fix its name in the database URL",
                            db.message()
                        )
                    } else if db
                        .message()
                        .contains("unrecognized configuration parameter")
                    {
                        format!(
                            "{}: this backend needs PostgreSQL 14 or later (its connections \
                             turn idle_session_timeout off)",
                            db.message()
                        )
                    } else if db.message().contains("unsupported startup parameter") {
                        format!(
                            "{}: a pooler (PgBouncer) in between refuses the startup options this \
                             backend sends (server-side keepalives, no idle timeouts): connect \
                             directly, or run PgBouncer in session mode with \
                             `ignore_startup_parameters = options` (its own keepalives then apply)",
                            db.message()
                        )
                    } else if *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION {
                        format!(
                            "{}: the server refuses this client: check pg_hba.conf on the server, \
                             the user and sslmode",
                            db.message()
                        )
                    } else {
                        format!("{} ({})", db.message(), code.code())
                    };
                    return self.error(what);
                }
                let cause = std::error::Error::source(&e)
                    .map(|s| s.to_string())
                    .unwrap_or_default();
                if let Some(io) =
                    std::error::Error::source(&e).and_then(|s| s.downcast_ref::<std::io::Error>())
                {
                    if let Some(tls) = io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>())
                    {
                        return self.error(format!(
                            "TLS with {server} failed ({tls}): check sslmode and sslrootcert in \
                             the database URL, and the server's certificate"
                        ));
                    }
                    return self.unreachable(io_problem(io));
                }
                if e.is_closed() {
                    return self.unreachable(
                        "the server closed the connection before it was made: check that the \
                         server runs and is reachable (a restart, a proxy or firewall in between)",
                    );
                }
                let text = format!(
                    "{e}{}",
                    if cause.is_empty() {
                        String::new()
                    } else {
                        format!(": {cause}")
                    }
                );
                if text.contains("TLS") || text.contains("tls") || text.contains("certificate") {
                    self.error(format!(
                        "TLS with {server} failed ({text}): check sslmode and sslrootcert in the \
                         database URL, and the server's certificate"
                    ))
                } else {
                    self.error(text)
                }
            }
        }
    }
}

/// Runs `connection`'s protocol half on the runtime until it ends,
/// sending its notifications to `notices` (dropped otherwise, and with the
/// task when the connection ends).
fn drive<S, T>(mut connection: tokio_postgres::Connection<S, T>, notices: Option<Notices>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(n))) => {
                    if let Some(tx) = &notices {
                        let _ = tx.send(n);
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return,
            }
        }
    });
}

/// The problem of a server out of connection slots.
pub(super) fn too_many_clients(message: &str) -> String {
    format!(
        "the server has no connection left ({message}): every live task holds one connection; \
         raise max_connections on the server, or wait for tasks to end"
    )
}

fn io_problem(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "connection refused: check that PostgreSQL runs \
             there and listens on that port (listen_addresses, port), and the port in the \
             database URL"
            .into(),
        std::io::ErrorKind::NotFound => format!(
            "{e}: check that PostgreSQL runs there and the host (socket directory) and port in \
             the database URL"
        ),
        _ => format!("{e}: check the host and port in the database URL, and the network"),
    }
}

/// Why an attempt failed, before it is described.
enum Failure {
    Setup(String),
    Resolve(String, std::io::Error),
    Io(std::io::Error),
    Pg(tokio_postgres::Error),
}

/// Whether the server refused a plain connection that TLS might pass
/// (`hostssl`-only pg_hba entries): `sslmode=allow` then tries TLS.
fn wants_tls(failure: &Failure) -> bool {
    matches!(failure, Failure::Pg(e) if e.code() == Some(&SqlState::INVALID_AUTHORIZATION_SPECIFICATION))
}

/// `text` with every occurrence of the password replaced: whatever a
/// server or a library says, no error shows it.
pub(super) fn scrub(text: String, password: Option<&str>) -> String {
    match password {
        Some(pw) if !pw.is_empty() && text.contains(pw) => text.replace(pw, "***"),
        _ => text,
    }
}
