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

use bridgehead_config::{FileRole, LoadedConfig};
use bridgehead_http::metrics::{CertificateLabels, Metrics};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

/// Every certificate file in the config: (key path, kind, path as written).
fn files(loaded: &LoadedConfig) -> Vec<(String, &'static str, &std::path::Path)> {
    loaded
        .config
        .named_files()
        .into_iter()
        .filter_map(|f| {
            let kind = match f.role {
                FileRole::ServerCertificate => "server",
                FileRole::ClientCertificate => "client",
                FileRole::Ca => "ca",
                FileRole::PrivateKey | FileRole::Other => return None,
            };
            Some((f.key, kind, f.path))
        })
        .collect()
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
