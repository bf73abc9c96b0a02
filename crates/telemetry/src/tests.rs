use super::*;
use bridgehead_http::trace::{Kind, SpanId, SpanRecord, Status, TraceId, Value};

fn finished(spans: usize) -> Finished {
    let trace_id = TraceId([7; 16]);
    let root = SpanId([1; 8]);
    let spans = (0..spans)
        .map(|i| SpanRecord {
            span_id: if i == 0 { root } else { SpanId([i as u8 + 1; 8]) },
            parent: if i == 0 { Some(SpanId([9; 8])) } else { Some(root) },
            name: "GET /x".into(),
            kind: if i == 0 { Kind::Server } else { Kind::Client },
            start: 1_000,
            end: 2_000,
            status: if i == 1 { Status::Error } else { Status::Unset },
            message: (i == 1).then(|| "refused".to_owned()),
            attributes: vec![
                ("http.response.status_code", Value::Int(200)),
                ("ok", Value::Bool(true)),
                ("client.address", Value::Ip("2001:db8::1".parse().unwrap())),
                ("negative", Value::Int(-3)),
            ],
        })
        .collect();
    Finished { trace_id, state: Some(HeaderValue::from_static("a=1")), spans }
}

#[test]
fn batches_split_by_spans_keeping_traces_whole() {
    let batch = vec![finished(3), finished(3), finished(3)];
    let (now, rest) = split_batch(batch, 5);
    assert_eq!((now.len(), rest.len()), (1, 2));
    // A trace larger than a batch still goes, alone.
    let (now, rest) = split_batch(vec![finished(9), finished(1)], 5);
    assert_eq!((now.len(), rest.len()), (1, 1));
    let (now, rest) = split_batch(vec![finished(2), finished(2)], 5);
    assert_eq!((now.len(), rest.len()), (2, 0));
}

#[test]
fn spans_become_otlp_with_remote_and_local_parents() {
    let bytes = otlp::encode_request(&otlp::resource(), &[finished(2)]);
    let back = otlp::ExportTraceServiceRequest::decode(bytes.as_slice()).unwrap();
    let spans = &back.resource_spans[0].scope_spans[0].spans;
    assert_eq!(spans.len(), 2);
    assert_eq!(spans[0].trace_id, vec![7; 16]);
    assert_eq!(spans[0].parent_span_id, vec![9; 8]);
    assert_eq!(spans[0].flags, 0x301, "the server span's parent is remote");
    assert_eq!(spans[1].flags, 0x101, "a child's parent is local");
    assert_eq!(spans[0].kind, 2);
    assert_eq!(spans[1].status.as_ref().unwrap().code, 2);
    assert_eq!(spans[1].status.as_ref().unwrap().message, "refused");
    assert_eq!(spans[0].status, None);
    assert_eq!(spans[0].trace_state, "a=1");
    let service = &back.resource_spans[0].resource.as_ref().unwrap().attributes[0];
    assert_eq!(service.key, "service.name");
    let value = |s: &otlp::Span, k: &str| {
        s.attributes.iter().find(|kv| kv.key == k).and_then(|kv| kv.value.clone()).and_then(|v| v.value)
    };
    use otlp::any_value::Value as V;
    assert_eq!(value(&spans[0], "http.response.status_code"), Some(V::IntValue(200)));
    assert_eq!(value(&spans[0], "ok"), Some(V::BoolValue(true)));
    assert_eq!(value(&spans[0], "client.address"), Some(V::StringValue("2001:db8::1".into())));
    assert_eq!(value(&spans[0], "negative"), Some(V::IntValue(-3)));
    assert_eq!((spans[0].start_time_unix_nano, spans[0].end_time_unix_nano), (1_000, 2_000));
    assert_eq!(spans[0].name, "GET /x");
    // Long fields and many of them: lengths of several varint bytes.
    let mut big = finished(1);
    big.spans[0].attributes = (0..300).map(|i| ("k", Value::from("v".repeat(i)))).collect();
    let bytes = otlp::encode_request(&otlp::resource(), &[big]);
    let back = otlp::ExportTraceServiceRequest::decode(bytes.as_slice()).unwrap();
    let attrs = &back.resource_spans[0].scope_spans[0].spans[0].attributes;
    assert_eq!(attrs.len(), 300);
    assert_eq!(attrs[299].value.clone().unwrap().value, Some(V::StringValue("v".repeat(299))));
}

fn traces(endpoint: &str, protocol: OtlpProtocol, compression: OtlpCompression) -> Traces {
    Traces {
        endpoint: endpoint.into(),
        protocol,
        headers: [("x-api-key".to_owned(), bridgehead_config::Secret::new("s3cret"))].into(),
        compression,
        sample_ratio: 1.0,
        parent_based: true,
        tls: None,
        max_queue: 4,
        max_batch: 2,
        interval: HumanDuration::secs(1),
        timeout: HumanDuration::secs(1),
    }
}

#[tokio::test]
async fn grpc_bodies_are_framed_and_flagged_when_compressed() {
    let loaded = LoadedConfig::command_line();
    let send =
        Send::build(&traces("http://127.0.0.1:4317", OtlpProtocol::Grpc, OtlpCompression::Gzip), &loaded)
            .unwrap();
    assert_eq!(send.path.as_str(), GRPC_EXPORT);
    assert_eq!(send.headers["grpc-encoding"], "gzip");
    assert!(send.headers["x-api-key"].is_sensitive());
    let body = send.encode(vec![1, 2, 3]).unwrap();
    assert_eq!(body[0], 1);
    let len = u32::from_be_bytes(body[1..5].try_into().unwrap()) as usize;
    assert_eq!(len, body.len() - 5);
    let mut plain = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&body[5..]), &mut plain).unwrap();
    assert_eq!(plain, [1, 2, 3]);
    let http = Send::build(
        &traces("http://127.0.0.1:4318/otel/", OtlpProtocol::HttpProtobuf, OtlpCompression::None),
        &loaded,
    )
    .unwrap();
    assert_eq!(http.path.as_str(), "/otel/v1/traces");
    assert_eq!(http.headers[header::CONTENT_TYPE], "application/x-protobuf");
    assert!(!http.headers.contains_key(header::CONTENT_ENCODING));
    assert_eq!(http.encode(vec![1, 2, 3]).unwrap(), Bytes::from_static(&[1, 2, 3]));
    let Err(e) =
        Send::build(&traces("http://127.0.0.1:4317/x", OtlpProtocol::Grpc, OtlpCompression::None), &loaded)
    else {
        panic!("a gRPC endpoint with a path")
    };
    assert_eq!(e.key, "telemetry.traces.endpoint");
}

#[test]
fn a_full_queue_drops_and_counts() {
    let metrics = Metrics::default();
    let t = traces("http://127.0.0.1:1", OtlpProtocol::HttpProtobuf, OtlpCompression::None);
    let exporter = Exporter::new(&t, Counts::new(&metrics));
    exporter.submit(finished(3));
    exporter.submit(finished(2));
    exporter.submit(finished(1));
    let text = metrics.encode();
    assert!(text.contains("bridgehead_telemetry_spans_total{result=\"dropped_queue_full\"} 2"), "{text}");
    assert_eq!(exporter.queued.load(Relaxed), 4);
    let taken = exporter.take_all();
    assert_eq!(taken.iter().map(|t| t.spans.len()).collect::<Vec<_>>(), [3, 1]);
    assert_eq!(exporter.queued.load(Relaxed), 0);
}

#[tokio::test]
async fn an_unreachable_collector_drops_and_counts_after_its_tries() {
    // A port nothing listens on: bound, then closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let metrics = Metrics::default();
    let t = traces(&format!("http://127.0.0.1:{port}"), OtlpProtocol::HttpProtobuf, OtlpCompression::None);
    let exporter = Exporter::start(&t, &LoadedConfig::command_line(), &metrics).unwrap();
    exporter.submit(finished(2));
    assert!(exporter.flush(Duration::from_secs(10)).await, "flushed within the time");
    let text = metrics.encode();
    assert!(text.contains("bridgehead_telemetry_spans_total{result=\"dropped_export_failed\"} 2"), "{text}");
    assert!(text.contains("bridgehead_telemetry_spans_total{result=\"exported\"} 0"), "{text}");
}
