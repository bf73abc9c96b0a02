//! How webhook records are shown (admin API and `bridgehead webhook` commands): one JSON shape
//! for both. A dead letter's stored signatures are never shown; a body is text when it is UTF-8
//! and base64 (`body_base64`) otherwise.

use base64::Engine as _;
use bridgehead_state::{AttemptRow, DeadLetter, DeliveryRecord, MessageRecord};
use serde_json::{Value, json};

/// The receiver's name of a source or destination (`inbound:shop`, `forward:shop` → `shop`).
pub fn receiver_of(s: &str) -> &str {
    s.split_once(':').map_or(s, |(_, name)| name)
}

fn body(out: &mut Value, bytes: &[u8]) {
    match std::str::from_utf8(bytes) {
        Ok(text) => out["body"] = json!(text),
        Err(_) => out["body_base64"] = json!(base64::engine::general_purpose::STANDARD.encode(bytes)),
    }
}

/// A dead letter; with `full`, its headers and body too.
pub fn dead_letter(dl: &DeadLetter, full: bool) -> Value {
    let mut out = json!({
        "id": dl.id,
        "receiver": receiver_of(&dl.source),
        "reason": dl.reason,
        "received_at_ms": dl.received_at_ms,
        "replayed_at_ms": dl.replayed_at_ms,
        "message_id": dl.message_id,
        "body_bytes": dl.body_bytes,
        "body_kept_bytes": dl.body_kept_bytes,
    });
    // A schema refusal keeps `{"detail", "errors"}` as JSON text; anything else is plain text.
    match serde_json::from_str::<Value>(&dl.detail) {
        Ok(Value::Object(o)) if o.contains_key("errors") => {
            out["detail"] = o.get("detail").cloned().unwrap_or(Value::Null);
            out["errors"] = o.get("errors").cloned().unwrap_or(Value::Null);
        }
        _ => out["detail"] = json!(dl.detail),
    }
    if full {
        let headers: Value = serde_json::from_str(&dl.headers_json).unwrap_or_else(|_| json!([]));
        out["headers"] = headers;
        body(&mut out, &dl.body);
    }
    out
}

/// A delivery with its attempts.
pub fn delivery(d: &DeliveryRecord, attempts: &[AttemptRow]) -> Value {
    json!({
        "id": d.id,
        "message_id": d.message_id,
        "receiver": receiver_of(&d.destination),
        "destination": d.destination,
        "state": d.state,
        "attempts": d.attempts,
        "next_attempt_at_ms": d.next_attempt_at_ms,
        "last_status": d.last_status,
        "last_error": d.last_error,
        "attempt_log": attempts.iter().map(|a| json!({
            "attempt": a.attempt,
            "at_ms": a.at_ms,
            "status": a.status,
            "latency_ms": a.latency_ms,
            "error": a.error,
            "response": a.response.as_deref().map(String::from_utf8_lossy),
        })).collect::<Vec<_>>(),
    })
}

/// An outbound endpoint (its secrets never shown: only how many are active).
pub fn endpoint(e: &crate::outbound::Endpoint) -> Value {
    json!({
        "name": &*e.name,
        "url": e.url,
        "events": e.events,
        "declared": e.declared,
        "allow_private_network": e.allow_private_network,
        "enabled": e.disabled.is_none(),
        "disabled_at_ms": e.disabled.as_ref().map(|d| d.0),
        "disabled_reason": e.disabled.as_ref().map(|d| d.1.as_str()),
        "secrets": e.secrets,
        "accepting": e.upstream.accepting(),
    })
}

/// A message as listed.
pub fn message(m: &MessageRecord) -> Value {
    json!({
        "id": m.id,
        "source": m.source,
        "external_id": m.external_id,
        "type": m.event_type,
        "received_at_ms": m.received_at_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dl(detail: &str, body: &[u8]) -> DeadLetter {
        DeadLetter {
            id: "dlq_1".into(),
            source: "inbound:shop".into(),
            reason: "schema".into(),
            detail: detail.into(),
            headers_json: r#"[["content-type","application/json"],["webhook-signature","[redacted]"]]"#
                .into(),
            signatures_json: r#"[["webhook-signature","v1,SECRETSIG"]]"#.into(),
            body: body.to_vec(),
            body_bytes: body.len() as i64,
            received_at_ms: 5,
            replayed_at_ms: None,
            message_id: None,
            body_kept_bytes: body.len() as i64,
        }
    }

    #[test]
    fn dead_letters_show_errors_and_bodies_but_never_signatures() {
        let d = dl(r#"{"detail":"1 error","errors":[{"pointer":"/a"}]}"#, b"{\"a\":1}");
        let v = dead_letter(&d, true);
        assert_eq!(v["receiver"], "shop");
        assert_eq!(v["detail"], "1 error");
        assert_eq!(v["errors"][0]["pointer"], "/a");
        assert_eq!(v["body"], "{\"a\":1}");
        assert_eq!(v["headers"][1][1], "[redacted]");
        assert!(!v.to_string().contains("SECRETSIG"));
        let short = dead_letter(&d, false);
        assert!(short.get("body").is_none() && short.get("headers").is_none());
        assert_eq!(short["body_bytes"], 7);
        let binary = dead_letter(&dl("plain", b"\xff\x00"), true);
        assert_eq!(
            (binary["detail"].as_str(), binary["body_base64"].as_str()),
            (Some("plain"), Some("/wA="))
        );
    }
}
