//! Streaming calls: text chunks as a `futures::Stream`, the assembled result at the
//! end, `abort()`, and a span that ends exactly once however the stream ends.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use futures::task::AtomicWaker;
use futures::{Stream, StreamExt};
use tracing::Instrument;

use crate::chat::{StreamAccumulator, StreamEvent};
use crate::client::{CallState, PreparedCall};
use crate::error::{Error, ErrorCode, Result};
use crate::ids;
use crate::run::RunResult;
use crate::transport::{self, SseEvent};

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
    events: Events,
    acc: StreamAccumulator,
    ready: VecDeque<String>,
    state: CallState,
    deadline: Pin<Box<tokio::time::Sleep>>,
    abort: AbortHandle,
    first_chunk_seen: bool,
    ended: bool,
    outcome: Option<Result<RunResult>>,
}

/// Stops a [`RunStream`] from anywhere; cheap to clone.
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

impl RunStream {
    /// Sends the request and waits for the provider to accept it.
    pub(crate) async fn open(
        PreparedCall {
            http,
            request,
            state,
        }: PreparedCall,
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
                state.call.record_error(&error);
                return Err(error);
            }
        };
        Ok(Self {
            events: Box::pin(transport::sse_events(response.bytes_stream(), timeout)),
            acc: StreamAccumulator::default(),
            ready: VecDeque::new(),
            state,
            deadline,
            abort: AbortHandle::default(),
            first_chunk_seen: false,
            ended: false,
            outcome: None,
        })
    }

    /// The call's span id (`sp_…`), known from the start.
    pub fn span_id(&self) -> String {
        ids::format_span_id(self.state.call.span_id)
    }

    /// The call's trace id (`tr_…`), known from the start.
    pub fn trace_id(&self) -> String {
        ids::format_trace_id(self.state.call.trace_id)
    }

    /// A handle that stops this stream from elsewhere.
    pub fn abort_handle(&self) -> AbortHandle {
        self.abort.clone()
    }

    /// Stops the stream now.
    pub fn abort(&self) {
        self.abort.abort();
    }

    /// Reads the rest of the stream and returns the whole result.
    ///
    /// Fails with the error that ended the stream, if one did.
    pub async fn finish(mut self) -> Result<RunResult> {
        while self.next().await.is_some() {}
        self.outcome.take().unwrap_or_else(|| {
            Err(Error::new(
                ErrorCode::Unknown,
                "stream ended without an outcome",
            ))
        })
    }

    /// Ends the stream: records the outcome on the span, once.
    fn end(&mut self, ending: Ending) {
        if std::mem::replace(&mut self.ended, true) {
            return;
        }
        let acc = std::mem::take(&mut self.acc);
        let outcome = match ending {
            Ending::Complete => Ok(self.state.finish(acc.finish(), false, false)),
            Ending::Aborted(why) => {
                let result = self.state.finish(acc.finish(), true, true);
                self.state.call.record_aborted();
                self.state
                    .call
                    .record_error(&Error::new(ErrorCode::Aborted, why));
                Ok(result)
            }
            Ending::Failed(error) => {
                self.state.record(&acc.finish(), true);
                self.state.call.record_error(&error);
                Err(error)
            }
        };
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
            let content = matches!(
                ev,
                StreamEvent::Text(_)
                    | StreamEvent::ToolCall { .. }
                    | StreamEvent::WholeToolCall { .. }
            );
            if content && !self.first_chunk_seen {
                self.first_chunk_seen = true;
                self.state
                    .call
                    .record_first_chunk(self.state.started.elapsed().as_secs_f64());
            }
            if let Some(text) = self.acc.push(ev) {
                self.ready.push_back(text);
            }
        }
        Ok(())
    }
}

impl Stream for RunStream {
    type Item = Result<String>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if let Some(text) = this.ready.pop_front() {
                return Poll::Ready(Some(Ok(text)));
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
                        // Text decoded from the last event is still handed out first.
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
            let yielded = failure.duplicate();
            this.end(Ending::Failed(failure));
            return Poll::Ready(Some(Err(yielded)));
        }
    }
}

impl Drop for RunStream {
    fn drop(&mut self) {
        if !self.ended {
            // Dropped mid-way: the span still ends once, with what had arrived.
            self.end(Ending::Aborted("Stream dropped before completion"));
        }
    }
}

impl std::fmt::Debug for RunStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunStream")
            .field("span_id", &self.span_id())
            .field("trace_id", &self.trace_id())
            .field("ended", &self.ended)
            .finish()
    }
}
