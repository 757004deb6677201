use serde_json::json;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::task::Poll;

use super::queries::{FEW_CANDIDATES, Select, sessions_select, spans_select, traces_select};
use super::retention::PRUNE_CHUNK;
use super::spans::{body_of, insert_span};
use super::sqlite::open_reader;
use super::*;
use crate::model::{SpanKind, SpanRecord};
use rusqlite::Connection;
use serde_json::Map;
use tokio::sync::oneshot;

fn open() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    (dir, store)
}

#[test]
fn body_is_the_json_object_it_always_was() {
    let mut attributes = Map::new();
    attributes.insert("z.last".into(), json!(1));
    attributes.insert("a.first".into(), json!({"nested": [1.5, null, "x"]}));
    let full = SpanRecord {
        input: Some(json!([{"role": "user", "content": "hi \"you\""}])),
        output: Some("answer\n".into()),
        variables: Some(json!({"name": "Ada"})),
        tools: Some(json!([{"name": "search"}])),
        tool_calls: Some(json!([{"id": "c1"}])),
        temperature: Some(0.2),
        top_p: Some(f64::NAN),
        max_output_tokens: Some(64),
        attributes,
        ..SpanRecord::app("sp_1", "x")
    };
    for r in [full, SpanRecord::app("sp_2", "y")] {
        let before = json!({
            "input": r.input, "output": r.output, "variables": r.variables, "tools": r.tools,
            "toolCalls": r.tool_calls, "temperature": r.temperature, "topP": r.top_p,
            "maxOutputTokens": r.max_output_tokens, "attributes": r.attributes,
        })
        .to_string();
        assert_eq!(body_of(&r), before);
    }
}

/// An application span starting at `start` and lasting 10 ns.
fn span(id: &str, trace: Option<&str>, parent: Option<&str>, start: i64) -> SpanRecord {
    SpanRecord {
        trace_id: trace.map(Into::into),
        parent_span_id: parent.map(Into::into),
        start_unix_nano: start,
        end_unix_nano: start + 10,
        ..SpanRecord::app(id, format!("op {id}"))
    }
}

/// An LLM span of `model` with token counts and a cost.
fn llm(span: SpanRecord, model: &str, tokens: (i64, i64), cost: Option<f64>) -> SpanRecord {
    SpanRecord {
        kind: SpanKind::Llm,
        name: format!("chat {model}"),
        provider: Some("openai".into()),
        model: Some(model.into()),
        input_tokens: tokens.0,
        output_tokens: tokens.1,
        total_tokens: tokens.0 + tokens.1,
        cost_usd: cost,
        ..span
    }
}

fn in_session(span: SpanRecord, session: &str, user: Option<&str>) -> SpanRecord {
    SpanRecord {
        session_id: Some(session.into()),
        user_id: user.map(Into::into),
        ..span
    }
}

fn ids(spans: &[SpanRecord]) -> Vec<&str> {
    spans.iter().map(|s| s.span_id.as_str()).collect()
}

async fn list(store: &Store, query: SpanQuery) -> Vec<String> {
    let page = store.list_spans(query).await.unwrap();
    assert!(page.next_cursor.is_none(), "one page expected");
    page.items.into_iter().map(|s| s.span_id).collect()
}

async fn summary(store: &Store, trace: &str) -> TraceSummary {
    store.trace_summary(trace).await.unwrap().unwrap()
}

async fn session(store: &Store, id: &str) -> Option<SessionSummary> {
    let page = store.sessions(Some(MAX_LIMIT), None).await.unwrap();
    page.items.into_iter().find(|s| s.session_id == id)
}

#[tokio::test]
async fn every_field_round_trips() {
    let (_dir, store) = open();
    let mut attributes = Map::new();
    attributes.insert("http.route".into(), json!("/chat"));
    attributes.insert("otel.events".into(), json!([{"name": "retry"}]));
    let record = SpanRecord {
        service_name: Some("api".into()),
        status: SpanStatus::Error,
        error: Some("rate limited".into()),
        tags: vec!["prod".into(), "beta".into()],
        prompt_slug: Some("welcome".into()),
        prompt_version: Some(3),
        input: Some(json!({"messages": [{"role": "user", "content": "hi"}]})),
        output: Some("hello".into()),
        variables: Some(json!({"name": "Ada"})),
        tools: Some(json!([{"name": "search"}])),
        tool_calls: Some(json!([{"id": "call_1", "name": "search"}])),
        temperature: Some(0.2),
        top_p: Some(0.9),
        max_output_tokens: Some(256),
        attributes,
        ..in_session(
            llm(
                span("sp_1", Some("tr_1"), Some("sp_0"), 5),
                "gpt-4o",
                (10, 5),
                Some(0.5),
            ),
            "s1",
            Some("u1"),
        )
    };
    store.insert(vec![record.clone()]).await.unwrap();
    assert_eq!(store.get_span("sp_1").await.unwrap(), Some(record.clone()));
    assert_eq!(store.trace("tr_1").await.unwrap(), vec![record]);
    assert_eq!(store.get_span("sp_nope").await.unwrap(), None);
}

#[tokio::test]
async fn a_resent_span_is_stored_once() {
    let (_dir, store) = open();
    let first = SpanRecord {
        tags: vec!["a".into(), "a".into()],
        ..in_session(
            llm(
                span("sp_1", Some("tr_1"), None, 1),
                "gpt-4o",
                (10, 5),
                Some(1.0),
            ),
            "s1",
            None,
        )
    };
    // Twice in one export, then again (changed) as an exporter retry would.
    store
        .insert(vec![first.clone(), first.clone()])
        .await
        .unwrap();
    let resent = SpanRecord {
        name: "renamed".into(),
        input_tokens: 99,
        ..first.clone()
    };
    store.insert(vec![resent]).await.unwrap();

    let tagged = SpanQuery {
        tags: vec!["a".into()],
        ..SpanQuery::default()
    };
    assert_eq!(list(&store, tagged).await, ["sp_1"]);
    assert_eq!(store.get_span("sp_1").await.unwrap(), Some(first));
    let trace = summary(&store, "tr_1").await;
    assert_eq!((trace.span_count, trace.llm_count), (1, 1));
    assert_eq!((trace.input_tokens, trace.cost_usd), (10, Some(1.0)));
    let s1 = session(&store, "s1").await.unwrap();
    assert_eq!((s1.span_count, s1.trace_count, s1.input_tokens), (1, 1, 10));
}

#[tokio::test]
async fn trace_aggregates_when_the_root_arrives_last() {
    let (_dir, store) = open();
    let worker = |s: SpanRecord| SpanRecord {
        service_name: Some("worker".into()),
        ..s
    };
    let child1 = SpanRecord {
        end_unix_nano: 260,
        ..in_session(
            worker(llm(
                span("sp_c1", Some("tr_1"), Some("sp_root"), 200),
                "gpt-4o",
                (10, 5),
                Some(0.25),
            )),
            "s1",
            Some("u1"),
        )
    };
    let child2 = SpanRecord {
        status: SpanStatus::Error,
        end_unix_nano: 300,
        ..in_session(
            worker(llm(
                span("sp_c2", Some("tr_1"), Some("sp_root"), 150),
                "claude-x",
                (3, 2),
                None,
            )),
            "s1",
            Some("u2"),
        )
    };
    store.insert(vec![child1]).await.unwrap();
    store.insert(vec![child2]).await.unwrap();
    // Without its root, a trace is named after its earliest span.
    let trace = summary(&store, "tr_1").await;
    assert_eq!(trace.root_name.as_deref(), Some("chat claude-x"));
    assert_eq!(trace.service_name.as_deref(), Some("worker"));

    let root = SpanRecord {
        name: "handle".into(),
        service_name: Some("api".into()),
        end_unix_nano: 400,
        ..span("sp_root", Some("tr_1"), None, 100)
    };
    store.insert(vec![root]).await.unwrap();
    // A late span starting even earlier (clock skew) does not rename the trace.
    let early = llm(
        span("sp_c3", Some("tr_1"), Some("sp_root"), 50),
        "gpt-4o",
        (1, 1),
        Some(0.5),
    );
    store.insert(vec![early]).await.unwrap();

    assert_eq!(
        summary(&store, "tr_1").await,
        TraceSummary {
            trace_id: "tr_1".into(),
            root_name: Some("handle".into()),
            service_name: Some("api".into()),
            start_unix_nano: 50,
            end_unix_nano: 400,
            span_count: 4,
            llm_count: 3,
            error_count: 1,
            models: vec!["gpt-4o".into(), "claude-x".into()],
            input_tokens: 14,
            output_tokens: 8,
            cost_usd: Some(0.75),
            session_id: Some("s1".into()),
            user_id: Some("u1".into()),
        }
    );
    assert_eq!(
        ids(&store.trace("tr_1").await.unwrap()),
        ["sp_c3", "sp_root", "sp_c2", "sp_c1"]
    );

    // A trace where nothing is priced has no cost (rather than 0).
    store
        .insert(vec![llm(
            span("sp_u", Some("tr_2"), None, 1),
            "m",
            (1, 1),
            None,
        )])
        .await
        .unwrap();
    assert_eq!(summary(&store, "tr_2").await.cost_usd, None);
    assert_eq!(store.trace_summary("tr_nope").await.unwrap(), None);
}

#[tokio::test]
async fn sessions_count_traces_spans_tokens_and_cost() {
    let (_dir, store) = open();
    let s1 = |s: SpanRecord| in_session(s, "s1", Some("u1"));
    store
        .insert(vec![
            s1(llm(
                span("sp_a1", Some("tr_a"), None, 100),
                "m",
                (10, 1),
                Some(0.5),
            )),
            s1(llm(
                span("sp_a2", Some("tr_a"), Some("sp_a1"), 110),
                "m",
                (5, 1),
                None,
            )),
            s1(llm(
                span("sp_b1", Some("tr_b"), None, 300),
                "m",
                (1, 1),
                Some(0.25),
            )),
            // A REST span sent without a trace.
            s1(span("sp_x", None, None, 50)),
        ])
        .await
        .unwrap();
    store
        .insert(vec![in_session(
            span("sp_c", Some("tr_c"), None, 500),
            "s2",
            None,
        )])
        .await
        .unwrap();

    let first = store.sessions(Some(1), None).await.unwrap();
    assert_eq!(first.items.len(), 1);
    assert_eq!(
        first.items[0].session_id, "s2",
        "most recently active first"
    );
    assert_eq!(first.items[0].cost_usd, None);
    let second = store.sessions(Some(1), first.next_cursor).await.unwrap();
    assert_eq!(second.next_cursor, None);
    assert_eq!(
        second.items,
        [SessionSummary {
            session_id: "s1".into(),
            trace_count: 2,
            span_count: 4,
            user_id: Some("u1".into()),
            input_tokens: 16,
            output_tokens: 3,
            cost_usd: Some(0.75),
            first_unix_nano: 50,
            last_unix_nano: 310,
        }]
    );
    let traces = store
        .traces(TraceQuery {
            session_id: Some("s1".into()),
            ..TraceQuery::default()
        })
        .await
        .unwrap();
    let traces: Vec<_> = traces.items.iter().map(|t| t.trace_id.as_str()).collect();
    assert_eq!(traces, ["tr_b", "tr_a"]);
}

#[tokio::test]
async fn every_span_filter() {
    let (_dir, store) = open();
    let tagged = |s: SpanRecord, tags: &[&str]| SpanRecord {
        tags: tags.iter().map(|t| t.to_string()).collect(),
        ..s
    };
    let a = SpanRecord {
        prompt_slug: Some("p1".into()),
        ..tagged(
            in_session(
                llm(span("a", None, None, 100), "m1", (1, 1), None),
                "s1",
                Some("u1"),
            ),
            &["x", "y"],
        )
    };
    let b = SpanRecord {
        status: SpanStatus::Error,
        ..tagged(
            in_session(
                llm(span("b", None, None, 200), "m2", (1, 1), None),
                "s2",
                Some("u2"),
            ),
            &["x"],
        )
    };
    let c = tagged(span("c", None, None, 300), &["y"]);
    let d = SpanRecord {
        kind: SpanKind::Embedding,
        user_id: Some("u1".into()),
        ..llm(span("d", None, None, 400), "m1", (1, 0), None)
    };
    let e = SpanRecord {
        kind: SpanKind::Root,
        prompt_slug: Some("p1".into()),
        ..tagged(span("e", None, None, 500), &["x", "y", "z"])
    };
    store.insert(vec![a, b, c, d, e]).await.unwrap();

    let q = SpanQuery::default;
    let tags = |t: &[&str]| t.iter().map(|t| t.to_string()).collect::<Vec<_>>();
    let some = |s: &str| Some(s.to_owned());
    let cases: Vec<(SpanQuery, Vec<&str>)> = vec![
        (q(), vec!["e", "d", "c", "b", "a"]),
        (
            SpanQuery {
                prompt_slug: some("p1"),
                ..q()
            },
            vec!["e", "a"],
        ),
        (
            SpanQuery {
                status: Some(SpanStatus::Error),
                ..q()
            },
            vec!["b"],
        ),
        (
            SpanQuery {
                status: Some(SpanStatus::Success),
                ..q()
            },
            vec!["e", "d", "c", "a"],
        ),
        (
            SpanQuery {
                start_unix_nano: Some(200),
                end_unix_nano: Some(400),
                ..q()
            },
            vec!["d", "c", "b"],
        ),
        (
            SpanQuery {
                user_id: some("u1"),
                ..q()
            },
            vec!["d", "a"],
        ),
        (
            SpanQuery {
                session_id: some("s1"),
                ..q()
            },
            vec!["a"],
        ),
        (
            SpanQuery {
                model: some("m1"),
                ..q()
            },
            vec!["d", "a"],
        ),
        (
            SpanQuery {
                model: some("nope"),
                ..q()
            },
            vec![],
        ),
        (
            SpanQuery {
                genai_only: true,
                ..q()
            },
            vec!["e", "d", "b", "a"],
        ),
        (
            SpanQuery {
                tags: tags(&["x"]),
                ..q()
            },
            vec!["e", "b", "a"],
        ),
        (
            SpanQuery {
                tags: tags(&["x", "y"]),
                ..q()
            },
            vec!["e", "a"],
        ),
        (
            SpanQuery {
                tags: tags(&["y", "x"]),
                ..q()
            },
            vec!["e", "a"],
        ),
        (
            SpanQuery {
                tags: tags(&["x", "y", "z"]),
                ..q()
            },
            vec!["e"],
        ),
        (
            SpanQuery {
                tags: tags(&["x", "nope"]),
                ..q()
            },
            vec![],
        ),
        (
            SpanQuery {
                tags: tags(&["x"]),
                model: some("m1"),
                ..q()
            },
            vec!["a"],
        ),
        (
            SpanQuery {
                tags: tags(&["y"]),
                start_unix_nano: Some(150),
                end_unix_nano: Some(400),
                ..q()
            },
            vec!["c"],
        ),
        (
            SpanQuery {
                tags: tags(&["x"]),
                genai_only: true,
                status: Some(SpanStatus::Success),
                ..q()
            },
            vec!["e", "a"],
        ),
        (
            SpanQuery {
                user_id: some("u1"),
                model: some("m1"),
                prompt_slug: some("p1"),
                ..q()
            },
            vec!["a"],
        ),
    ];
    for (query, expected) in cases {
        let described = format!("{query:?}");
        assert_eq!(list(&store, query).await, expected, "{described}");
    }
    let bad = SpanQuery {
        cursor: some("not-a-cursor"),
        ..q()
    };
    assert!(matches!(
        store.list_spans(bad).await,
        Err(StoreError::BadCursor(c)) if c == "not-a-cursor"
    ));
}

#[tokio::test]
async fn trace_filters() {
    let (_dir, store) = open();
    store
        .insert(vec![
            span("r1", Some("t1"), None, 100),
            SpanRecord {
                tags: vec!["x".into()],
                ..in_session(
                    llm(span("c1", Some("t1"), Some("r1"), 110), "m1", (1, 1), None),
                    "s1",
                    Some("u1"),
                )
            },
            span("r2", Some("t2"), None, 200),
            SpanRecord {
                status: SpanStatus::Error,
                ..llm(span("c2", Some("t2"), Some("r2"), 210), "m2", (1, 1), None)
            },
            in_session(span("r3", Some("t3"), None, 300), "s1", Some("u2")),
        ])
        .await
        .unwrap();
    let q = TraceQuery::default;
    let some = |s: &str| Some(s.to_owned());
    let cases: Vec<(TraceQuery, Vec<&str>)> = vec![
        (q(), vec!["t3", "t2", "t1"]),
        (
            TraceQuery {
                model: some("m1"),
                ..q()
            },
            vec!["t1"],
        ),
        (
            TraceQuery {
                status: Some(SpanStatus::Error),
                ..q()
            },
            vec!["t2"],
        ),
        (
            TraceQuery {
                status: Some(SpanStatus::Success),
                ..q()
            },
            vec!["t3", "t1"],
        ),
        (
            TraceQuery {
                session_id: some("s1"),
                ..q()
            },
            vec!["t3", "t1"],
        ),
        (
            TraceQuery {
                user_id: some("u1"),
                ..q()
            },
            vec!["t1"],
        ),
        (
            TraceQuery {
                tag: some("x"),
                ..q()
            },
            vec!["t1"],
        ),
        (
            TraceQuery {
                since_unix_nano: Some(150),
                until_unix_nano: Some(250),
                ..q()
            },
            vec!["t2"],
        ),
    ];
    for (query, expected) in cases {
        let described = format!("{query:?}");
        let page = store.traces(query).await.unwrap();
        let got: Vec<_> = page.items.iter().map(|t| t.trace_id.as_str()).collect();
        assert_eq!(got, expected, "{described}");
    }
}

/// Pages of 10 through 25 spans (pairs sharing a start time, so the row id breaks
/// ties), with spans arriving between the pages: every span that was there is seen
/// exactly once, newer arrivals are not (they sort before the pages already read),
/// older arrivals are, in place.
#[tokio::test]
async fn pages_stay_stable_while_spans_arrive() {
    let tagged = |s: SpanRecord| SpanRecord {
        tags: vec!["t".into()],
        ..s
    };
    for by_tag in [false, true] {
        let (_dir, store) = open();
        let originals: Vec<SpanRecord> = (0..25)
            .map(|i| {
                tagged(span(
                    &format!("o{i:02}"),
                    Some(&format!("tr{i}")),
                    None,
                    i / 2 * 10,
                ))
            })
            .collect();
        store.insert(originals.clone()).await.unwrap();
        let query = |cursor: Option<String>| SpanQuery {
            tags: if by_tag { vec!["t".into()] } else { Vec::new() },
            limit: Some(10),
            cursor,
            ..SpanQuery::default()
        };
        let mut seen = Vec::new();
        let page1 = store.list_spans(query(None)).await.unwrap();
        seen.extend(page1.items.clone());
        let cursor_key = page1.items.last().unwrap().start_unix_nano;
        store
            .insert(vec![
                tagged(span("new1", None, None, 10_000)),
                // Same start as the last span read: sorts before it (newer row).
                tagged(span("tie", None, None, cursor_key)),
                tagged(span("old1", None, None, -5)),
            ])
            .await
            .unwrap();
        let page2 = store.list_spans(query(page1.next_cursor)).await.unwrap();
        seen.extend(page2.items.clone());
        store
            .insert(vec![
                tagged(span("new2", None, None, 20_000)),
                tagged(span("old2", None, None, -10)),
            ])
            .await
            .unwrap();
        let page3 = store.list_spans(query(page2.next_cursor)).await.unwrap();
        assert_eq!(page3.next_cursor, None);
        seen.extend(page3.items.clone());

        assert_eq!(
            (page1.items.len(), page2.items.len(), page3.items.len()),
            (10, 10, 7)
        );
        let starts: Vec<i64> = seen.iter().map(|s| s.start_unix_nano).collect();
        assert!(
            starts.windows(2).all(|w| w[0] >= w[1]),
            "newest first: {starts:?}"
        );
        let mut got: Vec<&str> = ids(&seen);
        got.sort_unstable();
        let mut expected: Vec<&str> = ids(&originals);
        expected.extend(["old1", "old2"]);
        expected.sort_unstable();
        assert_eq!(got, expected, "by tag: {by_tag}");
    }
}

#[tokio::test]
async fn trace_pages_are_stable_while_traces_arrive() {
    let (_dir, store) = open();
    let originals: Vec<SpanRecord> = (0..25)
        .map(|i| {
            span(
                &format!("s{i}"),
                Some(&format!("t{i:02}")),
                None,
                i / 2 * 10,
            )
        })
        .collect();
    store.insert(originals).await.unwrap();
    let query = |cursor| TraceQuery {
        limit: Some(10),
        cursor,
        ..TraceQuery::default()
    };
    let mut seen = Vec::new();
    let mut cursor = None;
    for (newer, older) in [(1000, -1), (2000, -2), (3000, -3)] {
        let page = store.traces(query(cursor)).await.unwrap();
        seen.extend(page.items.into_iter().map(|t| t.trace_id));
        cursor = page.next_cursor;
        store
            .insert(vec![
                span(
                    &format!("n{newer}"),
                    Some(&format!("new{newer}")),
                    None,
                    newer,
                ),
                span(
                    &format!("o{older}"),
                    Some(&format!("old{older}")),
                    None,
                    older,
                ),
            ])
            .await
            .unwrap();
    }
    assert_eq!(cursor, None);
    let mut expected: Vec<String> = (0..25).map(|i| format!("t{i:02}")).collect();
    expected.extend(["old-1".into(), "old-2".into()]);
    seen.sort();
    expected.sort();
    assert_eq!(seen, expected);
}

#[tokio::test]
async fn prune_deletes_whole_old_traces_and_recounts_sessions() {
    let (_dir, store) = open();
    let s1 = |s: SpanRecord| in_session(s, "s1", Some("u1"));
    store
        .insert(vec![
            // Ended before the cutoff (500): goes, with its tags and evaluations.
            SpanRecord {
                tags: vec!["old".into()],
                ..s1(llm(
                    span("old_root", Some("tr_old"), None, 100),
                    "m",
                    (5, 5),
                    Some(1.0),
                ))
            },
            s1(span("old_child", Some("tr_old"), Some("old_root"), 150)),
            // Started before the cutoff but a span of it ends after: kept whole.
            span("mid_root", Some("tr_mid"), None, 100),
            SpanRecord {
                end_unix_nano: 1000,
                ..span("mid_child", Some("tr_mid"), Some("mid_root"), 900)
            },
            // Spans without a trace go by their own end.
            s1(span("lone_old", None, None, 100)),
            in_session(span("lone_new", None, None, 800), "s2", None),
            // Newer: kept.
            s1(llm(
                span("new_root", Some("tr_new"), None, 700),
                "m",
                (2, 1),
                Some(0.5),
            )),
            // A session with only old spans: goes.
            in_session(span("s3_old", Some("tr_s3"), None, 10), "s3", None),
        ])
        .await
        .unwrap();
    store
        .add_evaluation("old_root", "quality", 1.0, None, 1)
        .await
        .unwrap()
        .unwrap();
    let kept_eval = store
        .add_evaluation("new_root", "quality", 0.0, None, 2)
        .await
        .unwrap()
        .unwrap();

    assert_eq!(store.prune(500).await.unwrap(), 4);

    assert_eq!(
        list(&store, SpanQuery::default()).await,
        ["mid_child", "lone_new", "new_root", "mid_root"]
    );
    let traces = store.traces(TraceQuery::default()).await.unwrap();
    let traces: Vec<_> = traces.items.iter().map(|t| t.trace_id.as_str()).collect();
    assert_eq!(traces, ["tr_new", "tr_mid"]);
    assert_eq!(store.trace_summary("tr_old").await.unwrap(), None);
    assert!(store.trace("tr_old").await.unwrap().is_empty());
    let old_tag = SpanQuery {
        tags: vec!["old".into()],
        ..SpanQuery::default()
    };
    assert!(list(&store, old_tag).await.is_empty());
    assert!(store.evaluations("old_root").await.unwrap().is_empty());
    assert_eq!(store.evaluations("new_root").await.unwrap(), [kept_eval]);
    assert_eq!(
        session(&store, "s1").await,
        Some(SessionSummary {
            session_id: "s1".into(),
            trace_count: 1,
            span_count: 1,
            user_id: Some("u1".into()),
            input_tokens: 2,
            output_tokens: 1,
            cost_usd: Some(0.5),
            first_unix_nano: 700,
            last_unix_nano: 710,
        })
    );
    assert_eq!(session(&store, "s2").await.map(|s| s.span_count), Some(1));
    assert_eq!(session(&store, "s3").await, None);
    assert_eq!(store.prune(500).await.unwrap(), 0, "nothing left to prune");
}

#[tokio::test]
async fn prune_works_through_more_than_one_chunk() {
    let (_dir, store) = open();
    let n = PRUNE_CHUNK * 2 + 7;
    let old: Vec<SpanRecord> = (0..n)
        .flat_map(|i| {
            [
                span(&format!("t{i}"), Some(&format!("tr{i}")), None, i),
                span(&format!("u{i}"), None, None, i),
            ]
        })
        .collect();
    store.insert(old).await.unwrap();
    store
        .insert(vec![span("keep", Some("tr_keep"), None, n + 100)])
        .await
        .unwrap();
    assert_eq!(store.prune(n + 50).await.unwrap(), 2 * n as usize);
    assert_eq!(list(&store, SpanQuery::default()).await, ["keep"]);
}

/// Polls a future once (so a write is queued) and hands it back, still pending.
async fn queued<F: Future>(future: F) -> Pin<Box<F>> {
    let mut future = Box::pin(future);
    let polled = poll_fn(|cx| Poll::Ready(future.as_mut().poll(cx).is_pending())).await;
    assert!(polled, "the write answered before its batch could commit");
    future
}

/// A write that holds the writer until `release` is sent; `started` says it runs.
fn holding_write(
    store: &Store,
    id: &str,
) -> (
    impl Future<Output = Result<()>> + use<>,
    oneshot::Receiver<()>,
    std::sync::mpsc::Sender<()>,
) {
    let (started_tx, started) = oneshot::channel();
    let (release, release_rx) = std::sync::mpsc::channel::<()>();
    let record = span(id, None, None, 1);
    let store = store.clone();
    let write = async move {
        store
            .write(move |tx| {
                insert_span(tx, &record)?;
                started_tx.send(()).unwrap();
                let _ = release_rx.recv();
                Ok(())
            })
            .await
    };
    (write, started, release)
}

#[tokio::test]
async fn a_batch_answers_after_its_commit_and_a_failed_write_is_undone_alone() {
    let (_dir, store) = open();
    // Hold the writer so that the next writes queue up and run as one batch.
    let (gate, gate_started, open_gate) = holding_write(&store, "gate");
    let gate = queued(gate).await;
    gate_started.await.unwrap();
    let a = queued(store.insert(vec![span("a", None, None, 2)])).await;
    let failing = queued(store.write(|tx| {
        insert_span(tx, &span("failed", None, None, 3))?;
        Err::<(), _>(rusqlite::Error::QueryReturnedNoRows)
    }))
    .await;
    let panicking = queued(store.write(|tx| -> rusqlite::Result<()> {
        insert_span(tx, &span("panicked", None, None, 4)).unwrap();
        panic!("a bug in a write");
    }))
    .await;
    let (last, last_started, release_last) = holding_write(&store, "last");
    let last = queued(last).await;
    open_gate.send(()).unwrap();
    gate.await.unwrap();

    // The batch has run `a` and now waits inside `last`, before its commit: `a`
    // must not have its answer yet.
    last_started.await.unwrap();
    let a = queued(a).await;
    release_last.send(()).unwrap();

    a.await.unwrap();
    last.await.unwrap();
    assert!(matches!(
        failing.await,
        Err(StoreError::Sqlite(rusqlite::Error::QueryReturnedNoRows))
    ));
    assert!(matches!(panicking.await, Err(StoreError::Panicked)));
    assert_eq!(
        list(&store, SpanQuery::default()).await,
        ["a", "last", "gate"]
    );
}

#[tokio::test]
async fn a_failed_write_alone_in_its_batch_is_undone() {
    let (_dir, store) = open();
    let failing = store.write(|tx| {
        insert_span(tx, &span("failed", None, None, 1))?;
        Err::<(), _>(rusqlite::Error::QueryReturnedNoRows)
    });
    assert!(matches!(
        failing.await,
        Err(StoreError::Sqlite(rusqlite::Error::QueryReturnedNoRows))
    ));
    let panicking = store.write(|tx| -> rusqlite::Result<()> {
        insert_span(tx, &span("panicked", None, None, 2)).unwrap();
        panic!("a bug in a write");
    });
    assert!(matches!(panicking.await, Err(StoreError::Panicked)));
    store
        .insert(vec![span("kept", None, None, 3)])
        .await
        .unwrap();
    assert_eq!(list(&store, SpanQuery::default()).await, ["kept"]);
}

#[tokio::test]
async fn a_batch_whose_transaction_is_lost_answers_every_write_with_an_error() {
    let (_dir, store) = open();
    let (gate, gate_started, open_gate) = holding_write(&store, "gate");
    let gate = queued(gate).await;
    gate_started.await.unwrap();
    let before = queued(store.insert(vec![span("before", None, None, 2)])).await;
    // What SQLite does by itself on some I/O errors or a full disk.
    let lost = queued(store.write(|tx| tx.execute_batch("ROLLBACK"))).await;
    let after = queued(store.insert(vec![span("after", None, None, 3)])).await;
    open_gate.send(()).unwrap();
    gate.await.unwrap();

    assert!(matches!(before.await, Err(StoreError::Commit(_))));
    assert!(lost.await.is_err());
    assert!(matches!(after.await, Err(StoreError::Commit(_))));
    assert_eq!(list(&store, SpanQuery::default()).await, ["gate"]);
    // The writer goes on.
    store
        .insert(vec![span("later", None, None, 4)])
        .await
        .unwrap();
    assert_eq!(list(&store, SpanQuery::default()).await, ["later", "gate"]);
}

#[tokio::test]
async fn an_answered_insert_is_on_disk_for_a_new_connection() {
    let (dir, store) = open();
    store.insert(vec![span("a", None, None, 1)]).await.unwrap();
    let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
    let n: i64 = conn
        .query_row("SELECT count(*) FROM spans", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 1);
}

/// The query plan of every list query: an index read in page order (no sorting of
/// the matches, which would read all of them), through the expected index.
#[tokio::test]
async fn list_queries_read_an_index_in_page_order() {
    let (_dir, store) = open();
    store.insert(many_matching_traces()).await.unwrap();
    let conn = open_reader(store.path()).unwrap();
    let some = |s: &str| Some(s.to_owned());
    let cursor = some("100_7");
    let q = SpanQuery::default;
    let spans: Vec<(SpanQuery, &str)> = vec![
        (q(), "spans_start"),
        (
            SpanQuery {
                cursor: cursor.clone(),
                ..q()
            },
            "spans_start",
        ),
        (
            SpanQuery {
                start_unix_nano: Some(1),
                end_unix_nano: Some(2),
                ..q()
            },
            "spans_start",
        ),
        (
            SpanQuery {
                session_id: some("s"),
                ..q()
            },
            "spans_session",
        ),
        (
            SpanQuery {
                session_id: some("s"),
                cursor: cursor.clone(),
                ..q()
            },
            "spans_session",
        ),
        (
            SpanQuery {
                user_id: some("u"),
                ..q()
            },
            "spans_user",
        ),
        (
            SpanQuery {
                model: some("m"),
                ..q()
            },
            "spans_model",
        ),
        (
            SpanQuery {
                model: some("m"),
                cursor: cursor.clone(),
                ..q()
            },
            "spans_model",
        ),
        (
            SpanQuery {
                prompt_slug: some("p"),
                ..q()
            },
            "spans_prompt",
        ),
        (
            SpanQuery {
                status: Some(SpanStatus::Error),
                ..q()
            },
            "spans_status",
        ),
        (
            SpanQuery {
                tags: vec!["t".into()],
                ..q()
            },
            "SEARCH t USING PRIMARY KEY",
        ),
        (
            SpanQuery {
                tags: vec!["t".into(), "u".into()],
                cursor: cursor.clone(),
                ..q()
            },
            "SEARCH t USING PRIMARY KEY",
        ),
    ];
    let t = TraceQuery::default;
    // Filters with many matches: the traces are read in order and probed.
    let traces: Vec<(TraceQuery, &str)> = vec![
        (t(), "traces_start"),
        (
            TraceQuery {
                cursor: cursor.clone(),
                ..t()
            },
            "traces_start",
        ),
        (
            TraceQuery {
                model: some("m"),
                ..t()
            },
            "spans_trace (trace_id=? AND model=?)",
        ),
        (
            TraceQuery {
                user_id: some("u"),
                ..t()
            },
            "spans_trace (trace_id=?)",
        ),
        (
            TraceQuery {
                tag: some("x"),
                ..t()
            },
            "spans_trace (trace_id=?)",
        ),
        (
            TraceQuery {
                session_id: some("s"),
                ..t()
            },
            "st EXISTS USING PRIMARY KEY (session_id=? AND trace_id=?)",
        ),
    ];
    let mut selects: Vec<(Select, &str)> = Vec::new();
    for (query, index) in spans {
        selects.push((spans_select(&query).unwrap(), index));
    }
    for (query, index) in traces {
        selects.push((traces_select(&conn, &query).unwrap(), index));
    }
    selects.push((sessions_select(None, None).unwrap(), "sessions_last"));
    selects.push((
        sessions_select(None, cursor.as_deref()).unwrap(),
        "sessions_last",
    ));
    for (select, index) in &selects {
        let mut stmt = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {}", select.sql))
            .unwrap();
        let plan: Vec<String> = stmt
            .query_map(select.filter.params().as_slice(), |r| r.get(3))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        let plan = plan.join("\n");
        assert!(!plan.contains("TEMP B-TREE"), "{}\n{plan}", select.sql);
        assert!(plan.contains(index), "{index}: {}\n{plan}", select.sql);
    }
}

/// [`FEW_CANDIDATES`] traces and a few more of one span each, all with model `m`,
/// user `u`, tag `x`, session `s`, starting at 0, 1, 2, …
fn many_matching_traces() -> Vec<SpanRecord> {
    (0..FEW_CANDIDATES + 5)
        .map(|i| SpanRecord {
            tags: vec!["x".into()],
            ..in_session(
                llm(
                    span(&format!("sp{i}"), Some(&format!("tr{i}")), None, i),
                    "m",
                    (1, 1),
                    None,
                ),
                "s",
                Some("u"),
            )
        })
        .collect()
}

/// Trace filters matching many spans (read in order, each trace probed) and few
/// (driven from the matches), alone and combined.
#[tokio::test]
async fn trace_filters_with_many_and_few_matches() {
    let (_dir, store) = open();
    let mut spans = many_matching_traces();
    let newest = FEW_CANDIDATES + 5;
    // One more recent trace with a rare model, user, tag and session, whose root
    // has none of them; and a recent trace matching nothing.
    spans.push(span("rare_root", Some("tr_rare"), None, newest + 10));
    spans.push(SpanRecord {
        tags: vec!["rare".into(), "x".into()],
        ..in_session(
            llm(
                span("rare", Some("tr_rare"), Some("rare_root"), newest + 11),
                "m-rare",
                (1, 1),
                None,
            ),
            "s-rare",
            Some("u-rare"),
        )
    });
    spans.push(span("other", Some("tr_other"), None, newest + 20));
    store.insert(spans).await.unwrap();

    let some = |s: &str| Some(s.to_owned());
    let many: Vec<String> = (FEW_CANDIDATES + 2..FEW_CANDIDATES + 5)
        .rev()
        .map(|i| format!("tr{i}"))
        .collect();
    let t = TraceQuery::default;
    let cases: Vec<(TraceQuery, Vec<String>)> = vec![
        (
            TraceQuery {
                model: some("m"),
                ..t()
            },
            many.clone(),
        ),
        (
            TraceQuery {
                user_id: some("u"),
                ..t()
            },
            many.clone(),
        ),
        (
            TraceQuery {
                session_id: some("s"),
                ..t()
            },
            many.clone(),
        ),
        (
            TraceQuery {
                tag: some("x"),
                ..t()
            },
            [vec!["tr_rare".to_owned()], many[..2].to_vec()].concat(),
        ),
        (
            TraceQuery {
                model: some("m"),
                user_id: some("u"),
                tag: some("x"),
                session_id: some("s"),
                ..t()
            },
            many.clone(),
        ),
        (
            TraceQuery {
                model: some("m-rare"),
                ..t()
            },
            vec!["tr_rare".into()],
        ),
        (
            TraceQuery {
                user_id: some("u-rare"),
                ..t()
            },
            vec!["tr_rare".into()],
        ),
        (
            TraceQuery {
                session_id: some("s-rare"),
                ..t()
            },
            vec!["tr_rare".into()],
        ),
        (
            TraceQuery {
                tag: some("rare"),
                ..t()
            },
            vec!["tr_rare".into()],
        ),
        (
            TraceQuery {
                tag: some("x"),
                model: some("m-rare"),
                ..t()
            },
            vec!["tr_rare".into()],
        ),
        (
            TraceQuery {
                model: some("m"),
                user_id: some("u-rare"),
                ..t()
            },
            vec![],
        ),
        (
            TraceQuery {
                model: some("m-rare"),
                status: Some(SpanStatus::Error),
                ..t()
            },
            vec![],
        ),
        (
            TraceQuery {
                model: some("m"),
                until_unix_nano: Some(2),
                ..t()
            },
            vec!["tr2".into(), "tr1".into(), "tr0".into()],
        ),
    ];
    for (query, expected) in cases {
        let described = format!("{query:?}");
        let page = store
            .traces(TraceQuery {
                limit: Some(3),
                ..query
            })
            .await
            .unwrap();
        let got: Vec<_> = page.items.iter().map(|t| t.trace_id.clone()).collect();
        assert_eq!(got, expected, "{described}");
    }
    // Paging a few-matches filter goes on from its cursor like any other.
    let first = store
        .traces(TraceQuery {
            tag: some("x"),
            limit: Some(1),
            ..t()
        })
        .await
        .unwrap();
    let second = store
        .traces(TraceQuery {
            tag: some("x"),
            limit: Some(1),
            cursor: first.next_cursor,
            ..t()
        })
        .await
        .unwrap();
    assert_eq!(second.items[0].trace_id, many[0]);
}
