//! A service's HTTP bindings: each method's `google.api.http` rule (and its
//! `additional_bindings`), and for every method `POST /{package.Service}/{Method}` with the
//! request message as the JSON body (the only binding of a method without a rule).
//!
//! Built once per schema; a request finds its binding by method and path, the most specific
//! template first ([`Template::specificity`]).

use std::sync::Arc;

use http::Method;
use prost_reflect::{
    DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, MethodDescriptor, ServiceDescriptor,
};

use crate::template::Template;

/// Where the request message comes from besides the path.
#[derive(Debug, Clone)]
pub enum BodyRule {
    /// No body: the fields the path leaves are query parameters.
    None,
    /// `body: "*"`: the body is the message (path variables override its fields).
    All,
    /// `body: "field"`: the body is that top-level field; other fields come from the query.
    Field(FieldDescriptor),
}

/// One HTTP binding of a method.
#[derive(Debug, Clone)]
pub struct Binding {
    pub method: MethodDescriptor,
    pub http_method: Method,
    pub template: Template,
    /// The field chain each template variable sets, in the template's order.
    pub vars: Vec<Vec<FieldDescriptor>>,
    pub body: BodyRule,
    /// `response_body`: the top-level response field sent as the body instead of the message.
    pub response_body: Option<FieldDescriptor>,
    /// Made for a method without annotations.
    pub synthesized: bool,
    /// The service's and the method's names, for metrics labels (made once, not per call).
    pub labels: (Arc<str>, Arc<str>),
}

/// The metrics labels of a method.
fn labels(m: &MethodDescriptor) -> (Arc<str>, Arc<str>) {
    (m.parent_service().full_name().into(), m.name().into())
}

impl Binding {
    /// `GET /v1/drones/{id}`, for listings and errors.
    pub fn describe(&self) -> String {
        format!("{} {}", self.http_method, self.template.display())
    }
}

/// A template with each variable written as the segments it takes (`{id}` as `*`,
/// `{name=shelves/*}` as `shelves/*`): two templates with the same form take the same paths.
fn paths_of(template: &str) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let Some(close) = rest[open..].find('}') else { break };
        let var = &rest[open + 1..open + close];
        out.push_str(var.split_once('=').map_or("*", |(_, segments)| segments));
        rest = &rest[open + close + 1..];
    }
    out.push_str(rest);
    out
}

/// Why a binding could not be built.
#[derive(Debug, thiserror::Error)]
#[error("method `{method}`: {reason}")]
pub struct BindingError {
    pub method: String,
    pub reason: String,
}

/// What a request's method and path found.
pub enum Found<'a> {
    /// The binding and its variables' raw values.
    Binding(&'a Binding, Vec<&'a str>),
    /// A binding has this path, not this method; the allowed methods.
    MethodNotAllowed(String),
    NotFound,
}

/// All bindings of one service.
#[derive(Debug, Clone, Default)]
pub struct Bindings {
    list: Vec<Binding>,
}

impl Bindings {
    /// The bindings of every method of `service`; the first rule that cannot bind fails it.
    pub fn build(service: &ServiceDescriptor) -> Result<Bindings, BindingError> {
        let (b, errors) = Self::build_each(service);
        match errors.into_iter().next() {
            Some(e) => Err(e),
            None => Ok(b),
        }
    }

    /// The bindings of every method of `service` that binds, and why the others do not (a
    /// method whose rule is bad keeps its `POST /{package.Service}/{Method}`).
    pub fn build_each(service: &ServiceDescriptor) -> (Bindings, Vec<BindingError>) {
        let mut errors = Vec::new();
        let mut all = Bindings::default();
        for method in service.methods() {
            match Self::method(service, &method) {
                Ok(mut list) => all.list.append(&mut list),
                Err((mut list, e)) => {
                    all.list.append(&mut list);
                    errors.push(e);
                }
            }
        }
        all.list.sort_by_key(|b| std::cmp::Reverse(b.template.specificity()));
        (all, errors)
    }

    /// One method's bindings; on a bad rule, its gRPC path alone and the error.
    #[allow(clippy::type_complexity)]
    fn method(
        service: &ServiceDescriptor,
        method: &MethodDescriptor,
    ) -> Result<Vec<Binding>, (Vec<Binding>, BindingError)> {
        let err = |reason: String| BindingError { method: method.full_name().to_owned(), reason };
        // Every method answers at its gRPC path, the body being the request message.
        let path = format!("/{}/{}", service.full_name(), method.name());
        let grpc_path = match Template::parse(&path) {
            Ok(template) => vec![Binding {
                method: method.clone(),
                http_method: Method::POST,
                template,
                vars: Vec::new(),
                body: BodyRule::All,
                response_body: None,
                synthesized: true,
                labels: labels(method),
            }],
            Err(e) => return Err((Vec::new(), err(e.to_string()))),
        };
        let http = service.parent_pool().get_extension_by_name("google.api.http");
        let rule = http.as_ref().and_then(|ext| {
            let opts = method.options();
            opts.has_extension(ext).then(|| opts.get_extension(ext).as_message().cloned()).flatten()
        });
        let Some(rule) = rule else { return Ok(grpc_path) };
        let mut list = Vec::new();
        let mut rules = vec![rule.clone()];
        if let Some(more) = rule.get_field_by_name("additional_bindings")
            && let Some(more) = more.as_list()
        {
            rules.extend(more.iter().filter_map(|v| v.as_message().cloned()));
        }
        for r in &rules {
            match binding(method, r) {
                Ok(b) => list.push(b),
                Err(e) => return Err((grpc_path, err(e))),
            }
        }
        list.extend(grpc_path);
        Ok(list)
    }

    /// Adds another service's bindings.
    pub fn extend(&mut self, other: Bindings) {
        self.list.extend(other.list);
        self.list.sort_by_key(|b| std::cmp::Reverse(b.template.specificity()));
    }

    /// The bindings an earlier one hides: the same HTTP method and a template that takes the
    /// same paths (`/v1/{id}` and `/v1/{name}`). The first in match order answers; each later
    /// one is named, with the binding that takes its requests.
    pub fn shadowed(&self) -> Vec<BindingError> {
        let mut seen: Vec<(&Method, String, &Binding)> = Vec::new();
        let mut out = Vec::new();
        for b in &self.list {
            let paths = paths_of(b.template.display());
            match seen.iter().find(|(m, p, _)| *m == b.http_method && *p == paths) {
                // A method bound twice to the same requests (its rule at its own gRPC path) is
                // answered either way.
                Some((_, _, first)) if first.method == b.method => {}
                Some((_, _, first)) => out.push(BindingError {
                    method: b.method.full_name().to_owned(),
                    reason: format!(
                        "`{}` is never reached: `{}` of `{}` takes the same requests",
                        b.describe(),
                        first.describe(),
                        first.method.full_name()
                    ),
                }),
                None => seen.push((&b.http_method, paths, b)),
            }
        }
        out
    }

    pub fn iter(&self) -> impl Iterator<Item = &Binding> {
        self.list.iter()
    }

    /// Whether any binding's template matches `path` (whatever the method).
    pub fn matches_path(&self, path: &str) -> bool {
        self.list.iter().any(|b| b.template.matches(path).is_some())
    }

    /// The binding for a method and path.
    pub fn find<'a>(&'a self, method: &Method, path: &'a str) -> Found<'a> {
        let mut allow: Vec<&str> = Vec::new();
        for b in &self.list {
            if let Some(vars) = b.template.matches(path) {
                if b.http_method == method {
                    return Found::Binding(b, vars);
                }
                if !allow.contains(&b.http_method.as_str()) {
                    allow.push(b.http_method.as_str());
                }
            }
        }
        if allow.is_empty() { Found::NotFound } else { Found::MethodNotAllowed(allow.join(", ")) }
    }

    /// The bindings closest to `path` (at most three), by edit distance: for a 404. A path
    /// longer than any sensible binding gets none (the distance is quadratic).
    pub fn nearest(&self, path: &str) -> Vec<String> {
        if path.len() > 256 {
            return Vec::new();
        }
        let mut scored: Vec<(usize, String)> =
            self.list.iter().map(|b| (distance(path, b.template.display()), b.describe())).collect();
        scored.sort();
        scored.dedup_by(|a, b| a.1 == b.1);
        scored.into_iter().take(3).map(|(_, d)| d).collect()
    }
}

/// One binding from an `HttpRule` message.
fn binding(method: &MethodDescriptor, rule: &DynamicMessage) -> Result<Binding, String> {
    let text = |name: &str| {
        rule.get_field_by_name(name).and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
    };
    let mut pattern = None;
    for (field, m) in [
        ("get", Method::GET),
        ("put", Method::PUT),
        ("post", Method::POST),
        ("delete", Method::DELETE),
        ("patch", Method::PATCH),
    ] {
        if rule.has_field_by_name(field) {
            pattern = Some((m, text(field)));
        }
    }
    if rule.has_field_by_name("custom") {
        let custom = rule.get_field_by_name("custom");
        let custom = custom.as_ref().and_then(|v| v.as_message()).ok_or("invalid custom pattern")?;
        let kind =
            custom.get_field_by_name("kind").and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
        let path =
            custom.get_field_by_name("path").and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
        let m = Method::from_bytes(kind.as_bytes())
            .map_err(|_| format!("custom method `{kind}` is not an HTTP method"))?;
        pattern = Some((m, path));
    }
    let (http_method, path) =
        pattern.ok_or("the google.api.http rule has no pattern (get, put, post, delete, patch, custom)")?;
    let template = Template::parse(&path).map_err(|e| e.to_string())?;
    let input = method.input();
    let vars =
        template.vars.iter().map(|v| field_path(&input, &v.field, true)).collect::<Result<Vec<_>, _>>()?;
    let body = match text("body").as_str() {
        "" => BodyRule::None,
        "*" => BodyRule::All,
        name => {
            let f = input
                .get_field_by_name(name)
                .ok_or_else(|| format!("body `{name}` is not a field of `{}`", input.full_name()))?;
            BodyRule::Field(f)
        }
    };
    if method.is_client_streaming() && !matches!(body, BodyRule::All) {
        return Err("a client-streaming method needs `body: \"*\"` (each NDJSON line is one message)".into());
    }
    let response_body = match text("response_body").as_str() {
        "" => None,
        name => Some(method.output().get_field_by_name(name).ok_or_else(|| {
            format!("response_body `{name}` is not a field of `{}`", method.output().full_name())
        })?),
    };
    Ok(Binding {
        method: method.clone(),
        http_method,
        template,
        vars,
        body,
        response_body,
        synthesized: false,
        labels: labels(method),
    })
}

/// Resolves `a.b.c` (proto field names) in `message`: every step but the last a singular
/// message field. With `scalar`, the last must be a singular non-message field or a
/// well-known type written as a JSON string (what a path segment can carry).
pub fn field_path(
    message: &MessageDescriptor,
    path: &str,
    scalar: bool,
) -> Result<Vec<FieldDescriptor>, String> {
    let mut chain = Vec::new();
    let mut current = message.clone();
    let parts: Vec<&str> = path.split('.').collect();
    for (i, name) in parts.iter().enumerate() {
        let f = current
            .get_field_by_name(name)
            .or_else(|| current.get_field_by_json_name(name))
            .ok_or_else(|| format!("`{path}`: `{name}` is not a field of `{}`", current.full_name()))?;
        let last = i + 1 == parts.len();
        if !last {
            match f.kind() {
                Kind::Message(m) if !f.is_list() && !f.is_map() => current = m,
                _ => {
                    return Err(format!(
                        "`{path}`: `{name}` is not a message field, so it has no `{}`",
                        parts[i + 1]
                    ));
                }
            }
        } else if scalar
            && (f.is_list() || f.is_map() || matches!(f.kind(), Kind::Message(m) if !string_wkt(&m)))
        {
            return Err(format!("`{path}` is a repeated or message field; a path variable sets one value"));
        }
        chain.push(f);
    }
    Ok(chain)
}

/// Well-known types whose JSON form is a string or scalar, so one text value can set them.
pub fn string_wkt(m: &MessageDescriptor) -> bool {
    matches!(
        m.full_name(),
        "google.protobuf.Timestamp"
            | "google.protobuf.Duration"
            | "google.protobuf.FieldMask"
            | "google.protobuf.StringValue"
            | "google.protobuf.BytesValue"
            | "google.protobuf.BoolValue"
            | "google.protobuf.Int32Value"
            | "google.protobuf.Int64Value"
            | "google.protobuf.UInt32Value"
            | "google.protobuf.UInt64Value"
            | "google.protobuf.FloatValue"
            | "google.protobuf.DoubleValue"
    )
}

/// Levenshtein distance over bytes.
fn distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != cb)).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::schema::Schema;

    pub(crate) fn schema(proto: &str) -> Schema {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("t.proto"), proto).unwrap();
        Schema::compile(&["t.proto".into()], &[dir.path().to_owned()]).unwrap()
    }

    const SHELF: &str = r#"
syntax = "proto3";
package lib.v1;
import "google/api/annotations.proto";
service Library {
  rpc GetBook(GetBookRequest) returns (Book) {
    option (google.api.http) = { get: "/v1/{name=shelves/*/books/*}" additional_bindings { get: "/v1/books/{name}" } };
  }
  rpc UpdateBook(UpdateBookRequest) returns (Book) {
    option (google.api.http) = { patch: "/v1/{book.name=shelves/*/books/*}" body: "book" response_body: "name" };
  }
  rpc Latest(GetBookRequest) returns (Book) { option (google.api.http) = { get: "/v1/books/latest" }; }
  rpc Cancel(GetBookRequest) returns (Book) { option (google.api.http) = { custom: { kind: "POST" path: "/v1/{name=ops/*}:cancel" } body: "*" }; }
  rpc Plain(GetBookRequest) returns (Book);
}
message GetBookRequest { string name = 1; int32 page = 2; }
message UpdateBookRequest { Book book = 1; }
message Book { string name = 1; repeated string tags = 2; }
"#;

    #[test]
    fn bindings_come_from_rules_additional_bindings_and_synthesis() {
        let s = schema(SHELF);
        let b = Bindings::build(&s.service("lib.v1.Library").unwrap()).unwrap();
        let find = |m: Method, p: &'static str| match b.find(&m, p) {
            Found::Binding(b, vars) => format!("{} {vars:?}", b.method.name()),
            Found::MethodNotAllowed(a) => format!("405 {a}"),
            Found::NotFound => "404".into(),
        };
        assert_eq!(find(Method::GET, "/v1/shelves/s1/books/b1"), r#"GetBook ["shelves/s1/books/b1"]"#);
        assert_eq!(find(Method::GET, "/v1/books/b1"), r#"GetBook ["b1"]"#);
        assert_eq!(find(Method::GET, "/v1/books/latest"), "Latest []", "the literal beats the variable");
        assert_eq!(find(Method::PATCH, "/v1/shelves/s1/books/b1"), r#"UpdateBook ["shelves/s1/books/b1"]"#);
        assert_eq!(find(Method::DELETE, "/v1/shelves/s1/books/b1"), "405 GET, PATCH");
        assert_eq!(find(Method::POST, "/v1/ops/o1:cancel"), r#"Cancel ["ops/o1"]"#);
        assert_eq!(find(Method::POST, "/lib.v1.Library/Plain"), "Plain []");
        assert_eq!(
            find(Method::POST, "/lib.v1.Library/GetBook"),
            "GetBook []",
            "annotated methods keep their gRPC path"
        );
        assert_eq!(b.nearest("/lib.v1.Library/Plan")[0], "POST /lib.v1.Library/Plain");
    }

    #[test]
    fn bindings_hidden_by_an_earlier_one_are_named() {
        let s = schema(
            r#"syntax = "proto3"; package t; import "google/api/annotations.proto";
service S {
  rpc A(Req) returns (Req) { option (google.api.http) = { get: "/v1/{id}" }; }
  rpc B(Req) returns (Req) { option (google.api.http) = { get: "/v1/{name}" additional_bindings { post: "/v1/{name}" } }; }
  rpc C(Req) returns (Req) { option (google.api.http) = { get: "/v1/{name=items/*}" }; }
  rpc D(Req) returns (Req) { option (google.api.http) = { get: "/v1/{id=items/*}" }; }
}
message Req { string id = 1; string name = 2; }"#,
        );
        let b = Bindings::build(&s.service("t.S").unwrap()).unwrap();
        let hidden: Vec<String> = b.shadowed().iter().map(ToString::to_string).collect();
        assert_eq!(
            hidden,
            [
                "method `t.S.D`: `GET /v1/{id=items/*}` is never reached: `GET /v1/{name=items/*}` of `t.S.C` takes the same requests",
                "method `t.S.B`: `GET /v1/{name}` is never reached: `GET /v1/{id}` of `t.S.A` takes the same requests",
            ]
        );
        assert_eq!(paths_of("/v1/{a.b}/x/{c=**}:go"), "/v1/*/x/**:go");
    }

    #[test]
    fn rules_that_name_missing_or_unfit_fields_are_refused() {
        for (rule, reason) in [
            (r#"get: "/v1/{nope}""#, "`nope` is not a field of `t.Req`"),
            (r#"get: "/v1/{tags}""#, "repeated or message field"),
            (r#"get: "/v1/{inner.id.x}""#, "not a message field"),
            (r#"post: "/v1/x" body: "nope""#, "body `nope` is not a field"),
            (r#"post: "/v1/x" response_body: "nope""#, "response_body `nope`"),
            (r#"custom: { kind: "BAD KIND" path: "/x" }"#, "not an HTTP method"),
            (r#"body: "*""#, "has no pattern"),
            (r#"get: "/v1/{id""#, "never closed"),
        ] {
            let proto = format!(
                r#"syntax = "proto3"; package t; import "google/api/annotations.proto";
service S {{ rpc M(Req) returns (Req) {{ option (google.api.http) = {{ {rule} }}; }} }}
message Inner {{ string id = 1; }}
message Req {{ string id = 1; repeated string tags = 2; Inner inner = 3; }}"#
            );
            let s = schema(&proto);
            let e = Bindings::build(&s.service("t.S").unwrap()).unwrap_err().to_string();
            assert!(e.contains(reason) && e.contains("t.S.M"), "{rule}: {e}");
        }
    }
}
