//! Retention: `--retention` parsing (in the library and on the command line) and the
//! collector pruning what ended before its retention period.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tracia_collector::model::{SpanKind, SpanRecord, SpanStatus};
use tracia_collector::parse_retention;
use tracia_collector::store::{SpanQuery, Store};

#[test]
fn retention_periods_parse() {
    let cases = [
        ("30s", 30),
        ("30m", 30 * 60),
        ("12h", 12 * 3600),
        ("7d", 7 * 86_400),
        ("2w", 14 * 86_400),
        (" 7d ", 7 * 86_400),
    ];
    for (text, seconds) in cases {
        assert_eq!(
            parse_retention(text),
            Ok(Some(Duration::from_secs(seconds))),
            "{text}"
        );
    }
    assert_eq!(parse_retention("forever"), Ok(None));
    assert_eq!(parse_retention("FOREVER"), Ok(None));
}

#[test]
fn bad_retention_periods_are_refused_with_a_clear_message() {
    let bad = [
        "",
        "d",
        "7",
        "0d",
        "-1d",
        "7 days",
        "7days",
        "1.5h",
        "7x",
        "7D",
        "7µ",
        "µ",
        "99999999999999999999d",
        "9999999999999999w",
        "never",
    ];
    for text in bad {
        let err = parse_retention(text).expect_err(text);
        assert!(
            err.contains(&format!("{:?}", text.trim()))
                && err.contains("30m, 12h, 7d, 2w")
                && err.contains("forever"),
            "{text}: {err}"
        );
    }
}

#[test]
fn the_command_line_refuses_a_bad_retention() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_tracia-collector"))
        .args([
            "--http-addr",
            "127.0.0.1:0",
            "--grpc-addr",
            "127.0.0.1:0",
            "--retention",
            "7days",
            "--data-dir",
        ])
        .arg(dir.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "a usage error");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--retention") && stderr.contains("invalid retention \"7days\""),
        "{stderr}"
    );
    assert!(output.stdout.is_empty(), "it must not start listening");
}

fn span(id: &str, trace: &str, start: i64, session: &str) -> SpanRecord {
    SpanRecord {
        span_id: id.into(),
        trace_id: Some(trace.into()),
        parent_span_id: None,
        name: "op".into(),
        kind: SpanKind::App,
        service_name: None,
        start_unix_nano: start,
        end_unix_nano: start + 1_000,
        status: SpanStatus::Success,
        error: None,
        provider: None,
        model: None,
        input_tokens: 0,
        output_tokens: 0,
        total_tokens: 0,
        cost_usd: None,
        session_id: Some(session.into()),
        user_id: None,
        tags: vec!["t".into()],
        prompt_slug: None,
        prompt_version: None,
        input: None,
        output: None,
        variables: None,
        tools: None,
        tool_calls: None,
        temperature: None,
        top_p: None,
        max_output_tokens: None,
        attributes: Default::default(),
    }
}

/// Spans stored before the collector starts with `--retention 1d`: the ones from two
/// days ago go (with their trace and session) as soon as it runs, today's stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_collector_prunes_what_is_older_than_its_retention() {
    let dir = tempfile::tempdir().unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64;
    let day = 86_400 * 1_000_000_000_i64;
    {
        let store = Store::open(dir.path()).unwrap();
        store
            .insert(vec![
                span("sp_old1", "tr_old", now - 2 * day, "old-session"),
                span("sp_old2", "tr_old", now - 2 * day + 5, "old-session"),
                span("sp_new", "tr_new", now - 60_000_000_000, "new-session"),
            ])
            .await
            .unwrap();
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_tracia-collector"))
        .args([
            "--http-addr",
            "127.0.0.1:0",
            "--grpc-addr",
            "127.0.0.1:0",
            "--retention",
            "1d",
            "--data-dir",
        ])
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let store = Store::open(dir.path()).unwrap();
    let ids = || async {
        let page = store.list_spans(SpanQuery::default()).await.unwrap();
        page.items
            .into_iter()
            .map(|s| s.span_id)
            .collect::<Vec<_>>()
    };
    // The sweep runs in the background right after start; a generous bound only so
    // that a collector that never prunes fails instead of hanging.
    let deadline = Instant::now() + Duration::from_secs(60);
    while ids().await.len() > 1 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(ids().await, ["sp_new"]);
    assert_eq!(store.trace_summary("tr_old").await.unwrap(), None);
    assert!(store.trace_summary("tr_new").await.unwrap().is_some());
    let sessions = store.sessions(None, None).await.unwrap().items;
    let sessions: Vec<_> = sessions.iter().map(|s| s.session_id.as_str()).collect();
    assert_eq!(sessions, ["new-session"]);
}
