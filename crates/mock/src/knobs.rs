//! `x-mock-*` request headers, with which a test shapes a single response.

use std::time::Duration;

use http::{HeaderMap, StatusCode};

use crate::problem::Rejection;

/// `x-mock-status: 404`: status of the echo response.
const STATUS: &str = "x-mock-status";
/// `x-mock-latency: 100ms`: delay added to `--latency` for this request.
const LATENCY: &str = "x-mock-latency";
/// `x-mock-body-size: N`: the echo response is N bytes of `x` instead of JSON.
const BODY_SIZE: &str = "x-mock-body-size";

/// The knobs a request set; all absent for almost every request.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Knobs {
    pub(crate) status: Option<StatusCode>,
    pub(crate) latency: Option<Duration>,
    pub(crate) body_size: Option<u64>,
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
        })
    }
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
            knobs(&[("x-mock-status", "404"), ("x-mock-latency", "1s 5ms"), ("x-mock-body-size", "0"),]),
            Ok(Knobs {
                status: Some(StatusCode::NOT_FOUND),
                latency: Some(Duration::from_millis(1005)),
                body_size: Some(0),
            })
        );
    }

    #[test]
    fn names_the_bad_knob() {
        for (header, value) in [
            ("x-mock-status", "99"),
            ("x-mock-status", "nope"),
            ("x-mock-latency", "100"),
            ("x-mock-body-size", "-1"),
        ] {
            match knobs(&[(header, value)]) {
                Err(Rejection::BadKnob { header: named, .. }) => assert_eq!(named, header),
                other => panic!("{header}: {value} gave {other:?}"),
            }
        }
    }
}
