//! API keys: generating them, hashing them, and finding the consumer a presented key belongs to.
//!
//! A key is shown once when it is created and never stored: config and the state database hold
//! only its SHA-256 digest (lower-case hex). A key is 256 random bits, so a plain, unsalted hash
//! is enough — there is nothing to brute-force — and it lets a lookup hash the presented key once
//! and find its entry by digest instead of trying every stored key.
//!
//! **Invariant:** a presented key is accepted only after its full 32-byte digest compared equal
//! to a stored one in constant time ([`subtle`]). The hash-map step before it only narrows the
//! candidates by a digest prefix, so its timing depends on the digest, never on the key.

use std::collections::HashMap;
use std::fmt;

use aws_lc_rs::{digest, rand};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use subtle::ConstantTimeEq as _;

/// What every generated key starts with, so that a leaked key is recognisable (secret scanners,
/// logs) and a key pasted into the wrong place is easy to spot.
pub const PREFIX: &str = "bh_";

/// How many random bytes a generated key carries.
const KEY_BYTES: usize = 32;

/// A new API key: `bh_` followed by 32 random bytes in base64url without padding (46 characters
/// in all). Show it once; store only [`sha256_hex`] of it.
///
/// # Panics
///
/// If the operating system's random number generator fails, which leaves nothing safe to do.
pub fn generate() -> String {
    let mut bytes = [0u8; KEY_BYTES];
    rand::fill(&mut bytes).expect("the system random number generator failed");
    let mut key = String::with_capacity(PREFIX.len() + 43);
    key.push_str(PREFIX);
    URL_SAFE_NO_PAD.encode_string(bytes, &mut key);
    key
}

/// A new key id: `key_` and 12 random lower-case base32 characters (60 bits). An id names a key
/// in listings and revocations; it is not a secret and grants nothing.
///
/// # Panics
///
/// If the operating system's random number generator fails.
pub fn generate_id() -> String {
    const BASE32: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut bytes = [0u8; 12];
    rand::fill(&mut bytes).expect("the system random number generator failed");
    let mut id = String::with_capacity(16);
    id.push_str("key_");
    id.extend(bytes.iter().map(|b| char::from(BASE32[usize::from(b & 31)])));
    id
}

/// The SHA-256 digest of `key`'s bytes.
pub fn sha256(key: &str) -> [u8; 32] {
    let d = digest::digest(&digest::SHA256, key.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Lower-case hex SHA-256 of `key`'s bytes: what config and the database store.
pub fn sha256_hex(key: &str) -> String {
    to_hex(&sha256(key))
}

/// Lower-case hex of `bytes`.
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

/// Parses a SHA-256 digest written as 64 hex digits (either case). The error says what is wrong
/// (length, or which character at which position) without repeating the input.
pub fn parse_sha256_hex(hex: &str) -> Result<[u8; 32], String> {
    let len = hex.chars().count();
    if len != 64 {
        return Err(format!("a SHA-256 digest is 64 hex digits, got {len} characters"));
    }
    let mut out = [0u8; 32];
    for (i, c) in hex.chars().enumerate() {
        let Some(v) = c.to_digit(16) else {
            return Err(format!("invalid hex digit {c:?} at position {} of a SHA-256 digest", i + 1));
        };
        // `v < 16`, so the cast is lossless.
        out[i / 2] |= (v as u8) << if i % 2 == 0 { 4 } else { 0 };
    }
    Ok(out)
}

/// Who a key belongs to and what it may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyEntry {
    /// The consumer the key identifies.
    pub consumer: String,
    /// The scopes it grants.
    pub scopes: Vec<String>,
    /// The key's id in the state database (`key_…`); `None` for keys from config.
    pub id: Option<String>,
}

/// A lookup table over key digests: [`KeyTable::lookup`] hashes the presented key, finds the
/// candidates whose digest shares its first 8 bytes, and accepts one only when all 32 bytes
/// compare equal in constant time.
#[derive(Default, Clone)]
pub struct KeyTable {
    /// Digest prefix → (full digest, entry). A bucket almost always holds one entry.
    buckets: HashMap<u64, Vec<([u8; 32], ApiKeyEntry)>>,
    len: usize,
}

impl KeyTable {
    /// Adds the key with SHA-256 `digest`, replacing the entry of an equal digest if there is one.
    pub fn insert(&mut self, digest: [u8; 32], entry: ApiKeyEntry) {
        let bucket = self.buckets.entry(prefix(&digest)).or_default();
        if let Some(slot) = bucket.iter_mut().find(|(d, _)| bool::from(d.ct_eq(&digest))) {
            slot.1 = entry;
        } else {
            bucket.push((digest, entry));
            self.len += 1;
        }
    }

    /// The entry of the presented key, if it is one of ours.
    pub fn lookup(&self, presented: &str) -> Option<&ApiKeyEntry> {
        let digest = sha256(presented);
        self.buckets
            .get(&prefix(&digest))?
            .iter()
            .find(|(d, _)| bool::from(d.ct_eq(&digest)))
            .map(|(_, entry)| entry)
    }

    /// How many keys the table holds.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the table holds no key.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Digests are not secret, but there is no reason to print a table of them either.
impl fmt::Debug for KeyTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyTable").field("len", &self.len).finish_non_exhaustive()
    }
}

fn prefix(digest: &[u8; 32]) -> u64 {
    let mut p = [0u8; 8];
    p.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(consumer: &str) -> ApiKeyEntry {
        ApiKeyEntry { consumer: consumer.into(), scopes: vec!["read".into()], id: None }
    }

    #[test]
    fn sha256_hex_matches_known_vectors() {
        // FIPS 180-2 examples.
        assert_eq!(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        assert_eq!(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        // Bytes of the UTF-8 encoding.
        assert_eq!(sha256_hex("é"), to_hex(digest::digest(&digest::SHA256, "é".as_bytes()).as_ref()));
    }

    #[test]
    fn generated_keys_have_the_prefix_43_base64url_chars_and_differ() {
        let keys: Vec<String> = (0..100).map(|_| generate()).collect();
        for key in &keys {
            assert_eq!(key.len(), 46, "{key}");
            let body = key.strip_prefix("bh_").unwrap();
            assert!(body.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'), "{key}");
            assert_eq!(URL_SAFE_NO_PAD.decode(body).unwrap().len(), 32);
        }
        let mut unique = keys.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), keys.len());
    }

    #[test]
    fn generated_ids_are_key_and_12_base32_chars_and_differ() {
        let ids: Vec<String> = (0..100).map(|_| generate_id()).collect();
        for id in &ids {
            let body = id.strip_prefix("key_").unwrap();
            assert_eq!(body.len(), 12, "{id}");
            assert!(body.bytes().all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b)), "{id}");
        }
        let mut unique = ids.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), ids.len());
    }

    #[test]
    fn parse_sha256_hex_round_trips_either_case() {
        let hex = sha256_hex("abc");
        let bytes = parse_sha256_hex(&hex).unwrap();
        assert_eq!(bytes, sha256("abc"));
        assert_eq!(parse_sha256_hex(&hex.to_uppercase()).unwrap(), bytes);
        assert_eq!(to_hex(&bytes), hex);
    }

    #[test]
    fn parse_sha256_hex_errors_are_precise() {
        let good = sha256_hex("abc");
        let cases = [
            (String::new(), "64 hex digits, got 0 characters"),
            (good[..63].to_owned(), "got 63 characters"),
            (format!("{good}0"), "got 65 characters"),
            (format!("sha256:{good}"), "got 71 characters"),
            (format!("{}g", &good[..63]), "invalid hex digit 'g' at position 64"),
            (format!(" {}", &good[1..]), "invalid hex digit ' ' at position 1"),
            // Non-ASCII: counted in characters, not bytes.
            (format!("é{}", &good[1..]), "invalid hex digit 'é' at position 1"),
        ];
        for (input, expected) in cases {
            let err = parse_sha256_hex(&input).unwrap_err();
            assert!(err.contains(expected), "{input:?}: {err:?} lacks {expected:?}");
        }
    }

    #[test]
    fn lookup_finds_the_entry_of_a_known_key_only() {
        let (alice, bob) = (generate(), generate());
        let mut table = KeyTable::default();
        assert!(table.is_empty());
        assert_eq!(table.lookup(&alice), None);
        table.insert(sha256(&alice), entry("alice"));
        table.insert(parse_sha256_hex(&sha256_hex(&bob)).unwrap(), entry("bob"));
        assert_eq!(table.len(), 2);
        assert!(!table.is_empty());
        assert_eq!(table.lookup(&alice).unwrap().consumer, "alice");
        assert_eq!(table.lookup(&bob).unwrap().consumer, "bob");
        assert_eq!(table.lookup(""), None);
        assert_eq!(table.lookup(&generate()), None);
        // Near misses: a key is matched exactly, not by prefix, case or whitespace.
        assert_eq!(table.lookup(&alice[..alice.len() - 1]), None);
        assert_eq!(table.lookup(&format!("{alice} ")), None);
        assert_eq!(table.lookup(&alice.to_uppercase()), None);
        // The digest is not the key.
        assert_eq!(table.lookup(&sha256_hex(&alice)), None);
    }

    #[test]
    fn insert_of_an_equal_digest_replaces_the_entry() {
        let key = generate();
        let mut table = KeyTable::default();
        table.insert(sha256(&key), entry("old"));
        table.insert(sha256(&key), entry("new"));
        assert_eq!(table.len(), 1);
        assert_eq!(table.lookup(&key).unwrap().consumer, "new");
    }

    #[test]
    fn digests_sharing_a_prefix_are_told_apart_by_the_full_comparison() {
        // Forge two digests with the same first 8 bytes: only the real one matches.
        let key = generate();
        let real = sha256(&key);
        let mut twin = real;
        twin[31] ^= 1;
        let mut table = KeyTable::default();
        table.insert(twin, entry("twin"));
        assert_eq!(table.lookup(&key), None);
        table.insert(real, entry("real"));
        assert_eq!(table.len(), 2);
        assert_eq!(table.lookup(&key).unwrap().consumer, "real");
        assert_eq!(format!("{table:?}"), "KeyTable { len: 2, .. }");
    }
}
