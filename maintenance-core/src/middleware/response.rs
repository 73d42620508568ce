//! The answers the layer gives itself: a turned-away request (redirect, or
//! 503 page, or JSON), and the bypass secret's cookie — signed with the
//! app's own key over the secret's hash, checked in constant time.

use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use http::header::{CACHE_CONTROL, CONTENT_TYPE, LOCATION, RETRY_AFTER, SET_COOKIE};
use http::{HeaderValue, Response, StatusCode};
use sha2::Sha256;

use super::options::{LayerOptions, TurnAway};
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
pub(crate) fn cookie<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    std::str::from_utf8(cookie_bytes(headers, name)?).ok()
}

/// The session id in cookie `name`, when it is one the layer would record
/// ([`valid_session_id`]): ASCII, borrowed from the header.
pub(crate) fn session_cookie<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a [u8]> {
    cookie_bytes(headers, name).filter(|id| valid_session_id(id))
}

/// The value of cookie `name` in the request's `Cookie` headers: the first
/// pair whose name is exactly `name`, its value without surrounding
/// double quotes, borrowed from the header (no allocation, no copy). A
/// scan of the header's bytes, since it runs on every request: pairs are
/// separated by `;`, and spaces and tabs around a pair are ignored.
fn cookie_bytes<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a [u8]> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .find_map(|v| cookie_in(v.as_bytes(), name.as_bytes()))
}

/// The value of cookie `name` in one `Cookie` header's bytes: at each
/// pair's start the name is compared, and the next `;` is found with
/// `memchr` (many bytes at a time), so a pair of another name costs a
/// comparison and a jump.
fn cookie_in<'a>(header: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    let blank = |b: &u8| *b == b' ' || *b == b'\t';
    let mut rest = header;
    loop {
        let start = rest.iter().position(|b| !blank(b)).unwrap_or(rest.len());
        rest = &rest[start..];
        let end = memchr::memchr(b';', rest);
        if end.is_none_or(|end| end > name.len())
            && rest.len() > name.len()
            && rest[name.len()] == b'='
            && rest.starts_with(name)
        {
            let mut value = &rest[name.len() + 1..end.unwrap_or(rest.len())];
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
            return Some(value);
        }
        rest = &rest[end? + 1..];
    }
}

/// The layer's `Cookie` parsing, for the fuzz targets (`fuzz/`): the value
/// of cookie `name` in `headers` as the bypass cookie is read, and the
/// session id as the layer would record it. Not part of the API.
#[doc(hidden)]
pub fn cookie_for_fuzzing<'a>(
    headers: &'a http::HeaderMap,
    name: &str,
) -> (Option<&'a [u8]>, Option<&'a [u8]>) {
    (cookie_bytes(headers, name), session_cookie(headers, name))
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

/// Whether a session id is one the layer will record: short, and only
/// letters, digits, `-` and `_` — never a path, never NUL, never 10 kB.
pub(crate) fn valid_session_id(id: impl AsRef<[u8]>) -> bool {
    let id = id.as_ref();
    (1..=256).contains(&id.len()) && id.iter().all(|&b| SESSION_ID_BYTES[usize::from(b)])
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
                    cookie_in(header.as_bytes(), name.as_bytes()),
                    cookie_by_str(header, name).map(str::as_bytes),
                    "{name:?} in {header:?}"
                );
            }
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
