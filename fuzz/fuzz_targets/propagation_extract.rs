//! Incoming trace headers are attacker-controlled: extraction must never panic, and a
//! context it accepts must survive re-injection with its trace id.
#![no_main]

use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use opentelemetry::trace::TraceContextExt;
use tracia::propagation::{conversation, extract, inject_context};

/// Names picked by a line's first byte, so the propagators' headers (and repeats of
/// them) turn up far more often than random names would.
const NAMES: [&str; 3] = ["traceparent", "tracestate", "baggage"];

/// Just past the 8 KiB that extraction accepts per header.
const OVERSIZED: usize = 8193;

/// One header per `\n`-separated line: the first byte picks the name (one of `NAMES`,
/// or the line's text before `:`), its high bit repeats the value past `OVERSIZED`.
fn headers(data: &[u8]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for line in data.split(|&b| b == b'\n') {
        let Some((&selector, rest)) = line.split_first() else {
            continue;
        };
        let (name, value) = match NAMES.get(usize::from(selector & 0x7f) % 4) {
            Some(name) => (HeaderName::from_static(name), rest),
            None => {
                let at = rest.iter().position(|&b| b == b':').unwrap_or(rest.len());
                let Ok(name) = HeaderName::from_bytes(&rest[..at]) else {
                    continue;
                };
                (name, rest.get(at + 1..).unwrap_or_default())
            }
        };
        let value = if selector & 0x80 != 0 && !value.is_empty() {
            value.repeat(OVERSIZED.div_ceil(value.len()))
        } else {
            value.to_vec()
        };
        let Ok(value) = HeaderValue::from_bytes(&value) else {
            continue;
        };
        if headers.try_append(name, value).is_err() {
            break;
        }
    }
    headers
}

fuzz_target!(|data: &[u8]| {
    let cx = extract(&headers(data));
    let _ = conversation(&cx);
    let mut out = HeaderMap::new();
    inject_context(&cx, &mut out);

    let sc = cx.span().span_context().clone();
    if sc.is_valid() {
        let again = extract(&out);
        assert_eq!(
            again.span().span_context().trace_id(),
            sc.trace_id(),
            "{out:?}"
        );
    }
});
