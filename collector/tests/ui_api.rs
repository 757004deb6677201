//! The UI's page, assets and JSON endpoints, driven through the router without a socket:
//! spans go in by OTLP/JSON and come out as the UI reads them.

mod ui_support;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use serde_json::{Value, json};
use tower::ServiceExt as _;
use tracia_collector::store::Store;
use tracia_collector::{AppState, app, ui};
use ui_support::{attr, chat_attrs, export, now_ns, span};

const T1: &str = "0000000000000000aaaaaaaaaaaaaaa1";
const T2: &str = "0000000000000000aaaaaaaaaaaaaaa2";
const T3: &str = "0000000000000000aaaaaaaaaaaaaaa3";
const MS: u64 = 1_000_000;

struct Ui {
    app: axum::Router,
    _dir: tempfile::TempDir,
}

impl Ui {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        Self {
            app: app(AppState::new(store)),
            _dir: dir,
        }
    }

    async fn get(&self, uri: &str) -> (StatusCode, header::HeaderMap, String) {
        let response = self
            .app
            .clone()
            .oneshot(Request::get(uri).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let (parts, body) = response.into_parts();
        let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
        (
            parts.status,
            parts.headers,
            String::from_utf8(bytes.to_vec()).unwrap(),
        )
    }

    async fn json(&self, uri: &str) -> Value {
        let (status, _, body) = self.get(uri).await;
        assert_eq!(status, StatusCode::OK, "{uri}: {body}");
        serde_json::from_str(&body).unwrap()
    }

    async fn error(&self, uri: &str, status: StatusCode, code: &str) -> String {
        let (got, _, body) = self.get(uri).await;
        assert_eq!(got, status, "{uri}: {body}");
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["error"]["code"], code, "{uri}: {body}");
        body["error"]["message"].as_str().unwrap().to_owned()
    }

    async fn ingest(&self, body: Value) {
        let request = Request::post("/v1/traces")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string()))
            .unwrap();
        let response = self.app.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }

    /// The trace ids a list answered, in order.
    async fn trace_ids(&self, query: &str) -> Vec<String> {
        let list = self.json(&format!("/api/ui/traces{query}")).await;
        list["traces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["traceId"].as_str().unwrap().to_owned())
            .collect()
    }
}

fn tr(hex: &str) -> String {
    format!("tr_{}", &hex[16..])
}

/// A whole-millisecond instant as the API writes it.
fn iso(unix_nano: u64) -> String {
    let secs = unix_nano / 1_000_000_000;
    let millis = unix_nano % 1_000_000_000 / MS;
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Howard Hinnant's civil_from_days: a second implementation, to check the API's.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Three traces a minute apart: T1 (an app root and a gpt-4o call, session s1, tag a),
/// T2 (a failed gpt-4o-mini call, session s2, tag b) and T3 (a Claude call, session s1).
async fn three_traces(ui: &Ui) -> [u64; 3] {
    // Whole seconds, so that the ISO texts below are exact.
    let t0 = (now_ns() / 1_000_000_000 - 600) * 1_000_000_000;
    let starts = [t0, t0 + 60_000 * MS, t0 + 120_000 * MS];
    let with = |mut attrs: Vec<Value>, extra: Vec<Value>| {
        attrs.extend(extra);
        attrs
    };
    ui.ingest(export(
        "checkout",
        vec![
            span(
                T1,
                "00000000000000a1",
                None,
                "job",
                (starts[0], starts[0] + 900 * MS),
                vec![],
                None,
            ),
            span(
                T1,
                "00000000000000b1",
                Some("00000000000000a1"),
                "chat gpt-4o",
                (starts[0] + 100 * MS, starts[0] + 800 * MS),
                with(
                    chat_attrs("openai", "gpt-4o", 100, 20),
                    vec![
                        attr("session.id", json!("s1")),
                        attr("user.id", json!("u1")),
                        attr("tracia.tags", json!(["a"])),
                        attr(
                            "gen_ai.input.messages",
                            json!(r#"[{"role":"user","parts":[{"type":"text","content":"Hi"}]}]"#),
                        ),
                    ],
                ),
                None,
            ),
        ],
    ))
    .await;
    ui.ingest(export(
        "checkout",
        vec![span(
            T2,
            "00000000000000b2",
            None,
            "chat gpt-4o-mini",
            (starts[1], starts[1] + 300 * MS),
            with(
                chat_attrs("openai", "gpt-4o-mini", 7, 0),
                vec![
                    attr("session.id", json!("s2")),
                    attr("user.id", json!("u2")),
                    attr("tracia.tags", json!(["b"])),
                ],
            ),
            Some("rate limited"),
        )],
    ))
    .await;
    ui.ingest(export(
        "agent",
        vec![span(
            T3,
            "00000000000000b3",
            None,
            "chat claude-sonnet-4-5",
            (starts[2], starts[2] + 2_000 * MS),
            with(
                chat_attrs("anthropic", "claude-sonnet-4-5", 50, 10),
                vec![attr("session.id", json!("s1"))],
            ),
            None,
        )],
    ))
    .await;
    starts
}

#[tokio::test]
async fn page_and_assets_have_their_types_and_a_strict_csp() {
    let ui = Ui::new();
    for (path, content_type) in [
        ("/", "text/html; charset=utf-8"),
        ("/ui/app.js", "text/javascript; charset=utf-8"),
        ("/ui/style.css", "text/css; charset=utf-8"),
    ] {
        let (status, headers, _) = ui.get(path).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert_eq!(headers[header::CONTENT_TYPE], content_type, "{path}");
        assert_eq!(
            headers[header::CONTENT_SECURITY_POLICY],
            ui::CONTENT_SECURITY_POLICY
        );
        assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    }
    let csp = ui::CONTENT_SECURITY_POLICY;
    assert!(
        csp.contains("default-src 'none'") && csp.contains("script-src 'self';"),
        "{csp}"
    );
    assert!(!csp.contains("unsafe"), "{csp}");

    // Nothing inline (the CSP would block it) and nothing from elsewhere (works offline).
    let (_, _, html) = ui.get("/").await;
    assert!(
        html.contains(r#"<script src="/ui/app.js" defer></script>"#),
        "{html}"
    );
    assert_eq!(html.matches("<script").count(), 1, "{html}");
    assert!(
        !html.contains("<style") && !html.contains(" style=") && !html.contains(" on"),
        "{html}"
    );
    let (_, _, script) = ui.get("/ui/app.js").await;
    for (name, text) in [("index.html", &html), ("app.js", &script)] {
        assert!(
            !text.contains("http://") && !text.contains("https://"),
            "{name} loads nothing from elsewhere"
        );
    }
    // Data only ever goes in as text.
    for sink in [
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
    ] {
        assert!(!script.contains(sink), "app.js uses {sink}");
    }
}

#[tokio::test]
async fn traces_are_summarized_newest_first() {
    let ui = Ui::new();
    let starts = three_traces(&ui).await;
    assert_eq!(ui.trace_ids("").await, [tr(T3), tr(T2), tr(T1)]);

    let list = ui.json("/api/ui/traces").await;
    assert_eq!(list["nextCursor"], Value::Null);
    let t1 = &list["traces"][2];
    assert_eq!(t1["traceId"], tr(T1));
    assert_eq!(t1["rootName"], "job");
    assert_eq!(t1["serviceName"], "checkout");
    assert_eq!(t1["startedAt"], iso(starts[0]));
    assert_eq!(t1["durationMs"], 900);
    assert_eq!(t1["spanCount"], 2);
    assert_eq!(t1["llmCount"], 1);
    assert_eq!(t1["errorCount"], 0);
    assert_eq!(t1["models"], json!(["gpt-4o"]));
    assert_eq!(t1["inputTokens"], 100);
    assert_eq!(t1["outputTokens"], 20);
    let usage = tracia::Usage {
        input_tokens: 100,
        output_tokens: 20,
        total_tokens: 120,
        ..Default::default()
    };
    assert_eq!(t1["costUsd"].as_f64(), tracia::cost_usd("gpt-4o", &usage));
    assert!(t1["costUsd"].as_f64().unwrap() > 0.0);
    assert_eq!(t1["sessionId"], "s1");
    assert_eq!(t1["userId"], "u1");
    assert_eq!(t1["tags"], json!(["a"]));

    let t2 = &list["traces"][1];
    assert_eq!(t2["rootName"], "chat gpt-4o-mini");
    assert_eq!(t2["errorCount"], 1);
    assert_eq!(t2["tags"], json!(["b"]));
    assert_eq!(list["traces"][0]["tags"], json!([]));
}

#[tokio::test]
async fn trace_filters_and_pages() {
    let ui = Ui::new();
    let starts = three_traces(&ui).await;
    for (query, expected) in [
        ("?model=gpt-4o", vec![tr(T1)]),
        ("?status=ERROR", vec![tr(T2)]),
        ("?status=success", vec![tr(T3), tr(T1)]),
        ("?session=s1", vec![tr(T3), tr(T1)]),
        ("?user=u2", vec![tr(T2)]),
        ("?tag=a", vec![tr(T1)]),
        ("?model=&session=+&tag=", vec![tr(T3), tr(T2), tr(T1)]),
        (&format!("?since={}", iso(starts[1])), vec![tr(T3), tr(T2)]),
        (&format!("?until={}", iso(starts[1])), vec![tr(T2), tr(T1)]),
        ("?model=gpt-4o&status=ERROR", vec![]),
    ] {
        assert_eq!(ui.trace_ids(query).await, expected, "{query}");
    }

    let first = ui.json("/api/ui/traces?limit=2").await;
    assert_eq!(first["traces"].as_array().unwrap().len(), 2);
    let cursor = first["nextCursor"].as_str().expect("a next page");
    let rest = ui.trace_ids(&format!("?limit=2&cursor={cursor}")).await;
    assert_eq!(rest, [tr(T1)]);
    let last = ui
        .json(&format!("/api/ui/traces?limit=2&cursor={cursor}"))
        .await;
    assert_eq!(last["nextCursor"], Value::Null);

    for (query, needle) in [
        ("?status=MAYBE", "status"),
        ("?since=yesterday", "since"),
        ("?until=2026-13-01", "until"),
        ("?limit=0", "limit"),
        ("?limit=many", "limit"),
        ("?cursor=garbage", "cursor"),
    ] {
        let message = ui
            .error(
                &format!("/api/ui/traces{query}"),
                StatusCode::BAD_REQUEST,
                "INVALID_REQUEST",
            )
            .await;
        assert!(message.contains(needle), "{query}: {message}");
    }
}

#[tokio::test]
async fn a_trace_is_its_spans_in_camel_case() {
    let ui = Ui::new();
    let starts = three_traces(&ui).await;
    let trace = ui.json(&format!("/api/ui/traces/{}", tr(T1))).await;
    assert_eq!(trace["traceId"], tr(T1));
    let spans = trace["spans"].as_array().unwrap();
    assert_eq!(spans.len(), 2);
    let (root, chat) = (&spans[0], &spans[1]);
    assert_eq!(root["spanId"], "sp_00000000000000a1");
    assert_eq!(root["parentSpanId"], Value::Null);
    assert_eq!(root["kind"], "APP");
    assert_eq!(root["serviceName"], "checkout");
    assert_eq!(
        root["startUnixNano"].as_u64(),
        Some(starts[0]),
        "a JSON number"
    );
    assert_eq!(root["endUnixNano"].as_u64(), Some(starts[0] + 900 * MS));
    assert_eq!(chat["parentSpanId"], "sp_00000000000000a1");
    assert_eq!(chat["kind"], "LLM");
    assert_eq!(chat["status"], "SUCCESS");
    assert_eq!(chat["provider"], "openai");
    assert_eq!(chat["model"], "gpt-4o");
    assert_eq!(chat["inputTokens"], 100);
    assert_eq!(chat["outputTokens"], 20);
    assert_eq!(chat["totalTokens"], 120);
    assert!(chat["costUsd"].as_f64().unwrap() > 0.0);
    assert_eq!(chat["sessionId"], "s1");
    assert_eq!(chat["userId"], "u1");
    assert_eq!(chat["tags"], json!(["a"]));
    assert_eq!(chat["input"]["messages"][0]["content"], "Hi");
    assert_eq!(chat["attributes"]["gen_ai.request.model"], "gpt-4o");
    for key in [
        "promptSlug",
        "promptVersion",
        "variables",
        "tools",
        "toolCalls",
        "maxOutputTokens",
    ] {
        assert!(chat.get(key).is_some(), "{key} is serialized");
    }

    let failed = ui.json(&format!("/api/ui/traces/{}", tr(T2))).await;
    assert_eq!(failed["spans"][0]["status"], "ERROR");
    assert_eq!(failed["spans"][0]["error"], "rate limited");

    let message = ui
        .error(
            "/api/ui/traces/tr_ffffffffffffffff",
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
        )
        .await;
    assert_eq!(message, "Trace not found: tr_ffffffffffffffff");
}

#[tokio::test]
async fn sessions_list_their_traces() {
    let ui = Ui::new();
    let starts = three_traces(&ui).await;
    let list = ui.json("/api/ui/sessions").await;
    assert_eq!(list["nextCursor"], Value::Null);
    let sessions = list["sessions"].as_array().unwrap();
    let ids: Vec<_> = sessions.iter().map(|s| s["sessionId"].clone()).collect();
    assert_eq!(ids, ["s1", "s2"], "most recently active first");
    let s1 = &sessions[0];
    assert_eq!(s1["traceCount"], 2);
    assert_eq!(s1["spanCount"], 2);
    assert_eq!(s1["userId"], "u1");
    assert_eq!(s1["inputTokens"], 150);
    assert_eq!(s1["outputTokens"], 30);
    assert_eq!(s1["firstSeen"], iso(starts[0] + 100 * MS));
    assert_eq!(s1["lastSeen"], iso(starts[2] + 2_000 * MS));

    let page = ui.json("/api/ui/sessions?limit=1").await;
    let cursor = page["nextCursor"].as_str().expect("a next page");
    let next = ui
        .json(&format!("/api/ui/sessions?limit=1&cursor={cursor}"))
        .await;
    assert_eq!(next["sessions"][0]["sessionId"], "s2");
    assert_eq!(next["nextCursor"], Value::Null);

    let session = ui.json("/api/ui/sessions/s1").await;
    assert_eq!(session["sessionId"], "s1");
    let traces: Vec<_> = session["traces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["traceId"].clone())
        .collect();
    assert_eq!(traces, [tr(T3), tr(T1)]);
    assert_eq!(session["traces"][1]["rootName"], "job");

    let message = ui
        .error(
            "/api/ui/sessions/nobody",
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
        )
        .await;
    assert_eq!(message, "Session not found: nobody");
    ui.error(
        "/api/ui/sessions?cursor=x",
        StatusCode::BAD_REQUEST,
        "INVALID_REQUEST",
    )
    .await;
}
