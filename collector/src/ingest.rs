//! The one path every received trace request takes, whether it came by OTLP/HTTP or
//! OTLP/gRPC: spans to records (bounded by [`crate::limits`]), printed, stored,
//! forwarded.

use std::io::Write as _;

use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};

use crate::limits::stored_len;
use crate::model::SpanRecord;
use crate::store::StoreError;
use crate::{AppState, otlp};

/// Takes the spans of one export request and returns the answer for the sender (a
/// partial success when some spans had invalid ids), once they are committed.
///
/// A big request is written in chunks ([`crate::limits::Limits::write_spans`],
/// [`crate::limits::Limits::write_bytes`]), each committed on its own, so that other
/// exporters' writes are committed between them rather than after the whole request.
/// When a chunk fails, the request is not acknowledged; the exporter resends it and
/// the spans already stored are kept as first stored (span ids are idempotent).
///
/// Only stored requests are queued for forwarding (never waiting on a target): a
/// failed store is not acknowledged, the exporter retries, and a target must not get
/// the spans twice.
pub async fn ingest(
    state: &AppState,
    request: &ExportTraceServiceRequest,
) -> Result<ExportTraceServiceResponse, StoreError> {
    let (records, cut, response) = otlp::records(request, &state.limits);
    if cut.spans > 0 {
        state.cut.add(&cut);
        tracing::warn!(
            "bounded a trace export: {} spans truncated ({} values, {} bytes cut, {} attributes or events dropped)",
            cut.spans,
            cut.values,
            cut.bytes,
            cut.dropped,
        );
    }
    if state.log_spans {
        // Not `println!`: a closed stdout must not fail the export.
        let mut out = std::io::stdout().lock();
        for record in records.iter().filter(|r| r.model.is_some()) {
            let _ = writeln!(out, "{}", record.log_line());
        }
    }
    for chunk in chunks(&records, state.limits.write_spans, state.limits.write_bytes) {
        state.store.insert(chunk.to_vec()).await?;
    }
    state.forward.send(request, &records);
    Ok(response)
}

/// `records` cut into runs of at most `spans` spans and `bytes` bytes of stored JSON
/// (a single bigger span makes a run alone).
fn chunks(records: &[SpanRecord], spans: usize, bytes: usize) -> Vec<&[SpanRecord]> {
    let mut runs = Vec::new();
    let (mut start, mut size) = (0, 0);
    for (i, record) in records.iter().enumerate() {
        let len = stored_len(record);
        if i > start && (i - start >= spans.max(1) || size + len > bytes) {
            runs.push(&records[start..i]);
            (start, size) = (i, 0);
        }
        size += len;
    }
    if start < records.len() {
        runs.push(&records[start..]);
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_bound_spans_and_bytes() {
        let records: Vec<SpanRecord> = (0..5)
            .map(|i| SpanRecord::app(format!("sp_{i:016x}"), "x"))
            .collect();
        let lens = |runs: Vec<&[SpanRecord]>| runs.iter().map(|r| r.len()).collect::<Vec<_>>();
        assert_eq!(lens(chunks(&records, 2, usize::MAX)), [2, 2, 1]);
        assert_eq!(lens(chunks(&records, 100, 1)), [1, 1, 1, 1, 1]);
        assert_eq!(lens(chunks(&records, 100, usize::MAX)), [5]);
        assert!(chunks(&[], 2, 2).is_empty());
    }
}
