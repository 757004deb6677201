//! The fake servers of the call benchmarks, in a child process of their own.
//!
//! `overhead --serve-fake` starts them (from `tests/support`): a fake OpenAI server
//! answering every request with `openai/chat-1`, another with `openai/chat-stream` (the
//! whole body at once), a third with the start of `openai/chat-stream` paced like a
//! model (see [`paced_stream`]), an OTLP/HTTP receiver and a fake Tracia API. It prints their URLs as `NAME=URL` lines,
//! then `READY`, and serves until its stdin closes. A child process keeps the servers'
//! CPU time and allocations out of the figures of the process that is measured, and
//! lets `compare_python.sh` point the Python SDK at the very same servers.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

use crate::support::{FakeProvider, FakeTracia, OtlpReceiver, Reply};

/// The key the fake Tracia API accepts.
pub const TRACIA_KEY: &str = "tr_bench_0123456789abcdef";
/// The key sent to the fake OpenAI server (it checks none).
pub const OPENAI_KEY: &str = "sk-bench-0123456789abcdefghijklmnop";
pub const CHAT_FIXTURE: &str = "openai/chat-1";
pub const STREAM_FIXTURE: &str = "openai/chat-stream";
/// Events of the paced stream: the first `PACED_EVENTS - 2` of the fixture, then its
/// last two (the usage chunk and `[DONE]`).
pub const PACED_EVENTS: usize = 10;
/// The pause between the paced stream's events.
pub const PACE: Duration = Duration::from_millis(1);

/// Where the fake servers listen.
#[derive(Clone, Debug)]
pub struct Endpoints {
    /// OpenAI base URL (`…/v1`) answering `openai/chat-1`.
    pub openai: String,
    /// OpenAI base URL (`…/v1`) answering `openai/chat-stream`.
    pub openai_stream: String,
    /// OpenAI base URL (`…/v1`) answering [`paced_stream`].
    pub openai_paced: String,
    /// OTLP/HTTP traces URL (`…/v1/traces`).
    pub otlp_traces: String,
    /// Tracia API base URL; it accepts [`TRACIA_KEY`].
    pub tracia: String,
}

const VARS: [&str; 5] = [
    "BENCH_OPENAI_URL",
    "BENCH_OPENAI_STREAM_URL",
    "BENCH_OPENAI_PACED_URL",
    "BENCH_OTLP_TRACES_URL",
    "BENCH_TRACIA_URL",
];

impl Endpoints {
    fn values(&self) -> [&str; 5] {
        [
            &self.openai,
            &self.openai_stream,
            &self.openai_paced,
            &self.otlp_traces,
            &self.tracia,
        ]
    }

    fn from_lookup(mut get: impl FnMut(&str) -> Option<String>) -> Option<Self> {
        Some(Endpoints {
            openai: get(VARS[0])?,
            openai_stream: get(VARS[1])?,
            openai_paced: get(VARS[2])?,
            otlp_traces: get(VARS[3])?,
            tracia: get(VARS[4])?,
        })
    }
}

/// The running servers: a child process, or servers someone else started.
pub struct Servers {
    pub endpoints: Endpoints,
    child: Option<(Child, ChildStdin)>,
}

impl Servers {
    /// The servers named by the `BENCH_*_URL` variables that `--serve-fake` prints (so
    /// that `compare_python.sh` runs both languages against one set), else a new child.
    pub fn from_env_or_spawn() -> Self {
        match Endpoints::from_lookup(|name| std::env::var(name).ok()) {
            Some(endpoints) => Servers {
                endpoints,
                child: None,
            },
            None => Self::spawn(),
        }
    }

    /// Starts `THIS_BINARY --serve-fake` and reads its URLs.
    pub fn spawn() -> Self {
        let exe = std::env::current_exe().expect("the bench binary's path");
        let mut child = Command::new(exe)
            .arg("--serve-fake")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the fake servers");
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut vars = Vec::new();
        for line in stdout.lines() {
            let line = line.expect("read the fake servers' URLs");
            if line == "READY" {
                break;
            }
            if let Some((name, value)) = line.split_once('=') {
                vars.push((name.to_string(), value.to_string()));
            }
        }
        let endpoints = Endpoints::from_lookup(|name| {
            vars.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone())
        })
        .expect("the fake servers printed every URL");
        Servers {
            endpoints,
            child: Some((child, stdin)),
        }
    }
}

impl Servers {
    /// The CPU time the servers' process has used so far, when it is this one's child.
    pub fn cpu(&self) -> Option<Duration> {
        let (child, _) = self.child.as_ref()?;
        super::cpu::cpu_of(child.id())
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        if let Some((mut child, stdin)) = self.child.take() {
            drop(stdin); // EOF: the child stops serving and exits.
            let _ = child.wait();
        }
    }
}

/// The `--serve-fake` mode: serves until stdin closes.
pub fn serve_fake() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime for the fake servers");
    runtime.block_on(async {
        let chat = FakeProvider::start().await;
        chat.repeat_fixture(CHAT_FIXTURE);
        let stream = FakeProvider::start().await;
        stream.repeat_fixture(STREAM_FIXTURE);
        let paced = FakeProvider::start().await;
        paced.repeat_reply(paced_stream());
        let otlp = OtlpReceiver::start().await;
        let tracia = FakeTracia::start(TRACIA_KEY).await;
        let endpoints = Endpoints {
            openai: chat.base_url(),
            openai_stream: stream.base_url(),
            openai_paced: paced.base_url(),
            otlp_traces: otlp.traces_url(),
            tracia: tracia.base_url(),
        };
        let mut out = std::io::stdout().lock();
        for (name, value) in VARS.iter().zip(endpoints.values()) {
            writeln!(out, "{name}={value}").expect("stdout");
        }
        writeln!(out, "READY").expect("stdout");
        out.flush().expect("stdout");
        drop(out);

        let (closed_tx, mut closed) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
            let _ = closed_tx.send(());
        });
        // The receivers keep what they receive, for tests; a benchmark sends millions.
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = &mut closed => break,
                _ = tick.tick() => {
                    otlp.forget();
                    tracia.forget();
                }
            }
        }
    });
}

/// A stream as a model sends it: the first event at once, then one every [`PACE`], so
/// that each arrives in a read of its own. It is [`PACED_EVENTS`] events long (the
/// whole fixture would take 200 ms a stream).
pub fn paced_stream() -> Reply {
    let mut reply = Reply::fixture(STREAM_FIXTURE);
    let text = String::from_utf8(reply.body.to_vec()).expect("an SSE fixture is text");
    let events: Vec<&str> = text.split_inclusive("\n\n").collect();
    let (head, tail) = (PACED_EVENTS - 2, events.len() - 2);
    reply.body = [&events[..head], &events[tail..]].concat().concat().into();
    reply.chunked(PACE)
}
