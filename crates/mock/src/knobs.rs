//! `x-mock-*` request headers, with which a test shapes a single response.

use std::time::Duration;

use http::header::{CONTENT_LENGTH, HeaderName, HeaderValue, TRANSFER_ENCODING};
use http::{HeaderMap, StatusCode};

use crate::problem::Rejection;

/// `x-mock-status: 404`: status of the echo response.
const STATUS: &str = "x-mock-status";
/// `x-mock-latency: 100ms`: delay added to `--latency` for this request.
const LATENCY: &str = "x-mock-latency";
/// `x-mock-body-size: N`: the echo response is N bytes of `x` instead of JSON.
const BODY_SIZE: &str = "x-mock-body-size";
/// `x-mock-retry-after: 2`: `Retry-After: 2` on the echo response.
const RETRY_AFTER: &str = "x-mock-retry-after";
/// `x-mock-header: Name: value`, repeatable: a header added to the echo response.
const HEADER: &str = "x-mock-header";

const HEADER_EXPECTED: &str = "Name: value, e.g. cache-control: no-store \
    (not content-length or transfer-encoding, which the mock decides)";

/// The knobs a request set; all absent for almost every request.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Knobs {
    pub(crate) status: Option<StatusCode>,
    pub(crate) latency: Option<Duration>,
    pub(crate) body_size: Option<u64>,
    pub(crate) retry_after: Option<u64>,
    /// From `x-mock-header`, in order.
    pub(crate) headers: Vec<(HeaderName, HeaderValue)>,
}

impl Knobs {
    pub(crate) fn from_headers(headers: &HeaderMap) -> Result<Knobs, Rejection> {
        Ok(Knobs {
            status: knob(headers, STATUS, "a status code between 200 and 599, e.g. 404", |s| {
                s.parse::<u16>()
                    .ok()
                    .filter(|code| (200..=599).contains(code))
                    .and_then(|code| StatusCode::from_u16(code).ok())
            })?,
            latency: knob(headers, LATENCY, "a duration, e.g. 100ms", |s| humantime::parse_duration(s).ok())?,
            body_size: knob(headers, BODY_SIZE, "a number of bytes, e.g. 1048576", |s| s.parse().ok())?,
            retry_after: knob(headers, RETRY_AFTER, "a number of seconds, e.g. 2", |s| {
                // `u64::from_str` would take "+2"; Retry-After is digits only.
                s.bytes().all(|b| b.is_ascii_digit()).then(|| s.parse().ok()).flatten()
            })?,
            headers: headers
                .get_all(HEADER)
                .iter()
                .map(|value| {
                    value
                        .to_str()
                        .ok()
                        .and_then(parse_header)
                        .ok_or(Rejection::BadKnob { header: HEADER, expected: HEADER_EXPECTED })
                })
                .collect::<Result<_, _>>()?,
        })
    }

    /// Adds `x-mock-retry-after` and `x-mock-header` to a response's headers. A name given by
    /// `x-mock-header` replaces the mock's own header of that name; repeating it adds values.
    pub(crate) fn add_headers(&self, headers: &mut HeaderMap) {
        if let Some(seconds) = self.retry_after {
            headers.insert(http::header::RETRY_AFTER, seconds.into());
        }
        for (i, (name, value)) in self.headers.iter().enumerate() {
            if self.headers[..i].iter().any(|(earlier, _)| earlier == name) {
                headers.append(name.clone(), value.clone());
            } else {
                headers.insert(name.clone(), value.clone());
            }
        }
    }
}

/// `Name: value` (the value may be empty) into a header the mock may send.
fn parse_header(spec: &str) -> Option<(HeaderName, HeaderValue)> {
    let (name, value) = spec.split_once(':')?;
    let name = HeaderName::from_bytes(name.trim().as_bytes()).ok()?;
    if name == CONTENT_LENGTH || name == TRANSFER_ENCODING {
        return None;
    }
    Some((name, HeaderValue::from_str(value.trim()).ok()?))
}

fn knob<T>(
    headers: &HeaderMap,
    header: &'static str,
    expected: &'static str,
    parse: impl FnOnce(&str) -> Option<T>,
) -> Result<Option<T>, Rejection> {
    let Some(value) = headers.get(header) else {
        return Ok(None);
    };
    value.to_str().ok().and_then(|s| parse(s.trim())).map(Some).ok_or(Rejection::BadKnob { header, expected })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn knobs(pairs: &[(&'static str, &'static str)]) -> Result<Knobs, Rejection> {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(*name, value.parse().unwrap());
        }
        Knobs::from_headers(&headers)
    }

    #[test]
    fn parses_knobs() {
        assert_eq!(knobs(&[]), Ok(Knobs::default()));
        assert_eq!(
            knobs(&[
                ("x-mock-status", "404"),
                ("x-mock-latency", "1s 5ms"),
                ("x-mock-body-size", "0"),
                ("x-mock-retry-after", " 30 "),
                ("x-mock-header", "Cache-Control: no-store"),
                ("x-mock-header", "x-empty:"),
                ("x-mock-header", "link: <https://a.example/>; rel=\"next\""),
            ]),
            Ok(Knobs {
                status: Some(StatusCode::NOT_FOUND),
                latency: Some(Duration::from_millis(1005)),
                body_size: Some(0),
                retry_after: Some(30),
                headers: vec![
                    (HeaderName::from_static("cache-control"), HeaderValue::from_static("no-store")),
                    (HeaderName::from_static("x-empty"), HeaderValue::from_static("")),
                    (
                        HeaderName::from_static("link"),
                        HeaderValue::from_static("<https://a.example/>; rel=\"next\"")
                    ),
                ],
            })
        );
    }

    #[test]
    fn knob_headers_replace_then_repeat() {
        let knobs = knobs(&[
            ("x-mock-retry-after", "2"),
            ("x-mock-header", "content-type: text/csv"),
            ("x-mock-header", "x-a: 1"),
            ("x-mock-header", "x-a: 2"),
        ])
        .unwrap();
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        headers.insert("x-a", HeaderValue::from_static("mock's own"));
        knobs.add_headers(&mut headers);
        assert_eq!(headers["retry-after"], "2");
        assert_eq!(headers["content-type"], "text/csv");
        let a: Vec<_> = headers.get_all("x-a").iter().collect();
        assert_eq!(a, ["1", "2"]);
    }

    #[test]
    fn names_the_bad_knob() {
        for (header, value) in [
            ("x-mock-status", "99"),
            ("x-mock-status", "nope"),
            ("x-mock-latency", "100"),
            ("x-mock-body-size", "-1"),
            ("x-mock-retry-after", "soon"),
            ("x-mock-retry-after", "+2"),
            ("x-mock-retry-after", "-1"),
            ("x-mock-retry-after", ""),
            ("x-mock-header", "no-colon"),
            ("x-mock-header", ": no name"),
            ("x-mock-header", "bad name: x"),
            ("x-mock-header", "content-length: 5"),
            ("x-mock-header", "Transfer-Encoding: chunked"),
        ] {
            match knobs(&[(header, value)]) {
                Err(Rejection::BadKnob { header: named, .. }) => assert_eq!(named, header),
                other => panic!("{header}: {value} gave {other:?}"),
            }
        }
    }
}
