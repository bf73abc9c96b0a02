//! `bridgehead-mock` is a mock HTTP upstream for tests, demos and field work: it echoes every
//! request back as JSON, answers fixed routes, injects latency and failures, enforces a quota of
//! its own, streams large downloads, echoes bytes on WebSocket upgrades, and records what it
//! received so a test can assert on what the gateway actually sent (`GET /__mock/requests`, or
//! [`MockServer::requests`]). Faults can be changed while it runs (`PUT /__mock/faults`, or
//! [`MockServer::set_faults`]). It serves HTTP/1.1 and h2c (prior knowledge) on one port. It
//! deliberately does not do TLS, does not speak the WebSocket framing protocol (after the 101 it
//! echoes raw bytes, frames and all), does not persist anything, and has no scripting or
//! templating: a test that needs a smarter upstream should write one.
//!
//! Request lifecycle, in the order the phases run (`phases` in `src/service.rs`):
//!
//! ```text
//! /__mock/*     ─► admin (never recorded, counted, delayed, limited or failed)
//! anything else ─► record ─► knobs ─► rate limit ─► latency ─► failure injection ─► fixed route
//!                  ─► websocket | echo
//! ```
//!
//! **Invariant:** a request body is read as a stream and counted; at most 1 MiB of it is kept
//! (64 KiB of that in the recording), so an upload of any size passes with bounded memory.
//!
//! **Invariant:** a request is recorded (and its response counted) before its response is sent,
//! so a client that has seen a response can read the recording without waiting.
//!
//! **Invariant:** a request sees one snapshot of the faults from arrival to response; replacing
//! them takes effect for the requests that arrive afterwards.

mod admin;
mod body;
mod counts;
mod echo;
mod faults;
mod fixed;
mod knobs;
mod options;
mod problem;
mod ratelimit;
mod record;
mod server;
mod service;
mod soap;
mod websocket;

pub use counts::StatusCounts;
pub use faults::Faults;
pub use fixed::{FixedRoute, FixedRouteError};
pub use options::{InvalidOptions, MockOptions};
pub use ratelimit::{RateLimit, RateLimitError, RateWindow};
pub use record::RecordedRequest;
pub use server::MockServer;

use std::io::Write as _;

/// Runs the mock until ctrl-c; this is `bridgehead mock`.
///
/// Prints exactly one line, `mock listening on http://ADDR`, to stdout once the port is bound, so
/// a script can wait for it and read the port back when `--port 0` was asked for.
pub async fn run(opts: MockOptions) -> std::io::Result<()> {
    let server = MockServer::start(opts).await?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "mock listening on {}", server.url())?;
        out.flush()?;
    }
    tokio::signal::ctrl_c().await?;
    server.shutdown().await;
    Ok(())
}
