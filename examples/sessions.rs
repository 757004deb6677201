//! Sessions: a multi-turn conversation traced as one trace.
//!
//! Each call of a `Session` is the child of the call before it, so the three turns below
//! form one chain in one trace. The app keeps the conversation itself, as a
//! `Vec<Message>`: each turn appends the model's answer (`result.message`) and the next
//! user message. Finally `create_session_from(trace_id, last_span_id)` continues the
//! same trace from ids alone, as a later HTTP request of the same chat would.
//!
//! Run with a local collector (spans go to `http://localhost:4318` by default):
//!
//! ```not_rust
//! cargo run -p tracia-collector
//! OPENAI_API_KEY=sk-... cargo run --example sessions -- [--model M]
//! ```

use tracia::{Message, RunLocal, Tracia};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let model = match std::env::args().skip(1).collect::<Vec<_>>().as_slice() {
        [] => "gpt-4o-mini".to_owned(),
        [flag, model] if flag == "--model" => model.clone(),
        _ => {
            eprintln!("usage: sessions [--model MODEL]");
            std::process::exit(2);
        }
    };

    let telemetry = tracia::telemetry::init()?;
    let tracia = Tracia::from_env()?;
    let session = tracia.create_session();

    let turns = [
        "My name is Ada and I keep otters. Say hi in one sentence.",
        "What animal do I keep? One word.",
        "And what is my name? One word.",
    ];
    let mut history = vec![Message::system("You are a friendly, very brief assistant.")];
    let mut trace_ids = Vec::new();
    for (i, question) in turns.into_iter().enumerate() {
        history.push(Message::user(question));
        let result = session
            .run_local(RunLocal::new(&model).messages(history.clone()))
            .await?;
        println!(
            "turn {}: {}\n  span_id={} trace_id={}",
            i + 1,
            result.text,
            result.span_id,
            result.trace_id
        );
        // The model only knows what the history tells it: keep its answer for next time.
        history.push(result.message);
        trace_ids.push(result.trace_id);
    }
    let one_trace = trace_ids.iter().all(|t| *t == trace_ids[0]);
    println!(
        "all {} turns share trace {}: {one_trace}",
        trace_ids.len(),
        trace_ids[0]
    );

    // A web app would store these two strings with the chat (or send them to the
    // browser), then continue the trace in the next request without the `Session` value.
    let trace_id = session.trace_id().ok_or("the session has no trace yet")?;
    let last_span_id = session
        .last_span_id()
        .ok_or("the session has no span yet")?;
    let later = tracia.create_session_from(&trace_id, Some(&last_span_id))?;
    history.push(Message::user("Thanks! Say goodbye in three words."));
    let result = later
        .run_local(RunLocal::new(&model).messages(history))
        .await?;
    println!(
        "later request: {}\n  span_id={} trace_id={} (parent {last_span_id}, same trace: {})",
        result.text,
        result.span_id,
        result.trace_id,
        result.trace_id == trace_id
    );

    // Short-lived programs must flush: spans are exported in the background, in batches.
    telemetry.flush().await;
    Ok(())
}
