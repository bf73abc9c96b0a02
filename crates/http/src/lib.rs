//! The bottom of Bridgehead's data path: what every layer above shares and nothing below it
//! knows of routes. Connection info, request and response bodies (with their size limits and
//! the memory budget), header rules of a proxy, request ids, gateway errors and how they are
//! rendered (problem+json or a gRPC status), the gRPC status fields, the metrics registry,
//! the one clock module, small text codecs, and which data-plane worker a thread is.
//!
//! Invariant: this crate depends on no other crate of the data path (`upstream`, `oauth`,
//! `gateway`); they depend on it.

pub mod body;
pub mod clock;
pub mod codec;
pub mod conn;
pub mod grpc;
pub mod headers;
pub mod log_budget;
pub mod metrics;
pub mod problem;
pub mod trace;
pub mod upstream_body;
pub mod worker;

pub use conn::ConnInfo;
pub use problem::GatewayError;
