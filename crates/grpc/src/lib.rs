//! gRPC for the gateway: schemas ([`schema`]) from `.proto` files, descriptor sets or server
//! reflection ([`reflection`]); the HTTP bindings of a service ([`binding`], [`template`]);
//! JSON to messages and back ([`mapping`]); gRPC framing ([`frame`]) and status ([`status`]);
//! and the transcoding backend that puts them together ([`transcode`]).
//!
//! This is the only crate that depends on prost-reflect and protox.

pub mod binding;
pub mod bundled;
pub mod call;
pub mod client;
pub mod demo;
pub mod describe;
pub mod frame;
pub mod mapping;
pub mod openapi;
pub mod reflection;
pub mod schema;
pub mod service;
pub mod status;
pub mod template;
pub mod transcode;
pub mod web;
