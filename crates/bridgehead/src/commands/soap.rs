//! `bridgehead soap describe | openapi | call WSDL`: a SOAP service's operations from its WSDL
//! (a file or a URL, with everything it imports), read by the same code the gateway's `soap`
//! routes use, so what works here works behind the gateway.
//!
//! Exit codes: 0 OK; 1 for a fault, a refused request or an unreachable service (the problem
//! JSON says which).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use bridgehead_config::{
    LoadBalancing, LoadedConfig, PassiveHealth, Target, Upstream as UpstreamConfig, UpstreamProtocol,
    UpstreamTimeouts, UpstreamTls,
};
use bridgehead_http::metrics::Metrics;
use bridgehead_soap::envelope::UsernameToken;
use bridgehead_soap::route::{SoapRoute, Step};
use bridgehead_soap::service::Service;
use bridgehead_upstream::{Carryover, Upstream};
use http_body_util::BodyExt as _;

#[derive(clap::Subcommand)]
pub enum SoapCommand {
    /// List the service's ports and operations, with the JSON each takes and answers.
    ///
    /// Example: bridgehead soap describe http://legacy.local/Billing.svc?wsdl
    Describe {
        #[command(flatten)]
        wsdl: WsdlArgs,
        /// `text` (default) or `json` (the OpenAPI document's schemas).
        #[arg(long, default_value = "text")]
        output: super::Output,
    },
    /// Print the OpenAPI 3.1 document of the JSON facade a `soap` route serves.
    ///
    /// Example: bridgehead soap openapi wsdl/billing.wsdl --prefix /billing > billing.openapi.json
    Openapi {
        #[command(flatten)]
        wsdl: WsdlArgs,
        /// Where the operations are mounted (a route's `match.path_prefix`).
        #[arg(long, default_value = "")]
        prefix: String,
    },
    /// Call an operation with JSON; the answer prints as JSON (a fault as problem JSON, exit 1).
    ///
    /// Example: bridgehead soap call wsdl/billing.wsdl GetInvoice -d '{"invoice_id": "inv-1"}'
    Call {
        #[command(flatten)]
        wsdl: WsdlArgs,
        operation: String,
        /// The input: JSON, `@file`, or `@` for stdin. Absent: no parameters.
        #[arg(short = 'd', long = "data")]
        data: Option<String>,
        /// Call this URL instead of the WSDL's `soap:address`.
        #[arg(long)]
        address: Option<String>,
        /// WS-Security UsernameToken: the user name (the password from --password-env).
        #[arg(long, requires = "password_env")]
        username: Option<String>,
        /// The environment variable holding the UsernameToken's password.
        #[arg(long, requires = "username")]
        password_env: Option<String>,
        /// Send the password as a digest (PasswordDigest) instead of as text.
        #[arg(long, requires = "username")]
        digest: bool,
        /// Trust this CA bundle (PEM) in addition to the system roots.
        #[arg(long)]
        cacert: Option<PathBuf>,
        /// A client certificate (PEM) for mutual TLS, with --key.
        #[arg(long, requires = "key")]
        cert: Option<PathBuf>,
        #[arg(long, requires = "cert")]
        key: Option<PathBuf>,
    },
}

#[derive(clap::Args)]
pub struct WsdlArgs {
    /// The WSDL: a file, or an http(s):// URL.
    wsdl: String,
    /// The port (`wsdl:port@name`); default: the first with a SOAP binding.
    #[arg(long)]
    port: Option<String>,
    /// The longest reading the WSDL, or a call, may take.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    max_time: Duration,
}

pub fn run(cmd: SoapCommand) -> anyhow::Result<ExitCode> {
    let rt = super::runtime(Some(1))?;
    rt.block_on(async move {
        match cmd {
            SoapCommand::Describe { wsdl, output } => {
                let (port, mapper) = load(&wsdl).await?;
                match output {
                    super::Output::Text => print!("{}", bridgehead_soap::openapi::describe(&port, &mapper)),
                    super::Output::Json => {
                        let doc = bridgehead_soap::openapi::document(&port, &mapper, "", &port.info.service);
                        println!("{}", serde_json::to_string_pretty(&doc)?);
                    }
                }
                Ok(ExitCode::SUCCESS)
            }
            SoapCommand::Openapi { wsdl, prefix } => {
                let (port, mapper) = load(&wsdl).await?;
                let prefix = prefix.trim_end_matches('/');
                let doc = bridgehead_soap::openapi::document(&port, &mapper, prefix, &port.info.service);
                println!("{}", serde_json::to_string_pretty(&doc)?);
                Ok(ExitCode::SUCCESS)
            }
            SoapCommand::Call {
                wsdl,
                operation,
                data,
                address,
                username,
                password_env,
                digest,
                cacert,
                cert,
                key,
            } => {
                let defs = bridgehead_soap::service::load_any(&wsdl.wsdl, wsdl.max_time)
                    .await
                    .map_err(|e| anyhow!(e))?;
                let port = defs.port(wsdl.port.as_deref()).map_err(|e| anyhow!(e.0))?;
                let address = address.unwrap_or_else(|| port.info.address.clone());
                let url = url::Url::parse(&address)
                    .with_context(|| format!("the address `{address}` is not a URL"))?;
                let origin = url.origin().ascii_serialization();
                let path = bridgehead_soap::service::address_path(&address);
                let security = match (username, password_env) {
                    (Some(username), Some(var)) => {
                        let password = std::env::var(&var)
                            .with_context(|| format!("--password-env: `{var}` is not set"))?;
                        Some(UsernameToken { username, password, digest })
                    }
                    _ => None,
                };
                let tls = (url.scheme() == "https").then_some(UpstreamTls {
                    ca: cacert,
                    cert,
                    key,
                    server_name: None,
                });
                let upstream = one_target(&origin, tls, wsdl.max_time)?;
                let service =
                    Service::standalone(&defs, wsdl.port.as_deref(), upstream.clone(), Some(path), security)
                        .map_err(|e| anyhow!(e))?;
                let route = SoapRoute::new(Arc::new(service), "");
                let body = match data.as_deref() {
                    None => Vec::new(),
                    Some("@") => {
                        let mut b = Vec::new();
                        std::io::Read::read_to_end(&mut std::io::stdin(), &mut b)?;
                        b
                    }
                    Some(d) if d.starts_with('@') => {
                        std::fs::read(&d[1..]).with_context(|| format!("cannot read {}", &d[1..]))?
                    }
                    Some(d) => d.as_bytes().to_vec(),
                };
                let id = "bridgehead-soap-call";
                let res = match route.prepare(&http::Method::POST, &format!("/{operation}"), &body, id) {
                    Step::Answer(res) => res.map(bridgehead_http::body::ResponseBody::full),
                    Step::Call(p) => {
                        let metrics = Metrics::default();
                        let sent =
                            bridgehead_soap::route::send(&upstream, &metrics, &p, p.headers.clone(), &mut ())
                                .await;
                        match sent {
                            Ok(res) => route.respond(&p, res, id).await,
                            Err(e) => e.to_response(id).map(bridgehead_http::body::ResponseBody::full),
                        }
                    }
                };
                let ok = res.status().is_success();
                let bytes = res.into_body().collect().await.map_err(|e| anyhow!("{e}"))?.to_bytes();
                let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
                println!("{}", serde_json::to_string_pretty(&v)?);
                Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
            }
        }
    })
}

async fn load(
    w: &WsdlArgs,
) -> anyhow::Result<(bridgehead_soap::wsdl::Port, bridgehead_soap::mapping::Mapper)> {
    load_port(&w.wsdl, w.port.as_deref(), w.max_time).await
}

/// A WSDL's port (`port`, or the first with a SOAP binding) and its JSON mapping, from a file
/// or a URL.
pub(super) async fn load_port(
    location: &str,
    port: Option<&str>,
    max_time: Duration,
) -> anyhow::Result<(bridgehead_soap::wsdl::Port, bridgehead_soap::mapping::Mapper)> {
    let defs = bridgehead_soap::service::load_any(location, max_time).await.map_err(|e| anyhow!(e))?;
    let port = defs.port(port).map_err(|e| anyhow!(e.0))?;
    let mapper = bridgehead_soap::mapping::Mapper::new(port.schemas.clone());
    Ok((port, mapper))
}

/// A one-target upstream for `origin`, so a call goes through the gateway's own transport.
fn one_target(origin: &str, tls: Option<UpstreamTls>, max_time: Duration) -> anyhow::Result<Arc<Upstream>> {
    bridgehead_config::check_target_url(origin).map_err(|e| anyhow!("address `{origin}`: {e}"))?;
    if max_time.is_zero() {
        bail!("--max-time must be more than 0");
    }
    let cfg = UpstreamConfig {
        targets: vec![Target { url: origin.to_owned(), weight: 1 }],
        load_balancing: LoadBalancing::RoundRobin,
        protocol: UpstreamProtocol::Http1,
        http2: Default::default(),
        timeouts: UpstreamTimeouts {
            connect: bridgehead_config::HumanDuration(max_time.min(Duration::from_secs(10))),
            request: bridgehead_config::HumanDuration(max_time),
            ..UpstreamTimeouts::default()
        },
        health_check: None,
        passive_health: PassiveHealth { consecutive_failures: 0, ..PassiveHealth::default() },
        tls,
        credentials: None,
        retry: None,
        circuit_breaker: None,
        rate_limit: None,
        sticky: None,
    };
    let loaded = LoadedConfig::command_line();
    let upstream =
        Upstream::build("service", &cfg, &Carryover::default(), &loaded, &Metrics::default(), None)
            .map_err(|e| anyhow!(e.to_string().replace("upstreams.service.tls.", "--")))?;
    Ok(Arc::new(upstream))
}
