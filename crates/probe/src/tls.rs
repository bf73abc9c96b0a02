//! The TLS step: what was negotiated, the server's certificate chain as sent (described even
//! when it does not verify, with why not), and whether the server asked for a client
//! certificate.
//!
//! The chain is verified as a client would (the system roots or `--cacert`, the host name),
//! but a failure does not stop the handshake: the probe reports it instead. The exception is a
//! probe with a client certificate: that is never offered to a server whose chain did not
//! verify, so there the failure ends the handshake (rustls verifies the server's chain before
//! it sends the client's certificate).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use serde::Serialize;

/// Where trust and the client's identity come from.
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// Trust this CA bundle (PEM) instead of the system roots.
    pub cacert: Option<PathBuf>,
    /// A client certificate chain and key (PEM) to offer when asked.
    pub client: Option<(PathBuf, PathBuf)>,
}

/// What the handshake showed.
#[derive(Debug, Clone, Serialize)]
pub struct TlsReport {
    pub version: String,
    pub cipher: String,
    /// The protocol the server chose from the client's `h2`, `http/1.1`.
    pub alpn: Option<String>,
    /// The server's certificates as sent, the server's own first.
    pub chain: Vec<CertInfo>,
    /// Whether the chain verified for the host name, against the trusted roots.
    pub verified: bool,
    /// Why it did not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verify_error: Option<String>,
    /// The server sent a CertificateRequest (mutual TLS).
    pub client_cert_requested: bool,
    pub client_cert_sent: bool,
}

/// One certificate.
#[derive(Debug, Clone, Serialize)]
pub struct CertInfo {
    pub subject: String,
    pub issuer: String,
    pub sans: Vec<String>,
    pub not_before: String,
    pub not_after: String,
    /// Days until it expires (negative: expired).
    pub days_left: i64,
    pub is_ca: bool,
}

/// The client config and what it will have seen after the handshake.
pub struct Prepared {
    pub config: rustls::ClientConfig,
    verifier: Arc<Recording>,
    client: Arc<Asked>,
}

/// Builds the client config: the given trust, the client certificate, ALPN `h2` and
/// `http/1.1`. Errors say which file is wrong.
pub fn prepare(opts: &TlsOptions) -> Result<Prepared, String> {
    prepare_with(opts, false)
}

/// The same, but a chain that does not verify always ends the handshake: for a connection
/// that carries a credential.
pub fn prepare_strict(opts: &TlsOptions) -> Result<Prepared, String> {
    prepare_with(opts, true)
}

fn prepare_with(opts: &TlsOptions, strict: bool) -> Result<Prepared, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    match &opts.cacert {
        Some(path) => {
            for cert in read_certs(path)? {
                roots.add(cert).map_err(|e| format!("{}: unusable CA certificate: {e}", path.display()))?;
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone()).build().ok();

    let key = match &opts.client {
        None => None,
        Some((cert, key)) => {
            let chain = read_certs(cert)?;
            let der = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| format!("cannot read a private key from {}: {e}", key.display()))?;
            let certified = CertifiedKey::from_der(chain, der, &provider)
                .map_err(|e| format!("the client certificate and key do not form a pair: {e}"))?;
            Some(Arc::new(certified))
        }
    };
    let verifier = Arc::new(Recording {
        inner,
        provider: provider.clone(),
        strict: strict || key.is_some(),
        seen: Mutex::new(None),
    });
    let client = Arc::new(Asked { key, asked: AtomicBool::new(false), sent: AtomicBool::new(false) });
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone())
        .with_client_cert_resolver(client.clone());
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Prepared { config, verifier, client })
}

impl Prepared {
    /// The report of a finished handshake.
    pub fn report(&self, conn: &rustls::ClientConnection) -> TlsReport {
        let seen = self.verifier.seen.lock().expect("not poisoned").clone();
        // Verified only when the verifier ran and passed (a resumed session would skip it).
        let verified = seen.as_ref().is_some_and(|(_, e)| e.is_none());
        let (chain, error) = seen.unwrap_or_else(|| (Vec::new(), Some("the chain was not checked".into())));
        TlsReport {
            version: conn.protocol_version().map_or_else(|| "unknown".into(), |v| format!("{v:?}")),
            cipher: conn
                .negotiated_cipher_suite()
                .map_or_else(|| "unknown".into(), |c| format!("{:?}", c.suite())),
            alpn: conn.alpn_protocol().map(|p| String::from_utf8_lossy(p).into_owned()),
            chain: chain.iter().map(|c| describe(c)).collect(),
            verified,
            verify_error: error,
            client_cert_requested: self.client.asked.load(Relaxed),
            client_cert_sent: self.client.sent.load(Relaxed),
        }
    }

    /// Whether the server asked for a client certificate (also after a failed handshake).
    pub fn client_cert_requested(&self) -> bool {
        self.client.asked.load(Relaxed)
    }
}

fn read_certs(path: &std::path::Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .and_then(std::iter::Iterator::collect::<Result<_, _>>)
        .map_err(|e| format!("cannot read certificates from {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no certificate", path.display()));
    }
    Ok(certs)
}

/// Verifies as a client would, records the chain and the verdict, and lets the handshake go on.
#[derive(Debug)]
struct Recording {
    /// `None` when there are no trusted roots at all.
    inner: Option<Arc<WebPkiServerVerifier>>,
    provider: Arc<CryptoProvider>,
    /// A client certificate is configured: a chain that does not verify ends the handshake.
    strict: bool,
    seen: Mutex<Option<(Vec<CertificateDer<'static>>, Option<String>)>>,
}

impl ServerCertVerifier for Recording {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verdict = match &self.inner {
            None => Err("no trusted root certificates (none on the system; give --cacert)".to_owned()),
            Some(v) => v
                .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
                .map(|_| ())
                .map_err(|e| e.to_string()),
        };
        let chain =
            std::iter::once(end_entity).chain(intermediates).map(|c| c.clone().into_owned()).collect();
        *self.seen.lock().expect("not poisoned") = Some((chain, verdict.clone().err()));
        match verdict {
            Err(e) if self.strict => Err(rustls::Error::General(format!(
                "the server's certificate chain did not verify ({e}), so the client certificate is not offered to it"
            ))),
            _ => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// Offers the client certificate, if any, and notes that the server asked: rustls asks its
/// resolver only when a CertificateRequest arrives.
#[derive(Debug)]
struct Asked {
    key: Option<Arc<CertifiedKey>>,
    asked: AtomicBool,
    /// The key can sign with a scheme the server takes, so the certificate goes out.
    sent: AtomicBool,
}

impl ResolvesClientCert for Asked {
    fn resolve(&self, _hints: &[&[u8]], schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        self.asked.store(true, Relaxed);
        // (rustls sends an empty certificate when the key fits none of the server's schemes.)
        let usable = self.key.as_ref().is_some_and(|k| k.key.choose_scheme(schemes).is_some());
        self.sent.store(usable, Relaxed);
        self.key.clone()
    }

    fn has_certs(&self) -> bool {
        // Only with a key: it makes TLS 1.2 keep the transcript a CertificateVerify needs.
        self.key.is_some()
    }
}

/// A certificate's subject, issuer, names and validity.
fn describe(der: &CertificateDer<'_>) -> CertInfo {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return CertInfo {
            subject: "(not a parsable X.509 certificate)".into(),
            issuer: String::new(),
            sans: Vec::new(),
            not_before: String::new(),
            not_after: String::new(),
            days_left: 0,
            is_ca: false,
        };
    };
    let sans = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|ext| {
            ext.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    x509_parser::extensions::GeneralName::DNSName(d) => Some((*d).to_owned()),
                    x509_parser::extensions::GeneralName::IPAddress(ip) => match ip.len() {
                        4 => Some(std::net::Ipv4Addr::from(<[u8; 4]>::try_from(*ip).ok()?).to_string()),
                        16 => Some(std::net::Ipv6Addr::from(<[u8; 16]>::try_from(*ip).ok()?).to_string()),
                        _ => None,
                    },
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs()
        as i64;
    let validity = cert.validity();
    CertInfo {
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        sans,
        not_before: validity.not_before.to_string(),
        not_after: validity.not_after.to_string(),
        days_left: (validity.not_after.timestamp() - now).div_euclid(86_400),
        is_ca: cert.is_ca(),
    }
}
