//! The `.proto` files the binary carries, so a schema that imports them needs nothing
//! installed: `google/api/{annotations,http,httpbody}.proto` (HTTP bindings and raw bodies),
//! `google/rpc/{status,code,error_details}.proto` (rich errors) and the server-reflection
//! protocol in both versions. The well-known types (`google/protobuf/*.proto`) come from
//! protox.
//!
//! These are the wire contracts (message names, field numbers) of those files, written for
//! this project; comments and language options of the originals are left out.

use std::sync::OnceLock;

use prost_reflect::DescriptorPool;
use protox::file::{ChainFileResolver, File, FileResolver, GoogleFileResolver};

/// The bundled files: import name and source.
pub const FILES: &[(&str, &str)] = &[
    ("google/api/http.proto", include_str!("../proto/google/api/http.proto")),
    ("google/api/annotations.proto", include_str!("../proto/google/api/annotations.proto")),
    ("google/api/httpbody.proto", include_str!("../proto/google/api/httpbody.proto")),
    ("google/rpc/status.proto", include_str!("../proto/google/rpc/status.proto")),
    ("google/rpc/code.proto", include_str!("../proto/google/rpc/code.proto")),
    ("google/rpc/error_details.proto", include_str!("../proto/google/rpc/error_details.proto")),
    ("grpc/reflection/v1/reflection.proto", include_str!("../proto/grpc/reflection/v1/reflection.proto")),
    (
        "grpc/reflection/v1alpha/reflection.proto",
        include_str!("../proto/grpc/reflection/v1alpha/reflection.proto"),
    ),
];

/// The well-known types protox supplies.
const WELL_KNOWN: [&str; 11] = [
    "google/protobuf/any.proto",
    "google/protobuf/api.proto",
    "google/protobuf/descriptor.proto",
    "google/protobuf/duration.proto",
    "google/protobuf/empty.proto",
    "google/protobuf/field_mask.proto",
    "google/protobuf/source_context.proto",
    "google/protobuf/struct.proto",
    "google/protobuf/timestamp.proto",
    "google/protobuf/type.proto",
    "google/protobuf/wrappers.proto",
];

/// Resolves imports of the bundled files (after the user's include paths, so a vendored copy
/// of `google/api/http.proto` wins over ours).
pub struct Bundled;

impl FileResolver for Bundled {
    fn open_file(&self, name: &str) -> Result<File, protox::Error> {
        match FILES.iter().find(|(n, _)| *n == name) {
            Some((n, source)) => File::from_source(n, source),
            None => Err(protox::Error::file_not_found(name)),
        }
    }
}

/// Whether an import name is one the binary can supply: a bundled file or a well-known type.
pub fn supplies(name: &str) -> bool {
    FILES.iter().any(|(n, _)| *n == name) || WELL_KNOWN.contains(&name)
}

/// Every bundled file and the well-known types, compiled once.
pub fn pool() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| {
        let mut chain = ChainFileResolver::new();
        chain.add(Bundled);
        chain.add(GoogleFileResolver::new());
        let mut compiler = protox::Compiler::with_file_resolver(chain);
        compiler.include_imports(true);
        for name in FILES.iter().map(|(n, _)| *n).chain(WELL_KNOWN) {
            compiler.open_file(name).expect("bundled protos compile");
        }
        compiler.descriptor_pool()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_files_compile_and_keep_the_http_option() {
        let pool = pool();
        let ext = pool.get_extension_by_name("google.api.http").expect("the http option");
        assert_eq!(ext.number(), 72_295_728);
        for name in
            ["google.rpc.Status", "google.rpc.BadRequest", "google.api.HttpBody", "google.protobuf.Timestamp"]
        {
            assert!(pool.get_message_by_name(name).is_some(), "{name}");
        }
        assert!(pool.get_service_by_name("grpc.reflection.v1.ServerReflection").is_some());
        assert!(pool.get_service_by_name("grpc.reflection.v1alpha.ServerReflection").is_some());
        assert!(supplies("google/protobuf/empty.proto") && supplies("google/api/http.proto"));
        assert!(!supplies("acme/orders.proto"));
    }
}
