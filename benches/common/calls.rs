//! The four ways of making the same chat call that the benchmarks compare, each ready
//! to run sequentially or from many concurrent callers, plain or streamed.
//!
//! 1. [`Setup::Floor`]: `reqwest` + `serde_json` by hand, no tracing at all.
//! 2. [`Setup::Untraced`]: `Tracia::run_local` with no subscriber.
//! 3. [`Setup::Otlp`]: `run_local` under the `tracia::telemetry::builder()` pipeline
//!    (content capture on), exporting by OTLP/HTTP.
//! 4. [`Setup::TraciaRest`]: the same pipeline exporting to Tracia's REST API.
//!
//! Each [`Harness`] owns a multi-thread Tokio runtime (what `#[tokio::main]` builds) with
//! its subscriber installed as the default of every thread of that runtime and of the
//! thread driving it.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant};

use eventsource_stream::Eventsource;
use futures::{Stream, StreamExt};
use serde::Deserialize;
use tokio::runtime::Runtime;
use tracia::{Provider, RunLocal, TelemetryGuard, Tracia};
use tracing::Dispatch;
use tracing::dispatcher::DefaultGuard;
use tracing_subscriber::layer::SubscriberExt;

use super::servers::{Endpoints, OPENAI_KEY, TRACIA_KEY};

/// The model and prompt of the recorded exchanges.
pub const MODEL: &str = "gpt-3.5-turbo";
pub const PROMPT: &str = "Tell me a joke about opentelemetry";
/// Callers in flight in the concurrent runs.
pub const CONCURRENT_CALLERS: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Setup {
    Floor,
    Untraced,
    Otlp,
    TraciaRest,
}

impl Setup {
    pub const ALL: [Setup; 4] = [
        Setup::Floor,
        Setup::Untraced,
        Setup::Otlp,
        Setup::TraciaRest,
    ];

    /// The benchmark id.
    pub fn id(self) -> &'static str {
        match self {
            Setup::Floor => "1_floor",
            Setup::Untraced => "2_untraced",
            Setup::Otlp => "3_traced_otlp",
            Setup::TraciaRest => "4_traced_tracia",
        }
    }

    /// The row label of the report.
    pub fn label(self) -> &'static str {
        match self {
            Setup::Floor => "(1) reqwest + serde_json, no tracing",
            Setup::Untraced => "(2) `run_local`, no subscriber",
            Setup::Otlp => "(3) `run_local` traced, OTLP/HTTP export",
            Setup::TraciaRest => "(4) `run_local` traced, Tracia REST export",
        }
    }

    pub fn traced(self) -> bool {
        matches!(self, Setup::Otlp | Setup::TraciaRest)
    }
}

/// Which fake server a stream comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamKind {
    /// `openai/chat-stream`, its 196 events sent at once (a burst).
    Burst,
    /// The start of it, one event a millisecond (`servers::paced_stream`).
    Paced,
}

/// One streamed answer, timed from the call.
#[derive(Clone, Copy, Debug)]
pub struct StreamSample {
    /// Until the first text chunk was in the caller's hands.
    pub first_chunk: Duration,
    /// Until the stream was over (and, for `run_local_stream`, `finish()` returned).
    pub total: Duration,
    /// Text chunks received.
    pub chunks: u32,
}

impl StreamSample {
    /// The time per chunk after the first one.
    pub fn per_chunk(&self) -> Duration {
        (self.total - self.first_chunk) / self.chunks.saturating_sub(1).max(1)
    }
}

/// What a caller needs; cheap to clone into concurrent tasks.
#[derive(Clone)]
pub struct Caller {
    setup: Setup,
    http: reqwest::Client,
    chat_url: String,
    stream_url: String,
    paced_url: String,
    tracia_chat: Tracia,
    tracia_stream: Tracia,
    tracia_paced: Tracia,
}

impl Caller {
    fn new(setup: Setup, endpoints: &Endpoints) -> Self {
        let tracia = |base_url: &str| {
            Tracia::builder()
                .without_env()
                .with_api_key(Provider::OpenAi, OPENAI_KEY)
                .with_base_url(Provider::OpenAi, base_url)
                .with_capture_content(true)
                .build()
                .expect("the client builds")
        };
        Caller {
            setup,
            http: reqwest::Client::new(),
            chat_url: format!("{}/chat/completions", endpoints.openai),
            stream_url: format!("{}/chat/completions", endpoints.openai_stream),
            paced_url: format!("{}/chat/completions", endpoints.openai_paced),
            tracia_chat: tracia(&endpoints.openai),
            tracia_stream: tracia(&endpoints.openai_stream),
            tracia_paced: tracia(&endpoints.openai_paced),
        }
    }

    /// One call; returns the answer's length (so nothing is optimized away).
    pub async fn call(&self) -> usize {
        match self.setup {
            Setup::Floor => plain_call(&self.http, &self.chat_url).await,
            _ => {
                let input = RunLocal::new(MODEL).user(PROMPT);
                let result = self.tracia_chat.run_local(input).await.expect("run_local");
                result.text.len()
            }
        }
    }

    /// One streamed call, read to its end.
    pub async fn stream(&self, kind: StreamKind) -> StreamSample {
        let (url, tracia) = match kind {
            StreamKind::Burst => (&self.stream_url, &self.tracia_stream),
            StreamKind::Paced => (&self.paced_url, &self.tracia_paced),
        };
        let start = Instant::now();
        let mut chunks = 1;
        match self.setup {
            Setup::Floor => {
                let opening = plain_until_first_chunk(&self.http, url);
                let mut events = UntilFirstChunk(Box::pin(opening)).await;
                let first_chunk = start.elapsed();
                while let Some(text) = next_plain_chunk(&mut events).await {
                    std::hint::black_box(text);
                    chunks += 1;
                }
                StreamSample {
                    first_chunk,
                    total: start.elapsed(),
                    chunks,
                }
            }
            _ => {
                let opening = tracia_until_first_chunk(tracia);
                let mut stream = UntilFirstChunk(Box::pin(opening)).await;
                let first_chunk = start.elapsed();
                while let Some(chunk) = stream.next().await {
                    std::hint::black_box(chunk.expect("a text chunk"));
                    chunks += 1;
                }
                stream.finish().await.expect("the stream's result");
                StreamSample {
                    first_chunk,
                    total: start.elapsed(),
                    chunks,
                }
            }
        }
    }
}

/// Polls a stream's opening (up to its first text chunk) through a function that is
/// never inlined, so that a profiler can count it alone: `valgrind --tool=callgrind
/// --toggle-collect='*UntilFirstChunk*'`.
struct UntilFirstChunk<F>(Pin<Box<F>>);

impl<F: Future> Future for UntilFirstChunk<F> {
    type Output = F::Output;

    #[inline(never)]
    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<F::Output> {
        self.0.as_mut().poll(cx)
    }
}

/// `run_local_stream` until the first text chunk is in hand.
async fn tracia_until_first_chunk(tracia: &Tracia) -> tracia::RunStream {
    let input = RunLocal::new(MODEL).user(PROMPT);
    let mut stream = tracia
        .run_local_stream(input)
        .await
        .expect("run_local_stream");
    let first = stream.next().await.expect("a first chunk");
    std::hint::black_box(first.expect("a text chunk"));
    stream
}

type PlainEvents = Pin<Box<dyn Stream<Item = PlainEvent> + Send>>;
type PlainEvent = Result<eventsource_stream::Event, String>;

/// The streaming floor up to its first text chunk: the request by hand, SSE decoded with
/// `eventsource-stream`, each chunk with serde.
async fn plain_until_first_chunk(http: &reqwest::Client, url: &str) -> PlainEvents {
    let response = plain_post(http, url, true).await;
    let mut events: PlainEvents = Box::pin(
        response
            .bytes_stream()
            .eventsource()
            .map(|e| e.map_err(|e| e.to_string())),
    );
    let first = next_plain_chunk(&mut events).await.expect("a first chunk");
    std::hint::black_box(first);
    events
}

/// The next non-empty text chunk of a plain SSE stream; `None` at `[DONE]`.
async fn next_plain_chunk(events: &mut PlainEvents) -> Option<String> {
    while let Some(event) = events.next().await {
        let event = event.expect("an SSE event");
        if event.data == "[DONE]" {
            return None;
        }
        let chunk: Completion = serde_json::from_str(&event.data).expect("a chunk");
        let text = chunk
            .choices
            .into_iter()
            .next()
            .and_then(|c| c.delta?.content)
            .filter(|t| !t.is_empty());
        if text.is_some() {
            return text;
        }
    }
    None
}

#[derive(Deserialize)]
struct Completion {
    choices: Vec<Choice>,
}

#[derive(Deserialize)]
struct Choice {
    #[serde(default)]
    message: Option<Message>,
    #[serde(default)]
    delta: Option<Message>,
}

#[derive(Deserialize)]
struct Message {
    #[serde(default)]
    content: Option<String>,
}

/// The floors' request, by hand.
async fn plain_post(http: &reqwest::Client, url: &str, stream: bool) -> reqwest::Response {
    let mut body = serde_json::json!({
        "model": MODEL,
        "messages": [{ "role": "user", "content": PROMPT }],
    });
    if stream {
        body["stream"] = true.into();
    }
    http.post(url)
        .bearer_auth(OPENAI_KEY)
        .json(&body)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .expect("the fake server answers 200")
}

/// The floor: the request by hand, the answer decoded into the few fields used.
async fn plain_call(http: &reqwest::Client, url: &str) -> usize {
    let response = plain_post(http, url, false).await;
    let completion: Completion = response.json().await.expect("a chat completion");
    completion
        .choices
        .first()
        .and_then(|c| c.message.as_ref()?.content.as_deref())
        .map_or(0, str::len)
}

thread_local! {
    static THREAD_DEFAULT: RefCell<Option<DefaultGuard>> = const { RefCell::new(None) };
}

/// One setup, ready to call: its runtime, subscriber, pipeline and clients.
pub struct Harness {
    pub caller: Caller,
    pub runtime: Runtime,
    telemetry: Option<TelemetryGuard>,
    _this_thread: DefaultGuard,
}

impl Harness {
    pub fn new(setup: Setup, endpoints: &Endpoints) -> Self {
        let telemetry = setup.traced().then(|| {
            let builder = tracia::telemetry::builder()
                .with_service_name("tracia-bench")
                .with_filter("info");
            let builder = if setup == Setup::Otlp {
                builder
                    .with_otlp_traces_endpoint(&endpoints.otlp_traces)
                    .without_tracia()
            } else {
                builder
                    .without_otlp()
                    .with_tracia_base_url(&endpoints.tracia)
                    .with_tracia_api_key(TRACIA_KEY)
            };
            builder.build().expect("the pipeline builds")
        });
        // Untraced setups install `NoSubscriber` explicitly: registering it makes tracing
        // recompute its per-callsite interest cache, which an earlier traced setup of the
        // same process left at "always"; then they run as a process with no subscriber.
        let dispatch = match &telemetry {
            Some(guard) => Dispatch::new(tracing_subscriber::registry().with(guard.layer())),
            None => Dispatch::new(tracing::subscriber::NoSubscriber::default()),
        };
        let worker_dispatch = dispatch.clone();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .on_thread_start(move || {
                let guard = tracing::dispatcher::set_default(&worker_dispatch);
                THREAD_DEFAULT.with(|slot| *slot.borrow_mut() = Some(guard));
            })
            .on_thread_stop(|| THREAD_DEFAULT.with(|slot| drop(slot.borrow_mut().take())))
            .build()
            .expect("the runtime builds");
        let caller = {
            let _entered = runtime.enter();
            Caller::new(setup, endpoints)
        };
        Harness {
            caller,
            runtime,
            telemetry,
            _this_thread: tracing::dispatcher::set_default(&dispatch),
        }
    }

    /// `calls` calls one after another; the latency of each.
    pub fn sequential(&self, calls: u64) -> Vec<Duration> {
        self.runtime.block_on(async {
            let mut latencies = Vec::with_capacity(calls as usize);
            for _ in 0..calls {
                let start = Instant::now();
                std::hint::black_box(self.caller.call().await);
                latencies.push(start.elapsed());
            }
            latencies
        })
    }

    /// `calls` calls made by `callers` concurrent tasks; the latency of each.
    pub fn concurrent(&self, calls: u64, callers: usize) -> Vec<Duration> {
        self.runtime.block_on(async {
            let next = Arc::new(AtomicU64::new(0));
            let per_task = calls as usize / callers + 1;
            let tasks: Vec<_> = (0..callers)
                .map(|_| {
                    let caller = self.caller.clone();
                    let next = next.clone();
                    tokio::spawn(async move {
                        let mut latencies = Vec::with_capacity(per_task);
                        while next.fetch_add(1, Ordering::Relaxed) < calls {
                            let start = Instant::now();
                            std::hint::black_box(caller.call().await);
                            latencies.push(start.elapsed());
                        }
                        latencies
                    })
                })
                .collect();
            let mut latencies = Vec::with_capacity(calls as usize);
            for task in tasks {
                latencies.extend(task.await.expect("a caller task"));
            }
            latencies
        })
    }

    /// `calls` streamed calls one after another.
    pub fn streams(&self, kind: StreamKind, calls: u64) -> Vec<StreamSample> {
        self.runtime.block_on(async {
            let mut samples = Vec::with_capacity(calls as usize);
            for _ in 0..calls {
                samples.push(self.caller.stream(kind).await);
            }
            samples
        })
    }

    /// Exports every span ended so far (no-op without a pipeline).
    pub fn flush(&self) {
        if let Some(telemetry) = &self.telemetry {
            self.runtime.block_on(telemetry.flush());
        }
    }

    /// Spans (delivered, not delivered) so far, over every backend; `None` untraced.
    pub fn delivery(&self) -> Option<(u64, u64)> {
        let stats = self.telemetry.as_ref()?.stats();
        Some(stats.iter().fold((0, 0), |(delivered, lost), s| {
            (delivered + s.delivered, lost + s.lost())
        }))
    }
}
