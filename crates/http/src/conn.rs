//! What the data plane knows about a client connection.

use std::net::SocketAddr;
use std::sync::Arc;

use http::HeaderValue;

/// A client connection, as the phases of its requests see it.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub client: SocketAddr,
    /// The client's IP address as a header value (`X-Forwarded-For`), made once per connection.
    pub client_ip: HeaderValue,
    pub tls: bool,
    /// The client certificate the TLS handshake verified against `server.tls.client_ca`.
    pub client_cert: Option<Arc<bridgehead_auth::cert::ClientIdentity>>,
}

impl ConnInfo {
    pub fn new(
        client: SocketAddr,
        tls: bool,
        client_cert: Option<Arc<bridgehead_auth::cert::ClientIdentity>>,
    ) -> Self {
        let client_ip =
            HeaderValue::try_from(client.ip().to_string()).expect("an IP address is a valid header value");
        Self { client, client_ip, tls, client_cert }
    }
}
