//! The answers the layer gives itself: a turned-away request (redirect, or
//! 503 page, or JSON), and the bypass secret's cookie — signed with the
//! app's own key over the secret's hash, checked in constant time.

use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use http::header::{CACHE_CONTROL, CONTENT_TYPE, LOCATION, RETRY_AFTER, SET_COOKIE};
use http::{HeaderValue, Response, StatusCode};
use sha2::Sha256;

use super::options::{CookieName, LayerOptions, TurnAway};
use super::snapshot::Snapshot;
use crate::mode::{Mode, RetryAfter};
use crate::site_path::RequestPath;

type HmacSha256 = Hmac<Sha256>;

/// The built-in maintenance page; `{message}` is replaced (escaped).
const PAGE: &str = "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<title>Down for maintenance</title></head>\n<body><h1>Down for maintenance</h1>\n\
<p>{message}</p>\n</body></html>\n";

pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `Retry-After` as delta-seconds, or nothing: never empty, never invalid.
pub(crate) fn retry_after_value(r: Option<&RetryAfter>) -> Option<HeaderValue> {
    let secs = match r? {
        RetryAfter::Seconds(s) => *s,
        RetryAfter::At(t) => t
            .system_time()
            .duration_since(SystemTime::now())
            .map(|d| d.as_secs())
            .unwrap_or(0),
    };
    HeaderValue::from_str(&secs.to_string()).ok()
}

/// Whether the request asks for JSON: by `Accept`, or by path prefix
/// (`path` is `None` when it could mean two things: no prefix then).
pub(crate) fn wants_json(
    options: &LayerOptions,
    path: Option<&RequestPath<'_>>,
    headers: &http::HeaderMap,
) -> bool {
    path.is_some_and(|path| options.api_prefixes.iter().any(|p| p.matches(path)))
        || headers
            .get_all(http::header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.contains("application/json"))
}

/// The response to a turned-away request.
pub(crate) fn turned_away<B: From<String>>(
    options: &LayerOptions,
    snapshot: Option<&Snapshot>,
    json: bool,
) -> Response<B> {
    let mode = snapshot.map(|s| s.mode).unwrap_or(Mode::Offline);
    let message = snapshot.and_then(|s| s.message.clone());
    let retry = snapshot.and_then(|s| retry_after_value(s.retry_after.as_ref()));
    let (status, content_type, body) = if json {
        let doc = serde_json::json!({
            "error": "maintenance",
            "mode": mode,
            "message": message,
            "retry_after": snapshot.and_then(|s| s.retry_after),
        });
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "application/json",
            doc.to_string(),
        )
    } else if options.turn_away == TurnAway::Redirect {
        (
            StatusCode::SEE_OTHER,
            "text/plain; charset=utf-8",
            "Down for maintenance\n".to_owned(),
        )
    } else {
        let page = match &options.maintenance_page {
            Some(p) => p.to_string(),
            None => PAGE.replace(
                "{message}",
                &escape(
                    message
                        .as_deref()
                        .unwrap_or("The site is down for maintenance. Please come back soon."),
                ),
            ),
        };
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "text/html; charset=utf-8",
            page,
        )
    };
    let mut res = Response::new(B::from(body));
    *res.status_mut() = status;
    let h = res.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if status == StatusCode::SEE_OTHER {
        if let Ok(v) = HeaderValue::from_str(options.maintenance_url.as_str()) {
            h.insert(LOCATION, v);
        }
    } else if let Some(v) = retry {
        h.insert(RETRY_AFTER, v);
    }
    res
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn mac(key: &[u8], hash: &[u8; 32], expiry: u64) -> HmacSha256 {
    let mut m = HmacSha256::new_from_slice(key).expect("HMAC takes a key of any length");
    m.update(hash);
    m.update(b":");
    m.update(expiry.to_string().as_bytes());
    m
}

/// Whether `secret` is the bypass secret whose hash is `hash`, compared in
/// constant time.
pub(crate) fn secret_matches(secret: &str, hash: &[u8; 32]) -> bool {
    crate::digest::secret_matches(secret.as_bytes(), hash)
}

/// The response to a right secret: the signed cookie, and a redirect home.
pub(crate) fn bypass_granted<B: From<String>>(
    options: &LayerOptions,
    hash: &[u8; 32],
) -> Response<B> {
    let ttl = options.bypass_ttl.as_secs();
    let expiry = now_secs() + ttl;
    let sig = crate::hex::encode(
        &mac(&options.signing_key, hash, expiry)
            .finalize()
            .into_bytes(),
    );
    let cookie = format!(
        "{}={expiry}.{sig}; Path=/; Max-Age={ttl}; HttpOnly; SameSite=Lax",
        options.bypass_cookie
    );
    let mut res = Response::new(B::from(
        "You may browse the site during maintenance.\n".to_owned(),
    ));
    *res.status_mut() = StatusCode::SEE_OTHER;
    let h = res.headers_mut();
    h.insert(LOCATION, HeaderValue::from_static("/"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        h.insert(SET_COOKIE, v);
    }
    res
}

/// Whether the bypass cookie's value is valid for the current secret.
pub(crate) fn bypass_cookie_valid(options: &LayerOptions, hash: &[u8; 32], value: &str) -> bool {
    let Some((expiry, sig)) = value.split_once('.') else {
        return false;
    };
    let Ok(expiry) = expiry.parse::<u64>() else {
        return false;
    };
    if expiry <= now_secs() {
        return false;
    }
    // An HMAC-SHA256 signature: 32 bytes.
    let Some(sig) = crate::hex::decode::<32>(sig.as_bytes()) else {
        return false;
    };
    mac(&options.signing_key, hash, expiry)
        .verify_slice(&sig)
        .is_ok()
}

/// The value of cookie `name` in the request's `Cookie` headers, when it
/// is UTF-8 (the bypass cookie; its reader checks it further).
pub(crate) fn cookie<'a>(headers: &'a http::HeaderMap, name: &CookieName) -> Option<&'a str> {
    std::str::from_utf8(cookie_bytes(headers, name)?).ok()
}

/// The session id in cookie `name`, when it is one the layer would record
/// ([`valid_session_id`]): ASCII, borrowed from the header. The common
/// case takes one pass over the id: its bytes are checked up to the pair's
/// end, which is then found without a search for `;`; a value with
/// anything else in it (quotes, blanks, other bytes) is read as
/// [`cookie_bytes`] reads it, then checked.
pub(crate) fn session_cookie<'a>(
    headers: &'a http::HeaderMap,
    name: &CookieName,
) -> Option<&'a [u8]> {
    let tail = cookie_tail(headers, name)?;
    // At most one byte more than an id may hold: a longer run is refused
    // without reading the rest of it.
    let head = &tail[..tail.len().min(MAX_SESSION_ID + 1)];
    let id = head
        .iter()
        .position(|&b| !SESSION_ID_BYTES[usize::from(b)])
        .unwrap_or(head.len());
    if id == tail.len() || tail[id] == b';' {
        return (1..=MAX_SESSION_ID).contains(&id).then(|| &tail[..id]);
    }
    Some(cookie_value(tail)).filter(|id| valid_session_id(id))
}

/// The value of cookie `name` in the request's `Cookie` headers: the first
/// pair whose name is exactly `name`, its value without surrounding
/// double quotes, borrowed from the header (no allocation, no copy). A
/// scan of the header's bytes, since it runs on every request: pairs are
/// separated by `;`, and spaces and tabs around a pair are ignored.
fn cookie_bytes<'a>(headers: &'a http::HeaderMap, name: &CookieName) -> Option<&'a [u8]> {
    cookie_tail(headers, name).map(cookie_value)
}

/// What follows `name=` in the first pair named `name`, in the first
/// `Cookie` header that has one: the value and the pairs after it.
fn cookie_tail<'a>(headers: &'a http::HeaderMap, name: &CookieName) -> Option<&'a [u8]> {
    if !name.usable {
        return None;
    }
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .find_map(|v| cookie_in(v.as_bytes(), name.text.as_bytes()))
}

/// What follows `name=` in the first pair named `name` in one `Cookie`
/// header's bytes: at each pair's start the name is compared, and the next
/// `;` is found with `memchr` (many bytes at a time), so a pair of another
/// name costs a comparison and a jump. `name` has no `;` in it
/// ([`CookieName`]).
fn cookie_in<'a>(header: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    debug_assert!(!name.contains(&b';'), "{name:?} names no pair");
    let mut rest = header;
    loop {
        let start = rest.iter().position(|b| !blank(b)).unwrap_or(rest.len());
        rest = &rest[start..];
        if rest.len() > name.len() && rest[name.len()] == b'=' && rest.starts_with(name) {
            return Some(&rest[name.len() + 1..]);
        }
        rest = &rest[memchr::memchr(b';', rest)? + 1..];
    }
}

/// A pair's value, from what follows its `=`: up to the next `;`, without
/// trailing blanks and surrounding double quotes.
fn cookie_value(tail: &[u8]) -> &[u8] {
    let mut value = &tail[..memchr::memchr(b';', tail).unwrap_or(tail.len())];
    while let [rest @ .., last] = value
        && blank(last)
    {
        value = rest;
    }
    while let [b'"', rest @ ..] = value {
        value = rest;
    }
    while let [rest @ .., b'"'] = value {
        value = rest;
    }
    value
}

/// The blanks a `Cookie` header may hold around a pair.
fn blank(b: &u8) -> bool {
    *b == b' ' || *b == b'\t'
}

/// The layer's `Cookie` parsing, for the fuzz targets (`fuzz/`): the value
/// of cookie `name` in `headers` as the bypass cookie is read, and the
/// session id as the layer would record it. Not part of the API.
#[doc(hidden)]
pub fn cookie_for_fuzzing<'a>(
    headers: &'a http::HeaderMap,
    name: &str,
) -> (Option<&'a [u8]>, Option<&'a [u8]>) {
    let name = CookieName::new(name);
    (cookie_bytes(headers, &name), session_cookie(headers, &name))
}

/// The bytes a session id may hold: ASCII letters, digits, `-` and `_`.
const SESSION_ID_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric() || c == b'-' || c == b'_';
        b += 1;
    }
    table
};

/// The longest session id the layer records, in bytes.
const MAX_SESSION_ID: usize = 256;

/// Whether a session id is one the layer will record: short, and only
/// letters, digits, `-` and `_` — never a path, never NUL, never 10 kB.
pub(crate) fn valid_session_id(id: impl AsRef<[u8]>) -> bool {
    let id = id.as_ref();
    (1..=MAX_SESSION_ID).contains(&id.len()) && id.iter().all(|&b| SESSION_ID_BYTES[usize::from(b)])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the layer read before it scanned bytes: the reference.
    fn cookie_by_str<'a>(header: &'a str, name: &str) -> Option<&'a str> {
        header
            .split(';')
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.trim_matches('"'))
    }

    #[test]
    fn the_byte_scan_reads_every_cookie_header_as_the_string_parser_did() {
        let headers = [
            "sessionid=abc",
            "a=1; sessionid=abc; b=2",
            "a=1;sessionid=abc;b=2",
            "  sessionid=abc  ",
            "\tsessionid=abc\t; x=y",
            "sessionid=\"abc\"",
            "sessionid=\"\"abc\"\"",
            "sessionid=\"",
            "sessionid=",
            "sessionid= abc",
            "sessionid =abc",
            "xsessionid=abc; sessionid=def",
            "sessionidx=abc",
            "sessionid",
            "sessionid=a=b",
            "sessionid=one; sessionid=two",
            "",
            ";;;",
            "=abc; sessionid=abc",
            "theme=dark; _ga=GA1.1.1234; sessionid=s3ss10n-_X; csrftoken=zz",
        ];
        for header in headers {
            for name in ["sessionid", "theme", "a", ""] {
                assert_eq!(
                    cookie_bytes(&header_map(&[header.to_owned()]), &CookieName::new(name)),
                    cookie_by_str(header, name).map(str::as_bytes),
                    "{name:?} in {header:?}"
                );
            }
        }
    }

    /// The session id the reference reads: the first `Cookie` header with
    /// a pair of that name, its value if it is one the layer records.
    fn session_by_str<'a>(headers: &'a [String], name: &str) -> Option<&'a [u8]> {
        let value = headers.iter().find_map(|h| cookie_by_str(h, name))?;
        Some(value.as_bytes()).filter(|id| valid_session_id(id))
    }

    fn header_map(headers: &[String]) -> http::HeaderMap {
        let mut map = http::HeaderMap::new();
        for h in headers {
            map.append(
                http::header::COOKIE,
                http::HeaderValue::from_str(h).expect("a visible ASCII header"),
            );
        }
        map
    }

    proptest::proptest! {
        /// The one-pass read of a session id answers as reading the value
        /// and then checking it: headers made of ids, separators, blanks,
        /// quotes and other bytes, in one or more `Cookie` headers.
        #[test]
        fn the_session_fast_path_reads_what_the_value_then_the_check_read(
            headers in proptest::collection::vec(
                "(( |\t)*(sessionid|sessionidx|sid|a|)=(\"|[a-zA-Z0-9_-]{0,6}|[ .%/=\"]|x{250,260})*( |\t)*;?)*",
                1..3,
            ),
            name in "(sessionid|sid|a|s;d)",
        ) {
            let map = header_map(&headers);
            let cookie = CookieName::new(name.as_str());
            proptest::prop_assert_eq!(
                session_cookie(&map, &cookie),
                session_by_str(&headers, &name),
                "{:?} in {:?}", name, headers
            );
            proptest::prop_assert_eq!(
                cookie_bytes(&map, &cookie),
                headers.iter().find_map(|h| cookie_by_str(h, &name)).map(str::as_bytes),
            );
        }
    }

    #[test]
    fn session_ids_at_the_length_limit_and_past_it() {
        for (len, tail) in [
            (256, ""),
            (256, ";b=1"),
            (257, ""),
            (257, "; b=1"),
            (300, ""),
        ] {
            let headers = [format!("sessionid={}{tail}", "x".repeat(len))];
            let map = header_map(&headers);
            let name = CookieName::new("sessionid");
            assert_eq!(
                session_cookie(&map, &name),
                session_by_str(&headers, "sessionid")
            );
            assert_eq!(
                session_cookie(&map, &name).is_some(),
                len <= 256,
                "{len}{tail}"
            );
        }
    }

    #[test]
    fn a_session_id_is_short_ascii_letters_digits_dashes_and_underscores() {
        assert!(valid_session_id("s3ss10n-_X"));
        assert!(valid_session_id("x".repeat(256)));
        for id in ["", "a/b", "..", "a%00b", "a b", "é", "a\0"] {
            assert!(!valid_session_id(id), "{id:?}");
        }
        assert!(!valid_session_id("x".repeat(257)));
    }
}
