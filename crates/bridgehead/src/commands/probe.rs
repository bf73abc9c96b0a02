//! `bridgehead probe URL`: what an unknown endpoint is and how to talk to it (see
//! `bridgehead_probe`). Progress goes to stderr, the report to stdout; exit 0 when the endpoint
//! answered, 1 when a step failed (the report names it).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::bail;

#[derive(clap::Args)]
pub struct ProbeArgs {
    /// The endpoint (`http://` or `https://`).
    url: String,
    /// `text` (default) or `json`.
    #[arg(long, default_value = "text")]
    output: super::Output,
    /// The bound of each step (DNS, TCP, TLS, the request).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Trust this CA bundle (PEM) instead of the system roots.
    #[arg(long)]
    cacert: Option<PathBuf>,
    /// A client certificate chain (PEM) to offer when the server asks (with --key).
    #[arg(long, requires = "key")]
    cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,
    /// Send this `Origin` with the GET, to see the server's CORS answer.
    #[arg(long)]
    origin: Option<String>,
    /// Also POST `{}` as JSON to the URL, to read what the endpoint says of it (a 415 names
    /// what it takes). Every other probe is read-only; this one may not be.
    #[arg(long)]
    post: bool,
    /// A bearer token: its claims are decoded and checked (exp, nbf, iss, aud), and it is
    /// tried on the URL (never over a TLS connection whose chain did not verify). Never shown.
    #[arg(long, env = "BRIDGEHEAD_PROBE_BEARER", hide_env_values = true)]
    bearer: Option<String>,
    /// Time this many GETs of the URL (over one kept-alive connection) and report p50/p99.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    samples: u32,
    /// Resolve the name with this DNS server (`IP` or `IP:PORT`; repeat for more, asked in
    /// order) instead of the system's resolver.
    #[arg(long = "dns-server", value_parser = parse_dns_server)]
    dns_servers: Vec<std::net::SocketAddr>,
}

fn parse_dns_server(s: &str) -> Result<std::net::SocketAddr, String> {
    s.parse::<std::net::SocketAddr>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(|ip| std::net::SocketAddr::new(ip, 53)))
        .map_err(|_| format!("`{s}` is not an IP address or IP:PORT"))
}

pub fn run(args: ProbeArgs) -> anyhow::Result<ExitCode> {
    if args.timeout.is_zero() {
        bail!("--timeout must be more than 0");
    }
    let opts = bridgehead_probe::Options {
        timeout: args.timeout,
        tls: bridgehead_probe::tls::TlsOptions { cacert: args.cacert, client: args.cert.zip(args.key) },
        origin: args.origin,
        post: args.post,
        bearer: args.bearer,
        samples: args.samples as usize,
        dns_servers: args.dns_servers,
    };
    let rt = super::runtime(Some(1))?;
    let report =
        rt.block_on(bridgehead_probe::probe(&args.url, &opts, &mut |step| eprintln!("probe: {step}")));
    // A name lookup that timed out may still hold a thread in the system resolver: not waited for.
    rt.shutdown_background();
    match args.output {
        super::Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        super::Output::Text => print!("{}", bridgehead_probe::render(&report)),
    }
    Ok(if report.failed.is_some() { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}
