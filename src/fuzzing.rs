//! Private entry points for the fuzz targets in `fuzz/`, compiled only under
//! cargo-fuzz's `--cfg fuzzing`.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use reqwest::StatusCode;

use crate::providers::anthropic::AnthropicMessages;
use crate::providers::bedrock::BedrockConverse;
use crate::providers::chat::{ChatWire, Framing, StreamAccumulator};
use crate::providers::gemini::GeminiChat;
use crate::providers::openai::OpenAiChat;
use crate::providers::openai_responses::OpenAiResponses;
use crate::providers::sse::SseEvent;

/// The error a failed Tracia REST response of `status` with `body` becomes; a status
/// that is not a valid HTTP status (100–999) is read as 500.
pub fn rest_error(status: u16, body: &[u8]) -> crate::Error {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    crate::rest::api_error(status, body)
}

/// A provider's streaming wire format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// OpenAI Chat Completions (SSE).
    OpenAi,
    /// Anthropic Messages (SSE).
    Anthropic,
    /// Gemini `streamGenerateContent?alt=sse` (SSE).
    Gemini,
    /// OpenAI Responses (SSE).
    Responses,
    /// Bedrock ConverseStream (AWS event-stream frames).
    Bedrock,
}

impl Wire {
    fn chat(self) -> &'static dyn ChatWire {
        match self {
            Self::OpenAi => &OpenAiChat,
            Self::Anthropic => &AnthropicMessages,
            Self::Gemini => &GeminiChat,
            Self::Responses => &OpenAiResponses,
            Self::Bedrock => &BedrockConverse,
        }
    }
}

/// Decodes a streamed response body, arriving as `chunks`, the way a `RunStream` (and
/// a `ResponsesStream`) does: framing (SSE with its per-event size limit, here
/// `sse_event_limit` bytes, or AWS event-stream), the wire's event decoding, and
/// assembly, stopping at the first error or at the provider's end marker. The result is a description of everything that came out: each decoded
/// event, what the stream consumers were handed, how the stream ended and the
/// assembled response, so that two decodings can be compared.
pub fn decode_stream<I>(wire: Wire, sse_event_limit: usize, chunks: I) -> String
where
    I: IntoIterator<Item = Vec<u8>>,
    I::IntoIter: Send + 'static,
{
    let chat = wire.chat();
    let body = futures::stream::iter(chunks.into_iter().map(|c| Ok(Bytes::from(c))));
    let timeout = Duration::from_secs(1);
    let too_large = Arc::new(AtomicBool::new(false));
    let mut frames: Pin<Box<dyn Stream<Item = crate::error::Result<SseEvent>> + Send>> =
        match chat.framing() {
            Framing::Sse => Box::pin(crate::providers::sse::sse_events(
                crate::transport::bounded_events(body, sse_event_limit, too_large.clone()),
                timeout,
            )),
            Framing::AwsEventStream => Box::pin(crate::providers::bedrock::eventstream::events(
                body, timeout,
            )),
        };
    let mut acc = StreamAccumulator::default();
    let mut out = String::new();
    let ending: Result<&str, String> = futures::executor::block_on(async {
        while let Some(frame) = frames.next().await {
            let frame = frame.map_err(|e| e.to_string())?;
            for event in chat.decode_event(&frame.event, &frame.data)? {
                let event = acc.resolve(event);
                out.push_str(&format!("{event:?}\n"));
                if let Some(item) = crate::call::responses_stream::responses_event(&event) {
                    out.push_str(&format!("  -> {item:?}\n"));
                }
                acc.push(event);
            }
            if acc.done {
                return Ok("done");
            }
        }
        if acc.finish_seen() {
            Ok("finished")
        } else {
            Err("ended before the response was complete".to_owned())
        }
    });
    // As `StreamCore` reports it: a body cut for its size fails for that.
    let ending = match ending {
        Err(_) if too_large.load(Ordering::Acquire) => {
            Err(crate::transport::too_large_error("an event of the stream").to_string())
        }
        other => other,
    };
    let response = acc.finish();
    let finish = response.finish();
    format!("{out}{ending:?}\n{finish:?} {response:?}")
}
