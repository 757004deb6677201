//! Span and trace ids in Tracia form, mapped losslessly onto OpenTelemetry (W3C) ids.
//!
//! | Tracia form | OpenTelemetry id |
//! |---|---|
//! | span id `sp_` + 16 hex (legacy `tr_` + 16 hex accepted) | the span id, as is |
//! | trace id `tr_` + 16 hex | the trace id with its upper 8 bytes zero |
//! | trace id `tr_` + 32 hex, or a bare 32-hex W3C id | the trace id, as is |
//! | trace id `sp_` + 16 hex (a span id used as a trace id) | [`SPAN_TRACE_MARKER`] then the span id's 8 bytes |
//!
//! Each trace id is shown in exactly one form: upper half zero → `tr_` + 16 hex, upper
//! half [`SPAN_TRACE_MARKER`] → `sp_` + 16 hex, anything else → `tr_` + 32 hex; every
//! form parses back to the same id. The `sp_` row is what Tracia's manual linking asks
//! for (`trace_id=result1.span_id`): that trace id shows as the same `sp_…` string on
//! the result, the session and the Tracia payload. The fixed marker keeps it apart from
//! `tr_` + 16 hex ids (upper half zero) and, but for a 2⁻⁶⁴ chance, from random W3C ids.
//!
//! ```
//! use tracia::ids;
//! assert_eq!(ids::to_w3c_trace_id("tr_00f067aa0ba902b7")?, "000000000000000000f067aa0ba902b7");
//! assert_eq!(ids::to_w3c_trace_id("sp_00f067aa0ba902b7")?, "73705f747261636500f067aa0ba902b7");
//! assert_eq!(ids::from_w3c_trace_id("73705f747261636500f067aa0ba902b7")?, "sp_00f067aa0ba902b7");
//! assert_eq!(ids::to_w3c_span_id("sp_00f067aa0ba902b7")?, "00f067aa0ba902b7");
//! # Ok::<(), tracia::Error>(())
//! ```

use std::cell::Cell;

use opentelemetry::trace::{SpanId, TraceId};
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator};

use crate::error::{Error, Result};

/// The upper 8 bytes of the trace id an `sp_` id maps to: ASCII `sp_trace`
/// (`73705f7472616365`), so the W3C form says where it came from.
///
/// ```
/// assert_eq!(&tracia::ids::SPAN_TRACE_MARKER, b"sp_trace");
/// ```
pub const SPAN_TRACE_MARKER: [u8; 8] = *b"sp_trace";

/// Formats an OpenTelemetry span id in Tracia form (`sp_` + 16 hex).
///
/// ```
/// use tracia::opentelemetry::trace::SpanId;
/// assert_eq!(tracia::ids::format_span_id(SpanId::from(0xff)), "sp_00000000000000ff");
/// ```
pub fn format_span_id(id: SpanId) -> String {
    format!("sp_{id}")
}

/// Formats an OpenTelemetry trace id in Tracia form: `tr_` + 16 hex when its upper half
/// is zero, `sp_` + 16 hex when it is [`SPAN_TRACE_MARKER`], else `tr_` + 32 hex.
///
/// ```
/// use tracia::opentelemetry::trace::TraceId;
/// assert_eq!(tracia::ids::format_trace_id(TraceId::from(0xff)), "tr_00000000000000ff");
/// let w3c = TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap();
/// assert_eq!(tracia::ids::format_trace_id(w3c), "tr_4bf92f3577b34da6a3ce929d0e0e4736");
/// ```
pub fn format_trace_id(id: TraceId) -> String {
    let bytes = id.to_bytes();
    let (upper, lower) = bytes.split_at(8);
    if upper == [0; 8] {
        format!("tr_{}", hex(lower))
    } else if upper == SPAN_TRACE_MARKER && lower != [0; 8] {
        format!("sp_{}", hex(lower))
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

/// Parses a span id: `sp_` or the legacy `tr_` + 16 hex, any case. Anything else is an
/// `INVALID_REQUEST` error naming it.
///
/// ```
/// let id = tracia::ids::parse_span_id("sp_00F067AA0BA902B7")?;
/// assert_eq!(id.to_string(), "00f067aa0ba902b7");
/// assert!(tracia::ids::parse_span_id("00f067aa0ba902b7").unwrap_err().is_invalid_request());
/// # Ok::<(), tracia::Error>(())
/// ```
pub fn parse_span_id(text: &str) -> Result<SpanId> {
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

/// Parses a trace id: `tr_` + 16 or 32 hex, a bare 32-hex W3C trace id, or a span id
/// `sp_` + 16 hex (see the module docs), any case. Anything else is an
/// `INVALID_REQUEST` error naming it.
///
/// ```
/// let id = tracia::ids::parse_trace_id("tr_4bf92f3577b34da6a3ce929d0e0e4736")?;
/// assert_eq!(id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
/// let err = tracia::ids::parse_trace_id("trace-1").unwrap_err();
/// assert!(err.is_invalid_request() && err.message().contains("trace-1"));
/// # Ok::<(), tracia::Error>(())
/// ```
pub fn parse_trace_id(text: &str) -> Result<TraceId> {
    if text.starts_with("sp_") {
        return parse_span_id(text)
            .map(trace_of_span)
            .map_err(|_| invalid_trace_id(text));
    }
    let digits = text.strip_prefix("tr_").unwrap_or(text);
    let ok_len = digits.len() == 32 || (digits.len() == 16 && text.starts_with("tr_"));
    ok_len
        .then(|| parse_hex(digits))
        .flatten()
        .map(|v| TraceId::from_bytes(v.to_be_bytes()))
        .filter(|id| *id != TraceId::INVALID)
        .ok_or_else(|| invalid_trace_id(text))
}

fn invalid_trace_id(text: &str) -> Error {
    Error::invalid(format!(
        "Invalid trace_id format: {text}. Expected tr_ + 16 or 32 hex characters, a 32-hex W3C trace id, or a span id sp_ + 16 hex"
    ))
}

/// The trace id whose Tracia form is the span id's own `sp_…` string.
pub(crate) fn trace_of_span(span: SpanId) -> TraceId {
    let mut bytes = [0; 16];
    bytes[..8].copy_from_slice(&SPAN_TRACE_MARKER);
    bytes[8..].copy_from_slice(&span.to_bytes());
    TraceId::from_bytes(bytes)
}

/// A trace id in any form [`parse_trace_id`] accepts, as the 32-hex W3C trace id
/// that OpenTelemetry backends (Jaeger, Tempo) show and search by.
///
/// ```
/// assert_eq!(tracia::ids::to_w3c_trace_id("tr_00f067aa0ba902b7")?, "000000000000000000f067aa0ba902b7");
/// assert!(tracia::ids::to_w3c_trace_id("tr_xyz").unwrap_err().message().contains("tr_xyz"));
/// # Ok::<(), tracia::Error>(())
/// ```
pub fn to_w3c_trace_id(text: &str) -> Result<String> {
    parse_trace_id(text).map(|id| id.to_string())
}

/// A span id in any form [`parse_span_id`] accepts, as the 16-hex W3C span id.
///
/// ```
/// assert_eq!(tracia::ids::to_w3c_span_id("sp_00f067aa0ba902b7")?, "00f067aa0ba902b7");
/// # Ok::<(), tracia::Error>(())
/// ```
pub fn to_w3c_span_id(text: &str) -> Result<String> {
    parse_span_id(text).map(|id| id.to_string())
}

/// A 32-hex W3C trace id (any case) in Tracia form, as results and Tracia show it.
///
/// ```
/// assert_eq!(tracia::ids::from_w3c_trace_id("000000000000000000f067aa0ba902b7")?, "tr_00f067aa0ba902b7");
/// assert_eq!(
///     tracia::ids::from_w3c_trace_id("4BF92F3577B34DA6A3CE929D0E0E4736")?,
///     "tr_4bf92f3577b34da6a3ce929d0e0e4736"
/// );
/// # Ok::<(), tracia::Error>(())
/// ```
pub fn from_w3c_trace_id(hex: &str) -> Result<String> {
    Some(hex)
        .filter(|h| h.len() == 32)
        .and_then(parse_hex)
        .filter(|v| *v != 0)
        .map(|v| format_trace_id(TraceId::from_bytes(v.to_be_bytes())))
        .ok_or_else(|| {
            Error::invalid(format!(
                "Invalid W3C trace id: {hex}. Expected 32 hex characters, not all zero"
            ))
        })
}

/// A 16-hex W3C span id (any case) in Tracia form (`sp_` + 16 hex).
///
/// ```
/// assert_eq!(tracia::ids::from_w3c_span_id("00F067AA0BA902B7")?, "sp_00f067aa0ba902b7");
/// # Ok::<(), tracia::Error>(())
/// ```
pub fn from_w3c_span_id(hex: &str) -> Result<String> {
    Some(hex)
        .filter(|h| h.len() == 16)
        .and_then(parse_hex)
        .filter(|v| *v != 0)
        .map(|v| format_span_id(SpanId::from_bytes((v as u64).to_be_bytes())))
        .ok_or_else(|| {
            Error::invalid(format!(
                "Invalid W3C span id: {hex}. Expected 16 hex characters, not all zero"
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
        assert!(parse_trace_id("sp_0000000000000000").is_err());
        assert!(format_trace_id(random_trace_id()).len() == 19);
    }

    #[test]
    fn a_span_id_as_trace_id_keeps_its_form_and_collides_with_no_other_form() {
        let seeded = parse_trace_id("sp_00F067AA0BA902B7").unwrap();
        assert_eq!(format_trace_id(seeded), "sp_00f067aa0ba902b7");
        assert_eq!(parse_trace_id(&format_trace_id(seeded)).unwrap(), seeded);
        let short = parse_trace_id("tr_00f067aa0ba902b7").unwrap();
        assert_ne!(seeded, short, "the marker keeps it apart from tr_ + 16 hex");
        let w3c = seeded.to_string();
        assert!(w3c.starts_with("73705f7472616365"), "{w3c}");
        assert_eq!(parse_trace_id(&w3c).unwrap(), seeded);
        assert_eq!(parse_trace_id(&format!("tr_{w3c}")).unwrap(), seeded);
        // The marker with a zero lower half is no span id: it keeps the 32-hex form.
        let marker_only =
            TraceId::from_bytes([SPAN_TRACE_MARKER, [0; 8]].concat().try_into().unwrap());
        let shown = format_trace_id(marker_only);
        assert_eq!(shown, "tr_73705f74726163650000000000000000");
        assert_eq!(parse_trace_id(&shown).unwrap(), marker_only);
    }

    #[test]
    fn w3c_helpers_reject_bad_input_by_name() {
        for bad in [
            "",
            "xyz",
            "sp_123",
            "tr_00000000000000000",
            "0000000000000000",
        ] {
            let e = to_w3c_trace_id(bad).unwrap_err();
            assert!(e.is_invalid_request() && e.message().contains(bad), "{e}");
            let e = to_w3c_span_id(bad).unwrap_err();
            assert!(e.is_invalid_request() && e.message().contains(bad), "{e}");
        }
        assert!(from_w3c_trace_id(&"0".repeat(32)).is_err());
        assert!(from_w3c_trace_id("tr_4bf92f3577b34da6a3ce929d0e0e47").is_err());
        assert!(from_w3c_span_id("sp_00f067aa0ba902").is_err());
        assert!(from_w3c_span_id(&"0".repeat(16)).is_err());
        let w3c = "4bf92f3577b34da6a3ce929d0e0e4736";
        assert_eq!(
            to_w3c_trace_id(&from_w3c_trace_id(w3c).unwrap()).unwrap(),
            w3c
        );
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
