//! Traces across processes and requests: the `propagation_client` and
//! `propagation_server` examples as two real processes on loopback exporting to one
//! OTLP receiver, and a session continued from the headers a response carried.

mod support;

use std::time::Duration;

use support::{FakeProvider, OtlpReceiver, Process, ReceivedSpan};
use tracia::RunLocal;

const WAIT: Duration = Duration::from_secs(20);
const KEY: &str = "sk-test-0123456789abcdefghijklmnop";

fn by_name<'a>(spans: &'a [ReceivedSpan], name: &str) -> Vec<&'a ReceivedSpan> {
    spans.iter().filter(|s| s.name == name).collect()
}

fn parent_of<'a>(spans: &'a [ReceivedSpan], child: &ReceivedSpan) -> &'a ReceivedSpan {
    spans
        .iter()
        .find(|s| s.span_id == child.parent_span_id)
        .unwrap_or_else(|| panic!("no parent for {}", child.name))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_share_one_trace_and_the_session() {
    let (fake, otlp) = (FakeProvider::start().await, OtlpReceiver::start().await);
    fake.enqueue_fixture("openai/chat-1");
    fake.enqueue_fixture("openai/chat-1");
    let env = |service: &str| {
        vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.base_url()),
            ("OTEL_SERVICE_NAME", service.to_owned()),
            ("OPENAI_BASE_URL", fake.base_url()),
            ("OPENAI_API_KEY", KEY.to_owned()),
        ]
    };

    let (server, url) = tokio::task::block_in_place(|| {
        Process::serve(
            "propagation_server",
            &["--port", "0", "--model", "gpt-3.5-turbo"],
            env("service-b"),
        )
    });
    let client = Process::spawn(
        "propagation_client",
        &["--server", &url, "--session", "conv_42", "--user", "user_7"],
        env("service-a"),
    );
    let client = tokio::task::block_in_place(|| client.wait());
    let stdout = client.stdout;
    assert!(client.status.success(), "{stdout}{}", client.stderr);
    let server = tokio::task::block_in_place(|| server.terminate());
    assert!(server.status.success(), "server: {}", server.stderr);

    // A: conversation → 2 × ask; B: per turn POST /chat → handle_turn → chat.
    let spans = otlp.wait_for_spans(9, WAIT).await;
    let [conversation] = by_name(&spans, "conversation")[..] else {
        panic!("one conversation span: {spans:#?}")
    };
    assert!(conversation.is_root());
    assert_eq!(conversation.service_name.as_deref(), Some("service-a"));
    let trace = &conversation.trace_id;
    assert!(
        stdout.contains(&format!("trace_id={trace} session_id=conv_42")),
        "{stdout}"
    );
    assert!(spans.iter().all(|s| &s.trace_id == trace), "one trace id");

    let chats = by_name(&spans, "chat gpt-3.5-turbo");
    assert_eq!(chats.len(), 2);
    let mut asks = Vec::new();
    for chat in chats {
        assert_eq!(chat.service_name.as_deref(), Some("service-b"));
        // The baggage A set carried the conversation into B's LLM calls.
        assert_eq!(chat.attr_str("session.id"), Some("conv_42"));
        assert_eq!(chat.attr_str("user.id"), Some("user_7"));
        let handler = parent_of(&spans, chat);
        assert_eq!(handler.name, "handle_turn");
        let server_span = parent_of(&spans, handler);
        assert_eq!(server_span.name, "POST /chat");
        assert_eq!(server_span.kind, 2, "SERVER");
        assert_eq!(server_span.attr_i64("http.response.status_code"), Some(200));
        let ask = parent_of(&spans, server_span);
        assert_eq!((ask.name.as_str(), ask.kind), ("ask", 3), "CLIENT");
        assert_eq!(ask.service_name.as_deref(), Some("service-a"));
        assert_eq!(ask.parent_span_id, conversation.span_id);
        // B wrote its position (this turn's LLM span) back into the response.
        let position = format!("B's position: 00-{trace}-{}-01", chat.span_id);
        assert!(stdout.contains(&position), "{position} in {stdout}");
        asks.push(ask.span_id.clone());
    }
    asks.dedup();
    assert_eq!(asks.len(), 2, "each turn under its own ask span");
}

/// A caller without tracing (a browser) sends back the headers of the previous reply:
/// the next turn is the child of the previous turn's LLM span, in the same trace, with
/// the same conversation.
#[tokio::test]
async fn a_session_continues_from_the_headers_a_reply_carried() {
    let (fake, otlp) = (FakeProvider::start().await, OtlpReceiver::start().await);
    fake.enqueue_fixture("openai/chat-1");
    fake.enqueue_fixture("openai/chat-1");
    let guard = support::pipeline(Some(&otlp), None);
    let _sub = support::install(&guard);
    let tracia = support::client(&fake);

    let first = tracia.create_session().with_session_id("conv_9");
    let a = first
        .run_local(RunLocal::new("gpt-3.5-turbo").user("hi"))
        .await
        .unwrap();
    let mut reply_headers = http::HeaderMap::new();
    first.write_headers(&mut reply_headers);

    // The next request, handled with no ambient span.
    let next = tracia.session_from_headers(&reply_headers);
    assert_eq!(next.conversation().session_id.as_deref(), Some("conv_9"));
    let b = next
        .run_local(RunLocal::new("gpt-3.5-turbo").user("again"))
        .await
        .unwrap();
    assert_eq!(b.trace_id, a.trace_id);
    guard.flush().await;

    let spans = otlp.wait_for_spans(2, WAIT).await;
    let span_a = spans
        .iter()
        .find(|s| format!("sp_{}", s.span_id) == a.span_id);
    let span_b = spans
        .iter()
        .find(|s| format!("sp_{}", s.span_id) == b.span_id);
    let (span_a, span_b) = (span_a.unwrap(), span_b.unwrap());
    assert_eq!(span_b.parent_span_id, span_a.span_id);
    assert_eq!(span_b.trace_id, span_a.trace_id);
    assert_eq!(span_b.attr_str("session.id"), Some("conv_9"));

    // Hostile headers give a fresh session, never an error.
    let mut hostile = http::HeaderMap::new();
    hostile.insert("traceparent", "00-zz-11-01".parse().unwrap());
    hostile.append("baggage", "session.id=a".parse().unwrap());
    hostile.append("baggage", "session.id=b".parse().unwrap());
    let fresh = tracia.session_from_headers(&hostile);
    assert_eq!(fresh.trace_id(), None);
    assert_eq!(fresh.conversation().session_id, None);
}

/// `TraceContextLayer` and the `Conversation` extractor on an axum router, driven
/// without a socket: the server span continues the caller's trace, LLM calls in the
/// handler take the baggage's session and user, 5xx marks the span, hostile headers
/// give a fresh root.
#[tokio::test]
async fn the_layer_continues_the_callers_trace_without_a_socket() {
    use axum::body::Body;
    use axum::routing::get;
    use tower::ServiceExt as _;
    use tracia::propagation::{Conversation, TraceContextLayer};

    let (fake, otlp) = (FakeProvider::start().await, OtlpReceiver::start().await);
    fake.enqueue_fixture("openai/chat-1");
    let guard = support::pipeline(Some(&otlp), None);
    let _sub = support::install(&guard);
    let tracia = support::client(&fake);
    let router = axum::Router::new()
        .route(
            "/items/{id}",
            get(move |who: Conversation| async move {
                let call = RunLocal::new("gpt-3.5-turbo").user("hi");
                tracia.run_local(call).await.unwrap();
                who.session_id.unwrap_or_default()
            }),
        )
        .route(
            "/boom",
            get(|| async { axum::http::StatusCode::SERVICE_UNAVAILABLE }),
        )
        .layer(TraceContextLayer::new());
    let request = |path: &str, headers: &[(&str, &str)]| {
        let mut r = http::Request::get(path);
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        r.body(Body::empty()).unwrap()
    };
    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    let ok = router
        .clone()
        .oneshot(request(
            "/items/7",
            &[
                ("traceparent", PARENT),
                ("baggage", "session.id=conv_5,user.id=u_5"),
            ],
        ))
        .await
        .unwrap();
    let body = axum::body::to_bytes(ok.into_body(), 1024).await.unwrap();
    assert_eq!(&body[..], b"conv_5", "the extractor reads the baggage");
    let boom = router
        .clone()
        .oneshot(request(
            "/boom",
            &[("traceparent", PARENT), ("traceparent", PARENT)],
        ))
        .await
        .unwrap();
    assert_eq!(boom.status(), 503);
    guard.flush().await;

    let spans = otlp.wait_for_spans(3, WAIT).await;
    let server = spans.iter().find(|s| s.name == "GET /items/{id}").unwrap();
    assert_eq!(server.kind, 2, "SERVER");
    assert_eq!(server.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(server.parent_span_id, "00f067aa0ba902b7");
    assert_eq!(server.attr_str("http.route"), Some("/items/{id}"));
    assert_eq!(server.attr_str("url.path"), Some("/items/7"));
    let chat = spans
        .iter()
        .find(|s| s.name == "chat gpt-3.5-turbo")
        .unwrap();
    assert_eq!(chat.parent_span_id, server.span_id);
    assert_eq!(chat.attr_str("session.id"), Some("conv_5"));
    assert_eq!(chat.attr_str("user.id"), Some("u_5"));

    let boom = spans.iter().find(|s| s.name == "GET /boom").unwrap();
    assert!(boom.is_root(), "repeated traceparent headers are ignored");
    assert_ne!(boom.trace_id, server.trace_id);
    assert!(boom.is_error());
    assert_eq!(boom.attr_i64("http.response.status_code"), Some(503));
}
