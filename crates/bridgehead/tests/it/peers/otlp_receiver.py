"""An OpenTelemetry collector stand-in for the gateway's tests: it decodes OTLP trace exports
with the official protobuf definitions (PyPI opentelemetry-proto), over HTTP and over gRPC.

Usage: otlp_receiver.py

Prints "port N" and serves until stdin closes. On port N (HTTP):
- POST /v1/traces: an OTLP/HTTP export (protobuf, gzip when Content-Encoding says so);
- GET /spans?min=K[&wait=S]: waits (at most S seconds, default 20) until K spans arrived,
  then answers them as JSON, with the exports they came in (transport, encoding, headers);
- GET /info: {"grpc_port": P}, where TraceService/Export is served (OTLP/gRPC);
- POST /fail?count=C&status=S: the next C HTTP exports are answered with status S.
"""

import gzip
import json
import sys
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1 import trace_pb2

changed = threading.Condition()
spans = []
exports = []
failures = {"count": 0, "status": 503}


def value(v):
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


def record(request, transport, encoding, headers):
    with changed:
        exports.append({"transport": transport, "encoding": encoding, "headers": headers})
        for rs in request.resource_spans:
            resource = {kv.key: value(kv.value) for kv in rs.resource.attributes}
            for ss in rs.scope_spans:
                for s in ss.spans:
                    spans.append(
                        {
                            "trace_id": s.trace_id.hex(),
                            "span_id": s.span_id.hex(),
                            "parent_span_id": s.parent_span_id.hex(),
                            "name": s.name,
                            "kind": trace_pb2.Span.SpanKind.Name(s.kind),
                            "start": s.start_time_unix_nano,
                            "end": s.end_time_unix_nano,
                            "attributes": {kv.key: value(kv.value) for kv in s.attributes},
                            "status": trace_pb2.Status.StatusCode.Name(s.status.code),
                            "message": s.status.message,
                            "trace_state": s.trace_state,
                            "flags": s.flags,
                            "resource": resource,
                            "scope": ss.scope.name,
                            "transport": transport,
                        }
                    )
        changed.notify_all()


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def answer(self, status, body, content_type):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        url = urlparse(self.path)
        query = parse_qs(url.query)
        if url.path == "/info":
            return self.answer(200, json.dumps({"grpc_port": grpc_port}).encode(), "application/json")
        if url.path == "/spans":
            least = int(query.get("min", ["1"])[0])
            wait = float(query.get("wait", ["20"])[0])
            with changed:
                changed.wait_for(lambda: len(spans) >= least, timeout=wait)
                body = json.dumps({"spans": spans, "exports": exports}).encode()
            return self.answer(200, body, "application/json")
        self.answer(404, b"", "text/plain")

    def do_POST(self):
        url = urlparse(self.path)
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if url.path == "/fail":
            query = parse_qs(url.query)
            failures["count"] = int(query["count"][0])
            failures["status"] = int(query["status"][0])
            return self.answer(204, b"", "text/plain")
        if url.path != "/v1/traces":
            return self.answer(404, b"", "text/plain")
        if failures["count"] > 0:
            failures["count"] -= 1
            with changed:
                exports.append({"transport": "http", "refused": failures["status"]})
            return self.answer(failures["status"], b"", "text/plain")
        if self.headers.get("Content-Type") != "application/x-protobuf":
            return self.answer(415, b"", "text/plain")
        encoding = self.headers.get("Content-Encoding", "identity")
        if encoding == "gzip":
            body = gzip.decompress(body)
        request = trace_service_pb2.ExportTraceServiceRequest()
        request.ParseFromString(body)
        headers = {k.lower(): v for k, v in self.headers.items()}
        record(request, "http", encoding, headers)
        reply = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
        self.answer(200, reply, "application/x-protobuf")


class TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def Export(self, request, context):
        headers = {k: v for k, v in context.invocation_metadata() if isinstance(v, str)}
        record(request, "grpc", headers.get("grpc-encoding", "identity"), headers)
        return trace_service_pb2.ExportTraceServiceResponse()


def main():
    global grpc_port
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(TraceService(), server)
    grpc_port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    print(f"port {http.server_address[1]}", flush=True)
    sys.stdin.read()
    http.shutdown()
    server.stop(0)


grpc_port = 0

if __name__ == "__main__":
    main()
