//! The demo drone-telemetry gRPC server (`proto/demo/drone/v1/telemetry.proto`), served by
//! `bridgehead demo` and called by the tests: tonic's server (an HTTP/2 and gRPC
//! implementation independent of the gateway's), every streaming shape, annotated and
//! unannotated methods, `google.rpc` error details, deadlines and a raw-body method.
//!
//! Its reflection service (v1 and v1alpha) is written here rather than taken from
//! tonic-reflection, which decodes descriptors into `prost_types` and so drops the
//! `google.api.http` options; this one serves the descriptors' bytes as compiled.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use prost::Message as _;
use prost_reflect::DescriptorPool;
use tokio_stream::{Stream, StreamExt as _};
use tonic::{Request, Response, Status, Streaming};

#[allow(clippy::all, clippy::pedantic, missing_docs, unreachable_pub)]
pub mod generated {
    pub mod google {
        pub mod api {
            include!(concat!(env!("OUT_DIR"), "/google.api.rs"));
        }
    }
    pub mod drone {
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/drone.v1.rs"));
        }
    }
    pub mod grpc {
        pub mod reflection {
            pub mod v1 {
                include!(concat!(env!("OUT_DIR"), "/grpc.reflection.v1.rs"));
            }
            pub mod v1alpha {
                include!(concat!(env!("OUT_DIR"), "/grpc.reflection.v1alpha.rs"));
            }
        }
    }
}

use generated::drone::v1::telemetry_server::{Telemetry, TelemetryServer};
use generated::drone::v1::*;

/// The demo service's schema, as compiled (options kept).
pub const DESCRIPTORS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/telemetry.bin"));

/// The demo's `.proto`, for `grpc call --proto` and the docs.
pub const PROTO: &str = include_str!("../proto/demo/drone/v1/telemetry.proto");

/// The service's full name.
pub const SERVICE: &str = "drone.v1.Telemetry";

/// The demo service's state: its drones.
#[derive(Clone)]
pub struct Demo {
    drones: Arc<Mutex<BTreeMap<String, DroneStatus>>>,
}

impl Default for Demo {
    fn default() -> Self {
        let drone = |id: &str, mode: Mode, battery: f64, tags: &[&str]| DroneStatus {
            drone_id: id.into(),
            mode: mode as i32,
            battery,
            flight_seconds: 9_007_199_254_740_993,
            updated_at: Some(prost_types::Timestamp { seconds: 1_796_083_200, nanos: 0 }),
            position: Some(Position {
                drone_id: id.into(),
                lat: 52.52,
                lon: 13.405,
                altitude_m: 120.5,
                seq: 1,
            }),
            tags: tags.iter().map(|t| (*t).to_owned()).collect(),
        };
        let drones = [
            drone("d-1", Mode::Hover, 0.82, &["north", "survey"]),
            drone("d-2", Mode::Idle, 1.0, &["south"]),
        ];
        Demo { drones: Arc::new(Mutex::new(drones.into_iter().map(|d| (d.drone_id.clone(), d)).collect())) }
    }
}

type PositionStream = Pin<Box<dyn Stream<Item = Result<Position, Status>> + Send>>;

impl Demo {
    fn find(&self, id: &str) -> Result<DroneStatus, Status> {
        if id.is_empty() {
            return Err(bad_request("drone_id", "must not be empty"));
        }
        self.drones
            .lock()
            .expect("not poisoned")
            .get(id)
            .cloned()
            .ok_or_else(|| Status::not_found(format!("no drone `{id}`")))
    }
}

/// INVALID_ARGUMENT with a `google.rpc.BadRequest` naming the field.
fn bad_request(field: &str, description: &str) -> Status {
    let detail = generated_bad_request(field, description);
    let status = crate::status::RpcStatus {
        code: 3,
        message: format!("{field}: {description}"),
        details: vec![detail],
    };
    Status::with_details(
        tonic::Code::InvalidArgument,
        status.message.clone(),
        Bytes::from(status.encode_to_vec()),
    )
}

fn generated_bad_request(field: &str, description: &str) -> prost_types::Any {
    #[derive(Clone, PartialEq, prost::Message)]
    struct FieldViolation {
        #[prost(string, tag = "1")]
        field: String,
        #[prost(string, tag = "2")]
        description: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    struct BadRequest {
        #[prost(message, repeated, tag = "1")]
        field_violations: Vec<FieldViolation>,
    }
    let b = BadRequest {
        field_violations: vec![FieldViolation { field: field.into(), description: description.into() }],
    };
    prost_types::Any {
        type_url: "type.googleapis.com/google.rpc.BadRequest".into(),
        value: b.encode_to_vec(),
    }
}

#[tonic::async_trait]
impl Telemetry for Demo {
    async fn get_status(&self, req: Request<GetStatusRequest>) -> Result<Response<DroneStatus>, Status> {
        self.find(&req.into_inner().drone_id).map(Response::new)
    }

    async fn list_drones(
        &self,
        req: Request<ListDronesRequest>,
    ) -> Result<Response<ListDronesResponse>, Status> {
        let r = req.into_inner();
        let mut drones: Vec<DroneStatus> = self
            .drones
            .lock()
            .expect("not poisoned")
            .values()
            .filter(|d| r.mode == 0 || d.mode == r.mode)
            .filter(|d| r.tags.iter().all(|t| d.tags.contains(t)))
            .cloned()
            .collect();
        if r.page_size > 0 {
            drones.truncate(r.page_size as usize);
        }
        Ok(Response::new(ListDronesResponse { drones }))
    }

    async fn update_drone(&self, req: Request<UpdateDroneRequest>) -> Result<Response<DroneStatus>, Status> {
        let r = req.into_inner();
        let patch = r.drone.unwrap_or_default();
        let mut current = self.find(&patch.drone_id)?;
        let paths = r.update_mask.map(|m| m.paths).unwrap_or_default();
        if paths.is_empty() {
            return Err(bad_request("update_mask", "names no field"));
        }
        for p in &paths {
            match p.as_str() {
                "mode" => current.mode = patch.mode,
                "battery" => current.battery = patch.battery,
                "tags" => current.tags = patch.tags.clone(),
                "position" => current.position = patch.position.clone(),
                other => return Err(bad_request("update_mask", &format!("`{other}` cannot be updated"))),
            }
        }
        self.drones.lock().expect("not poisoned").insert(current.drone_id.clone(), current.clone());
        Ok(Response::new(current))
    }

    async fn command(&self, req: Request<CommandRequest>) -> Result<Response<CommandReply>, Status> {
        let r = req.into_inner();
        self.find(&r.drone_id)?;
        let accepted = match r.action {
            Some(command_request::Action::LandAt(at)) => format!("land at {at}"),
            Some(command_request::Action::HoverFor(d)) => format!("hover for {}s", d.seconds),
            None => return Err(bad_request("action", "give land_at or hover_for")),
        };
        Ok(Response::new(CommandReply { drone_id: r.drone_id, accepted }))
    }

    type StreamPositionsStream = PositionStream;

    async fn stream_positions(
        &self,
        req: Request<StreamPositionsRequest>,
    ) -> Result<Response<Self::StreamPositionsStream>, Status> {
        let r = req.into_inner();
        let drone = self.find(&r.drone_id)?;
        let base = drone.position.unwrap_or_default();
        let fail_after = r.fail_after;
        let mut items = Vec::new();
        for seq in 1..=r.count.clamp(1, 1000) {
            if fail_after > 0 && seq > fail_after {
                items.push(Err(Status::unavailable("link to the drone lost")));
                break;
            }
            items.push(Ok(Position { seq, lat: base.lat + f64::from(seq) * 0.001, ..base.clone() }));
        }
        let interval = Duration::from_millis(u64::from(r.interval_ms.min(1000)));
        if interval.is_zero() {
            return Ok(Response::new(Box::pin(tokio_stream::iter(items))));
        }
        let paced =
            futures_util::stream::unfold((items.into_iter(), true), move |(mut it, first)| async move {
                let next = it.next()?;
                if !first {
                    tokio::time::sleep(interval).await;
                }
                Some((next, (it, false)))
            });
        Ok(Response::new(Box::pin(paced)))
    }

    async fn export(
        &self,
        req: Request<ExportRequest>,
    ) -> Result<Response<generated::google::api::HttpBody>, Status> {
        let d = self.find(&req.into_inner().drone_id)?;
        let p = d.position.unwrap_or_default();
        let data =
            format!("drone_id,lat,lon,altitude_m\n{},{},{},{}\n", d.drone_id, p.lat, p.lon, p.altitude_m);
        Ok(Response::new(generated::google::api::HttpBody {
            content_type: "text/csv".into(),
            data: data.into_bytes(),
            extensions: Vec::new(),
        }))
    }

    type ExportTrackStream =
        Pin<Box<dyn Stream<Item = Result<generated::google::api::HttpBody, Status>> + Send>>;

    async fn export_track(
        &self,
        req: Request<StreamPositionsRequest>,
    ) -> Result<Response<Self::ExportTrackStream>, Status> {
        let positions = self.stream_positions(req).await?.into_inner();
        let chunk = |data: String| generated::google::api::HttpBody {
            content_type: "text/csv".into(),
            data: data.into_bytes(),
            extensions: Vec::new(),
        };
        let header = tokio_stream::once(Ok(chunk("seq,lat,lon,altitude_m\n".to_owned())));
        let rows = positions.map(move |p| {
            p.map(|p| chunk(format!("{},{:.5},{:.5},{}\n", p.seq, p.lat, p.lon, p.altitude_m)))
        });
        Ok(Response::new(Box::pin(header.chain(rows))))
    }

    async fn upload_positions(
        &self,
        req: Request<Streaming<Position>>,
    ) -> Result<Response<UploadSummary>, Status> {
        let mut stream = req.into_inner();
        let mut summary = UploadSummary::default();
        while let Some(p) = stream.next().await {
            let p = p?;
            summary.count += 1;
            if !summary.drones.contains(&p.drone_id) {
                summary.drones.push(p.drone_id);
            }
        }
        Ok(Response::new(summary))
    }

    type ChatStream = PositionStream;

    async fn chat(&self, req: Request<Streaming<Position>>) -> Result<Response<Self::ChatStream>, Status> {
        let stream = req.into_inner().map(|p| p.map(|p| Position { seq: p.seq + 1000, ..p }));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn fail(&self, req: Request<FailRequest>) -> Result<Response<()>, Status> {
        let r = req.into_inner();
        let code = tonic::Code::from_i32(r.code);
        if !r.details {
            return Err(Status::new(code, r.message));
        }
        let retry = prost_types::Any {
            type_url: "type.googleapis.com/google.rpc.RetryInfo".into(),
            // RetryInfo { retry_delay: Duration { seconds: 2 } }
            value: vec![0x0a, 0x02, 0x08, 0x02],
        };
        let status = crate::status::RpcStatus {
            code: r.code,
            message: r.message.clone(),
            details: vec![generated_bad_request("drone_id", "unknown drone"), retry],
        };
        Err(Status::with_details(code, r.message, Bytes::from(status.encode_to_vec())))
    }

    async fn sleep(&self, req: Request<SleepRequest>) -> Result<Response<()>, Status> {
        let d = req.into_inner().duration.unwrap_or_default();
        let d = Duration::from_secs(u64::try_from(d.seconds).unwrap_or(0))
            + Duration::from_nanos(u64::try_from(d.nanos).unwrap_or(0));
        tokio::time::sleep(d.min(Duration::from_secs(60))).await;
        Ok(Response::new(()))
    }
}

/// Which extras the demo server offers.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Serve reflection (v1 and v1alpha).
    pub reflection: bool,
}

/// Serves the demo until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    options: Options,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    serve_with(listener, options, DESCRIPTORS.to_vec(), shutdown).await
}

/// Serves the demo with its reflection describing `descriptors` (an encoded descriptor set):
/// a server whose schema changed, for tests.
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    options: Options,
    descriptors: Vec<u8>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    // As `Server::serve` would: small answers go out at once, not held back by Nagle's
    // algorithm (`serve_with_incoming` leaves the sockets as they come).
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener).map(|s| {
        s.inspect(|s| {
            let _ = s.set_nodelay(true);
        })
    });
    let mut server = tonic::transport::Server::builder();
    let mut router = server.add_service(TelemetryServer::new(Demo::default()));
    if options.reflection {
        let reflect = Reflection::new(&descriptors, &[SERVICE]);
        router = router
            .add_service(
                generated::grpc::reflection::v1::server_reflection_server::ServerReflectionServer::new(
                    reflect.clone(),
                ),
            )
            .add_service(
                generated::grpc::reflection::v1alpha::server_reflection_server::ServerReflectionServer::new(
                    reflect,
                ),
            );
    }
    router.serve_with_incoming_shutdown(incoming, shutdown).await
}

/// A reflection service over a compiled schema's bytes.
#[derive(Clone)]
pub struct Reflection {
    pool: DescriptorPool,
    services: Vec<String>,
}

impl Reflection {
    pub fn new(descriptors: &[u8], services: &[&str]) -> Reflection {
        let pool = DescriptorPool::decode(descriptors).expect("the compiled schema decodes");
        Reflection { pool, services: services.iter().map(|s| (*s).to_owned()).collect() }
    }

    /// The file defining `symbol` and every file it imports, as bytes.
    fn files_for(&self, file: Option<prost_reflect::FileDescriptor>) -> Option<Vec<Vec<u8>>> {
        let file = file?;
        let mut out = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut stack = vec![file];
        while let Some(f) = stack.pop() {
            if seen.insert(f.name().to_owned()) {
                out.push(f.encode_to_vec());
                stack.extend(f.dependencies());
            }
        }
        Some(out)
    }

    /// One answer, as (files, services, error) for either version to wrap.
    fn answer(&self, ask: Ask) -> Answer {
        match ask {
            Ask::List => Answer::Services(self.services.clone()),
            Ask::Symbol(s) => {
                let file = self
                    .pool
                    .get_service_by_name(&s)
                    .map(|d| d.parent_file())
                    .or_else(|| self.pool.get_message_by_name(&s).map(|d| d.parent_file()))
                    .or_else(|| self.pool.get_enum_by_name(&s).map(|d| d.parent_file()))
                    .or_else(|| {
                        let (svc, _) = s.rsplit_once('.')?;
                        self.pool.get_service_by_name(svc).map(|d| d.parent_file())
                    });
                self.files_for(file)
                    .map_or_else(|| Answer::NotFound(format!("symbol `{s}` not found")), Answer::Files)
            }
            Ask::File(name) => self
                .files_for(self.pool.get_file_by_name(&name))
                .map_or_else(|| Answer::NotFound(format!("file `{name}` not found")), Answer::Files),
            Ask::Other => Answer::Unsupported,
        }
    }
}

enum Ask {
    List,
    Symbol(String),
    File(String),
    Other,
}

enum Answer {
    Services(Vec<String>),
    Files(Vec<Vec<u8>>),
    NotFound(String),
    Unsupported,
}

/// Both reflection versions share their message shapes; one macro implements each.
macro_rules! reflection_version {
    ($v:ident) => {
        #[tonic::async_trait]
        impl generated::grpc::reflection::$v::server_reflection_server::ServerReflection for Reflection {
            type ServerReflectionInfoStream = Pin<
                Box<
                    dyn Stream<
                            Item = Result<generated::grpc::reflection::$v::ServerReflectionResponse, Status>,
                        > + Send,
                >,
            >;

            async fn server_reflection_info(
                &self,
                req: Request<Streaming<generated::grpc::reflection::$v::ServerReflectionRequest>>,
            ) -> Result<Response<Self::ServerReflectionInfoStream>, Status> {
                use generated::grpc::reflection::$v::server_reflection_request::MessageRequest as Rq;
                use generated::grpc::reflection::$v::server_reflection_response::MessageResponse as Rs;
                use generated::grpc::reflection::$v::*;
                let this = self.clone();
                let stream = req.into_inner().map(move |r| {
                    let r = r?;
                    let ask = match &r.message_request {
                        Some(Rq::ListServices(_)) => Ask::List,
                        Some(Rq::FileContainingSymbol(s)) => Ask::Symbol(s.clone()),
                        Some(Rq::FileByFilename(f)) => Ask::File(f.clone()),
                        _ => Ask::Other,
                    };
                    let response = match this.answer(ask) {
                        Answer::Services(names) => Rs::ListServicesResponse(ListServiceResponse {
                            service: names.into_iter().map(|name| ServiceResponse { name }).collect(),
                        }),
                        Answer::Files(files) => Rs::FileDescriptorResponse(FileDescriptorResponse {
                            file_descriptor_proto: files,
                        }),
                        Answer::NotFound(m) => {
                            Rs::ErrorResponse(ErrorResponse { error_code: 5, error_message: m })
                        }
                        Answer::Unsupported => Rs::ErrorResponse(ErrorResponse {
                            error_code: 12,
                            error_message: "not supported by this server".into(),
                        }),
                    };
                    Ok(ServerReflectionResponse {
                        valid_host: r.host.clone(),
                        original_request: Some(r),
                        message_response: Some(response),
                    })
                });
                Ok(Response::new(Box::pin(stream)))
            }
        }
    };
}

reflection_version!(v1);
reflection_version!(v1alpha);
