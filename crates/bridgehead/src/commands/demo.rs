//! `bridgehead demo`: the gateway with examples/demo.yaml, a mock upstream and embedded SQLite
//! state in a temporary directory, plus a short tour of commands to paste.

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;

use bridgehead_config::{MapResolver, load_str};
use bridgehead_gateway::{App, AppOptions, Listeners};
use bridgehead_mock::{MockOptions, MockServer};

/// The demo config, also checked by the test suite.
pub const DEMO_YAML: &str = include_str!("../../../../examples/demo.yaml");

#[derive(clap::Args)]
pub struct DemoArgs {
    /// Gateway address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Admin address.
    #[arg(long, default_value = "127.0.0.1:9901")]
    admin: SocketAddr,
    /// Mock upstream port (0: any free port).
    #[arg(long, default_value_t = 9000)]
    mock_port: u16,
    /// The port of the local webhook listener the demo's outbound endpoint delivers to.
    #[arg(long, default_value_t = 9999)]
    listener_port: u16,
    /// The demo gRPC server's port (0: any free port).
    #[arg(long, default_value_t = 50051)]
    grpc_port: u16,
}

pub fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    super::init_logging();
    let dir = tempfile::tempdir()?;
    let mut loaded =
        load_str(DEMO_YAML, Path::new("examples/demo.yaml"), Path::new("examples"), &MapResolver::default())
            .map_err(|d| anyhow::anyhow!("{d}"))?;
    loaded.config.state.url = format!("sqlite://{}", dir.path().join("demo.db").display());
    // The demo identity provider: a fresh ES256 key pair; the private key signs the tour's token.
    let idp = bridgehead_auth::jwt::keygen::generate(bridgehead_auth::jwt::Algorithm::ES256)
        .map_err(|e| anyhow::anyhow!("demo key: {e}"))?;
    let private = dir.path().join("demo-idp-private.pem");
    let public = dir.path().join("demo-idp-public.pem");
    std::fs::write(&private, &idp.private_pem)?;
    std::fs::write(&public, &idp.public_pem)?;
    if let Some(bridgehead_config::Authenticator::Jwt(j)) = loaded.config.authenticators.get_mut("demo-idp") {
        j.public_key_file = Some(public);
    }
    // The receiver's schema, from the binary (the demo runs from any directory).
    let schema = dir.path().join("order-created.json");
    std::fs::write(&schema, include_str!("../../../../examples/schemas/order-created.json"))?;
    for w in &mut loaded.config.webhooks.inbound {
        w.schema = Some(schema.clone());
    }
    if let Some(o) = &mut loaded.config.webhooks.outbound {
        for e in &mut o.endpoints {
            e.url = format!("http://127.0.0.1:{}/hook", args.listener_port);
        }
    }
    loaded.config.server.listen = args.listen;
    loaded.config.admin.listen = args.admin;
    let rt = super::runtime(None)?;
    rt.block_on(async move {
        let mock = MockServer::start(MockOptions {
            port: args.mock_port,
            fixed: vec!["/health=200:{\"status\":\"ok\"}".parse()?],
            soap: true,
            ..MockOptions::default()
        })
        .await?;
        // The drone-telemetry gRPC server, with reflection, so the gateway learns its schema.
        let grpc = tokio::net::TcpListener::bind(("127.0.0.1", args.grpc_port)).await.map_err(|e| {
            anyhow::anyhow!(
                "the demo gRPC server cannot listen on 127.0.0.1:{} (--grpc-port): {e}",
                args.grpc_port
            )
        })?;
        let grpc_addr = grpc.local_addr()?;
        tokio::spawn(bridgehead_grpc::demo::serve(
            grpc,
            bridgehead_grpc::demo::Options { reflection: true },
            std::future::pending(),
        ));
        for (name, u) in &mut loaded.config.upstreams {
            for t in &mut u.targets {
                t.url = if name == "drones" { format!("http://{grpc_addr}") } else { mock.url() };
            }
        }
        for s in loaded.config.soap.services.values_mut() {
            s.wsdl = format!("{}/soap?wsdl", mock.url());
        }
        let listeners = Listeners::bind(&loaded.config)?;
        // The local issuer names the address clients actually reach.
        if let Some(o) = &mut loaded.config.oauth_server {
            o.issuer = format!("http://{}", listeners.data[0].local_addr()?);
        }
        let app = App::build(loaded, listeners, AppOptions::default()).await?;
        let tour = Tour {
            gw: app.data_addr(),
            admin: app.admin_addr(),
            mock: mock.addr(),
            listener: args.listener_port,
            grpc: grpc_addr,
        };
        print_tour(&tour, &private, &idp.kid);
        app.run(bridgehead_gateway::shutdown_signal()).await?;
        drop(dir);
        Ok(ExitCode::SUCCESS)
    })
}

/// Where the demo's parts listen.
struct Tour {
    gw: SocketAddr,
    admin: SocketAddr,
    mock: SocketAddr,
    listener: u16,
    grpc: SocketAddr,
}

fn print_tour(t: &Tour, key: &Path, kid: &str) {
    let Tour { gw, admin, mock, listener, grpc } = t;
    let exe = std::env::current_exe().map_or_else(|_| "bridgehead".into(), |p| p.display().to_string());
    let key = key.display();
    eprintln!(
        "\
Bridgehead demo is running (Ctrl-C to stop).
  gateway  http://{gw}
  admin    http://{admin}
  mock     http://{mock}   (the upstream: echoes every request as JSON)
  listener http://127.0.0.1:{listener}/hook   (where published events go: run `webhook listen` there)
  grpc     {grpc}   (the drone-telemetry gRPC server, h2c, with reflection)

Try:
  curl -i http://{gw}/api/orders/42                 # routed by template, /api stripped, echoed by the mock
  curl -i -X POST -d '{{\"sku\":\"A-1\"}}' http://{gw}/api/orders   # a body streams through
  curl -i -X PATCH http://{gw}/api/orders/42        # 405 with Allow, as problem+json
  curl -i http://{gw}/nowhere                       # 404 problem+json with a request_id
  curl -s http://{admin}/readyz
  curl -s http://{admin}/metrics | grep bridgehead_http_requests
  curl -s http://{admin}/admin/config               # effective config, secrets redacted
  curl -s http://{mock}/__mock/requests             # what the upstream received (X-Forwarded-*, X-Request-Id)

Authentication (route /secure/orders: a JWT from the demo identity provider or an API key):
  curl -i http://{gw}/secure/orders                 # 401 with WWW-Authenticate: Bearer
  TOKEN=$({exe} jwt sign --key {key} --alg ES256 --kid {kid} --ttl 1h \\
    --claims '{{\"sub\":\"fde\",\"iss\":\"https://idp.demo.example\",\"aud\":\"orders-api\",\"scope\":\"orders.read\"}}')
  curl -i -H \"Authorization: Bearer $TOKEN\" http://{gw}/secure/orders   # 200; the mock sees X-Consumer-Id: fde
  {exe} jwt decode \"$TOKEN\"
  curl -i -H 'X-API-Key: demo-partner-key' http://{gw}/secure/orders      # 200 as consumer acme

Traffic policies:
  for i in 1 2 3 4; do curl -s -o /dev/null -w '%{{http_code}} ' http://{gw}/limited; done; echo
  curl -i http://{gw}/limited                       # 429 quota-exceeded with Retry-After and RateLimit headers
  curl -i -X POST -H 'Idempotency-Key: pay-1' -d '{{\"amount\":5}}' http://{gw}/payments
  curl -i -X POST -H 'Idempotency-Key: pay-1' -d '{{\"amount\":5}}' http://{gw}/payments   # replayed: Idempotent-Replayed: true
  curl -i -X POST -H 'Idempotency-Key: pay-1' -d '{{\"amount\":6}}' http://{gw}/payments   # 422: same key, other payload
  curl -s -X PUT -d '{{\"fail_first\":2,\"fail_status\":503}}' http://{mock}/__mock/faults   # the next 2 upstream answers fail
  curl -i http://{gw}/flaky/orders                  # 200: retried twice with backoff
  curl -s http://{admin}/metrics | grep -E 'bridgehead_(upstream_retries|rate_limited|idempotency)'

The local issuer (Bridgehead's own OAuth 2.0 server, for when the customer's is unreachable):
  curl -s http://{gw}/.well-known/oauth-authorization-server
  LOCAL=$(DEMO_SECRET=demo-client-secret {exe} token --token-url http://{gw}/oauth2/token \\
    --client-id demo-client --client-secret-env DEMO_SECRET)
  curl -i -H \"Authorization: Bearer $LOCAL\" http://{gw}/secure/orders   # 200 as consumer demo-client

Webhooks (receiver /hooks/shop: Standard Webhooks signature, JSON Schema, dead letters, durable, forwarded to the mock):
  export WHSEC=whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw
  printf '%s' '{{\"type\":\"order.created\",\"data\":{{\"id\":\"forty-two\",\"total\":-1}}}}' > /tmp/bad-order.json
  {exe} webhook sign --scheme standard --secret-env WHSEC --id evt_bad --payload /tmp/bad-order.json > /tmp/bad-order.headers
  curl -i http://{gw}/hooks/shop -H @/tmp/bad-order.headers -H 'Content-Type: application/json' --data-binary @/tmp/bad-order.json   # 400: every schema error
  curl -s http://{admin}/admin/webhooks/dead-letters   # kept as a dead letter, with its errors
  printf '%s' '{{\"type\":\"order.created\",\"data\":{{\"id\":42,\"total\":9.5}}}}' > /tmp/order.json
  {exe} webhook sign --scheme standard --secret-env WHSEC --id evt_1 --payload /tmp/order.json > /tmp/order.headers
  curl -i http://{gw}/hooks/shop -H @/tmp/order.headers -H 'Content-Type: application/json' --data-binary @/tmp/order.json   # 202, stored, then forwarded
  curl -i http://{gw}/hooks/shop -H @/tmp/order.headers -H 'Content-Type: application/json' --data-binary @/tmp/order.json   # 200 Idempotent-Replayed: not forwarded again
  sleep 1; curl -s http://{mock}/__mock/requests | grep -o /internal/orders | wc -l   # 1: forwarded once
  DLQ=$(curl -s http://{admin}/admin/webhooks/dead-letters | grep -o 'dlq_[0-9a-f]*' | head -1)
  curl -s -X POST http://{admin}/admin/webhooks/dead-letters/$DLQ/replay   # 409: still refused (fix the schema in the config, then replay)

Sending webhooks (events published on /events go to every endpoint subscribed to their type, signed):
  # in another terminal, a receiver that verifies and prints every delivery:
  WHSEC=whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw {exe} webhook listen --port {listener} --scheme standard --secret-env WHSEC
  curl -i http://{gw}/events -H 'X-API-Key: demo-partner-key' -H 'Content-Type: application/json' \
    -d '{{\"type\":\"order.created\",\"data\":{{\"id\":42,\"total\":9.5}},\"id\":\"order-42\"}}'   # 202; the listener prints it: valid: secret #1
  curl -s 'http://{admin}/admin/webhooks/messages?type=order.created'   # the message; /admin/webhooks/messages/ID shows its attempts
  MSG=$(curl -s 'http://{admin}/admin/webhooks/messages?type=order.created' | grep -o 'msg_[0-9a-f]*' | head -1)
  curl -s -X POST http://{admin}/admin/webhooks/messages/$MSG/replay   # delivered again, same webhook-id
  curl -s http://{admin}/admin/webhooks/endpoints                       # the endpoint, enabled, its breaker accepting

gRPC as JSON (the schema came from the server's reflection; routes drones-rest and drones-grpc):
  curl -s http://{gw}/drones/v1/drones/d-1         # drone.v1.Telemetry/GetStatus as JSON
  curl -s 'http://{gw}/drones/v1/drones?mode=IDLE'   # query parameters fill the request message
  curl -s -X POST http://{gw}/drones/v1/drones/d-1:command -d '{{\"hoverFor\":\"30s\"}}'
  curl -s 'http://{gw}/drones/v1/drones/d-1/positions?count=3'   # a server stream as NDJSON
  curl -i http://{gw}/drones/v1/drone/d-1           # 404 naming the closest bindings
  curl -i http://{gw}/drones/v1/drones/nope         # gRPC NOT_FOUND as a 404 problem
  {exe} grpc list --plaintext {gw}                  # gRPC through the gateway, reflection included
  {exe} grpc call --plaintext {gw} drone.v1.Telemetry/GetStatus -d '{{\"droneId\":\"d-2\"}}'
  curl -s http://{admin}/admin/grpc                 # where the schema came from, and every binding

SOAP as JSON (the mock's SOAP inventory, its WSDL read at start; route inventory-soap):
  curl -s -X POST http://{gw}/inventory/GetStock -d '{{\"sku\":\"A-1\"}}'
  curl -s -X POST http://{gw}/inventory/ListLowStock -d '{{\"threshold\":3}}'
  curl -i -X POST http://{gw}/inventory/Reserve -d '{{\"sku\":\"B-7\",\"quantity\":9}}'   # a SOAP fault as a 422 problem
  curl -i -X POST http://{gw}/inventory/GetStock -d '{{\"sku\":7}}'   # 400 before the service: /sku expected xs:string
  curl -s http://{gw}/inventory/openapi.json        # the facade's OpenAPI 3.1 document
  {exe} soap describe http://{mock}/soap?wsdl
  {exe} probe http://{mock}/soap                    # found as SOAP by its WSDL, with a config for it

Discover (what an endpoint is and how to talk to it):
  {exe} probe http://{gw}/secure/orders            # auth challenges, the local issuer's metadata, gRPC by reflection
  {exe} probe http://{grpc}/ --samples 20          # the gRPC server itself: HTTP/2 only, p50/p99 over 20 GETs

Access log lines (JSON) follow on stdout.
"
    );
}
