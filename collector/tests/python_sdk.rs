//! The official Tracia Python SDK, unchanged, against the real collector binary: the
//! script `tests/python/check_sdk.py` creates, reads, runs and deletes a prompt and
//! creates, lists, reads and evaluates spans. The collector's OpenAI provider is a fake
//! replaying a recorded chat completion.
//!
//! Needs Python 3 with: `pip install --no-deps tracia && pip install httpx pydantic`.

#[path = "../../tests/support/mod.rs"]
mod support;

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};

use support::FakeProvider;

const INSTALL: &str = "pip install --no-deps tracia && pip install httpx pydantic";

/// The collector process, killed when the test ends however it ends.
struct Collector(Child);

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn the_official_python_sdk_works_against_the_collector() {
    match Command::new("python3")
        .args(["-c", "import tracia, httpx, pydantic"])
        .output()
    {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "the Tracia Python SDK is not installed ({}); install it with: {INSTALL}",
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => panic!("cannot run python3 ({e}): install Python 3, then: {INSTALL}"),
    }

    let fake = FakeProvider::start().await;
    fake.enqueue_fixture("openai/chat-1");
    let data = tempfile::tempdir().unwrap();
    let key = "collector-test-key-0123456789";
    let mut child = Command::new(env!("CARGO_BIN_EXE_tracia-collector"))
        .args(["--http-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(data.path())
        .arg("--api-key")
        .arg(key)
        .env("OPENAI_BASE_URL", fake.base_url())
        .env("OPENAI_API_KEY", "sk-test-0123456789abcdefghijklmnop")
        .env_remove("TRACIA_COLLECTOR_API_KEYS")
        .env_remove("TRACIA_COLLECTOR_RATE_LIMIT")
        .stdout(Stdio::piped())
        .spawn()
        .expect("the collector starts");
    let stdout = child.stdout.take().unwrap();
    let _collector = Collector(child);

    // The first line names the bound address: `... OTLP/HTTP http://127.0.0.1:PORT/v1/traces, ...`.
    let mut lines = BufReader::new(stdout).lines();
    let first = lines.next().expect("a listening line").unwrap();
    let base_url = first
        .split_whitespace()
        .find_map(|w| w.strip_suffix("/v1/traces,"))
        .unwrap_or_else(|| panic!("no address in {first:?}"))
        .to_owned();
    // Keep reading, so span lines never fill the pipe.
    std::thread::spawn(move || lines.for_each(drop));

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/check_sdk.py");
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .args([script, &base_url, key])
            .output()
            .expect("python3 runs")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "check_sdk.py failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("check_sdk: OK"), "{stdout}");
    // The one prompt run reached the provider, with the recorded request.
    let requests = fake.requests().await;
    assert_eq!(requests.len(), 1);
    assert_eq!(
        requests[0].body,
        support::fixture_request_body("openai/chat-1")
    );
}
