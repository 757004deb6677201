//! The one path every received trace request takes, whether it came by OTLP/HTTP or
//! OTLP/gRPC: spans to records, printed, forwarded, stored.

use std::io::Write as _;

use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};

use crate::store::StoreError;
use crate::{AppState, otlp};

/// Takes the spans of one export request and returns the answer for the sender (a
/// partial success when some spans had invalid ids), once they are committed.
///
/// Only stored requests are queued for forwarding (never waiting on a target): a
/// failed store is not acknowledged, the exporter retries, and a target must not get
/// the spans twice.
pub async fn ingest(
    state: &AppState,
    request: &ExportTraceServiceRequest,
) -> Result<ExportTraceServiceResponse, StoreError> {
    let (records, response) = otlp::records(request);
    if state.log_spans {
        // Not `println!`: a closed stdout must not fail the export.
        let mut out = std::io::stdout().lock();
        for record in records.iter().filter(|r| r.model.is_some()) {
            let _ = writeln!(out, "{}", record.log_line());
        }
    }
    state.store.insert(records.clone()).await?;
    state.forward.send(request, &records);
    Ok(response)
}
