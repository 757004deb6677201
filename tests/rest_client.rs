//! The Tracia REST client (`prompts()`, `spans()`) against the real collector served
//! in-process, and its error handling against the fake server's canned replies.

mod support;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use futures::TryStreamExt;
use serde_json::json;
use support::{FakeProvider, OtlpReceiver};
use tracia::{
    CreatePrompt, ErrorCode, Evaluate, ListSpans, PromptMessage, RunPrompt, Tracia, UpdatePrompt,
};
use tracia_collector::{AppState, store::Store};

/// The collector on a 127.0.0.1 port (prompt runs go to `llm` when given), and a
/// client pointed at it.
async fn collector(llm: Option<Tracia>) -> (tempfile::TempDir, Tracia, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut state = AppState::new(Store::open(dir.path()).unwrap());
    if let Some(llm) = llm {
        state = state.with_llm(llm);
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, tracia_collector::app(state))
            .await
            .unwrap();
    });
    let base = format!("http://{addr}");
    (dir, client(&base), base)
}

fn client(base_url: &str) -> Tracia {
    Tracia::builder()
        .without_env()
        .with_tracia_api_key("tr_test_key")
        .with_tracia_base_url(base_url)
        .build()
        .unwrap()
}

#[tokio::test]
async fn prompts_create_get_list_update_run_delete() {
    let fake = FakeProvider::start().await;
    fake.enqueue_fixture("openai/chat-1");
    let (_dir, tracia, _) = collector(Some(support::client(&fake))).await;
    let prompts = tracia.prompts();

    let created = prompts
        .create(CreatePrompt {
            slug: Some("joke".into()),
            description: Some("jokes".into()),
            ..CreatePrompt::new(
                "Joke",
                vec![PromptMessage::new("user", "Tell me a joke about {{topic}}")],
            )
        })
        .await
        .unwrap();
    assert_eq!(created.info.slug, "joke");
    assert_eq!(created.info.current_version, 1);
    assert_eq!(created.info.variables, ["topic"]);
    assert_eq!(created.info.description.as_deref(), Some("jokes"));

    let got = prompts.get("joke").await.unwrap();
    assert_eq!(got.content.len(), 1);
    assert_eq!(got.content[0].content, "Tell me a joke about {{topic}}");

    let listed = prompts.list().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].slug, "joke");

    let updated = prompts
        .update(
            "joke",
            UpdatePrompt {
                content: Some(vec![PromptMessage::new(
                    "user",
                    "Tell me a joke about {{topic}}!",
                )]),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(updated.info.current_version, 2);

    // Version 1 with the fixture's model: the provider gets the recorded request.
    let run = prompts
        .run(
            "joke",
            RunPrompt {
                version: Some(1),
                model: Some("gpt-3.5-turbo".into()),
                ..RunPrompt::default().variable("topic", "opentelemetry")
            },
        )
        .await
        .unwrap();
    assert_eq!(run.prompt_version, Some(1));
    assert_eq!(run.usage.total_tokens, 34);
    assert_eq!(run.finish_reason.as_deref(), Some("stop"));
    assert!(run.text.unwrap().starts_with("Why did Opentelemetry"));
    let requests = fake.requests().await;
    assert_eq!(
        requests[0].body,
        support::fixture_request_body("openai/chat-1")
    );

    // The run is a stored span: get it and evaluate it.
    let span = tracia.spans().get(&run.span_id).await.unwrap();
    assert_eq!(span.item.prompt_slug.as_deref(), Some("joke"));
    let evaluation = tracia
        .spans()
        .evaluate(&run.span_id, Evaluate::new("quality", 1.0).note("funny"))
        .await
        .unwrap();
    assert_eq!(evaluation.evaluator_key, "quality");
    assert_eq!(evaluation.value, 1.0);

    prompts.delete("joke").await.unwrap();
    let gone = prompts.get("joke").await.unwrap_err();
    assert_eq!(gone.code(), ErrorCode::NotFound);
    assert_eq!(gone.status(), Some(404));
}

#[tokio::test]
async fn spans_list_pages_over_next_cursor() {
    let (_dir, tracia, base) = collector(None).await;
    let http = reqwest::Client::new();
    for i in 0..3 {
        let span = json!({
            "spanId": format!("sp_00000000000000a{i}"), "model": "gpt-4o", "provider": "openai",
            "input": {"messages": [{"role": "user", "content": "hi"}]}, "status": "SUCCESS",
            "latencyMs": 1, "inputTokens": 1, "outputTokens": 1, "totalTokens": 2,
        });
        let r = http
            .post(format!("{base}/api/v1/spans"))
            .json(&span)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
    }
    let first = tracia
        .spans()
        .list(ListSpans {
            limit: Some(1),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(first.spans.len(), 1);
    assert!(first.next_cursor.is_some());

    let all: Vec<_> = tracia
        .spans()
        .list_all(ListSpans {
            limit: Some(1),
            ..Default::default()
        })
        .try_collect()
        .await
        .unwrap();
    let mut ids: Vec<_> = all.iter().map(|s| s.span_id.as_str()).collect();
    ids.sort();
    assert_eq!(
        ids,
        [
            "sp_00000000000000a0",
            "sp_00000000000000a1",
            "sp_00000000000000a2"
        ]
    );
}

/// Status, headers and body.
type CannedReply = (u16, Vec<(&'static str, &'static str)>, &'static str);

/// A stub Tracia API: answers every request with the next canned reply and
/// records each request's path and headers.
#[derive(Clone, Default)]
struct Stub {
    replies: Arc<Mutex<VecDeque<CannedReply>>>,
    seen: Arc<Mutex<Vec<(String, http::HeaderMap)>>>,
}

impl Stub {
    async fn start() -> (Self, String) {
        let stub = Stub::default();
        let handler = {
            let stub = stub.clone();
            move |request: axum::extract::Request| {
                let stub = stub.clone();
                async move {
                    stub.seen
                        .lock()
                        .unwrap()
                        .push((request.uri().path().to_owned(), request.headers().clone()));
                    let (status, headers, body) = stub.replies.lock().unwrap().pop_front().unwrap();
                    let mut response = axum::response::Response::new(axum::body::Body::from(body));
                    *response.status_mut() = http::StatusCode::from_u16(status).unwrap();
                    for (name, value) in headers {
                        response.headers_mut().insert(name, value.parse().unwrap());
                    }
                    response
                }
            }
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().fallback(handler);
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (stub, format!("http://{addr}"))
    }

    fn reply(&self, status: u16, headers: Vec<(&'static str, &'static str)>, body: &'static str) {
        self.replies
            .lock()
            .unwrap()
            .push_back((status, headers, body));
    }

    fn path(&self, i: usize) -> String {
        self.seen.lock().unwrap()[i].0.clone()
    }
}

#[tokio::test]
async fn error_shapes_codes_status_and_retry_after() {
    let (stub, url) = Stub::start().await;
    let tracia = client(&url);
    stub.reply(
        404,
        vec![],
        r#"{"error":{"code":"NOT_FOUND","message":"Prompt not found: my-prompt/test"}}"#,
    );
    let e = tracia.prompts().get("my-prompt/test").await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::NotFound);
    assert_eq!(e.status(), Some(404));
    assert_eq!(e.message(), "Prompt not found: my-prompt/test");
    assert_eq!(stub.path(0), "/api/v1/prompts/my-prompt%2Ftest");
    assert_eq!(
        stub.seen.lock().unwrap()[0].1["authorization"],
        "Bearer tr_test_key"
    );

    stub.reply(
        400,
        vec![],
        r#"{"code":"MISSING_VARIABLES","message":"Missing variables: name"}"#,
    );
    let e = tracia
        .prompts()
        .run("p", RunPrompt::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::MissingVariables);
    assert_eq!(e.message(), "Missing variables: name");

    stub.reply(400, vec![], r#"{"code":"BRAND_NEW","message":"new"}"#);
    let e = tracia.spans().get("sp_abc/special").await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::Unknown);
    assert_eq!(e.raw_code(), Some("BRAND_NEW"));
    assert_eq!(stub.path(2), "/api/v1/spans/sp_abc%2Fspecial");

    stub.reply(429, vec![("retry-after", "7")], "slow down");
    let e = tracia.prompts().list().await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::RateLimited);
    assert_eq!(e.retry_after(), Some(std::time::Duration::from_secs(7)));
    assert_eq!(e.status(), Some(429));

    stub.reply(503, vec![], "");
    let e = tracia.prompts().list().await.unwrap_err();
    assert_eq!(e.status(), Some(503));
    assert_eq!(e.message(), "HTTP 503");
}

#[tokio::test]
async fn missing_key_is_unauthorized_before_any_request() {
    let (stub, url) = Stub::start().await;
    let tracia = Tracia::builder()
        .without_env()
        .with_tracia_base_url(url)
        .build()
        .unwrap();
    let e = tracia.prompts().list().await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::Unauthorized);
    assert!(stub.seen.lock().unwrap().is_empty());
}

/// Each call is a CLIENT span named after the operation and slug, and the request
/// carries that span's context as `traceparent`.
#[tokio::test(flavor = "multi_thread")]
async fn each_call_is_a_client_span_whose_context_is_sent() {
    let (stub, url) = Stub::start().await;
    let otlp = OtlpReceiver::start().await;
    let guard = support::pipeline(Some(&otlp), None);
    let _sub = support::install(&guard);
    stub.reply(
        200,
        vec![("content-type", "application/json")],
        r#"{"text":"hi","spanId":"sp_1","traceId":"tr_1","promptVersion":3,"usage":{"inputTokens":1,"outputTokens":2,"totalTokens":3},"somethingNew":true}"#,
    );
    let run = client(&url)
        .prompts()
        .run("welcome", RunPrompt::default())
        .await
        .unwrap();
    assert_eq!(run.usage.total_tokens, 3);
    guard.flush().await;
    let spans = otlp
        .wait_for_spans(1, std::time::Duration::from_secs(10))
        .await;
    let span = &spans[0];
    assert_eq!(span.name, "prompts.run welcome");
    assert!(span.is_client());
    assert_eq!(span.attr_str("gen_ai.prompt.name"), Some("welcome"));
    assert_eq!(
        span.attr_i64("gen_ai.prompt.version"),
        Some(3),
        "{:?}",
        span.attributes
    );
    assert_eq!(span.attr_i64("http.response.status_code"), Some(200));
    let headers = stub.seen.lock().unwrap()[0].1.clone();
    assert_eq!(
        headers["traceparent"],
        format!("00-{}-{}-01", span.trace_id, span.span_id)
    );

    // A failed call's span is an error with the Tracia code as `error.type`.
    stub.reply(404, vec![], r#"{"code":"NOT_FOUND","message":"no span"}"#);
    client(&url).spans().get("sp_missing").await.unwrap_err();
    guard.flush().await;
    let spans = otlp
        .wait_for_spans(2, std::time::Duration::from_secs(10))
        .await;
    let failed = spans.iter().find(|s| s.name == "spans.get").unwrap();
    assert!(failed.is_error());
    assert_eq!(failed.attr_str("error.type"), Some("NOT_FOUND"));
    assert_eq!(failed.attr_i64("http.response.status_code"), Some(404));
}
