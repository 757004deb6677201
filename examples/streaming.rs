//! Streaming: print a story as it is written, and stop it early with an `AbortHandle`.
//!
//! Text chunks arrive as a `futures::Stream`; `finish()` then gives the whole result
//! (usage included). `--abort-after N` stops the stream once N characters have arrived,
//! and Ctrl-C stops it from another task; either way `finish()` returns the partial
//! result with `aborted: true`, and the span is exported marked as aborted.
//!
//! Run with a local collector (spans go to `http://localhost:4318` by default):
//!
//! ```not_rust
//! cargo run -p tracia-collector
//! OPENAI_API_KEY=sk-... cargo run --example streaming -- [--model M] [--abort-after N]
//! ```

use std::io::Write as _;

use futures::StreamExt as _;
use tracia::{RunLocal, Tracia};

const USAGE: &str = "usage: streaming [--model MODEL] [--abort-after CHARS]";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut model = "gpt-4o-mini".to_owned();
    let mut abort_after: Option<usize> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--model" => model = args.next().ok_or(USAGE)?,
            "--abort-after" => abort_after = Some(args.next().ok_or(USAGE)?.parse()?),
            _ => {
                eprintln!("{USAGE}");
                std::process::exit(2);
            }
        }
    }

    let telemetry = tracia::telemetry::init()?;
    let tracia = Tracia::from_env()?;

    let input = RunLocal::new(model)
        .system("You are a storyteller.")
        .user("Tell a short story about a lighthouse keeper and a lost otter.")
        .max_output_tokens(400);
    // Resolves once the provider has accepted the request: a bad key fails here, not
    // as the first item of the stream.
    let mut stream = tracia.run_local_stream(input).await?;
    eprintln!("span {} in trace {}", stream.span_id(), stream.trace_id());

    // A handle can stop the stream from anywhere; here, from a Ctrl-C listener.
    let on_ctrl_c = stream.abort_handle();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            on_ctrl_c.abort();
        }
    });

    let stop = stream.abort_handle();
    let mut received = 0;
    let mut stdout = std::io::stdout();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        print!("{chunk}");
        stdout.flush()?;
        received += chunk.chars().count();
        if abort_after.is_some_and(|n| received >= n) {
            // The next `next()` returns `None` at once; the HTTP response is dropped.
            stop.abort();
        }
    }
    println!();

    let result = stream.finish().await?;
    println!(
        "usage: {} input + {} output = {} tokens; finish_reason={} aborted={}",
        result.usage.input_tokens,
        result.usage.output_tokens,
        result.usage.total_tokens,
        result.finish_reason.as_str(),
        result.aborted,
    );
    println!("span_id={} trace_id={}", result.span_id, result.trace_id);

    // Short-lived programs must flush: spans are exported in the background, in batches.
    telemetry.flush().await;
    Ok(())
}
