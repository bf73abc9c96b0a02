//! TLS for the data-plane listener: rustls with the aws-lc-rs provider, ALPN `h2` and `http/1.1`,
//! and client-certificate verification against `server.tls.client_ca` (mutual TLS).

use std::sync::Arc;

use bridgehead_config::{ClientAuth, LoadedConfig};
use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use bridgehead_config::BuildError;

/// Builds the acceptor for `server.tls`, or `None` when TLS is off. Errors name the key.
pub fn acceptor(loaded: &LoadedConfig) -> Result<Option<TlsAcceptor>, BuildError> {
    let Some(tls) = &loaded.config.server.tls else {
        return Ok(None);
    };
    let cert_path = loaded.resolve_path(&tls.cert);
    let key_path = loaded.resolve_path(&tls.key);
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_path)
        .and_then(std::iter::Iterator::collect::<Result<_, _>>)
        .map_err(|e| {
            BuildError::new(
                "server.tls.cert",
                format!("cannot read certificates from {}: {e}", cert_path.display()),
            )
        })?;
    if certs.is_empty() {
        return Err(BuildError::new(
            "server.tls.cert",
            format!("{} holds no PEM certificate", cert_path.display()),
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&key_path).map_err(|e| {
        BuildError::new(
            "server.tls.key",
            format!("cannot read a private key from {}: {e}", key_path.display()),
        )
    })?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| BuildError::new("server.tls", format!("{e}")))?;
    let builder = match &tls.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let ca_path = loaded.resolve_path(ca);
            let mut roots = rustls::RootCertStore::empty();
            let cas: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&ca_path)
                .and_then(std::iter::Iterator::collect::<Result<_, _>>)
                .map_err(|e| {
                    BuildError::new(
                        "server.tls.client_ca",
                        format!("cannot read certificates from {}: {e}", ca_path.display()),
                    )
                })?;
            if cas.is_empty() {
                return Err(BuildError::new(
                    "server.tls.client_ca",
                    format!("{} holds no PEM certificate", ca_path.display()),
                ));
            }
            for c in cas {
                roots.add(c).map_err(|e| {
                    BuildError::new(
                        "server.tls.client_ca",
                        format!("{}: unusable CA certificate: {e}", ca_path.display()),
                    )
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = match tls.client_auth {
                ClientAuth::Required => verifier,
                ClientAuth::Optional => verifier.allow_unauthenticated(),
            };
            let verifier =
                verifier.build().map_err(|e| BuildError::new("server.tls.client_ca", format!("{e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(certs, key).map_err(|e| {
        BuildError::new("server.tls", format!("certificate and key do not form a usable pair: {e}"))
    })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Some(TlsAcceptor::from(Arc::new(config))))
}
