//! Sessions: multi-turn calls chained into one trace.

use std::sync::{Arc, Mutex, PoisonError};

use http::HeaderMap;
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};

use crate::call::client::Tracia;
use crate::call::responses::{ResponsesResult, RunResponses};
use crate::call::responses_stream::ResponsesStream;
use crate::call::run::{RunLocal, RunResult};
use crate::call::span::Placement;
use crate::call::stream::RunStream;
use crate::error::Result;
use crate::ids;
use crate::propagation::{self, Conversation};

/// Where a new session starts, for [`Tracia::create_session_with`]: the Python SDK's
/// `create_session(trace_id?, parent_span_id?)`. Ids take every form a call's own do
/// (see [`crate::ids`]); they are checked when the session is created.
///
/// - neither: the first call joins the ambient trace if there is one, else starts one;
/// - `trace_id` only: the first call is a root span of that trace;
/// - `parent_span_id` only: the first call is that span's child, in the trace of the
///   span current when the session is created, else in the trace the parent's own id
///   names (as a call's `trace_id(parent)` would). Tracia inherits the parent's real
///   trace, which only its server knows; this is the closest a client can do, and it
///   keeps every chain started from one result's `span_id` in one trace;
/// - both: the first call is the parent's child in that trace.
///
/// ```
/// # fn demo(tracia: tracia::Tracia) -> Result<(), tracia::Error> {
/// use tracia::SessionOptions;
/// let session = tracia.create_session_with(SessionOptions::new().parent_span_id("sp_00f067aa0ba902b7"))?;
/// assert_eq!(session.trace_id().as_deref(), Some("sp_00f067aa0ba902b7"));
/// assert_eq!(session.last_span_id().as_deref(), Some("sp_00f067aa0ba902b7"));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default)]
pub struct SessionOptions {
    pub(crate) trace_id: Option<String>,
    pub(crate) parent_span_id: Option<String>,
}

impl SessionOptions {
    /// No trace and no parent yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The trace the session's calls join.
    pub fn trace_id(mut self, id: impl Into<String>) -> Self {
        self.trace_id = Some(id.into());
        self
    }

    /// The parent of the session's first call.
    pub fn parent_span_id(mut self, id: impl Into<String>) -> Self {
        self.parent_span_id = Some(id.into());
        self
    }
}

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
    conversation: Conversation,
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
            conversation: Conversation::default(),
        }
    }

    /// The session the incoming `headers` carry (see [`Tracia::session_from_headers`]).
    pub(crate) fn from_headers(tracia: Tracia, headers: &HeaderMap) -> Self {
        let cx = propagation::extract(headers);
        let remote = cx.span().span_context().clone();
        let ambient = opentelemetry::Context::current()
            .span()
            .span_context()
            .clone();
        // A handler span already continuing that trace (TraceContextLayer,
        // set_parent_from) is the better parent: the calls then nest under it.
        let continued =
            remote.is_valid() && !(ambient.is_valid() && ambient.trace_id() == remote.trace_id());
        let mut session = match continued {
            true => Self::new(tracia, Some(remote.trace_id()), Some(remote.span_id())),
            false => Self::new(tracia, None, None),
        };
        session.conversation = propagation::conversation(&cx);
        session
    }

    fn position(&self) -> Position {
        *self.position.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The session's conversation goes on every call that names none of its own.
    fn converse(&self, mut input: RunLocal) -> RunLocal {
        self.conversation
            .fill(&mut input.options.session_id, &mut input.options.user_id);
        input
    }

    /// The client the session's calls go through.
    pub(crate) fn client(&self) -> &Tracia {
        &self.tracia
    }

    pub(crate) fn placement(&self) -> Placement {
        let p = self.position();
        Placement {
            trace_id: p.trace_id,
            parent_span_id: p.last_span_id,
            span_id: None,
        }
    }

    pub(crate) fn advance(&self, trace_id: TraceId, span_id: SpanId) {
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
        let result = self
            .tracia
            .run_local_at(self.converse(input), self.placement())
            .await?;
        self.moved_to(&result.trace_id, &result.span_id);
        Ok(result)
    }

    /// Streams a call as the next turn. The session moves on as soon as the stream
    /// opens (its span id is known then), so the next turn chains even if this stream is
    /// dropped early.
    pub async fn run_local_stream(&self, input: RunLocal) -> Result<RunStream> {
        let stream = self
            .tracia
            .run_local_stream_at(self.converse(input), self.placement())
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
            .run_responses_at(input.with(|c| self.converse(c)), self.placement())
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
            .run_responses_stream_at(input.with(|c| self.converse(c)), self.placement())
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

    /// Names the conversation (`session.id`) of every call that names none of its own.
    ///
    /// ```
    /// # fn demo(tracia: tracia::Tracia) {
    /// let session = tracia.create_session().with_session_id("conv_7").with_user_id("user_42");
    /// assert_eq!(session.conversation().session_id.as_deref(), Some("conv_7"));
    /// # }
    /// ```
    pub fn with_session_id(mut self, id: impl Into<String>) -> Self {
        self.conversation.session_id = Some(id.into());
        self
    }

    /// Names the end user (`user.id`) of every call that names none of its own.
    pub fn with_user_id(mut self, id: impl Into<String>) -> Self {
        self.conversation.user_id = Some(id.into());
        self
    }

    /// The session and user its calls carry.
    pub fn conversation(&self) -> &Conversation {
        &self.conversation
    }

    /// Writes the session's position and conversation into `headers`: `traceparent`
    /// naming the last call (once there is one) and baggage `session.id` / `user.id`.
    /// Put them on a response, or on a request to another service, and
    /// [`Tracia::session_from_headers`] continues the session there: its next call is
    /// the child of this session's last one, in the same trace.
    ///
    /// ```
    /// # fn demo(tracia: tracia::Tracia) -> Result<(), tracia::Error> {
    /// let session = tracia.create_session_from("tr_0123456789abcdef", Some("sp_0123456789abcdef"))?
    ///     .with_session_id("conv_7");
    /// let mut headers = http::HeaderMap::new();
    /// session.write_headers(&mut headers);
    /// assert_eq!(headers["traceparent"], "00-00000000000000000123456789abcdef-0123456789abcdef-01");
    /// let next = tracia.session_from_headers(&headers);
    /// assert_eq!(next.last_span_id().as_deref(), Some("sp_0123456789abcdef"));
    /// # Ok(()) }
    /// ```
    pub fn write_headers(&self, headers: &mut HeaderMap) {
        let mut cx = opentelemetry::Context::new();
        if let Position {
            trace_id: Some(trace),
            last_span_id: Some(span),
        } = self.position()
        {
            let sc = SpanContext::new(
                trace,
                span,
                TraceFlags::SAMPLED,
                true,
                TraceState::default(),
            );
            cx = cx.with_remote_span_context(sc);
        }
        let c = &self.conversation;
        let cx = propagation::with_conversation(cx, c.session_id.as_deref(), c.user_id.as_deref());
        propagation::inject_context(&cx, headers);
    }

    /// Forgets the position: the next call starts a new trace.
    pub fn reset(&self) {
        *self.position.lock().unwrap_or_else(PoisonError::into_inner) = Position::default();
    }
}

/// A [`Session`] continuing the conversation the request's headers carry
/// ([`Tracia::session_from_headers`]), as an axum extractor for apps whose state holds
/// a [`Tracia`]; never rejects.
///
/// ```
/// async fn chat(session: tracia::Session) -> String {
///     session.trace_id().unwrap_or_default()
/// }
/// let tracia = tracia::Tracia::builder().without_env().build().unwrap();
/// let app: axum::Router = axum::Router::new()
///     .route("/chat", axum::routing::post(chat))
///     .with_state(tracia);
/// # drop(app);
/// ```
#[cfg(feature = "axum")]
impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Session
where
    Tracia: axum::extract::FromRef<S>,
{
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        state: &S,
    ) -> std::result::Result<Self, Self::Rejection> {
        Ok(<Tracia as axum::extract::FromRef<S>>::from_ref(state)
            .session_from_headers(&parts.headers))
    }
}
