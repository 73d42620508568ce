//! Paths on the site that manage.toml and the web layer's builder name — the
//! maintenance URL, the bypass prefix, pass and API prefixes — checked when
//! they are read ([`SitePath`]), and how a request's path is compared with
//! them ([`RequestPath`]): whole segments of the percent-decoded path.
//!
//! A request path that could mean two things — a `.` or `..` segment (also
//! written `%2e`, or `..;`), an encoded `/` or `\`, an invalid escape, a
//! control character — matches no prefix at all: while the site is not
//! ONLINE it is turned away like any other request. The app behind the
//! layer sees the raw path, and no layer can know how it resolves `..`, so
//! the only safe answer is not to exempt such a path (fail closed).
//! Browsers and proxies resolve dot segments before they send a request, so
//! no real client is refused by this.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer};

/// A path on this site, as configured: absolute, not `/` alone, no query or
/// fragment, no `.`/`..` or empty segment, only characters a URL path may
/// hold (anything else percent-encoded), and escapes that decode to UTF-8
/// without `/`, `\` or a control character.
///
/// It matches a request path by whole segments: `/healthz` matches
/// `/healthz` and `/healthz/live`, not `/healthzX`. A trailing `/` changes
/// nothing (`/static/` matches `/static` too).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SitePath {
    /// As written (kept for `Location` headers and printed URLs).
    text: String,
    /// Its segments, percent-decoded.
    segments: Vec<String>,
    /// No escape in `text`: its segments are its bytes, so a canonical
    /// request path ([`RequestPath`]) is matched by one byte comparison.
    plain: bool,
}

/// Why a configured path is refused; its message names the value, what is
/// wrong and what a valid one looks like.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{value:?} is not a usable path on this site: {problem}; write an absolute path \
     such as \"/maintenance.html\" or \"/static/\""
)]
pub struct SitePathError {
    /// The value refused.
    pub value: String,
    /// What is wrong with it.
    pub problem: String,
}

/// The characters a path may hold unencoded (RFC 3986 `pchar` and `/`).
fn is_path_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/%".contains(&b)
}

/// A decoded byte no segment may hold: a separator in disguise or a
/// control character.
fn is_forbidden_decoded(b: u8) -> bool {
    b == b'/' || b == b'\\' || b < 0x20 || b == 0x7f
}

/// Whether a decoded segment is `.` or `..` — also with `;` parameters
/// (`..;x`), which some servers strip before they resolve it.
fn is_dot_segment(decoded: &[u8]) -> bool {
    let name = decoded.split(|&b| b == b';').next().unwrap_or(decoded);
    name == b"." || name == b".."
}

/// Percent-decodes one segment; `None` on an escape that is not `%` and two
/// hex digits.
fn decode(segment: &str) -> Option<Cow<'_, [u8]>> {
    if !segment.contains('%') {
        return Some(Cow::Borrowed(segment.as_bytes()));
    }
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hi = crate::hex::digit(*bytes.get(i + 1)?)?;
            let lo = crate::hex::digit(*bytes.get(i + 2)?)?;
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(Cow::Owned(out))
}

/// One raw segment, decoded; or what is wrong with it.
fn check_segment(raw: &str) -> Result<Cow<'_, [u8]>, &'static str> {
    let decoded =
        decode(raw).ok_or("it has an invalid percent escape (`%` takes two hex digits)")?;
    if decoded.iter().any(|&b| is_forbidden_decoded(b)) {
        return Err("an escape encodes `/`, `\\` or a control character");
    }
    if std::str::from_utf8(&decoded).is_err() {
        return Err("its escapes do not decode to UTF-8");
    }
    if is_dot_segment(&decoded) {
        return Err("it has a `.` or `..` segment");
    }
    Ok(decoded)
}

impl SitePath {
    /// Checks `text` and splits it into decoded segments.
    pub fn parse(text: &str) -> Result<SitePath, SitePathError> {
        let refuse = |problem: &str| SitePathError {
            value: text.to_owned(),
            problem: problem.to_owned(),
        };
        if text.is_empty() {
            return Err(refuse("it is empty"));
        }
        if !text.starts_with('/') {
            return Err(refuse("it does not start with `/`"));
        }
        if let Some(c) = text.chars().find(|c| matches!(c, '?' | '#')) {
            return Err(refuse(&format!(
                "it has a query or fragment (`{c}`): name the path alone"
            )));
        }
        if let Some(c) = text
            .chars()
            .find(|&c| !c.is_ascii() || !is_path_char(c as u8))
        {
            return Err(refuse(&format!("{c:?} must be percent-encoded in a path")));
        }
        let inner = text[1..].strip_suffix('/').unwrap_or(&text[1..]);
        if inner.is_empty() {
            return Err(refuse("`/` alone would match every request"));
        }
        let mut segments = Vec::new();
        for raw in inner.split('/') {
            if raw.is_empty() {
                return Err(refuse("it has an empty segment (`//`)"));
            }
            let decoded = check_segment(raw).map_err(refuse)?;
            let decoded = String::from_utf8(decoded.into_owned())
                .map_err(|_| refuse("its escapes do not decode to UTF-8"))?;
            segments.push(decoded);
        }
        Ok(SitePath {
            text: text.to_owned(),
            segments,
            plain: !text.contains('%'),
        })
    }

    /// The path as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether `path` is this path or lies below it, segment by segment.
    pub fn matches(&self, path: &RequestPath<'_>) -> bool {
        if self.plain && path.canonical {
            // The same answer as the segments' (a test checks it): with no
            // escape on either side and no empty segment in the request,
            // its segments begin with ours exactly when its bytes begin
            // with our text up to a `/` or the end.
            let ours = self.text.strip_suffix('/').unwrap_or(&self.text);
            let raw = path.raw.as_bytes();
            return raw.starts_with(ours.as_bytes())
                && raw.get(ours.len()).is_none_or(|&b| b == b'/');
        }
        self.matches_by_segments(path)
    }

    /// [`SitePath::matches`], segment by segment (any checked path).
    fn matches_by_segments(&self, path: &RequestPath<'_>) -> bool {
        let mut theirs = path.segments();
        self.segments
            .iter()
            .all(|want| theirs.next().is_some_and(|raw| decoded_eq(raw, want)))
    }

    /// The one decoded segment that follows this path in `path`, when
    /// `path` is exactly this path, `/`, and that segment (the bypass path's
    /// secret): `None` for anything else, a trailing `/` included.
    pub fn child_of(&self, path: &RequestPath<'_>) -> Option<String> {
        if path.raw.ends_with('/') {
            return None;
        }
        let mut theirs = path.segments();
        for want in &self.segments {
            if !theirs.next().is_some_and(|raw| decoded_eq(raw, want)) {
                return None;
            }
        }
        let last = theirs.next()?;
        if theirs.next().is_some() {
            return None;
        }
        String::from_utf8(decode(last)?.into_owned()).ok()
    }

    /// The URL of `segment` below this path, percent-encoded so that a
    /// request for it reads back as that one segment (`child_of`): the
    /// bypass link the CLI prints.
    pub fn join(&self, segment: &str) -> String {
        let mut url = self.text.clone();
        if !url.ends_with('/') {
            url.push('/');
        }
        for b in segment.bytes() {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                url.push(b as char);
            } else {
                url.push_str(&format!("%{b:02X}"));
            }
        }
        url
    }
}

/// Whether raw segment `raw` (checked by [`RequestPath::parse`]) decodes to
/// `want`, without allocating.
fn decoded_eq(raw: &str, want: &str) -> bool {
    let bytes = raw.as_bytes();
    let mut want = want.bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = if bytes[i] == b'%' {
            let (Some(hi), Some(lo)) = (
                bytes.get(i + 1).copied().and_then(crate::hex::digit),
                bytes.get(i + 2).copied().and_then(crate::hex::digit),
            ) else {
                return false;
            };
            i += 3;
            hi << 4 | lo
        } else {
            i += 1;
            bytes[i - 1]
        };
        if want.next() != Some(b) {
            return false;
        }
    }
    want.next().is_none()
}

impl fmt::Display for SitePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for SitePath {
    type Err = SitePathError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SitePath::parse(s)
    }
}

impl TryFrom<&str> for SitePath {
    type Error = SitePathError;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        SitePath::parse(s)
    }
}

impl TryFrom<String> for SitePath {
    type Error = SitePathError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        SitePath::parse(&s)
    }
}

impl TryFrom<&String> for SitePath {
    type Error = SitePathError;
    fn try_from(s: &String) -> Result<Self, Self::Error> {
        SitePath::parse(s)
    }
}

impl<'de> Deserialize<'de> for SitePath {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        SitePath::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Whether every non-empty segment of `raw` passes [`check_segment`].
fn every_segment_checked(raw: &str) -> bool {
    raw.split('/')
        .filter(|s| !s.is_empty())
        .all(|s| check_segment(s).is_ok())
}

/// The web layer runs this on every request, so it has a fast path
/// with the same answer as [`every_segment_checked`]: for a path with no
/// escape (`%`), no `;`, no `\` and no control character, a segment is
/// refused only when it is `.` or `..`. `Some` for such a path, in one
/// pass over its bytes, saying whether no segment is one and whether it has
/// no empty segment (`//`); `None` for any other.
fn plain_path(raw: &[u8]) -> Option<Plainly> {
    // Each segment's length, and how many of its bytes are dots.
    let (mut len, mut dots) = (0u32, 0u32);
    let mut dot_segment = false;
    // A slash with none of a segment before it, but the first: `//`.
    let mut empty = false;
    let mut first = true;
    for &b in raw {
        match PLAIN[usize::from(b)] {
            Plain::Slash => {
                dot_segment |= len > 0 && len == dots && dots <= 2;
                empty |= len == 0 && !first;
                first = false;
                (len, dots) = (0, 0);
            }
            Plain::Dot => (len, dots) = (len + 1, dots + 1),
            Plain::Other => len += 1,
            Plain::No => return None,
        }
    }
    dot_segment |= len > 0 && len == dots && dots <= 2;
    Some(Plainly {
        no_dot: !dot_segment,
        no_empty: !empty,
    })
}

/// The commonest path of all, eight bytes at a time: whether `raw` (which
/// starts with `/`) is plain, holds no `.` and no `//`, so that
/// [`plain_path`] would find it usable and canonical. `false` sends the
/// path to [`plain_path`] (a dot in a file name, say), which decides.
fn simply_canonical(raw: &[u8]) -> bool {
    let mut chunks = raw.chunks_exact(8);
    // Whether the byte before this word is a `/`.
    let mut after_slash = false;
    for chunk in &mut chunks {
        let mut word = [0; 8];
        word.copy_from_slice(chunk);
        if !simple_word(u64::from_le_bytes(word), &mut after_slash) {
            return false;
        }
    }
    let tail = chunks.remainder();
    if tail.is_empty() {
        return true;
    }
    // Padded with a byte that is neither special nor a slash.
    let mut word = [b'a'; 8];
    word[..tail.len()].copy_from_slice(tail);
    simple_word(u64::from_le_bytes(word), &mut after_slash)
}

/// `ONES * b`: byte `b` in every lane.
const ONES: u64 = 0x0101_0101_0101_0101;
/// The high bit of every lane.
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// Non-zero when some lane of `x` is below `n` (at most 0x80): the
/// classic word-at-a-time test, exact as to whether any lane is.
fn lanes_below(x: u64, n: u8) -> u64 {
    x.wrapping_sub(ONES * u64::from(n)) & !x & HIGHS
}

/// Non-zero when some lane of `x` is byte `b`.
fn lanes_equal(x: u64, b: u8) -> u64 {
    lanes_below(x ^ (ONES * u64::from(b)), 1)
}

/// One word of [`simply_canonical`]: no control character, DEL, `%`,
/// `;`, `\` or `.`, and no `/` right after another (within the word, or
/// across from the last word's final byte).
fn simple_word(x: u64, after_slash: &mut bool) -> bool {
    let special = lanes_below(x, 0x20)
        | lanes_equal(x, 0x7f)
        | lanes_equal(x, b'%')
        | lanes_equal(x, b';')
        | lanes_equal(x, b'\\')
        | lanes_equal(x, b'.');
    // A slash is a zero lane of `slashes`; two in a row, a zero lane of
    // it or'ed with itself one lane on (the last lane has no next one).
    let slashes = x ^ (ONES * u64::from(b'/'));
    let doubled = lanes_below(slashes | (slashes >> 8) | (0xff << 56), 1);
    let bytes = x.to_le_bytes();
    let across = *after_slash && bytes[0] == b'/';
    *after_slash = bytes[7] == b'/';
    (special | doubled) == 0 && !across
}

/// What [`plain_path`] found in a plain path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Plainly {
    /// No `.` or `..` segment: the path is usable.
    no_dot: bool,
    /// No empty segment but a trailing `/`.
    no_empty: bool,
}

/// What a byte is to [`plain_path`].
#[derive(Clone, Copy)]
enum Plain {
    Slash,
    Dot,
    Other,
    /// An escape, `;`, `\` or a control character: not a plain path.
    No,
}

const PLAIN: [Plain; 256] = {
    let mut table = [Plain::Other; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = Plain::No;
        b += 1;
    }
    table[0x7f] = Plain::No;
    table[b'%' as usize] = Plain::No;
    table[b';' as usize] = Plain::No;
    table[b'\\' as usize] = Plain::No;
    table[b'/' as usize] = Plain::Slash;
    table[b'.' as usize] = Plain::Dot;
    table
};

/// A request's path (the URI's path, without its query), checked so that it
/// means one thing. Its segments are compared decoded; empty ones (`//`, a
/// trailing `/`) are skipped.
#[derive(Debug, Clone, Copy)]
pub struct RequestPath<'a> {
    raw: &'a str,
    /// Plain (no escape, `;`, `\` or control character: the fast path of
    /// [`RequestPath::parse`]) with no empty segment but a trailing `/`:
    /// its segments are its bytes between single slashes.
    canonical: bool,
}

impl<'a> RequestPath<'a> {
    /// The path `raw`, or `None` when it could mean two things and so must
    /// match no configured path: not absolute, a `.`/`..` segment (plain,
    /// encoded, or with `;` parameters), an escape that is invalid or
    /// encodes `/`, `\`, NUL or another control character, or one that does
    /// not decode to UTF-8.
    pub fn parse(raw: &'a str) -> Option<RequestPath<'a>> {
        if !raw.starts_with('/') {
            return None;
        }
        if simply_canonical(raw.as_bytes()) {
            return Some(RequestPath {
                raw,
                canonical: true,
            });
        }
        let (checked, canonical) = match plain_path(raw.as_bytes()) {
            Some(Plainly { no_dot, no_empty }) => (no_dot, no_empty),
            None => (every_segment_checked(raw), false),
        };
        checked.then_some(RequestPath { raw, canonical })
    }

    /// The raw path.
    pub fn as_str(&self) -> &'a str {
        self.raw
    }

    /// Its non-empty raw segments.
    fn segments(&self) -> Segments<'a> {
        Segments { rest: self.raw }
    }
}

/// The non-empty segments of a raw path, split at each `/` (a byte search:
/// the web layer does this on every request).
struct Segments<'a> {
    rest: &'a str,
}

impl<'a> Iterator for Segments<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let rest = self.rest.trim_start_matches('/');
        let end = rest.bytes().position(|b| b == b'/').unwrap_or(rest.len());
        let (segment, rest) = rest.split_at(end);
        self.rest = rest;
        (!segment.is_empty()).then_some(segment)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fast_path_answers_as_the_segment_check_does() {
        for path in [
            "/",
            "//",
            "/a",
            "/a/",
            "/account",
            "/static/app.css",
            "/.",
            "/..",
            "/...",
            "/a/.",
            "/a/..",
            "/a/../b",
            "/a/./b",
            "/./a",
            "/../a",
            "/.a",
            "/a.",
            "/..a",
            "/a..",
            "/.../a",
            "/a//b",
            "/é/ü",
            "/a/b/c/d.e.f",
            "/-._~!$&'()*+,=:@",
        ] {
            assert_eq!(
                plain_path(path.as_bytes()).map(|p| p.no_dot),
                Some(every_segment_checked(path)),
                "{path}"
            );
            assert_eq!(
                plain_path(path.as_bytes()).map(|p| p.no_empty),
                Some(!path.contains("//")),
                "{path}"
            );
        }
        for path in ["/a%2e", "/a;b", "/a\\b", "/a\u{1}b", "/a\u{7f}"] {
            assert_eq!(plain_path(path.as_bytes()), None, "{path:?}");
        }
    }

    /// The word-at-a-time check says yes exactly when the byte loop finds
    /// the path usable and canonical with no dot in it: every path of up
    /// to ten bytes from an alphabet of the bytes it tells apart (so every
    /// position of each within a word and across two), and long ones.
    #[test]
    fn the_word_check_answers_as_the_byte_loop_does() {
        const BYTES: [u8; 10] = [b'/', b'a', b'.', b'%', b';', b'\\', 0x1f, 0x7f, 0x20, 0xc3];
        let mut paths: Vec<Vec<u8>> = vec![b"/".to_vec()];
        let mut last = paths.clone();
        for len in 2..=10 {
            // Past five bytes, only the ones that matter most (a slash, a
            // letter and one special), to keep it quick.
            let alphabet: &[u8] = if len <= 5 { &BYTES } else { &BYTES[..3] };
            last = last
                .iter()
                .flat_map(|p| alphabet.iter().map(move |&b| [p.as_slice(), &[b]].concat()))
                .collect();
            paths.extend(last.iter().cloned());
        }
        for n in [7, 8, 9, 15, 16, 17, 64] {
            for at in 1..n {
                for b in [b'/', b'.', b'%', 0x00] {
                    let mut path = vec![b'x'; n];
                    path[0] = b'/';
                    path[at] = b;
                    paths.push(path.clone());
                    path[at - 1] = b'/';
                    paths.push(path);
                }
            }
        }
        let mut yes = 0;
        for path in &paths {
            let by_bytes =
                plain_path(path).is_some_and(|p| p.no_dot && p.no_empty && !path.contains(&b'.'));
            assert_eq!(simply_canonical(path), by_bytes, "{path:?}");
            yes += usize::from(by_bytes);
        }
        assert!(yes > 1_000, "{yes} of {}", paths.len());
    }

    fn site(text: &str) -> SitePath {
        SitePath::parse(text).unwrap()
    }

    fn passes(prefix: &str, path: &str) -> bool {
        RequestPath::parse(path).is_some_and(|p| site(prefix).matches(&p))
    }

    /// The one-comparison match gives the segments' answer: every request
    /// path of up to six pieces, against prefixes plain and escaped.
    #[test]
    fn the_fast_match_answers_as_the_segments_do() {
        const PIECES: [&str; 7] = ["/", "a", "b", ".", "ab", "%61", ";"];
        let prefixes = ["/a", "/a/", "/a/b", "/ab", "/b/a/", "/a%62", "/a;b", "/.a"];
        let mut paths = vec![String::from("/")];
        let mut last = paths.clone();
        for _ in 0..6 {
            last = last
                .iter()
                .flat_map(|p| PIECES.iter().map(move |x| format!("{p}{x}")))
                .collect();
            paths.extend(last.iter().cloned());
        }
        let (mut fast, mut compared) = (0, 0);
        for prefix in prefixes.map(site) {
            for path in &paths {
                let Some(request) = RequestPath::parse(path) else {
                    continue;
                };
                fast += usize::from(prefix.plain && request.canonical);
                compared += 1;
                assert_eq!(
                    prefix.matches(&request),
                    prefix.matches_by_segments(&request),
                    "{prefix} against {path}"
                );
            }
        }
        assert!(fast > 10_000 && compared > fast, "{fast} of {compared}");
    }

    #[test]
    fn a_prefix_matches_whole_segments_only() {
        for path in [
            "/healthz",
            "/healthz/",
            "/healthz/live",
            "/healthz//live",
            "//healthz",
        ] {
            assert!(passes("/healthz", path), "{path}");
        }
        for path in [
            "/healthzX",
            "/healthz.json",
            "/health",
            "/",
            "/HEALTHZ",
            "/x/healthz",
            "/healthz;x=1",
        ] {
            assert!(!passes("/healthz", path), "{path}");
        }
        assert!(passes("/static/", "/static/app.css"));
        assert!(passes("/static/", "/static"));
        assert!(!passes("/static/", "/staticfiles/app.css"));
        assert!(passes("/a/b", "/a/b/c"));
        assert!(!passes("/a/b", "/a/bc"));
        assert!(!passes("/a/b", "/a"));
    }

    #[test]
    fn escapes_are_decoded_in_any_case() {
        assert!(passes("/healthz", "/health%7A"));
        assert!(passes("/healthz", "/health%7a"));
        assert!(passes("/caf%C3%A9", "/caf%c3%a9/menu"));
        assert!(passes("/a%20b", "/a%20b"));
        assert!(!passes("/healthz", "/healthz%20"));
    }

    #[test]
    fn ambiguous_request_paths_match_nothing() {
        for path in [
            "/healthz/../admin",
            "/healthz/./x",
            "/healthz/%2e%2e/admin",
            "/healthz/%2E%2E/admin",
            "/healthz/.%2e/admin",
            "/healthz/%2e",
            "/healthz/..;/admin",
            "/healthz/..;x=1/admin",
            "/healthz/%2e%2e%3b/admin",
            "/%2e%2e/admin",
            "/..",
            "/healthz%2F..%2Fadmin",
            "/healthz%2f..%2fadmin",
            "/healthz/..%5Cadmin",
            "/healthz/..\\admin",
            "/healthz%00",
            "/healthz/%00",
            "/healthz/%0a",
            "/healthz/%7f",
            "/healthz/%",
            "/healthz/%2",
            "/healthz/%zz",
            "/healthz/%C0%AE%C0%AE/admin",
            "/healthz/%ff",
            "healthz",
            "*",
            "",
        ] {
            assert!(
                RequestPath::parse(path).is_none(),
                "{path:?} must not parse"
            );
            assert!(!passes("/healthz", path), "{path:?}");
        }
        // Dots inside a name are no dot segment.
        assert!(passes("/healthz", "/healthz/.well-known"));
        assert!(passes("/healthz", "/healthz/...x"));
    }

    #[test]
    fn configured_paths_are_checked() {
        for (text, problem) in [
            ("", "empty"),
            ("healthz", "does not start with `/`"),
            ("/", "`/` alone"),
            ("//", "`/` alone"),
            ("/maintenance.html?x=1", "query or fragment"),
            ("/maintenance.html#top", "query or fragment"),
            ("/a/../b", "`.` or `..`"),
            ("/a/./b", "`.` or `..`"),
            ("/%2e%2e/b", "`.` or `..`"),
            ("/a//b", "empty segment"),
            ("/a b", "percent-encoded"),
            ("/a\u{0}b", "percent-encoded"),
            ("/a\tb", "percent-encoded"),
            ("/café", "percent-encoded"),
            ("/a\\b", "percent-encoded"),
            ("/a%2Fb", "encodes `/`"),
            ("/a%00", "control character"),
            ("/a%zz", "invalid percent escape"),
            ("/a%4", "invalid percent escape"),
            ("/a%ff", "UTF-8"),
        ] {
            let err = SitePath::parse(text).unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains(problem), "{text:?}: {msg}");
            assert!(msg.contains(&format!("{text:?}")), "names the value: {msg}");
            assert!(msg.contains("such as \"/maintenance.html\""), "{msg}");
        }
        for ok in [
            "/maintenance.html",
            "/static/",
            "/_maintenance/bypass/",
            "/caf%C3%A9",
            "/a;v=1",
        ] {
            assert_eq!(site(ok).as_str(), ok);
        }
    }

    #[test]
    fn a_child_is_exactly_one_more_segment() {
        let bypass = site("/_maintenance/bypass/");
        let child = |p: &str| RequestPath::parse(p).and_then(|p| bypass.child_of(&p));
        assert_eq!(
            child("/_maintenance/bypass/s3cret").as_deref(),
            Some("s3cret")
        );
        assert_eq!(child("/_maintenance/bypass/a%20b").as_deref(), Some("a b"));
        for no in [
            "/_maintenance/bypass/",
            "/_maintenance/bypass",
            "/_maintenance/bypass/s3cret/",
            "/_maintenance/bypass/s3cret/x",
            "/_maintenance/bypassX/s3cret",
            "/_maintenance/bypass/../s3cret",
        ] {
            assert_eq!(child(no), None, "{no}");
        }
        // The printed link reads back as the one segment, whatever it holds.
        for secret in ["s3cret", "a b", "ü?#%;"] {
            let url = bypass.join(secret);
            assert_eq!(child(&url).as_deref(), Some(secret), "{url}");
        }
        assert_eq!(site("/_bypass").join("s3cret"), "/_bypass/s3cret");
    }
}
