//! TLS toward upstream targets: rustls with the aws-lc-rs provider, the system roots plus an
//! optional CA bundle from the config, an optional client certificate (mutual TLS toward the
//! customer's API) and an optional SNI override.

use std::path::Path;
use std::sync::Arc;

use bridgehead_config::{BuildError, LoadedConfig, UpstreamTls};
use rustls::ClientConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// The system's trusted roots (what `rustls-native-certs` finds; none when it finds none).
fn system_roots() -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    roots
}

/// A client config trusting the system roots only, without a client certificate: for
/// outbound webhook endpoints.
pub fn system_roots_client() -> ClientConfig {
    ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("the provider supports the default protocol versions")
        .with_root_certificates(system_roots())
        .with_no_client_auth()
}

/// The rustls client config for one upstream. Errors name the key.
pub fn client_config(
    base: &str,
    tls: Option<&UpstreamTls>,
    loaded: &LoadedConfig,
) -> Result<ClientConfig, BuildError> {
    let mut roots = system_roots();
    if let Some(ca) = tls.and_then(|t| t.ca.as_ref()) {
        let path = loaded.resolve_path(ca);
        let key = format!("{base}.tls.ca");
        for cert in read_certs(&path).map_err(|e| BuildError::new(&key, e))? {
            roots.add(cert).map_err(|e| {
                BuildError::new(&key, format!("{}: unusable CA certificate: {e}", path.display()))
            })?;
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| BuildError::new(format!("{base}.tls"), e))?
        .with_root_certificates(roots);
    let config = match tls.and_then(|t| t.cert.as_ref().zip(t.key.as_ref())) {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let cert_path = loaded.resolve_path(cert);
            let key_path = loaded.resolve_path(key);
            let chain = read_certs(&cert_path).map_err(|e| BuildError::new(format!("{base}.tls.cert"), e))?;
            let key = PrivateKeyDer::from_pem_file(&key_path).map_err(|e| {
                BuildError::new(
                    format!("{base}.tls.key"),
                    format!("cannot read a private key from {}: {e}", key_path.display()),
                )
            })?;
            builder.with_client_auth_cert(chain, key).map_err(|e| {
                BuildError::new(
                    format!("{base}.tls"),
                    format!("client certificate and key do not form a usable pair: {e}"),
                )
            })?
        }
    };
    Ok(config)
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .and_then(std::iter::Iterator::collect::<Result<_, _>>)
        .map_err(|e| format!("cannot read certificates from {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no PEM certificate", path.display()));
    }
    Ok(certs)
}
