//! The `layer` target: what `MaintenanceLayer` reads of a request before it
//! decides — the session and bypass cookies in the `Cookie` headers, and
//! the request's path against the configured site paths (exempt prefixes,
//! the maintenance URL, the bypass path).
//!
//! Input: line 1 the cookie's name, line 2 a request target, line 3 a
//! configured path, line 4 a bypass secret; every further line one
//! `Cookie` header.
//!
//! Holds: a cookie's value is a slice of one header's own bytes (never
//! read past it, never copied), and the one the cookie grammar gives (the
//! first pair of that exact name; spaces, tabs and quotes around the value
//! dropped); a session id is one the layer may record. A configured path
//! parses again to itself and matches itself; a request path it matches
//! stays below it however its dot segments, escapes and `;` parameters
//! are resolved; and the bypass link built from a secret reads back as
//! that secret, unless the secret could not be one segment.

use http::{HeaderMap, HeaderValue, header::COOKIE};
use maintenance_core::middleware::cookie_for_fuzzing;
use maintenance_core::site_path::{RequestPath, SitePath};

/// The check.
pub fn check(data: &[u8]) {
    let mut parts = data.split(|b| *b == b'\n');
    let mut text = || String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let (name, target, configured, secret) = (text(), text(), text(), text());
    let mut headers = HeaderMap::new();
    for line in parts {
        if let Ok(v) = HeaderValue::from_bytes(line) {
            headers.append(COOKIE, v);
        }
    }
    check_cookies(&headers, &name);
    check_paths(&target, &configured, &secret);
}

fn check_cookies(headers: &HeaderMap, name: &str) {
    let (value, session) = cookie_for_fuzzing(headers, name);
    let expected = headers
        .get_all(COOKIE)
        .iter()
        .find_map(|h| cookie_by_grammar(h.as_bytes(), name.as_bytes()));
    assert_eq!(value, expected, "cookie {name:?} in {headers:?}");
    if let Some(v) = value {
        let inside = headers.get_all(COOKIE).iter().any(|h| {
            let h = h.as_bytes().as_ptr_range();
            let v = v.as_ptr_range();
            h.start <= v.start && v.end <= h.end
        });
        assert!(inside, "the value is not a slice of a header");
    }
    if let Some(id) = session {
        assert_eq!(Some(id), value);
        assert!((1..=256).contains(&id.len()));
        assert!(
            id.iter()
                .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
        );
    }
}

/// The reference: pairs split at `;`, blanks (space, tab) around a pair
/// dropped, the first whose name is exactly `name`; its value without
/// blanks at its end and double quotes at either end.
fn cookie_by_grammar<'a>(header: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    let blank = |b: &u8| *b == b' ' || *b == b'\t';
    header.split(|b| *b == b';').find_map(|pair| {
        let start = pair.iter().position(|b| !blank(b)).unwrap_or(pair.len());
        let pair = &pair[start..];
        let value = pair.strip_prefix(name)?.strip_prefix(b"=")?;
        let end = value.iter().rposition(|b| !blank(b)).map_or(0, |i| i + 1);
        let mut value = &value[..end];
        while let [b'"', rest @ ..] = value {
            value = rest;
        }
        while let [rest @ .., b'"'] = value {
            value = rest;
        }
        Some(value)
    })
}

fn check_paths(target: &str, configured: &str, secret: &str) {
    // The path as the layer takes it from the request: `req.uri().path()`.
    let path = match target.parse::<http::Uri>() {
        Ok(uri) => uri.path().to_owned(),
        Err(_) => target.to_owned(),
    };
    let prefix = match SitePath::parse(configured) {
        Ok(p) => p,
        Err(e) => {
            assert!(e.to_string().contains(&format!("{configured:?}")));
            // Any path at all, then, for the checks below.
            match SitePath::parse("/static/") {
                Ok(p) => p,
                Err(e) => panic!("{e}"),
            }
        }
    };
    assert_eq!(SitePath::parse(prefix.as_str()).as_ref(), Ok(&prefix));
    let own = RequestPath::parse(prefix.as_str()).expect("a configured path is a request path");
    assert!(prefix.matches(&own));

    for raw in [path.as_str(), target] {
        let Some(request) = RequestPath::parse(raw) else {
            continue;
        };
        if prefix.matches(&request) {
            let want = resolved(prefix.as_str()).expect("a configured path resolves");
            let got = resolved(raw).expect("a path the layer accepts resolves");
            assert!(
                got.starts_with(&want),
                "{raw:?} matches {prefix} but resolves to {got:?}, outside {want:?}"
            );
        }
    }

    let link = prefix.join(secret);
    let one_segment = !secret.is_empty()
        && !secret
            .bytes()
            .any(|b| b == b'/' || b == b'\\' || b < 0x20 || b == 0x7f)
        && !matches!(secret.split(';').next(), Some("." | ".."));
    match RequestPath::parse(&link) {
        Some(request) => {
            let back = prefix.child_of(&request);
            if one_segment {
                assert_eq!(back.as_deref(), Some(secret), "via {link:?}");
            }
        }
        None => assert!(!one_segment, "the bypass link {link:?} is refused"),
    }
}

/// The segments a server that resolves everything would see: percent
/// escapes decoded, `\` taken as `/`, `;` parameters dropped before `.`
/// and `..` are resolved. `None` for an escape that does not decode.
fn resolved(raw: &str) -> Option<Vec<Vec<u8>>> {
    let mut decoded = Vec::new();
    let bytes = raw.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            let hex = std::str::from_utf8(hex).ok()?;
            decoded.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            decoded.push(bytes[i]);
            i += 1;
        }
    }
    let mut out: Vec<Vec<u8>> = Vec::new();
    for segment in decoded.split(|b| *b == b'/' || *b == b'\\') {
        let name = segment.split(|b| *b == b';').next().unwrap_or_default();
        match name {
            b"" => {}
            b"." => {}
            b".." => {
                out.pop();
            }
            _ => out.push(name.to_vec()),
        }
    }
    Some(out)
}
