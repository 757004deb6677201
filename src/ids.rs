//! Span and trace ids in Tracia form, mapped losslessly onto OpenTelemetry ids.
//!
//! A Tracia span id `sp_` + 16 hex *is* the OTel span id. Tracia trace ids are 8 bytes
//! (`tr_` + 16 hex); an OTel trace id whose upper 8 bytes are zero shows in that form,
//! any other one as `tr_` + 32 hex. Both forms parse back to the same OTel id.

use std::cell::Cell;

use opentelemetry::trace::{SpanId, TraceId};
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator};

use crate::error::{Error, Result};

/// Formats an OTel span id as a Tracia span id (`sp_` + 16 hex).
pub(crate) fn format_span_id(id: SpanId) -> String {
    format!("sp_{id}")
}

/// Formats an OTel trace id as a Tracia trace id (`tr_` + 16 or 32 hex).
pub(crate) fn format_trace_id(id: TraceId) -> String {
    let bytes = id.to_bytes();
    if bytes[..8] == [0; 8] {
        format!("tr_{}", hex(&bytes[8..]))
    } else {
        format!("tr_{id}")
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn parse_hex(text: &str) -> Option<u128> {
    (!text.is_empty() && text.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| u128::from_str_radix(text, 16).ok())
        .flatten()
}

/// Parses a caller-supplied span id: `sp_` or legacy `tr_` + 16 hex, any case.
pub(crate) fn parse_span_id(text: &str) -> Result<SpanId> {
    let digits = text
        .strip_prefix("sp_")
        .or_else(|| text.strip_prefix("tr_"))
        .filter(|d| d.len() == 16);
    digits
        .and_then(parse_hex)
        .map(|v| SpanId::from_bytes((v as u64).to_be_bytes()))
        .filter(|id| *id != SpanId::INVALID)
        .ok_or_else(|| {
            Error::invalid(format!(
                "Invalid span_id format: {text}. Expected sp_XXXXXXXXXXXXXXXX or tr_XXXXXXXXXXXXXXXX (16 hex characters)"
            ))
        })
}

/// Parses a trace id: `tr_` + 16 or 32 hex, or a bare 32-hex W3C trace id.
pub(crate) fn parse_trace_id(text: &str) -> Result<TraceId> {
    let digits = text.strip_prefix("tr_").unwrap_or(text);
    let ok_len = digits.len() == 32 || (digits.len() == 16 && text.starts_with("tr_"));
    ok_len
        .then(|| parse_hex(digits))
        .flatten()
        .map(|v| TraceId::from_bytes(v.to_be_bytes()))
        .filter(|id| *id != TraceId::INVALID)
        .ok_or_else(|| {
            Error::invalid(format!(
                "Invalid trace_id format: {text}. Expected tr_ + 16 or 32 hex characters, or a 32-hex W3C trace id"
            ))
        })
}

thread_local! {
    static NEXT_IDS: Cell<(Option<TraceId>, Option<SpanId>)> = const { Cell::new((None, None)) };
}

/// Runs `f` with the ids the next span started on this thread must take.
///
/// The OpenTelemetry SDK only takes ids from the provider's [`IdGenerator`], so this is
/// how a caller-supplied `span_id` (or a session's trace id) reaches the exported span:
/// [`TraciaIdGenerator`] consumes these overrides. `f` must start the span synchronously.
pub(crate) fn with_next_ids<R>(
    trace_id: Option<TraceId>,
    span_id: Option<SpanId>,
    f: impl FnOnce() -> R,
) -> R {
    NEXT_IDS.with(|c| c.set((trace_id, span_id)));
    let out = f();
    NEXT_IDS.with(|c| c.set((None, None)));
    out
}

/// Random ids in Tracia form (8-byte trace ids) when nothing overrides them.
pub(crate) fn random_span_id() -> SpanId {
    RandomIdGenerator::default().new_span_id()
}

/// A random trace id with its upper half zero, so it shows as `tr_` + 16 hex.
pub(crate) fn random_trace_id() -> TraceId {
    let low = rand::random::<u64>().max(1);
    TraceId::from_bytes((low as u128).to_be_bytes())
}

/// The [`IdGenerator`] that `tracia::telemetry` installs.
///
/// It makes trace ids in Tracia's 8-byte form and honours the span and trace ids a
/// `run_local` call asks for (a caller's `span_id`, a session's trace id). Add it to
/// your own `SdkTracerProvider` to get the same behaviour there.
///
/// ```
/// let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
///     .with_id_generator(tracia::TraciaIdGenerator::default())
///     .build();
/// # drop(provider);
/// ```
#[derive(Debug, Default, Clone, Copy)]
pub struct TraciaIdGenerator;

impl IdGenerator for TraciaIdGenerator {
    fn new_trace_id(&self) -> TraceId {
        NEXT_IDS
            .with(|c| {
                let (trace, span) = c.get();
                c.set((None, span));
                trace
            })
            .unwrap_or_else(random_trace_id)
    }

    fn new_span_id(&self) -> SpanId {
        NEXT_IDS
            .with(|c| {
                let (trace, span) = c.get();
                c.set((trace, None));
                span
            })
            .unwrap_or_else(random_span_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn span_ids_round_trip() {
        let id = parse_span_id("sp_0123456789ABCDEF").unwrap();
        assert_eq!(format_span_id(id), "sp_0123456789abcdef");
        assert_eq!(parse_span_id("tr_0123456789abcdef").unwrap(), id);
        for bad in [
            "sp_123",
            "0123456789abcdef",
            "sp_0123456789abcdeg",
            "sp_0000000000000000",
        ] {
            assert!(
                parse_span_id(bad).unwrap_err().is_invalid_request(),
                "{bad}"
            );
        }
    }

    #[test]
    fn trace_ids_map_losslessly_both_ways() {
        let short = parse_trace_id("tr_00000000000000ff").unwrap();
        assert_eq!(format_trace_id(short), "tr_00000000000000ff");
        let w3c = "4bf92f3577b34da6a3ce929d0e0e4736";
        let long = parse_trace_id(w3c).unwrap();
        assert_eq!(format_trace_id(long), format!("tr_{w3c}"));
        assert_eq!(parse_trace_id(&format_trace_id(long)).unwrap(), long);
        assert!(parse_trace_id("0123456789abcdef").is_err());
        assert!(format_trace_id(random_trace_id()).len() == 19);
    }

    #[test]
    fn generator_consumes_overrides_once() {
        let g = TraciaIdGenerator;
        let span = parse_span_id("sp_00000000000000aa").unwrap();
        let trace = parse_trace_id("tr_00000000000000bb").unwrap();
        with_next_ids(Some(trace), Some(span), || {
            assert_eq!(g.new_span_id(), span);
            assert_eq!(g.new_trace_id(), trace);
            assert_ne!(g.new_span_id(), span);
        });
    }
}
