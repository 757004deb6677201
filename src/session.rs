//! Sessions: multi-turn calls chained into one trace.

use std::sync::{Arc, Mutex, PoisonError};

use opentelemetry::trace::{SpanId, TraceId};

use crate::client::Tracia;
use crate::error::Result;
use crate::ids;
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

    /// Runs a call as the next turn of the session.
    pub async fn run_local(&self, input: RunLocal) -> Result<RunResult> {
        let result = self.tracia.run_local_at(input, self.placement()).await?;
        if let (Ok(trace), Ok(span)) = (
            ids::parse_trace_id(&result.trace_id),
            ids::parse_span_id(&result.span_id),
        ) {
            self.advance(trace, span);
        }
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
        if let (Ok(trace), Ok(span)) = (
            ids::parse_trace_id(&stream.trace_id()),
            ids::parse_span_id(&stream.span_id()),
        ) {
            self.advance(trace, span);
        }
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
