//! `bridgehead probe`: what an unknown endpoint is and how to talk to it.
//!
//! The readers here turn what a server says in its headers into findings:
//! - [`challenge`]: the authentication schemes of `WWW-Authenticate`;
//! - [`limits`]: rate limits in every common shape (IETF `RateLimit`, `X-RateLimit-*`,
//!   `Retry-After`);
//! - [`hints`]: the gateway or server software in front (`Server`, `Via` and telltale headers).
//!
//! Each reader is lenient: a probe reports what a server says even when the server says it
//! badly, so a malformed part is skipped, never the whole header.

pub mod challenge;
pub mod hints;
pub mod limits;
