//! The network steps: the name resolved to addresses, then a TCP connection to each, with how
//! each attempt ended (connected, refused, timed out, unreachable).

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::net::TcpStream;

/// The addresses a name resolved to.
#[derive(Debug, Clone, Serialize)]
pub struct Resolved {
    pub addresses: Vec<IpAddr>,
    pub ms: f64,
}

/// Resolves `host` with the system's resolver (`/etc/hosts`, then DNS), within `timeout`. An
/// IP address resolves to itself.
pub async fn resolve(host: &str, port: u16, timeout: Duration) -> Result<Resolved, String> {
    let started = Instant::now();
    if let Ok(ip) = host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
        return Ok(Resolved { addresses: vec![ip], ms: 0.0 });
    }
    let found = tokio::time::timeout(timeout, tokio::net::lookup_host((host, port)))
        .await
        .map_err(|_| format!("no answer for `{host}` within {}", humantime(timeout)))?
        .map_err(|e| format!("`{host}` does not resolve: {e}"))?;
    let mut addresses: Vec<IpAddr> = Vec::new();
    for a in found {
        if !addresses.contains(&a.ip()) {
            addresses.push(a.ip());
        }
    }
    if addresses.is_empty() {
        return Err(format!("`{host}` resolves to no address"));
    }
    Ok(Resolved { addresses, ms: ms(started) })
}

/// How a connection attempt ended.
#[derive(Debug, Clone, Serialize)]
pub struct Connect {
    pub address: SocketAddr,
    /// `connected`, `refused` (nothing listens, or a firewall rejects), `timeout` (a firewall
    /// drops, or the host is down), `unreachable` (no route), or `failed`.
    pub outcome: &'static str,
    pub ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Connects to `address` within `timeout`.
pub async fn connect(address: SocketAddr, timeout: Duration) -> (Connect, Option<TcpStream>) {
    let started = Instant::now();
    let (outcome, error, stream) = match tokio::time::timeout(timeout, TcpStream::connect(address)).await {
        Ok(Ok(s)) => {
            let _ = s.set_nodelay(true);
            ("connected", None, Some(s))
        }
        Ok(Err(e)) => {
            let outcome = match e.kind() {
                std::io::ErrorKind::ConnectionRefused => "refused",
                std::io::ErrorKind::HostUnreachable | std::io::ErrorKind::NetworkUnreachable => "unreachable",
                std::io::ErrorKind::TimedOut => "timeout",
                _ => "failed",
            };
            (outcome, Some(e.to_string()), None)
        }
        Err(_) => ("timeout", Some(format!("no answer within {}", humantime(timeout))), None),
    };
    (Connect { address, outcome, ms: ms(started), error }, stream)
}

pub(crate) fn ms(since: Instant) -> f64 {
    (since.elapsed().as_secs_f64() * 1e4).round() / 10.0
}

pub(crate) fn humantime(d: Duration) -> String {
    if d.subsec_millis() == 0 { format!("{}s", d.as_secs()) } else { format!("{}ms", d.as_millis()) }
}
