//! Fuzzes `levee::path::normalize`, the normal form every request path takes before routing.
//! It must never panic, and whatever it returns must be normal: it starts with `/`, holds no
//! `.` or `..` segment, normalises to itself without a copy (idempotence), and decodes no
//! reserved character (an escaped `/` or `?` must not become a real one).
//!
//! Input: the path as text; the first byte picks `merge_slashes` (odd: merge) and is not part
//! of the path.

#![no_main]

use std::borrow::Cow;

use levee::path::{Options, normalize};
use libfuzzer_sys::fuzz_target;

/// RFC 3986 gen-delims and sub-delims, plus `%`: normalising may drop them (with a removed
/// segment or a merged slash) but never make more of them.
const RESERVED: &[u8] = b":/?#[]@!$&'()*+,;=%";

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let Ok(path) = std::str::from_utf8(rest) else {
        return;
    };
    let options = Options {
        merge_slashes: flags & 1 == 1,
    };
    let Ok(normal) = normalize(path, options) else {
        return;
    };
    if path == "*" {
        assert_eq!(normal, "*");
        return;
    }

    assert!(normal.starts_with('/'), "{path:?} -> {normal:?}");
    for segment in normal.split('/') {
        assert!(segment != "." && segment != "..", "{path:?} -> {normal:?}");
    }
    if options.merge_slashes {
        assert!(!normal.contains("//"), "{path:?} -> {normal:?}");
    }
    for &reserved in RESERVED {
        let count = |s: &str| s.bytes().filter(|&b| b == reserved).count();
        assert!(
            count(&normal) <= count(path),
            "{path:?} -> {normal:?} made a `{}`",
            char::from(reserved)
        );
    }

    match normalize(&normal, options) {
        Ok(Cow::Borrowed(again)) => assert_eq!(again, normal, "{path:?}"),
        other => panic!("{path:?} -> {normal:?} -> {other:?}: not idempotent"),
    }
});
