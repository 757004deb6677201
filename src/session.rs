//! Sessions: multi-turn calls chained into one trace.

use std::sync::{Arc, Mutex, PoisonError};

use opentelemetry::trace::{SpanId, TraceId};

use crate::client::Tracia;
use crate::error::Result;
use crate::ids;
use crate::responses::{ResponsesResult, RunResponses};
use crate::responses_stream::ResponsesStream;
use crate::run::{RunLocal, RunResult};
use crate::span::Placement;
use crate::stream::RunStream;

/// Calls chained into one trace: each call's parent is the previous call's span.
///
/// The first call of a fresh session joins the ambient trace (a user's
/// `#[instrument]` span) if there is one, else starts a trace; every later call is the
/// child of the call before it, wherever it is made. Clones share the position.
///
/// ```no_run
/// # async fn demo(tracia: tracia::Tracia) -> Result<(), tracia::Error> {
/// use tracia::RunLocal;
/// let session = tracia.create_session();
/// let a = session.run_local(RunLocal::new("gpt-4o").user("My name is Ada.")).await?;
/// let b = session
///     .run_local(RunLocal::new("gpt-4o").user("My name is Ada.").message(a.message.clone()).user("What is my name?"))
///     .await?;
/// assert_eq!(session.trace_id(), Some(b.trace_id.clone()));
/// assert_eq!(session.last_span_id(), Some(b.span_id));
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Session {
    tracia: Tracia,
    position: Arc<Mutex<Position>>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Position {
    trace_id: Option<TraceId>,
    last_span_id: Option<SpanId>,
}

impl Session {
    pub(crate) fn new(
        tracia: Tracia,
        trace_id: Option<TraceId>,
        last_span_id: Option<SpanId>,
    ) -> Self {
        Self {
            tracia,
            position: Arc::new(Mutex::new(Position {
                trace_id,
                last_span_id,
            })),
        }
    }

    fn position(&self) -> Position {
        *self.position.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn placement(&self) -> Placement {
        let p = self.position();
        Placement {
            trace_id: p.trace_id,
            parent_span_id: p.last_span_id,
            span_id: None,
        }
    }

    fn advance(&self, trace_id: TraceId, span_id: SpanId) {
        let mut p = self.position.lock().unwrap_or_else(PoisonError::into_inner);
        p.trace_id = Some(trace_id);
        p.last_span_id = Some(span_id);
    }

    /// Moves the session on to a call just made (ids in Tracia form).
    fn moved_to(&self, trace_id: &str, span_id: &str) {
        if let (Ok(trace), Ok(span)) = (ids::parse_trace_id(trace_id), ids::parse_span_id(span_id))
        {
            self.advance(trace, span);
        }
    }

    /// Runs a call as the next turn of the session.
    pub async fn run_local(&self, input: RunLocal) -> Result<RunResult> {
        let result = self.tracia.run_local_at(input, self.placement()).await?;
        self.moved_to(&result.trace_id, &result.span_id);
        Ok(result)
    }

    /// Streams a call as the next turn. The session moves on as soon as the stream
    /// opens (its span id is known then), so the next turn chains even if this stream is
    /// dropped early.
    pub async fn run_local_stream(&self, input: RunLocal) -> Result<RunStream> {
        let stream = self
            .tracia
            .run_local_stream_at(input, self.placement())
            .await?;
        self.moved_to(&stream.trace_id(), &stream.span_id());
        Ok(stream)
    }

    /// Runs a Responses API call ([`Tracia::run_responses`]) as the next turn.
    ///
    /// ```no_run
    /// # async fn demo(tracia: tracia::Tracia) -> Result<(), tracia::Error> {
    /// use tracia::RunResponses;
    /// let session = tracia.create_session();
    /// let first = session.run_responses(RunResponses::new("o4-mini").user("My name is Ada.")).await?;
    /// let second = session
    ///     .run_responses(RunResponses::new("o4-mini").user("My name is Ada.")
    ///         .items(first.output_items.clone()).user("What is my name?"))
    ///     .await?;
    /// assert_eq!(first.trace_id, second.trace_id);
    /// # Ok(()) }
    /// ```
    pub async fn run_responses(&self, input: RunResponses) -> Result<ResponsesResult> {
        let result = self
            .tracia
            .run_responses_at(input, self.placement())
            .await?;
        self.moved_to(&result.trace_id, &result.span_id);
        Ok(result)
    }

    /// Streams a Responses API call as the next turn; the session moves on as soon as
    /// the stream opens, as with [`Session::run_local_stream`].
    ///
    /// ```no_run
    /// # async fn demo(session: tracia::Session) -> Result<(), tracia::Error> {
    /// let stream = session.run_responses_stream(tracia::RunResponses::new("o4-mini").user("Hi")).await?;
    /// assert_eq!(session.last_span_id(), Some(stream.span_id()));
    /// # Ok(()) }
    /// ```
    pub async fn run_responses_stream(&self, input: RunResponses) -> Result<ResponsesStream> {
        let stream = self
            .tracia
            .run_responses_stream_at(input, self.placement())
            .await?;
        self.moved_to(&stream.trace_id(), &stream.span_id());
        Ok(stream)
    }

    /// The session's trace id, once known.
    pub fn trace_id(&self) -> Option<String> {
        self.position().trace_id.map(ids::format_trace_id)
    }

    /// The span id of the last call, once there is one.
    pub fn last_span_id(&self) -> Option<String> {
        self.position().last_span_id.map(ids::format_span_id)
    }

    /// Forgets the position: the next call starts a new trace.
    pub fn reset(&self) {
        *self.position.lock().unwrap_or_else(PoisonError::into_inner) = Position::default();
    }
}
