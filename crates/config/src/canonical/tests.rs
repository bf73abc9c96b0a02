use proptest::prelude::*;

use super::*;

fn opts(merge_slashes: bool, escaped_slashes: EscapedSlashes) -> PathNormalization {
    PathNormalization { merge_slashes, escaped_slashes }
}

/// The expected result of one row: the canonical path, or the start of the refusal's message.
enum Want {
    Path(&'static str),
    Refused(&'static str),
}
use Want::{Path as P, Refused as R};

/// Runs every row and reports every failing one by name, not only the first.
fn check(o: &PathNormalization, rows: &[(&str, Want)]) {
    let mut failures = Vec::new();
    for (input, want) in rows {
        let got = normalize_path(input, o);
        let ok = match (want, &got) {
            (P(w), Ok(g)) => g == w,
            (R(w), Err(e)) => e.to_string().contains(w),
            _ => false,
        };
        if !ok {
            let want = match want {
                P(p) => format!("path {p:?}"),
                R(r) => format!("refusal containing {r:?}"),
            };
            failures.push(format!("{input:?}: want {want}, got {got:?}"));
        }
    }
    assert!(failures.is_empty(), "{} rows failed:\n{}", failures.len(), failures.join("\n"));
}

/// Every spelling of `/secure/x` that reached a protected resource through a public route
/// before paths were normalized, and the ones that were already refused.
#[test]
fn bypass_spellings_become_the_canonical_path_or_are_refused() {
    check(
        &PathNormalization::default(),
        &[
            ("/secure/x", P("/secure/x")),
            ("//secure/x", P("/secure/x")),
            ("///secure/x", P("/secure/x")),
            ("/./secure/x", P("/secure/x")),
            ("/pub/../secure/x", P("/secure/x")),
            ("/%20/../secure/x", P("/secure/x")),
            ("/%73ecure/x", P("/secure/x")),
            ("/%2e/secure/x", P("/secure/x")),
            ("/pub/%2e%2e/secure/x", P("/secure/x")),
            ("/%2fsecure/x", R("escaped slash `%2f` at byte 1")),
            ("/%2Fsecure/x", R("escaped slash `%2F` at byte 1")),
            ("/secure%2fx", R("escaped slash `%2f` at byte 7")),
            ("/x/..%2fsecure/x", R("escaped slash `%2f` at byte 5")),
            ("/secure\\x", R("backslash at byte 7")),
            ("/%5csecure/x", R("escaped slash `%5c` at byte 1")),
            ("/.%2e/secure/x", R("climbs above the root")),
            ("/%2E%2E/secure/x", R("climbs above the root")),
            ("/secure%00/x", R("control character (`%00`) at byte 7")),
            ("/SECURE/x", P("/SECURE/x")),
        ],
    );
}

#[test]
fn escapes_and_raw_bytes() {
    check(
        &PathNormalization::default(),
        &[
            // Unreserved characters decoded, other escapes kept with upper-case hex.
            ("/%41%7a%30%2D%5F%7E", P("/Az0-_~")),
            ("/a%3fb%23c%25d", P("/a%3Fb%23c%25d")),
            ("/a%20b", P("/a%20b")),
            // `%25` stays an escaped `%`: no double decoding.
            ("/%2573ecure", P("/%2573ecure")),
            // Bytes that may not appear raw are encoded; UTF-8 arrives as bytes.
            ("/caf\u{e9}", P("/caf%C3%A9")),
            ("/a\"b{c}d|e^f[g]", P("/a%22b%7Bc%7Dd%7Ce%5Ef%5Bg%5D")),
            ("/a!$&'()*+,;=:@b", P("/a!$&'()*+,;=:@b")),
            ("/a%zz", R("invalid percent-escape `%zz` at byte 2")),
            ("/a%4", R("invalid percent-escape `%4` at byte 2")),
            ("/a%", R("invalid percent-escape `%` at byte 2")),
            ("/a%0a", R("control character (`%0A`) at byte 2")),
            ("/a%7F", R("control character (`%7F`)")),
            ("/a\tb", R("control character (0x09) at byte 2")),
            ("a/b", R("must start with `/`")),
            ("", R("must start with `/`")),
            ("*", P("*")),
            // Dot segments with parameters (`..;` is `..` to Tomcat).
            ("/pub/..;/secure", R("segment `..;` is a dot segment with parameters")),
            ("/pub/.;x/secure", R("segment `.;x`")),
            ("/pub/%2e%2e;/secure", R("segment `..;`")),
            ("/pub/..x;/y", P("/pub/..x;/y")),
            // Dots inside or starting a name are not dot segments.
            ("/.well-known/jwks.json", P("/.well-known/jwks.json")),
            ("/a/.b/..c/d..", P("/a/.b/..c/d..")),
        ],
    );
}

#[test]
fn slashes_and_dot_segments() {
    check(
        &PathNormalization::default(),
        &[
            ("/", P("/")),
            ("//", P("/")),
            ("/a/", P("/a/")),
            ("/a//", P("/a/")),
            ("/a/.", P("/a/")),
            ("/a/..", P("/")),
            ("/a/./", P("/a/")),
            ("/a//b///c", P("/a/b/c")),
            ("/a//../b", P("/b")),
            ("/..", R("climbs above the root")),
            ("/a/../..", R("climbs above the root")),
            ("/a/../../b", R("climbs above the root")),
            // RFC 3986 §5.2.4's worked examples.
            ("/a/b/c/./../../g", P("/a/g")),
            ("/mid/content=5/../6", P("/mid/6")),
        ],
    );
    // Without merging, empty segments are kept and count as segments for `..`.
    check(
        &opts(false, EscapedSlashes::Reject),
        &[
            ("//secure/x", P("//secure/x")),
            ("/a//b", P("/a//b")),
            ("//", P("//")),
            ("/a//..", P("/a/")),
            ("/a//./b", P("/a//b")),
        ],
    );
}

/// RFC 3986 §5.4: references resolved against `http://a/b/c/d;p?q`, given here as the merged
/// path (§5.2.3: the base path up to its last `/`, then the reference) that §5.2.4 reduces.
/// The abnormal examples that climb above the root are refused, where the RFC clamps them.
#[test]
fn rfc3986_reference_resolution_examples() {
    check(
        &PathNormalization::default(),
        &[
            // §5.4.1 normal examples.
            ("/b/c/g", P("/b/c/g")),
            ("/b/c/./g", P("/b/c/g")),
            ("/b/c/g/", P("/b/c/g/")),
            ("/g", P("/g")),
            ("/b/c/;x", P("/b/c/;x")),
            ("/b/c/g;x", P("/b/c/g;x")),
            ("/b/c/.", P("/b/c/")),
            ("/b/c/./", P("/b/c/")),
            ("/b/c/..", P("/b/")),
            ("/b/c/../", P("/b/")),
            ("/b/c/../g", P("/b/g")),
            ("/b/c/../..", P("/")),
            ("/b/c/../../", P("/")),
            ("/b/c/../../g", P("/g")),
            // §5.4.2 abnormal examples.
            ("/b/c/../../../g", R("climbs above the root")),
            ("/b/c/../../../../g", R("climbs above the root")),
            ("/./g", P("/g")),
            ("/../g", R("climbs above the root")),
            ("/b/c/g.", P("/b/c/g.")),
            ("/b/c/.g", P("/b/c/.g")),
            ("/b/c/g..", P("/b/c/g..")),
            ("/b/c/..g", P("/b/c/..g")),
            ("/b/c/./../g", P("/b/g")),
            ("/b/c/./g/.", P("/b/c/g/")),
            ("/b/c/g/./h", P("/b/c/g/h")),
            ("/b/c/g/../h", P("/b/c/h")),
            ("/b/c/g;x=1/./y", P("/b/c/g;x=1/y")),
            ("/b/c/g;x=1/../y", P("/b/c/y")),
        ],
    );
}

#[test]
fn escaped_slash_policies() {
    check(
        &opts(true, EscapedSlashes::Keep),
        &[
            ("/a%2fb", P("/a%2Fb")),
            ("/a%5cb", P("/a%5Cb")),
            // Kept escapes are never separators, so they cannot climb.
            ("/x/..%2fsecure", P("/x/..%2Fsecure")),
            ("/a\\b", R("backslash")),
        ],
    );
    check(
        &opts(true, EscapedSlashes::Decode),
        &[
            ("/a%2fb", P("/a/b")),
            ("/a%5Cb", P("/a/b")),
            ("/x/..%2fsecure/x", P("/secure/x")),
            ("/%2fsecure", P("/secure")),
            ("/..%2f..%2fetc", R("climbs above the root")),
        ],
    );
}

/// The fast path accepts only what the slow path would leave as it is.
#[test]
fn the_fast_path_accepts_canonical_paths_only() {
    let o = PathNormalization::default();
    for p in
        ["/", "/api/orders/7", "/.well-known/jwks.json", "/a-b_c~d/e;f=g", "/caf%C3%A9", "/a%20b%3F", "/..."]
    {
        assert!(is_canonical(p.as_bytes(), &o), "{p}");
    }
    for p in ["/a/./b", "/a%3f", "/%41", "/a%2F", "//a", "/a/..", "/a\\b", "/a%0A", "/a%", "/a%4", "a"] {
        assert!(!is_canonical(p.as_bytes(), &o), "{p}");
    }
    assert!(is_canonical(b"/a%2Fb", &opts(true, EscapedSlashes::Keep)));
    assert!(is_canonical(b"//a", &opts(false, EscapedSlashes::Reject)));
}

#[test]
fn canonical_paths_are_borrowed() {
    let o = PathNormalization::default();
    for p in [
        "/",
        "/api/orders/7",
        "/.well-known/jwks.json",
        "/a-b_c~d/e;f=g",
        "*",
        "/caf%C3%A9",
        "/a%20b%3F",
        "/...",
    ] {
        assert!(matches!(normalize_path(p, &o), Ok(Cow::Borrowed(_))), "{p}");
    }
    for p in ["/a/./b", "/a%3f", "/%41", "/a%2F"] {
        assert!(!matches!(normalize_path(p, &o), Ok(Cow::Borrowed(_))), "{p}");
    }
    // A kept escaped slash is canonical under `keep`.
    let keep = opts(true, EscapedSlashes::Keep);
    assert!(matches!(normalize_path("/a%2Fb", &keep), Ok(Cow::Borrowed(_))));
}

/// Routing ignores `;` parameters in segments, as servlet containers do when they map a path.
#[test]
fn routing_paths_drop_segment_parameters() {
    let rows: &[(&str, Result<Option<&str>, &str>)] = &[
        ("/secure/x", Ok(None)),
        ("/secure;jsessionid=1/x", Ok(Some("/secure/x"))),
        ("/secure;x", Ok(Some("/secure"))),
        ("/a;x/", Ok(Some("/a/"))),
        ("/a;b;c/d;e", Ok(Some("/a/d"))),
        ("//a;x", Ok(Some("//a"))),
        ("/;x/secure", Err("segment `;x` has parameters but no name")),
        ("/users/;x/secrets", Err("segment `;x`")),
        ("/a/;x/b", Err("segment `;x`")),
        // A last segment of parameters only: Tomcat's URL rewriting.
        ("/;jsessionid=1", Ok(Some("/"))),
        ("/app/;jsessionid=1", Ok(Some("/app/"))),
    ];
    for (path, want) in rows {
        let got = without_parameters(path);
        match (want, &got) {
            (Ok(w), Ok(g)) => assert_eq!(g.as_deref(), *w, "{path}"),
            (Err(w), Err(e)) => assert!(e.to_string().contains(w), "{path}: {e}"),
            _ => panic!("{path}: want {want:?}, got {got:?}"),
        }
    }
    for (path, prefix, want) in [
        ("/api;v=1/orders", "/api", "/orders"),
        ("/api;v=1", "/api", "/"),
        ("/a;x/b;y/c", "/a/b", "/c"),
        ("/a;x/b", "/", "/a;x/b"),
        ("/a;x//b;y/c", "/a//b", "/c"),
    ] {
        assert_eq!(strip_segments(path, prefix), want, "{path} - {prefix}");
    }
}

#[test]
fn hosts() {
    let rows: &[(&str, Result<&str, HostError>)] = &[
        ("admin.example.com", Ok("admin.example.com")),
        ("ADMIN.Example.COM", Ok("admin.example.com")),
        ("admin.example.com.", Ok("admin.example.com")),
        ("127.0.0.1", Ok("127.0.0.1")),
        ("[::1]", Ok("[::1]")),
        ("[FE80::1]", Ok("[fe80::1]")),
        ("my_host", Ok("my_host")),
        ("", Err(HostError::Empty)),
        (".", Err(HostError::Empty)),
        ("admin.example.com..", Err(HostError::BadLabel)),
        ("a..b", Err(HostError::BadLabel)),
        (".a", Err(HostError::BadLabel)),
        ("exa$mple.com", Err(HostError::BadCharacter('$'))),
        ("admin%2eexample.com", Err(HostError::BadCharacter('%'))),
        ("[::g]", Err(HostError::BadIpLiteral)),
        ("[::1", Err(HostError::BadIpLiteral)),
    ];
    let mut failures = Vec::new();
    for (input, want) in rows {
        let got = canonical_host(input).map(std::borrow::Cow::into_owned);
        if got.as_deref().map_err(Clone::clone) != *want {
            failures.push(format!("{input:?}: want {want:?}, got {got:?}"));
        }
    }
    let long = format!("{}.com", "a".repeat(64));
    if canonical_host(&long) != Err(HostError::BadLabel) {
        failures.push("a 64-byte label is refused".into());
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(matches!(canonical_host("api.example.com"), Ok(Cow::Borrowed(_))));
}

fn any_path() -> impl Strategy<Value = String> {
    // Short paths over an alphabet rich in the interesting pieces.
    let pieces = prop::sample::select(vec![
        "/", "//", ".", "..", "a", "B", "%2e", "%2E", "%2f", "%2F", "%5c", "%5C", "%41", "%7e", "%20", "%zz",
        "%00", "%0A", "%7F", ";", "\\", "~", "\u{e9}", "{", "%25", "%3F", "%3f", "%C3%A9", "%", "%4",
    ]);
    prop::collection::vec(pieces, 0..12).prop_map(|v| format!("/{}", v.concat()))
}

proptest! {
    /// Whatever the fast path accepts, the slow path leaves as it is.
    #[test]
    fn the_fast_path_agrees_with_the_slow_path(raw in any_path(), merge in any::<bool>(), mode in 0..3u8) {
        let mode = [EscapedSlashes::Reject, EscapedSlashes::Keep, EscapedSlashes::Decode][mode as usize];
        let o = opts(merge, mode);
        if is_canonical(raw.as_bytes(), &o) {
            let slow = decode(raw.as_bytes(), mode).and_then(|d| remove_dot_segments(&d, merge));
            prop_assert_eq!(slow.as_deref(), Ok(raw.as_str()));
        }
    }

    /// Normalizing twice changes nothing, and a canonical path has no dot segments, no empty
    /// segments (when merging) and no escape of an unreserved character.
    #[test]
    fn normalization_is_idempotent(raw in any_path(), merge in any::<bool>(), mode in 0..3u8) {
        let mode = [EscapedSlashes::Reject, EscapedSlashes::Keep, EscapedSlashes::Decode][mode as usize];
        let o = opts(merge, mode);
        if let Ok(once) = normalize_path(&raw, &o) {
            let twice = normalize_path(&once, &o).expect("a canonical path is accepted");
            prop_assert_eq!(&*twice, &*once);
            prop_assert!(matches!(twice, Cow::Borrowed(_)), "not recognised as canonical: {}", once);
            for seg in once[1..].split('/') {
                prop_assert!(seg != "." && seg != "..", "{}", once);
            }
            if merge {
                prop_assert!(!once.contains("//"), "{}", once);
            }
            prop_assert!(once.is_ascii());
        }
    }
}
