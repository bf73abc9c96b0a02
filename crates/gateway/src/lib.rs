//! Bridgehead's gateway: the data plane (a streaming reverse proxy on hyper), the admin plane
//! (axum), config reload, and the composition root [`App`] that wires them together.
//!
//! The data path's foundation (`bridgehead-http`), the way to upstreams (`bridgehead-upstream`)
//! and the authorization server (`bridgehead-oauth`) are crates of their own below this one.
//! See ARCHITECTURE.md for the crate graph, the request lifecycle and the invariants.

pub mod access_log;
pub(crate) mod admin;
pub mod app;
pub(crate) mod auth;
mod certs;
pub(crate) mod policy;
pub(crate) mod proxy;
pub mod reload;
pub(crate) mod router;
pub(crate) mod runtime;
pub(crate) mod server;
pub(crate) mod tls;

pub use app::{App, AppError, AppOptions, Listeners, preflight, shutdown_signal, workers};
