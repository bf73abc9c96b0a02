//! The integration tests: the real gateway on 127.0.0.1:0 against the mock upstream and other
//! local peers (raw TCP servers, PostgreSQL), plus end-to-end tests of the built binary.
//!
//! Tests that need PostgreSQL skip only when BRIDGEHEAD_SKIP_POSTGRES=1.

mod access_log;
mod admin;
mod apikey_cli;
mod auth;
mod bundle;
mod cli;
mod collection;
mod edge;
mod grpc;
mod h2;

mod jwt_cli;
mod oauth;
mod observability;
mod policies;
mod probe;
mod proxy;
mod redis;
mod reload;
mod soap;
mod support;
mod telemetry;
mod tls;
mod upstream_auth;
mod webhook_cli;
mod webhook_crash;
mod webhook_outbound;
mod webhooks;
