//! `bridgehead_tls_certificate_expiry_timestamp_seconds`: the notAfter of every certificate the
//! gateway presents or trusts, read from the files the config names, at start and at each
//! reload. An alert on it warns days before a customer's internal CA or a client certificate
//! runs out, which otherwise shows only as handshakes failing.
//!
//! Covered: `server.tls.cert` (every certificate of the chain) and `server.tls.client_ca`;
//! per upstream `tls.cert` and `tls.ca`, and the `ca` of `oauth2_client_credentials`; the `ca`
//! of `jwt` and `introspection` authenticators. The system roots are not exported (a hundred
//! series nobody acts on). A file that cannot be read or parsed is skipped here: building the
//! TLS setup from it reports the error with its key.

use bridgehead_config::{Authenticator, Credentials, LoadedConfig};
use bridgehead_http::metrics::{CertificateLabels, Metrics};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

/// Every certificate file in the config: (key path, kind, path as written).
fn files(loaded: &LoadedConfig) -> Vec<(String, &'static str, &std::path::Path)> {
    let c = &loaded.config;
    let mut out = Vec::new();
    if let Some(tls) = &c.server.tls {
        out.push(("server.tls.cert".to_owned(), "server", tls.cert.as_path()));
        if let Some(ca) = &tls.client_ca {
            out.push(("server.tls.client_ca".to_owned(), "ca", ca.as_path()));
        }
    }
    for (name, u) in &c.upstreams {
        if let Some(tls) = &u.tls {
            if let Some(cert) = &tls.cert {
                out.push((format!("upstreams.{name}.tls.cert"), "client", cert.as_path()));
            }
            if let Some(ca) = &tls.ca {
                out.push((format!("upstreams.{name}.tls.ca"), "ca", ca.as_path()));
            }
        }
        if let Some(Credentials::Oauth2ClientCredentials(o)) = &u.credentials
            && let Some(ca) = &o.ca
        {
            out.push((
                format!("upstreams.{name}.credentials.oauth2_client_credentials.ca"),
                "ca",
                ca.as_path(),
            ));
        }
    }
    for (name, a) in &c.authenticators {
        let ca = match a {
            Authenticator::Jwt(j) => j.ca.as_ref().map(|ca| ("jwt", ca)),
            Authenticator::Introspection(i) => i.ca.as_ref().map(|ca| ("introspection", ca)),
            _ => None,
        };
        if let Some((kind, ca)) = ca {
            out.push((format!("authenticators.{name}.{kind}.ca"), "ca", ca.as_path()));
        }
    }
    out
}

/// The subject and notAfter (Unix seconds) of one DER certificate.
fn read(der: &[u8]) -> Option<(String, i64)> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let not_after = cert.validity().not_after.timestamp();
    let subject = match bridgehead_auth::cert::ClientIdentity::from_der(der) {
        Ok(id) => id.subject,
        Err(_) => cert.subject().to_string(),
    };
    Some((subject, not_after))
}

/// Replaces the exported expiry series with those of `loaded`'s certificate files.
pub fn export(loaded: &LoadedConfig, metrics: &Metrics) {
    let mut series: Vec<(CertificateLabels, i64)> = Vec::new();
    for (key, kind, path) in files(loaded) {
        let path = loaded.resolve_path(path);
        let Ok(certs) = CertificateDer::pem_file_iter(&path)
            .and_then(Iterator::collect::<Result<Vec<CertificateDer<'static>>, _>>)
        else {
            continue;
        };
        for der in certs {
            let Some((subject, not_after)) = read(&der) else { continue };
            let labels = CertificateLabels { key: key.clone(), kind, subject };
            // Two certificates with one subject in one file: the earlier expiry is the one to act on.
            match series.iter_mut().find(|(l, _)| *l == labels) {
                Some((_, t)) => *t = (*t).min(not_after),
                None => series.push((labels, not_after)),
            }
        }
    }
    metrics.certificate_expiry.clear();
    for (labels, not_after) in series {
        metrics.certificate_expiry.get_or_create(&labels).set(not_after);
    }
}
