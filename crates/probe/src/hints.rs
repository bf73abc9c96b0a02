//! The software in front of an endpoint, from what it says of itself: `Server`, `Via`,
//! `X-Powered-By`, and the headers particular gateways add.

use http::HeaderMap;
use serde::Serialize;

/// One piece of software, and the header that gave it away.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Hint {
    pub product: &'static str,
    /// Whether it is an API gateway or proxy (else an application server or framework).
    pub gateway: bool,
    pub evidence: String,
}

/// Which header to look at and what in it.
enum Rule {
    /// A header's value contains the text (case-insensitive).
    Value(&'static str, &'static str),
    /// A header whose name starts with the prefix is present.
    Name(&'static str),
}

/// (product, is a gateway, rules).
const KNOWN: &[(&str, bool, &[Rule])] = &[
    ("Bridgehead", true, &[Rule::Value("via", "bridgehead")]),
    ("Kong", true, &[Rule::Value("via", "kong"), Rule::Value("server", "kong"), Rule::Name("x-kong-")]),
    ("Envoy", true, &[Rule::Value("server", "envoy"), Rule::Name("x-envoy-")]),
    ("AWS API Gateway", true, &[Rule::Name("x-amz-apigw-id"), Rule::Name("x-amzn-errortype")]),
    ("Amazon CloudFront", true, &[Rule::Value("via", "cloudfront"), Rule::Name("x-amz-cf-id")]),
    ("Apigee", true, &[Rule::Value("via", "apigee"), Rule::Name("x-apigee")]),
    ("Azure API Management", true, &[Rule::Name("ocp-apim-")]),
    ("Cloudflare", true, &[Rule::Value("server", "cloudflare"), Rule::Name("cf-ray")]),
    ("Akamai", true, &[Rule::Value("server", "akamaighost"), Rule::Name("x-akamai-")]),
    ("HAProxy", true, &[Rule::Value("server", "haproxy")]),
    ("Traefik", true, &[Rule::Value("server", "traefik")]),
    ("OpenResty", true, &[Rule::Value("server", "openresty")]),
    ("nginx", true, &[Rule::Value("server", "nginx")]),
    ("Apache httpd", false, &[Rule::Value("server", "apache/"), Rule::Value("server", "apache ")]),
    ("Apache Tomcat", false, &[Rule::Value("server", "apache-coyote")]),
    ("Microsoft IIS", false, &[Rule::Value("server", "microsoft-iis")]),
    ("Kestrel (ASP.NET Core)", false, &[Rule::Value("server", "kestrel")]),
    ("ASP.NET", false, &[Rule::Value("x-powered-by", "asp.net"), Rule::Name("x-aspnet-version")]),
    ("Jetty", false, &[Rule::Value("server", "jetty")]),
    ("gunicorn", false, &[Rule::Value("server", "gunicorn")]),
    ("uvicorn", false, &[Rule::Value("server", "uvicorn")]),
    ("Werkzeug (Flask)", false, &[Rule::Value("server", "werkzeug")]),
    ("Express (Node.js)", false, &[Rule::Value("x-powered-by", "express")]),
    ("PHP", false, &[Rule::Value("x-powered-by", "php")]),
];

/// Every product the headers point to, once each, gateways first.
pub fn read(headers: &HeaderMap) -> Vec<Hint> {
    let mut out: Vec<Hint> = Vec::new();
    for (product, gateway, rules) in KNOWN {
        // `Server: Apache` alone (no version) is still Apache httpd.
        let evidence = rules.iter().find_map(|rule| evidence(headers, rule)).or_else(|| {
            (*product == "Apache httpd")
                .then(|| headers.get("server").and_then(|v| v.to_str().ok()))
                .flatten()
                .filter(|v| v.trim().eq_ignore_ascii_case("apache"))
                .map(|v| format!("Server: {v}"))
        });
        if let Some(evidence) = evidence {
            out.push(Hint { product, gateway: *gateway, evidence });
        }
    }
    out.sort_by_key(|h| !h.gateway);
    out
}

fn evidence(headers: &HeaderMap, rule: &Rule) -> Option<String> {
    match rule {
        Rule::Value(name, needle) => headers.get_all(*name).iter().find_map(|v| {
            let v = v.to_str().ok()?;
            v.to_ascii_lowercase().contains(needle).then(|| format!("{}: {v}", canonical(name)))
        }),
        Rule::Name(prefix) => {
            headers.keys().find(|k| k.as_str().starts_with(prefix)).map(|k| format!("{} header", k.as_str()))
        }
    }
}

/// A header name as usually written (`server` as `Server`).
fn canonical(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut c = part.chars();
            c.next().map(|f| f.to_ascii_uppercase().to_string() + c.as_str()).unwrap_or_default()
        })
        .collect::<Vec<_>>()
        .join("-")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hints(pairs: &[(&str, &str)]) -> Vec<(&'static str, String)> {
        read(&crate::tests::headers(pairs)).into_iter().map(|h| (h.product, h.evidence)).collect()
    }

    #[test]
    fn gateways_and_servers_are_named_with_their_evidence() {
        assert_eq!(
            hints(&[("Via", "1.1 kong/3.9.0"), ("X-Kong-Proxy-Latency", "1"), ("Server", "gunicorn")]),
            [("Kong", "Via: 1.1 kong/3.9.0".to_owned()), ("gunicorn", "Server: gunicorn".to_owned())]
        );
        assert_eq!(
            hints(&[("server", "envoy"), ("x-envoy-upstream-service-time", "3")]),
            [("Envoy", "Server: envoy".to_owned())]
        );
        assert_eq!(
            hints(&[
                ("x-amzn-RequestId", "a"),
                ("x-amz-apigw-id", "b"),
                ("Via", "1.1 abc.cloudfront.net (CloudFront)")
            ]),
            [
                ("AWS API Gateway", "x-amz-apigw-id header".to_owned()),
                ("Amazon CloudFront", "Via: 1.1 abc.cloudfront.net (CloudFront)".to_owned())
            ]
        );
        assert_eq!(hints(&[("Server", "nginx/1.22.1")]), [("nginx", "Server: nginx/1.22.1".to_owned())]);
        assert_eq!(hints(&[("Server", "Apache")]), [("Apache httpd", "Server: Apache".to_owned())]);
        assert_eq!(
            hints(&[("Server", "Apache-Coyote/1.1")]),
            [("Apache Tomcat", "Server: Apache-Coyote/1.1".to_owned())]
        );
        assert_eq!(hints(&[("Via", "1.1 bridgehead")]), [("Bridgehead", "Via: 1.1 bridgehead".to_owned())]);
        assert_eq!(
            hints(&[("Ocp-Apim-Trace-Location", "x")]),
            [("Azure API Management", "ocp-apim-trace-location header".to_owned())]
        );
        assert!(hints(&[("Server", "my-own-thing"), ("Content-Type", "text/plain")]).is_empty());
    }
}
