//! Every JSON mapping case, against the canonical JSON proto3 specifies.

use super::*;
use crate::binding::{Bindings, Found};
use crate::schema::Schema;
use http::Method;
use serde_json::json;

const PROTO: &str = r#"
syntax = "proto3";
package m.v1;
import "google/api/annotations.proto";
import "google/api/httpbody.proto";
import "google/protobuf/timestamp.proto";
import "google/protobuf/duration.proto";
import "google/protobuf/struct.proto";
import "google/protobuf/wrappers.proto";
import "google/protobuf/field_mask.proto";
import "google/protobuf/any.proto";
import "google/protobuf/empty.proto";

enum Mode { MODE_UNSPECIFIED = 0; HOVER = 1; LAND = 2; }
message Inner { string id = 1; int64 count = 2; }
message All {
  string drone_id = 1;
  int32 i32 = 2;
  int64 i64 = 3;
  uint64 u64 = 4;
  bool flag = 5;
  double d = 6;
  bytes raw = 7;
  Mode mode = 8;
  repeated string tags = 9;
  repeated Mode modes = 10;
  Inner inner = 11;
  map<string, int32> counts = 12;
  google.protobuf.Timestamp at = 13;
  google.protobuf.Duration took = 14;
  google.protobuf.Struct meta = 15;
  google.protobuf.Value any_value = 16;
  google.protobuf.Int32Value maybe = 17;
  google.protobuf.FieldMask mask = 18;
  google.protobuf.Any extra = 19;
  google.protobuf.Empty nothing = 20;
  oneof target { string name = 21; int32 number = 22; }
  google.protobuf.BoolValue maybe_flag = 23;
}
service S {
  rpc Get(All) returns (All) { option (google.api.http) = { get: "/v1/all/{drone_id}/{inner.id}" }; }
  rpc Put(All) returns (All) { option (google.api.http) = { put: "/v1/all/{drone_id}" body: "*" }; }
  rpc Patch(All) returns (All) { option (google.api.http) = { patch: "/v1/inner/{drone_id}" body: "inner" response_body: "inner" }; }
  rpc Tags(All) returns (All) { option (google.api.http) = { get: "/v1/tags" response_body: "tags" }; }
  rpc Upload(google.api.HttpBody) returns (google.api.HttpBody) { option (google.api.http) = { post: "/v1/upload" body: "*" }; }
  rpc Plain(All) returns (All);
  rpc Find(All) returns (All) { option (google.api.http) = { get: "/v1/find/{drone_id}" additional_bindings { get: "/v1/find/{drone_id}/{name}" } }; }
}
"#;

fn schema() -> Schema {
    crate::binding::tests::schema(PROTO)
}

/// The request message for `method path?query` with `body`, as canonical JSON (defaults out).
fn request(method: Method, target: &str, body: &str) -> Result<Value, RequestError> {
    request_with(method, target, body, JsonOptions::default())
}

fn request_with(method: Method, target: &str, body: &str, opts: JsonOptions) -> Result<Value, RequestError> {
    let s = schema();
    let bindings = Bindings::build(&s.service("m.v1.S").unwrap()).unwrap();
    let (path, query) = target.split_once('?').map_or((target, None), |(p, q)| (p, Some(q)));
    let Found::Binding(b, vars) = bindings.find(&method, path) else { panic!("no binding for {target}") };
    let msg = request_message(b, &vars, query, body.as_bytes(), Some("text/csv"), &opts)?;
    Ok(serde_json::from_slice(&response_json(&msg, None, &JsonOptions::default())).unwrap())
}

#[test]
fn canonical_json_both_ways_for_every_kind() {
    let body = json!({
        "droneId": "d1", "i32": 7, "i64": "9007199254740993", "u64": 18446744073709551615u64,
        "flag": true, "d": "NaN", "raw": "AAEC", "mode": "HOVER", "tags": ["a", "b"],
        "modes": ["LAND", 1], "inner": {"id": "x", "count": 3}, "counts": {"k": 2},
        "at": "2026-12-07T10:00:00.5Z", "took": "1.5s", "meta": {"a": [1, "two", null]},
        "anyValue": 3.5, "maybe": 0, "mask": "droneId,inner.id",
        "extra": {"@type": "type.googleapis.com/m.v1.Inner", "id": "in-any"},
        "nothing": {}, "name": "by-name", "maybeFlag": false
    });
    let got = request(Method::PUT, "/v1/all/d1", &body.to_string()).unwrap();
    let want = json!({
        "droneId": "d1", "i32": 7, "i64": "9007199254740993", "u64": "18446744073709551615",
        "flag": true, "d": "NaN", "raw": "AAEC", "mode": "HOVER", "tags": ["a", "b"],
        "modes": ["LAND", "HOVER"], "inner": {"id": "x", "count": "3"}, "counts": {"k": 2},
        "at": "2026-12-07T10:00:00.500Z", "took": "1.500s", "meta": {"a": [1.0, "two", null]},
        "anyValue": 3.5, "maybe": 0, "mask": "droneId,inner.id",
        "extra": {"@type": "type.googleapis.com/m.v1.Inner", "id": "in-any"},
        "nothing": {}, "name": "by-name", "maybeFlag": false
    });
    assert_eq!(got, want);
}

#[test]
fn defaults_and_proto_names_are_options() {
    let s = schema();
    let desc = s.pool.get_message_by_name("m.v1.Inner").unwrap();
    let msg = from_json(&desc, json!({"id": ""}), &JsonOptions::default()).unwrap();
    assert_eq!(response_json(&msg, None, &JsonOptions::default()), "{}");
    let all = JsonOptions { emit_defaults: true, ..JsonOptions::default() };
    assert_eq!(response_json(&msg, None, &all), r#"{"id":"","count":"0"}"#);
    let desc = s.pool.get_message_by_name("m.v1.All").unwrap();
    let msg = from_json(&desc, json!({"drone_id": "d"}), &JsonOptions::default()).unwrap();
    let proto = JsonOptions { proto_names: true, ..JsonOptions::default() };
    assert_eq!(response_json(&msg, None, &proto), r#"{"drone_id":"d"}"#);
    assert_eq!(response_json(&msg, None, &JsonOptions::default()), r#"{"droneId":"d"}"#);
}

#[test]
fn mistakes_name_the_field_path_and_the_expected_type() {
    for (body, path, expected) in [
        (json!({"i32": "seven"}), "i32", "invalid digit"),
        (json!({"i32": 1.5}), "i32", "integer"),
        (json!({"inner": {"count": true}}), "inner.count", "64-bit signed integer"),
        (json!({"mode": "FLY"}), "mode", "FLY"),
        (json!({"tags": "one"}), "tags", "a list"),
        (json!({"at": "yesterday"}), "at", ""),
        (json!({"raw": "!!"}), "raw", ""),
        (json!({"inner": {"nope": 1}}), "inner", "nope"),
        (json!({"name": "a", "number": 2}), "", "target"),
    ] {
        match request(Method::PUT, "/v1/all/d1", &body.to_string()) {
            Err(RequestError::Field { path: p, reason }) => {
                assert!(p == path || (path.is_empty()), "{body}: path {p}");
                assert!(reason.contains(expected), "{body}: {reason}");
            }
            Err(RequestError::Message(m)) if path.is_empty() => assert!(m.contains(expected), "{body}: {m}"),
            other => panic!("{body}: {other:?}"),
        }
    }
    assert!(matches!(request(Method::PUT, "/v1/all/d1", "{\"i32\":"), Err(RequestError::NotJson(_))));
    let e = request(Method::PUT, "/v1/all/d1", r#"{"bogus": 1}"#).unwrap_err();
    assert!(e.to_string().contains("bogus"), "{e}");
    let lenient = JsonOptions { ignore_unknown: true, ..JsonOptions::default() };
    let got = request_with(Method::PUT, "/v1/all/d1?x=1", r#"{"bogus": 1, "i32": 2}"#, lenient).unwrap();
    assert_eq!(got, json!({"droneId": "d1", "i32": 2}));
}

#[test]
fn path_variables_win_over_the_body_and_fill_nested_fields() {
    let got = request(Method::PUT, "/v1/all/from-path", r#"{"droneId": "from-body", "i32": 1}"#).unwrap();
    assert_eq!(got, json!({"droneId": "from-path", "i32": 1}));
    let got = request(Method::GET, "/v1/all/d%201/in%2Fner", "").unwrap();
    assert_eq!(got, json!({"droneId": "d 1", "inner": {"id": "in/ner"}}));
    let e = request(Method::GET, "/v1/all/%FF/x", "").unwrap_err();
    assert!(matches!(e, RequestError::Var { ref field, .. } if field == "drone_id"), "{e:?}");
}

#[test]
fn string_path_variables_alone_make_the_same_message_as_through_json() {
    // Without body or query, string variables are set directly; with a query, through JSON.
    let direct = request(Method::GET, "/v1/find/d%2F1", "").unwrap();
    assert_eq!(direct, json!({"droneId": "d/1"}));
    let mut through_json = request(Method::GET, "/v1/find/d%2F1?inner.count=0", "").unwrap();
    assert_eq!(through_json.as_object_mut().unwrap().remove("inner"), Some(json!({})));
    assert_eq!(direct, through_json);
    assert!(matches!(request(Method::GET, "/v1/find/%FF", ""), Err(RequestError::Var { .. })));
    // A oneof member goes through JSON.
    assert_eq!(request(Method::GET, "/v1/find/d/n%20x", "").unwrap(), json!({"droneId": "d", "name": "n x"}));
}

#[test]
fn query_parameters_fill_the_remaining_fields_typed_by_the_field() {
    let got = request(
        Method::GET,
        "/v1/all/d1/i1?i32=5&i64=-9007199254740993&flag=true&mode=LAND&modes=HOVER&modes=2&tags=a&tags=b+c&inner.count=4&at=2026-12-07T10:00:00Z&took=2s&maybe=3&maybeFlag=true&mask=a,b&raw=AAE%3D&d=2.5",
        "",
    )
    .unwrap();
    assert_eq!(
        got,
        json!({
            "droneId": "d1", "i32": 5, "i64": "-9007199254740993", "flag": true, "mode": "LAND",
            "modes": ["HOVER", "LAND"], "tags": ["a", "b c"], "inner": {"id": "i1", "count": "4"},
            "at": "2026-12-07T10:00:00Z", "took": "2s", "maybe": 3, "maybeFlag": true,
            "mask": "a,b", "raw": "AAE=", "d": 2.5
        })
    );
    for (query, reason) in [
        ("nope=1", "`nope` is not a field"),
        ("drone_id=x", "the path sets this field"),
        ("inner.id=x", "the path sets this field"),
        ("i32=1&i32=2", "given more than once"),
        ("meta=x", "cannot be set from the query"),
        ("counts=x", "cannot be set from the query"),
    ] {
        let e = request(Method::GET, &format!("/v1/all/d1/i1?{query}"), "").unwrap_err().to_string();
        assert!(e.contains(reason), "{query}: {e}");
    }
    let e = request(Method::GET, "/v1/all/d1/i1?i32=x", "").unwrap_err();
    assert!(matches!(e, RequestError::Field { ref path, .. } if path == "i32"), "{e:?}");
    let e = request(Method::PUT, "/v1/all/d1?i32=1", "{}").unwrap_err().to_string();
    assert!(e.contains("takes every field from the body"), "{e}");
    let e = request(Method::GET, "/v1/all/d1/i1", "{}").unwrap_err().to_string();
    assert!(e.contains("takes no request body"), "{e}");
}

#[test]
fn a_body_field_and_a_response_body_field() {
    let s = schema();
    let bindings = Bindings::build(&s.service("m.v1.S").unwrap()).unwrap();
    let Found::Binding(b, vars) = bindings.find(&Method::PATCH, "/v1/inner/d9") else { panic!() };
    let msg = request_message(
        b,
        &vars,
        Some("i32=4"),
        br#"{"id": "x", "count": 2}"#,
        None,
        &JsonOptions::default(),
    )
    .unwrap();
    let full: Value = serde_json::from_slice(&response_json(&msg, None, &JsonOptions::default())).unwrap();
    // A PATCH fills the FieldMask from the body's keys.
    assert_eq!(
        full,
        json!({"droneId": "d9", "i32": 4, "inner": {"id": "x", "count": "2"}, "mask": "count,id"})
    );
    assert_eq!(
        response_json(&msg, b.response_body.as_ref(), &JsonOptions::default()),
        r#"{"id":"x","count":"2"}"#
    );
    let e = request_message(b, &vars, Some("inner.id=y"), b"{}", None, &JsonOptions::default()).unwrap_err();
    assert!(e.to_string().contains("the body sets `inner`"), "{e}");

    let Found::Binding(tags, vars) = bindings.find(&Method::GET, "/v1/tags") else { panic!() };
    let msg = request_message(tags, &vars, Some("tags=a"), b"", None, &JsonOptions::default()).unwrap();
    assert_eq!(response_json(&msg, tags.response_body.as_ref(), &JsonOptions::default()), r#"["a"]"#);
    let none = request_message(tags, &vars, None, b"", None, &JsonOptions::default()).unwrap();
    assert_eq!(response_json(&none, tags.response_body.as_ref(), &JsonOptions::default()), "[]");
}

#[test]
fn http_body_messages_carry_raw_bytes() {
    let s = schema();
    let bindings = Bindings::build(&s.service("m.v1.S").unwrap()).unwrap();
    let Found::Binding(b, vars) = bindings.find(&Method::POST, "/v1/upload") else { panic!() };
    let msg =
        request_message(b, &vars, None, b"a,b\n1,2\n", Some("text/csv"), &JsonOptions::default()).unwrap();
    assert_eq!(http_body(&msg), Some(("text/csv".into(), Bytes::from_static(b"a,b\n1,2\n"))));
}

#[test]
fn client_streams_are_json_values_one_after_another() {
    let s = Schema::from_descriptor_set(crate::demo::DESCRIPTORS).unwrap();
    let bindings = Bindings::build(&s.service("drone.v1.Telemetry").unwrap()).unwrap();
    let Found::Binding(b, vars) = bindings.find(&Method::POST, "/drone.v1.Telemetry/UploadPositions") else {
        panic!()
    };
    let body = b"{\"droneId\": \"a\", \"seq\": 1}\n\n{\n  \"droneId\": \"b\"\n}\n";
    let msgs: Vec<DynamicMessage> =
        stream_messages(b, &vars, None, body, &JsonOptions::default()).collect::<Result<_, _>>().unwrap();
    let json: Vec<Bytes> = msgs.iter().map(|m| response_json(m, None, &JsonOptions::default())).collect();
    assert_eq!(json, [r#"{"droneId":"a","seq":1}"#, r#"{"droneId":"b"}"#]);
    let e = stream_messages(b, &vars, None, b"{}\n{\"seq\": \"x\"}", &JsonOptions::default())
        .collect::<Result<Vec<_>, _>>()
        .unwrap_err();
    assert!(matches!(e, (2, RequestError::Field { ref path, .. }) if path == "seq"), "{e:?}");
    let e = stream_messages(b, &vars, None, b"{} {", &JsonOptions::default())
        .collect::<Result<Vec<_>, _>>()
        .unwrap_err();
    assert!(matches!(e, (2, RequestError::NotJson(_))), "{e:?}");
}
