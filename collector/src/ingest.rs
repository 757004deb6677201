//! The one path every received trace request takes, whether it came by OTLP/HTTP or
//! OTLP/gRPC: spans to records, printed, forwarded, stored.

use std::io::Write as _;

use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};

use crate::{AppState, otlp};

/// Takes the spans of one export request and returns the answer for the sender
/// (a partial success when some spans had invalid ids).
///
/// The request is queued for forwarding (never waiting on a target) before the
/// records move into the store.
// Async because storing will wait for the store's commit.
pub async fn ingest(
    state: &AppState,
    request: &ExportTraceServiceRequest,
) -> ExportTraceServiceResponse {
    let (records, response) = otlp::records(request);
    if state.log_spans {
        // Not `println!`: a closed stdout must not fail the export.
        let mut out = std::io::stdout().lock();
        for record in records.iter().filter(|r| r.model.is_some()) {
            let _ = writeln!(out, "{}", record.log_line());
        }
    }
    state.forward.send(request, &records);
    state.store.extend(records);
    response
}
