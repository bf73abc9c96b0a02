//! The idempotency part of the `Store` contract (`bridgehead_idempotency`, migration 0004), run
//! against both backends like tests/store.rs: every check in `checks` runs once on a fresh SQLite
//! file (`sqlite::…`) and once on a fresh throwaway PostgreSQL server (`postgres::…`, which needs
//! PostgreSQL installed or `BRIDGEHEAD_SKIP_POSTGRES=1`).

#[macro_use]
mod common;

use bridgehead_state::{Backend, IDEMPOTENCY_PURGE_BATCH, IdempotencyBegin, StateError, Store};

each_backend!(
    begin_started_in_flight_mismatch_completed,
    expired_record_is_taken_over,
    in_flight_record_is_taken_over_when_its_lease_runs_out,
    release_frees_the_key_only_for_its_in_flight_owner,
    complete_refuses_another_fingerprint_a_completed_or_missing_record,
    purge_deletes_expired_records_but_not_live_leases,
    begin_refuses_bad_lease_and_ttl,
    one_of_twenty_concurrent_begins_starts,
);

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

    pub async fn begin_started_in_flight_mismatch_completed(url: &str, _: Backend) {
        use IdempotencyBegin::*;
        let store = Store::open(url).await.unwrap();
        let begin = |key: &'static str, fp: String, now: i64| {
            let store = store.clone();
            async move { store.idempotency_begin(SCOPE, key, &fp, LEASE, TTL, now).await.unwrap() }
        };
        assert_eq!(begin("k1", fp(1), NOW).await, Started);
        assert_eq!(begin("k1", fp(1), NOW + 1).await, InFlight);
        assert_eq!(begin("k1", fp(2), NOW + 1).await, Mismatch);
        // Scopes and keys are exact and independent.
        assert_eq!(
            store.idempotency_begin("other scope", "k1", &fp(2), LEASE, TTL, NOW).await.unwrap(),
            Started
        );
        assert_eq!(begin("K1", fp(2), NOW).await, Started);

        let response = b"HTTP/1.1 201 Created\r\n\r\n{\"id\":7}\xff\x00".to_vec();
        assert!(store.idempotency_complete(SCOPE, "k1", &fp(1), &response, NOW + TTL).await.unwrap());
        assert_eq!(begin("k1", fp(1), NOW + 2).await, Completed(response.clone()));
        assert_eq!(begin("k1", fp(2), NOW + 2).await, Mismatch, "mismatch wins over completed");
        // Completed records stay completed after the lease (only expiry frees them).
        assert_eq!(begin("k1", fp(1), NOW + LEASE + 1).await, Completed(response));

        // An empty response is a response, not "in flight".
        assert_eq!(begin("empty", fp(3), NOW).await, Started);
        assert!(store.idempotency_complete(SCOPE, "empty", &fp(3), b"", NOW + TTL).await.unwrap());
        assert_eq!(begin("empty", fp(3), NOW).await, Completed(Vec::new()));
        store.close().await;
    }

    pub async fn expired_record_is_taken_over(url: &str, _: Backend) {
        use IdempotencyBegin::*;
        let store = Store::open(url).await.unwrap();
        assert_eq!(store.idempotency_begin(SCOPE, "k", &fp(1), LEASE, TTL, NOW).await.unwrap(), Started);
        let expires = NOW + 60_000;
        assert!(store.idempotency_complete(SCOPE, "k", &fp(1), b"first", expires).await.unwrap());
        let begin = |fp: String, now: i64| {
            let store = store.clone();
            async move { store.idempotency_begin(SCOPE, "k", &fp, LEASE, TTL, now).await.unwrap() }
        };
        assert_eq!(begin(fp(1), expires - 1).await, Completed(b"first".to_vec()));
        assert_eq!(begin(fp(2), expires - 1).await, Mismatch);
        // At expires_at the record is expired, and any fingerprint takes it over as a new record.
        assert_eq!(begin(fp(2), expires).await, Started);
        assert_eq!(begin(fp(2), expires + 1).await, InFlight);
        assert_eq!(begin(fp(1), expires + 1).await, Mismatch);
        assert!(!store.idempotency_complete(SCOPE, "k", &fp(1), b"late", NOW + TTL).await.unwrap());
        assert!(store.idempotency_complete(SCOPE, "k", &fp(2), b"second", expires + TTL).await.unwrap());
        assert_eq!(begin(fp(2), expires + 2).await, Completed(b"second".to_vec()));
        store.close().await;
    }

    pub async fn in_flight_record_is_taken_over_when_its_lease_runs_out(url: &str, _: Backend) {
        use IdempotencyBegin::*;
        let store = Store::open(url).await.unwrap();
        let begin = |fp: String, now: i64| {
            let store = store.clone();
            async move { store.idempotency_begin(SCOPE, "k", &fp, LEASE, TTL, now).await.unwrap() }
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

    pub async fn release_frees_the_key_only_for_its_in_flight_owner(url: &str, _: Backend) {
        use IdempotencyBegin::*;
        let store = Store::open(url).await.unwrap();
        let begin = |key: &'static str, fp: String| {
            let store = store.clone();
            async move { store.idempotency_begin(SCOPE, key, &fp, LEASE, TTL, NOW).await.unwrap() }
        };
        assert_eq!(begin("k", fp(1)).await, Started);
        store.idempotency_release(SCOPE, "k", &fp(2)).await.unwrap(); // another fingerprint: no-op
        assert_eq!(begin("k", fp(1)).await, InFlight);
        store.idempotency_release(SCOPE, "k", &fp(1)).await.unwrap();
        assert_eq!(begin("k", fp(2)).await, Started, "released: the key is free for any request");

        // A completed record is never released.
        assert_eq!(begin("done", fp(1)).await, Started);
        assert!(store.idempotency_complete(SCOPE, "done", &fp(1), b"resp", NOW + TTL).await.unwrap());
        store.idempotency_release(SCOPE, "done", &fp(1)).await.unwrap();
        assert_eq!(begin("done", fp(1)).await, Completed(b"resp".to_vec()));

        // Releasing nothing is fine.
        store.idempotency_release(SCOPE, "never", &fp(1)).await.unwrap();
        store.close().await;
    }

    pub async fn complete_refuses_another_fingerprint_a_completed_or_missing_record(url: &str, _: Backend) {
        use IdempotencyBegin::*;
        let store = Store::open(url).await.unwrap();
        assert_eq!(store.idempotency_begin(SCOPE, "k", &fp(1), LEASE, TTL, NOW).await.unwrap(), Started);
        assert!(!store.idempotency_complete(SCOPE, "k", &fp(2), b"wrong", NOW + TTL).await.unwrap());
        assert!(!store.idempotency_complete(SCOPE, "missing", &fp(1), b"x", NOW + TTL).await.unwrap());
        assert_eq!(store.idempotency_begin(SCOPE, "k", &fp(1), LEASE, TTL, NOW).await.unwrap(), InFlight);
        assert!(store.idempotency_complete(SCOPE, "k", &fp(1), b"right", NOW + TTL).await.unwrap());
        assert!(!store.idempotency_complete(SCOPE, "k", &fp(1), b"again", NOW + TTL).await.unwrap());
        assert_eq!(
            store.idempotency_begin(SCOPE, "k", &fp(1), LEASE, TTL, NOW).await.unwrap(),
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
            async move { store.idempotency_begin(SCOPE, key, &fp(1), lease, ttl, NOW).await.unwrap() }
        };
        // Completed, expiring at NOW + 100.
        assert_eq!(begin("done-early", LEASE, TTL).await, Started);
        assert!(store.idempotency_complete(SCOPE, "done-early", &fp(1), b"r", NOW + 100).await.unwrap());
        // Completed, expiring at NOW + 10_000.
        assert_eq!(begin("done-late", LEASE, TTL).await, Started);
        assert!(store.idempotency_complete(SCOPE, "done-late", &fp(1), b"r", NOW + 10_000).await.unwrap());
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

    pub async fn begin_refuses_bad_lease_and_ttl(url: &str, _: Backend) {
        let store = Store::open(url).await.unwrap();
        for (lease, ttl) in [(0, TTL), (-1, TTL), (LEASE, LEASE - 1)] {
            let err = store.idempotency_begin(SCOPE, "k", &fp(1), lease, ttl, NOW).await.unwrap_err();
            assert!(
                matches!(err, StateError::InvalidInput { op: "idempotency_begin", .. }),
                "lease {lease}, ttl {ttl}: {err:?}"
            );
        }
        store.close().await;
    }

    pub async fn one_of_twenty_concurrent_begins_starts(url: &str, _: Backend) {
        let store = Store::open(url).await.unwrap();
        // Twenty requests with the same key at once, on separate tasks (and pooled connections),
        // half of them with another fingerprint: exactly one starts, whichever it is.
        let tasks: Vec<_> = (0..20u32)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    let fingerprint = fp(i % 2);
                    let begun = store.idempotency_begin(SCOPE, "race", &fingerprint, LEASE, TTL, NOW).await;
                    (fingerprint, begun.unwrap())
                })
            })
            .collect();
        let mut results = Vec::new();
        for task in tasks {
            results.push(task.await.unwrap());
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
        store.close().await;
    }
}
