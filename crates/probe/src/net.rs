//! The network steps: the name resolved to addresses, then a TCP connection to each, with how
//! each attempt ended (connected, refused, timed out, unreachable).
//!
//! The addresses connected to are the system resolver's (`/etc/hosts`, then DNS), as any client
//! on the machine would get them; or, with `--dns-server`, those servers' answers. Besides,
//! each DNS server (of `/etc/resolv.conf`, or given) is asked in turn, as the system asks them,
//! with one resolver per server, because a resolver over several servers does not say which
//! answered: so the report tells which server answered, how long each took, and what the
//! answer was (the CNAME chain, the A and AAAA records with their TTLs).

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use hickory_resolver::config::{NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::rr::{RData, RecordType};
use serde::Serialize;
use tokio::net::TcpStream;

/// The addresses a name resolved to, and how.
#[derive(Debug, Clone, Serialize)]
pub struct Resolved {
    pub addresses: Vec<IpAddr>,
    pub ms: f64,
    /// `literal` (an IP address), `hosts` (`/etc/hosts`), `system` (the system resolver) or
    /// `dns` (the `--dns-server` given).
    pub source: &'static str,
    /// The names from the one asked to the one with addresses: `[www.x.com, edge.cdn.net]`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cname_chain: Vec<String>,
    /// The answer's records.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub records: Vec<DnsRecord>,
    /// Each DNS server asked, in order, until one answered.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<ServerAnswer>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answered_by: Option<SocketAddr>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DnsRecord {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub ttl: u32,
    pub value: String,
}

/// How one DNS server answered.
#[derive(Debug, Clone, Serialize)]
pub struct ServerAnswer {
    pub server: SocketAddr,
    /// `answered`, `nxdomain` (the name does not exist), `no records`, `timeout`, `refused`
    /// (the server said REFUSED or SERVFAIL) or `failed`.
    pub outcome: String,
    pub ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Resolves `host` within `timeout`: with the system's resolver, or with `dns_servers` when
/// given; and describes what the DNS servers say of it. An IP address resolves to itself.
pub async fn resolve(
    host: &str,
    port: u16,
    timeout: Duration,
    dns_servers: &[SocketAddr],
) -> Result<Resolved, String> {
    let started = Instant::now();
    if let Ok(ip) = host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
        return Ok(Resolved::bare(vec![ip], 0.0, "literal"));
    }
    let in_hosts = dns_servers.is_empty() && in_hosts_file(host);
    let servers: Vec<SocketAddr> = if !dns_servers.is_empty() {
        dns_servers.to_vec()
    } else if in_hosts {
        Vec::new()
    } else {
        system_servers()
    };
    // The system's answer and the servers' answers, at once.
    let system = async {
        if !dns_servers.is_empty() {
            return None;
        }
        Some(
            tokio::time::timeout(timeout, tokio::net::lookup_host((host, port)))
                .await
                .map_err(|_| format!("no answer for `{host}` within {}", humantime(timeout)))
                .and_then(|r| r.map_err(|e| format!("`{host}` does not resolve: {e}"))),
        )
    };
    let (system, dns) = tokio::join!(system, ask_servers(host, &servers, timeout));
    let ms = ms(started);
    let mut resolved = match system {
        None => {
            // --dns-server: the servers' addresses are the ones used.
            let addresses: Vec<IpAddr> = dns.records.iter().filter_map(|r| r.value.parse().ok()).collect();
            if addresses.is_empty() {
                return Err(dns.explain(format!("`{host}` does not resolve")));
            }
            Resolved::bare(addresses, ms, "dns")
        }
        Some(Ok(found)) => {
            let mut addresses: Vec<IpAddr> = Vec::new();
            for a in found {
                if !addresses.contains(&a.ip()) {
                    addresses.push(a.ip());
                }
            }
            Resolved::bare(addresses, ms, if in_hosts { "hosts" } else { "system" })
        }
        Some(Err(e)) => return Err(dns.explain(e)),
    };
    resolved.cname_chain = dns.chain;
    resolved.records = dns.records;
    resolved.answered_by = dns
        .servers
        .iter()
        .find(|s| matches!(s.outcome.as_str(), "answered" | "nxdomain" | "no records"))
        .map(|s| s.server);
    resolved.servers = dns.servers;
    if resolved.addresses.is_empty() {
        return Err(format!("`{host}` resolves to no address{}", resolved.by()));
    }
    Ok(resolved)
}

impl Resolved {
    fn bare(addresses: Vec<IpAddr>, ms: f64, source: &'static str) -> Resolved {
        Resolved {
            addresses,
            ms,
            source,
            cname_chain: Vec::new(),
            records: Vec::new(),
            servers: Vec::new(),
            answered_by: None,
        }
    }

    fn by(&self) -> String {
        self.answered_by.map(|s| format!(" (the answer of {s})")).unwrap_or_default()
    }
}

/// Whether `/etc/hosts` names `host` (the system then does not ask DNS).
fn in_hosts_file(host: &str) -> bool {
    let text = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    let host = host.trim_end_matches('.');
    host.eq_ignore_ascii_case("localhost")
        || text.lines().any(|l| {
            let l = l.split('#').next().unwrap_or("");
            l.split_whitespace().skip(1).any(|n| n.eq_ignore_ascii_case(host))
        })
}

/// The name servers of `/etc/resolv.conf`, in order (port 53).
fn system_servers() -> Vec<SocketAddr> {
    let Ok((config, _)) = hickory_resolver::system_conf::read_system_conf() else { return Vec::new() };
    let mut out: Vec<SocketAddr> = Vec::new();
    for ns in config.name_servers() {
        let port = ns.connections.first().map_or(53, |c| c.port);
        let a = SocketAddr::new(ns.ip, port);
        if !out.contains(&a) {
            out.push(a);
        }
    }
    out
}

/// What the DNS servers said.
#[derive(Default)]
struct Asked {
    chain: Vec<String>,
    records: Vec<DnsRecord>,
    servers: Vec<ServerAnswer>,
}

impl Asked {
    /// Why the system's lookup failed, with what DNS said.
    fn explain(&self, system: String) -> String {
        if self.servers.is_empty() {
            return system;
        }
        if self.servers.iter().all(|s| matches!(s.outcome.as_str(), "timeout" | "failed" | "refused")) {
            let each: Vec<String> =
                self.servers.iter().map(|s| format!("{} {}", s.server, s.outcome)).collect();
            return format!(
                "{system}; no DNS server answered ({}): is DNS reachable from here?",
                each.join(", ")
            );
        }
        match self.servers.iter().find(|s| s.outcome == "nxdomain") {
            Some(s) => format!("{system}; {} says the name does not exist (NXDOMAIN)", s.server),
            None => system,
        }
    }
}

/// Asks each server in turn for A and AAAA records, until one answers.
async fn ask_servers(host: &str, servers: &[SocketAddr], timeout: Duration) -> Asked {
    let mut asked = Asked::default();
    // A name with a dot is asked as is (rooted), as the system does with `ndots:1`.
    let name = if host.contains('.') && !host.ends_with('.') { format!("{host}.") } else { host.to_owned() };
    for &server in servers {
        let started = Instant::now();
        let resolver = {
            let mut ns = NameServerConfig::udp_and_tcp(server.ip());
            for c in &mut ns.connections {
                c.port = server.port();
            }
            let config = ResolverConfig::from_parts(None, Vec::new(), vec![ns]);
            let mut opts = ResolverOpts::default();
            opts.timeout = timeout;
            opts.attempts = 1;
            opts.cache_size = 0;
            opts.use_hosts_file = ResolveHosts::Never;
            let mut b =
                hickory_resolver::Resolver::builder_with_config(config, TokioRuntimeProvider::default());
            *b.options_mut() = opts;
            match b.build() {
                Ok(r) => r,
                Err(e) => {
                    asked.servers.push(ServerAnswer {
                        server,
                        outcome: "failed".into(),
                        ms: 0.0,
                        error: Some(e.to_string()),
                    });
                    continue;
                }
            }
        };
        let (a, aaaa) = tokio::join!(
            tokio::time::timeout(timeout, resolver.lookup(name.as_str(), RecordType::A)),
            tokio::time::timeout(timeout, resolver.lookup(name.as_str(), RecordType::AAAA)),
        );
        let ms = ms(started);
        let mut outcomes: Vec<(&'static str, Option<String>)> = Vec::new();
        for answer in [a, aaaa] {
            match answer {
                Ok(Ok(lookup)) => {
                    outcomes.push(("answered", None));
                    for r in lookup.answers() {
                        let value = match &r.data {
                            RData::A(a) => a.0.to_string(),
                            RData::AAAA(a) => a.0.to_string(),
                            RData::CNAME(c) => c.0.to_utf8().trim_end_matches('.').to_owned(),
                            _ => continue,
                        };
                        let rec = DnsRecord {
                            name: r.name.to_utf8().trim_end_matches('.').to_owned(),
                            kind: r.record_type().to_string(),
                            ttl: r.ttl,
                            value,
                        };
                        if !asked
                            .records
                            .iter()
                            .any(|x| x.name == rec.name && x.kind == rec.kind && x.value == rec.value)
                        {
                            asked.records.push(rec);
                        }
                    }
                }
                Ok(Err(e)) => outcomes.push(classify(&e)),
                Err(_) => {
                    outcomes.push(("timeout", Some(format!("no answer within {}", humantime(timeout)))));
                }
            }
        }
        // An answer for one type counts; the other's absence does not undo it.
        let rank = ["answered", "nxdomain", "no records", "refused", "timeout", "failed"];
        let outcome = rank.iter().find_map(|r| outcomes.iter().find(|o| o.0 == *r).cloned());
        let (outcome, error) = outcome.unwrap_or(("failed", None));
        asked.servers.push(ServerAnswer { server, outcome: outcome.into(), ms, error });
        // An answer about the name ends the asking, as the system resolver's does; a server
        // that times out, fails or refuses (REFUSED, SERVFAIL) passes to the next.
        if matches!(outcome, "answered" | "nxdomain" | "no records") {
            break;
        }
    }
    // The chain: from the name asked, each CNAME's target in turn.
    let mut current = name.trim_end_matches('.').to_owned();
    let mut chain = vec![current.clone()];
    while let Some(next) = asked
        .records
        .iter()
        .find(|r| r.kind == "CNAME" && r.name.eq_ignore_ascii_case(&current))
        .map(|r| r.value.clone())
    {
        if chain.iter().any(|c| c.eq_ignore_ascii_case(&next)) || chain.len() > 16 {
            break;
        }
        chain.push(next.clone());
        current = next;
    }
    if chain.len() > 1 {
        asked.chain = chain;
    }
    asked
}

/// What a failed lookup means: `(outcome, error)`.
fn classify(e: &NetError) -> (&'static str, Option<String>) {
    use hickory_resolver::proto::op::ResponseCode;
    match e {
        NetError::Dns(DnsError::NoRecordsFound(n)) if n.response_code == ResponseCode::NXDomain => {
            ("nxdomain", None)
        }
        NetError::Dns(DnsError::NoRecordsFound(_)) => ("no records", None),
        NetError::Dns(DnsError::ResponseCode(c)) => ("refused", Some(format!("the server said {c}"))),
        NetError::Timeout => ("timeout", Some(e.to_string())),
        _ => ("failed", Some(e.to_string())),
    }
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
