//! The client-certificate authenticator. The listener has verified the chain against
//! `server.tls.client_ca` during the handshake; this checks the certificate's subject and SANs
//! against the configured patterns and passes them upstream.

use std::sync::Arc;

use bridgehead_auth::cert::SubjectPattern;
use bridgehead_config::BuildError;
use bridgehead_config::MtlsAuth;
use http::{HeaderName, HeaderValue};

use super::{Identity, Outcome};
use bridgehead_http::ConnInfo;

pub struct Mtls {
    patterns: Vec<SubjectPattern>,
    subject_header: HeaderName,
    san_header: HeaderName,
}

impl Mtls {
    pub fn build(cfg: &MtlsAuth) -> Result<Self, BuildError> {
        let patterns = cfg
            .subjects
            .iter()
            .enumerate()
            .map(|(i, s)| SubjectPattern::parse(s).map_err(|e| BuildError::new(format!("subjects[{i}]"), e)))
            .collect::<Result<_, _>>()?;
        let header = |key: &str, h: &str| {
            HeaderName::from_bytes(h.as_bytes())
                .map_err(|_| BuildError::new(key, format!("`{h}` is not a header name")))
        };
        Ok(Self {
            patterns,
            subject_header: header("subject_header", &cfg.subject_header)?,
            san_header: header("san_header", &cfg.san_header)?,
        })
    }

    pub fn identity_headers(&self) -> Vec<HeaderName> {
        vec![self.subject_header.clone(), self.san_header.clone()]
    }

    pub fn check(&self, name: &Arc<str>, conn: &ConnInfo) -> Outcome {
        let Some(cert) = &conn.client_cert else {
            return Outcome::Absent;
        };
        if !self.patterns.is_empty() && !self.patterns.iter().any(|p| p.matches(cert)) {
            return Outcome::Refused {
                reason: "certificate_not_allowed",
                detail: format!(
                    "the client certificate `{}` matches none of the allowed subjects",
                    cert.subject
                ),
            };
        }
        let mut headers = Vec::with_capacity(2);
        if let Ok(v) = HeaderValue::from_str(&cert.subject) {
            headers.push((self.subject_header.clone(), v));
        }
        if !cert.sans.is_empty()
            && let Ok(v) = HeaderValue::from_str(&cert.sans.join(","))
        {
            headers.push((self.san_header.clone(), v));
        }
        Outcome::Admitted(Identity::new(name.clone(), cert.consumer(), Arc::new([]), headers.into()))
    }
}
