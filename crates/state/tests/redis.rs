//! [`Redis`] against a real, throwaway `redis-server` per test (`testing::TestRedis`, which needs
//! the `redis-server` package installed or `BRIDGEHEAD_SKIP_REDIS=1`): the GCRA limiter (one
//! bucket, and several all-or-nothing), the
//! idempotency contract (the same as the SQL store's), failing fast while Redis is down and
//! recovering once it is back, and keeping the URL's password out of errors.

use std::time::{Duration, Instant};

use bridgehead_state::testing::TestRedis;
use bridgehead_state::{
    IdempotencyBegin, RATE_LIMIT_MAX_WINDOW_US, Redis, StateError, new_idempotency_owner,
};

/// A throwaway Redis server, or `None` when BRIDGEHEAD_SKIP_REDIS=1 says to skip.
fn start_redis() -> Option<TestRedis> {
    let redis = TestRedis::start().unwrap_or_else(|e| panic!("{e}"));
    if redis.is_none() {
        eprintln!("skipped: BRIDGEHEAD_SKIP_REDIS=1");
    }
    redis
}

const SCOPE: &str = "POST /orders consumer-a";
const LEASE_MS: u64 = 30_000;
const TTL_MS: u64 = 86_400_000;

/// A distinct 64-digit lower-case hex "fingerprint" per `n`.
fn fp(n: u32) -> String {
    format!("{n:064x}")
}

/// A distinct owner token per `n` (the gateway uses `new_idempotency_owner`; fixed ones keep
/// failures legible).
fn owner(n: u32) -> String {
    format!("owner-{n}")
}

#[tokio::test]
async fn gcra_admits_a_burst_then_refuses_with_remaining_and_reset() {
    let Some(server) = start_redis() else { return };
    let redis = Redis::connect(&server.url()).await.unwrap();
    // Three requests, one more per second. The calls take far less than a second, so the counts
    // are exact and the times are within `SLACK` of the ideal values.
    const SEC: u64 = 1_000_000;
    const SLACK: u64 = 500_000;
    let within = |got: u64, ideal: u64| got <= ideal && got > ideal - SLACK;
    for n in 1..=3 {
        let d = redis.rate_limit("client-a", SEC, 3).await.unwrap();
        assert!(d.allowed, "request {n}: {d:?}");
        assert_eq!(d.remaining, 3 - n, "request {n}: {d:?}");
        assert!(within(d.reset_us, n * SEC), "request {n}: reset {d:?}");
        assert_eq!(d.retry_after_us, 0, "request {n}: {d:?}");
    }
    let refused = redis.rate_limit("client-a", SEC, 3).await.unwrap();
    assert!(!refused.allowed, "{refused:?}");
    assert_eq!(refused.remaining, 0);
    assert!(within(refused.reset_us, 3 * SEC), "{refused:?}");
    assert!(refused.retry_after_us >= 1 && within(refused.retry_after_us, SEC), "{refused:?}");
    // A refusal is not counted: the next one is refused the same way, no later.
    let again = redis.rate_limit("client-a", SEC, 3).await.unwrap();
    assert!(!again.allowed && again.retry_after_us <= refused.retry_after_us, "{again:?}");

    // Buckets are independent.
    let other = redis.rate_limit("client-b", SEC, 3).await.unwrap();
    assert!(other.allowed && other.remaining == 2, "{other:?}");
    // A burst of 1 admits one, then refuses for about an interval.
    assert!(redis.rate_limit("single", SEC, 1).await.unwrap().allowed);
    let single = redis.rate_limit("single", SEC, 1).await.unwrap();
    assert!(!single.allowed && within(single.retry_after_us, SEC), "{single:?}");
}

#[tokio::test]
async fn gcra_admits_again_after_retry_after() {
    let Some(server) = start_redis() else { return };
    let redis = Redis::connect(&server.url()).await.unwrap();
    const INTERVAL_US: u64 = 20_000;
    const BURST: u64 = 4;
    // Exactly `BURST` at once (the calls may straddle an interval, which can admit one more, so
    // count until the first refusal and bound it).
    let mut admitted = 0;
    let refused = loop {
        let d = redis.rate_limit("k", INTERVAL_US, BURST).await.unwrap();
        if !d.allowed {
            break d;
        }
        admitted += 1;
        assert!(admitted <= BURST + 5, "never refused");
    };
    assert!(admitted >= BURST, "admitted only {admitted}");
    assert!(refused.retry_after_us >= 1 && refused.retry_after_us <= INTERVAL_US, "{refused:?}");
    // Waiting what the limiter says is enough, on its own clock; three rounds.
    let mut retry_after = refused.retry_after_us;
    for round in 0..3 {
        tokio::time::sleep(Duration::from_micros(retry_after)).await;
        let d = redis.rate_limit("k", INTERVAL_US, BURST).await.unwrap();
        assert!(d.allowed, "round {round}: {d:?}");
        // Drain again until refused.
        retry_after = loop {
            let d = redis.rate_limit("k", INTERVAL_US, BURST).await.unwrap();
            if !d.allowed {
                break d.retry_after_us;
            }
        };
    }
}

#[tokio::test]
async fn gcra_refuses_bad_parameters() {
    let Some(server) = start_redis() else { return };
    let redis = Redis::connect(&server.url()).await.unwrap();
    for (interval, burst) in [(0, 1), (1, 0), (RATE_LIMIT_MAX_WINDOW_US, 2), (u64::MAX, 2)] {
        let err = redis.rate_limit("k", interval, burst).await.unwrap_err();
        assert!(matches!(err, StateError::InvalidInput { op: "rate_limit", .. }), "{err:?}");
    }
    // The largest window is accepted.
    assert!(redis.rate_limit("k", RATE_LIMIT_MAX_WINDOW_US, 1).await.unwrap().allowed);
}

/// An interval long enough that no bucket refills during a test.
const MINUTE: u64 = 60_000_000;

#[tokio::test]
async fn rate_limit_all_charges_all_buckets_or_none() {
    let Some(server) = start_redis() else { return };
    let redis = Redis::connect(&server.url()).await.unwrap();
    // Within `SLACK` of the ideal values: the calls take far less.
    const SLACK: u64 = 5_000_000;
    let within = |got: u64, ideal: u64| got <= ideal && got > ideal - SLACK;
    let buckets = [("a", MINUTE, 5), ("b", MINUTE, 1)];

    // Both admit: both charged.
    let first = redis.rate_limit_all(&buckets).await.unwrap();
    assert_eq!(first.len(), 2);
    let (a, b) = (first[0], first[1]);
    assert!(a.allowed && a.remaining == 4 && a.retry_after_us == 0, "{a:?}");
    assert!(within(a.reset_us, MINUTE), "{a:?}");
    assert!(b.allowed && b.remaining == 0 && b.retry_after_us == 0, "{b:?}");
    assert!(within(b.reset_us, MINUTE), "{b:?}");

    // B refuses: neither is charged. A reports what it would have said had it admitted, with
    // its reset not advanced; B what rate_limit says when refusing.
    let second = redis.rate_limit_all(&buckets).await.unwrap();
    let (a, b) = (second[0], second[1]);
    assert!(a.allowed && a.remaining == 3 && a.retry_after_us == 0, "{a:?}");
    assert!(within(a.reset_us, MINUTE), "not advanced: {a:?}");
    assert!(!b.allowed && b.remaining == 0, "{b:?}");
    assert!(within(b.reset_us, MINUTE) && within(b.retry_after_us, MINUTE), "{b:?}");
    // In input order.
    let reversed = redis.rate_limit_all(&[buckets[1], buckets[0]]).await.unwrap();
    assert!(!reversed[0].allowed && reversed[1].allowed && reversed[1].remaining == 3, "{reversed:?}");

    // A was charged once only: rate_limit, on the same key, admits its second request.
    let a_alone = redis.rate_limit("a", MINUTE, 5).await.unwrap();
    assert!(a_alone.allowed && a_alone.remaining == 3, "{a_alone:?}");
    assert!(within(a_alone.reset_us, 2 * MINUTE), "{a_alone:?}");
    // And rate_limit sees B's charge.
    assert!(!redis.rate_limit("b", MINUTE, 1).await.unwrap().allowed);
}

#[tokio::test]
async fn rate_limit_all_with_one_bucket_is_rate_limit() {
    let Some(server) = start_redis() else { return };
    let redis = Redis::connect(&server.url()).await.unwrap();
    // The same sequence on two keys, one through each method: the same decisions (times up to
    // the calls' own duration).
    for n in 0..5 {
        let single = redis.rate_limit("one", MINUTE, 3).await.unwrap();
        let all = redis.rate_limit_all(&[("all", MINUTE, 3)]).await.unwrap();
        assert_eq!(all.len(), 1);
        let all = all[0];
        assert_eq!((all.allowed, all.remaining), (single.allowed, single.remaining), "request {n}");
        assert!(all.reset_us.abs_diff(single.reset_us) < 5_000_000, "request {n}: {all:?} {single:?}");
        assert!(
            all.retry_after_us.abs_diff(single.retry_after_us) < 5_000_000
                && (all.retry_after_us == 0) == (single.retry_after_us == 0),
            "request {n}: {all:?} {single:?}"
        );
        assert_eq!(all.allowed, n < 3, "request {n}");
    }
    // The largest window is accepted.
    assert!(redis.rate_limit_all(&[("big", RATE_LIMIT_MAX_WINDOW_US, 1)]).await.unwrap()[0].allowed);
}

#[tokio::test]
async fn rate_limit_all_refuses_bad_input_and_writes_nothing() {
    let Some(server) = start_redis() else { return };
    let redis = Redis::connect(&server.url()).await.unwrap();
    let keys: Vec<String> = (0..17).map(|i| format!("k{i}")).collect();
    let seventeen: Vec<(&str, u64, u64)> = keys.iter().map(|k| (k.as_str(), MINUTE, 1)).collect();
    let bad: [&[(&str, u64, u64)]; 7] = [
        &[],
        &seventeen,
        &[("k0", MINUTE, 1), ("k1", MINUTE, 0)],
        &[("k0", 0, 1)],
        &[("k0", MINUTE, 1), ("k1", RATE_LIMIT_MAX_WINDOW_US, 2)],
        &[("k0", MINUTE, 1), ("k1", u64::MAX, 2)],
        &[("k0", MINUTE, 1), ("k0", MINUTE, 2)],
    ];
    for buckets in bad {
        let err = redis.rate_limit_all(buckets).await.unwrap_err();
        assert!(matches!(err, StateError::InvalidInput { op: "rate_limit_all", .. }), "{err:?}");
    }
    // Nothing was charged, and 16 buckets are accepted.
    let decisions = redis.rate_limit_all(&seventeen[..16]).await.unwrap();
    assert_eq!(decisions.len(), 16);
    assert!(decisions.iter().all(|d| d.allowed && d.remaining == 0), "{decisions:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forty_concurrent_rate_limit_all_admit_exactly_the_smallest_burst() {
    let Some(server) = start_redis() else { return };
    let redis = Redis::connect(&server.url()).await.unwrap();
    let node_b = Redis::connect(&server.url()).await.unwrap();
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let redis = if i % 4 == 0 { node_b.clone() } else { redis.clone() };
            tokio::spawn(async move {
                redis.rate_limit_all(&[("a", MINUTE, 10), ("b", MINUTE, 20)]).await.unwrap()
            })
        })
        .collect();
    let mut admitted = 0;
    for task in tasks {
        let decisions = task.await.unwrap();
        if decisions.iter().all(|d| d.allowed) {
            admitted += 1;
        } else {
            assert!(!decisions[0].allowed && decisions[1].allowed, "only A runs out: {decisions:?}");
        }
    }
    assert_eq!(admitted, 10);
    // B was charged by the admitted ten only.
    let b = redis.rate_limit("b", MINUTE, 20).await.unwrap();
    assert!(b.allowed && b.remaining == 20 - 10 - 1, "{b:?}");
    assert!(!redis.rate_limit("a", MINUTE, 10).await.unwrap().allowed);
}

#[tokio::test]
async fn idempotency_started_in_flight_mismatch_completed_release() {
    use IdempotencyBegin::*;
    let Some(server) = start_redis() else { return };
    let redis = Redis::connect(&server.url()).await.unwrap();
    let begin = |key: &'static str, fp: String, owner: String| {
        let redis = redis.clone();
        async move { redis.idempotency_begin(SCOPE, key, &fp, &owner, LEASE_MS).await.unwrap() }
    };
    assert_eq!(begin("k1", fp(1), owner(1)).await, Started);
    assert_eq!(begin("k1", fp(1), owner(2)).await, InFlight);
    assert_eq!(begin("k1", fp(2), owner(3)).await, Mismatch);
    assert_eq!(
        redis.idempotency_begin("other scope", "k1", &fp(2), &owner(4), LEASE_MS).await.unwrap(),
        Started
    );

    // Completing: only the in-flight owner (not a begin that was refused), once.
    let response = b"HTTP/1.1 201 Created\r\n\r\n{\"id\":7}\xff\x00".to_vec();
    assert!(!redis.idempotency_complete(SCOPE, "k1", &owner(2), b"wrong", TTL_MS).await.unwrap());
    assert!(!redis.idempotency_complete(SCOPE, "k1", &owner(3), b"wrong", TTL_MS).await.unwrap());
    assert!(!redis.idempotency_complete(SCOPE, "missing", &owner(1), b"x", TTL_MS).await.unwrap());
    assert!(redis.idempotency_complete(SCOPE, "k1", &owner(1), &response, TTL_MS).await.unwrap());
    assert!(!redis.idempotency_complete(SCOPE, "k1", &owner(1), b"again", TTL_MS).await.unwrap());
    assert_eq!(begin("k1", fp(1), owner(5)).await, Completed(response.clone()));
    assert_eq!(begin("k1", fp(2), owner(6)).await, Mismatch, "mismatch wins over completed");

    // Release: only the in-flight owner; a completed record stays.
    redis.idempotency_release(SCOPE, "k1", &owner(1)).await.unwrap();
    assert_eq!(begin("k1", fp(1), owner(7)).await, Completed(response));
    assert_eq!(begin("k2", fp(1), owner(8)).await, Started);
    redis.idempotency_release(SCOPE, "k2", &owner(9)).await.unwrap(); // another owner: no-op
    assert_eq!(begin("k2", fp(1), owner(10)).await, InFlight);
    redis.idempotency_release(SCOPE, "k2", &owner(10)).await.unwrap(); // the refused begin's: no-op
    assert_eq!(begin("k2", fp(1), owner(11)).await, InFlight);
    redis.idempotency_release(SCOPE, "k2", &owner(8)).await.unwrap();
    assert_eq!(begin("k2", fp(2), owner(12)).await, Started, "released: free for any request");
    redis.idempotency_release(SCOPE, "never", &owner(1)).await.unwrap();

    // An empty response is a response.
    assert_eq!(begin("empty", fp(3), owner(13)).await, Started);
    assert!(redis.idempotency_complete(SCOPE, "empty", &owner(13), b"", TTL_MS).await.unwrap());
    assert_eq!(begin("empty", fp(3), owner(14)).await, Completed(Vec::new()));

    let errors = [
        redis.idempotency_begin(SCOPE, "k3", &fp(1), &owner(15), 0).await.unwrap_err(),
        redis.idempotency_begin(SCOPE, "k3", &fp(1), "", LEASE_MS).await.unwrap_err(),
        redis.idempotency_complete(SCOPE, "k2", &owner(12), b"r", 0).await.unwrap_err(),
    ];
    for err in errors {
        assert!(matches!(err, StateError::InvalidInput { .. }), "{err:?}");
    }
    assert_eq!(begin("k3", fp(1), owner(15)).await, Started, "nothing was written");
}

#[tokio::test]
async fn idempotency_late_owner_cannot_complete_or_release_after_a_takeover() {
    use IdempotencyBegin::*;
    let Some(server) = start_redis() else { return };
    let redis = Redis::connect(&server.url()).await.unwrap();
    let (a, b, c) = (new_idempotency_owner(), new_idempotency_owner(), new_idempotency_owner());
    // Request A starts with a 50 ms lease and outlives it; request B (the same request, retried)
    // takes the record over once Redis expired it.
    assert_eq!(redis.idempotency_begin(SCOPE, "k", &fp(1), &a, 50).await.unwrap(), Started);
    poll_until_started(&redis, "k", &fp(1), &b).await;
    // A finishes late: its release does not delete B's record, its complete does not write into
    // it.
    redis.idempotency_release(SCOPE, "k", &a).await.unwrap();
    assert!(!redis.idempotency_complete(SCOPE, "k", &a, b"from A", TTL_MS).await.unwrap());
    assert_eq!(
        redis.idempotency_begin(SCOPE, "k", &fp(1), &c, LEASE_MS).await.unwrap(),
        InFlight,
        "B's record is still there and in flight"
    );
    // B completes; its response is the one stored, and nobody releases it.
    assert!(redis.idempotency_complete(SCOPE, "k", &b, b"from B", TTL_MS).await.unwrap());
    redis.idempotency_release(SCOPE, "k", &a).await.unwrap();
    redis.idempotency_release(SCOPE, "k", &b).await.unwrap();
    assert_eq!(
        redis.idempotency_begin(SCOPE, "k", &fp(1), &c, LEASE_MS).await.unwrap(),
        Completed(b"from B".to_vec())
    );

    // The same after a takeover by another fingerprint, and B releasing instead.
    assert_eq!(redis.idempotency_begin(SCOPE, "k2", &fp(1), &a, 50).await.unwrap(), Started);
    poll_until_started(&redis, "k2", &fp(2), &b).await;
    redis.idempotency_release(SCOPE, "k2", &a).await.unwrap();
    assert!(!redis.idempotency_complete(SCOPE, "k2", &a, b"from A", TTL_MS).await.unwrap());
    assert_eq!(redis.idempotency_begin(SCOPE, "k2", &fp(2), &c, LEASE_MS).await.unwrap(), InFlight);
    redis.idempotency_release(SCOPE, "k2", &b).await.unwrap();
    assert_eq!(
        redis.idempotency_begin(SCOPE, "k2", &fp(1), &c, LEASE_MS).await.unwrap(),
        Started,
        "released by its owner"
    );
}

#[tokio::test]
async fn idempotency_lease_and_ttl_run_out_on_redis_clock() {
    use IdempotencyBegin::*;
    let Some(server) = start_redis() else { return };
    let redis = Redis::connect(&server.url()).await.unwrap();
    // A 50 ms lease: the owner "crashed" without completing, and the record is taken over once
    // Redis expired it. Polled (bounded) rather than slept past, as Redis expires keys lazily or
    // on its own timer.
    assert_eq!(redis.idempotency_begin(SCOPE, "k", &fp(1), &owner(1), 50).await.unwrap(), Started);
    assert_eq!(redis.idempotency_begin(SCOPE, "k", &fp(2), &owner(2), 50).await.unwrap(), Mismatch);
    let took_over = poll_until_started(&redis, "k", &fp(2), &owner(2)).await;
    assert!(took_over >= Duration::from_millis(40), "taken over after only {took_over:?}");
    // A completed record with a 50 ms TTL is taken over after that.
    assert!(redis.idempotency_complete(SCOPE, "k", &owner(2), b"r", 50).await.unwrap());
    assert_eq!(
        redis.idempotency_begin(SCOPE, "k", &fp(2), &owner(3), LEASE_MS).await.unwrap(),
        Completed(b"r".to_vec())
    );
    poll_until_started(&redis, "k", &fp(3), &owner(3)).await;
}

/// Calls begin (as `owner`) every 10 ms, for at most 5 s, until it returns `Started`; returns how
/// long it took.
async fn poll_until_started(redis: &Redis, key: &str, fingerprint: &str, owner: &str) -> Duration {
    let start = Instant::now();
    for _ in 0..500 {
        if redis.idempotency_begin(SCOPE, key, fingerprint, owner, LEASE_MS).await.unwrap()
            == IdempotencyBegin::Started
        {
            return start.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the record never expired");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_of_twenty_concurrent_begins_starts() {
    let Some(server) = start_redis() else { return };
    let redis = Redis::connect(&server.url()).await.unwrap();
    // Ten with each of two fingerprints, on separate tasks sharing the multiplexed connection,
    // plus one on a connection of its own (another "node").
    let node_b = Redis::connect(&server.url()).await.unwrap();
    let tasks: Vec<_> = (0..20u32)
        .map(|i| {
            let redis = if i == 0 { node_b.clone() } else { redis.clone() };
            tokio::spawn(async move {
                let fingerprint = fp(i % 2);
                let owner = new_idempotency_owner();
                let begun = redis.idempotency_begin(SCOPE, "race", &fingerprint, &owner, LEASE_MS).await;
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
    let winner_fp = winners[0].0.clone();
    for (fingerprint, result) in &results {
        match result {
            IdempotencyBegin::Started => {}
            IdempotencyBegin::InFlight => assert_eq!(fingerprint, &winner_fp, "{results:?}"),
            IdempotencyBegin::Mismatch => assert_ne!(fingerprint, &winner_fp, "{results:?}"),
            IdempotencyBegin::Completed(_) => panic!("{results:?}"),
        }
    }
}

#[tokio::test]
async fn fails_fast_while_redis_is_down_and_recovers_after_restart() {
    let Some(mut server) = start_redis() else { return };
    let redis = Redis::connect(&server.url()).await.unwrap();
    assert!(redis.rate_limit("k", 1_000, 10).await.unwrap().allowed);

    server.kill();
    for call in 0..3 {
        let start = Instant::now();
        let err = redis.rate_limit("k", 1_000, 10).await.unwrap_err();
        let elapsed = start.elapsed();
        assert!(matches!(err, StateError::Redis { op: "rate_limit", .. }), "call {call}: {err:?}");
        assert!(elapsed < Duration::from_secs(3), "call {call} took {elapsed:?}");
        let start = Instant::now();
        let err = redis.idempotency_begin(SCOPE, "k", &fp(1), &owner(1), LEASE_MS).await.unwrap_err();
        assert!(matches!(err, StateError::Redis { op: "idempotency_begin", .. }), "{err:?}");
        assert!(start.elapsed() < Duration::from_secs(3), "call {call} took {:?}", start.elapsed());
    }

    // Once Redis is back (empty: it persists nothing, and its script cache is gone too), the
    // connection manager reconnects in the background; a few calls may still fail meanwhile.
    server.restart().unwrap();
    let mut recovered = None;
    for attempt in 0..100 {
        match redis.rate_limit("k", 1_000, 10).await {
            Ok(d) => {
                recovered = Some((attempt, d));
                break;
            }
            Err(e) => assert!(matches!(e, StateError::Redis { .. }), "{e:?}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (attempts, d) = recovered.expect("no call succeeded within 100 attempts after the restart");
    assert!(d.allowed && d.remaining == 9, "a fresh bucket after {attempts} failed attempts: {d:?}");
    assert_eq!(
        redis.idempotency_begin(SCOPE, "k", &fp(1), &owner(1), LEASE_MS).await.unwrap(),
        IdempotencyBegin::Started
    );
}

#[tokio::test]
async fn connect_fails_fast_and_errors_never_show_the_password() {
    let Some(mut server) = start_redis() else { return };
    const PASSWORD: &str = "s3cret-Pa55";

    // A running Redis without a password refuses AUTH.
    let url = format!("redis://app:{PASSWORD}@127.0.0.1:{}/0", server.port());
    let err = Redis::connect(&url).await.unwrap_err();
    assert!(matches!(err, StateError::RedisConnect { .. }), "{err:?}");
    assert_no_password(&err, PASSWORD);

    // Nothing listening: refused at once.
    let port = server.port();
    server.kill();
    let url = format!("redis://:{PASSWORD}@127.0.0.1:{port}");
    let start = Instant::now();
    let err = Redis::connect(&url).await.unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(3), "took {:?}", start.elapsed());
    assert!(matches!(err, StateError::RedisConnect { .. }), "{err:?}");
    assert!(err.to_string().contains(&format!("redis://:***@127.0.0.1:{port}")), "{err}");
    assert_no_password(&err, PASSWORD);

    // URLs this module does not take.
    for url in [
        format!("rediss://:{PASSWORD}@127.0.0.1:{port}"),
        format!("redis+unix:///run/redis.sock?pass={PASSWORD}"),
        format!("postgres://u:{PASSWORD}@127.0.0.1/db"),
        format!("redis://:{PASSWORD}@127.0.0.1:{port}/not-a-db"),
        format!("redis://:{PASSWORD}@"),
    ] {
        let err = Redis::connect(&url).await.unwrap_err();
        assert!(matches!(err, StateError::RedisInvalidUrl { .. }), "{url}: {err:?}");
        assert_no_password(&err, PASSWORD);
    }
}

/// Neither `Display` nor `Debug` of `err` shows `password`.
fn assert_no_password(err: &StateError, password: &str) {
    for text in [err.to_string(), format!("{err:?}")] {
        assert!(!text.contains(password), "password in {text}");
    }
}
