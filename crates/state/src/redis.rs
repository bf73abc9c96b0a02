//! [`Redis`]: state that gateway nodes share through Redis rather than the SQL store, because it
//! changes on every request: rate-limit buckets and idempotency records.
//!
//! Every operation is one Lua script (`EVALSHA`, loaded again by `redis::Script` after a Redis
//! restart flushed its script cache), so it is atomic on the server whatever the number of nodes
//! and concurrent callers. Keys: `bridgehead:rl:{key}` (a string, the bucket's TAT) and
//! `bridgehead:idem:{scope}:{key}` (a hash: `fp` the fingerprint, `owner` the owner token of the
//! begin that created it, `done` `0` in flight or `1` completed, `resp` the response once
//! completed; complete and release act only when `owner` is theirs, so a request that outlived
//! its lease cannot touch the record of the one that took over). Scope and key are concatenated
//! as given; the gateway guarantees they contain no newline.
//!
//! ## Design constraints
//!
//! - **Fail fast, recover by itself.** Connecting gives up after [`REDIS_CONNECT_TIMEOUT`] and a
//!   command after [`REDIS_RESPONSE_TIMEOUT`], and a lost connection is re-established in one
//!   attempt, not a retry loop: while Redis is down every call fails at once (at most a connect
//!   timeout plus a response timeout later) with [`StateError::Redis`], so the gateway can apply
//!   its policy (fail open or closed) instead of stalling requests. Each failure on a lost
//!   connection starts a new attempt in the background (redis-rs' `ConnectionManager`), so calls
//!   succeed again shortly after Redis is back. A failed call has either run entirely on the
//!   server or not at all (scripts are atomic), but the caller cannot tell which.
//! - **Redis' clock, not the nodes'.** The rate limiter reads `TIME` inside its script, so nodes'
//!   clocks do not matter. Idempotency leases and TTLs are Redis key expiries (`PEXPIRE`), also
//!   on Redis' clock.
//! - **What survives.** Whatever Redis is configured to persist; the gateway assumes nothing: a
//!   Redis that lost its data forgets buckets (clients briefly get a full burst) and idempotency
//!   records (a retry may run the request again).
//! - **Secrets.** The URL's password never appears in an error or log line: errors carry the
//!   URL redacted ([`crate::redact_url`]) and driver messages scrubbed; [`Redis`]'s `Debug` shows
//!   only the redacted URL.
//!
//! ## GCRA
//!
//! The rate limiter is the generic cell rate algorithm, the arithmetic of the gateway's
//! in-process limiter, so the two agree: capacity `burst` requests, one more every `interval_us`.
//! The key holds the theoretical arrival time (TAT, µs since the epoch). With `now` from Redis'
//! `TIME`, `tat = max(stored or now, now)`, `new_tat = tat + interval` and
//! `limit = burst * interval`, a request is refused when `new_tat - now > limit` (then
//! `reset_us = tat - now`, `retry_after_us = new_tat - limit - now`), else admitted: the key is
//! set to `new_tat`, expiring once the bucket is full again, `remaining =
//! floor((limit - (new_tat - now)) / interval)` and `reset_us = new_tat - now`. Lua numbers are
//! doubles, exact for integers below 2^53 (µs since the epoch are about 2^51), so
//! `burst * interval_us` is limited to [`RATE_LIMIT_MAX_WINDOW_US`]. Written here rather than
//! taken from a crate: the limiter crates keep their state in process memory, and this must run
//! inside Redis.
//!
//! [`Redis::rate_limit_all`] applies the same arithmetic to up to [`RATE_LIMIT_MAX_BUCKETS`]
//! buckets in one script, with one `now`: it first computes every bucket's decision, then charges
//! (sets `new_tat`, as above) all of them only if all admit, and none otherwise. A route's several
//! policies (say 100/s with burst 200 and 10000/h) are thus all-or-nothing: a request one policy
//! refuses does not use up another's capacity.

use std::fmt;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::StateError;
use crate::idempotency::IdempotencyBegin;
use crate::redact::{Secrets, redact_url};

/// How long [`Redis::connect`], and each reconnection, waits for Redis to accept a connection.
pub const REDIS_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// How long a command waits for Redis' answer.
pub const REDIS_RESPONSE_TIMEOUT: Duration = Duration::from_millis(500);

/// The largest `burst * interval_us` [`Redis::rate_limit`] accepts: about 25 days, which keeps
/// every value the script computes well below 2^53, where Lua's doubles stop being exact.
pub const RATE_LIMIT_MAX_WINDOW_US: u64 = 1 << 41;

/// GCRA; see the module docs. KEYS[1] = bucket, ARGV = interval_us, burst. Returns
/// `{allowed, remaining, reset_us, retry_after_us}`.
static RATE_LIMIT: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
-- Redis < 5 refuses writes after TIME unless effects are replicated; later versions always do.
if redis.replicate_commands then redis.replicate_commands() end
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
local limit = burst * interval
if new_tat - now > limit then
  return {0, 0, tat - now, math.max(new_tat - limit - now, 1)}
end
-- '%.0f' writes every digit; tostring would round to 14 significant ones.
redis.call('SET', KEYS[1], string.format('%.0f', new_tat),
  'PX', math.ceil((new_tat - now) / 1000) + 1)
return {1, math.floor((limit - (new_tat - now)) / interval), new_tat - now, 0}
",
    )
});

/// The most buckets one [`Redis::rate_limit_all`] call checks.
pub const RATE_LIMIT_MAX_BUCKETS: usize = 16;

/// GCRA over several buckets, all or nothing; see the module docs and [`Redis::rate_limit_all`].
/// KEYS = the buckets (distinct), ARGV = interval_us, burst of each bucket in turn. Returns
/// `{allowed, remaining, reset_us, retry_after_us}` of each bucket in turn, flattened.
static RATE_LIMIT_ALL: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
-- Check every bucket before charging any.
local tats = {}
local all_admit = true
for i = 1, #KEYS do
  local interval = tonumber(ARGV[2 * i - 1])
  local burst = tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', KEYS[i]) or now)
  if tat < now then tat = now end
  tats[i] = tat
  if tat + interval - now > burst * interval then all_admit = false end
end
local out = {}
for i = 1, #KEYS do
  local interval = tonumber(ARGV[2 * i - 1])
  local limit = tonumber(ARGV[2 * i]) * interval
  local tat = tats[i]
  local new_tat = tat + interval
  local n = #out
  if new_tat - now > limit then
    out[n + 1], out[n + 2], out[n + 3], out[n + 4] = 0, 0, tat - now, math.max(new_tat - limit - now, 1)
  else
    local reset = tat - now
    if all_admit then
      redis.call('SET', KEYS[i], string.format('%.0f', new_tat),
        'PX', math.ceil((new_tat - now) / 1000) + 1)
      reset = new_tat - now
    end
    out[n + 1], out[n + 2], out[n + 3], out[n + 4] =
      1, math.floor((limit - (new_tat - now)) / interval), reset, 0
  end
end
return out
",
    )
});

/// KEYS[1] = record, ARGV = fingerprint, owner, lease_ms. Returns `{'started'}`,
/// `{'mismatch'}`, `{'in_flight'}` or `{'completed', response}`.
static IDEM_BEGIN: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local fp = redis.call('HGET', KEYS[1], 'fp')
if not fp then
  redis.call('HSET', KEYS[1], 'fp', ARGV[1], 'owner', ARGV[2], 'done', '0')
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return {'started'}
end
if fp ~= ARGV[1] then return {'mismatch'} end
if redis.call('HGET', KEYS[1], 'done') == '1' then
  return {'completed', redis.call('HGET', KEYS[1], 'resp') or ''}
end
return {'in_flight'}
",
    )
});

/// KEYS[1] = record, ARGV = owner, response, ttl_ms. Returns 1 if stored, else 0.
static IDEM_COMPLETE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] or redis.call('HGET', KEYS[1], 'done') ~= '0' then
  return 0
end
redis.call('HSET', KEYS[1], 'done', '1', 'resp', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
",
    )
});

/// KEYS[1] = record, ARGV = owner. Deletes the record if it is this owner's and in flight;
/// returns 1 if deleted, else 0.
static IDEM_RELEASE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
if redis.call('HGET', KEYS[1], 'owner') == ARGV[1] and redis.call('HGET', KEYS[1], 'done') == '0' then
  return redis.call('DEL', KEYS[1])
end
return 0
",
    )
});

/// The outcome of one [`Redis::rate_limit`] check, or of one bucket of a
/// [`Redis::rate_limit_all`] check (where `allowed` says whether that bucket admits, and the
/// request is admitted only if all do; see there for an admitting bucket's figures when another
/// refused).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateDecision {
    /// Whether the request is admitted.
    pub allowed: bool,
    /// Requests that could still be admitted right now after this one.
    pub remaining: u64,
    /// Microseconds until the bucket is full again (all `burst` available).
    pub reset_us: u64,
    /// When refused: microseconds until one request would be admitted; 0 when allowed.
    pub retry_after_us: u64,
}

/// A connection to the Redis that gateway nodes share; see the module docs. Cloning is cheap
/// (the connection is multiplexed and reference-counted), so every subsystem keeps its own clone.
#[derive(Clone)]
pub struct Redis {
    conn: ConnectionManager,
    /// The URL with its password replaced, for messages.
    redacted_url: Arc<str>,
    /// The URL's password, to scrub from driver messages.
    secrets: Arc<Secrets>,
}

impl Redis {
    /// Connects to the Redis at `url`, `redis://[[user]:password@]host[:port][/db]` (no TLS, no
    /// unix socket). Fails with [`StateError::RedisInvalidUrl`] for another URL and with
    /// [`StateError::RedisConnect`] when Redis does not accept the connection within
    /// [`REDIS_CONNECT_TIMEOUT`] (or refuses it, or the password); both name the redacted URL. Once
    /// connected, a lost connection is re-established in the background (see the module docs).
    pub async fn connect(url: &str) -> Result<Redis, StateError> {
        let redacted = redact_url(url);
        let secrets = Secrets::of(url);
        let invalid = |reason: String| StateError::RedisInvalidUrl { url: redacted.clone(), reason };
        if !url.starts_with("redis://") {
            return Err(invalid(
                "it must start with redis:// (rediss://, TLS, and unix sockets are not supported)".to_owned(),
            ));
        }
        let client = redis::Client::open(url).map_err(|e| invalid(secrets.scrub(&e.to_string())))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(REDIS_CONNECT_TIMEOUT))
            .set_response_timeout(Some(REDIS_RESPONSE_TIMEOUT))
            // One connection attempt per reconnection: while Redis is down, calls fail at once
            // rather than wait out a backoff loop; the next call starts a new attempt.
            .set_number_of_retries(0);
        let conn = ConnectionManager::new_with_config(client, config).await.map_err(|e| {
            StateError::RedisConnect { url: redacted.clone(), reason: secrets.scrub(&e.to_string()) }
        })?;
        tracing::info!(url = %redacted, "redis connected");
        Ok(Redis { conn, redacted_url: redacted.into(), secrets: Arc::new(secrets) })
    }

    /// The URL with any password replaced by `***`.
    pub fn redacted_url(&self) -> String {
        self.redacted_url.to_string()
    }

    /// Checks one request against the GCRA bucket `key` (capacity `burst`, one more request
    /// every `interval_us` microseconds), on Redis' clock, and counts it if admitted; see the
    /// module docs for the arithmetic. Fails with [`StateError::InvalidInput`] when `burst` or
    /// `interval_us` is 0 or `burst * interval_us` exceeds [`RATE_LIMIT_MAX_WINDOW_US`].
    pub async fn rate_limit(
        &self,
        key: &str,
        interval_us: u64,
        burst: u64,
    ) -> Result<RateDecision, StateError> {
        const OP: &str = "rate_limit";
        check_bucket(interval_us, burst).map_err(|reason| StateError::InvalidInput { op: OP, reason })?;
        let reply: Vec<i64> =
            self.invoke(OP, RATE_LIMIT.key(rate_limit_key(key)).arg(interval_us).arg(burst)).await?;
        match reply[..] {
            [allowed, remaining, reset_us, retry_after_us] => {
                Ok(decision(allowed, remaining, reset_us, retry_after_us))
            }
            _ => Err(self.unexpected(OP, &reply)),
        }
    }

    /// Checks one request against several GCRA buckets at once, `(key, interval_us, burst)`
    /// each (a route's several rate-limit policies), in one atomic script on Redis' clock with
    /// one `now`: every bucket is checked first, and only if every one admits is every one
    /// charged (its TAT advanced, exactly as [`Redis::rate_limit`] does). The request is admitted
    /// iff every decision has `allowed`. Decisions come back in input order:
    ///
    /// - **All admit:** each decision is exactly what [`Redis::rate_limit`] would have returned
    ///   for that bucket at that instant, and each bucket is charged. With one bucket, this
    ///   method behaves exactly like [`Redis::rate_limit`] (same key, arithmetic and expiry).
    /// - **Some refuse:** no bucket is charged (nothing is written). A refusing bucket reports
    ///   what [`Redis::rate_limit`] would have: `allowed: false`, `remaining: 0`,
    ///   `reset_us = tat - now`, `retry_after_us = new_tat - limit - now` (at least 1). A bucket
    ///   that would have admitted reports `allowed: true`, `retry_after_us: 0`, `remaining` as
    ///   [`Redis::rate_limit`] would have had it admitted, `floor((limit - (new_tat - now)) /
    ///   interval)` (the requests it could still take after one more), and `reset_us = tat - now`
    ///   (its current state, not advanced).
    ///
    /// (`tat`, `new_tat`, `limit`: see the module docs.) Fails with
    /// [`StateError::InvalidInput`] before touching Redis when `buckets` is empty, holds more
    /// than [`RATE_LIMIT_MAX_BUCKETS`], names a key twice, or any bucket has parameters
    /// [`Redis::rate_limit`] refuses.
    pub async fn rate_limit_all(
        &self,
        buckets: &[(&str, u64, u64)],
    ) -> Result<Vec<RateDecision>, StateError> {
        const OP: &str = "rate_limit_all";
        let invalid = |reason: String| StateError::InvalidInput { op: OP, reason };
        if buckets.is_empty() || buckets.len() > RATE_LIMIT_MAX_BUCKETS {
            return Err(invalid(format!(
                "need 1 to {RATE_LIMIT_MAX_BUCKETS} buckets, got {}",
                buckets.len()
            )));
        }
        let mut invocation = RATE_LIMIT_ALL.prepare_invoke();
        for (i, &(key, interval_us, burst)) in buckets.iter().enumerate() {
            check_bucket(interval_us, burst).map_err(|reason| invalid(format!("bucket {i}: {reason}")))?;
            // A key twice would be checked against one TAT and charged once: refuse it.
            if buckets[..i].iter().any(|&(earlier, _, _)| earlier == key) {
                return Err(invalid(format!("bucket {i}: key {key:?} appears more than once")));
            }
            invocation.key(rate_limit_key(key)).arg(interval_us).arg(burst);
        }
        let reply: Vec<i64> = self.invoke(OP, &invocation).await?;
        if reply.len() != 4 * buckets.len() {
            return Err(self.unexpected(OP, &reply));
        }
        Ok(reply.chunks_exact(4).map(|d| decision(d[0], d[1], d[2], d[3])).collect())
    }

    /// Begins the request with `key` in `scope`: when Redis holds no record for it (never, or
    /// its lease or TTL ran out), creates one in flight for `owner` (a fresh
    /// [`crate::new_idempotency_owner`] per request) that expires after `lease_ms` unless
    /// completed, and returns [`IdempotencyBegin::Started`]; otherwise reports what is there
    /// (`Mismatch` takes precedence over `InFlight`). Of any number of concurrent callers on any
    /// node, exactly one gets `Started`. Fails with [`StateError::InvalidInput`] when `lease_ms`
    /// is 0 or `owner` is empty.
    pub async fn idempotency_begin(
        &self,
        scope: &str,
        key: &str,
        fingerprint: &str,
        owner: &str,
        lease_ms: u64,
    ) -> Result<IdempotencyBegin, StateError> {
        const OP: &str = "idempotency_begin";
        positive(OP, "lease_ms", lease_ms)?;
        if owner.is_empty() {
            return Err(StateError::InvalidInput { op: OP, reason: "owner must not be empty".to_owned() });
        }
        let reply: Vec<Vec<u8>> = self
            .invoke(OP, IDEM_BEGIN.key(idem_key(scope, key)).arg(fingerprint).arg(owner).arg(lease_ms))
            .await?;
        match &reply[..] {
            [tag] if tag == b"started" => Ok(IdempotencyBegin::Started),
            [tag] if tag == b"in_flight" => Ok(IdempotencyBegin::InFlight),
            [tag] if tag == b"mismatch" => Ok(IdempotencyBegin::Mismatch),
            [tag, response] if tag == b"completed" => Ok(IdempotencyBegin::Completed(response.clone())),
            _ => {
                Err(self
                    .unexpected(OP, &reply.iter().map(|v| String::from_utf8_lossy(v)).collect::<Vec<_>>()))
            }
        }
    }

    /// Stores `response` for the caller's in-flight record (the one its begin with `owner`
    /// created) and keeps it for `ttl_ms` from now. `false` when the record is no longer the
    /// caller's in-flight one (already completed, or gone or taken over by another begin because
    /// its lease ran out): the response was not stored. Fails with [`StateError::InvalidInput`]
    /// when `ttl_ms` is 0.
    pub async fn idempotency_complete(
        &self,
        scope: &str,
        key: &str,
        owner: &str,
        response: &[u8],
        ttl_ms: u64,
    ) -> Result<bool, StateError> {
        const OP: &str = "idempotency_complete";
        positive(OP, "ttl_ms", ttl_ms)?;
        let stored: i64 = self
            .invoke(OP, IDEM_COMPLETE.key(idem_key(scope, key)).arg(owner).arg(response).arg(ttl_ms))
            .await?;
        Ok(stored == 1)
    }

    /// Deletes the caller's in-flight record (the one its begin with `owner` created; its request
    /// failed in a way that must not be replayed), so the key can be used again. Does nothing
    /// when the record is completed, was taken over by another begin, or is gone.
    pub async fn idempotency_release(&self, scope: &str, key: &str, owner: &str) -> Result<(), StateError> {
        const OP: &str = "idempotency_release";
        let _deleted: i64 = self.invoke(OP, IDEM_RELEASE.key(idem_key(scope, key)).arg(owner)).await?;
        Ok(())
    }

    /// Runs a script invocation on the shared connection, mapping errors to [`StateError::Redis`].
    async fn invoke<T: redis::FromRedisValue>(
        &self,
        op: &'static str,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T, StateError> {
        let mut conn = self.conn.clone();
        invocation.invoke_async(&mut conn).await.map_err(|e| StateError::Redis {
            op,
            url: self.redacted_url(),
            reason: self.secrets.scrub(&e.to_string()),
        })
    }

    fn unexpected(&self, op: &'static str, reply: &dyn fmt::Debug) -> StateError {
        StateError::Redis { op, url: self.redacted_url(), reason: format!("unexpected reply {reply:?}") }
    }
}

impl fmt::Debug for Redis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redis").field("url", &self.redacted_url).finish_non_exhaustive()
    }
}

/// The string holding the TAT of rate-limit bucket `key`.
fn rate_limit_key(key: &str) -> String {
    format!("bridgehead:rl:{key}")
}

/// Why `(interval_us, burst)` is not a bucket the rate limiter takes, if it is not.
fn check_bucket(interval_us: u64, burst: u64) -> Result<(), String> {
    if interval_us == 0
        || burst == 0
        || burst.checked_mul(interval_us).is_none_or(|w| w > RATE_LIMIT_MAX_WINDOW_US)
    {
        return Err(format!(
            "need interval_us > 0, burst > 0 and burst * interval_us <= {RATE_LIMIT_MAX_WINDOW_US}, \
             got interval_us {interval_us}, burst {burst}"
        ));
    }
    Ok(())
}

/// A rate-limit script's `{allowed, remaining, reset_us, retry_after_us}`.
fn decision(allowed: i64, remaining: i64, reset_us: i64, retry_after_us: i64) -> RateDecision {
    let non_negative = |n: i64| u64::try_from(n).unwrap_or(0);
    RateDecision {
        allowed: allowed == 1,
        remaining: non_negative(remaining),
        reset_us: non_negative(reset_us),
        retry_after_us: non_negative(retry_after_us),
    }
}

/// The hash holding the idempotency record of `key` in `scope`.
fn idem_key(scope: &str, key: &str) -> String {
    format!("bridgehead:idem:{scope}:{key}")
}

fn positive(op: &'static str, what: &str, value: u64) -> Result<(), StateError> {
    if value == 0 {
        return Err(StateError::InvalidInput { op, reason: format!("{what} must be positive") });
    }
    Ok(())
}
