//! Bounds on what one received span may make the collector store, and counts of what
//! they cut.
//!
//! Without them a small request could grow without bound on the way to disk: a 61 KB
//! gzip body inflates to 64 MiB of control characters (deflate compresses a run ~1000:1),
//! JSON escapes each one as `\u0001` (×6), and a GenAI span keeps its messages twice
//! (the attribute and the lifted `input`): 724 MB on disk for one span, and more to read
//! it back. So every span is bounded before it is mapped ([`Limits::bound_span`]) and its
//! stored JSON once mapped ([`Limits::bound_record`]); whatever is cut is replaced by a
//! marker (`…[truncated N bytes]`), noted on the span as the attribute
//! `tracia.collector.truncated` (`{"values", "bytes", "dropped"}`) and counted
//! collector-wide ([`CutStats`], shown by `GET /api/ui/status`).
//!
//! | Bound | Default | Flag |
//! |---|---|---|
//! | bytes of one attribute value (or event attribute, or status message) | 64 KiB | `--max-value-bytes` |
//! | bytes of a name, an attribute key, and of the indexed columns (trace and parent ids of REST spans, service, model, provider, session, user, prompt, each tag) | 1 KiB | — |
//! | bytes of a span's stored JSON (attributes, events, messages, output, tools) | 1 MiB | `--max-span-bytes` |
//! | attributes per span (and per event) | 256 | `--max-attributes` |
//! | events per span | 128 | `--max-events` |
//!
//! Links are not stored. Requests are also written in chunks of at most
//! [`Limits::write_spans`] spans or [`Limits::write_bytes`] bytes of JSON, each its own
//! commit, so that one big export never holds the store's writer for long: other
//! exporters' writes are committed between its chunks.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::{Span, Status, span::Event};
use prost::Message as _;
use serde::Serialize;
use serde_json::Value;

use crate::model::SpanRecord;

/// The attribute noting what the collector cut from a stored span.
pub const TRUNCATED_ATTRIBUTE: &str = "tracia.collector.truncated";

/// The bounds applied to every received span (see the module docs for the defaults).
///
/// ```
/// let limits = tracia_collector::limits::Limits::default();
/// assert_eq!(limits.max_value_bytes, 64 * 1024);
/// assert_eq!(limits.max_span_bytes, 1024 * 1024);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::Args)]
pub struct Limits {
    /// Most bytes kept of one attribute value, event attribute or status message.
    #[arg(long, value_name = "BYTES", env = "TRACIA_COLLECTOR_MAX_VALUE_BYTES", default_value_t = MAX_VALUE_BYTES)]
    pub max_value_bytes: usize,
    /// Bytes of a name, an attribute key, and of each indexed column.
    #[arg(skip = MAX_NAME_BYTES)]
    pub max_name_bytes: usize,
    /// Most bytes of a span's stored JSON (its biggest values give way to markers).
    #[arg(long, value_name = "BYTES", env = "TRACIA_COLLECTOR_MAX_SPAN_BYTES", default_value_t = MAX_SPAN_BYTES)]
    pub max_span_bytes: usize,
    /// Most attributes kept per span (and per event).
    #[arg(long, value_name = "N", env = "TRACIA_COLLECTOR_MAX_ATTRIBUTES", default_value_t = MAX_ATTRIBUTES)]
    pub max_attributes: usize,
    /// Most events kept per span.
    #[arg(long, value_name = "N", env = "TRACIA_COLLECTOR_MAX_EVENTS", default_value_t = MAX_EVENTS)]
    pub max_events: usize,
    /// Spans written in one commit.
    #[arg(skip = WRITE_SPANS)]
    pub write_spans: usize,
    /// Bytes of stored JSON written in one commit (a bigger span is written alone).
    #[arg(skip = WRITE_BYTES)]
    pub write_bytes: usize,
}

const MAX_VALUE_BYTES: usize = 64 * 1024;
const MAX_NAME_BYTES: usize = 1024;
const MAX_SPAN_BYTES: usize = 1024 * 1024;
const MAX_ATTRIBUTES: usize = 256;
const MAX_EVENTS: usize = 128;
const WRITE_SPANS: usize = 1000;
const WRITE_BYTES: usize = 8 * 1024 * 1024;

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_value_bytes: MAX_VALUE_BYTES,
            max_name_bytes: MAX_NAME_BYTES,
            max_span_bytes: MAX_SPAN_BYTES,
            max_attributes: MAX_ATTRIBUTES,
            max_events: MAX_EVENTS,
            write_spans: WRITE_SPANS,
            write_bytes: WRITE_BYTES,
        }
    }
}

/// What was cut from one span.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Cut {
    /// Values truncated or replaced by a marker.
    pub values: u64,
    /// Bytes cut from them.
    pub bytes: u64,
    /// Attributes and events dropped beyond the caps.
    pub dropped: u64,
}

impl Cut {
    /// Whether nothing was cut.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    fn truncated(&mut self, bytes: usize) {
        self.values += 1;
        self.bytes += bytes as u64;
    }
}

impl Limits {
    /// `span` within the bounds (borrowed when it already is), and what was cut.
    /// Values over [`Limits::max_value_bytes`] are cut: strings keep their start and
    /// a marker, other values (arrays, maps, bytes) become the marker alone.
    ///
    /// ```
    /// use opentelemetry_proto::tonic::trace::v1::Span;
    /// let limits = tracia_collector::limits::Limits { max_name_bytes: 4, ..Default::default() };
    /// let span = Span { name: "handle_request".into(), ..Default::default() };
    /// let (bounded, cut) = limits.bound_span(&span);
    /// assert_eq!(bounded.name, "hand…[truncated 10 bytes]");
    /// assert_eq!((cut.values, cut.bytes), (1, 10));
    /// ```
    pub fn bound_span<'a>(&self, span: &'a Span) -> (Cow<'a, Span>, Cut) {
        let mut cut = Cut::default();
        if self.is_bounded(span) {
            return (Cow::Borrowed(span), cut);
        }
        let bounded = Span {
            trace_id: span.trace_id.clone(),
            span_id: span.span_id.clone(),
            trace_state: String::new(),
            parent_span_id: span.parent_span_id.clone(),
            flags: span.flags,
            name: self.bound_text(&span.name, self.max_name_bytes, &mut cut),
            kind: span.kind,
            start_time_unix_nano: span.start_time_unix_nano,
            end_time_unix_nano: span.end_time_unix_nano,
            attributes: self.bound_attributes(&span.attributes, &mut cut),
            dropped_attributes_count: span.dropped_attributes_count,
            events: {
                cut.dropped += span.events.len().saturating_sub(self.max_events) as u64;
                span.events
                    .iter()
                    .take(self.max_events)
                    .map(|e| Event {
                        time_unix_nano: e.time_unix_nano,
                        name: self.bound_text(&e.name, self.max_name_bytes, &mut cut),
                        attributes: self.bound_attributes(&e.attributes, &mut cut),
                        dropped_attributes_count: e.dropped_attributes_count,
                    })
                    .collect()
            },
            dropped_events_count: span.dropped_events_count,
            // Not stored.
            links: Vec::new(),
            dropped_links_count: span.dropped_links_count,
            status: span.status.as_ref().map(|s| Status {
                message: self.bound_text(&s.message, self.max_value_bytes, &mut cut),
                code: s.code,
            }),
        };
        (Cow::Owned(bounded), cut)
    }

    /// Whether `span` is within every bound already (the common case: nothing copied).
    fn is_bounded(&self, span: &Span) -> bool {
        let attributes_ok = |attributes: &[KeyValue]| {
            attributes.len() <= self.max_attributes
                && attributes.iter().all(|kv| {
                    kv.key.len() <= self.max_name_bytes
                        && kv
                            .value
                            .as_ref()
                            .is_none_or(|v| v.encoded_len() <= self.max_value_bytes)
                })
        };
        span.name.len() <= self.max_name_bytes
            && attributes_ok(&span.attributes)
            && span.events.len() <= self.max_events
            && span
                .events
                .iter()
                .all(|e| e.name.len() <= self.max_name_bytes && attributes_ok(&e.attributes))
            && span
                .status
                .as_ref()
                .is_none_or(|s| s.message.len() <= self.max_value_bytes)
    }

    fn bound_attributes(&self, attributes: &[KeyValue], cut: &mut Cut) -> Vec<KeyValue> {
        cut.dropped += attributes.len().saturating_sub(self.max_attributes) as u64;
        attributes
            .iter()
            .take(self.max_attributes)
            .map(|kv| KeyValue {
                key: self.bound_text(&kv.key, self.max_name_bytes, cut),
                value: kv.value.as_ref().map(|v| self.bound_value(v, cut)),
                ..KeyValue::default()
            })
            .collect()
    }

    fn bound_value(&self, value: &AnyValue, cut: &mut Cut) -> AnyValue {
        use any_value::Value as V;
        let len = value.encoded_len();
        if len <= self.max_value_bytes {
            return value.clone();
        }
        let text = match &value.value {
            Some(V::StringValue(s)) => self.bound_text(s, self.max_value_bytes, cut),
            _ => {
                cut.truncated(len);
                marker(len)
            }
        };
        AnyValue {
            value: Some(V::StringValue(text)),
        }
    }

    /// `text` cut to at most `max` bytes (at a character boundary) plus a marker.
    fn bound_text(&self, text: &str, max: usize, cut: &mut Cut) -> String {
        if text.len() <= max {
            return text.to_owned();
        }
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        cut.truncated(text.len() - end);
        format!("{}{}", &text[..end], marker(text.len() - end))
    }

    /// Bounds what `record` stores: its indexed columns (trace and parent ids of REST
    /// spans included) to [`Limits::max_name_bytes`],
    /// its error to [`Limits::max_value_bytes`], and its JSON document to
    /// [`Limits::max_span_bytes`] by replacing its biggest values (attributes, input,
    /// output, variables, tools, tool calls) with a marker; then notes `cut`, if
    /// anything was, as [`TRUNCATED_ATTRIBUTE`]. Returns the size of the stored JSON.
    ///
    /// ```
    /// use tracia_collector::limits::{Cut, Limits, TRUNCATED_ATTRIBUTE};
    /// let limits = Limits { max_span_bytes: 1000, ..Default::default() };
    /// let mut record = tracia_collector::model::SpanRecord::app("sp_0000000000000001", "x");
    /// record.output = Some("\u{1}".repeat(5000));
    /// let mut cut = Cut::default();
    /// assert!(limits.bound_record(&mut record, &mut cut) <= 1000);
    /// assert_eq!(record.output.as_deref(), Some("…[truncated 30002 bytes]"));
    /// assert_eq!(record.attributes[TRUNCATED_ATTRIBUTE]["values"], 1);
    /// ```
    pub fn bound_record(&self, record: &mut SpanRecord, cut: &mut Cut) -> usize {
        let name_bytes = self.max_name_bytes;
        for column in [
            &mut record.trace_id,
            &mut record.parent_span_id,
            &mut record.service_name,
            &mut record.model,
            &mut record.provider,
            &mut record.session_id,
            &mut record.user_id,
            &mut record.prompt_slug,
        ]
        .into_iter()
        .flatten()
        .chain(record.tags.iter_mut())
        {
            if column.len() > name_bytes {
                *column = self.bound_text(column, name_bytes, cut);
            }
        }
        if let Some(error) = &mut record.error
            && error.len() > self.max_value_bytes
        {
            *error = self.bound_text(error, self.max_value_bytes, cut);
        }
        let mut total = stored_len(record);
        if total > self.max_span_bytes {
            total = self.shrink(record, total, cut);
        }
        if !cut.is_empty() {
            let note = serde_json::to_value(*cut).unwrap_or(Value::Null);
            record.attributes.insert(TRUNCATED_ATTRIBUTE.into(), note);
            total = stored_len(record);
        }
        total
    }

    /// Replaces the biggest values of `record` with markers until its JSON fits.
    fn shrink(&self, record: &mut SpanRecord, mut total: usize, cut: &mut Cut) -> usize {
        enum Slot {
            Attribute(String),
            Input,
            Output,
            Variables,
            Tools,
            ToolCalls,
        }
        let mut slots: Vec<(usize, Slot)> = record
            .attributes
            .iter()
            .map(|(k, v)| (json_len(v), Slot::Attribute(k.clone())))
            .collect();
        slots.extend(
            [
                (record.input.as_ref().map(json_len), Slot::Input),
                (record.output.as_ref().map(json_len), Slot::Output),
                (record.variables.as_ref().map(json_len), Slot::Variables),
                (record.tools.as_ref().map(json_len), Slot::Tools),
                (record.tool_calls.as_ref().map(json_len), Slot::ToolCalls),
            ]
            .into_iter()
            .filter_map(|(len, slot)| Some((len?, slot))),
        );
        slots.sort_by_key(|(len, _)| std::cmp::Reverse(*len));
        for (len, slot) in slots {
            if total <= self.max_span_bytes {
                break;
            }
            let text = marker(len);
            let marker_len = json_len(&text);
            if marker_len >= len {
                continue;
            }
            match slot {
                Slot::Attribute(key) => {
                    record.attributes.insert(key, Value::String(text));
                }
                Slot::Input => record.input = Some(Value::String(text)),
                Slot::Output => record.output = Some(text),
                Slot::Variables => record.variables = Some(Value::String(text)),
                Slot::Tools => record.tools = Some(Value::String(text)),
                Slot::ToolCalls => record.tool_calls = Some(Value::String(text)),
            }
            cut.truncated(len - marker_len);
            total -= len - marker_len;
        }
        total
    }
}

/// The marker that stands for `bytes` cut bytes.
fn marker(bytes: usize) -> String {
    format!("…[truncated {bytes} bytes]")
}

/// The size of `record`'s stored JSON document.
pub fn stored_len(record: &SpanRecord) -> usize {
    json_len(&crate::store::body(record))
}

/// The size of `value` as JSON, without building the text.
fn json_len(value: &impl Serialize) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}

/// Collector-wide counts of what the bounds cut, since start.
#[derive(Debug, Default)]
pub struct CutStats {
    spans: AtomicU64,
    values: AtomicU64,
    bytes: AtomicU64,
    dropped: AtomicU64,
}

/// A snapshot of [`CutStats`], as `GET /api/ui/status` shows it under `truncated`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CutTotals {
    /// Spans stored with something cut.
    pub spans: u64,
    /// Values truncated or replaced by a marker.
    pub values: u64,
    /// Bytes cut from them.
    pub bytes: u64,
    /// Attributes and events dropped beyond the caps.
    pub dropped: u64,
}

impl CutTotals {
    /// Counts what was cut from one span.
    pub fn add(&mut self, cut: &Cut) {
        if cut.is_empty() {
            return;
        }
        self.spans += 1;
        self.values += cut.values;
        self.bytes += cut.bytes;
        self.dropped += cut.dropped;
    }
}

impl CutStats {
    /// Adds the counts of one request.
    pub fn add(&self, totals: &CutTotals) {
        self.spans.fetch_add(totals.spans, Ordering::Relaxed);
        self.values.fetch_add(totals.values, Ordering::Relaxed);
        self.bytes.fetch_add(totals.bytes, Ordering::Relaxed);
        self.dropped.fetch_add(totals.dropped, Ordering::Relaxed);
    }

    /// The counts so far.
    ///
    /// ```
    /// use tracia_collector::limits::{Cut, CutStats, CutTotals};
    /// let mut request = CutTotals::default();
    /// request.add(&Cut { values: 1, bytes: 10, dropped: 2 });
    /// let stats = CutStats::default();
    /// stats.add(&request);
    /// assert_eq!(stats.totals().spans, 1);
    /// assert_eq!(stats.totals().dropped, 2);
    /// ```
    pub fn totals(&self) -> CutTotals {
        CutTotals {
            spans: self.spans.load(Ordering::Relaxed),
            values: self.values.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
        }
    }
}
