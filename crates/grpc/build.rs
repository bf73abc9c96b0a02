//! Generates the demo drone-telemetry service's tonic server from its .proto (compiled with
//! protox, so no protoc is needed), the server side of both reflection versions, and the
//! compiled schema the demo's reflection serves.

fn main() {
    let proto = "demo/drone/v1/telemetry.proto";
    println!("cargo:rerun-if-changed=proto");
    let mut compiler = protox::Compiler::new(["proto"]).expect("the proto directory");
    compiler.include_imports(true);
    compiler.open_file(proto).expect("the demo proto compiles");
    compiler.open_file("grpc/reflection/v1/reflection.proto").expect("reflection v1");
    compiler.open_file("grpc/reflection/v1alpha/reflection.proto").expect("reflection v1alpha");
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    // The pool's bytes keep the google.api.http options, which the reflection service serves.
    std::fs::write(out.join("telemetry.bin"), compiler.descriptor_pool().encode_to_vec()).expect("write");
    tonic_prost_build::configure()
        .build_client(false)
        .compile_fds(compiler.file_descriptor_set())
        .expect("tonic code generation");
}
