//! `bridgehead grpc list | describe | call | export`: a grpcurl-like client on the gateway's
//! own gRPC stack (HTTP/2, TLS, framing, reflection, proto3 JSON), so what works here works
//! behind the gateway.
//!
//! Exit codes follow grpcurl: 0 OK; 64 + the gRPC status code when a call fails with one
//! (NOT_FOUND is 69); 1 for anything else (unreachable server, bad input, unknown symbol).

use std::io::Read as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use bridgehead_grpc::client::{Client, SchemaSource, Server};
use bridgehead_grpc::mapping::JsonOptions;
use http::{HeaderMap, HeaderName, HeaderValue};

#[derive(clap::Subcommand)]
pub enum GrpcCommand {
    /// List the server's services, or the methods of one.
    ///
    /// Example: bridgehead grpc list --plaintext 127.0.0.1:50051 drone.v1.Telemetry
    List {
        #[command(flatten)]
        conn: Conn,
        /// A service whose methods to list.
        service: Option<String>,
    },
    /// Describe a service, method, message or enum as .proto source.
    ///
    /// Example: bridgehead grpc describe --plaintext 127.0.0.1:50051 drone.v1.DroneStatus
    Describe {
        #[command(flatten)]
        conn: Conn,
        symbol: String,
    },
    /// Call a method with a JSON request (`-d '{…}'`, `-d @file`, or `-d @` for NDJSON on stdin,
    /// one message per line for streaming methods); answers print as JSON, one per message.
    ///
    /// Example: bridgehead grpc call --plaintext 127.0.0.1:50051 drone.v1.Telemetry/GetStatus -d '{"droneId": "d-1"}'
    Call {
        #[command(flatten)]
        conn: Conn,
        /// `package.Service/Method`.
        method: String,
        /// The request: JSON, `@file`, or `@` for stdin. Absent: an empty message.
        #[arg(short = 'd', long = "data")]
        data: Option<String>,
        /// Metadata to send, `name: value` (repeatable).
        #[arg(short = 'H', long = "header")]
        headers: Vec<String>,
        /// Print fields that hold their default value.
        #[arg(long)]
        emit_defaults: bool,
    },
    /// Print the OpenAPI 3.1 document of a `grpc.services` entry as a transcoding route serves
    /// it (the schema from its files, or its server's reflection).
    ///
    /// Example: bridgehead grpc openapi telemetry -c bridgehead.yaml > telemetry.openapi.json
    Openapi {
        /// The name under `grpc.services`.
        service: String,
        #[arg(short, long, default_value = "bridgehead.yaml")]
        config: PathBuf,
        /// The transcoding route whose mount point and JSON options apply (default: the first
        /// that serves the service).
        #[arg(long)]
        route: Option<String>,
    },
    /// Run the demo drone-telemetry gRPC server (h2c, with reflection unless told otherwise), a
    /// reference peer for field tests and benchmarks; until Ctrl-C.
    ///
    /// Example: bridgehead grpc demo-server --listen 127.0.0.1:50051
    DemoServer {
        #[arg(long, default_value = "127.0.0.1:50051")]
        listen: std::net::SocketAddr,
        /// Serve without server reflection.
        #[arg(long)]
        no_reflection: bool,
    },
    /// Write the server's schema (from reflection) as .proto files and a descriptor set
    /// (`descriptors.pb`), for an air-gapped copy or `descriptors: { descriptor_set: … }`.
    ///
    /// Example: bridgehead grpc export --plaintext 127.0.0.1:50051 --out schema/
    Export {
        #[command(flatten)]
        conn: Conn,
        #[arg(long)]
        out: PathBuf,
    },
}

/// How to reach the server and where the schema comes from (grpcurl's flags).
#[derive(clap::Args)]
pub struct Conn {
    /// `host:port` of the server.
    addr: String,
    /// HTTP/2 over plain TCP (h2c), no TLS.
    #[arg(long)]
    plaintext: bool,
    /// PEM CA bundle to trust besides the system roots.
    #[arg(long)]
    cacert: Option<PathBuf>,
    /// PEM client certificate for mutual TLS (with --key).
    #[arg(long)]
    cert: Option<PathBuf>,
    #[arg(long)]
    key: Option<PathBuf>,
    /// Server name for SNI and certificate checks, instead of the address's host.
    #[arg(long)]
    servername: Option<String>,
    /// A .proto file to take the schema from instead of reflection (repeatable).
    #[arg(long = "proto")]
    protos: Vec<PathBuf>,
    /// Import directory for --proto (repeatable).
    #[arg(long = "import-path")]
    import_paths: Vec<PathBuf>,
    /// A descriptor set (`protoc -o`, `buf build -o`) to take the schema from.
    #[arg(long)]
    protoset: Option<PathBuf>,
    /// The longest the whole operation may take, in seconds.
    #[arg(long, default_value_t = 10.0)]
    max_time: f64,
}

impl Conn {
    fn client(&self) -> anyhow::Result<Client> {
        if !(self.max_time > 0.0 && self.max_time.is_finite()) {
            bail!("--max-time must be a positive number of seconds");
        }
        let server = Server {
            addr: self.addr.clone(),
            plaintext: self.plaintext,
            cacert: self.cacert.clone(),
            cert: self.cert.clone(),
            key: self.key.clone(),
            servername: self.servername.clone(),
            max_time: Duration::from_secs_f64(self.max_time),
        };
        Client::new(&server).map_err(|e| anyhow!(e))
    }

    fn source(&self) -> SchemaSource {
        SchemaSource {
            protos: self.protos.clone(),
            import_paths: self.import_paths.clone(),
            protoset: self.protoset.clone(),
        }
    }
}

pub fn run(cmd: GrpcCommand) -> anyhow::Result<ExitCode> {
    super::runtime(Some(1))?.block_on(async move {
        match cmd {
            GrpcCommand::List { conn, service } => {
                let client = conn.client()?;
                let (schema, services) = client.schema(&conn.source()).await.map_err(|e| anyhow!(e))?;
                match service {
                    None => {
                        for s in services {
                            println!("{s}");
                        }
                    }
                    Some(name) => {
                        let svc = schema.service(&name).map_err(|e| anyhow!(e))?;
                        for m in svc.methods() {
                            println!("{}", m.full_name());
                        }
                    }
                }
                Ok(ExitCode::SUCCESS)
            }
            GrpcCommand::Describe { conn, symbol } => {
                let client = conn.client()?;
                let (schema, _) = client.schema(&conn.source()).await.map_err(|e| anyhow!(e))?;
                print!("{}", bridgehead_grpc::describe::describe(&schema, &symbol).map_err(|e| anyhow!(e))?);
                Ok(ExitCode::SUCCESS)
            }
            GrpcCommand::Call { conn, method, data, headers, emit_defaults } => {
                call(&conn, &method, data.as_deref(), &headers, emit_defaults).await
            }
            GrpcCommand::Openapi { service, config, route } => {
                let loaded = bridgehead_config::load(&config).map_err(|d| anyhow!("{d}"))?;
                let (prefix, opts) =
                    bridgehead_grpc::openapi::route_view(&loaded.config, &service, route.as_deref()).map_err(|e| anyhow!(e))?;
                let schema = bridgehead_grpc::service::load_offline(&service, &loaded).await.map_err(|e| anyhow!(e))?;
                let doc = bridgehead_grpc::openapi::document(&service, &schema, prefix, &opts);
                println!("{}", serde_json::to_string_pretty(&doc)?);
                Ok(ExitCode::SUCCESS)
            }
            GrpcCommand::DemoServer { listen, no_reflection } => {
                let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("cannot listen on {listen}"))?;
                eprintln!("demo gRPC server (drone.v1.Telemetry) on {}", listener.local_addr()?);
                let options = bridgehead_grpc::demo::Options { reflection: !no_reflection };
                bridgehead_grpc::demo::serve(listener, options, async {
                    let _ = tokio::signal::ctrl_c().await;
                })
                .await?;
                Ok(ExitCode::SUCCESS)
            }
            GrpcCommand::Export { conn, out } => {
                let client = conn.client()?;
                let (schema, _) = client.schema(&conn.source()).await.map_err(|e| anyhow!(e))?;
                std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
                let set = out.join("descriptors.pb");
                std::fs::write(&set, schema.bytes())
                    .with_context(|| format!("cannot write {}", set.display()))?;
                let mut written = 0;
                for f in schema.pool.files() {
                    // The well-known types and the bundled google files need no copy.
                    if bridgehead_grpc::bundled::supplies(f.name()) {
                        continue;
                    }
                    // The name comes from the server: only a relative path below `out` is written.
                    let name = std::path::Path::new(f.name());
                    if name.components().any(|c| !matches!(c, std::path::Component::Normal(_))) {
                        bail!("the server's schema names a file `{}`, which is not a relative path without `..`", f.name());
                    }
                    let path = out.join(name);
                    if let Some(dir) = path.parent() {
                        std::fs::create_dir_all(dir)?;
                    }
                    std::fs::write(&path, bridgehead_grpc::describe::file(&f))
                        .with_context(|| format!("cannot write {}", path.display()))?;
                    println!("{}", path.display());
                    written += 1;
                }
                println!("{}", set.display());
                eprintln!("{written} .proto files and a descriptor set written to {}", out.display());
                Ok(ExitCode::SUCCESS)
            }
        }
    })
}

async fn call(
    conn: &Conn,
    method: &str,
    data: Option<&str>,
    headers: &[String],
    emit_defaults: bool,
) -> anyhow::Result<ExitCode> {
    let client = conn.client()?;
    let (schema, _) = client.schema(&conn.source()).await.map_err(|e| anyhow!(e))?;
    let text = match data {
        None => String::new(),
        Some("@") => {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s).context("cannot read stdin")?;
            s
        }
        Some(d) if d.starts_with('@') => {
            std::fs::read_to_string(&d[1..]).with_context(|| format!("cannot read {}", &d[1..]))?
        }
        Some(d) => d.to_owned(),
    };
    let opts = JsonOptions { emit_defaults, ..JsonOptions::default() };
    let mut metadata = HeaderMap::new();
    for h in headers {
        let (name, value) = h.split_once(':').ok_or_else(|| anyhow!("-H `{h}`: expected `name: value`"))?;
        let name = HeaderName::from_bytes(name.trim().to_ascii_lowercase().as_bytes())
            .map_err(|_| anyhow!("-H `{h}`: not a header name"))?;
        let value =
            HeaderValue::from_str(value.trim()).map_err(|_| anyhow!("-H `{h}`: not a header value"))?;
        metadata.append(name, value);
    }
    let done = client.call_json(&schema, method, &text, metadata, &opts).await.map_err(|e| anyhow!(e))?;
    for value in &done.messages {
        println!("{}", serde_json::to_string_pretty(value)?);
    }
    let s = &done.status;
    if s.code == 0 {
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!("ERROR:\n  Code: {}\n  Message: {}", bridgehead_grpc::status::name(s.code), s.message);
    if !s.details.is_empty() {
        eprintln!("  Details:");
        for d in &s.details {
            eprintln!("    {d}");
        }
    }
    // grpcurl's convention: 64 + the code; a code outside the table counts as UNKNOWN (2).
    let code = u8::try_from(s.code).ok().filter(|c| *c <= 16).unwrap_or(2);
    Ok(ExitCode::from(64 + code))
}
