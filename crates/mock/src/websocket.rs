//! WebSocket upgrades: the RFC 6455 handshake, then raw bytes echoed until EOF.
//!
//! Frames are not parsed: whatever the client sends comes back byte for byte. That is enough to
//! test that a gateway tunnels an upgraded connection, and not a WebSocket server.

use base64::Engine as _;
use http::header::{CONNECTION, HeaderValue, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, UPGRADE};
use http::{HeaderMap, HeaderName, Response, StatusCode};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt as _;
use tokio::sync::watch;

use crate::body::MockBody;
use crate::problem::Rejection;

/// RFC 6455 section 1.3.
const ACCEPT_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Whether the request asks for `Connection: upgrade` to `Upgrade: websocket`.
pub(crate) fn is_upgrade(headers: &HeaderMap) -> bool {
    has_token(headers, CONNECTION, "upgrade") && has_token(headers, UPGRADE, "websocket")
}

fn has_token(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|value| {
        value.to_str().is_ok_and(|value| value.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    })
}

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key`: base64(sha1(key + GUID)).
pub(crate) fn accept_key(key: &[u8]) -> String {
    let mut sha1 = sha1_smol::Sha1::new();
    sha1.update(key);
    sha1.update(ACCEPT_GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(sha1.digest().bytes())
}

/// Answers 101 and spawns the echo of the upgraded connection, which ends at EOF or when the
/// server stops.
pub(crate) fn accept(
    headers: &HeaderMap,
    on_upgrade: OnUpgrade,
    stop: watch::Receiver<bool>,
) -> Response<MockBody> {
    let Some(key) = headers.get(SEC_WEBSOCKET_KEY) else {
        return Rejection::MissingWebSocketKey.into_response();
    };
    let accept = HeaderValue::try_from(accept_key(key.as_bytes())).expect("base64 is a valid header value");
    tokio::spawn(echo(on_upgrade, stop));
    let mut response = Response::new(MockBody::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(SEC_WEBSOCKET_ACCEPT, accept);
    response
}

async fn echo(on_upgrade: OnUpgrade, mut stop: watch::Receiver<bool>) {
    let upgraded = match on_upgrade.await {
        Ok(upgraded) => upgraded,
        Err(error) => {
            tracing::debug!(%error, "mock websocket upgrade failed");
            return;
        }
    };
    let (mut read, mut write) = tokio::io::split(TokioIo::new(upgraded));
    tokio::select! {
        copied = tokio::io::copy(&mut read, &mut write) => {
            if let Err(error) = copied {
                tracing::debug!(%error, "mock websocket echo ended");
            }
            let _ = write.shutdown().await;
        }
        // Changed, or the server is gone: either way, stop.
        _ = stop.changed() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sample handshake of RFC 6455 section 1.3.
    #[test]
    fn accept_key_matches_rfc_6455_sample() {
        assert_eq!(accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn detects_upgrade_tokens_in_lists_any_case() {
        let mut headers = HeaderMap::new();
        headers.insert(CONNECTION, "keep-alive, Upgrade".parse().unwrap());
        assert!(!is_upgrade(&headers));
        headers.insert(UPGRADE, "WebSocket".parse().unwrap());
        assert!(is_upgrade(&headers));
        headers.insert(CONNECTION, "keep-alive".parse().unwrap());
        assert!(!is_upgrade(&headers));
    }
}
