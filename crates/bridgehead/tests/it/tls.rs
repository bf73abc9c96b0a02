//! HTTPS with ALPN: h2 and http/1.1 over rustls.

use std::sync::Arc;

use bridgehead_mock::{MockOptions, MockServer};
use http::Request;
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;

use crate::support::*;

async fn tls_connect(
    addr: std::net::SocketAddr,
    cert: CertificateDer<'static>,
    alpn: &[u8],
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![alpn.to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let tcp = TcpStream::connect(addr).await.unwrap();
    connector.connect(ServerName::try_from("localhost").unwrap(), tcp).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_alpn_h2_and_http1() {
    let m = MockServer::start(MockOptions::default()).await.unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap().self_signed(&key).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("server.pem"), cert.pem()).unwrap();
    std::fs::write(dir.path().join("server.key"), key.serialize_pem()).unwrap();
    let cfg = format!(
        "server:\n  tls: {{ cert: {}/server.pem, key: {}/server.key }}\n{}",
        dir.path().display(),
        dir.path().display(),
        simple_config(&m.url())
    );
    let gw = Gateway::start(&cfg).await;

    let tls = tls_connect(gw.addr, cert.der().clone(), b"h2").await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut send_req, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await.unwrap();
    tokio::spawn(conn);
    let res =
        send_req.send_request(Request::get("https://localhost/secure").body(empty()).unwrap()).await.unwrap();
    assert_eq!(res.status(), 200);
    let echo: serde_json::Value =
        serde_json::from_slice(&res.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(echo["headers"]["x-forwarded-proto"], "https");
    assert_eq!(echo["path"], "/secure");

    let tls = tls_connect(gw.addr, cert.der().clone(), b"http/1.1").await;
    let (mut send_req, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
    tokio::spawn(conn);
    let res = send_req
        .send_request(Request::get("/one").header("host", "localhost").body(empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(gw.log_lines().last().unwrap()["protocol"], "HTTP/1.1");
}
