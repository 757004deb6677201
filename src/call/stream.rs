//! Streaming calls: text chunks as a `futures::Stream`, the assembled result at the
//! end, `abort()`, and a span that ends exactly once however the stream ends.
//!
//! [`StreamCore`] holds what every stream type shares (decoding, accumulation, the
//! deadline, abort, the span's single ending); [`RunStream`] and
//! [`crate::ResponsesStream`] only choose what their consumer is handed.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use futures::task::AtomicWaker;
use futures::{Stream, StreamExt};
use tracing::Instrument;

use crate::call::client::{CallState, PreparedCall};
use crate::call::run::RunResult;
use crate::error::{Error, ErrorCode, Result};
use crate::providers::bedrock::eventstream;
use crate::providers::chat::{ChatResponse, Framing, StreamAccumulator, StreamEvent};
use crate::providers::sse::{self, SseEvent};
use crate::transport;

type Events = Pin<Box<dyn Stream<Item = Result<SseEvent>> + Send>>;

/// A streaming call: a [`Stream`] of text chunks, then [`RunStream::finish`] for the
/// whole result (text, usage, tool calls assembled from their fragments).
///
/// - A provider error mid-stream is yielded as an `Err` item and fails `finish()`; it
///   never resolves to a result with empty text.
/// - [`RunStream::abort`] (or an [`AbortHandle`] from another task) stops the stream at
///   once; `finish()` then returns the partial result with `aborted: true`.
/// - Dropping the stream early ends its span, once, as an error marked
///   `tracia.stream.aborted`, with whatever text and usage had arrived.
/// - The call's timeout covers the whole stream.
///
/// ```no_run
/// use futures::StreamExt;
/// # async fn demo(tracia: tracia::Tracia) -> Result<(), tracia::Error> {
/// let mut stream = tracia.run_local_stream(tracia::RunLocal::new("gpt-4o").user("Tell a story")).await?;
/// println!("span {} in trace {}", stream.span_id(), stream.trace_id());
/// let stop = stream.abort_handle();
/// while let Some(chunk) = stream.next().await {
///     let chunk = chunk?;
///     if chunk.contains("dragon") { stop.abort(); }
///     print!("{chunk}");
/// }
/// let result = stream.finish().await?;
/// println!("\naborted: {}", result.aborted);
/// # Ok(()) }
/// ```
pub struct RunStream {
    core: StreamCore<String>,
}

/// A text chunk for the consumer of a [`RunStream`].
fn text_chunk(event: &StreamEvent) -> Option<String> {
    match event {
        StreamEvent::Text(text) if !text.is_empty() => Some(text.clone()),
        _ => None,
    }
}

impl RunStream {
    /// Sends the request and waits for the provider to accept it.
    pub(crate) async fn open(prepared: PreparedCall) -> Result<Self> {
        let core = StreamCore::open(prepared, text_chunk).await?;
        Ok(Self { core })
    }

    /// The call's span id (`sp_…`), known from the start.
    pub fn span_id(&self) -> String {
        self.core.state.span_id()
    }

    /// The call's trace id (`tr_…`), known from the start.
    pub fn trace_id(&self) -> String {
        self.core.state.trace_id()
    }

    /// A handle that stops this stream from elsewhere.
    pub fn abort_handle(&self) -> AbortHandle {
        self.core.abort.clone()
    }

    /// Stops the stream now.
    pub fn abort(&self) {
        self.core.abort.abort();
    }

    /// Reads the rest of the stream and returns the whole result.
    ///
    /// Fails with the error that ended the stream, if one did.
    pub async fn finish(mut self) -> Result<RunResult> {
        let Finished {
            response,
            cost,
            aborted,
        } = self.core.drain().await?;
        Ok(self.core.state.result(response, cost, aborted))
    }
}

impl Stream for RunStream {
    type Item = Result<String>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.core.poll_next_unpin(cx)
    }
}

impl std::fmt::Debug for RunStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.core.debug("RunStream", f)
    }
}

/// Stops a [`RunStream`] or [`crate::ResponsesStream`] from anywhere; cheap to clone.
///
/// ```no_run
/// # async fn demo(stream: tracia::RunStream) {
/// let handle = stream.abort_handle();
/// tokio::spawn(async move {
///     tokio::time::sleep(std::time::Duration::from_secs(2)).await;
///     handle.abort();
/// });
/// # }
/// ```
#[derive(Clone, Debug, Default)]
pub struct AbortHandle {
    inner: Arc<AbortState>,
}

#[derive(Debug, Default)]
struct AbortState {
    aborted: AtomicBool,
    waker: AtomicWaker,
}

impl AbortHandle {
    /// Stops the stream; the consumer's pending `next()` returns `None` right away.
    pub fn abort(&self) {
        self.inner.aborted.store(true, Ordering::Release);
        self.inner.waker.wake();
    }

    fn is_aborted(&self) -> bool {
        self.inner.aborted.load(Ordering::Acquire)
    }
}

/// How a stream ended.
enum Ending {
    Complete,
    Failed(Error),
    /// Stopped by the caller: `abort()` (a result is kept) or drop (nobody to give it to).
    Aborted(&'static str),
}

/// A stream that ended without an error: what had arrived, recorded on the span.
pub(crate) struct Finished {
    pub response: ChatResponse,
    pub cost: Option<f64>,
    /// Stopped by `abort()` before its end.
    pub aborted: bool,
}

/// The part of a streaming call every stream type shares: SSE decoding and assembly,
/// the call's deadline, abort, and the span's ending, exactly once (drop included).
/// `select` picks what the consumer is handed for each decoded event.
pub(crate) struct StreamCore<T> {
    events: Events,
    select: fn(&StreamEvent) -> Option<T>,
    acc: StreamAccumulator,
    ready: VecDeque<T>,
    pub state: CallState,
    deadline: Pin<Box<tokio::time::Sleep>>,
    pub abort: AbortHandle,
    first_chunk_seen: bool,
    ended: bool,
    outcome: Option<Result<Finished>>,
    /// Set when the body was cut because one event grew past the size limit.
    too_large: Arc<AtomicBool>,
}

impl<T: Unpin> StreamCore<T> {
    /// Sends the request and waits for the provider to accept it.
    pub(crate) async fn open(
        PreparedCall {
            http,
            request,
            state,
        }: PreparedCall,
        select: fn(&StreamEvent) -> Option<T>,
    ) -> Result<Self> {
        let timeout = state.timeout;
        let mut deadline = Box::pin(tokio::time::sleep(timeout));
        let send = transport::send(&http, request, state.wire, state.provider, timeout)
            .instrument(state.call.span.clone());
        let response = tokio::select! {
            response = send => response,
            () = &mut deadline => Err(transport::timeout_error(timeout)),
        };
        let response = match response {
            Ok(r) => r,
            Err(error) => {
                state.call.fail(&error);
                return Err(error);
            }
        };
        let body = response.bytes_stream();
        let too_large = Arc::new(AtomicBool::new(false));
        let events: Events = match state.wire.framing() {
            Framing::Sse => Box::pin(sse::sse_events(
                transport::bounded_events(body, transport::MAX_RESPONSE_BYTES, too_large.clone()),
                timeout,
            )),
            Framing::AwsEventStream => Box::pin(eventstream::events(body, timeout)),
        };
        Ok(Self {
            events,
            select,
            acc: StreamAccumulator::default(),
            ready: VecDeque::new(),
            state,
            deadline,
            abort: AbortHandle::default(),
            first_chunk_seen: false,
            ended: false,
            outcome: None,
            too_large,
        })
    }

    /// Reads the rest of the stream; how it ended.
    pub(crate) async fn drain(&mut self) -> Result<Finished> {
        while self.next().await.is_some() {}
        self.outcome.take().unwrap_or_else(|| {
            Err(Error::new(
                ErrorCode::Unknown,
                "stream ended without an outcome",
            ))
        })
    }

    /// The final usage, once the stream reached its end (not aborted, not failed).
    pub(crate) fn completed_usage(&self) -> Option<crate::Usage> {
        match &self.outcome {
            Some(Ok(f)) if !f.aborted => Some(f.response.usage.unwrap_or_default()),
            _ => None,
        }
    }

    pub(crate) fn debug(&self, name: &str, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct(name)
            .field("span_id", &self.state.span_id())
            .field("trace_id", &self.state.trace_id())
            .field("ended", &self.ended)
            .finish()
    }
}

impl<T> StreamCore<T> {
    /// Ends the stream: records the outcome on the span and ends it now, once. Every
    /// ending goes through here (last event, failure, deadline, abort, drop), so the
    /// span's end is the moment the stream ended, not when the request went out (its
    /// last `enter`) nor when `finish()` was called.
    fn end(&mut self, ending: Ending) {
        if std::mem::replace(&mut self.ended, true) {
            return;
        }
        // The body is dropped now, which closes the connection: a provider streaming on
        // (an endless answer) is not read a byte more, whoever still holds the stream.
        self.events = Box::pin(futures::stream::empty());
        let response = std::mem::take(&mut self.acc).finish();
        let outcome = match ending {
            Ending::Complete => {
                let cost = self.state.record(&response, false);
                Ok(Finished {
                    response,
                    cost,
                    aborted: false,
                })
            }
            Ending::Aborted(why) => {
                let cost = self.state.record(&response, true);
                self.state.call.record_aborted();
                self.state
                    .call
                    .record_error(&Error::new(ErrorCode::Aborted, why));
                Ok(Finished {
                    response,
                    cost,
                    aborted: true,
                })
            }
            Ending::Failed(error) => {
                self.state.record(&response, true);
                self.state.call.record_error(&error);
                Err(error)
            }
        };
        self.state.call.end();
        self.outcome = Some(outcome);
    }

    fn on_event(&mut self, event: SseEvent) -> Result<()> {
        let decoded = self
            .state
            .wire
            .decode_event(&event.event, &event.data)
            .map_err(|msg| {
                Error::new(
                    ErrorCode::ProviderError,
                    format!("LLM provider error: {msg}"),
                )
            })?;
        for ev in decoded {
            let ev = self.acc.resolve(ev);
            // Checked before the event is kept: the answer held stays within the cap.
            if self.acc.answer_bytes() + ev.answer_len() > self.state.max_answer_bytes {
                return Err(transport::answer_too_large(self.state.max_answer_bytes));
            }
            let content = matches!(
                ev,
                StreamEvent::Text(_)
                    | StreamEvent::ToolCall { .. }
                    | StreamEvent::WholeToolCall { .. }
            );
            if content && !self.first_chunk_seen {
                self.first_chunk_seen = true;
                self.state.call.record_first_chunk();
            }
            if let Some(item) = (self.select)(&ev) {
                self.ready.push_back(item);
            }
            self.acc.push(ev);
        }
        Ok(())
    }
}

impl<T: Unpin> Stream for StreamCore<T> {
    type Item = Result<T>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if let Some(item) = this.ready.pop_front() {
                return Poll::Ready(Some(Ok(item)));
            }
            if this.ended {
                return Poll::Ready(None);
            }
            this.abort.inner.waker.register(cx.waker());
            if this.abort.is_aborted() {
                this.end(Ending::Aborted("Stream aborted"));
                return Poll::Ready(None);
            }
            if this.deadline.as_mut().poll(cx).is_ready() {
                let error = transport::timeout_error(this.state.timeout);
                let yielded = error.duplicate();
                this.end(Ending::Failed(error));
                return Poll::Ready(Some(Err(yielded)));
            }
            let failure = match this.events.poll_next_unpin(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(event))) => match this.on_event(event) {
                    Ok(()) if this.acc.done => {
                        // What the last event decoded to is still handed out first.
                        this.end(Ending::Complete);
                        continue;
                    }
                    Ok(()) => continue,
                    Err(error) => error,
                },
                Poll::Ready(Some(Err(error))) => error,
                Poll::Ready(None) if this.acc.finish_seen() => {
                    // Gemini has no end marker, and some compatible servers skip
                    // `[DONE]`: a finish reason is what makes the answer complete.
                    this.end(Ending::Complete);
                    continue;
                }
                Poll::Ready(None) => Error::new(
                    ErrorCode::ProviderError,
                    "LLM provider error: the stream ended before the response was complete",
                ),
            };
            let failure = if this.too_large.load(Ordering::Acquire) {
                transport::too_large_error("an event of the stream")
            } else {
                failure
            };
            let yielded = failure.duplicate();
            this.end(Ending::Failed(failure));
            return Poll::Ready(Some(Err(yielded)));
        }
    }
}

impl<T> Drop for StreamCore<T> {
    fn drop(&mut self) {
        if !self.ended {
            // Dropped mid-way: the span still ends once, with what had arrived.
            self.end(Ending::Aborted("Stream dropped before completion"));
        }
    }
}
