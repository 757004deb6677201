//! Tools: a full tool-call round trip, traced as one trace.
//!
//! The model is offered a `get_weather` tool; when it asks for it, the app runs a local
//! (fake) weather function inside an `execute_tool get_weather` span, as the GenAI
//! semantic conventions describe, sends the result back as a tool message and prints the
//! final answer. A `Session` chains the two LLM calls, and an app span around the whole
//! exchange makes the tool execution part of the same trace.
//!
//! Run with a local collector (spans go to `http://localhost:4318` by default):
//!
//! ```not_rust
//! cargo run -p tracia-collector
//! OPENAI_API_KEY=sk-... cargo run --example tools -- [CITY]
//! ```

use serde_json::{Value, json};
use tracia::{Message, RunLocal, ToolDefinition, Tracia};
use tracing::Instrument as _;

const MODEL: &str = "gpt-4o-mini";

/// The "tool": a real app would call a weather API here.
fn get_weather(arguments: &Value) -> Value {
    let city = arguments["city"].as_str().unwrap_or("somewhere");
    json!({"city": city, "temperature_c": 18, "conditions": "light rain"})
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let city = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "Paris".to_owned());
    let telemetry = tracia::telemetry::init()?;
    let tracia = Tracia::from_env()?;

    // The LLM calls and the tool execution become children of this span: one trace.
    let result = ask_with_tools(&tracia, &city)
        .instrument(tracing::info_span!("weather_question"))
        .await;

    // Flush even after an error: the failed call's span is worth seeing.
    telemetry.flush().await;
    let answer = result?;
    println!("answer: {answer}");
    Ok(())
}

async fn ask_with_tools(tracia: &Tracia, city: &str) -> Result<String, Box<dyn std::error::Error>> {
    let weather_tool = ToolDefinition::new("get_weather")
        .with_description("Current weather for a city")
        .with_parameters(json!({
            "type": "object",
            "properties": {"city": {"type": "string", "description": "City name, e.g. Paris"}},
            "required": ["city"]
        }));
    let session = tracia.create_session();
    let mut history = vec![
        Message::system("You are a weather assistant. Use the tool; answer in one sentence."),
        Message::user(format!("What's the weather like in {city}?")),
    ];

    // Bounded: a model that keeps asking for tools must not loop forever.
    for _ in 0..4 {
        let input = RunLocal::new(MODEL)
            .messages(history.clone())
            .tool(weather_tool.clone());
        let result = session.run_local(input).await?;
        println!(
            "call span_id={} trace_id={} finish_reason={}",
            result.span_id,
            result.trace_id,
            result.finish_reason.as_str()
        );
        if result.tool_calls.is_empty() {
            return Ok(result.text);
        }
        // The assistant message carrying the tool calls must precede their answers.
        history.push(result.message.clone());
        for call in &result.tool_calls {
            let output = match call.name.as_str() {
                "get_weather" => {
                    // An app-side tool span (GenAI semconv "execute_tool"); the model's
                    // request for the call is already on the chat span's output messages.
                    let span = tracing::info_span!(
                        "execute_tool get_weather",
                        otel.kind = "internal",
                        gen_ai.operation.name = "execute_tool",
                        gen_ai.tool.name = "get_weather",
                        "gen_ai.tool.type" = "function",
                        gen_ai.tool.call.id = %call.id,
                    );
                    span.in_scope(|| get_weather(&call.arguments))
                }
                // Tell the model rather than fail: it can recover from a wrong tool name.
                other => json!({"error": format!("unknown tool {other}")}),
            };
            println!("tool {}({}) -> {output}", call.name, call.arguments);
            history.push(Message::tool(&call.id, output.to_string()).with_tool_name(&call.name));
        }
    }
    Err("the model kept asking for tools".into())
}
