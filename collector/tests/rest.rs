//! The Tracia REST API (`/api/v1`), API keys and limits, driven through the router
//! without a socket; prompt runs call the fake provider replaying recorded fixtures.

#[path = "../../tests/support/mod.rs"]
mod support;

use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use serde_json::{Value, json};
use support::{FakeProvider, fixture_request_body};
use tower::ServiceExt as _;
use tracia_collector::model::{CreateSpan, SpanRecord};
use tracia_collector::security::ApiKeys;
use tracia_collector::store::Store;
use tracia_collector::{AppState, app};

/// Handlers over a fresh store in a temporary directory (kept while the guard lives).
fn test_state() -> (tempfile::TempDir, AppState) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    (dir, AppState::new(store))
}

/// An answer: status, headers, and the body as JSON (`Value::String` when it is not).
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

async fn send(app: &axum::Router, request: Request<Body>) -> Answer {
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    Answer {
        status,
        headers,
        body,
    }
}

async fn call(app: &axum::Router, method: Method, uri: &str, body: Option<Value>) -> Answer {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::CONTENT_TYPE, "application/json");
    let body = body.map_or_else(Body::empty, |b| Body::from(b.to_string()));
    send(app, request.body(body).unwrap()).await
}

async fn get(app: &axum::Router, uri: &str) -> Answer {
    call(app, Method::GET, uri, None).await
}

async fn post(app: &axum::Router, uri: &str, body: Value) -> Answer {
    call(app, Method::POST, uri, Some(body)).await
}

async fn put(app: &axum::Router, uri: &str, body: Value) -> Answer {
    call(app, Method::PUT, uri, Some(body)).await
}

/// Asserts a Tracia error answer.
fn assert_error(answer: &Answer, status: u16, code: &str) {
    assert_eq!(answer.status.as_u16(), status, "{}", answer.body);
    assert_eq!(answer.body["error"]["code"], code, "{}", answer.body);
    assert!(
        answer.body["error"]["message"].is_string(),
        "{}",
        answer.body
    );
}

/// A span as the Python SDK posts it (null fields dropped).
fn python_span(span_id: &str) -> Value {
    json!({
        "spanId": span_id, "model": "gpt-4o", "provider": "openai",
        "input": {"messages": [{"role": "user", "content": "Hello Ada"}]},
        "variables": {"name": "Ada"}, "output": "Hi!", "status": "SUCCESS",
        "latencyMs": 812, "inputTokens": 10, "outputTokens": 5, "totalTokens": 15,
        "tags": ["demo", "beta"], "userId": "user_42", "sessionId": "s_1",
        "traceId": "tr_4bf92f3577b34da6", "temperature": 0.2,
    })
}

#[tokio::test]
async fn spans_are_created_listed_fetched_and_evaluated() {
    let (_dir, state) = test_state();
    let app = app(state.clone());

    let created = post(&app, "/api/v1/spans", python_span("sp_00f067aa0ba902b7")).await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.body);
    assert_eq!(created.body["id"], "sp_00f067aa0ba902b7");
    assert_eq!(created.body["spanId"], "sp_00f067aa0ba902b7");
    assert_eq!(created.body["traceId"], "tr_4bf92f3577b34da6");
    assert!(created.body["cost"].as_f64().unwrap() > 0.0);

    // Node sends explicit nulls; the legacy `tr_` span id is accepted too.
    let node = json!({
        "spanId": "tr_1234567890abcdef", "model": "gpt-4o", "provider": "openai",
        "input": {"messages": []}, "variables": null, "output": null, "status": "ERROR",
        "error": "boom", "latencyMs": 3, "inputTokens": 0, "outputTokens": 0, "totalTokens": 0,
    });
    assert_eq!(
        post(&app, "/api/v1/spans", node).await.status,
        StatusCode::OK
    );

    let list = get(&app, "/api/v1/spans").await;
    assert_eq!(list.status, StatusCode::OK);
    assert_eq!(list.body["nextCursor"], Value::Null);
    let spans = list.body["spans"].as_array().unwrap();
    assert_eq!(spans.len(), 2);
    let item = spans
        .iter()
        .find(|s| s["spanId"] == "sp_00f067aa0ba902b7")
        .unwrap();
    for (key, value) in [
        ("id", json!("sp_00f067aa0ba902b7")),
        ("traceId", json!("tr_4bf92f3577b34da6")),
        ("parentSpanId", Value::Null),
        ("promptSlug", Value::Null),
        ("model", json!("gpt-4o")),
        ("status", json!("SUCCESS")),
        ("latencyMs", json!(812)),
        ("inputTokens", json!(10)),
        ("outputTokens", json!(5)),
        ("totalTokens", json!(15)),
    ] {
        assert_eq!(item[key], value, "{key}");
    }
    assert!(item["createdAt"].as_str().unwrap().ends_with('Z'));

    let span = get(&app, "/api/v1/spans/sp_00f067aa0ba902b7").await;
    assert_eq!(span.status, StatusCode::OK);
    for (key, value) in [
        ("spanId", json!("sp_00f067aa0ba902b7")),
        ("provider", json!("openai")),
        (
            "input",
            json!({"messages": [{"role": "user", "content": "Hello Ada"}]}),
        ),
        ("variables", json!({"name": "Ada"})),
        ("output", json!("Hi!")),
        ("error", Value::Null),
        ("tags", json!(["demo", "beta"])),
        ("userId", json!("user_42")),
        ("sessionId", json!("s_1")),
        ("promptVersion", Value::Null),
        ("cost", item["cost"].clone()),
    ] {
        assert_eq!(span.body[key], value, "{key}");
    }
    let failed = get(&app, "/api/v1/spans/tr_1234567890abcdef").await;
    assert_eq!(failed.body["status"], "ERROR");
    assert_eq!(failed.body["error"], "boom");

    // Unknown ids, also percent-encoded as one segment.
    assert_error(
        &get(&app, "/api/v1/spans/sp_ffffffffffffffff").await,
        404,
        "NOT_FOUND",
    );
    let encoded = get(&app, "/api/v1/spans/sp_abc%2Fspecial").await;
    assert_error(&encoded, 404, "NOT_FOUND");
    assert_eq!(
        encoded.body["error"]["message"],
        "Span not found: sp_abc/special"
    );

    // Invalid bodies.
    let bad_id = post(&app, "/api/v1/spans", python_span("sp_123")).await;
    assert_error(&bad_id, 400, "INVALID_REQUEST");
    assert!(
        bad_id.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("sp_ + 16 hex")
    );
    assert_error(
        &post(&app, "/api/v1/spans", json!({"model": "gpt-4o"})).await,
        400,
        "INVALID_REQUEST",
    );
    let mut bad_status = python_span("sp_00000000000000aa");
    bad_status["status"] = json!("MAYBE");
    assert_error(
        &post(&app, "/api/v1/spans", bad_status).await,
        400,
        "INVALID_REQUEST",
    );
    let not_json = send(
        &app,
        Request::post("/api/v1/spans")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from("{oops"))
            .unwrap(),
    )
    .await;
    assert_error(&not_json, 400, "INVALID_REQUEST");

    // Evaluations.
    let uri = "/api/v1/spans/sp_00f067aa0ba902b7/evaluations";
    let evaluation = post(
        &app,
        uri,
        json!({"evaluatorKey": "quality", "value": 1, "note": "crisp"}),
    )
    .await;
    assert_eq!(evaluation.status, StatusCode::OK, "{}", evaluation.body);
    assert!(evaluation.body["id"].as_str().unwrap().starts_with("eval_"));
    assert_eq!(evaluation.body["evaluatorKey"], "quality");
    assert_eq!(evaluation.body["evaluatorName"], "Quality");
    assert_eq!(evaluation.body["value"], 1.0);
    assert_eq!(evaluation.body["source"], "api");
    assert_eq!(evaluation.body["note"], "crisp");
    assert!(evaluation.body["createdAt"].is_string());
    assert_eq!(
        post(&app, uri, json!({"evaluatorKey": "quality", "value": 8}))
            .await
            .status,
        StatusCode::OK
    );
    let stored = state
        .store
        .evaluations("sp_00f067aa0ba902b7")
        .await
        .unwrap();
    assert_eq!(
        stored.iter().map(|e| e.value).collect::<Vec<_>>(),
        [1.0, 8.0]
    );

    let not_number = post(
        &app,
        uri,
        json!({"evaluatorKey": "quality", "value": "good"}),
    )
    .await;
    assert_error(&not_number, 400, "INVALID_REQUEST");
    assert_eq!(
        not_number.body["error"]["message"],
        "Invalid evaluation value. Must be a number."
    );
    assert_error(
        &post(&app, uri, json!({"value": 1})).await,
        400,
        "INVALID_REQUEST",
    );
    assert_error(
        &post(
            &app,
            "/api/v1/spans/sp_ffffffffffffffff/evaluations",
            json!({"evaluatorKey": "quality", "value": 0}),
        )
        .await,
        404,
        "NOT_FOUND",
    );
}

#[tokio::test]
async fn pagination_walks_three_pages_with_next_cursor() {
    let (_dir, state) = test_state();
    let app = app(state);
    let mut created = Vec::new();
    for n in 1..=5 {
        let id = format!("sp_{n:016x}");
        let mut span = python_span(&id);
        span["latencyMs"] = json!(0);
        assert_eq!(
            post(&app, "/api/v1/spans", span).await.status,
            StatusCode::OK
        );
        created.push(id);
    }
    let mut pages = Vec::new();
    let mut uri = "/api/v1/spans?limit=2".to_owned();
    loop {
        let page = get(&app, &uri).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        let ids: Vec<String> = page.body["spans"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["spanId"].as_str().unwrap().to_owned())
            .collect();
        pages.push(ids);
        match page.body["nextCursor"].as_str() {
            Some(cursor) => uri = format!("/api/v1/spans?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [2, 2, 1]);
    let newest_first: Vec<String> = created.into_iter().rev().collect();
    assert_eq!(pages.concat(), newest_first);

    assert_error(
        &get(&app, "/api/v1/spans?cursor=nonsense").await,
        400,
        "INVALID_REQUEST",
    );
    assert_error(
        &get(&app, "/api/v1/spans?limit=0").await,
        400,
        "INVALID_REQUEST",
    );
    assert_error(
        &get(&app, "/api/v1/spans?limit=ten").await,
        400,
        "INVALID_REQUEST",
    );
    // Above the maximum is capped, not refused.
    let capped = get(&app, "/api/v1/spans?limit=1000").await;
    assert_eq!(capped.body["spans"].as_array().unwrap().len(), 5);
}

/// A stored span that started at `start` (Unix seconds).
fn span_at(id: &str, start: i64, edit: impl FnOnce(&mut CreateSpan)) -> SpanRecord {
    let mut span = CreateSpan {
        span_id: id.into(),
        model: Some("gpt-4o".into()),
        provider: Some("openai".into()),
        latency_ms: Some(0),
        ..CreateSpan::default()
    };
    edit(&mut span);
    SpanRecord::from_create(span, start * 1_000_000_000).unwrap()
}

#[tokio::test]
async fn every_list_filter_narrows_the_spans() {
    let (_dir, state) = test_state();
    let app = app(state.clone());
    let day = 1_705_276_800; // 2024-01-15T00:00:00Z
    let records = vec![
        span_at("sp_000000000000000a", day + 3600, |s| {
            s.prompt_slug = Some("welcome".into());
            s.tags = Some(vec!["a".into(), "b".into()]);
            s.user_id = Some("u1".into());
        }),
        span_at("sp_000000000000000b", day + 2 * 3600, |s| {
            s.status = Some("ERROR".into());
            s.tags = Some(vec!["a".into()]);
            s.session_id = Some("s1".into());
        }),
        span_at("sp_000000000000000c", day + 3 * 3600, |s| {
            s.user_id = Some("u2".into());
            s.session_id = Some("s1".into());
        }),
        // An application span: Tracia lists only GenAI spans.
        span_at("sp_000000000000000d", day + 3600, |s| {
            s.span_kind = Some("APP".into());
            s.model = None;
        }),
    ];
    state.store.insert(records).await.unwrap();

    let ids = |query: &'static str| {
        let app = app.clone();
        async move {
            let answer = get(&app, &format!("/api/v1/spans{query}")).await;
            assert_eq!(answer.status, StatusCode::OK, "{query}: {}", answer.body);
            answer.body["spans"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["spanId"].as_str().unwrap()[18..].to_owned())
                .collect::<Vec<_>>()
                .concat()
        }
    };
    assert_eq!(ids("").await, "cba");
    assert_eq!(ids("?promptSlug=welcome").await, "a");
    assert_eq!(ids("?status=ERROR").await, "b");
    assert_eq!(ids("?status=SUCCESS").await, "ca");
    assert_eq!(ids("?userId=u2").await, "c");
    assert_eq!(ids("?sessionId=s1").await, "cb");
    assert_eq!(ids("?tags=a").await, "ba");
    assert_eq!(ids("?tags=a,b").await, "a");
    assert_eq!(ids("?tags=a,c").await, "");
    // JavaScript's toISOString() and Python's isoformat() (with and without an offset).
    assert_eq!(ids("?startDate=2024-01-15T01:30:00.000Z").await, "cb");
    assert_eq!(ids("?startDate=2024-01-15T03:30:00%2B02:00").await, "cb");
    assert_eq!(ids("?endDate=2024-01-15T02:00:00").await, "ba");
    assert_eq!(
        ids("?startDate=2024-01-15T01:30:00.000000%2B00:00&endDate=2024-01-15T02:30:00Z").await,
        "b"
    );
    assert_eq!(ids("?sessionId=s1&status=SUCCESS&userId=u2").await, "c");
    assert_eq!(ids("?promptSlug=&tags=").await, "cba");

    assert_error(
        &get(&app, "/api/v1/spans?status=MAYBE").await,
        400,
        "INVALID_REQUEST",
    );
    let bad_date = get(&app, "/api/v1/spans?startDate=yesterday").await;
    assert_error(&bad_date, 400, "INVALID_REQUEST");
    assert!(
        bad_date.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("startDate")
    );
}

/// A prompt as the Python SDK creates it (`model_dump(by_alias=True, exclude_none=True)`).
fn welcome_prompt() -> Value {
    json!({
        "name": "Welcome Email",
        "description": "First contact",
        "content": [
            {"id": "m1", "role": "system", "content": "You write for {{product}}."},
            {"id": "m2", "role": "user", "content": "Welcome {{name}} to {{product}}"},
        ],
        "model": "gpt-4o", "provider": "openai", "temperature": 0.7,
    })
}

#[tokio::test]
async fn prompts_are_created_versioned_renamed_and_deleted() {
    let (_dir, state) = test_state();
    let app = app(state);

    let created = post(&app, "/api/v1/prompts", welcome_prompt()).await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.body);
    let p = &created.body;
    assert!(p["id"].as_str().unwrap().starts_with("prm_"));
    assert_eq!(p["slug"], "welcome-email");
    assert_eq!(p["name"], "Welcome Email");
    assert_eq!(p["description"], "First contact");
    assert_eq!(p["currentVersion"], 1);
    assert_eq!(p["variables"], json!(["product", "name"]));
    assert_eq!(p["provider"], "OPENAI");
    assert_eq!(p["model"], "gpt-4o");
    assert_eq!(p["temperature"], 0.7);
    assert_eq!(p["topP"], Value::Null);
    assert_eq!(p["maxOutputTokens"], Value::Null);
    assert_eq!(
        p["content"][1],
        json!({"id": "m2", "role": "user", "content": "Welcome {{name}} to {{product}}"})
    );
    assert!(p["createdAt"].is_string() && p["updatedAt"].is_string());

    // Duplicate slug; missing name or content.
    assert_error(
        &post(&app, "/api/v1/prompts", welcome_prompt()).await,
        409,
        "CONFLICT",
    );
    let mut no_name = welcome_prompt();
    no_name.as_object_mut().unwrap().remove("name");
    assert_error(
        &post(&app, "/api/v1/prompts", no_name).await,
        400,
        "INVALID_REQUEST",
    );
    let mut no_content = welcome_prompt();
    no_content["slug"] = json!("other");
    no_content.as_object_mut().unwrap().remove("content");
    assert_error(
        &post(&app, "/api/v1/prompts", no_content).await,
        400,
        "INVALID_REQUEST",
    );

    // Message ids are made up when missing.
    let other = post(
        &app,
        "/api/v1/prompts",
        json!({"name": "Other", "slug": "other", "content": [{"role": "user", "content": "Hi"}]}),
    )
    .await;
    assert_eq!(other.body["content"][0]["id"], "msg_1");
    assert_eq!(other.body["variables"], json!([]));

    let list = get(&app, "/api/v1/prompts").await;
    let prompts = list.body["prompts"].as_array().unwrap();
    assert_eq!(prompts.len(), 2);
    assert!(prompts.iter().all(|p| p.get("content").is_none()));
    assert!(
        prompts
            .iter()
            .any(|p| p["slug"] == "welcome-email" && p["currentVersion"] == 1)
    );

    // A content change is a new version; the old one stays readable.
    let updated = put(
        &app,
        "/api/v1/prompts/welcome-email",
        json!({"content": [{"role": "user", "content": "Hello {{name}}"}]}),
    )
    .await;
    assert_eq!(updated.status, StatusCode::OK, "{}", updated.body);
    assert_eq!(updated.body["currentVersion"], 2);
    assert_eq!(updated.body["variables"], json!(["name"]));
    assert_eq!(updated.body["model"], "gpt-4o");
    let current = get(&app, "/api/v1/prompts/welcome-email").await;
    assert_eq!(current.body["content"][0]["content"], "Hello {{name}}");
    let first = get(&app, "/api/v1/prompts/welcome-email?version=1").await;
    assert_eq!(first.body["currentVersion"], 2);
    assert_eq!(first.body["version"], 1);
    assert_eq!(
        first.body["content"][1]["content"],
        "Welcome {{name}} to {{product}}"
    );
    assert_eq!(first.body["variables"], json!(["product", "name"]));
    assert_error(
        &get(&app, "/api/v1/prompts/welcome-email?version=9").await,
        404,
        "NOT_FOUND",
    );
    assert_error(
        &get(&app, "/api/v1/prompts/welcome-email?version=x").await,
        400,
        "INVALID_REQUEST",
    );

    // Name and description change in place; "" clears the description.
    let renamed = put(
        &app,
        "/api/v1/prompts/welcome-email",
        json!({"name": "Welcome", "description": ""}),
    )
    .await;
    assert_eq!(renamed.body["currentVersion"], 2);
    assert_eq!(renamed.body["name"], "Welcome");
    assert_eq!(renamed.body["description"], Value::Null);
    // The same content again is no new version; a setting change is one.
    let same = put(
        &app,
        "/api/v1/prompts/welcome-email",
        json!({"content": [{"role": "user", "content": "Hello {{name}}"}]}),
    )
    .await;
    assert_eq!(same.body["currentVersion"], 2);
    let hotter = put(
        &app,
        "/api/v1/prompts/welcome-email",
        json!({"temperature": 1.0}),
    )
    .await;
    assert_eq!(hotter.body["currentVersion"], 3);
    assert_eq!(hotter.body["temperature"], 1.0);

    // A slug with a slash travels percent-encoded as one segment.
    assert_error(
        &put(
            &app,
            "/api/v1/prompts/welcome-email",
            json!({"slug": "other"}),
        )
        .await,
        409,
        "CONFLICT",
    );
    let moved = put(
        &app,
        "/api/v1/prompts/welcome-email",
        json!({"slug": "my-prompt/test"}),
    )
    .await;
    assert_eq!(moved.body["slug"], "my-prompt/test");
    assert_error(
        &get(&app, "/api/v1/prompts/welcome-email").await,
        404,
        "NOT_FOUND",
    );
    let fetched = get(&app, "/api/v1/prompts/my-prompt%2Ftest").await;
    assert_eq!(fetched.status, StatusCode::OK);
    assert_eq!(fetched.body["currentVersion"], 3);

    let versions = get(&app, "/api/ui/prompts/my-prompt%2Ftest/versions").await;
    let versions = versions.body["versions"].as_array().unwrap();
    assert_eq!(
        versions
            .iter()
            .map(|v| v["version"].as_i64().unwrap())
            .collect::<Vec<_>>(),
        [3, 2, 1]
    );
    assert_eq!(
        versions[2]["content"][0]["content"],
        "You write for {{product}}."
    );
    assert_eq!(versions[0]["temperature"], 1.0);
    assert!(versions[0]["createdAt"].is_string());

    let deleted = call(
        &app,
        Method::DELETE,
        "/api/v1/prompts/my-prompt%2Ftest",
        None,
    )
    .await;
    assert_eq!(deleted.status, StatusCode::OK);
    assert_eq!(deleted.body, json!({"success": true}));
    assert_error(
        &get(&app, "/api/v1/prompts/my-prompt%2Ftest").await,
        404,
        "NOT_FOUND",
    );
    assert_error(
        &call(
            &app,
            Method::DELETE,
            "/api/v1/prompts/my-prompt%2Ftest",
            None,
        )
        .await,
        404,
        "NOT_FOUND",
    );
    assert_error(
        &get(&app, "/api/ui/prompts/my-prompt%2Ftest/versions").await,
        404,
        "NOT_FOUND",
    );
    assert_eq!(
        get(&app, "/api/v1/prompts").await.body["prompts"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

/// A collector whose prompt runs go to `fake`, with the `openai/chat-1` prompt
/// ("Tell me a joke about {{topic}}" on gpt-3.5-turbo) created.
async fn run_setup(fake: &FakeProvider) -> (tempfile::TempDir, AppState, axum::Router) {
    run_setup_with(support::client(fake)).await
}

/// The same, with the collector's LLM client built by the caller.
async fn run_setup_with(llm: tracia::Tracia) -> (tempfile::TempDir, AppState, axum::Router) {
    let (dir, state) = test_state();
    let state = state.with_llm(llm);
    let app = app(state.clone());
    let created = post(
        &app,
        "/api/v1/prompts",
        json!({
            "name": "Joke", "model": "gpt-3.5-turbo",
            "content": [{"role": "user", "content": "Tell me a joke about {{topic}}"}],
        }),
    )
    .await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.body);
    (dir, state, app)
}

const JOKE: &str =
    "Why did Opentelemetry break up with Tracing? Because it couldn't handle the baggage!";

#[tokio::test]
async fn run_renders_calls_the_provider_and_stores_the_span() {
    let fake = FakeProvider::start().await;
    fake.enqueue_fixture("openai/chat-1");
    let (_dir, _state, app) = run_setup(&fake).await;

    let run = post(
        &app,
        "/api/v1/prompts/joke/run",
        json!({
            "variables": {"topic": "opentelemetry"}, "tags": ["onboarding"],
            "userId": "user_123", "sessionId": "s_1",
        }),
    )
    .await;
    assert_eq!(run.status, StatusCode::OK, "{}", run.body);

    // What the provider received is what the recorded request sent.
    let requests = fake.requests().await;
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].path, "/v1/chat/completions");
    assert_eq!(requests[0].body, fixture_request_body("openai/chat-1"));

    let r = &run.body;
    let span_id = r["spanId"].as_str().unwrap();
    let trace_id = r["traceId"].as_str().unwrap();
    assert!(
        span_id.starts_with("sp_") && span_id.len() == 19,
        "{span_id}"
    );
    assert!(trace_id.starts_with("tr_"), "{trace_id}");
    assert_eq!(r["text"], JOKE);
    assert_eq!(r["promptVersion"], 1);
    assert!(r["latencyMs"].is_u64());
    assert_eq!(
        r["usage"],
        json!({"inputTokens": 15, "outputTokens": 19, "totalTokens": 34})
    );
    assert!(r["cost"].as_f64().unwrap() > 0.0);
    assert_eq!(r["finishReason"], "stop");
    assert_eq!(r["toolCalls"], Value::Null);
    assert_eq!(r["structuredOutput"], Value::Null);
    assert_eq!(
        r["messages"],
        json!([
            {"role": "user", "content": "Tell me a joke about opentelemetry"},
            {"role": "assistant", "content": JOKE},
        ])
    );

    let span = get(&app, &format!("/api/v1/spans/{span_id}")).await;
    assert_eq!(span.status, StatusCode::OK);
    for (key, value) in [
        ("traceId", json!(trace_id)),
        ("parentSpanId", Value::Null),
        ("promptSlug", json!("joke")),
        ("promptVersion", json!(1)),
        ("model", json!("gpt-3.5-turbo")),
        ("provider", json!("openai")),
        ("status", json!("SUCCESS")),
        (
            "input",
            json!({"messages": [{"role": "user", "content": "Tell me a joke about opentelemetry"}]}),
        ),
        ("variables", json!({"topic": "opentelemetry"})),
        ("output", json!(JOKE)),
        ("inputTokens", json!(15)),
        ("outputTokens", json!(19)),
        ("totalTokens", json!(34)),
        ("cost", r["cost"].clone()),
        ("tags", json!(["onboarding"])),
        ("userId", json!("user_123")),
        ("sessionId", json!("s_1")),
    ] {
        assert_eq!(span.body[key], value, "{key}");
    }
    let by_prompt = get(&app, "/api/v1/spans?promptSlug=joke").await;
    assert_eq!(by_prompt.body["spans"][0]["spanId"], span_id);
}

#[tokio::test]
async fn run_names_the_missing_variables_and_sends_nothing() {
    let fake = FakeProvider::start().await;
    let (_dir, _state, app) = run_setup(&fake).await;
    post(
        &app,
        "/api/v1/prompts",
        json!({"name": "Mail", "model": "gpt-4o", "content": [
            {"role": "user", "content": "{{greeting}} {{name}}, about {{product}}"}]}),
    )
    .await;
    let run = post(
        &app,
        "/api/v1/prompts/mail/run",
        json!({"variables": {"name": "Ada"}}),
    )
    .await;
    assert_error(&run, 400, "MISSING_VARIABLES");
    assert_eq!(
        run.body["error"]["message"],
        "Missing required variables: greeting, product"
    );
    // No variables at all (the Python SDK then sends `{}`).
    let run = post(&app, "/api/v1/prompts/joke/run", json!({})).await;
    assert_eq!(
        run.body["error"]["message"],
        "Missing required variables: topic"
    );
    assert_error(
        &post(&app, "/api/v1/prompts/nope/run", json!({})).await,
        404,
        "NOT_FOUND",
    );
    assert_eq!(fake.request_count(), 0);
}

#[tokio::test]
async fn run_pins_a_version() {
    let fake = FakeProvider::start().await;
    fake.enqueue_fixture("openai/chat-1");
    let (_dir, _state, app) = run_setup(&fake).await;
    let updated = put(
        &app,
        "/api/v1/prompts/joke",
        json!({"content": [{"role": "user", "content": "Tell me a poem about {{topic}}"}]}),
    )
    .await;
    assert_eq!(updated.body["currentVersion"], 2);

    let run = post(
        &app,
        "/api/v1/prompts/joke/run",
        json!({"variables": {"topic": "opentelemetry"}, "version": 1}),
    )
    .await;
    assert_eq!(run.status, StatusCode::OK, "{}", run.body);
    assert_eq!(run.body["promptVersion"], 1);
    assert_eq!(
        fake.requests().await[0].body,
        fixture_request_body("openai/chat-1")
    );
    let span = get(
        &app,
        &format!("/api/v1/spans/{}", run.body["spanId"].as_str().unwrap()),
    )
    .await;
    assert_eq!(span.body["promptVersion"], 1);

    let missing = post(&app, "/api/v1/prompts/joke/run", json!({"version": 7})).await;
    assert_error(&missing, 404, "NOT_FOUND");
}

#[tokio::test]
async fn run_with_messages_skips_the_template() {
    let fake = FakeProvider::start().await;
    fake.enqueue_fixture("openai/chat-1");
    let (_dir, _state, app) = run_setup(&fake).await;
    let run = post(
        &app,
        "/api/v1/prompts/joke/run",
        json!({"messages": [{"role": "user", "content": "Tell me a joke about opentelemetry"}]}),
    )
    .await;
    assert_eq!(run.status, StatusCode::OK, "{}", run.body);
    assert_eq!(
        fake.requests().await[0].body,
        fixture_request_body("openai/chat-1")
    );
    assert_eq!(run.body["messages"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn run_joins_the_callers_trace() {
    let fake = FakeProvider::start().await;
    fake.enqueue_fixture("openai/chat-1");
    fake.enqueue_fixture("openai/chat-1");
    let (_dir, _state, app) = run_setup(&fake).await;
    let body = json!({"variables": {"topic": "opentelemetry"}});

    let request = Request::post("/api/v1/prompts/joke/run")
        .header(header::CONTENT_TYPE, "application/json")
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .body(Body::from(body.to_string()))
        .unwrap();
    let run = send(&app, request).await;
    assert_eq!(run.status, StatusCode::OK, "{}", run.body);
    assert_eq!(run.body["traceId"], "tr_4bf92f3577b34da6a3ce929d0e0e4736");
    let span_id = run.body["spanId"].as_str().unwrap().to_owned();
    let span = get(&app, &format!("/api/v1/spans/{span_id}")).await;
    assert_eq!(span.body["traceId"], "tr_4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(span.body["parentSpanId"], "sp_00f067aa0ba902b7");
    // The provider request carries the run span's context, in the same trace.
    let requests = fake.requests().await;
    let traceparent = requests[0].header("traceparent").unwrap();
    assert_eq!(
        traceparent,
        format!("00-4bf92f3577b34da6a3ce929d0e0e4736-{}-00", &span_id[3..])
    );

    // A parent alone lends its stored trace.
    let child = post(
        &app,
        "/api/v1/prompts/joke/run",
        json!({"variables": {"topic": "opentelemetry"}, "parentSpanId": span_id}),
    )
    .await;
    assert_eq!(child.status, StatusCode::OK, "{}", child.body);
    assert_eq!(child.body["traceId"], "tr_4bf92f3577b34da6a3ce929d0e0e4736");
    let stored = get(
        &app,
        &format!("/api/v1/spans/{}", child.body["spanId"].as_str().unwrap()),
    )
    .await;
    assert_eq!(stored.body["parentSpanId"], json!(span_id));

    // An unknown parent needs its trace; malformed ids are refused.
    let orphan = post(
        &app,
        "/api/v1/prompts/joke/run",
        json!({"variables": {"topic": "x"}, "parentSpanId": "sp_1111111111111111"}),
    )
    .await;
    assert_error(&orphan, 400, "INVALID_REQUEST");
    let bad = post(
        &app,
        "/api/v1/prompts/joke/run",
        json!({"variables": {"topic": "x"}, "traceId": "tr_zz"}),
    )
    .await;
    assert_error(&bad, 400, "INVALID_REQUEST");
    assert_eq!(fake.request_count(), 2);
}

#[tokio::test]
async fn provider_failures_answer_500_and_store_an_error_span() {
    let fake = FakeProvider::start().await;
    fake.enqueue_openai_error(
        401,
        "Incorrect API key provided: sk-abcdefghijklmnopqrstuvwxyz123456",
        "invalid_request_error",
        Some("invalid_api_key"),
    );
    let (_dir, _state, app) = run_setup(&fake).await;
    let run = post(
        &app,
        "/api/v1/prompts/joke/run",
        json!({"variables": {"topic": "x"}}),
    )
    .await;
    assert_error(&run, 500, "PROVIDER_ERROR");
    let message = run.body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("Incorrect API key") && !message.contains("sk-abc"),
        "{message}"
    );

    let errors = get(&app, "/api/v1/spans?status=ERROR").await;
    let spans = errors.body["spans"].as_array().unwrap();
    assert_eq!(spans.len(), 1);
    assert_eq!(spans[0]["promptSlug"], "joke");
    assert_eq!(spans[0]["totalTokens"], 0);
    let span = get(
        &app,
        &format!("/api/v1/spans/{}", spans[0]["spanId"].as_str().unwrap()),
    )
    .await;
    assert_eq!(span.body["error"], message);
    assert_eq!(span.body["output"], Value::Null);
}

/// A provider error echoing the collector's own key, of no known key shape: the
/// caller's answer and the stored span never carry it.
#[tokio::test]
async fn a_provider_echoing_the_collectors_key_gets_it_nowhere() {
    const KEY: &str = "collectorPlainKey4711xyz";
    let fake = FakeProvider::start().await;
    fake.enqueue_openai_error(
        401,
        &format!("Incorrect API key provided: {KEY}. You can find your API key at https://platform.openai.com/account/api-keys."),
        "invalid_request_error",
        Some("invalid_api_key"),
    );
    let llm = support::client_with(&fake, |b| b.with_api_key(tracia::Provider::OpenAi, KEY));
    let (_dir, _state, app) = run_setup_with(llm).await;
    let run = post(
        &app,
        "/api/v1/prompts/joke/run",
        json!({"variables": {"topic": "x"}}),
    )
    .await;
    assert_error(&run, 500, "PROVIDER_ERROR");
    assert_eq!(
        fake.requests().await[0].header("authorization"),
        Some(format!("Bearer {KEY}").as_str()),
        "the key itself went to the provider"
    );
    let message = run.body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("Incorrect API key provided: [REDACTED]"),
        "{message}"
    );
    let errors = get(&app, "/api/v1/spans?status=ERROR").await;
    let spans = errors.body["spans"].as_array().unwrap();
    assert_eq!(spans.len(), 1);
    let span = get(
        &app,
        &format!("/api/v1/spans/{}", spans[0]["spanId"].as_str().unwrap()),
    )
    .await;
    assert_eq!(span.body["error"], message);
    for text in [
        run.body.to_string(),
        errors.body.to_string(),
        span.body.to_string(),
    ] {
        assert!(!text.contains(KEY), "the key leaked: {text}");
    }
}

/// A run's model override with `../` and a query: the provider sees its model
/// endpoint with the name as one encoded segment, never another path.
#[tokio::test]
async fn a_model_override_cannot_reach_another_provider_path() {
    let fake = FakeProvider::start().await;
    fake.enqueue_fixture("google/generate-content");
    let llm = support::client_with(&fake, |b| {
        b.with_api_key(tracia::Provider::Google, "google-test-key-0123")
            .with_base_url(tracia::Provider::Google, fake.url())
    });
    let (_dir, _state, app) = run_setup_with(llm).await;
    let run = post(
        &app,
        "/api/v1/prompts/joke/run",
        json!({"model": "gemini-2.0-flash/../../../v1beta/files?x=1", "variables": {"topic": "x"}}),
    )
    .await;
    assert_eq!(run.status, StatusCode::OK, "{}", run.body);
    let requests = fake.requests().await;
    assert_eq!(requests.len(), 1);
    assert_eq!(
        (requests[0].path.as_str(), requests[0].query.as_deref()),
        (
            "/v1beta/models/gemini-2.0-flash%2F..%2F..%2F..%2Fv1beta%2Ffiles%3Fx%3D1:generateContent",
            None
        )
    );
}

#[tokio::test]
async fn run_without_a_provider_key_or_model_is_a_client_error() {
    let (_dir, state) = test_state();
    let app = app(state);
    post(&app, "/api/v1/prompts", welcome_prompt()).await;
    let vars = json!({"variables": {"name": "Ada", "product": "Tracia"}});
    let run = post(&app, "/api/v1/prompts/welcome-email/run", vars.clone()).await;
    assert_error(&run, 400, "MISSING_PROVIDER_KEY");
    assert!(
        run.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("OPENAI_API_KEY")
    );

    post(
        &app,
        "/api/v1/prompts",
        json!({"name": "Bare", "content": [{"role": "user", "content": "Hi"}]}),
    )
    .await;
    assert_error(
        &post(&app, "/api/v1/prompts/bare/run", json!({})).await,
        400,
        "INVALID_REQUEST",
    );
}

#[tokio::test]
async fn unknown_api_routes_are_tracia_404s() {
    let (_dir, state) = test_state();
    let app = app(state);
    for uri in [
        "/api/v1",
        "/api/v1/nope",
        "/api/v1/spans/sp_0000000000000001/x",
    ] {
        let answer = get(&app, uri).await;
        assert_error(&answer, 404, "NOT_FOUND");
    }
}

#[tokio::test]
async fn api_keys_guard_every_route() {
    let (_dir, state) = test_state();
    let app = app(state.with_api_keys(ApiKeys::new(["k-one", "k-two"]).unwrap()));
    let with = |uri: &str, auth: Option<&str>| {
        let mut request = Request::get(uri);
        if let Some(auth) = auth {
            request = request.header(header::AUTHORIZATION, auth);
        }
        request.body(Body::empty()).unwrap()
    };

    let missing = send(&app, with("/api/v1/spans", None)).await;
    assert_error(&missing, 401, "UNAUTHORIZED");
    assert_eq!(missing.headers[header::WWW_AUTHENTICATE], "Bearer");
    assert_error(
        &send(&app, with("/api/v1/spans", Some("Bearer k-three"))).await,
        401,
        "UNAUTHORIZED",
    );
    assert_error(
        &send(&app, with("/api/v1/spans", Some("Basic k-one"))).await,
        401,
        "UNAUTHORIZED",
    );
    assert_eq!(
        send(&app, with("/api/v1/spans", Some("Bearer k-one")))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        send(&app, with("/api/v1/prompts", Some("Bearer k-two")))
            .await
            .status,
        StatusCode::OK
    );
    // Unknown paths are refused before they are looked up.
    assert_error(
        &send(&app, with("/api/v1/nope", None)).await,
        401,
        "UNAUTHORIZED",
    );
    let elsewhere = send(&app, with("/nope", None)).await;
    assert_eq!(elsewhere.status, StatusCode::UNAUTHORIZED);
    assert!(elsewhere.body.is_string(), "{}", elsewhere.body);

    // OTLP too, answered in plain text.
    let otlp = |auth: Option<&str>| {
        let mut request =
            Request::post("/v1/traces").header(header::CONTENT_TYPE, "application/json");
        if let Some(auth) = auth {
            request = request.header(header::AUTHORIZATION, auth);
        }
        request
            .body(Body::from(r#"{"resourceSpans": []}"#))
            .unwrap()
    };
    let refused = send(&app, otlp(None)).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert!(
        refused
            .body
            .as_str()
            .unwrap()
            .contains("Authorization: Bearer")
    );
    assert_eq!(
        send(&app, otlp(Some("Bearer k-wrong"))).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        send(&app, otlp(Some("Bearer k-one"))).await.status,
        StatusCode::OK
    );

    // The UI: `?key=` once sets the cookie and drops the key from the address.
    assert_eq!(
        send(&app, with("/", None)).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        send(&app, with("/?key=k-wrong", None)).await.status,
        StatusCode::UNAUTHORIZED
    );
    let login = send(&app, with("/?key=k-one", None)).await;
    assert_eq!(login.status, StatusCode::SEE_OTHER);
    assert_eq!(login.headers[header::LOCATION], "/");
    let cookie = login.headers[header::SET_COOKIE].to_str().unwrap();
    assert_eq!(
        cookie,
        "tracia_key=k-one; Path=/; HttpOnly; SameSite=Strict"
    );
    let page = Request::get("/")
        .header(header::COOKIE, "tracia_key=k-one")
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&app, page).await.status, StatusCode::OK);
    // `//host` must not become a redirect to another site.
    let sneaky = send(&app, with("//evil.example/?key=k-one", None)).await;
    assert_eq!(sneaky.headers[header::LOCATION], "/");

    // Liveness probes need no key.
    assert_eq!(
        send(&app, with("/healthz", None)).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn oversized_json_is_refused_with_413() {
    let (_dir, state) = test_state();
    let app = app(state.clone());
    let mut span = python_span("sp_00f067aa0ba902b7");
    span["output"] = json!("x".repeat(tracia_collector::rest::MAX_API_BODY_BYTES));
    let answer = post(&app, "/api/v1/spans", span).await;
    assert_error(&answer, 413, "INVALID_REQUEST");
    assert!(
        state
            .store
            .get_span("sp_00f067aa0ba902b7")
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test(start_paused = true)]
async fn the_rate_limit_answers_429_with_retry_after() {
    let (_dir, state) = test_state();
    let app = app(state.with_rate_limit(2));
    assert_error(&get(&app, "/api/v1/nope").await, 404, "NOT_FOUND");
    assert_error(&get(&app, "/api/v1/nope").await, 404, "NOT_FOUND");
    let limited = get(&app, "/api/v1/nope").await;
    assert_error(&limited, 429, "RATE_LIMITED");
    assert_eq!(limited.headers[header::RETRY_AFTER], "1");
    let plain = get(&app, "/nope").await;
    assert_eq!(plain.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(plain.body.is_string());
    assert_eq!(get(&app, "/healthz").await.status, StatusCode::OK);

    tokio::time::advance(Duration::from_secs(1)).await;
    assert_error(&get(&app, "/api/v1/nope").await, 404, "NOT_FOUND");
}
