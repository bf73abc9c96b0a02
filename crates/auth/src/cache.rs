//! A bounded cache of checked credentials, keyed by the SHA-256 of the credential so the
//! credential itself is never kept. Entries expire at a unix time chosen by the caller (a token's
//! `exp`) and belong to a key-set generation: when the keys change, older entries stop counting.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::jwt::KeySet;

/// Generation numbers of key sets, process-wide so that a cache entry can never match a
/// different set by accident.
static GENERATION: AtomicU64 = AtomicU64::new(1);

/// A key set with the generation number it was loaded as, swapped as one value so a reader never
/// pairs one set with another set's generation (the token cache relies on it).
pub struct Versioned {
    pub keys: KeySet,
    pub generation: u64,
}

impl Versioned {
    pub fn new(keys: KeySet) -> Arc<Self> {
        Arc::new(Self { keys, generation: GENERATION.fetch_add(1, Ordering::Relaxed) })
    }
}

/// The built-in authorization server's published keys and revocations, as edge
/// authentication (`issuer: local`) reads them: a narrow, read-only view.
pub trait PublishedKeys: Send + Sync {
    /// The keys tokens are verified with now.
    fn current(&self) -> Arc<Versioned>;
    /// Whether a token id was revoked before its expiry.
    fn is_revoked(&self, jti: &str) -> bool;
}

const SHARDS: usize = 16;

pub type Digest = [u8; 32];

/// SHA-256 of a credential: the same digest API keys are stored and looked up by.
pub use crate::apikey::sha256 as digest;

/// The key is already a uniform hash: use its first bytes instead of hashing it again.
#[derive(Default)]
struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for (i, b) in bytes.iter().take(8).enumerate() {
            self.0 |= u64::from(*b) << (i * 8);
        }
    }
}

struct Entry<V> {
    value: V,
    expires: u64,
    generation: u64,
}

type Shard<V> = HashMap<Digest, Entry<V>, BuildHasherDefault<DigestHasher>>;

pub struct TokenCache<V> {
    shards: Box<[Mutex<Shard<V>>]>,
    per_shard: usize,
}

impl<V: Clone> TokenCache<V> {
    /// A cache of at most `capacity` entries; `None` when `capacity` is 0 (cache off).
    pub fn new(capacity: usize) -> Option<Self> {
        if capacity == 0 {
            return None;
        }
        let per_shard = capacity.div_ceil(SHARDS);
        let shards = (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect();
        Some(Self { shards, per_shard })
    }

    fn shard(&self, key: &Digest) -> &Mutex<Shard<V>> {
        &self.shards[usize::from(key[31]) % SHARDS]
    }

    /// The value for `key` if it has not expired at `now` and belongs to `generation`.
    pub fn get(&self, key: &Digest, now: u64, generation: u64) -> Option<V> {
        let mut shard = self.shard(key).lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match shard.get(key) {
            Some(e) if e.expires > now && e.generation == generation => Some(e.value.clone()),
            Some(_) => {
                shard.remove(key);
                None
            }
            None => None,
        }
    }

    pub fn insert(&self, key: Digest, value: V, expires: u64, now: u64, generation: u64) {
        if expires <= now {
            return;
        }
        let mut shard = self.shard(&key).lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if shard.len() >= self.per_shard && !shard.contains_key(&key) {
            shard.retain(|_, e| e.expires > now && e.generation == generation);
            if shard.len() >= self.per_shard {
                // Still full of live entries: drop one arbitrary entry (keys are uniform hashes).
                if let Some(k) = shard.keys().next().copied() {
                    shard.remove(&k);
                }
            }
        }
        shard.insert(key, Entry { value, expires, generation });
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().unwrap().len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_and_follow_the_generation() {
        let c = TokenCache::new(100).unwrap();
        let k = digest("token-a");
        c.insert(k, 1, 100, 50, 7);
        assert_eq!(c.get(&k, 99, 7), Some(1));
        assert_eq!(c.get(&k, 100, 7), None, "expired at exp");
        c.insert(k, 1, 100, 50, 7);
        assert_eq!(c.get(&k, 60, 8), None, "another key-set generation");
        c.insert(k, 2, 40, 50, 7);
        assert_eq!(c.get(&k, 41, 7), None, "already expired entries are not stored");
    }

    #[test]
    fn size_is_bounded() {
        let c = TokenCache::new(64).unwrap();
        for i in 0..10_000 {
            c.insert(digest(&format!("t{i}")), i, 1_000, 0, 1);
        }
        assert!(c.len() <= 64, "{}", c.len());
        assert!(TokenCache::<u8>::new(0).is_none());
    }

    #[test]
    fn digest_is_sha256() {
        let d = digest("abc");
        assert_eq!(d[..4], [0xba, 0x78, 0x16, 0xbf]);
    }
}
