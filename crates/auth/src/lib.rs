//! Credential checks that need no network and no runtime: JWT verification against pinned keys,
//! key generation and signing for the command line, API key hashing, and client-certificate
//! identities. The gateway wires these into its request lifecycle; the `jwt` and `keys` commands
//! use them directly.

pub mod apikey;
pub mod cache;
pub mod cert;
pub mod jwt;
