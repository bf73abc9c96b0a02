//! Bridgehead's webhooks.
//!
//! - [`signature`]: the signature schemes providers use (Standard Webhooks v1 and v1a, Stripe,
//!   GitHub, Slack, and a configurable HMAC scheme): verifying a delivery's raw bytes and
//!   signing one.
//! - [`schema`]: JSON Schema checks of payloads (every error, with its pointer).
//! - [`inbound`]: a receiver (`webhooks.inbound[]`): verify, check, keep refusals as dead
//!   letters, commit durably, answer.
//! - [`outbound`]: the dispatcher (`webhooks.outbound`): the intake, the endpoints (config and
//!   run-time), fan-out by event type.
//! - [`deliver`]: the worker that forwards stored messages, at least once, with the receiver's
//!   retry schedule.
//!
//! The gateway wires it in: each receiver is a route backend, the worker a background task.
//! Storage is [`bridgehead_state::Store`] (SQLite or PostgreSQL); sending is
//! [`bridgehead_upstream::send::Sender`].

pub mod deliver;
pub mod inbound;
pub mod outbound;
pub mod schema;
pub mod signature;
pub mod view;
