//! OTLP/JSON spans written by hand for the UI tests, in the shape of the GenAI semantic
//! conventions (`shared/reference/genai-semconv.md` §4-5): the cases the SDK fixtures do
//! not produce (reasoning parts, cache tokens, failures, hostile content).
#![allow(dead_code)]

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

/// Now, in Unix nanoseconds (the collector deletes spans older than its retention).
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// One OTLP/JSON attribute; arrays are string arrays, integers `intValue`.
pub fn attr(key: &str, value: Value) -> Value {
    let value = match value {
        Value::String(s) => json!({ "stringValue": s }),
        Value::Bool(b) => json!({ "boolValue": b }),
        Value::Number(n) if n.is_i64() => json!({ "intValue": n.to_string() }),
        Value::Number(n) => json!({ "doubleValue": n }),
        Value::Array(items) => json!({ "arrayValue": {
            "values": items.into_iter().map(|i| json!({ "stringValue": i })).collect::<Vec<_>>()
        }}),
        other => panic!("no OTLP form for {other}"),
    };
    json!({ "key": key, "value": value })
}

/// A span: ids in hex (32 and 16 digits), times in Unix nanoseconds, ERROR status with
/// `error` as its message when given.
pub fn span(
    trace: &str,
    id: &str,
    parent: Option<&str>,
    name: &str,
    (start, end): (u64, u64),
    attributes: Vec<Value>,
    error: Option<&str>,
) -> Value {
    let mut span = json!({
        "traceId": trace,
        "spanId": id,
        "name": name,
        "kind": if parent.is_some() { 3 } else { 2 },
        "startTimeUnixNano": start.to_string(),
        "endTimeUnixNano": end.to_string(),
        "attributes": attributes,
        "status": match error {
            Some(message) => json!({ "code": 2, "message": message }),
            None => json!({}),
        },
    });
    if let Some(parent) = parent {
        span["parentSpanId"] = json!(parent);
    }
    span
}

/// The GenAI attributes of a chat span: operation, provider, model, usage.
pub fn chat_attrs(provider: &str, model: &str, input: i64, output: i64) -> Vec<Value> {
    vec![
        attr("gen_ai.operation.name", json!("chat")),
        attr("gen_ai.provider.name", json!(provider)),
        attr("gen_ai.request.model", json!(model)),
        attr("gen_ai.usage.input_tokens", json!(input)),
        attr("gen_ai.usage.output_tokens", json!(output)),
    ]
}

/// An `ExportTraceServiceRequest` in OTLP/JSON from one service.
pub fn export(service: &str, spans: Vec<Value>) -> Value {
    json!({
        "resourceSpans": [{
            "resource": { "attributes": [attr("service.name", json!(service))] },
            "scopeSpans": [{ "scope": { "name": "ui-tests" }, "spans": spans }],
        }]
    })
}
