//! Inbound traffic policies: rate limits and idempotency keys, and the request facts policies
//! key on. Each is compiled once per config generation. The outbound ones (retries, circuit
//! breakers, the throttle, stickiness) live with the sender in `bridgehead-upstream`.

pub mod idempotency;
pub mod ratelimit;

pub use bridgehead_upstream::redis::{RedisHandle, SharedRedis};

use std::borrow::Cow;
use std::net::IpAddr;

use bridgehead_config::RequestKey;
use http::HeaderMap;

/// What a request is, for the policies that key on it.
pub struct RequestFacts<'a> {
    pub headers: &'a HeaderMap,
    pub client: IpAddr,
    pub consumer: Option<&'a str>,
}

impl RequestFacts<'_> {
    /// The value of `key` for this request; empty when the request has none (anonymous,
    /// header or cookie absent), so such requests share one bucket.
    pub fn key(&self, key: &RequestKey) -> Cow<'_, [u8]> {
        match key {
            RequestKey::Consumer => Cow::Borrowed(self.consumer.unwrap_or_default().as_bytes()),
            RequestKey::Ip => Cow::Owned(match self.client {
                IpAddr::V4(v4) => v4.octets().to_vec(),
                // An IPv6 client usually holds a whole /64: key on that, or one host could
                // rotate addresses past its limit.
                IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                    Some(v4) => v4.octets().to_vec(),
                    None => v6.octets()[..8].to_vec(),
                },
            }),
            RequestKey::Route => Cow::Borrowed(b""),
            RequestKey::Header(name) => {
                Cow::Borrowed(self.headers.get(name.as_str()).map_or(&b""[..], |v| v.as_bytes()))
            }
            RequestKey::Cookie(name) => Cow::Borrowed(cookie(self.headers, name).unwrap_or_default()),
        }
    }

    /// Whether the request has a value for `key` at all.
    pub fn has(&self, key: &RequestKey) -> bool {
        match key {
            RequestKey::Consumer => self.consumer.is_some(),
            RequestKey::Ip | RequestKey::Route => true,
            RequestKey::Header(name) => self.headers.contains_key(name.as_str()),
            RequestKey::Cookie(name) => cookie(self.headers, name).is_some(),
        }
    }
}

/// The value of cookie `name` (RFC 6265 §5.4 `Cookie` header), first occurrence.
fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h [u8]> {
    headers.get_all(http::header::COOKIE).iter().find_map(|v| {
        v.as_bytes().split(|b| *b == b';').find_map(|pair| {
            let pair = pair.trim_ascii();
            let eq = pair.iter().position(|b| *b == b'=')?;
            (&pair[..eq] == name.as_bytes()).then(|| &pair[eq + 1..])
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_keys() {
        let mut headers = HeaderMap::new();
        headers.insert("x-user", "alice".parse().unwrap());
        headers.append("cookie", "a=1; cohort=beta ; b=2".parse().unwrap());
        let f = RequestFacts {
            headers: &headers,
            client: "::ffff:10.0.0.1".parse().unwrap(),
            consumer: Some("acme"),
        };
        assert_eq!(&*f.key(&RequestKey::Consumer), b"acme");
        assert_eq!(&*f.key(&RequestKey::Ip), &[10, 0, 0, 1]);
        assert_eq!(&*f.key(&RequestKey::Header("x-user".into())), b"alice");
        assert_eq!(&*f.key(&RequestKey::Cookie("cohort".into())), b"beta");
        assert!(!f.has(&RequestKey::Cookie("nope".into())));
        assert_eq!(&*f.key(&RequestKey::Cookie("nope".into())), b"");
    }

    #[test]
    fn ipv6_clients_share_their_64() {
        let h = HeaderMap::new();
        let a = RequestFacts { headers: &h, client: "2001:db8:1:2::1".parse().unwrap(), consumer: None };
        let b = RequestFacts { headers: &h, client: "2001:db8:1:2:ffff::9".parse().unwrap(), consumer: None };
        let c = RequestFacts { headers: &h, client: "2001:db8:1:3::1".parse().unwrap(), consumer: None };
        assert_eq!(a.key(&RequestKey::Ip), b.key(&RequestKey::Ip));
        assert_ne!(a.key(&RequestKey::Ip), c.key(&RequestKey::Ip));
    }
}
