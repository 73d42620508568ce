//! HTTP as the web tests speak it: a client that follows no redirect,
//! requests from a chosen loopback address over a plain socket, and the
//! reply as the tests look at it, with the maintenance layer's answers
//! checked in one place.

use std::io::{Read, Write};

use crate::wait::HANG_GUARD;

/// An HTTP response, as the tests look at it.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// The headers, names lowercase, in order.
    pub headers: Vec<(String, String)>,
    /// The body (lossy UTF-8).
    pub body: String,
}

impl Reply {
    /// The first header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.all(name).into_iter().next()
    }

    /// Every header `name`.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The `Set-Cookie` header that sets cookie `name`.
    pub fn set_cookie(&self, name: &str) -> Option<&str> {
        self.all("set-cookie")
            .into_iter()
            .find(|c| c.split_once('=').is_some_and(|(n, _)| n.trim() == name))
    }

    /// The value `Set-Cookie` gives cookie `name`.
    pub fn cookie_value(&self, name: &str) -> Option<String> {
        let c = self.set_cookie(name)?;
        let (_, rest) = c.split_once('=')?;
        Some(rest.split(';').next().unwrap_or("").trim().to_owned())
    }

    /// The body as JSON; fails the test if it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {self}"))
    }

    /// Whether this is mysite's home page, served by the app (`<h1>mysite</h1>`).
    pub fn is_home_page(&self) -> bool {
        self.status == 200 && self.body.contains("<h1>mysite</h1>")
    }

    /// Whether the page shows the maintenance banner (`id="banner"`).
    pub fn has_banner(&self) -> bool {
        self.body.contains("id=\"banner\"")
    }

    /// Asserts this is the app's home page.
    pub fn assert_home_page(&self, context: &str) {
        assert!(self.is_home_page(), "{context}: not mysite's page: {self}");
    }

    /// Asserts the maintenance layer turned this request away as `how`
    /// says: `Cache-Control: no-store`; `Retry-After` exactly `retry_after`
    /// on a 503 (absent when `None`, never empty); no page of the app.
    pub fn assert_turned_away(&self, how: TurnedAway, retry_after: Option<&str>, context: &str) {
        let ct = self.header("content-type").unwrap_or("");
        match how {
            TurnedAway::Redirect => {
                assert_eq!(self.status, 303, "{context}: not a 303: {self}");
                assert_eq!(
                    self.header("location"),
                    Some("/maintenance.html"),
                    "{context}: not sent to the maintenance page: {self}"
                );
            }
            TurnedAway::Unavailable => {
                assert_eq!(self.status, 503, "{context}: not a 503: {self}");
                assert!(ct.starts_with("text/html"), "{context}: not HTML: {self}");
                assert!(
                    self.body.contains("Down for maintenance"),
                    "{context}: no maintenance page: {self}"
                );
            }
            TurnedAway::Json => {
                assert_eq!(self.status, 503, "{context}: not a 503: {self}");
                assert!(
                    ct.starts_with("application/json"),
                    "{context}: not JSON: {self}"
                );
                assert_eq!(self.json()["error"], "maintenance", "{context}: {self}");
            }
        }
        assert_eq!(
            self.all("cache-control"),
            ["no-store"],
            "{context}: a turned-away response must not be cached: {self}"
        );
        let retry = self.all("retry-after");
        for v in &retry {
            assert!(
                !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()),
                "{context}: invalid Retry-After {v:?}: {self}"
            );
        }
        if self.status == 503 {
            let want: Vec<&str> = retry_after.into_iter().collect();
            assert_eq!(retry, want, "{context}: Retry-After: {self}");
        }
        assert!(
            !self.body.contains("<h1>mysite</h1>"),
            "{context}: the app's page leaked: {self}"
        );
        assert!(
            self.set_cookie("sessionid").is_none(),
            "{context}: a turned-away request got a session: {self}"
        );
    }
}

impl std::fmt::Display for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HTTP {}", self.status)?;
        for (n, v) in &self.headers {
            write!(f, "\n  {n}: {v}")?;
        }
        let body: String = self.body.chars().take(600).collect();
        write!(f, "\n  body: {body:?}")
    }
}

/// How the maintenance layer turns a request away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TurnedAway {
    /// `303 See Other` to `/maintenance.html`.
    Redirect,
    /// `503` with an HTML maintenance page.
    Unavailable,
    /// `503` with a JSON body (API clients).
    Json,
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .max_redirects(0)
        .http_status_as_error(false)
        .proxy(None)
        .timeout_global(Some(HANG_GUARD))
        .build()
        .into()
}

fn reply_of(res: Result<ureq::http::Response<ureq::Body>, ureq::Error>, what: &str) -> Reply {
    let mut res = res.unwrap_or_else(|e| panic!("{what}: {e}"));
    let status = res.status().as_u16();
    let headers = res
        .headers()
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = res
        .body_mut()
        .read_to_vec()
        .unwrap_or_else(|e| panic!("{what}: reading the body: {e}"));
    Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// `GET http://ADDR/PATH` with `headers`, through a real HTTP client that
/// follows no redirect, sends no cookie of its own and uses no proxy.
pub fn http_get(addr: std::net::SocketAddr, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut req = agent().get(format!("http://{addr}{path}"));
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    reply_of(req.call(), &format!("GET http://{addr}{path}"))
}

/// `POST http://ADDR/PATH` with `headers` and an empty body.
pub fn http_post(addr: std::net::SocketAddr, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut req = agent().post(format!("http://{addr}{path}"));
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    reply_of(req.send_empty(), &format!("POST http://{addr}{path}"))
}

/// Sends `request` (raw bytes: a whole HTTP/1.1 request that asks for
/// `Connection: close`) to `to` over a plain socket bound to local address
/// `from` when given (on Linux all of 127.0.0.0/8 is local), and reads the
/// response to the end.
pub fn raw_exchange(
    to: std::net::SocketAddr,
    from: Option<std::net::IpAddr>,
    request: &[u8],
) -> std::io::Result<Reply> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(to),
        socket2::Type::STREAM,
        None,
    )?;
    if let Some(ip) = from {
        socket.bind(&std::net::SocketAddr::new(ip, 0).into())?;
    }
    socket.connect_timeout(&to.into(), HANG_GUARD)?;
    let mut stream: std::net::TcpStream = socket.into();
    stream.set_read_timeout(Some(HANG_GUARD))?;
    stream.set_write_timeout(Some(HANG_GUARD))?;
    stream.write_all(request)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    parse_reply(&raw).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("not an HTTP response: {:?}", String::from_utf8_lossy(&raw)),
        )
    })
}

fn parse_reply(raw: &[u8]) -> Option<Reply> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = raw[end + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    if chunked {
        let mut out = Vec::new();
        let mut rest = &body[..];
        loop {
            let eol = rest.windows(2).position(|w| w == b"\r\n")?;
            let size_text = String::from_utf8_lossy(&rest[..eol]).into_owned();
            let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
            rest = &rest[eol + 2..];
            if size == 0 {
                break;
            }
            out.extend_from_slice(rest.get(..size)?);
            rest = rest.get(size + 2..)?;
        }
        body = out;
    }
    Some(Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// `METHOD PATH` (no body) with `headers` to `to` from local address
/// `from`, over a plain socket (see [`raw_exchange`]); fails the test on an
/// I/O error.
pub fn raw_request(
    to: std::net::SocketAddr,
    from: Option<std::net::IpAddr>,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Reply {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {to}\r\nConnection: close\r\n");
    if method == "POST" {
        req.push_str("Content-Length: 0\r\n");
    }
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req.push_str("\r\n");
    raw_exchange(to, from, req.as_bytes())
        .unwrap_or_else(|e| panic!("{method} {path} from {from:?} to {to}: {e}"))
}

/// `METHOD PATH` with `headers` and the form `form`
/// (`application/x-www-form-urlencoded`) as its body, to `to` from local
/// address `from` (see [`raw_exchange`]); fails the test on an I/O error.
pub fn raw_form(
    to: std::net::SocketAddr,
    from: Option<std::net::IpAddr>,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    form: &str,
) -> Reply {
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {to}\r\nConnection: close\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n",
        form.len()
    );
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(form);
    raw_exchange(to, from, req.as_bytes())
        .unwrap_or_else(|e| panic!("{method} {path} from {from:?} to {to}: {e}"))
}

/// `GET PATH` with `headers` to `to` from local address `from` (see
/// [`raw_request`]).
pub fn raw_get(
    to: std::net::SocketAddr,
    from: Option<std::net::IpAddr>,
    path: &str,
    headers: &[(&str, &str)],
) -> Reply {
    raw_request(to, from, "GET", path, headers)
}
