//! Bridgehead's webhooks.
//!
//! - [`signature`]: the signature schemes providers use (Standard Webhooks v1 and v1a, Stripe,
//!   GitHub, Slack, and a configurable HMAC scheme): verifying a delivery's raw bytes and
//!   signing one.
//!
//! The receiver (`webhooks.inbound`) and the durable dispatcher (`webhooks.outbound`) build on
//! this crate, the upstream sender and the state store.

pub mod signature;
