//! The span store: an in-memory ring of the most recent spans.
//!
//! A later version keeps spans in SQLite; this one forgets the oldest span once the
//! ring is full, which is enough to watch a program's LLM calls while developing it.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::{Mutex, PoisonError};

/// How many spans the store keeps by default.
pub const DEFAULT_CAPACITY: usize = 10_000;

/// How a span ended, in Tracia's spelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SpanStatus {
    /// The span's status is OK or unset.
    Success,
    /// The span's status is ERROR.
    Error,
}

impl SpanStatus {
    /// `SUCCESS` or `ERROR`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "SUCCESS",
            Self::Error => "ERROR",
        }
    }
}

/// One received span, reduced to what the API and the UI show.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanRecord {
    /// The OpenTelemetry trace id.
    pub trace_id: [u8; 16],
    /// The OpenTelemetry span id.
    pub span_id: [u8; 8],
    /// The parent's span id; `None` for a root span.
    pub parent_span_id: Option<[u8; 8]>,
    /// The span name, e.g. `chat gpt-4o`.
    pub name: String,
    /// `gen_ai.operation.name` (`chat`, `embeddings`, `execute_tool`, …); `None` for
    /// spans that are not GenAI spans.
    pub operation: Option<String>,
    /// `gen_ai.request.model` (else `gen_ai.response.model`).
    pub model: Option<String>,
    /// `gen_ai.tool.name`, for a tool execution span.
    pub tool_name: Option<String>,
    /// `gen_ai.provider.name` (else the older `gen_ai.system`).
    pub provider: Option<String>,
    /// `service.name` of the resource that sent the span.
    pub service_name: Option<String>,
    /// SUCCESS or ERROR.
    pub status: SpanStatus,
    /// The status message, or `error.type` when there is none, for an ERROR span.
    pub error: Option<String>,
    /// Start time, in nanoseconds since the Unix epoch.
    pub start_unix_nano: u64,
    /// End time, in nanoseconds since the Unix epoch.
    pub end_unix_nano: u64,
    /// `gen_ai.usage.input_tokens`.
    pub input_tokens: Option<u64>,
    /// `gen_ai.usage.output_tokens`.
    pub output_tokens: Option<u64>,
}

impl SpanRecord {
    /// The span id in Tracia form: `sp_` + 16 hex digits.
    pub fn span_id_string(&self) -> String {
        format_span_id(&self.span_id)
    }

    /// The trace id in Tracia form: `tr_` + 16 hex digits when its upper half is zero
    /// (ids made by the tracia SDK), else `tr_` + 32 hex digits.
    pub fn trace_id_string(&self) -> String {
        let (upper, lower) = self.trace_id.split_at(8);
        if upper.iter().all(|b| *b == 0) {
            format!("tr_{}", hex(lower))
        } else {
            format!("tr_{}", hex(&self.trace_id))
        }
    }

    /// The parent span id in Tracia form, if the span has a parent.
    pub fn parent_span_id_string(&self) -> Option<String> {
        self.parent_span_id.as_ref().map(format_span_id)
    }

    /// Whether this is a GenAI span (it has `gen_ai.operation.name`).
    pub fn is_genai(&self) -> bool {
        self.operation.is_some()
    }

    /// Duration in whole milliseconds (0 if the end precedes the start).
    pub fn latency_ms(&self) -> u64 {
        self.end_unix_nano.saturating_sub(self.start_unix_nano) / 1_000_000
    }

    /// Input plus output tokens, when either is known.
    pub fn total_tokens(&self) -> Option<u64> {
        match (self.input_tokens, self.output_tokens) {
            (None, None) => None,
            (i, o) => Some(i.unwrap_or(0) + o.unwrap_or(0)),
        }
    }

    /// The one-line summary printed for each received GenAI span:
    /// `span sp_… trace tr_… chat gpt-4o 812ms 15 tokens SUCCESS` (the tool name
    /// stands in for the model on a tool execution span).
    pub fn log_line(&self) -> String {
        format!(
            "span {} trace {} {} {} {}ms {} tokens {}",
            self.span_id_string(),
            self.trace_id_string(),
            self.operation.as_deref().unwrap_or(&self.name),
            self.model
                .as_deref()
                .or(self.tool_name.as_deref())
                .unwrap_or("-"),
            self.latency_ms(),
            self.total_tokens().unwrap_or(0),
            self.status.as_str(),
        )
    }
}

fn format_span_id(id: &[u8; 8]) -> String {
    format!("sp_{}", hex(id))
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// A bounded, thread-safe ring of the most recent spans.
#[derive(Debug)]
pub struct SpanStore {
    capacity: usize,
    spans: Mutex<VecDeque<SpanRecord>>,
}

impl Default for SpanStore {
    fn default() -> Self {
        Self::new(DEFAULT_CAPACITY)
    }
}

impl SpanStore {
    /// A store keeping the last `capacity` spans (at least one).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            capacity,
            spans: Mutex::new(VecDeque::with_capacity(capacity.min(1024))),
        }
    }

    /// Adds spans in order, dropping the oldest ones beyond the capacity.
    pub fn extend(&self, records: impl IntoIterator<Item = SpanRecord>) {
        let mut spans = self.spans.lock().unwrap_or_else(PoisonError::into_inner);
        for record in records {
            if spans.len() == self.capacity {
                spans.pop_front();
            }
            spans.push_back(record);
        }
    }

    /// Up to `limit` spans, newest first.
    pub fn newest(&self, limit: usize) -> Vec<SpanRecord> {
        let spans = self.spans.lock().unwrap_or_else(PoisonError::into_inner);
        spans.iter().rev().take(limit).cloned().collect()
    }

    /// How many spans are kept now.
    pub fn len(&self) -> usize {
        self.spans
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether no span is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: u8) -> SpanRecord {
        SpanRecord {
            trace_id: [0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, n],
            span_id: [0xab, 0, 0, 0, 0, 0, 0, n],
            parent_span_id: None,
            name: format!("chat gpt-4o #{n}"),
            operation: Some("chat".into()),
            model: Some("gpt-4o".into()),
            tool_name: None,
            provider: None,
            service_name: None,
            status: SpanStatus::Success,
            error: None,
            start_unix_nano: 1_000_000_000,
            end_unix_nano: 1_812_400_000,
            input_tokens: Some(10),
            output_tokens: Some(5),
        }
    }

    #[test]
    fn ring_keeps_the_newest() {
        let store = SpanStore::new(3);
        store.extend((1..=5).map(record));
        let names: Vec<_> = store.newest(10).into_iter().map(|r| r.name).collect();
        assert_eq!(
            names,
            ["chat gpt-4o #5", "chat gpt-4o #4", "chat gpt-4o #3"]
        );
        assert_eq!(store.newest(1).len(), 1);
    }

    #[test]
    fn ids_and_log_line() {
        let mut r = record(9);
        assert_eq!(r.span_id_string(), "sp_ab00000000000009");
        assert_eq!(r.trace_id_string(), "tr_0102030405060709");
        assert_eq!(
            r.log_line(),
            "span sp_ab00000000000009 trace tr_0102030405060709 chat gpt-4o 812ms 15 tokens SUCCESS"
        );
        r.trace_id[0] = 0xff;
        assert_eq!(r.trace_id_string(), "tr_ff000000000000000102030405060709");
    }

    #[test]
    fn tool_span_log_line_names_the_tool() {
        let r = SpanRecord {
            operation: Some("execute_tool".into()),
            model: None,
            tool_name: Some("get_weather".into()),
            input_tokens: None,
            output_tokens: None,
            ..record(1)
        };
        assert!(
            r.log_line()
                .contains(" execute_tool get_weather 812ms 0 tokens SUCCESS"),
            "{}",
            r.log_line()
        );
    }
}
