//! The streaming form of `run_responses`: typed events over the shared stream core.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures::{Stream, StreamExt};

use crate::call::client::PreparedCall;
use crate::call::responses::ResponsesResult;
use crate::call::stream::{AbortHandle, Finished, StreamCore};
use crate::error::Result;
use crate::providers::chat::StreamEvent;
use crate::providers::openai_responses::{ResponsesToolCall, function_call, message_text};
use crate::usage::Usage;

/// One event of a [`ResponsesStream`], as Tracia's `runResponses` emits them.
///
/// ```
/// use tracia::ResponsesEvent;
/// fn show(event: &ResponsesEvent) {
///     match event {
///         ResponsesEvent::TextDelta(text) => print!("{text}"),
///         ResponsesEvent::ToolCall(call) => println!("\n→ {}({})", call.name, call.arguments),
///         ResponsesEvent::Done(usage) => println!("\n{} tokens", usage.total_tokens),
///         _ => {}
///     }
/// }
/// show(&ResponsesEvent::TextDelta("Hi".into()));
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ResponsesEvent {
    /// A piece of answer text.
    TextDelta(String),
    /// The whole text of an answer message, once it is complete.
    Text(String),
    /// A piece of the reasoning summary.
    Reasoning(String),
    /// A complete function call.
    ToolCall(ResponsesToolCall),
    /// The response is complete; always the last event of a stream that reached its end.
    Done(Usage),
}

/// What the consumer is handed for one decoded event.
pub(crate) fn responses_event(event: &StreamEvent) -> Option<ResponsesEvent> {
    match event {
        StreamEvent::Text(text) if !text.is_empty() => {
            Some(ResponsesEvent::TextDelta(text.clone()))
        }
        StreamEvent::Reasoning(text) if !text.is_empty() => {
            Some(ResponsesEvent::Reasoning(text.clone()))
        }
        StreamEvent::OutputItem(item) => {
            function_call(item)
                .map(ResponsesEvent::ToolCall)
                .or_else(|| {
                    message_text(item)
                        .filter(|t| !t.is_empty())
                        .map(ResponsesEvent::Text)
                })
        }
        _ => None,
    }
}

/// A streaming `run_responses` call: a [`Stream`] of [`ResponsesEvent`]s, then
/// [`ResponsesStream::finish`] for the whole [`ResponsesResult`].
///
/// It keeps [`crate::RunStream`]'s guarantees: a provider error mid-stream (including
/// a `response.failed` or `error` event) is an `Err` item and fails `finish()`;
/// [`abort`](Self::abort) stops it at once and `finish()` then returns the partial
/// result with `aborted: true`; dropping it early ends its span once, as an error
/// marked `tracia.stream.aborted`; the call's timeout covers the whole stream.
///
/// ```no_run
/// use futures::StreamExt;
/// use tracia::ResponsesEvent;
/// # async fn demo(tracia: tracia::Tracia) -> Result<(), tracia::Error> {
/// let input = tracia::RunResponses::new("o4-mini").user("Tell a story");
/// let mut stream = tracia.run_responses_stream(input).await?;
/// let stop = stream.abort_handle();
/// while let Some(event) = stream.next().await {
///     match event? {
///         ResponsesEvent::TextDelta(text) if text.contains("dragon") => stop.abort(),
///         ResponsesEvent::TextDelta(text) => print!("{text}"),
///         _ => {}
///     }
/// }
/// let result = stream.finish().await?;
/// println!("\naborted: {}, span {}", result.aborted, result.span_id);
/// # Ok(()) }
/// ```
pub struct ResponsesStream {
    core: StreamCore<ResponsesEvent>,
    done_sent: bool,
}

impl ResponsesStream {
    /// Sends the request and waits for OpenAI to accept it.
    pub(crate) async fn open(prepared: PreparedCall) -> Result<Self> {
        let core = StreamCore::open(prepared, responses_event).await?;
        Ok(Self {
            core,
            done_sent: false,
        })
    }

    /// The call's span id (`sp_…`), known from the start.
    ///
    /// ```no_run
    /// # async fn demo(stream: tracia::ResponsesStream) {
    /// println!("span {} in trace {}", stream.span_id(), stream.trace_id());
    /// # }
    /// ```
    pub fn span_id(&self) -> String {
        self.core.state.span_id()
    }

    /// The call's trace id (`tr_…`), known from the start.
    pub fn trace_id(&self) -> String {
        self.core.state.trace_id()
    }

    /// A handle that stops this stream from elsewhere.
    ///
    /// ```no_run
    /// # async fn demo(stream: tracia::ResponsesStream) {
    /// let handle = stream.abort_handle();
    /// tokio::spawn(async move {
    ///     tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    ///     handle.abort();
    /// });
    /// # }
    /// ```
    pub fn abort_handle(&self) -> AbortHandle {
        self.core.abort.clone()
    }

    /// Stops the stream now; the pending `next()` returns `None` at once.
    pub fn abort(&self) {
        self.core.abort.abort();
    }

    /// Reads the rest of the stream and returns the whole result.
    ///
    /// Fails with the error that ended the stream, if one did.
    ///
    /// ```no_run
    /// # async fn demo(tracia: tracia::Tracia) -> Result<(), tracia::Error> {
    /// let input = tracia::RunResponses::new("o4-mini").user("Hi");
    /// let result = tracia.run_responses_stream(input).await?.finish().await?;
    /// println!("{}", result.text);
    /// # Ok(()) }
    /// ```
    pub async fn finish(mut self) -> Result<ResponsesResult> {
        let Finished {
            response,
            cost,
            aborted,
        } = self.core.drain().await?;
        Ok(ResponsesResult::new(
            &self.core.state,
            response,
            cost,
            aborted,
        ))
    }
}

impl Stream for ResponsesStream {
    type Item = Result<ResponsesEvent>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        match this.core.poll_next_unpin(cx) {
            Poll::Ready(None) if !this.done_sent => {
                this.done_sent = true;
                Poll::Ready(
                    this.core
                        .completed_usage()
                        .map(|usage| Ok(ResponsesEvent::Done(usage))),
                )
            }
            other => other,
        }
    }
}

impl std::fmt::Debug for ResponsesStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.core.debug("ResponsesStream", f)
    }
}
