//! Bridgehead's gateway: the data plane (a streaming reverse proxy on hyper), the admin plane
//! (axum), config reload, and the composition root [`App`] that wires them together.
//!
//! See ARCHITECTURE.md for the request lifecycle and the invariants.

pub mod access_log;
pub mod admin;
pub mod app;
pub mod auth;
pub mod metrics;
pub mod oauth;
pub mod policy;
pub mod problem;
pub mod proxy;
pub mod reload;
pub mod router;
pub mod runtime;
pub mod server;
pub mod tls;
pub mod upstream;

pub use app::{App, AppError, AppOptions, Listeners, preflight, shutdown_signal};
