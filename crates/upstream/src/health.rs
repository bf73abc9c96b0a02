//! Active health checks: a GET to every target of an upstream at its `health_check.interval`.
//!
//! A checker task holds only a weak reference to its upstream, so it stops by itself once a
//! reload has replaced that upstream and the last in-flight request on it has finished.

use std::sync::Weak;
use std::sync::atomic::Ordering::Relaxed;

use http::{Request, Uri};

use super::{Target, Upstream};
use bridgehead_http::body::RequestBody;

/// Starts the checker for `upstream` if it has a `health_check`.
pub fn spawn(upstream: &std::sync::Arc<Upstream>) {
    let Some(hc) = upstream.health_check.clone() else {
        return;
    };
    let weak: Weak<Upstream> = std::sync::Arc::downgrade(upstream);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(hc.interval.get());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(up) = weak.upgrade() else { break };
            let checks = up.targets.iter().map(|t| check(&up, t, &hc.path, hc.timeout.get()));
            let results = futures_util::future::join_all(checks).await;
            for (t, ok) in up.targets.iter().zip(results) {
                apply(&up, t, ok, hc.healthy_after, hc.unhealthy_after);
            }
        }
    });
}

async fn check(up: &Upstream, t: &Target, path: &str, timeout: std::time::Duration) -> bool {
    let Ok(uri) =
        Uri::builder().scheme(t.scheme.clone()).authority(t.authority.clone()).path_and_query(path).build()
    else {
        return false;
    };
    let Ok(req) = Request::get(uri).header("user-agent", "bridgehead-health-check").body(RequestBody::Empty)
    else {
        return false;
    };
    match tokio::time::timeout(timeout, up.transport.request(t, req)).await {
        Ok(Ok(res)) => {
            let s = res.status();
            s.is_success() || s.is_redirection()
        }
        _ => false,
    }
}

/// Applies one check result with hysteresis.
pub(crate) fn apply(up: &Upstream, t: &Target, ok: bool, healthy_after: u32, unhealthy_after: u32) {
    let s = &t.state;
    if ok {
        s.check_failures.store(0, Relaxed);
        let n = s.check_passes.fetch_add(1, Relaxed) + 1;
        if !s.healthy.load(Relaxed) && n >= healthy_after {
            s.healthy.store(true, Relaxed);
            tracing::info!(upstream = %up.name, target = %t.url, "target healthy again");
        }
    } else {
        s.check_passes.store(0, Relaxed);
        let n = s.check_failures.fetch_add(1, Relaxed) + 1;
        if s.healthy.load(Relaxed) && n >= unhealthy_after {
            s.healthy.store(false, Relaxed);
            tracing::warn!(upstream = %up.name, target = %t.url, failures = n, "target unhealthy");
        }
    }
}
