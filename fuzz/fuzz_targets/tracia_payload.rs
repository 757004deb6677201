//! The Tracia exporter maps whatever spans the provider hands it, including spans of
//! other instrumentations with odd attribute types and broken JSON: `span_payload` must
//! never panic, its payload must serialize, and the collector must be able to read it
//! back as a `POST /api/v1/spans` body.
#![no_main]

use std::time::{Duration, SystemTime};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{Array, InstrumentationScope, KeyValue, StringValue, Value};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};
use serde_json::json;

/// The keys `span_payload` reads (src/telemetry/semconv.rs and the older names it accepts).
const KEYS: &[&str] = &[
    "gen_ai.operation.name",
    "gen_ai.provider.name",
    "gen_ai.system",
    "gen_ai.request.model",
    "gen_ai.request.temperature",
    "gen_ai.request.top_p",
    "gen_ai.request.max_tokens",
    "gen_ai.request.stop_sequences",
    "gen_ai.response.model",
    "gen_ai.response.finish_reasons",
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.output_tokens",
    "gen_ai.usage.prompt_tokens",
    "gen_ai.usage.completion_tokens",
    "gen_ai.input.messages",
    "gen_ai.output.messages",
    "gen_ai.tool.definitions",
    "session.id",
    "user.id",
    "tracia.provider",
    "tracia.tags",
    "tracia.variables",
    "gen_ai.request.encoding_formats",
    "gen_ai.embeddings.dimension.count",
    "tracia.embeddings.input",
    "tracia.embeddings.count",
];

/// Strings the mapper looks for, so that GenAI spans come up often.
const WORDS: &[&str] = &[
    "chat",
    "embeddings",
    "openai",
    "anthropic",
    "gcp.gemini",
    "gcp.vertex_ai",
    "aws.bedrock",
    "gpt-4o",
    "claude-sonnet-4-5",
    "gemini-2.5-flash",
    "",
];

const ROLES: &[&str] = &["system", "developer", "user", "assistant", "tool", "robot"];
const PART_TYPES: &[&str] = &[
    "text",
    "tool_call",
    "tool_call_response",
    "reasoning",
    "image",
];

fn pick<'a>(list: &[&'a str], i: u8) -> &'a str {
    list[usize::from(i) % list.len()]
}

/// Any JSON value, a few levels deep.
#[derive(Arbitrary, Debug)]
enum Json {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Array(Vec<Leaf>),
    Object(Vec<(String, Leaf)>),
}

#[derive(Arbitrary, Debug)]
enum Leaf {
    Null,
    Int(i64),
    Str(String),
    Array(Vec<String>),
}

impl Leaf {
    fn value(&self) -> serde_json::Value {
        match self {
            Self::Null => json!(null),
            Self::Int(i) => json!(i),
            Self::Str(s) => json!(s),
            Self::Array(a) => json!(a),
        }
    }
}

impl Json {
    fn value(&self) -> serde_json::Value {
        match self {
            Self::Null => json!(null),
            Self::Bool(b) => json!(b),
            Self::Int(i) => json!(i),
            Self::Float(f) => json!(f),
            Self::Str(s) => json!(s),
            Self::Array(a) => a.iter().map(Leaf::value).collect(),
            Self::Object(o) => o.iter().map(|(k, v)| (k.clone(), v.value())).collect(),
        }
    }
}

/// A semconv message part, its fields present or not and of any type.
#[derive(Arbitrary, Debug)]
struct Part {
    kind: Option<u8>,
    content: Option<Json>,
    id: Option<Json>,
    name: Option<Json>,
    arguments: Option<Json>,
    response: Option<Json>,
}

#[derive(Arbitrary, Debug)]
struct Msg {
    role: Option<u8>,
    name: Option<Json>,
    parts: Option<Vec<Part>>,
    finish_reason: Option<String>,
}

/// The text of a JSON attribute (messages, tools, variables, embeddings input).
#[derive(Arbitrary, Debug)]
enum JsonText {
    /// Messages in (mostly) the semconv shape; cut short when `cut` is set.
    Messages {
        messages: Vec<Msg>,
        cut: Option<u16>,
    },
    /// Any JSON value.
    Value(Json),
    /// Anything.
    Raw(String),
}

impl JsonText {
    fn text(&self) -> String {
        match self {
            Self::Messages { messages, cut } => {
                let messages: Vec<serde_json::Value> = messages
                    .iter()
                    .map(|m| {
                        let mut v = serde_json::Map::new();
                        if let Some(role) = m.role {
                            v.insert("role".into(), pick(ROLES, role).into());
                        }
                        if let Some(name) = &m.name {
                            v.insert("name".into(), name.value());
                        }
                        if let Some(reason) = &m.finish_reason {
                            v.insert("finish_reason".into(), reason.as_str().into());
                        }
                        if let Some(parts) = &m.parts {
                            let parts = parts.iter().map(part_value).collect();
                            v.insert("parts".into(), serde_json::Value::Array(parts));
                        }
                        serde_json::Value::Object(v)
                    })
                    .collect();
                let mut text = serde_json::Value::Array(messages).to_string();
                if let Some(cut) = cut {
                    let mut at = usize::from(*cut) % (text.len() + 1);
                    while !text.is_char_boundary(at) {
                        at -= 1;
                    }
                    text.truncate(at);
                }
                text
            }
            Self::Value(v) => v.value().to_string(),
            Self::Raw(s) => s.clone(),
        }
    }
}

fn part_value(p: &Part) -> serde_json::Value {
    let mut v = serde_json::Map::new();
    if let Some(kind) = p.kind {
        v.insert("type".into(), pick(PART_TYPES, kind).into());
    }
    for (key, field) in [
        ("content", &p.content),
        ("id", &p.id),
        ("name", &p.name),
        ("arguments", &p.arguments),
        ("response", &p.response),
    ] {
        if let Some(field) = field {
            v.insert(key.into(), field.value());
        }
    }
    serde_json::Value::Object(v)
}

/// An attribute value of every `opentelemetry::Value` kind.
#[derive(Arbitrary, Debug)]
enum AttrValue {
    Bool(bool),
    I64(i64),
    F64(f64),
    Word(u8),
    String(String),
    Json(JsonText),
    Bools(Vec<bool>),
    I64s(Vec<i64>),
    F64s(Vec<f64>),
    Strings(Vec<String>),
}

impl AttrValue {
    fn value(&self) -> Value {
        match self {
            Self::Bool(b) => Value::Bool(*b),
            Self::I64(i) => Value::I64(*i),
            Self::F64(f) => Value::F64(*f),
            Self::Word(w) => Value::String(pick(WORDS, *w).into()),
            Self::String(s) => Value::String(s.clone().into()),
            Self::Json(j) => Value::String(j.text().into()),
            Self::Bools(v) => Value::Array(Array::Bool(v.clone())),
            Self::I64s(v) => Value::Array(Array::I64(v.clone())),
            Self::F64s(v) => Value::Array(Array::F64(v.clone())),
            Self::Strings(v) => Value::Array(Array::String(
                v.iter().cloned().map(StringValue::from).collect(),
            )),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Key {
    Known(u8),
    Random(String),
}

#[derive(Arbitrary, Debug)]
enum Time {
    After(u64, u32),
    Before(u64, u32),
}

impl Time {
    fn at(&self) -> SystemTime {
        let epoch = SystemTime::UNIX_EPOCH;
        match *self {
            Self::After(s, n) => epoch.checked_add(Duration::new(s, n % 1_000_000_000)),
            Self::Before(s, n) => epoch.checked_sub(Duration::new(s, n % 1_000_000_000)),
        }
        .unwrap_or(epoch)
    }
}

#[derive(Arbitrary, Debug)]
enum SpanStatus {
    Unset,
    Ok,
    Error(String),
}

#[derive(Arbitrary, Debug)]
struct Input {
    trace_id: u128,
    span_id: u64,
    parent_span_id: u64,
    name: String,
    start: Time,
    end: Time,
    status: SpanStatus,
    attributes: Vec<(Key, AttrValue)>,
}

fuzz_target!(|input: Input| {
    let attributes = input
        .attributes
        .iter()
        .map(|(key, value)| {
            let key = match key {
                Key::Known(i) => pick(KEYS, *i).to_owned(),
                Key::Random(k) => k.clone(),
            };
            KeyValue::new(key, value.value())
        })
        .collect();
    let span = SpanData {
        span_context: SpanContext::new(
            TraceId::from(input.trace_id),
            SpanId::from(input.span_id),
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        ),
        parent_span_id: SpanId::from(input.parent_span_id),
        parent_span_is_remote: false,
        span_kind: SpanKind::Client,
        name: input.name.clone().into(),
        start_time: input.start.at(),
        end_time: input.end.at(),
        attributes,
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status: match &input.status {
            SpanStatus::Unset => Status::Unset,
            SpanStatus::Ok => Status::Ok,
            SpanStatus::Error(d) => Status::error(d.clone()),
        },
        instrumentation_scope: InstrumentationScope::builder("fuzz").build(),
    };

    let Some(payload) = tracia::span_payload(&span) else {
        return;
    };
    serde_json::to_string(&payload).expect("a payload serializes");
    assert_eq!(payload["spanId"], format!("sp_{:016x}", input.span_id));
    // What the exporter sends, the collector reads.
    let create: tracia_collector::model::CreateSpan =
        serde_json::from_value(payload).expect("the collector reads the payload");
    let _ = tracia_collector::model::SpanRecord::from_create(create, i64::MAX / 2);
});
