//! What a web page could make a browser send is refused before anything runs (forged
//! writes from other sites and other loopback ports, DNS rebinding reads), and keyless
//! clients never spend keyed ones' rate limit: driven through the router without a
//! socket, with the headers browsers send.

mod common;
mod ui_support;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use serde_json::{Value, json};
use tower::ServiceExt as _;
use tracia_collector::admission::Admission;
use tracia_collector::security::ApiKeys;
use tracia_collector::{AppState, app};

const SERVED: &str = "127.0.0.1:4318";
const KEY: &str = "k-admission-0123456";

fn served(state: AppState, allowed: &[&str]) -> axum::Router {
    let admission = Admission::new(allowed)
        .unwrap()
        .served_at(SERVED.parse().unwrap());
    app(state.with_admission(admission))
}

/// A request to the collector at `host`, with `headers`, and `body` if any.
fn request(
    method: Method,
    path: &str,
    host: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Request<Body> {
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, host);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(Body::from(body.to_owned())).unwrap()
}

async fn send(app: &axum::Router, request: Request<Body>) -> (StatusCode, Value) {
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = common::body_bytes(response).await;
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, body)
}

/// Asserts a 403 `FORBIDDEN` whose message names `what`.
fn assert_forbidden((status, body): &(StatusCode, Value), what: &str) {
    assert_eq!(*status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["code"], "FORBIDDEN", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains(what), "{what:?} not in {message:?}");
}

fn prompt() -> String {
    json!({"name": "Forged", "model": "gpt-4o", "content": [{"role": "user", "content": "hi"}]})
        .to_string()
}

/// A chat span in OTLP/JSON, as a page would forge it.
fn otlp_json() -> String {
    let now = ui_support::now_ns();
    let span = ui_support::span(
        &common::hex(&common::TRACE_ID),
        &common::hex(&common::SPAN_ID),
        None,
        "chat gpt-4o",
        (now, now + 1_000_000),
        ui_support::chat_attrs("openai", "gpt-4o", 10, 5),
        None,
    );
    ui_support::export("forged", vec![span]).to_string()
}

/// What a forged request tries: a name, method, path, headers, body, and what its
/// refusal must name.
type Forgery = (
    &'static str,
    Method,
    &'static str,
    Vec<(&'static str, &'static str)>,
    String,
    &'static str,
);

#[tokio::test]
async fn forged_writes_are_refused_and_change_nothing() {
    let (_dir, state) = common::test_state();
    let app = served(state.clone(), &[]);
    let host = "127.0.0.1:4318";
    let json_type = ("content-type", "application/json");
    let cases: Vec<Forgery> = vec![
        // What a page can send without a CORS preflight: a text/plain body.
        (
            "text/plain prompt",
            Method::POST,
            "/api/v1/prompts",
            vec![("content-type", "text/plain")],
            prompt(),
            "Content-Type",
        ),
        (
            "form run",
            Method::POST,
            "/api/v1/prompts/forged/run",
            vec![("content-type", "application/x-www-form-urlencoded")],
            "a=b".into(),
            "Content-Type",
        ),
        (
            "text/plain span",
            Method::POST,
            "/api/v1/spans",
            vec![("content-type", "text/plain")],
            "{}".into(),
            "Content-Type",
        ),
        (
            "no type",
            Method::POST,
            "/api/v1/prompts",
            vec![],
            prompt(),
            "Content-Type",
        ),
        // Browsers that send the right type still say where the request comes from.
        (
            "other loopback port",
            Method::POST,
            "/api/v1/prompts",
            vec![
                json_type,
                ("sec-fetch-site", "same-site"),
                ("origin", "http://127.0.0.1:8000"),
            ],
            prompt(),
            "Sec-Fetch-Site",
        ),
        (
            "other site",
            Method::POST,
            "/api/v1/prompts",
            vec![json_type, ("sec-fetch-site", "cross-site")],
            prompt(),
            "Sec-Fetch-Site",
        ),
        (
            "other origin",
            Method::POST,
            "/api/v1/prompts",
            vec![json_type, ("origin", "http://127.0.0.1:8000")],
            prompt(),
            "Origin",
        ),
        (
            "opaque origin",
            Method::POST,
            "/api/v1/prompts",
            vec![json_type, ("origin", "null")],
            prompt(),
            "Origin",
        ),
        (
            "cross-site OTLP",
            Method::POST,
            "/v1/traces",
            vec![json_type, ("sec-fetch-site", "cross-site")],
            otlp_json(),
            "Sec-Fetch-Site",
        ),
        (
            "other-origin OTLP",
            Method::POST,
            "/v1/traces",
            vec![json_type, ("origin", "http://evil.example")],
            otlp_json(),
            "Origin",
        ),
    ];
    for (what, method, path, headers, body, named) in cases {
        let answer = send(&app, request(method, path, host, &headers, &body)).await;
        assert_eq!(answer.0, StatusCode::FORBIDDEN, "{what}");
        assert_forbidden(&answer, named);
    }
    assert!(common::stored(&state).await.is_empty(), "no span stored");
    assert!(common::list_spans(&app, "").await.is_empty());
    let (status, prompts) =
        send(&app, request(Method::GET, "/api/v1/prompts", host, &[], "")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(prompts["prompts"], json!([]), "no prompt created");

    // The same requests from the collector's own page, or from an SDK, pass.
    let own = [
        json_type,
        ("sec-fetch-site", "same-origin"),
        ("origin", "http://127.0.0.1:4318"),
    ];
    let (status, body) = send(
        &app,
        request(Method::POST, "/api/v1/prompts", host, &own, &prompt()),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = send(
        &app,
        request(Method::POST, "/v1/traces", host, &[json_type], &otlp_json()),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(common::stored(&state).await.len(), 1);

    // A delete needs no body, but not from another site.
    let cross = [("sec-fetch-site", "same-site")];
    let answer = send(
        &app,
        request(Method::DELETE, "/api/v1/prompts/forged", host, &cross, ""),
    )
    .await;
    assert_forbidden(&answer, "Sec-Fetch-Site");
    let (status, _) = send(
        &app,
        request(Method::GET, "/api/v1/prompts/forged", host, &[], ""),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "still there");
    let (status, body) = send(
        &app,
        request(Method::DELETE, "/api/v1/prompts/forged", host, &[], ""),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn the_ui_cookie_does_not_carry_a_forged_write() {
    let (_dir, state) = common::test_state();
    let app = served(state.with_api_keys(ApiKeys::new([KEY]).unwrap()), &[]);
    let host = "localhost:4318";
    // The cookie visiting /?key= sets is SameSite=Strict...
    let (status, _) = send(
        &app,
        request(Method::GET, &format!("/?key={KEY}"), host, &[], ""),
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let login = app
        .clone()
        .oneshot(request(Method::GET, &format!("/?key={KEY}"), host, &[], ""))
        .await
        .unwrap();
    let cookie = login.headers()[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        cookie.contains("SameSite=Strict") && cookie.contains("HttpOnly"),
        "{cookie}"
    );
    // ...but another loopback port is the same site, so the browser sends it along.
    let cookie = format!("tracia_key={KEY}");
    let forged = [
        ("content-type", "text/plain"),
        ("cookie", cookie.as_str()),
        ("sec-fetch-site", "same-site"),
        ("origin", "http://localhost:8000"),
    ];
    let answer = send(
        &app,
        request(Method::POST, "/api/v1/prompts", host, &forged, &prompt()),
    )
    .await;
    assert_forbidden(&answer, "Sec-Fetch-Site");
    let bearer = format!("Bearer {KEY}");
    let (status, prompts) = send(
        &app,
        request(
            Method::GET,
            "/api/v1/prompts",
            host,
            &[("authorization", &bearer)],
            "",
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(prompts["prompts"], json!([]), "no prompt created");
}

#[tokio::test]
async fn a_rebinding_host_reads_nothing() {
    let (_dir, state) = common::test_state();
    let app = served(state.clone(), &["traces.internal"]);
    let body = otlp_json();
    let json_type = [("content-type", "application/json")];
    for host in [
        "evil.example:4318",
        "evil.example",
        "localhost:4319",
        "traces.internal.evil.example",
    ] {
        for path in [
            "/",
            "/api/v1/spans",
            "/api/v1/prompts",
            "/api/ui/traces",
            "/ui/app.js",
        ] {
            let answer = send(&app, request(Method::GET, path, host, &[], "")).await;
            assert_forbidden(&answer, "Host");
        }
        let answer = send(
            &app,
            request(Method::POST, "/v1/traces", host, &json_type, &body),
        )
        .await;
        assert_forbidden(&answer, host);
    }
    assert!(common::stored(&state).await.is_empty(), "nothing stored");
    // Probes may dial any address.
    let (status, _) = send(
        &app,
        request(Method::GET, "/healthz", "10.1.2.3:4318", &[], ""),
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    for host in [
        "localhost:4318",
        "127.0.0.1:4318",
        "[::1]:4318",
        "localhost",
        "traces.internal",
        "traces.internal:443",
    ] {
        let (status, body) = send(&app, request(Method::GET, "/api/v1/spans", host, &[], "")).await;
        assert_eq!(status, StatusCode::OK, "{host}: {body}");
        let (status, _) = send(&app, request(Method::GET, "/", host, &[], "")).await;
        assert_eq!(status, StatusCode::OK, "{host}");
    }
    let (status, _) = send(
        &app,
        request(
            Method::POST,
            "/v1/traces",
            "localhost:4318",
            &json_type,
            &body,
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(common::stored(&state).await.len(), 1);
}

#[tokio::test]
async fn a_keyless_flood_does_not_spend_the_keyed_budget() {
    let (_dir, state) = common::test_state();
    let state = state
        .with_api_keys(ApiKeys::new([KEY]).unwrap())
        .with_rate_limit(20);
    let app = served(state, &[]);
    let host = "127.0.0.1:4318";
    let mut refused = Vec::new();
    for _ in 0..60 {
        let (status, _) = send(&app, request(Method::GET, "/api/ui/status", host, &[], "")).await;
        refused.push(status.as_u16());
    }
    assert!(
        refused.iter().all(|s| [401, 429].contains(s)),
        "{refused:?}"
    );
    assert!(
        refused.contains(&429),
        "keyless failures have a budget: {refused:?}"
    );
    // A full keyed burst right after: none of it was spent by the flood.
    let bearer = format!("Bearer {KEY}");
    for i in 0..20 {
        let (status, body) = send(
            &app,
            request(
                Method::GET,
                "/api/ui/status",
                host,
                &[("authorization", &bearer)],
                "",
            ),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "keyed request {i}: {body}");
    }
}
