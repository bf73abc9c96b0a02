//! Command-line and library options of the mock.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use crate::faults::Faults;
use crate::fixed::FixedRoute;
use crate::ratelimit::RateLimit;

pub(crate) const DEFAULT_FAIL_STATUS: u16 = 503;
const DEFAULT_RECORD_LIMIT: usize = 1000;

/// Options of the mock upstream.
///
/// Derives [`clap::Args`] so the CLI can `#[command(flatten)]` it; [`Default`] gives the same
/// values as an empty command line. The fault flags build the server's first [`Faults`]
/// ([`MockOptions::faults`]); `PUT /__mock/faults` replaces them at run time.
#[derive(Debug, Clone, PartialEq, clap::Args)]
pub struct MockOptions {
    /// Port to listen on; 0 picks any free port (printed at start). Example: --port 9000
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub port: u16,

    /// Address to listen on. Example: --bind 0.0.0.0
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST), value_name = "IP")]
    pub bind: IpAddr,

    /// Delay added before every response (not /__mock/*). Example: --latency 200ms
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub latency: Option<Duration>,

    /// Probability, 0.0 to 1.0, that a request gets an injected failure. Example: --fail-rate 0.2
    #[arg(long, default_value_t = 0.0, value_parser = parse_fail_rate, value_name = "RATE")]
    pub fail_rate: f64,

    /// Status of injected failures (--fail-rate, --fail-first), 200 to 599. Example: --fail-status 429
    #[arg(
        long,
        default_value_t = DEFAULT_FAIL_STATUS,
        value_parser = clap::value_parser!(u16).range(200..=599),
        value_name = "STATUS"
    )]
    pub fail_status: u16,

    /// Adds `Retry-After: SECONDS` to injected failures. Example: --retry-after 2
    #[arg(long, value_name = "SECONDS")]
    pub retry_after: Option<u64>,

    /// The first N requests (not /__mock/*) get the injected failure, then normal service;
    /// deterministic, unlike --fail-rate. Example: --fail-first 3 --fail-status 503
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub fail_first: u64,

    /// The mock's own quota, N requests per fixed window of a second, minute or hour; over it,
    /// 429 with Retry-After. Every response carries X-RateLimit-* and RateLimit(-Policy)
    /// headers. Example: --rate-limit 5/s (or 100/m, 1000/h)
    #[arg(long, value_name = "N/s|N/m|N/h")]
    pub rate_limit: Option<RateLimit>,

    /// A fixed response for a path, repeatable; PATH may end in '*' for a prefix match.
    /// Example: --fixed /health=200 --fixed '/orders/*=404:{"error":"no such order"}'
    ///
    /// The body is sent as application/json when it parses as JSON, else as text/plain. An
    /// exact path wins over a prefix; among prefixes the longest wins; a later --fixed for the
    /// same path replaces an earlier one.
    #[arg(long, value_name = "PATH=STATUS[:BODY]")]
    pub fixed: Vec<FixedRoute>,

    /// How many received requests are kept for GET /__mock/requests; the oldest are dropped.
    /// Example: --record-limit 10000
    #[arg(long, default_value_t = DEFAULT_RECORD_LIMIT, value_name = "N")]
    pub record_limit: usize,

    /// Also serve a small SOAP 1.1 inventory service at /soap (its WSDL at GET /soap?wsdl):
    /// GetStock, ListLowStock, Reserve, with faults. Example: --soap
    #[arg(long)]
    pub soap: bool,
}

impl Default for MockOptions {
    fn default() -> Self {
        Self {
            port: 0,
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            latency: None,
            fail_rate: 0.0,
            fail_status: DEFAULT_FAIL_STATUS,
            retry_after: None,
            fail_first: 0,
            rate_limit: None,
            fixed: Vec::new(),
            record_limit: DEFAULT_RECORD_LIMIT,
            soap: false,
        }
    }
}

/// Options or [`Faults`] that clap or `PUT /__mock/faults` would have refused, built by hand in
/// code.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InvalidOptions {
    /// `fail_rate` is not a number in `0.0..=1.0`.
    #[error("fail_rate {0} is not between 0.0 and 1.0")]
    FailRate(f64),
    /// `fail_status` is not a final status code.
    #[error("fail_status {0} is not a status code between 200 and 599")]
    FailStatus(u16),
}

impl MockOptions {
    /// Checks what clap checks at parse time, for options built in code.
    pub fn validate(&self) -> Result<(), InvalidOptions> {
        self.faults().validate()
    }

    /// The faults the server starts with, from the fault flags.
    pub fn faults(&self) -> Faults {
        Faults {
            fail_rate: self.fail_rate,
            fail_status: self.fail_status,
            retry_after: self.retry_after,
            fail_first: self.fail_first,
            latency: self.latency,
            rate_limit: self.rate_limit,
        }
    }
}

fn parse_fail_rate(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(rate) if (0.0..=1.0).contains(&rate) => Ok(rate),
        _ => Err(format!("{s:?} is not a probability between 0.0 and 1.0, e.g. 0.2")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        mock: MockOptions,
    }

    fn parse(args: &[&str]) -> Result<MockOptions, clap::Error> {
        Cli::try_parse_from(std::iter::once("mock").chain(args.iter().copied())).map(|c| c.mock)
    }

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn empty_command_line_equals_default() {
        assert_eq!(parse(&[]).unwrap(), MockOptions::default());
    }

    #[test]
    fn parses_every_flag() {
        let opts = parse(&[
            "--port",
            "9000",
            "--bind",
            "::1",
            "--latency",
            "250ms",
            "--fail-rate",
            "0.2",
            "--fail-status",
            "429",
            "--retry-after",
            "2",
            "--fail-first",
            "3",
            "--rate-limit",
            "5/m",
            "--fixed",
            "/health=200",
            "--fixed",
            "/orders/*=404:{\"error\":\"no such order\"}",
            "--record-limit",
            "5",
        ])
        .unwrap();
        assert_eq!(opts.port, 9000);
        assert_eq!(opts.bind, "::1".parse::<IpAddr>().unwrap());
        assert_eq!(opts.latency, Some(Duration::from_millis(250)));
        assert_eq!(opts.fail_rate, 0.2);
        assert_eq!(opts.fail_status, 429);
        assert_eq!(opts.retry_after, Some(2));
        assert_eq!(opts.fail_first, 3);
        assert_eq!(opts.rate_limit, Some("5/m".parse().unwrap()));
        let faults = opts.faults();
        assert_eq!((faults.fail_rate, faults.fail_status, faults.retry_after), (0.2, 429, Some(2)));
        assert_eq!((faults.fail_first, faults.latency), (3, Some(Duration::from_millis(250))));
        assert_eq!(faults.rate_limit.map(|r| r.to_string()).as_deref(), Some("5/m"));
        assert_eq!(opts.fixed.len(), 2);
        assert!(opts.fixed[1].prefix);
        assert_eq!(opts.record_limit, 5);
    }

    #[test]
    fn rejects_bad_values() {
        for (args, needle) in [
            (&["--fail-rate", "1.5"][..], "between 0.0 and 1.0"),
            (&["--fail-rate=-0.1"][..], "between 0.0 and 1.0"),
            (&["--fail-rate", "NaN"][..], "between 0.0 and 1.0"),
            (&["--fail-rate", "often"][..], "between 0.0 and 1.0"),
            (&["--fail-status", "99"][..], "200..=599"),
            (&["--fail-status", "600"][..], "200..=599"),
            (&["--latency", "soon"][..], "soon"),
            (&["--fixed", "/health"][..], "missing '='"),
            (&["--fail-first", "-1"][..], "-1"),
            (&["--fail-first", "some"][..], "some"),
            (&["--rate-limit", "5"][..], "e.g. 5/s"),
            (&["--rate-limit", "0/s"][..], "e.g. 5/s"),
            (&["--rate-limit", "5/day"][..], "e.g. 5/s"),
        ] {
            let err = parse(args).expect_err(&format!("{args:?} should be rejected"));
            assert!(err.to_string().contains(needle), "{args:?}: {err} should mention {needle:?}");
        }
    }

    #[test]
    fn validate_matches_clap() {
        assert!(MockOptions::default().validate().is_ok());
        let bad_rate = MockOptions { fail_rate: 1.5, ..MockOptions::default() };
        assert_eq!(bad_rate.validate(), Err(InvalidOptions::FailRate(1.5)));
        let nan_rate = MockOptions { fail_rate: f64::NAN, ..MockOptions::default() };
        assert!(nan_rate.validate().is_err());
        let bad_status = MockOptions { fail_status: 42, ..MockOptions::default() };
        assert_eq!(bad_status.validate(), Err(InvalidOptions::FailStatus(42)));
        assert_eq!(MockOptions::default().faults(), Faults::default());
    }
}
