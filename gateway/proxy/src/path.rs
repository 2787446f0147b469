//! Request path normalisation: the one form of a path that routing, the route's policy and the
//! upstream all see.
//!
//! Without it a route's policy can be stepped around: with a rate-limited `/api/login` route
//! and a broader `/api` one, `/api/x/../login`, `/api/%6cogin`, `/api//login` and
//! `/api/./login` all take `/api`, and many upstream frameworks resolve them back to
//! `/api/login`. This follows Envoy's `normalize_path` and `merge_slashes`:
//!
//! - percent-encoded unreserved characters (`A-Z a-z 0-9 - . _ ~`, RFC 3986 section 2.3) are
//!   decoded, and the hex digits of every other escape are upper-cased (`%2f` -> `%2F`);
//!   escaped slashes and backslashes (`%2F`, `%5C`) stay encoded, as Envoy keeps them by
//!   default;
//! - dot segments are removed as RFC 3986 section 5.2.4 says (`..` above the root stays at
//!   the root);
//! - optionally, runs of slashes become one.
//!
//! A path that cannot be normalised safely is refused: one that does not start with `/`
//! (other than the `*` of `OPTIONS *`), a malformed escape, an escaped NUL (`%00`), or a raw
//! backslash, which some upstreams read as a slash. Only the path is ever touched, never the
//! query.
//!
//! The common case is a path that is already normal: [`normalize`] then scans it once and
//! allocates nothing.

use std::borrow::Cow;

/// How to normalise a path.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Options {
    /// Whether runs of slashes become one (`/a//b` -> `/a/b`). Default `false`.
    pub merge_slashes: bool,
}

/// A path that cannot be normalised safely; the request gets `400 Bad Request`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidPath(pub &'static str);

/// The normal form of `path` (a request target's path, without its query): the same slice
/// when it is already normal, else a new string.
///
/// Normalising a normal path changes nothing, so `normalize(normalize(p)) == normalize(p)`.
///
/// # Errors
///
/// [`InvalidPath`] when the path does not start with `/` (and is not `*`), holds a
/// malformed percent escape, an escaped NUL, or a raw backslash.
pub fn normalize(path: &str, options: Options) -> Result<Cow<'_, str>, InvalidPath> {
    if path == "*" {
        return Ok(Cow::Borrowed(path));
    }
    if !path.starts_with('/') {
        return Err(InvalidPath("the request path must start with `/`"));
    }
    if is_normal(path.as_bytes(), options) {
        return Ok(Cow::Borrowed(path));
    }
    let decoded = decode_unreserved(path)?;
    let mut out = remove_dot_segments(&decoded);
    if options.merge_slashes {
        merge_slashes(&mut out);
    }
    Ok(Cow::Owned(out))
}

/// Whether `path` (starting with `/`) is already in normal form: one pass, no allocation.
fn is_normal(path: &[u8], options: Options) -> bool {
    let mut i = 0;
    while i < path.len() {
        match path[i] {
            b'%' => match escape(path, i) {
                Some(byte) if byte != 0 && !is_unreserved(byte) && is_upper_hex(path, i) => {
                    i += 3;
                    continue;
                }
                _ => return false,
            },
            b'\\' => return false,
            b'/' => {
                let rest = &path[i + 1..];
                if is_dot_segment(rest) || (options.merge_slashes && rest.first() == Some(&b'/')) {
                    return false;
                }
            }
            _ => {}
        }
        i += 1;
    }
    true
}

/// Whether the segment `rest` starts with is `.` or `..`.
fn is_dot_segment(rest: &[u8]) -> bool {
    let segment = rest.split(|&b| b == b'/').next().unwrap_or_default();
    segment == b"." || segment == b".."
}

/// The byte the escape at `path[i]` (a `%`) stands for, if it is well formed.
fn escape(path: &[u8], i: usize) -> Option<u8> {
    let hi = hex_value(*path.get(i + 1)?)?;
    let lo = hex_value(*path.get(i + 2)?)?;
    Some((hi << 4) | lo)
}

fn is_upper_hex(path: &[u8], i: usize) -> bool {
    !path[i + 1].is_ascii_lowercase() && !path[i + 2].is_ascii_lowercase()
}

fn hex_value(b: u8) -> Option<u8> {
    char::from(b)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

/// RFC 3986 section 2.3.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Decodes escaped unreserved characters and upper-cases the hex of the other escapes.
fn decode_unreserved(path: &str) -> Result<String, InvalidPath> {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let byte = escape(bytes, i)
                    .ok_or(InvalidPath("the request path holds a malformed `%` escape"))?;
                if byte == 0 {
                    return Err(InvalidPath("the request path holds an escaped NUL (`%00`)"));
                }
                out.push_str(&path[start..i]);
                if is_unreserved(byte) {
                    out.push(char::from(byte));
                } else {
                    out.push('%');
                    out.push(char::from(bytes[i + 1].to_ascii_uppercase()));
                    out.push(char::from(bytes[i + 2].to_ascii_uppercase()));
                }
                i += 3;
                start = i;
            }
            b'\\' => return Err(InvalidPath("the request path holds a backslash")),
            _ => i += 1,
        }
    }
    out.push_str(&path[start..]);
    Ok(out)
}

/// RFC 3986 section 5.2.4, for a path that starts with `/`.
fn remove_dot_segments(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut input = path;
    while !input.is_empty() {
        if let Some(rest) = input.strip_prefix("../") {
            input = rest;
        } else if let Some(rest) = input.strip_prefix("./") {
            input = rest;
        } else if input.starts_with("/./") {
            input = &input[2..];
        } else if input == "/." {
            input = "/";
        } else if input.starts_with("/../") {
            input = &input[3..];
            pop_segment(&mut out);
        } else if input == "/.." {
            input = "/";
            pop_segment(&mut out);
        } else if input == "." || input == ".." {
            input = "";
        } else {
            // The first segment, with its leading `/`, up to the next `/`.
            let end = input[1..].find('/').map_or(input.len(), |at| at + 1);
            out.push_str(&input[..end]);
            input = &input[end..];
        }
    }
    out
}

/// Drops the last segment of `out` and its leading `/`.
fn pop_segment(out: &mut String) {
    out.truncate(out.rfind('/').unwrap_or(0));
}

fn merge_slashes(path: &mut String) {
    let mut previous = None;
    path.retain(|c| {
        let keep = !(c == '/' && previous == Some('/'));
        previous = Some(c);
        keep
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEEP: Options = Options {
        merge_slashes: false,
    };
    const MERGE: Options = Options {
        merge_slashes: true,
    };

    #[test]
    fn normalises_the_policy_bypasses_of_issue_14() {
        for bypass in [
            "/api/x/../login",
            "/api/%6cogin",
            "/api/%6Cogin",
            "/api//login",
            "/api/./login",
            "/api/x/%2e%2e/login",
            "/api/x/%2E./login",
        ] {
            assert_eq!(normalize(bypass, MERGE).unwrap(), "/api/login", "{bypass}");
        }
        // Without merging, `//` is a distinct (empty) segment, as Envoy keeps it.
        assert_eq!(normalize("/api//login", KEEP).unwrap(), "/api//login");
    }

    #[test]
    fn follows_rfc_3986_remove_dot_segments() {
        let cases = [
            ("/a/b/c/./../../g", "/a/g"),
            ("/mid/content=5/../6", "/mid/6"),
            ("/..", "/"),
            ("/../../etc/passwd", "/etc/passwd"),
            ("/a/..", "/"),
            ("/a/.", "/a/"),
            ("/a/b/..", "/a/"),
            ("/a/b/.", "/a/b/"),
            ("/.", "/"),
            ("/a/...", "/a/..."),
            ("/a/.b/..c", "/a/.b/..c"),
            ("/a//../b", "/a/b"),
        ];
        for (path, normal) in cases {
            assert_eq!(normalize(path, KEEP).unwrap(), normal, "{path}");
        }
    }

    #[test]
    fn decodes_only_unreserved_escapes_and_upper_cases_the_rest() {
        let cases = [
            ("/%41%7a%30%2D%2e%5F%7e", "/Az0-._~"),
            ("/a%2fb", "/a%2Fb"),
            ("/a%2Fb", "/a%2Fb"),
            ("/a%5cb", "/a%5Cb"),
            ("/a%20b%3f", "/a%20b%3F"),
            ("/%252e", "/%252e"),
            ("/caf%c3%a9", "/caf%C3%A9"),
        ];
        for (path, normal) in cases {
            assert_eq!(normalize(path, KEEP).unwrap(), normal, "{path}");
        }
        // An escaped slash is no segment separator: no dot segment to remove here.
        assert_eq!(normalize("/a%2f..%2fb", KEEP).unwrap(), "/a%2F..%2Fb");
    }

    #[test]
    fn merges_slashes_only_when_asked() {
        assert_eq!(normalize("//a///b//", MERGE).unwrap(), "/a/b/");
        assert_eq!(normalize("//a///b//", KEEP).unwrap(), "//a///b//");
    }

    #[test]
    fn borrows_a_path_that_is_already_normal() {
        for path in [
            "/",
            "/api/login",
            "/a%2Fb",
            "/a/...",
            "/a.b/c..d",
            "/%C3%A9",
            "*",
        ] {
            assert!(
                matches!(normalize(path, MERGE), Ok(Cow::Borrowed(p)) if p == path),
                "{path}"
            );
        }
        assert!(matches!(normalize("/a//b", KEEP), Ok(Cow::Borrowed(_))));
    }

    #[test]
    fn refuses_paths_it_cannot_normalise_safely() {
        for path in [
            "",
            "api/login",
            "/a%00b",
            "/a%zz",
            "/a%4",
            "/a%",
            "/a\\..\\b",
        ] {
            assert!(normalize(path, MERGE).is_err(), "{path}");
        }
    }

    #[test]
    fn is_idempotent() {
        for path in [
            "/a/b/c/./../../g",
            "/api/x/%2e%2e/login",
            "/a//..//b/./",
            "/%2e%2E/%2e",
            "//./..//",
            "/a%2f%2e%2e%2fb",
        ] {
            for options in [KEEP, MERGE] {
                let once = normalize(path, options).unwrap().into_owned();
                let twice = normalize(&once, options).unwrap();
                assert_eq!(twice, once, "{path} {options:?}");
                assert!(matches!(twice, Cow::Borrowed(_)), "{path} {options:?}");
            }
        }
    }

    /// Every path of up to six characters over an alphabet that makes dot segments, escapes
    /// and repeated slashes: what the fuzz target checks, exhaustively on small inputs.
    #[test]
    fn every_short_path_normalises_to_a_normal_form() {
        const ALPHABET: &[u8] = b"/.%2eFa";
        let mut paths = vec![String::from("/")];
        let mut checked = 0;
        for _ in 0..6 {
            let mut longer = Vec::new();
            for path in &paths {
                for &c in ALPHABET {
                    let mut next = path.clone();
                    next.push(char::from(c));
                    longer.push(next);
                }
            }
            for path in &longer {
                for options in [KEEP, MERGE] {
                    let Ok(normal) = normalize(path, options) else {
                        continue;
                    };
                    checked += 1;
                    assert!(normal.starts_with('/'), "{path} -> {normal}");
                    assert!(
                        normal.split('/').all(|s| s != "." && s != ".."),
                        "{path} -> {normal}"
                    );
                    assert!(!options.merge_slashes || !normal.contains("//"), "{path}");
                    for reserved in ['/', '%'] {
                        let count = |s: &str| s.matches(reserved).count();
                        assert!(count(&normal) <= count(path), "{path} -> {normal}");
                    }
                    let again = normalize(&normal, options);
                    assert!(
                        matches!(again, Ok(Cow::Borrowed(p)) if p == normal),
                        "{path} -> {normal} -> {again:?}"
                    );
                }
            }
            paths = longer;
        }
        assert!(checked > 100_000, "{checked}");
    }
}
