//! OTLP/HTTP bodies come from any client: decoding them (protobuf and JSON) and
//! reducing their spans to records must never panic, every record must carry valid
//! ids (those of the span it came from), and a request must give the same records
//! whether it arrived as JSON or as protobuf.
#![no_main]

use libfuzzer_sys::fuzz_target;
use opentelemetry::trace::{SpanId, TraceId};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message as _;
use tracia_collector::limits::Limits;
use tracia_collector::model::{self, SpanRecord};
use tracia_collector::otlp::{self, Encoding};

/// `sp_` + 16 lowercase hex, not all zero.
fn valid_span_id(id: &str) -> bool {
    id.strip_prefix("sp_").is_some_and(|hex| {
        hex.len() == 16
            && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
            && hex.bytes().any(|b| b != b'0')
    })
}

/// `tr_` + 16 or 32 lowercase hex, not all zero.
fn valid_trace_id(id: &str) -> bool {
    id.strip_prefix("tr_").is_some_and(|hex| {
        matches!(hex.len(), 16 | 32)
            && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
            && hex.bytes().any(|b| b != b'0')
    })
}

/// The records of a request, checked against its spans.
fn check(request: &ExportTraceServiceRequest, encoding: Encoding) -> Vec<SpanRecord> {
    // Small bounds, so that cutting is exercised too (ids stay whole within 64 bytes).
    let limits = Limits {
        max_value_bytes: 64,
        max_name_bytes: 64,
        max_span_bytes: 1024,
        max_attributes: 4,
        max_events: 2,
        ..Limits::default()
    };
    let (records, _, response) = otlp::records(request, &limits);
    let _ = otlp::encode_response(encoding, &response);

    let spans: Vec<_> = request
        .resource_spans
        .iter()
        .flat_map(|r| r.scope_spans.iter().flat_map(|s| &s.spans))
        .collect();
    let valid: Vec<_> = spans
        .iter()
        .filter_map(|span| {
            let trace = TraceId::from_bytes(span.trace_id.as_slice().try_into().ok()?);
            let id = SpanId::from_bytes(span.span_id.as_slice().try_into().ok()?);
            (trace != TraceId::INVALID && id != SpanId::INVALID).then_some((trace, id))
        })
        .collect();
    let rejected = response.partial_success.map_or(0, |p| p.rejected_spans);
    assert_eq!(records.len(), valid.len());
    assert_eq!(rejected as usize, spans.len() - valid.len());

    for (record, (trace, id)) in records.iter().zip(&valid) {
        assert!(valid_span_id(&record.span_id), "{record:?}");
        assert_eq!(record.span_id, model::span_id(*id));
        let trace_id = record.trace_id.as_deref().unwrap_or_default();
        assert!(valid_trace_id(trace_id), "{record:?}");
        assert_eq!(trace_id, model::trace_id(*trace));
        if let Some(parent) = &record.parent_span_id {
            assert!(valid_span_id(parent), "{record:?}");
        }
        let _ = record.log_line();
        serde_json::to_string(record).expect("a record serializes");
    }
    records
}

// Input: a request body, decoded as both encodings.
fuzz_target!(|data: &[u8]| {
    if let Ok(request) = otlp::decode(Encoding::Protobuf, data) {
        check(&request, Encoding::Protobuf);
    }
    if let Ok(request) = otlp::decode(Encoding::Json, data) {
        let records = check(&request, Encoding::Json);
        // The same request as protobuf reads the same.
        let again = otlp::decode(Encoding::Protobuf, &request.encode_to_vec())
            .expect("an encoded request decodes");
        let again = check(&again, Encoding::Protobuf);
        assert_eq!(format!("{records:?}"), format!("{again:?}"));
    }
});
