//! An HTTP/2 upstream for the tests, on the `h2` crate directly so that it can misbehave at the
//! frame level (RST_STREAM, GOAWAY mid-stream, trailers-only gRPC answers). Plain TCP (h2c
//! prior knowledge) or TLS; over TLS, a client that picks `http/1.1` in ALPN gets an HTTP/1.1
//! echo instead.
//!
//! Paths:
//! - `/reset`: RST_STREAM (INTERNAL_ERROR) before any header; `/reset-once`: the first time only;
//!   `/refuse-once`: RST_STREAM (REFUSED_STREAM, "not processed") the first time.
//! - `/grpc/hold-first`: a gRPC head, then its message and `grpc-status: 0` only once
//!   [`H2Peer::release`] is called.
//! - `/goaway`: a response head and part of the body, then nothing until [`H2Peer::goaway`].
//! - `/grpc/unavailable-once`: trailers-only `grpc-status: 14` the first time, then OK.
//! - `/grpc/trailers-once`: a head, then trailers with `grpc-status: 14` (no data), the first
//!   time; then OK.
//! - `/grpc/data-then-14`: a head, one message, then trailers with `grpc-status: 14`.
//! - `/hold`: answers once [`H2Peer::release`] is called.
//! - anything else: a JSON echo (`version`, `authority`, `host`, `te`, `grpc_timeout`, `path`, `body`,
//!   `trailers`), with the request's trailers echoed back plus `x-peer-trailer: done`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use h2::server::SendResponse;
use h2::{Reason, RecvStream};
use http::{HeaderMap, Request, Response};
use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc};

#[derive(Default)]
pub struct PeerState {
    pub connections: AtomicUsize,
    pub in_flight: AtomicUsize,
    hits: Mutex<HashMap<String, usize>>,
    release: Notify,
    released: std::sync::atomic::AtomicBool,
    /// One sender per connection: GOAWAY (INTERNAL_ERROR) on demand.
    goaways: Mutex<Vec<mpsc::Sender<()>>>,
}

pub struct H2Peer {
    pub addr: SocketAddr,
    pub state: Arc<PeerState>,
    /// The certificate of a TLS peer, for `tls.ca`.
    pub ca_pem: Option<String>,
}

impl H2Peer {
    /// An h2c peer on a free port.
    pub async fn start() -> H2Peer {
        Self::start_with(None).await
    }

    /// A TLS peer (certificate for `localhost`) offering these ALPN protocols.
    pub async fn start_tls(alpn: &[&[u8]]) -> H2Peer {
        Self::start_with(Some(alpn.iter().map(|p| p.to_vec()).collect())).await
    }

    async fn start_with(alpn: Option<Vec<Vec<u8>>>) -> H2Peer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(PeerState::default());
        let (acceptor, ca_pem) = match alpn {
            None => (None, None),
            Some(alpn) => {
                let key = rcgen::KeyPair::generate().unwrap();
                let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
                    .unwrap()
                    .self_signed(&key)
                    .unwrap();
                let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
                let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .unwrap()
                    .with_no_client_auth()
                    .with_single_cert(
                        vec![cert.der().clone()],
                        rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
                    )
                    .unwrap();
                cfg.alpn_protocols = alpn;
                (Some(tokio_rustls::TlsAcceptor::from(Arc::new(cfg))), Some(cert.pem()))
            }
        };
        let st = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { return };
                let (st, acceptor) = (st.clone(), acceptor.clone());
                tokio::spawn(async move {
                    st.connections.fetch_add(1, SeqCst);
                    match acceptor {
                        None => serve_h2(tcp, st).await,
                        Some(a) => {
                            let Ok(tls) = a.accept(tcp).await else { return };
                            if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
                                serve_h2(tls, st).await;
                            } else {
                                serve_http1(tls).await;
                            }
                        }
                    }
                });
            }
        });
        H2Peer { addr, state, ca_pem }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn hits(&self, path: &str) -> usize {
        self.state.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }

    pub fn connections(&self) -> usize {
        self.state.connections.load(SeqCst)
    }

    /// Sends GOAWAY (INTERNAL_ERROR) on every open connection, in the middle of whatever
    /// streams they carry.
    pub async fn goaway(&self) {
        let senders: Vec<_> = self.state.goaways.lock().unwrap().drain(..).collect();
        for s in senders {
            let _ = s.send(()).await;
        }
    }

    /// Lets every `/hold` request (now and later) answer.
    pub fn release(&self) {
        self.state.released.store(true, SeqCst);
        self.state.release.notify_waiters();
    }
}

async fn serve_h2<IO>(io: IO, st: Arc<PeerState>)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let Ok(mut conn) = h2::server::handshake(io).await else { return };
    let (goaway_tx, mut goaway_rx) = mpsc::channel::<()>(1);
    st.goaways.lock().unwrap().push(goaway_tx);
    loop {
        tokio::select! {
            next = conn.accept() => match next {
                Some(Ok((req, respond))) => {
                    tokio::spawn(handle(req, respond, st.clone()));
                }
                _ => return,
            },
            Some(()) = goaway_rx.recv() => {
                conn.abrupt_shutdown(Reason::INTERNAL_ERROR);
                // Flush the GOAWAY and let the connection end.
                while let Some(Ok(_)) = conn.accept().await {}
                return;
            }
        }
    }
}

async fn serve_http1<IO>(io: IO)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
        let body = serde_json::json!({ "version": "HTTP/1.1", "path": req.uri().path() }).to_string();
        Ok::<_, std::convert::Infallible>(Response::new(http_body_util::Full::new(Bytes::from(body))))
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(hyper_util::rt::TokioIo::new(io), service)
        .await;
}

fn head(status: u16, pairs: &[(&str, &str)]) -> Response<()> {
    let mut b = Response::builder().status(status);
    for (k, v) in pairs {
        b = b.header(*k, *v);
    }
    b.body(()).unwrap()
}

fn trailers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.insert(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
    }
    h
}

/// A gRPC message frame: uncompressed flag, length, payload.
fn grpc_frame(payload: &[u8]) -> Bytes {
    let mut b = vec![0u8];
    b.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    b.extend_from_slice(payload);
    Bytes::from(b)
}

async fn handle(req: Request<RecvStream>, mut respond: SendResponse<Bytes>, st: Arc<PeerState>) {
    let path = req.uri().path().to_owned();
    let first = {
        let mut hits = st.hits.lock().unwrap();
        let n = hits.entry(path.clone()).or_default();
        *n += 1;
        *n == 1
    };
    let (parts, mut body) = req.into_parts();
    let mut data = Vec::new();
    while let Some(Ok(chunk)) = body.data().await {
        let _ = body.flow_control().release_capacity(chunk.len());
        data.extend_from_slice(&chunk);
    }
    let req_trailers = body.trailers().await.ok().flatten();
    let grpc = [("content-type", "application/grpc")];
    match path.as_str() {
        "/reset" => respond.send_reset(Reason::INTERNAL_ERROR),
        "/reset-once" if first => respond.send_reset(Reason::INTERNAL_ERROR),
        "/refuse-once" if first => respond.send_reset(Reason::REFUSED_STREAM),
        "/goaway" => {
            let Ok(mut s) = respond.send_response(head(200, &[]), false) else { return };
            let _ = s.send_data(Bytes::from_static(b"partial"), false);
            // The stream stays open until the test sends GOAWAY.
            std::future::pending::<()>().await;
        }
        "/grpc/unavailable-once" if first => {
            let h = head(200, &[grpc[0], ("grpc-status", "14"), ("grpc-message", "try later")]);
            let _ = respond.send_response(h, true);
        }
        "/grpc/trailers-once" if first => {
            let Ok(mut s) = respond.send_response(head(200, &grpc), false) else { return };
            let _ = s.send_trailers(trailers(&[("grpc-status", "14")]));
        }
        "/grpc/hold-first" => {
            let Ok(mut s) = respond.send_response(head(200, &grpc), false) else { return };
            let released = st.release.notified();
            if !st.released.load(SeqCst) {
                released.await;
            }
            let _ = s.send_data(grpc_frame(b"late"), false);
            let _ = s.send_trailers(trailers(&[("grpc-status", "0")]));
        }
        "/grpc/data-then-14" => {
            let Ok(mut s) = respond.send_response(head(200, &grpc), false) else { return };
            let _ = s.send_data(grpc_frame(b"partial"), false);
            let _ = s.send_trailers(trailers(&[("grpc-status", "14"), ("grpc-message", "went away")]));
        }
        p if p.starts_with("/grpc/") => {
            let Ok(mut s) = respond.send_response(head(200, &grpc), false) else { return };
            let _ = s.send_data(grpc_frame(b"ok"), false);
            let _ = s.send_trailers(trailers(&[("grpc-status", "0")]));
        }
        "/hold" => {
            st.in_flight.fetch_add(1, SeqCst);
            let released = st.release.notified();
            if !st.released.load(SeqCst) {
                released.await;
            }
            st.in_flight.fetch_sub(1, SeqCst);
            let _ = respond.send_response(head(200, &[]), true);
        }
        _ => {
            let h = |name: &str| parts.headers.get(name).map(|v| v.to_str().unwrap().to_owned());
            let echoed: serde_json::Map<String, serde_json::Value> = req_trailers
                .iter()
                .flatten()
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap().into()))
                .collect();
            let echo = serde_json::json!({
                "version": format!("{:?}", parts.version),
                "authority": parts.uri.authority().map(std::string::ToString::to_string),
                "host": h("host"),
                "te": h("te"),
                "grpc_timeout": h("grpc-timeout"),
                "path": parts.uri.path(),
                "body": String::from_utf8_lossy(&data),
                "trailers": echoed,
            });
            let Ok(mut s) = respond.send_response(head(200, &[("content-type", "application/json")]), false)
            else {
                return;
            };
            let _ = s.send_data(Bytes::from(echo.to_string()), false);
            let mut t = req_trailers.unwrap_or_default();
            t.insert("x-peer-trailer", "done".parse().unwrap());
            let _ = s.send_trailers(t);
        }
    }
}
