//! The Tracia REST client (`prompts()`, `spans()`) against the real collector served
//! in-process, and its requests and error handling against a stub's canned replies.

mod support;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::TryStreamExt;
use serde_json::{Value, json};
use support::{FakeProvider, OtlpReceiver, RecordedRequest};
use tracia::{
    CreatePrompt, ErrorCode, Evaluate, FinishReason, ListSpans, Message, PromptMessage, RunLocal,
    RunPrompt, Tracia, UpdatePrompt,
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
    assert_eq!(run.finish_reason, FinishReason::Stop);
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

/// Stores a span through `POST /api/v1/spans` as the Tracia SDKs send it: a successful
/// chat span, with `fields` on top.
async fn post_span(base: &str, span_id: &str, fields: Value) {
    let mut span = json!({
        "spanId": span_id, "model": "gpt-4o", "provider": "openai",
        "input": {"messages": [{"role": "user", "content": "hi"}]}, "status": "SUCCESS",
        "latencyMs": 1, "inputTokens": 1, "outputTokens": 1, "totalTokens": 2,
    });
    span.as_object_mut()
        .unwrap()
        .extend(fields.as_object().unwrap().clone());
    let r = reqwest::Client::new()
        .post(format!("{base}/api/v1/spans"))
        .json(&span)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
}

/// The span ids of one page, newest first as the API lists them.
async fn listed(tracia: &Tracia, query: ListSpans) -> Vec<String> {
    let page = tracia.spans().list(query).await.unwrap();
    page.spans.into_iter().map(|s| s.span_id).collect()
}

const A: &str = "sp_00000000000000a1";
const B: &str = "sp_00000000000000b2";
const C: &str = "sp_00000000000000c3";

#[tokio::test]
async fn spans_list_filters_select_exactly_the_matching_spans() {
    let (_dir, tracia, base) = collector(None).await;
    // The collector dates a span at its arrival minus its latency: A is 3 h old, B 2 h,
    // C 1 h.
    let hour = 3_600_000;
    post_span(
        &base,
        A,
        json!({"latencyMs": 3 * hour, "promptSlug": "welcome", "userId": "u1",
            "sessionId": "s1", "tags": ["x"]}),
    )
    .await;
    post_span(
        &base,
        B,
        json!({"latencyMs": 2 * hour, "status": "ERROR", "error": "boom", "userId": "u2",
            "sessionId": "s1", "tags": ["x", "y"]}),
    )
    .await;
    post_span(
        &base,
        C,
        json!({"latencyMs": hour, "promptSlug": "welcome", "userId": "u1",
            "sessionId": "s2", "tags": ["y"]}),
    )
    .await;

    let q = ListSpans::default;
    let some = |s: &str| Some(s.to_owned());
    assert_eq!(listed(&tracia, q()).await, [C, B, A]);
    let by_slug = ListSpans {
        prompt_slug: some("welcome"),
        ..q()
    };
    assert_eq!(listed(&tracia, by_slug).await, [C, A]);
    let by_status = |status| ListSpans {
        status: some(status),
        ..q()
    };
    assert_eq!(listed(&tracia, by_status("ERROR")).await, [B]);
    assert_eq!(listed(&tracia, by_status("SUCCESS")).await, [C, A]);
    let by_user = ListSpans {
        user_id: some("u1"),
        ..q()
    };
    assert_eq!(listed(&tracia, by_user).await, [C, A]);
    let by_session = ListSpans {
        session_id: some("s1"),
        ..q()
    };
    assert_eq!(listed(&tracia, by_session).await, [B, A]);
    let by_tags = |tags: &[&str]| ListSpans {
        tags: tags.iter().map(|t| t.to_string()).collect(),
        ..q()
    };
    assert_eq!(listed(&tracia, by_tags(&["x"])).await, [B, A]);
    assert_eq!(listed(&tracia, by_tags(&["y"])).await, [C, B]);
    assert_eq!(
        listed(&tracia, by_tags(&["x", "y"])).await,
        [B],
        "tags: all of them"
    );
    assert!(listed(&tracia, by_tags(&["x", "z"])).await.is_empty());

    // Half an hour around B: its own `createdAt` read in a zone 30 min east (earlier)
    // or west (later) of UTC, Python's `isoformat()` offset form.
    let b_at = tracia
        .spans()
        .get(B)
        .await
        .unwrap()
        .item
        .created_at
        .unwrap();
    let before_b = some(&b_at.replace('Z', "+00:30"));
    let after_b = some(&b_at.replace('Z', "-00:30"));
    let since = ListSpans {
        start_date: before_b.clone(),
        ..q()
    };
    assert_eq!(listed(&tracia, since).await, [C, B]);
    let until = ListSpans {
        end_date: after_b.clone(),
        ..q()
    };
    assert_eq!(listed(&tracia, until).await, [B, A]);
    let between = ListSpans {
        start_date: before_b,
        end_date: after_b,
        ..q()
    };
    assert_eq!(listed(&tracia, between).await, [B]);

    let all_at_once = ListSpans {
        prompt_slug: some("welcome"),
        user_id: some("u1"),
        tags: vec!["y".into()],
        ..q()
    };
    assert_eq!(listed(&tracia, all_at_once).await, [C]);
}

#[tokio::test]
async fn spans_list_pages_over_next_cursor_and_list_all_yields_every_span_once() {
    let (_dir, tracia, base) = collector(None).await;
    // Five spans of one user, a minute apart (newest first: ids 0..5), and one of another.
    let ids: Vec<String> = (0..5).map(|i| format!("sp_000000000000001{i}")).collect();
    for (age, id) in ids.iter().enumerate() {
        post_span(
            &base,
            id,
            json!({"latencyMs": age * 60_000, "userId": "pager"}),
        )
        .await;
    }
    post_span(&base, "sp_00000000000000ff", json!({"userId": "other"})).await;
    let query = ListSpans {
        user_id: Some("pager".into()),
        limit: Some(2),
        ..Default::default()
    };

    let mut pages = Vec::new();
    let mut cursor = None;
    loop {
        let page = tracia
            .spans()
            .list(ListSpans {
                cursor: cursor.clone(),
                ..query.clone()
            })
            .await
            .unwrap();
        pages.push(
            page.spans
                .iter()
                .map(|s| s.span_id.clone())
                .collect::<Vec<_>>(),
        );
        cursor = page.next_cursor;
        if cursor.is_none() {
            break;
        }
        assert!(pages.len() < 3, "page {} must be the last", pages.len());
    }
    assert_eq!(pages, [&ids[0..2], &ids[2..4], &ids[4..5]]);

    let all: Vec<_> = tracia.spans().list_all(query).try_collect().await.unwrap();
    let all: Vec<_> = all.into_iter().map(|s| s.span_id).collect();
    assert_eq!(all, ids, "every span once, in order");
}

#[tokio::test]
async fn spans_get_and_evaluate_against_the_collector() {
    let (_dir, tracia, base) = collector(None).await;
    post_span(
        &base,
        A,
        json!({"traceId": "tr_00000000000000aa", "parentSpanId": B, "output": "hello",
            "variables": {"name": "Ada"}, "tags": ["t"], "userId": "u1", "sessionId": "s1",
            "latencyMs": 812, "inputTokens": 10, "outputTokens": 5, "totalTokens": 15}),
    )
    .await;

    let span = tracia.spans().get(A).await.unwrap();
    assert_eq!(span.item.span_id, A);
    assert_eq!(span.item.trace_id.as_deref(), Some("tr_00000000000000aa"));
    assert_eq!(span.item.parent_span_id.as_deref(), Some(B));
    assert_eq!(span.item.model.as_deref(), Some("gpt-4o"));
    assert_eq!(span.item.status.as_deref(), Some("SUCCESS"));
    assert_eq!(span.item.latency_ms, Some(812));
    assert_eq!(span.item.total_tokens, Some(15));
    assert!(span.item.created_at.is_some());
    assert_eq!(span.input["messages"][0]["content"], "hi");
    assert_eq!(span.output.as_deref(), Some("hello"));
    assert_eq!(span.variables, Some(json!({"name": "Ada"})));
    assert_eq!(span.tags, ["t"]);
    assert_eq!(span.user_id.as_deref(), Some("u1"));
    assert_eq!(span.session_id.as_deref(), Some("s1"));

    let evaluation = tracia
        .spans()
        .evaluate(A, Evaluate::new("quality", 0.0).note("too short"))
        .await
        .unwrap();
    assert!(!evaluation.id.is_empty());
    assert_eq!(evaluation.evaluator_key, "quality");
    assert_eq!(evaluation.evaluator_name.as_deref(), Some("Quality"));
    assert_eq!(evaluation.value, 0.0);
    assert_eq!(evaluation.note.as_deref(), Some("too short"));
    assert!(evaluation.created_at.is_some());

    // One segment: the server looks up `sp_abc/special` itself (no route mismatch).
    let e = tracia.spans().get("sp_abc/special").await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::NotFound);
    assert_eq!(e.message(), "Span not found: sp_abc/special");
    let e = tracia
        .spans()
        .evaluate("sp_abc/special", Evaluate::new("quality", 1.0))
        .await
        .unwrap_err();
    assert_eq!(e.message(), "Span not found: sp_abc/special");
    let e = tracia
        .spans()
        .evaluate(C, Evaluate::new("quality", 1.0))
        .await
        .unwrap_err();
    assert_eq!((e.code(), e.status()), (ErrorCode::NotFound, Some(404)));
}

/// `spans().evaluate` right after `run_local` waits for that span's upload, which the
/// batch processor holds back for about a second here: without the wait the collector
/// would not know the span yet and answer 404.
#[tokio::test]
async fn evaluate_waits_for_the_pending_upload_of_its_span() {
    let fake = FakeProvider::start().await;
    fake.enqueue_fixture("openai/chat-1");
    let (_dir, _, base) = collector(None).await;
    let guard = support::pipeline_at(None, Some((&base, "tr_test_key")), |b| {
        b.with_scheduled_delay(Duration::from_secs(1))
    });
    let _sub = support::install(&guard);
    let tracia = support::client_with(&fake, |b| {
        b.with_tracia_api_key("tr_test_key")
            .with_tracia_base_url(&base)
    });

    let result = tracia
        .run_local(RunLocal::new("gpt-4o").user("hi"))
        .await
        .unwrap();
    let evaluation = tracia
        .spans()
        .evaluate(&result.span_id, Evaluate::new("quality", 1.0))
        .await
        .unwrap();
    assert_eq!(evaluation.evaluator_key, "quality");
    assert_eq!(evaluation.value, 1.0);
    let span = tracia.spans().get(&result.span_id).await.unwrap();
    assert_eq!(span.item.model.as_deref(), Some("gpt-4o"));
}

/// Status, headers and body.
type CannedReply = (u16, Vec<(&'static str, &'static str)>, &'static str);

/// A stub Tracia API: answers every request with the next canned reply and
/// records each request.
#[derive(Clone, Default)]
struct Stub {
    replies: Arc<Mutex<VecDeque<CannedReply>>>,
    seen: Arc<Mutex<Vec<RecordedRequest>>>,
}

impl Stub {
    async fn start() -> (Self, String) {
        let stub = Stub::default();
        let handler = {
            let stub = stub.clone();
            move |request: axum::extract::Request| {
                let stub = stub.clone();
                async move {
                    let (parts, body) = request.into_parts();
                    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
                    stub.seen
                        .lock()
                        .unwrap()
                        .push(RecordedRequest::new(&parts, body));
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

    fn request(&self, i: usize) -> RecordedRequest {
        self.seen.lock().unwrap()[i].clone()
    }

    /// Answers 200 with a JSON body.
    fn ok(&self, body: &'static str) {
        self.reply(200, vec![("content-type", "application/json")], body);
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
    assert_eq!(stub.request(0).path, "/api/v1/prompts/my-prompt%2Ftest");
    assert_eq!(
        stub.request(0).header("authorization"),
        Some("Bearer tr_test_key")
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
    assert_eq!(stub.request(2).path, "/api/v1/spans/sp_abc%2Fspecial");

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

/// Each call is a CLIENT span named after the operation and slug (`prompts.run` a
/// GenAI `chat` span), and the request carries that span's context as `traceparent`
/// (and a run's body as its `traceId`/`parentSpanId`).
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
    // Neither the request nor the answer names the model.
    assert_eq!(span.name, "chat");
    assert!(span.is_client());
    assert_eq!(span.attr_str("gen_ai.operation.name"), Some("chat"));
    assert_eq!(span.attr_str("gen_ai.prompt.name"), Some("welcome"));
    assert_eq!(
        span.attr_str("gen_ai.prompt.version"),
        Some("3"),
        "{:?}",
        span.attributes
    );
    assert_eq!(span.attr_i64("http.response.status_code"), Some(200));
    assert_eq!(span.attr_str("gen_ai.response.id"), Some("sp_1"));
    assert_eq!(span.attr_bool("tracia.prompt.run"), Some(true));
    let request = stub.request(0);
    assert_eq!(
        request.headers["traceparent"],
        format!("00-{}-{}-01", span.trace_id, span.span_id)
    );
    let trace_hex = span.trace_id.strip_prefix("0000000000000000");
    assert_eq!(
        request.body["traceId"],
        format!("tr_{}", trace_hex.unwrap_or(&span.trace_id))
    );
    assert_eq!(request.body["parentSpanId"], format!("sp_{}", span.span_id));

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

    // Ids not in Tracia's hex form (server-issued ones) cannot place the client span:
    // they go to the server as given, for it to resolve.
    stub.ok(r#"{"text":"hi","spanId":"sp_2","traceId":"tr_session789"}"#);
    let run = RunPrompt {
        trace_id: Some("tr_session789".into()),
        parent_span_id: Some("sp_abc123xyz".into()),
        ..RunPrompt::default()
    };
    client(&url).prompts().run("welcome", run).await.unwrap();
    let body = stub.request(2).body;
    assert_eq!(
        (&body["traceId"], &body["parentSpanId"]),
        (&json!("tr_session789"), &json!("sp_abc123xyz"))
    );
}

/// Every method's HTTP method, path (slugs and span ids percent-encoded as one
/// segment) and body, and the reading of each one's answer.
#[tokio::test]
async fn every_method_sends_its_method_encoded_path_and_body() {
    let (stub, url) = Stub::start().await;
    let tracia = client(&url);
    let prompts = tracia.prompts();
    let slug = "my-prompt/test";
    let prompt = r#"{"id":"p1","slug":"my-prompt/test","name":"Mine","currentVersion":2,
        "variables":["name"],"content":[{"id":"m1","role":"user","content":"Hi {{name}}"}]}"#;

    stub.ok(r#"{"prompts":[{"slug":"my-prompt/test","currentVersion":2,"model":"gpt-4o"}]}"#);
    let list = prompts.list().await.unwrap();
    assert_eq!((list[0].slug.as_str(), list[0].current_version), (slug, 2));

    stub.ok(prompt);
    let got = prompts.get(slug).await.unwrap();
    assert_eq!(got.info.variables, ["name"]);
    assert_eq!(got.content[0].id.as_deref(), Some("m1"));

    stub.ok(prompt);
    prompts
        .create(CreatePrompt {
            slug: Some(slug.into()),
            ..CreatePrompt::new("Mine", vec![PromptMessage::new("user", "Hi {{name}}")])
        })
        .await
        .unwrap();

    stub.ok(prompt);
    let clear_description = UpdatePrompt {
        description: Some(String::new()),
        ..Default::default()
    };
    prompts.update(slug, clear_description).await.unwrap();

    // Both documented answers to a delete.
    stub.reply(204, vec![], "");
    prompts.delete(slug).await.unwrap();
    stub.ok(r#"{"success":true}"#);
    prompts.delete(slug).await.unwrap();

    stub.ok(r#"{"text":null,"spanId":"sp_1","traceId":"tr_1","finishReason":"tool_calls"}"#);
    let run = prompts.run(slug, RunPrompt::default()).await.unwrap();
    assert_eq!(run.text, None);

    stub.ok(r#"{"spans":[{"spanId":"sp_1","cost":null}],"nextCursor":null}"#);
    let page = tracia
        .spans()
        .list(ListSpans {
            status: Some("ERROR".into()),
            start_date: Some("2024-01-15T10:35:00.000Z".into()),
            user_id: Some("u/1".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!((page.spans.len(), page.next_cursor), (1, None));

    stub.ok(
        r#"{"spanId":"sp_abc/special","provider":"openai","input":{"messages":[]},"tags":["a"]}"#,
    );
    let span = tracia.spans().get("sp_abc/special").await.unwrap();
    assert_eq!(span.tags, ["a"]);

    stub.ok(r#"{"id":"eval_1","evaluatorKey":"quality","value":8,"source":"sdk"}"#);
    let evaluation = tracia
        .spans()
        .evaluate(
            "sp_abc/special",
            Evaluate::new("quality", 8.0).note("great"),
        )
        .await
        .unwrap();
    assert_eq!(evaluation.value, 8.0);

    let sent: Vec<_> = stub
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r.method.to_string(),
                r.path.clone(),
                r.query.clone(),
                r.body.clone(),
            )
        })
        .collect();
    let row = |method: &str, path: &str, query: Option<&str>, body: Value| {
        (
            method.to_owned(),
            path.to_owned(),
            query.map(str::to_owned),
            body,
        )
    };
    let encoded = "/api/v1/prompts/my-prompt%2Ftest";
    let span_path = "/api/v1/spans/sp_abc%2Fspecial";
    assert_eq!(
        sent,
        [
            row("GET", "/api/v1/prompts", None, Value::Null),
            row("GET", encoded, None, Value::Null),
            row(
                "POST",
                "/api/v1/prompts",
                None,
                json!({"name": "Mine", "slug": slug,
                    "content": [{"role": "user", "content": "Hi {{name}}"}]})
            ),
            row("PUT", encoded, None, json!({"description": ""})),
            row("DELETE", encoded, None, Value::Null),
            row("DELETE", encoded, None, Value::Null),
            row("POST", &format!("{encoded}/run"), None, json!({})),
            row(
                "GET",
                "/api/v1/spans",
                Some("status=ERROR&startDate=2024-01-15T10%3A35%3A00.000Z&userId=u%2F1"),
                Value::Null
            ),
            row("GET", span_path, None, Value::Null),
            row(
                "POST",
                &format!("{span_path}/evaluations"),
                None,
                json!({"evaluatorKey": "quality", "value": 8.0, "note": "great"})
            ),
        ]
    );
}

/// `prompts().run` sends each option under its Tracia name, a multi-turn tool
/// continuation included, and reads the whole answer.
#[tokio::test]
async fn prompts_run_sends_every_option_by_its_tracia_name() {
    let (stub, url) = Stub::start().await;
    stub.ok(
        r#"{"text":"It is sunny.","spanId":"sp_abc123xyz","traceId":"tr_session789",
        "promptVersion":3,"latencyMs":1250,"usage":{"inputTokens":45,"outputTokens":120,
        "totalTokens":165},"cost":0.0049,"finishReason":"stop","toolCalls":null,
        "structuredOutput":{"sunny":true},
        "messages":[{"role":"tool","content":"22C","toolCallId":"call_1","toolName":"weather"},
            {"role":"assistant","content":"It is sunny."}]}"#,
    );
    let tool_answer = Message::tool("call_1", "22C").with_tool_name("weather");
    let run = RunPrompt {
        version: Some(3),
        model: Some("gpt-4o".into()),
        messages: Some(vec![
            Message::user("Weather in Paris?"),
            tool_answer.clone(),
        ]),
        tags: vec!["onboarding".into(), "beta".into()],
        user_id: Some("user_123".into()),
        session_id: Some("s_1".into()),
        trace_id: Some("tr_0123456789abcdef".into()),
        parent_span_id: Some("sp_0123456789abcdef".into()),
        ..RunPrompt::default().variable("city", "Paris")
    };
    let result = client(&url).prompts().run("weather", run).await.unwrap();

    assert_eq!(
        stub.request(0).body,
        json!({
            "variables": {"city": "Paris"}, "version": 3, "model": "gpt-4o",
            "messages": [
                {"role": "user", "content": "Weather in Paris?"},
                {"role": "tool", "content": "22C", "toolCallId": "call_1", "toolName": "weather"},
            ],
            "tags": ["onboarding", "beta"], "userId": "user_123", "sessionId": "s_1",
            "traceId": "tr_0123456789abcdef", "parentSpanId": "sp_0123456789abcdef",
        })
    );
    assert_eq!(result.text.as_deref(), Some("It is sunny."));
    assert_eq!(
        (result.span_id.as_str(), result.trace_id.as_str()),
        ("sp_abc123xyz", "tr_session789")
    );
    assert_eq!(result.prompt_version, Some(3));
    assert_eq!(result.latency_ms, Some(1250));
    assert_eq!(result.usage.total_tokens, 165);
    assert_eq!(result.cost, Some(0.0049));
    assert_eq!(result.finish_reason, FinishReason::Stop);
    assert!(result.tool_calls.is_empty());
    assert_eq!(result.structured_output, Some(json!({"sunny": true})));
    assert_eq!(result.messages[0], tool_answer);
}

/// Answers that are not Tracia's error shape, and successes that cannot be read,
/// still become typed errors with the HTTP status.
#[tokio::test]
async fn unshaped_error_bodies_and_unreadable_answers_are_typed_errors() {
    let (stub, url) = Stub::start().await;
    let tracia = &client(&url);
    let list = move || async move { tracia.prompts().list().await.unwrap_err() };

    stub.reply(
        500,
        vec![],
        r#"{"error":{"code":"PROVIDER_ERROR","message":"upstream failed"}}"#,
    );
    let e = list().await;
    assert_eq!(
        (e.code(), e.status()),
        (ErrorCode::ProviderError, Some(500))
    );
    assert_eq!(e.message(), "upstream failed");

    stub.reply(
        502,
        vec![("content-type", "text/html")],
        "<html>Bad Gateway</html>",
    );
    let e = list().await;
    assert_eq!((e.code(), e.status()), (ErrorCode::Unknown, Some(502)));
    assert_eq!(e.message(), "<html>Bad Gateway</html>");

    stub.reply(503, vec![], "Service Unavailable");
    let e = list().await;
    assert_eq!(
        (e.status(), e.message()),
        (Some(503), "Service Unavailable")
    );

    // Without a code the status decides it.
    stub.reply(404, vec![], r#"{"message":"Prompt not found: p"}"#);
    let e = list().await;
    assert_eq!(
        (e.code(), e.message()),
        (ErrorCode::NotFound, "Prompt not found: p")
    );
    assert_eq!(e.raw_code(), None);
    stub.reply(401, vec![], "  \n");
    let e = list().await;
    assert_eq!(
        (e.code(), e.message()),
        (ErrorCode::Unauthorized, "HTTP 401")
    );

    // A 429 is a rate limit whatever (undocumented) code it names.
    stub.reply(
        429,
        vec![("retry-after", "2")],
        r#"{"error":{"code":"TOO_MANY_REQUESTS","message":"slow down"}}"#,
    );
    let e = list().await;
    assert_eq!(e.code(), ErrorCode::RateLimited);
    assert_eq!(e.raw_code(), Some("TOO_MANY_REQUESTS"));
    assert_eq!(e.retry_after(), Some(Duration::from_secs(2)));

    for body in [r#"{"prompts":"#, "<html>ok</html>", r#"{"prompts":7}"#] {
        stub.ok(body);
        let e = list().await;
        assert_eq!(
            (e.code(), e.status()),
            (ErrorCode::Unknown, Some(200)),
            "{body}"
        );
        assert!(
            e.message()
                .starts_with("Invalid response from the Tracia API"),
            "{body}: {}",
            e.message()
        );
    }
    // No body where a prompt was expected.
    stub.reply(204, vec![], "");
    let e = tracia.prompts().get("p").await.unwrap_err();
    assert_eq!((e.code(), e.status()), (ErrorCode::Unknown, Some(204)));
}

#[tokio::test]
async fn list_all_ends_on_an_empty_or_repeated_cursor() {
    let (stub, url) = Stub::start().await;
    let tracia = client(&url);
    let page = |id: &str, next: &str| -> &'static str {
        Box::leak(
            format!(r#"{{"spans":[{{"spanId":"{id}"}}],"nextCursor":{next}}}"#).into_boxed_str(),
        )
    };
    stub.ok(page("sp_1", r#""c1""#));
    stub.ok(page("sp_2", r#""c1""#)); // the same cursor again: a broken server
    stub.ok(page("sp_3", r#""""#));
    let first: Vec<_> = tracia
        .spans()
        .list_all(ListSpans::default())
        .try_collect()
        .await
        .unwrap();
    assert_eq!(first.len(), 2, "stops at the repeated cursor");
    let second: Vec<_> = tracia
        .spans()
        .list_all(ListSpans::default())
        .try_collect()
        .await
        .unwrap();
    assert_eq!(second.len(), 1, "stops at the empty cursor");
}

// --- prompts.run as a GenAI span --------------------------------------------------------

use opentelemetry::Value as OtelValue;
use opentelemetry::trace::{SpanId, SpanKind, Status, TraceId};
use opentelemetry_sdk::trace::SpanData;
use tracing::Instrument;

fn attr<'a>(span: &'a SpanData, key: &str) -> Option<&'a OtelValue> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| &kv.value)
}

fn attr_str<'a>(span: &'a SpanData, key: &str) -> Option<&'a str> {
    match attr(span, key) {
        Some(OtelValue::String(s)) => Some(s.as_str()),
        _ => None,
    }
}

fn attr_i64(span: &SpanData, key: &str) -> Option<i64> {
    match attr(span, key) {
        Some(OtelValue::I64(n)) => Some(*n),
        _ => None,
    }
}

fn attr_json(span: &SpanData, key: &str) -> Value {
    serde_json::from_str(attr_str(span, key).unwrap_or("null")).unwrap()
}

/// The spans of `prompts.run` calls.
fn prompt_runs(memory: &support::Memory) -> Vec<SpanData> {
    memory
        .spans()
        .into_iter()
        .filter(|s| attr(s, "tracia.prompt.run").is_some())
        .collect()
}

/// Tracia's form of a trace id.
fn tracia_trace_id(id: TraceId) -> String {
    let hex = id.to_string();
    format!(
        "tr_{}",
        hex.strip_prefix("0000000000000000").unwrap_or(&hex)
    )
}

async fn create_joke_prompt(tracia: &Tracia) {
    let content = vec![PromptMessage::new("user", "Tell me a joke about {{topic}}")];
    tracia
        .prompts()
        .create(CreatePrompt {
            slug: Some("joke".into()),
            ..CreatePrompt::new("Joke", content)
        })
        .await
        .unwrap();
}

fn joke_run() -> RunPrompt {
    RunPrompt {
        model: Some("gpt-3.5-turbo".into()),
        tags: vec!["jokes".into()],
        ..RunPrompt::default().variable("topic", "opentelemetry")
    }
}

/// Two `prompts_run` turns of a session against the collector: each a GenAI CLIENT
/// span with what the answer tells (usage, cost, finish reason, the run's id, the
/// messages), the second the child of the first; the server's span of each run is
/// the child of its client span.
#[tokio::test(flavor = "multi_thread")]
async fn session_prompt_runs_are_chained_genai_spans_parenting_the_servers_runs() {
    let fake = FakeProvider::start().await;
    fake.enqueue_fixture("openai/chat-1")
        .enqueue_fixture("openai/chat-1");
    let (_dir, _, base) = collector(Some(support::client(&fake))).await;
    let tracia = Tracia::builder()
        .without_env()
        .with_tracia_api_key("tr_test_key")
        .with_tracia_base_url(&base)
        .with_capture_content(true)
        .build()
        .unwrap();
    create_joke_prompt(&tracia).await;

    let memory = support::Memory::install();
    let session = tracia
        .create_session()
        .with_session_id("conv_1")
        .with_user_id("user_1");
    let first = session.prompts_run("joke", joke_run()).await.unwrap();
    let second = session.prompts_run("joke", joke_run()).await.unwrap();

    let spans = prompt_runs(&memory);
    assert_eq!(spans.len(), 2);
    let (a, b) = (&spans[0], &spans[1]);
    assert_eq!(
        a.parent_span_id,
        SpanId::INVALID,
        "the first turn starts the trace"
    );
    assert_eq!(b.parent_span_id, a.span_context.span_id());
    assert_eq!(b.span_context.trace_id(), a.span_context.trace_id());
    assert_eq!(
        session.last_span_id(),
        Some(format!("sp_{}", b.span_context.span_id()))
    );

    for (span, result) in [(a, &first), (b, &second)] {
        assert_eq!(span.name, "chat gpt-3.5-turbo");
        assert_eq!(span.span_kind, SpanKind::Client);
        assert_eq!(span.status, Status::Unset);
        for (key, value) in [
            ("gen_ai.operation.name", "chat"),
            ("gen_ai.provider.name", "openai"),
            ("gen_ai.request.model", "gpt-3.5-turbo"),
            ("gen_ai.prompt.name", "joke"),
            ("gen_ai.prompt.version", "1"),
            ("gen_ai.response.id", result.span_id.as_str()),
            ("session.id", "conv_1"),
            ("gen_ai.conversation.id", "conv_1"),
            ("user.id", "user_1"),
        ] {
            assert_eq!(attr_str(span, key), Some(value), "{key}");
        }
        assert_eq!(result.usage.total_tokens, 34);
        assert_eq!(
            attr_i64(span, "gen_ai.usage.input_tokens"),
            Some(result.usage.input_tokens as i64)
        );
        assert_eq!(
            attr_i64(span, "gen_ai.usage.output_tokens"),
            Some(result.usage.output_tokens as i64)
        );
        let cost = result.cost.unwrap();
        assert!(cost > 0.0);
        assert_eq!(attr(span, "tracia.cost_usd"), Some(&OtelValue::F64(cost)));
        assert_eq!(
            attr(span, "gen_ai.response.finish_reasons").map(|v| v.to_string()),
            Some("[\"stop\"]".to_owned())
        );
        assert_eq!(
            attr(span, "tracia.tags").map(|v| v.to_string()),
            Some("[\"jokes\"]".to_owned())
        );
        assert_eq!(attr_i64(span, "http.response.status_code"), Some(200));
        // The input the server rendered, and the answer.
        let input = attr_json(span, "gen_ai.input.messages");
        assert_eq!(
            input[0]["parts"][0]["content"],
            "Tell me a joke about opentelemetry"
        );
        let output = attr_json(span, "gen_ai.output.messages");
        assert_eq!(
            output[0]["parts"][0]["content"].as_str(),
            result.text.as_deref()
        );

        // The server's span of the run is the client span's child, in its trace.
        let trace_id = tracia_trace_id(span.span_context.trace_id());
        assert_eq!(result.trace_id, trace_id);
        let stored = tracia.spans().get(&result.span_id).await.unwrap();
        assert_eq!(
            stored.item.parent_span_id,
            Some(format!("sp_{}", span.span_context.span_id()))
        );
        assert_eq!(stored.item.trace_id, Some(trace_id));
        assert_eq!(stored.session_id.as_deref(), Some("conv_1"));
        assert_eq!(stored.user_id.as_deref(), Some("user_1"));
        assert_eq!(stored.item.total_tokens, Some(34));
    }
}

/// A run the server refuses (a variable missing) is an error span with the exception
/// event, a child of the caller's own span.
#[tokio::test(flavor = "multi_thread")]
async fn a_refused_run_is_an_error_span_under_the_callers_span() {
    let (_dir, tracia, _) = collector(None).await;
    create_joke_prompt(&tracia).await;

    let memory = support::Memory::install();
    let handler = tracing::info_span!("handle_request");
    let run = RunPrompt {
        model: Some("gpt-3.5-turbo".into()),
        ..RunPrompt::default()
    };
    let e = tracia
        .prompts()
        .run("joke", run)
        .instrument(handler.clone())
        .await
        .unwrap_err();
    drop(handler);
    assert_eq!(e.code(), ErrorCode::MissingVariables);

    let spans = prompt_runs(&memory);
    assert_eq!(spans.len(), 1);
    let span = &spans[0];
    let all = memory.spans();
    let handler = all.iter().find(|s| s.name == "handle_request").unwrap();
    assert_eq!(span.parent_span_id, handler.span_context.span_id());
    assert_eq!(
        span.span_context.trace_id(),
        handler.span_context.trace_id()
    );

    assert_eq!(span.name, "chat gpt-3.5-turbo");
    assert!(
        matches!(span.status, Status::Error { .. }),
        "{:?}",
        span.status
    );
    assert_eq!(attr_str(span, "error.type"), Some("missing_variables"));
    assert_eq!(attr_i64(span, "http.response.status_code"), Some(400));
    assert_eq!(attr_str(span, "gen_ai.prompt.name"), Some("joke"));
    let exception = span
        .events
        .iter()
        .find(|event| {
            event
                .attributes
                .iter()
                .any(|kv| kv.key.as_str() == "exception.type")
        })
        .expect("an exception event");
    let exception_attr = |key: &str| {
        exception
            .attributes
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| kv.value.to_string())
    };
    assert_eq!(
        exception_attr("exception.type").as_deref(),
        Some("MISSING_VARIABLES")
    );
    assert!(
        exception_attr("exception.message")
            .unwrap()
            .contains("Missing required variables: topic")
    );
    // Nothing to count: no usage, no cost.
    assert_eq!(attr(span, "gen_ai.usage.input_tokens"), None);
    assert_eq!(attr(span, "tracia.cost_usd"), None);
}

/// The collector stores a run with its tokens and cost; the client span of the same run,
/// exported by OTLP and by the Tracia exporter, adds neither to the trace and session
/// totals (the Tracia exporter does not upload it; OTLP stores it as an APP span).
#[tokio::test(flavor = "multi_thread")]
async fn a_prompt_run_is_counted_once_whichever_way_its_client_span_is_exported() {
    let fake = FakeProvider::start().await;
    fake.enqueue_fixture("openai/chat-1");
    let (_dir, tracia, base) = collector(Some(support::client(&fake))).await;
    create_joke_prompt(&tracia).await;

    support::keep_callsite_interest_shared();
    let guard = tracia::telemetry::builder()
        .with_service_name("tracia-tests")
        .with_scheduled_delay(Duration::from_millis(50))
        .with_filter("info")
        .with_otlp_traces_endpoint(format!("{base}/v1/traces"))
        .with_tracia_base_url(&base)
        .with_tracia_api_key("tr_test_key")
        .build()
        .unwrap();
    let subscriber = support::install(&guard);
    let session = tracia.create_session().with_session_id("conv_2");
    let result = session.prompts_run("joke", joke_run()).await.unwrap();
    guard.flush().await;
    drop(subscriber);

    let tracia_stats = guard
        .stats()
        .into_iter()
        .find(|s| s.exporter == "tracia")
        .unwrap();
    assert_eq!(
        (tracia_stats.delivered, tracia_stats.failed),
        (0, 0),
        "no span uploaded: {tracia_stats:?}"
    );
    let otlp_stats = guard
        .stats()
        .into_iter()
        .find(|s| s.exporter == "otlp")
        .unwrap();
    assert!(otlp_stats.delivered >= 1, "{otlp_stats:?}");

    let base = &base;
    let ui = |path: String| async move {
        reqwest::get(format!("{base}{path}"))
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    };
    let trace = ui(format!("/api/ui/traces/{}", result.trace_id)).await;
    let spans = trace["spans"].as_array().unwrap();
    let kinds: Vec<&str> = spans.iter().map(|s| s["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds.len(), 2, "the client span and the run: {kinds:?}");
    let client = spans
        .iter()
        .find(|s| s["spanId"] != result.span_id)
        .unwrap();
    assert_eq!(client["kind"], "APP");
    assert_eq!(client["attributes"]["tracia.prompt.run"], true);
    assert_eq!(
        client["attributes"]["gen_ai.usage.input_tokens"],
        result.usage.input_tokens
    );

    let usage = (
        result.usage.input_tokens,
        result.usage.output_tokens,
        result.cost,
    );
    let session = ui("/api/ui/sessions/conv_2".into()).await;
    let row = &session["traces"][0];
    assert_eq!(row["traceId"], result.trace_id.as_str());
    assert_eq!(
        (row["spanCount"].as_i64(), row["llmCount"].as_i64()),
        (Some(2), Some(1))
    );
    assert_eq!(
        (
            row["inputTokens"].as_u64().unwrap(),
            row["outputTokens"].as_u64().unwrap(),
            row["costUsd"].as_f64()
        ),
        usage
    );
    let sessions = ui("/api/ui/sessions".into()).await;
    let summary = sessions["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["sessionId"] == "conv_2")
        .unwrap();
    assert_eq!(
        (
            summary["inputTokens"].as_u64().unwrap(),
            summary["outputTokens"].as_u64().unwrap(),
            summary["costUsd"].as_f64()
        ),
        usage
    );
}
