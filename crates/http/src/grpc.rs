//! gRPC status as it travels over HTTP/2: in the `grpc-status` field of a trailers-only head
//! or of the trailers.

use http::HeaderMap;

/// The gRPC status of a header or trailer block (`grpc-status`), if it has one.
pub fn grpc_status(headers: &HeaderMap) -> Option<u32> {
    headers.get("grpc-status")?.to_str().ok()?.trim().parse().ok()
}

/// Whether a gRPC status blames the server: UNKNOWN, DEADLINE_EXCEEDED, INTERNAL,
/// UNAVAILABLE, DATA_LOSS.
pub fn grpc_failed(code: u32) -> bool {
    matches!(code, 2 | 4 | 13 | 14 | 15)
}
