//! A service's schema: a descriptor pool built from `.proto` files (compiled with protox), a
//! descriptor set (`protoc -o`, `buf build -o`), or the file descriptors a server's reflection
//! returned.
//!
//! Invariant: custom options survive loading. A pool is only ever built from descriptor
//! *bytes* (protox's own pool, or `DescriptorPool::decode`), never from decoded
//! `prost_types` structs, which drop the extension fields that carry `google.api.http`.
//! [`Schema::bytes`] (the pool as a `FileDescriptorSet`) is what the state store keeps and what
//! `grpc export` writes; it loads back into the same pool.

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};

use bytes::{BufMut, Bytes, BytesMut};
use prost::Message;
use prost_reflect::{DescriptorPool, ServiceDescriptor};
use protox::file::{ChainFileResolver, GoogleFileResolver, IncludeFileResolver};

use crate::bundled;

/// Why a schema could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("{0}")]
    Compile(String),
    #[error("not a valid descriptor set: {0}")]
    Decode(String),
    #[error(
        "the descriptor set lacks `{missing}` (imported by `{by}`): build it with the imports included (`protoc --include_imports -o …`, `buf build -o …`)"
    )]
    MissingImport { missing: String, by: String },
    #[error("the schema has no service `{0}`")]
    NoService(String),
}

/// A loaded schema.
#[derive(Clone, Debug)]
pub struct Schema {
    pub pool: DescriptorPool,
}

/// `files` compiled, imports resolved against `include`, then the bundled files and the
/// well-known types.
fn compiled(files: &[PathBuf], include: &[PathBuf]) -> Result<protox::Compiler, SchemaError> {
    let mut chain = ChainFileResolver::new();
    for dir in include {
        chain.add(IncludeFileResolver::new(dir.clone()));
    }
    chain.add(bundled::Bundled);
    chain.add(GoogleFileResolver::new());
    let mut compiler = protox::Compiler::with_file_resolver(chain);
    compiler.include_imports(true);
    for f in files {
        compiler.open_file(f).map_err(|e| SchemaError::Compile(compile_error(&e, f)))?;
    }
    Ok(compiler)
}

impl Schema {
    /// Compiles `.proto` files. `files` are paths (under one of `include`, or relative to it);
    /// imports resolve against `include`, then the bundled files and the well-known types.
    pub fn compile(files: &[PathBuf], include: &[PathBuf]) -> Result<Schema, SchemaError> {
        Ok(Schema { pool: compiled(files, include)?.descriptor_pool() })
    }

    /// The files on disk that compiling `files` reads (imports included; bundled and
    /// well-known files are not on disk): (import name, path), in import order.
    pub fn sources(files: &[PathBuf], include: &[PathBuf]) -> Result<Vec<(String, PathBuf)>, SchemaError> {
        let compiler = compiled(files, include)?;
        Ok(compiler.files().filter_map(|f| Some((f.name().to_owned(), f.path()?.to_owned()))).collect())
    }

    /// Loads an encoded `FileDescriptorSet`. Imports the set lacks are supplied from the
    /// bundled files and the well-known types; any other missing import is an error.
    pub fn from_descriptor_set(bytes: &[u8]) -> Result<Schema, SchemaError> {
        Self::from_files(split_set(bytes)?)
    }

    /// Loads serialized `FileDescriptorProto`s (a reflection answer's), in any order.
    pub fn from_files(files: Vec<Bytes>) -> Result<Schema, SchemaError> {
        let mut names = HashSet::new();
        let mut imports = Vec::new();
        for raw in &files {
            let f = prost_types::FileDescriptorProto::decode(raw.as_ref())
                .map_err(|e| SchemaError::Decode(e.to_string()))?;
            let name = f.name.unwrap_or_default();
            imports.extend(f.dependency.into_iter().map(|d| (d, name.clone())));
            names.insert(name);
        }
        // The bundled files the set lacks, with their own imports.
        let mut supplied = BTreeSet::new();
        let mut queue: Vec<(String, String)> = imports;
        while let Some((missing, by)) = queue.pop() {
            if names.contains(&missing) || supplied.contains(&missing) {
                continue;
            }
            let Some(file) = bundled::pool().get_file_by_name(&missing) else {
                return Err(SchemaError::MissingImport { missing, by });
            };
            queue.extend(file.dependencies().map(|d| (d.name().to_owned(), missing.clone())));
            supplied.insert(missing);
        }
        let mut set = BytesMut::new();
        for name in &supplied {
            let file = bundled::pool().get_file_by_name(name).expect("checked above");
            put_file(&mut set, &file.encode_to_vec());
        }
        for raw in &files {
            put_file(&mut set, raw);
        }
        let pool = DescriptorPool::decode(set.freeze()).map_err(|e| SchemaError::Decode(e.to_string()))?;
        Ok(Schema { pool })
    }

    /// The pool as an encoded `FileDescriptorSet` (every file, options kept).
    pub fn bytes(&self) -> Vec<u8> {
        self.pool.encode_to_vec()
    }

    /// A service by its full name (`drone.v1.Telemetry`).
    pub fn service(&self, name: &str) -> Result<ServiceDescriptor, SchemaError> {
        self.pool.get_service_by_name(name).ok_or_else(|| SchemaError::NoService(name.to_owned()))
    }

    /// The services the schema defines, apart from the bundled protocols'.
    pub fn services(&self) -> Vec<ServiceDescriptor> {
        self.pool.services().filter(|s| !s.full_name().starts_with("grpc.reflection.")).collect()
    }
}

/// protox's error, with the file it was compiling.
fn compile_error(e: &protox::Error, file: &Path) -> String {
    let text = e.to_string();
    if text.contains(&file.display().to_string()) { text } else { format!("{}: {text}", file.display()) }
}

/// The files of an encoded `FileDescriptorSet` (field 1, repeated), as bytes.
pub fn split_set(bytes: &[u8]) -> Result<Vec<Bytes>, SchemaError> {
    use prost::encoding::{WireType, decode_key, decode_varint, skip_field};
    let mut buf = bytes;
    let mut files = Vec::new();
    while !buf.is_empty() {
        let (tag, wire) = decode_key(&mut buf).map_err(|e| SchemaError::Decode(e.to_string()))?;
        if tag == 1 && wire == WireType::LengthDelimited {
            let len = decode_varint(&mut buf).map_err(|e| SchemaError::Decode(e.to_string()))? as usize;
            if len > buf.len() {
                return Err(SchemaError::Decode("a file runs past the end of the set".into()));
            }
            files.push(Bytes::copy_from_slice(&buf[..len]));
            buf = &buf[len..];
        } else {
            skip_field(wire, tag, &mut buf, prost::encoding::DecodeContext::default())
                .map_err(|e| SchemaError::Decode(e.to_string()))?;
        }
    }
    Ok(files)
}

/// Appends one file to an encoded `FileDescriptorSet`.
pub fn put_file(set: &mut BytesMut, file: &[u8]) {
    prost::encoding::encode_key(1, prost::encoding::WireType::LengthDelimited, set);
    prost::encoding::encode_varint(file.len() as u64, set);
    set.put_slice(file);
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const DRONE: &str = r#"
syntax = "proto3";
package drone.v1;
import "google/api/annotations.proto";
import "google/protobuf/timestamp.proto";
service Telemetry {
  rpc GetStatus(StatusRequest) returns (Status) { option (google.api.http) = { get: "/v1/drones/{id}" }; }
  rpc Ping(StatusRequest) returns (Status);
}
message StatusRequest { string id = 1; }
message Status { string id = 1; google.protobuf.Timestamp at = 2; }
"#;

    fn http_rule(schema: &Schema) -> Option<String> {
        let ext = schema.pool.get_extension_by_name("google.api.http")?;
        let m = schema.service("drone.v1.Telemetry").ok()?.methods().find(|m| m.name() == "GetStatus")?;
        let opts = m.options();
        let rule = opts.get_extension(&ext);
        rule.as_message()?.get_field_by_name("get").map(|v| v.as_str().unwrap_or_default().to_owned())
    }

    #[test]
    fn compiled_protos_keep_http_annotations_through_bytes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("drone.proto"), DRONE).unwrap();
        let schema = Schema::compile(&[PathBuf::from("drone.proto")], &[dir.path().to_owned()]).unwrap();
        assert_eq!(http_rule(&schema).as_deref(), Some("/v1/drones/{id}"));
        let again = Schema::from_descriptor_set(&schema.bytes()).unwrap();
        assert_eq!(http_rule(&again).as_deref(), Some("/v1/drones/{id}"));
        assert_eq!(again.services().len(), 1);
    }

    #[test]
    fn a_set_without_its_imports_gets_the_bundled_ones_or_names_what_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("drone.proto"), DRONE).unwrap();
        let schema = Schema::compile(&[PathBuf::from("drone.proto")], &[dir.path().to_owned()]).unwrap();
        let only = schema.pool.get_file_by_name("drone.proto").unwrap().encode_to_vec();
        let again = Schema::from_files(vec![only.into()]).unwrap();
        assert_eq!(http_rule(&again).as_deref(), Some("/v1/drones/{id}"));

        std::fs::write(
            dir.path().join("uses.proto"),
            "syntax = \"proto3\"; import \"drone.proto\"; message U { drone.v1.Status s = 1; }",
        )
        .unwrap();
        let both = Schema::compile(&[PathBuf::from("uses.proto")], &[dir.path().to_owned()]).unwrap();
        let only = both.pool.get_file_by_name("uses.proto").unwrap().encode_to_vec();
        let err = Schema::from_files(vec![only.into()]).unwrap_err().to_string();
        assert!(err.contains("lacks `drone.proto` (imported by `uses.proto`)"), "{err}");
    }

    #[test]
    fn compile_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("bad.proto"), "syntax = \"proto3\"; message {").unwrap();
        let err = Schema::compile(&[PathBuf::from("bad.proto")], &[dir.path().to_owned()]).unwrap_err();
        assert!(err.to_string().contains("bad.proto"), "{err}");
        let err = Schema::compile(&[PathBuf::from("none.proto")], &[dir.path().to_owned()]).unwrap_err();
        assert!(err.to_string().contains("none.proto"), "{err}");
        assert!(Schema::from_descriptor_set(b"\x0a\x05ab").is_err());
    }
}
