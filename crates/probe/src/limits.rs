//! The rate limits a server states, in every shape seen in the field:
//! - IETF `RateLimit-Policy` and `RateLimit` (draft-ietf-httpapi-ratelimit-headers-11: lists of
//!   named items with `q`, `w`, `qu` and `r`, `t` parameters), and draft 7's dictionary
//!   `RateLimit: limit=100, remaining=50, reset=30` with `RateLimit-Policy: 100;w=60`;
//! - the older separate `RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset`;
//! - `X-RateLimit-*` (and `X-Rate-Limit-*`), with Kong's per-window `X-RateLimit-Limit-Minute`;
//!   a reset that is a Unix time (seconds or milliseconds) is turned into seconds from now;
//! - `Retry-After`, in seconds or as an HTTP date.
//!
//! Structured fields are read leniently here rather than with a strict RFC 9651 parser, which
//! refuses a whole field for one bad byte: a probe reports what it can make out.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::HeaderMap;
use serde::Serialize;

use crate::challenge::{elements, param_value, split_outside_quotes};

/// What the headers say about limits.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct RateLimits {
    /// Quotas: how many in what window.
    pub policies: Vec<Policy>,
    /// Where the client stands now.
    pub current: Vec<Standing>,
    /// `Retry-After`, in seconds from now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_s: Option<u64>,
    /// The header shapes seen: `ietf`, `ietf-draft7`, `ratelimit-separate`, `x-ratelimit`,
    /// `retry-after`.
    pub shapes: Vec<&'static str>,
}

impl RateLimits {
    pub fn is_empty(&self) -> bool {
        self.shapes.is_empty()
    }
}

/// A quota.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct Policy {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub quota: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window_s: Option<u64>,
    /// What is counted (`requests`, `content-bytes`, `concurrent-requests`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
}

/// Where the client stands against a quota.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct Standing {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remaining: Option<u64>,
    /// Seconds until the quota resets.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reset_s: Option<u64>,
}

/// Kong's per-window suffixes (`X-RateLimit-Limit-Minute`) and their lengths.
const WINDOWS: [(&str, u64); 6] = [
    ("second", 1),
    ("minute", 60),
    ("hour", 3600),
    ("day", 86_400),
    ("month", 2_592_000),
    ("year", 31_536_000),
];

/// Reads the limits stated in `headers`, relative to `now`.
pub fn read(headers: &HeaderMap, now: SystemTime) -> RateLimits {
    let mut out = RateLimits::default();
    let all =
        |name: &str| -> Vec<&str> { headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).collect() };
    // IETF: `RateLimit-Policy` and `RateLimit`, in either draft's shape.
    for member in all("ratelimit-policy").into_iter().flat_map(elements) {
        let (item, params) = item_and_params(member);
        let mut p = Policy {
            window_s: number(params.get("w")),
            unit: params.get("qu").cloned(),
            ..Policy::default()
        };
        // A bare number is draft 7's quota; a quoted one is draft 11's name.
        let bare = number(Some(&member.trim().split(';').next().unwrap_or_default().to_owned()));
        match (bare, number(params.get("q"))) {
            // Draft 7: `100;w=60`.
            (Some(q), _) => p.quota = q,
            // Draft 11: `"burst";q=100;w=60`.
            (None, Some(q)) => {
                p.name = Some(item);
                p.quota = q;
            }
            (None, None) => continue,
        }
        push_shape(&mut out, "ietf");
        out.policies.push(p);
    }
    let current = all("ratelimit");
    let dictionary = current.iter().flat_map(|v| elements(v)).any(|m| {
        let key = m.trim().split('=').next().unwrap_or_default().trim().to_ascii_lowercase();
        matches!(key.as_str(), "limit" | "remaining" | "reset")
    });
    if dictionary {
        // Draft 7: `limit=100, remaining=50, reset=30`.
        let mut s = Standing::default();
        for m in current.iter().flat_map(|v| elements(v)) {
            let (k, v) = m.split_once('=').unwrap_or((m, ""));
            let v = number(Some(&v.split(';').next().unwrap_or_default().to_owned()));
            match k.trim().to_ascii_lowercase().as_str() {
                "limit" => s.limit = v,
                "remaining" => s.remaining = v,
                "reset" => s.reset_s = v,
                _ => {}
            }
        }
        push_shape(&mut out, "ietf-draft7");
        out.current.push(s);
    } else {
        for member in current.iter().flat_map(|v| elements(v)) {
            // Draft 11: `"default";r=50;t=30`.
            let (item, params) = item_and_params(member);
            let Some(r) = number(params.get("r")) else { continue };
            push_shape(&mut out, "ietf");
            out.current.push(Standing {
                name: Some(item).filter(|i| !i.is_empty()),
                remaining: Some(r),
                reset_s: number(params.get("t")),
                ..Standing::default()
            });
        }
    }
    // The separate fields of the early drafts (Kong sends these too).
    let separate = |suffix: &str| leading_number(&all(&format!("ratelimit-{suffix}")));
    let (limit, remaining, reset) = (separate("limit"), separate("remaining"), separate("reset"));
    if limit.is_some() || remaining.is_some() || reset.is_some() {
        push_shape(&mut out, "ratelimit-separate");
        out.current.push(Standing { name: None, limit, remaining, reset_s: reset });
    }
    // `X-RateLimit-*` and `X-Rate-Limit-*`, plain and per window.
    for prefix in ["x-ratelimit", "x-rate-limit"] {
        let field = |suffix: &str| leading_number(&all(&format!("{prefix}-{suffix}")));
        let (limit, remaining, reset) = (field("limit"), field("remaining"), field("reset"));
        if limit.is_some() || remaining.is_some() || reset.is_some() {
            push_shape(&mut out, "x-ratelimit");
            out.current.push(Standing {
                name: None,
                limit,
                remaining,
                reset_s: reset.map(|r| from_now(r, now)),
            });
        }
        for (window, secs) in WINDOWS {
            let limit = field(&format!("limit-{window}"));
            let remaining = field(&format!("remaining-{window}"));
            if let Some(quota) = limit {
                out.policies.push(Policy {
                    name: Some(window.into()),
                    quota,
                    window_s: Some(secs),
                    unit: None,
                });
            }
            if limit.is_some() || remaining.is_some() {
                push_shape(&mut out, "x-ratelimit");
                out.current.push(Standing { name: Some(window.into()), limit, remaining, reset_s: None });
            }
        }
    }
    if let Some(v) = headers.get(http::header::RETRY_AFTER).and_then(|v| v.to_str().ok()) {
        let v = v.trim();
        let secs = match v.parse::<u64>() {
            Ok(s) => Some(s),
            Err(_) => httpdate::parse_http_date(v)
                .ok()
                .map(|at| at.duration_since(now).unwrap_or(Duration::ZERO).as_secs()),
        };
        if let Some(s) = secs {
            push_shape(&mut out, "retry-after");
            out.retry_after_s = Some(s);
        }
    }
    out
}

fn push_shape(out: &mut RateLimits, shape: &'static str) {
    if !out.shapes.contains(&shape) {
        out.shapes.push(shape);
    }
}

/// A list member's item (a string unquoted, or a token or number as is) and its parameters.
fn item_and_params(member: &str) -> (String, std::collections::BTreeMap<String, String>) {
    let mut parts = split_outside_quotes(member, b';').into_iter();
    let item = parts.next().unwrap_or_default().trim();
    let item = param_value(item).unwrap_or_else(|| item.to_owned());
    let params = parts
        .filter_map(|p| {
            let (k, v) = p.split_once('=')?;
            Some((k.trim().to_ascii_lowercase(), param_value(v).unwrap_or_else(|| v.trim().to_owned())))
        })
        .collect();
    (item, params)
}

fn number(v: Option<&String>) -> Option<u64> {
    v?.trim().parse().ok()
}

/// The number at the start of the first value (`100, 100;w=60` gives 100).
fn leading_number(values: &[&str]) -> Option<u64> {
    let v = values.first()?.trim();
    let end = v.bytes().position(|b| !b.is_ascii_digit()).unwrap_or(v.len());
    v[..end].parse().ok()
}

/// A reset given as a Unix time (seconds, or milliseconds) as seconds from `now`; a small
/// number is already seconds from now.
fn from_now(reset: u64, now: SystemTime) -> u64 {
    let now_s = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    match reset {
        r if r > 1_000_000_000_000 => (r / 1000).saturating_sub(now_s),
        r if r > 1_000_000_000 => r.saturating_sub(now_s),
        r => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::headers;

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }

    #[test]
    fn ietf_draft_11_lists() {
        let got = read(
            &headers(&[
                ("RateLimit-Policy", r#""burst";q=100;w=60, "daily";q=1000;w=86400;qu="requests""#),
                ("RateLimit", r#""burst";r=50;t=30"#),
            ]),
            now(),
        );
        assert_eq!(got.shapes, ["ietf"]);
        assert_eq!(
            got.policies,
            [
                Policy { name: Some("burst".into()), quota: 100, window_s: Some(60), unit: None },
                Policy {
                    name: Some("daily".into()),
                    quota: 1000,
                    window_s: Some(86400),
                    unit: Some("requests".into())
                },
            ]
        );
        assert_eq!(
            got.current,
            [Standing { name: Some("burst".into()), limit: None, remaining: Some(50), reset_s: Some(30) }]
        );
    }

    #[test]
    fn ietf_draft_7_and_the_separate_fields() {
        let got = read(
            &headers(&[("RateLimit", "limit=100, remaining=7, reset=30"), ("RateLimit-Policy", "100;w=60")]),
            now(),
        );
        assert_eq!(got.shapes, ["ietf", "ietf-draft7"]);
        assert_eq!(got.policies, [Policy { name: None, quota: 100, window_s: Some(60), unit: None }]);
        assert_eq!(
            got.current,
            [Standing { name: None, limit: Some(100), remaining: Some(7), reset_s: Some(30) }]
        );
        let got = read(
            &headers(&[
                ("RateLimit-Limit", "10, 10;w=1"),
                ("RateLimit-Remaining", "9"),
                ("RateLimit-Reset", "1"),
            ]),
            now(),
        );
        assert_eq!(got.shapes, ["ratelimit-separate"]);
        assert_eq!(
            got.current,
            [Standing { name: None, limit: Some(10), remaining: Some(9), reset_s: Some(1) }]
        );
    }

    #[test]
    fn x_ratelimit_with_unix_resets_and_kong_windows() {
        let got = read(
            &headers(&[
                ("X-RateLimit-Limit", "5000"),
                ("X-RateLimit-Remaining", "4999"),
                ("X-RateLimit-Reset", "1800000090"),
                ("X-RateLimit-Limit-Minute", "5"),
                ("X-RateLimit-Remaining-Minute", "4"),
            ]),
            now(),
        );
        assert_eq!(got.shapes, ["x-ratelimit"]);
        assert_eq!(
            got.policies,
            [Policy { name: Some("minute".into()), quota: 5, window_s: Some(60), unit: None }]
        );
        assert_eq!(
            got.current,
            [
                Standing { name: None, limit: Some(5000), remaining: Some(4999), reset_s: Some(90) },
                Standing { name: Some("minute".into()), limit: Some(5), remaining: Some(4), reset_s: None },
            ]
        );
        // Milliseconds, and a reset already past.
        let got = read(&headers(&[("X-Rate-Limit-Reset", "1800000005000")]), now());
        assert_eq!(got.current[0].reset_s, Some(5));
        let got = read(&headers(&[("X-RateLimit-Reset", "1700000000")]), now());
        assert_eq!(got.current[0].reset_s, Some(0));
    }

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        assert_eq!(read(&headers(&[("Retry-After", "120")]), now()).retry_after_s, Some(120));
        let date = httpdate::fmt_http_date(now() + Duration::from_secs(30));
        let got = read(&headers(&[("Retry-After", &date)]), now());
        assert_eq!((got.retry_after_s, got.shapes), (Some(30), vec!["retry-after"]));
        assert!(read(&headers(&[("Retry-After", "soon")]), now()).is_empty());
    }

    #[test]
    fn malformed_members_are_skipped() {
        let got = read(
            &headers(&[
                ("RateLimit-Policy", r#"garbage, "ok";q=3, ;;;, "x";q=abc"#),
                ("RateLimit", r#""ok";t=1"#),
            ]),
            now(),
        );
        assert_eq!(got.policies, [Policy { name: Some("ok".into()), quota: 3, window_s: None, unit: None }]);
        assert!(got.current.is_empty(), "a member without `r` says nothing: {got:?}");
        // A draft-11 policy may be named by digits.
        let got = read(&headers(&[("RateLimit-Policy", r#""100";q=5;w=60"#)]), now());
        assert_eq!(
            got.policies,
            [Policy { name: Some("100".into()), quota: 5, window_s: Some(60), unit: None }]
        );
        assert!(read(&HeaderMap::new(), now()).is_empty());
    }
}
