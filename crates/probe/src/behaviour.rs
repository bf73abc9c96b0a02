//! How a server behaves, from the answer's head: CORS, HSTS, compression, keep-alive.

use http::HeaderMap;
use serde::Serialize;

/// What the head says of the server's behaviour.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct Behaviour {
    /// The CORS answer (to the `Origin` the probe sent with `--origin`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cors: Option<Cors>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hsts: Option<Hsts>,
    /// `Content-Encoding` of the answer (the probe accepts `gzip`, `deflate`, `br`, `zstd`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compression: Option<String>,
    /// The connection stays open for another request (HTTP/1.1 without `Connection: close`,
    /// or HTTP/2).
    pub keep_alive: bool,
}

#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct Cors {
    pub allow_origin: String,
    pub allow_credentials: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub expose_headers: Vec<String>,
}

#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct Hsts {
    pub max_age_s: u64,
    pub include_subdomains: bool,
    pub preload: bool,
}

/// Reads the head of an answer of `version`.
pub fn read(headers: &HeaderMap, version: http::Version) -> Behaviour {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    let cors = text("access-control-allow-origin").map(|origin| Cors {
        allow_origin: origin.to_owned(),
        allow_credentials: text("access-control-allow-credentials")
            .is_some_and(|v| v.eq_ignore_ascii_case("true")),
        expose_headers: text("access-control-expose-headers")
            .map(|v| v.split(',').map(|h| h.trim().to_owned()).filter(|h| !h.is_empty()).collect())
            .unwrap_or_default(),
    });
    // RFC 6797: directives separated by `;`, names case-insensitive, `max-age` required.
    let hsts = text("strict-transport-security").and_then(|v| {
        let mut h = Hsts::default();
        let mut max_age = None;
        for d in v.split(';') {
            let (name, value) = d.split_once('=').unwrap_or((d, ""));
            match name.trim().to_ascii_lowercase().as_str() {
                "max-age" => max_age = value.trim().trim_matches('"').parse().ok(),
                "includesubdomains" => h.include_subdomains = true,
                "preload" => h.preload = true,
                _ => {}
            }
        }
        max_age.map(|m| Hsts { max_age_s: m, ..h })
    });
    let close = headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("close"));
    let keep_alive = match version {
        http::Version::HTTP_2 | http::Version::HTTP_3 => true,
        http::Version::HTTP_11 => !close,
        // HTTP/1.0 keeps the connection only when it says so.
        _ => headers
            .get_all(http::header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.to_ascii_lowercase().contains("keep-alive")),
    };
    Behaviour {
        cors,
        hsts,
        compression: text("content-encoding")
            .filter(|v| !v.eq_ignore_ascii_case("identity"))
            .map(str::to_owned),
        keep_alive,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::headers;

    #[test]
    fn cors_hsts_compression_and_keep_alive() {
        let b = read(
            &headers(&[
                ("Access-Control-Allow-Origin", "https://app.example"),
                ("Access-Control-Allow-Credentials", "true"),
                ("Access-Control-Expose-Headers", "X-Request-Id, RateLimit"),
                ("Strict-Transport-Security", "max-age=31536000; includeSubDomains; preload"),
                ("Content-Encoding", "gzip"),
            ]),
            http::Version::HTTP_11,
        );
        assert_eq!(
            b,
            Behaviour {
                cors: Some(Cors {
                    allow_origin: "https://app.example".into(),
                    allow_credentials: true,
                    expose_headers: vec!["X-Request-Id".into(), "RateLimit".into()],
                }),
                hsts: Some(Hsts { max_age_s: 31_536_000, include_subdomains: true, preload: true }),
                compression: Some("gzip".into()),
                keep_alive: true,
            }
        );
    }

    #[test]
    fn what_ends_or_keeps_a_connection_and_bad_hsts() {
        assert!(!read(&headers(&[("Connection", "Close")]), http::Version::HTTP_11).keep_alive);
        assert!(!read(&HeaderMap::new(), http::Version::HTTP_10).keep_alive);
        assert!(read(&headers(&[("Connection", "keep-alive")]), http::Version::HTTP_10).keep_alive);
        assert!(read(&HeaderMap::new(), http::Version::HTTP_2).keep_alive);
        // `max-age` is required; without a number there is no policy.
        assert_eq!(
            read(&headers(&[("Strict-Transport-Security", "includeSubDomains")]), http::Version::HTTP_11)
                .hsts,
            None
        );
        assert_eq!(
            read(&headers(&[("Strict-Transport-Security", "MAX-AGE=\"60\"")]), http::Version::HTTP_11).hsts,
            Some(Hsts { max_age_s: 60, include_subdomains: false, preload: false })
        );
        assert_eq!(
            read(&headers(&[("Content-Encoding", "identity")]), http::Version::HTTP_11).compression,
            None
        );
    }
}
