//! The web UI in a real headless Chromium, served by the real collector binary and fed
//! by the real SDK pipeline (telemetry over OTLP, `run_local` against the fake provider
//! replaying recorded OpenAI exchanges): the rendered DOM is asserted, and a screenshot
//! of the trace page is kept in `target/ui-screenshots/`.
//!
//! Chromium must be at `/usr/bin/chromium`; `.ci/setup` (run by `.ci/run`) installs it.
//! Without it these tests fail (they never skip).

#[path = "../../tests/support/mod.rs"]
mod support;
mod ui_support;

use std::io::{BufRead as _, BufReader, Read as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{FakeProvider, client, install, keep_callsite_interest_shared};
use tracia::{RunLocal, ToolDefinition};
use tracing::Instrument as _;
use ui_support::{attr, chat_attrs, export, now_ns, span};

const CHROMIUM: &str = "/usr/bin/chromium";
/// Deadlock guards only (a hung browser or a span that never arrives), not speed checks.
const WAIT: Duration = Duration::from_secs(30);
const CHROMIUM_WAIT: Duration = Duration::from_secs(120);

/// The collector binary on `127.0.0.1:0` with a fresh data directory; killed on drop.
struct Collector {
    child: Child,
    /// `http://127.0.0.1:PORT/`, from the line it prints.
    url: String,
    http: reqwest::Client,
    /// What it logged (at `warn`) so far.
    log: Arc<Mutex<Vec<String>>>,
    _data: tempfile::TempDir,
}

impl Collector {
    fn start() -> Self {
        Self::start_with(&[], &[])
    }

    /// With more flags and environment variables.
    fn start_with(args: &[&str], env: &[(&str, String)]) -> Self {
        let data = tempfile::tempdir().unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_tracia-collector"))
            .args([
                "--http-addr",
                "127.0.0.1:0",
                "--grpc-addr",
                "127.0.0.1:0",
                "--retention",
                "forever",
                "--data-dir",
            ])
            .arg(data.path())
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the collector binary starts");
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let lines = log.clone();
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                eprintln!("collector: {line}");
                lines.lock().unwrap().push(line);
            }
        });
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines.next().expect("a listening line").unwrap();
        let url = first
            .split_once(", UI ")
            .unwrap_or_else(|| panic!("no UI URL in {first:?}"))
            .1
            .trim()
            .to_owned();
        assert!(
            url.starts_with("http://127.0.0.1:") && url.ends_with('/'),
            "{url}"
        );
        // Keep reading: span lines must never fill the pipe and block the collector.
        std::thread::spawn(move || lines.for_each(drop));
        Self {
            child,
            url,
            http: reqwest::Client::new(),
            log,
            _data: data,
        }
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let response = self
            .http
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn post_otlp(&self, body: Value) {
        let response = self
            .http
            .post(format!("{}v1/traces", self.url))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }

    /// The trace once `spans` of its spans are stored.
    async fn wait_for_trace(&self, trace_id: &str, spans: usize) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let (status, trace) = self.get(&format!("api/ui/traces/{trace_id}")).await;
            if status == 200 && trace["spans"].as_array().unwrap().len() >= spans {
                return trace;
            }
            assert!(
                Instant::now() < deadline,
                "trace {trace_id} never got {spans} spans: {trace}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs headless Chromium on `url` with `args`; returns its stdout.
fn chromium(args: &[&str], url: &str) -> String {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: the UI tests drive a real headless Chromium. \
         `.ci/setup` (run by `.ci/run`) installs it: apt-get install -y chromium."
    );
    let profile = tempfile::tempdir().unwrap();
    let mut child = Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--virtual-time-budget=5000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("chromium starts");
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        stdout.read_to_string(&mut s).map(|_| s)
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        stderr.read_to_string(&mut s).map(|_| s)
    });
    let deadline = Instant::now() + CHROMIUM_WAIT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish on {url}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = out.join().unwrap().unwrap();
    let stderr = err.join().unwrap().unwrap_or_default();
    assert!(
        status.success(),
        "chromium failed on {url}: {status}\n{stderr}"
    );
    stdout
}

/// The page at `url` once its script has rendered it.
fn dom(url: &str) -> String {
    let dom = chromium(&["--dump-dom"], url);
    assert!(dom.contains("<main id=\"app\">"), "not the UI page: {dom}");
    assert!(!dom.contains("Could not load"), "the page failed: {dom}");
    dom
}

/// The markup from `marker` up to the first `end` after it.
fn after<'a>(dom: &'a str, marker: &str, end: &str) -> &'a str {
    let start = dom
        .find(marker)
        .unwrap_or_else(|| panic!("{marker:?} not in the page: {dom}"));
    let len = dom[start..]
        .find(end)
        .unwrap_or_else(|| panic!("no {end:?} after {marker:?}"));
    &dom[start..start + len]
}

/// Text as Chromium serializes it inside an element.
fn text(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn assert_has(haystack: &str, needles: &[&str]) {
    for needle in needles {
        assert!(
            haystack.contains(needle),
            "{needle:?} missing in: {haystack}"
        );
    }
}

fn screenshots_dir() -> PathBuf {
    // The test binary is target/<profile>/deps/ui-<hash>.
    let exe = std::env::current_exe().unwrap();
    let target = exe.ancestors().nth(3).expect("target directory");
    let dir = target.join("ui-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Saves a 1400x900 screenshot of `url` as `target/ui-screenshots/{name}`.
fn screenshot(name: &str, url: &str) {
    let png = screenshots_dir().join(name);
    let _ = std::fs::remove_file(&png);
    chromium(
        &[
            "--window-size=1400,900",
            &format!("--screenshot={}", png.display()),
        ],
        url,
    );
    let bytes = std::fs::read(&png).expect("the screenshot is written");
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG");
    assert!(
        bytes.len() > 20_000,
        "a rendered page, not a blank one: {} bytes",
        bytes.len()
    );
}

fn weather_tool() -> ToolDefinition {
    ToolDefinition::new("get_current_weather")
        .with_description("Get the current weather")
        .with_parameters(json!({
            "type": "object",
            "properties": {"location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"}},
            "required": ["location"]
        }))
}

#[tokio::test(flavor = "multi_thread")]
async fn sdk_trace_in_the_trace_list_waterfall_conversation_and_sessions() {
    let collector = Collector::start();
    let fake = FakeProvider::start().await;
    fake.enqueue_fixture("openai/tools-stream-1");
    fake.enqueue_fixture("openai/chat-1");
    keep_callsite_interest_shared();
    let telemetry = tracia::telemetry::builder()
        .with_service_name("checkout-api")
        .with_otlp_traces_endpoint(format!("{}v1/traces", collector.url))
        .without_tracia()
        .with_scheduled_delay(Duration::from_millis(50))
        .with_filter("info")
        .build()
        .expect("pipeline builds");
    let subscriber = install(&telemetry);

    // An app span (as `#[instrument]` makes) around a streamed tool call and a chat call.
    let tracia = client(&fake);
    let request = tracing::info_span!("handle_request");
    let (weather, joke) = async {
        let weather = tracia
            .run_local_stream(
                RunLocal::new("gpt-4o")
                    .user("What's the weather like in San Francisco?")
                    .tool(weather_tool()),
            )
            .await
            .unwrap()
            .finish()
            .await
            .unwrap();
        let joke = tracia
            .run_local(
                RunLocal::new("gpt-4o")
                    .system("You are a comedian.")
                    .user("Tell me a joke about opentelemetry")
                    .session_id("conv_7")
                    .user_id("user_42")
                    .tag("jokes"),
            )
            .await
            .unwrap();
        (weather, joke)
    }
    .instrument(request.clone())
    .await;
    drop(request);
    telemetry.flush().await;
    drop(subscriber);

    let trace_id = joke.trace_id.clone();
    assert_eq!(weather.trace_id, trace_id, "one trace");
    let trace = collector.wait_for_trace(&trace_id, 3).await;
    let spans = trace["spans"].as_array().unwrap();
    let root = spans
        .iter()
        .find(|s| s["name"] == "handle_request")
        .expect("the app span");
    let root_id = root["spanId"].as_str().unwrap();
    let chat = spans
        .iter()
        .find(|s| s["spanId"] == joke.span_id.as_str())
        .unwrap();
    assert_eq!(chat["parentSpanId"], root_id);
    let cost = chat["costUsd"].as_f64().expect("gpt-4o is priced");
    let (_, list) = collector.get("api/ui/traces").await;
    let summary = &list["traces"][0];
    assert_eq!(summary["traceId"], trace_id.as_str());

    // The trace list: one row with its root span, service, model, session, tokens, cost.
    let page = dom(&format!("{}#/traces", collector.url));
    let row = after(&page, &format!("data-trace-id=\"{trace_id}\""), "</tr>");
    let tokens = format!("{} / {}", summary["inputTokens"], summary["outputTokens"]);
    let trace_cost = format!("${:.6}", summary["costUsd"].as_f64().unwrap());
    assert_has(
        row,
        &[
            ">handle_request<",
            ">checkout-api<",
            ">gpt-4o<",
            ">conv_7<",
            "user_42",
            ">jokes<",
            &tokens,
            &trace_cost,
        ],
    );

    // The trace page with the chat span selected: both LLM spans nested under the app
    // span, the conversation, tokens and cost.
    let page = dom(&format!(
        "{}#/trace/{trace_id}/{}",
        collector.url, joke.span_id
    ));
    let root_node = after(&page, &format!("data-span-id=\"{root_id}\""), ">");
    assert!(root_node.contains("data-depth=\"0\""), "{root_node}");
    let tree = after(
        &page,
        &format!("data-span-id=\"{root_id}\""),
        "</ul></li></ul>",
    );
    for llm in [&weather.span_id, &joke.span_id] {
        let node = after(tree, &format!("data-span-id=\"{llm}\""), "</li>");
        assert_has(node, &["data-depth=\"1\"", "chat gpt-4o", "kind-llm"]);
    }
    let selected = after(
        &page,
        &format!("data-span-id=\"{}\"", joke.span_id),
        "</li>",
    );
    assert!(selected.contains("wf-row kind-llm selected"), "{selected}");
    let details = after(&page, "id=\"span-details\"", "</section>");
    assert_has(
        after(details, "data-role=\"system\"", "</div></div>"),
        &["You are a comedian."],
    );
    assert_has(
        after(details, "data-role=\"user\"", "</div></div>"),
        &["Tell me a joke about opentelemetry"],
    );
    assert_has(
        after(details, "data-role=\"assistant\"", "</div></div>"),
        &[&text(&joke.text)],
    );
    let cost_text = format!("<dt>Cost</dt><dd>${cost:.6}</dd>");
    assert_has(
        details,
        &[
            "<h2>chat gpt-4o</h2>",
            "<dt>Model</dt><dd>gpt-4o</dd>",
            "<dt>Provider</dt><dd>openai</dd>",
            &format!("<dt>Input tokens</dt><dd>{}</dd>", joke.usage.input_tokens),
            &format!(
                "<dt>Output tokens</dt><dd>{}</dd>",
                joke.usage.output_tokens
            ),
            &format!("<dt>Total tokens</dt><dd>{}</dd>", joke.usage.total_tokens),
            &cost_text,
            ">conv_7<",
            "user_42",
            ">jokes<",
            "<th>gen_ai.request.model</th><td>gpt-4o</td>",
        ],
    );

    // Without a span in the URL the first LLM span is shown: the streamed tool call.
    let page = dom(&format!("{}#/trace/{trace_id}", collector.url));
    let details = after(&page, "id=\"span-details\"", "</section>");
    let call = &weather.tool_calls[0];
    assert_has(
        details,
        &[
            "<dt>Time to first chunk</dt>",
            &format!("Tool call <code>{}</code>", call.name),
            &format!(
                "\"location\": \"{}\"",
                call.arguments["location"].as_str().unwrap()
            ),
            "<summary>Tools (1)</summary>",
            "Get the current weather",
            "What's the weather like in San Francisco?",
        ],
    );

    // A picture of the trace page, for people.
    screenshot(
        "trace.png",
        &format!("{}#/trace/{trace_id}/{}", collector.url, joke.span_id),
    );

    // Sessions: the session with its trace.
    let page = dom(&format!("{}#/sessions", collector.url));
    let row = after(&page, "data-session-id=\"conv_7\"", "</tr>");
    assert_has(row, &[">conv_7<", ">user_42<", ">1<"]);
    let page = dom(&format!("{}#/sessions/conv_7", collector.url));
    assert_has(
        &page,
        &[&format!("data-trace-id=\"{trace_id}\""), "Session conv_7"],
    );

    // Prompts: whatever the prompt API answers, the page says it.
    let (status, prompts) = collector.get("api/v1/prompts").await;
    let page = dom(&format!("{}#/prompts", collector.url));
    match status {
        404 => assert_has(
            &page,
            &["Prompt management is not available on this collector"],
        ),
        200 if prompts["prompts"].as_array().is_some_and(Vec::is_empty) => {
            assert_has(&page, &["No prompts yet."])
        }
        other => panic!("GET /api/v1/prompts answered {other}: {prompts}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn reasoning_tool_results_failures_and_hostile_content() {
    let collector = Collector::start();
    const AGENT: &str = "0000000000000000abcdef0123456789";
    const HEALTH: &str = "00000000000000001111111111111111";
    let ms = 1_000_000;
    let t0 = now_ns() - 60_000 * ms;
    let hostile = r#"<img src=x onerror="document.title='pwned'"><script>document.title='pwned'</script> where is order A-17?"#;
    let input = json!([
        {"role": "user", "parts": [{"type": "text", "content": hostile}]},
        {"role": "assistant", "parts": [
            {"type": "tool_call", "id": "call_1", "name": "lookup_order", "arguments": {"order_id": "A-17"}}
        ]},
        {"role": "tool", "parts": [{"type": "tool_call_response", "id": "call_1", "response": "shipped on Monday"}]}
    ]);
    let output = json!([{"role": "assistant", "finish_reason": "stop", "parts": [
        {"type": "reasoning", "content": "The tool says it shipped; answer briefly."},
        {"type": "text", "content": "Order A-17 shipped on Monday."}
    ]}]);
    let tools = json!([{"type": "function", "name": "lookup_order", "description": "Find an order by id",
        "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}}}}]);
    let mut answered = chat_attrs("anthropic", "claude-sonnet-4-5", 1200, 300);
    answered.extend([
        attr("gen_ai.usage.cache_read.input_tokens", json!(1000)),
        attr("gen_ai.usage.reasoning.output_tokens", json!(120)),
        attr("gen_ai.response.time_to_first_chunk", json!(0.25)),
        attr("gen_ai.request.stream", json!(true)),
        attr(
            "gen_ai.system_instructions",
            json!(r#"[{"type":"text","content":"You are a support agent."}]"#),
        ),
        attr("gen_ai.input.messages", json!(input.to_string())),
        attr("gen_ai.output.messages", json!(output.to_string())),
        attr("gen_ai.tool.definitions", json!(tools.to_string())),
        attr("session.id", json!("support-9")),
    ]);
    let mut failed = chat_attrs("anthropic", "claude-sonnet-4-5", 0, 0);
    failed.push(attr("error.type", json!("overloaded_error")));
    let root = "a000000000000001";
    collector
        .post_otlp(export(
            "support-bot",
            vec![
                span(
                    AGENT,
                    root,
                    None,
                    "agent_turn",
                    (t0, t0 + 3_000 * ms),
                    vec![],
                    None,
                ),
                span(
                    AGENT,
                    "b000000000000002",
                    Some(root),
                    "chat claude-sonnet-4-5",
                    (t0 + 100 * ms, t0 + 1_600 * ms),
                    answered,
                    None,
                ),
                span(
                    AGENT,
                    "c000000000000003",
                    Some(root),
                    "lookup_order",
                    (t0 + 1_700 * ms, t0 + 1_900 * ms),
                    vec![attr("order.id", json!("A-17"))],
                    None,
                ),
                span(
                    AGENT,
                    "d000000000000004",
                    Some(root),
                    "chat claude-sonnet-4-5",
                    (t0 + 2_000 * ms, t0 + 2_900 * ms),
                    failed,
                    Some("Overloaded <b>now</b>"),
                ),
            ],
        ))
        .await;
    collector
        .post_otlp(export(
            "support-bot",
            vec![span(
                HEALTH,
                "e000000000000005",
                None,
                "healthcheck",
                (t0 - 1_000 * ms, t0 - 999 * ms),
                vec![],
                None,
            )],
        ))
        .await;
    let agent = format!("tr_{}", &AGENT[16..]);
    let health = format!("tr_{}", &HEALTH[16..]);
    collector.wait_for_trace(&agent, 4).await;

    // The answered call: reasoning, the tool call and its result, cache and reasoning
    // tokens, time to first chunk, tool definitions; the hostile text stays text.
    let page = dom(&format!(
        "{}#/trace/{agent}/sp_b000000000000002",
        collector.url
    ));
    assert!(
        page.contains("<title>agent_turn · tracia-collector</title>"),
        "the page title is untouched"
    );
    assert!(
        !page.contains("<img") && !page.contains("<script>document"),
        "markup from a span was parsed: {page}"
    );
    let details = after(&page, "id=\"span-details\"", "</section>");
    assert_has(
        after(details, "data-role=\"system\"", "</div></div>"),
        &["You are a support agent."],
    );
    assert_has(
        after(details, "data-role=\"user\"", "</div></div>"),
        &[&text(hostile)],
    );
    assert_has(
        after(details, "data-role=\"assistant\"", "</div></div>"),
        &[
            "Tool call <code>lookup_order</code>",
            "call_1",
            "\"order_id\": \"A-17\"",
        ],
    );
    assert_has(
        after(details, "data-role=\"tool\"", "</div></div>"),
        &["Tool result", "shipped on Monday"],
    );
    let answer = after(details, "finish: stop", "</div></div>");
    assert_has(
        answer,
        &[
            "<summary>Reasoning</summary>",
            "The tool says it shipped; answer briefly.",
            "Order A-17 shipped on Monday.",
        ],
    );
    assert_has(
        details,
        &[
            "<dt>Input tokens</dt><dd>1,200</dd>",
            "<dt>Output tokens</dt><dd>300</dd>",
            "<dt>Cache read tokens</dt><dd>1,000</dd>",
            "<dt>Reasoning tokens</dt><dd>120</dd>",
            "<dt>Time to first chunk</dt><dd>250 ms</dd>",
            "<dt>Latency</dt><dd>1.50 s</dd>",
            "<summary>Tools (1)</summary>",
            "Find an order by id",
            ">support-9<",
        ],
    );
    // Every span of the trace in the waterfall, under the app span.
    for (id, depth) in [
        ("sp_a000000000000001", "0"),
        ("sp_b000000000000002", "1"),
        ("sp_c000000000000003", "1"),
        ("sp_d000000000000004", "1"),
    ] {
        let node = after(&page, &format!("data-span-id=\"{id}\""), ">");
        assert!(node.contains(&format!("data-depth=\"{depth}\"")), "{node}");
    }

    // The failed call: its status and (escaped) message.
    let page = dom(&format!(
        "{}#/trace/{agent}/sp_d000000000000004",
        collector.url
    ));
    let details = after(&page, "id=\"span-details\"", "</section>");
    assert_has(
        details,
        &[
            "<span class=\"status status-error\">ERROR</span>",
            "<div class=\"error-message\">Overloaded &lt;b&gt;now&lt;/b&gt;</div>",
            "error.type <code>overloaded_error</code>",
        ],
    );
    let row = after(&page, "data-span-id=\"sp_d000000000000004\"", "</li>");
    assert!(row.contains("is-error"), "{row}");

    // The status filter keeps the failed trace only.
    let page = dom(&format!("{}#/traces", collector.url));
    assert_has(
        &page,
        &[
            &format!("data-trace-id=\"{agent}\""),
            &format!("data-trace-id=\"{health}\""),
        ],
    );
    let page = dom(&format!("{}#/traces?status=ERROR", collector.url));
    let row = after(&page, &format!("data-trace-id=\"{agent}\""), "</tr>");
    assert_has(
        row,
        &[
            ">agent_turn<",
            ">support-bot<",
            ">claude-sonnet-4-5<",
            "error-text",
        ],
    );
    assert!(!page.contains(&health), "{page}");
}

/// The prompt endpoints as the REST API answers them (`shared/reference/tracia-api.md`
/// §3.1), in front of the real app; the page and everything else come from the app.
async fn serve_with_prompts() -> (String, tempfile::TempDir) {
    use axum::routing::get;
    use axum::{Json, Router};
    let data = tempfile::tempdir().unwrap();
    let store = tracia_collector::store::Store::open(data.path()).unwrap();
    let app = tracia_collector::app(tracia_collector::AppState::new(store));
    let prompt = json!({
        "id": "clx1abc123", "slug": "welcome-email", "name": "Welcome Email",
        "description": "First mail to a new customer", "provider": "OPENAI", "model": "gpt-4o",
        "temperature": 0.7, "topP": null, "maxOutputTokens": null, "currentVersion": 2,
        "variables": ["name", "product"],
        "content": [
            {"id": "msg_1", "role": "system", "content": "You write short, warm emails."},
            {"id": "msg_2", "role": "user", "content": "Welcome {{name}} to {{product}}."}
        ],
        "createdAt": "2026-01-01T10:00:00.000Z", "updatedAt": "2026-01-02T10:00:00.000Z"
    });
    let mut listed = prompt.clone();
    listed.as_object_mut().unwrap().remove("content");
    let versions = json!({"versions": [
        {"version": 1, "createdAt": "2026-01-01T10:00:00.000Z",
         "content": [{"role": "user", "content": "Say hello to {{name}}."}]},
        {"version": 2, "createdAt": "2026-01-02T10:00:00.000Z", "content": prompt["content"].clone()}
    ]});
    let router = Router::new()
        .route(
            "/api/v1/prompts",
            get(move || async move { Json(json!({"prompts": [listed]})) }),
        )
        .route(
            "/api/v1/prompts/welcome-email",
            get(move || async move { Json(prompt) }),
        )
        .route(
            "/api/ui/prompts/welcome-email/versions",
            get(move || async move { Json(versions) }),
        )
        .fallback_service(app);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (url, data)
}

#[tokio::test(flavor = "multi_thread")]
async fn prompts_with_their_versions() {
    let (url, _data) = serve_with_prompts().await;

    let page = dom(&format!("{url}#/prompts"));
    let row = after(&page, "data-slug=\"welcome-email\"", "</tr>");
    assert_has(
        row,
        &[
            ">Welcome Email<",
            "First mail to a new customer",
            ">2<",
            ">gpt-4o<",
            ">OPENAI<",
            ">name<",
            ">product<",
        ],
    );

    // The current version is shown first, the others are listed.
    let page = dom(&format!("{url}#/prompts/welcome-email"));
    assert_has(
        &page,
        &[
            "<h1>Welcome Email</h1>",
            "<h2>Version 2</h2>",
            "#/prompts/welcome-email/1",
        ],
    );
    assert_has(
        after(&page, "data-role=\"system\"", "</div></div>"),
        &["You write short, warm emails."],
    );
    assert_has(
        after(&page, "data-role=\"user\"", "</div></div>"),
        &["Welcome {{name}} to {{product}}."],
    );
    let current = after(&page, "href=\"#/prompts/welcome-email/2\"", "</a>");
    assert_has(current, &["selected", "current"]);

    let page = dom(&format!("{url}#/prompts/welcome-email/1"));
    assert_has(&page, &["<h2>Version 1</h2>"]);
    assert_has(
        after(&page, "data-role=\"user\"", "</div></div>"),
        &["Say hello to {{name}}."],
    );
    assert!(
        !page.contains("You write short, warm emails."),
        "only version 1's content"
    );
    screenshot("prompt.png", &format!("{url}#/prompts/welcome-email"));
}

/// `target/<profile>/examples/quickstart`, built by `cargo test --workspace`.
fn quickstart_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile = exe.ancestors().nth(2).expect("target/<profile>");
    let bin = profile
        .join("examples")
        .join(format!("quickstart{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} is missing: run the whole suite (`cargo test --workspace`), which builds the examples",
        bin.display()
    );
    bin
}

/// The README's first run: the collector on its own, `quickstart` pointed at it by
/// environment only; the trace it prints is in the REST API and on the UI's trace page.
#[tokio::test(flavor = "multi_thread")]
async fn the_quickstart_example_shows_up_in_the_api_and_the_ui() {
    let collector = Collector::start();
    let fake = FakeProvider::start().await;
    fake.enqueue_fixture("openai/chat-1");
    let endpoint = collector.url.trim_end_matches('/').to_owned();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(quickstart_binary())
            .env_clear()
            .args([
                "--model",
                "gpt-3.5-turbo",
                "Tell me a joke about opentelemetry",
            ])
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
            .env("OTEL_SERVICE_NAME", "quickstart")
            .env("OPENAI_BASE_URL", fake.base_url())
            .env("OPENAI_API_KEY", "sk-test-0123456789abcdefghijklmnop")
            .output()
            .expect("quickstart runs")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "quickstart failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let last = stdout.lines().last().unwrap_or_default();
    let (span_id, trace_id) = last
        .strip_prefix("span_id=")
        .and_then(|rest| rest.split_once(" trace_id="))
        .unwrap_or_else(|| panic!("no ids line: {stdout}"));

    // The REST API returns the span (exported before quickstart exited).
    let (status, span) = collector.get(&format!("api/v1/spans/{span_id}")).await;
    assert_eq!(status, 200, "{span}");
    assert_eq!(span["traceId"], trace_id);
    assert_eq!(span["model"], "gpt-3.5-turbo");
    assert_eq!(span["provider"], "openai");
    assert_eq!(span["status"], "SUCCESS");
    assert!(
        span["output"]
            .as_str()
            .unwrap_or_default()
            .contains("couldn't handle the baggage"),
        "{span}"
    );

    // The UI's trace page shows it, with its conversation.
    collector.wait_for_trace(trace_id, 1).await;
    let page = format!("{}#/trace/{trace_id}", collector.url);
    let dom = dom(&page);
    assert_has(
        &dom,
        &[
            "chat gpt-3.5-turbo",
            "Tell me a joke about opentelemetry",
            "couldn't handle the baggage",
            "quickstart",
        ],
    );
    screenshot("quickstart.png", &page);
}

/// A page of another origin (another loopback port: the same *site* to a browser) that
/// tries, with `text/plain` bodies (no CORS preflight), to create a prompt, run one,
/// forge a Tracia span and an OTLP export; then checks whether the browser sends the
/// collector's cookie along (a stylesheet loads only with it, when keys are set), and
/// reports to its own server's `/done`.
fn attacker_page(collector: &str, key: Option<&str>) -> String {
    let prompt = json!({"name": "Forged", "model": "gpt-4o",
        "content": [{"role": "user", "content": "Say pwned"}]});
    let run = json!({"variables": {"topic": "forgery"}});
    let span = json!({"spanId": "sp_00f067aa0ba902b7", "model": "gpt-4o", "provider": "openai",
        "input": {"messages": [{"role": "user", "content": "forged"}]}, "output": "forged",
        "status": "SUCCESS", "latencyMs": 1, "inputTokens": 1, "outputTokens": 1, "totalTokens": 2});
    let now = now_ns();
    let otlp = export(
        "forged",
        vec![span_json(
            "4bf92f3577b34da6a3ce929d0e0e4736",
            "00f067aa0ba902b8",
            (now, now + 1_000_000),
        )],
    );
    let attempts = json!([
        ["/api/v1/prompts", prompt.to_string()],
        ["/api/v1/prompts/joke/run", run.to_string()],
        ["/api/v1/spans", span.to_string()],
        ["/v1/traces", otlp.to_string()],
    ]);
    let collector = collector.trim_end_matches('/');
    let key = json!(key.unwrap_or(""));
    format!(
        r#"<!doctype html><html><body><p id="status">running</p>
<iframe name="sink" id="sink"></iframe>
<form id="form" method="POST" action="{collector}/api/v1/prompts" enctype="text/plain" target="sink">
<input name='{{"name":"Form","model":"gpt-4o","content":[{{"role":"user","content":"x' value='"}}]}}'></form>
<script>
const C = {collector:?}, KEY = {key}, ATTEMPTS = {attempts};
const report = [];
async function attack() {{
  // The victim has opened the UI with its key: the browser holds the cookie.
  if (KEY) await fetch(C + "/?key=" + KEY, {{mode: "no-cors", credentials: "include"}}).catch(e => report.push("login:" + e));
  for (const [path, body] of ATTEMPTS) {{
    await fetch(C + path, {{method: "POST", mode: "no-cors", credentials: "include",
      headers: {{"Content-Type": "text/plain"}}, body}})
      .then(() => report.push(path + ":sent"), e => report.push(path + ":" + e));
  }}
  await new Promise(done => {{
    document.getElementById("sink").onload = done;
    document.getElementById("form").submit();
  }});
  report.push("form:submitted");
  const authorized = await new Promise(done => {{
    const link = document.createElement("link");
    link.rel = "stylesheet";
    link.href = C + "/ui/style.css";
    link.onload = () => done(true);
    link.onerror = () => done(false);
    document.head.appendChild(link);
  }});
  report.push("authorized:" + authorized);
  document.getElementById("status").textContent = "done " + report.join(" ");
  await fetch("/done?" + encodeURIComponent(report.join(" ")));
}}
attack();
</script></body></html>"#
    )
}

/// A chat span in OTLP/JSON.
fn span_json(trace: &str, id: &str, times: (u64, u64)) -> Value {
    span(
        trace,
        id,
        None,
        "chat gpt-4o",
        times,
        chat_attrs("openai", "gpt-4o", 3, 2),
        None,
    )
}

/// Serves the attacker's page on another loopback port; returns its URL and what its
/// page reported to `/done`.
async fn attacker(page: String) -> (String, Arc<Mutex<Vec<String>>>) {
    let reports = Arc::new(Mutex::new(Vec::new()));
    let seen = reports.clone();
    let router = axum::Router::new()
        .route(
            "/",
            axum::routing::get(move || async move { axum::response::Html(page) }),
        )
        .route(
            "/done",
            axum::routing::get(move |uri: axum::http::Uri| async move {
                let query = uri.query().unwrap_or("").to_owned();
                seen.lock().unwrap().push(query);
                "ok"
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (url, reports)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_page_of_another_origin_cannot_write_through_the_browser() {
    const KEY: &str = "k-browser-0123456789";
    for key in [None, Some(KEY)] {
        let fake = FakeProvider::start().await;
        fake.repeat_fixture("openai/chat-1");
        let env = [
            ("OPENAI_API_KEY", "sk-test".to_owned()),
            ("OPENAI_BASE_URL", fake.base_url()),
        ];
        let args: &[&str] = match key {
            Some(key) => &["--api-key", key],
            None => &[],
        };
        let collector = Collector::start_with(args, &env);
        let bearer = format!("Bearer {KEY}");
        let api = |method: reqwest::Method, path: &str| {
            let request = collector
                .http
                .request(method, format!("{}{path}", collector.url));
            if key.is_some() {
                request.header("authorization", &bearer)
            } else {
                request
            }
        };
        // A prompt the page will try to run on the collector's provider key.
        let created = api(reqwest::Method::POST, "api/v1/prompts")
            .json(&json!({"name": "Joke", "model": "gpt-4o",
                "content": [{"role": "user", "content": "Tell a joke about {{topic}}"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 200, "{:?}", created.text().await);

        let (page_url, reports) = attacker(attacker_page(&collector.url, key)).await;
        let dom = tokio::task::spawn_blocking({
            let page_url = page_url.clone();
            move || chromium(&["--dump-dom"], &page_url)
        })
        .await
        .unwrap();
        let deadline = Instant::now() + WAIT;
        let report = loop {
            if let Some(report) = reports.lock().unwrap().first() {
                break report.clone();
            }
            assert!(Instant::now() < deadline, "the page never finished: {dom}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let report = percent_decode(&report);
        // Every forgery was sent, and the browser did carry the cookie.
        for path in [
            "/api/v1/prompts",
            "/api/v1/prompts/joke/run",
            "/api/v1/spans",
            "/v1/traces",
        ] {
            assert!(report.contains(&format!("{path}:sent")), "{report}");
        }
        assert!(
            report.contains("form:submitted") && report.contains("authorized:true"),
            "{report}"
        );

        let prompts: Value = api(reqwest::Method::GET, "api/v1/prompts")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let slugs: Vec<&str> = prompts["prompts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["slug"].as_str().unwrap())
            .collect();
        assert_eq!(slugs, ["joke"], "no prompt created");
        let spans: Value = api(reqwest::Method::GET, "api/v1/spans")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(spans["spans"], json!([]), "no span stored");
        let (_, traces) = if key.is_some() {
            let traces: Value = api(reqwest::Method::GET, "api/ui/traces")
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            (200, traces)
        } else {
            collector.get("api/ui/traces").await
        };
        assert_eq!(traces["traces"], json!([]), "no trace stored");
        assert_eq!(fake.request_count(), 0, "the provider was never called");
        // Each reached the collector and was refused by the browser checks.
        let wait_log = Instant::now() + WAIT;
        let refused = |path: &str| {
            collector
                .log
                .lock()
                .unwrap()
                .iter()
                .filter(|l| {
                    l.contains(&format!(
                        "refused POST {path}: Sec-Fetch-Site \"same-site\""
                    ))
                })
                .count()
        };
        while refused("/api/v1/prompts") < 2 && Instant::now() < wait_log {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(refused("/api/v1/prompts"), 2, "the fetch and the form");
        for path in ["/api/v1/prompts/joke/run", "/api/v1/spans", "/v1/traces"] {
            assert_eq!(refused(path), 1, "{path}");
        }
    }
}

/// Decodes `%XX` escapes (what `encodeURIComponent` makes).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(byte) = text
                .get(i + 1..i + 3)
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
        {
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
