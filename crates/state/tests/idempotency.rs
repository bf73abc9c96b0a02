//! The idempotency part of the `Store` contract (`bridgehead_idempotency`, migration 0004), run
//! against both backends like tests/store.rs: every check in `checks` runs once on a fresh SQLite
//! file (`sqlite::…`) and once on a fresh throwaway PostgreSQL server (`postgres::…`, which needs
//! PostgreSQL installed or `BRIDGEHEAD_SKIP_POSTGRES=1`).

#[macro_use]
mod common;

use bridgehead_state::{
    Backend, IDEMPOTENCY_PURGE_BATCH, IdempotencyBegin, StateError, Store, new_idempotency_owner,
};

each_backend!(
    begin_started_in_flight_mismatch_completed,
    expired_record_is_taken_over,
    in_flight_record_is_taken_over_when_its_lease_runs_out,
    late_owner_cannot_complete_or_release_after_a_takeover,
    release_frees_the_key_only_for_its_in_flight_owner,
    complete_refuses_another_owner_a_completed_or_missing_record,
    purge_deletes_expired_records_but_not_live_leases,
    begin_refuses_bad_lease_ttl_and_owner,
    one_of_twenty_concurrent_begins_starts,
);

#[test]
fn owner_tokens_are_32_hex_digits_and_distinct() {
    let owners: std::collections::HashSet<String> = (0..1000).map(|_| new_idempotency_owner()).collect();
    assert_eq!(owners.len(), 1000);
    for owner in &owners {
        assert_eq!(owner.len(), 32, "{owner}");
        assert!(owner.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)), "{owner}");
    }
}

/// Backend-independent checks; `url` names a fresh, empty database. Times are Unix ms around an
/// arbitrary `NOW`.
mod checks {
    use super::*;

    const NOW: i64 = 1_700_000_000_000;
    const LEASE: i64 = 30_000;
    const TTL: i64 = 86_400_000;
    const SCOPE: &str = "POST /orders consumer-a";

    /// A distinct 64-digit lower-case hex "fingerprint" per `n`.
    fn fp(n: u32) -> String {
        format!("{n:064x}")
    }

    /// A distinct owner token per `n` (the gateway uses `new_idempotency_owner`; fixed ones keep
    /// failures legible).
    fn owner(n: u32) -> String {
        format!("owner-{n}")
    }

    pub async fn begin_started_in_flight_mismatch_completed(url: &str, _: Backend) {
        use IdempotencyBegin::*;
        let store = Store::open(url).await.unwrap();
        // Every begin is a new request with its own owner token.
        let begin = |key: &'static str, fp: String, now: i64| {
            let store = store.clone();
            async move {
                let owner = new_idempotency_owner();
                store.idempotency_begin(SCOPE, key, &fp, &owner, LEASE, TTL, now).await.unwrap()
            }
        };
        assert_eq!(
            store.idempotency_begin(SCOPE, "k1", &fp(1), &owner(1), LEASE, TTL, NOW).await.unwrap(),
            Started
        );
        assert_eq!(begin("k1", fp(1), NOW + 1).await, InFlight);
        assert_eq!(begin("k1", fp(2), NOW + 1).await, Mismatch);
        // Scopes and keys are exact and independent.
        assert_eq!(
            store.idempotency_begin("other scope", "k1", &fp(2), &owner(2), LEASE, TTL, NOW).await.unwrap(),
            Started
        );
        assert_eq!(begin("K1", fp(2), NOW).await, Started);

        let response = b"HTTP/1.1 201 Created\r\n\r\n{\"id\":7}\xff\x00".to_vec();
        assert!(store.idempotency_complete(SCOPE, "k1", &owner(1), &response, NOW + TTL).await.unwrap());
        assert_eq!(begin("k1", fp(1), NOW + 2).await, Completed(response.clone()));
        assert_eq!(begin("k1", fp(2), NOW + 2).await, Mismatch, "mismatch wins over completed");
        // Completed records stay completed after the lease (only expiry frees them).
        assert_eq!(begin("k1", fp(1), NOW + LEASE + 1).await, Completed(response));

        // An empty response is a response, not "in flight".
        assert_eq!(
            store.idempotency_begin(SCOPE, "empty", &fp(3), &owner(3), LEASE, TTL, NOW).await.unwrap(),
            Started
        );
        assert!(store.idempotency_complete(SCOPE, "empty", &owner(3), b"", NOW + TTL).await.unwrap());
        assert_eq!(begin("empty", fp(3), NOW).await, Completed(Vec::new()));
        store.close().await;
    }

    pub async fn expired_record_is_taken_over(url: &str, _: Backend) {
        use IdempotencyBegin::*;
        let store = Store::open(url).await.unwrap();
        let begin = |fp: String, owner: String, now: i64| {
            let store = store.clone();
            async move { store.idempotency_begin(SCOPE, "k", &fp, &owner, LEASE, TTL, now).await.unwrap() }
        };
        assert_eq!(begin(fp(1), owner(1), NOW).await, Started);
        let expires = NOW + 60_000;
        assert!(store.idempotency_complete(SCOPE, "k", &owner(1), b"first", expires).await.unwrap());
        assert_eq!(begin(fp(1), owner(10), expires - 1).await, Completed(b"first".to_vec()));
        assert_eq!(begin(fp(2), owner(11), expires - 1).await, Mismatch);
        // At expires_at the record is expired, and any fingerprint takes it over as a new record.
        assert_eq!(begin(fp(2), owner(2), expires).await, Started);
        assert_eq!(begin(fp(2), owner(12), expires + 1).await, InFlight);
        assert_eq!(begin(fp(1), owner(13), expires + 1).await, Mismatch);
        assert!(!store.idempotency_complete(SCOPE, "k", &owner(1), b"late", NOW + TTL).await.unwrap());
        assert!(!store.idempotency_complete(SCOPE, "k", &owner(12), b"not its", NOW + TTL).await.unwrap());
        assert!(store.idempotency_complete(SCOPE, "k", &owner(2), b"second", expires + TTL).await.unwrap());
        assert_eq!(begin(fp(2), owner(14), expires + 2).await, Completed(b"second".to_vec()));
        store.close().await;
    }

    pub async fn in_flight_record_is_taken_over_when_its_lease_runs_out(url: &str, _: Backend) {
        use IdempotencyBegin::*;
        let store = Store::open(url).await.unwrap();
        let begin = |fp: String, now: i64| {
            let store = store.clone();
            async move {
                let owner = new_idempotency_owner();
                store.idempotency_begin(SCOPE, "k", &fp, &owner, LEASE, TTL, now).await.unwrap()
            }
        };
        assert_eq!(begin(fp(1), NOW).await, Started);
        assert_eq!(begin(fp(1), NOW + LEASE - 1).await, InFlight);
        assert_eq!(begin(fp(2), NOW + LEASE - 1).await, Mismatch);
        // The owner crashed: at locked_until the lease has run out, and the next request (same
        // fingerprint or not) takes the record over with a new lease.
        assert_eq!(begin(fp(1), NOW + LEASE).await, Started);
        assert_eq!(begin(fp(1), NOW + LEASE + 1).await, InFlight);
        assert_eq!(begin(fp(2), NOW + 2 * LEASE - 1).await, Mismatch);
        assert_eq!(begin(fp(2), NOW + 2 * LEASE).await, Started);
        assert_eq!(begin(fp(1), NOW + 2 * LEASE + 1).await, Mismatch);
        store.close().await;
    }

    pub async fn late_owner_cannot_complete_or_release_after_a_takeover(url: &str, _: Backend) {
        use IdempotencyBegin::*;
        let store = Store::open(url).await.unwrap();
        let (a, b) = (new_idempotency_owner(), new_idempotency_owner());
        // Request A starts, outlives its lease, and request B (the same request, retried) takes
        // the record over.
        assert_eq!(store.idempotency_begin(SCOPE, "k", &fp(1), &a, LEASE, TTL, NOW).await.unwrap(), Started);
        assert_eq!(
            store.idempotency_begin(SCOPE, "k", &fp(1), &b, LEASE, TTL, NOW + LEASE).await.unwrap(),
            Started
        );
        // A finishes late: its release does not delete B's record, its complete does not write
        // into it.
        store.idempotency_release(SCOPE, "k", &a).await.unwrap();
        assert!(!store.idempotency_complete(SCOPE, "k", &a, b"from A", NOW + TTL).await.unwrap());
        let c = new_idempotency_owner();
        assert_eq!(
            store.idempotency_begin(SCOPE, "k", &fp(1), &c, LEASE, TTL, NOW + LEASE + 1).await.unwrap(),
            InFlight,
            "B's record is still there and in flight"
        );
        // B completes; its response is the one stored.
        assert!(store.idempotency_complete(SCOPE, "k", &b, b"from B", NOW + TTL).await.unwrap());
        assert_eq!(
            store.idempotency_begin(SCOPE, "k", &fp(1), &c, LEASE, TTL, NOW + LEASE + 2).await.unwrap(),
            Completed(b"from B".to_vec())
        );
        store.idempotency_release(SCOPE, "k", &a).await.unwrap();
        store.idempotency_release(SCOPE, "k", &b).await.unwrap();
        assert_eq!(
            store.idempotency_begin(SCOPE, "k", &fp(1), &c, LEASE, TTL, NOW + LEASE + 3).await.unwrap(),
            Completed(b"from B".to_vec()),
            "a completed record is never released"
        );

        // The same after a takeover by another fingerprint, and B releasing instead.
        assert_eq!(store.idempotency_begin(SCOPE, "k2", &fp(1), &a, LEASE, TTL, NOW).await.unwrap(), Started);
        assert_eq!(
            store.idempotency_begin(SCOPE, "k2", &fp(2), &b, LEASE, TTL, NOW + LEASE).await.unwrap(),
            Started
        );
        store.idempotency_release(SCOPE, "k2", &a).await.unwrap();
        assert!(!store.idempotency_complete(SCOPE, "k2", &a, b"from A", NOW + TTL).await.unwrap());
        assert_eq!(
            store.idempotency_begin(SCOPE, "k2", &fp(2), &c, LEASE, TTL, NOW + LEASE + 1).await.unwrap(),
            InFlight
        );
        store.idempotency_release(SCOPE, "k2", &b).await.unwrap();
        assert_eq!(
            store.idempotency_begin(SCOPE, "k2", &fp(1), &c, LEASE, TTL, NOW + LEASE + 1).await.unwrap(),
            Started,
            "released by its owner"
        );
        store.close().await;
    }

    pub async fn release_frees_the_key_only_for_its_in_flight_owner(url: &str, _: Backend) {
        use IdempotencyBegin::*;
        let store = Store::open(url).await.unwrap();
        let begin = |key: &'static str, fp: String, owner: String| {
            let store = store.clone();
            async move { store.idempotency_begin(SCOPE, key, &fp, &owner, LEASE, TTL, NOW).await.unwrap() }
        };
        assert_eq!(begin("k", fp(1), owner(1)).await, Started);
        store.idempotency_release(SCOPE, "k", &owner(2)).await.unwrap(); // another owner: no-op
        assert_eq!(begin("k", fp(1), owner(3)).await, InFlight);
        store.idempotency_release(SCOPE, "k", &owner(3)).await.unwrap(); // the refused begin's: no-op
        assert_eq!(begin("k", fp(1), owner(4)).await, InFlight);
        store.idempotency_release(SCOPE, "k", &owner(1)).await.unwrap();
        assert_eq!(begin("k", fp(2), owner(5)).await, Started, "released: the key is free for any request");

        // A completed record is never released.
        assert_eq!(begin("done", fp(1), owner(1)).await, Started);
        assert!(store.idempotency_complete(SCOPE, "done", &owner(1), b"resp", NOW + TTL).await.unwrap());
        store.idempotency_release(SCOPE, "done", &owner(1)).await.unwrap();
        assert_eq!(begin("done", fp(1), owner(6)).await, Completed(b"resp".to_vec()));

        // Releasing nothing is fine.
        store.idempotency_release(SCOPE, "never", &owner(1)).await.unwrap();
        store.close().await;
    }

    pub async fn complete_refuses_another_owner_a_completed_or_missing_record(url: &str, _: Backend) {
        use IdempotencyBegin::*;
        let store = Store::open(url).await.unwrap();
        assert_eq!(
            store.idempotency_begin(SCOPE, "k", &fp(1), &owner(1), LEASE, TTL, NOW).await.unwrap(),
            Started
        );
        assert!(!store.idempotency_complete(SCOPE, "k", &owner(2), b"wrong", NOW + TTL).await.unwrap());
        assert!(!store.idempotency_complete(SCOPE, "missing", &owner(1), b"x", NOW + TTL).await.unwrap());
        assert_eq!(
            store.idempotency_begin(SCOPE, "k", &fp(1), &owner(3), LEASE, TTL, NOW).await.unwrap(),
            InFlight
        );
        // A begin that was refused does not become an owner.
        assert!(!store.idempotency_complete(SCOPE, "k", &owner(3), b"wrong", NOW + TTL).await.unwrap());
        assert!(store.idempotency_complete(SCOPE, "k", &owner(1), b"right", NOW + TTL).await.unwrap());
        assert!(!store.idempotency_complete(SCOPE, "k", &owner(1), b"again", NOW + TTL).await.unwrap());
        assert_eq!(
            store.idempotency_begin(SCOPE, "k", &fp(1), &owner(4), LEASE, TTL, NOW).await.unwrap(),
            Completed(b"right".to_vec()),
            "the first completion is kept"
        );
        store.close().await;
    }

    pub async fn purge_deletes_expired_records_but_not_live_leases(url: &str, _: Backend) {
        use IdempotencyBegin::*;
        let store = Store::open(url).await.unwrap();
        let begin = |key: &'static str, lease: i64, ttl: i64| {
            let store = store.clone();
            async move { store.idempotency_begin(SCOPE, key, &fp(1), &owner(1), lease, ttl, NOW).await.unwrap() }
        };
        // Completed, expiring at NOW + 100.
        assert_eq!(begin("done-early", LEASE, TTL).await, Started);
        assert!(store.idempotency_complete(SCOPE, "done-early", &owner(1), b"r", NOW + 100).await.unwrap());
        // Completed, expiring at NOW + 10_000.
        assert_eq!(begin("done-late", LEASE, TTL).await, Started);
        assert!(store.idempotency_complete(SCOPE, "done-late", &owner(1), b"r", NOW + 10_000).await.unwrap());
        // In flight, lease and expiry both at NOW + 100 (ttl = lease).
        assert_eq!(begin("stuck", 100, 100).await, Started);
        // In flight with a long lease and TTL.
        assert_eq!(begin("running", LEASE, TTL).await, Started);

        assert_eq!(store.idempotency_purge(NOW + 99).await.unwrap(), 0);
        assert_eq!(store.idempotency_purge(NOW + 100).await.unwrap(), 2, "done-early and stuck");
        assert_eq!(store.idempotency_purge(NOW + 100).await.unwrap(), 0);
        assert_eq!(begin("stuck", LEASE, TTL).await, Started, "purged: a new record");
        assert_eq!(begin("done-late", LEASE, TTL).await, Completed(b"r".to_vec()));
        assert_eq!(store.idempotency_purge(NOW + 10_000).await.unwrap(), 1, "done-late");
        assert_eq!(begin("running", LEASE, TTL).await, InFlight, "live lease: kept");
        assert_eq!(store.idempotency_purge(NOW + TTL).await.unwrap(), 2, "running and the new stuck");
        assert_eq!(IDEMPOTENCY_PURGE_BATCH, 10_000);
        store.close().await;
    }

    pub async fn begin_refuses_bad_lease_ttl_and_owner(url: &str, _: Backend) {
        let store = Store::open(url).await.unwrap();
        for (lease, ttl, owner) in [(0, TTL, "o"), (-1, TTL, "o"), (LEASE, LEASE - 1, "o"), (LEASE, TTL, "")]
        {
            let err = store.idempotency_begin(SCOPE, "k", &fp(1), owner, lease, ttl, NOW).await.unwrap_err();
            assert!(
                matches!(err, StateError::InvalidInput { op: "idempotency_begin", .. }),
                "lease {lease}, ttl {ttl}, owner {owner:?}: {err:?}"
            );
        }
        // Nothing was written.
        assert_eq!(
            store.idempotency_begin(SCOPE, "k", &fp(1), "o", LEASE, TTL, NOW).await.unwrap(),
            IdempotencyBegin::Started
        );
        store.close().await;
    }

    pub async fn one_of_twenty_concurrent_begins_starts(url: &str, _: Backend) {
        let store = Store::open(url).await.unwrap();
        // Twenty requests with the same key at once, on separate tasks (and pooled connections),
        // half of them with another fingerprint: exactly one starts, whichever it is, and only its
        // owner can complete the record.
        let tasks: Vec<_> = (0..20u32)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    let fingerprint = fp(i % 2);
                    let owner = new_idempotency_owner();
                    let begun =
                        store.idempotency_begin(SCOPE, "race", &fingerprint, &owner, LEASE, TTL, NOW).await;
                    (fingerprint, begun.unwrap(), owner)
                })
            })
            .collect();
        let mut results = Vec::new();
        let mut owners = Vec::new();
        for task in tasks {
            let (fingerprint, begun, owner) = task.await.unwrap();
            owners.push((begun == IdempotencyBegin::Started, owner));
            results.push((fingerprint, begun));
        }
        let winners: Vec<_> = results.iter().filter(|(_, r)| *r == IdempotencyBegin::Started).collect();
        assert_eq!(winners.len(), 1, "{results:?}");
        let winner_fp = &winners[0].0;
        for (fingerprint, result) in &results {
            let expected = if fingerprint != winner_fp {
                IdempotencyBegin::Mismatch
            } else if result == &IdempotencyBegin::Started {
                continue;
            } else {
                IdempotencyBegin::InFlight
            };
            assert_eq!(result, &expected, "{results:?}");
        }
        owners.sort_by_key(|(started, _)| *started); // the winner last, after every refused one
        for (started, owner) in &owners {
            let completed = store.idempotency_complete(SCOPE, "race", owner, b"r", NOW + TTL).await.unwrap();
            assert_eq!(completed, *started, "owner {owner}");
        }
        store.close().await;
    }
}
