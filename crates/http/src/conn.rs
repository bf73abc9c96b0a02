//! What the data plane knows about a client connection.

use std::net::SocketAddr;
use std::sync::Arc;

/// A client connection, as the phases of its requests see it.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub client: SocketAddr,
    pub tls: bool,
    /// The client certificate the TLS handshake verified against `server.tls.client_ca`.
    pub client_cert: Option<Arc<bridgehead_auth::cert::ClientIdentity>>,
}
