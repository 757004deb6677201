//! Shared integration-test support: fake HTTP servers for the SDK to talk to.
//!
//! - [`FakeProvider`]: replays recorded provider fixtures (plus hand-made errors,
//!   delays, truncation and paced SSE streams).
//! - [`OtlpReceiver`]: an OTLP/HTTP trace receiver (protobuf and JSON).
//! - [`FakeTracia`]: the Tracia cloud `POST /api/v1/spans` endpoint.
//!
//! Every server listens on `127.0.0.1:0` and runs on its **own OS thread with
//! its own Tokio runtime**. That makes it independent of the test's runtime
//! flavor, and keeps it answering while the test thread is blocked (for example
//! in a synchronous `force_flush()` on a current-thread `#[tokio::test]`, which
//! would otherwise deadlock). Dropping the handle stops the server and aborts
//! its open connections.
#![allow(dead_code)]

mod examples;
mod fake_provider;
mod fake_tracia;
mod fixtures;
mod memory;
mod otlp_receiver;
mod sdk;
mod server;

// Not every test file uses every re-export.
#[allow(unused_imports)]
pub use examples::{Finished, PROCESS_WAIT, Process, example_binary};
#[allow(unused_imports)]
pub use fake_provider::{Delivery, FakeProvider, Reply, StreamOutcome, openai_error_body};
#[allow(unused_imports)]
pub use fake_tracia::{FakeTracia, check_span_payload};
#[allow(unused_imports)]
pub use fixtures::{
    Fixture, fixture_request_body, fixture_response_body, fixtures_dir, load_fixture,
};
#[allow(unused_imports)]
pub use memory::Memory;
#[allow(unused_imports)]
pub use otlp_receiver::{OtlpReceiver, ReceivedEvent, ReceivedSpan};
#[allow(unused_imports)]
pub use sdk::{
    client, client_with, enqueue_times, install, keep_callsite_interest_shared, pipeline,
    pipeline_at, pipeline_with, run_calls, servers,
};
#[allow(unused_imports)]
pub use server::RecordedRequest;

/// How [`OtlpReceiver`] and [`FakeTracia`] answer requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ReceiverMode {
    /// Accept and store the payload, answer 200.
    #[default]
    Ok,
    /// Answer this HTTP status without storing anything (simulates an outage).
    Status(u16),
    /// Never answer while the mode stays `Hang`; the connection stays open until
    /// the client gives up or the server is dropped (tests the client's own
    /// timeouts). When the mode changes, held requests are answered by the new mode
    /// (the backend came back).
    Hang,
    /// Read the request, then close the connection without a byte of answer (a
    /// crashing backend or a proxy cutting connections mid-request).
    Close,
}

/// How long a `Hang` request is held: until `mode()` is no longer `Hang`, re-checked
/// each time `changed` is notified (the receivers notify on every `set_mode`). Returns
/// the mode that then applies.
pub(crate) async fn hold_while_hanging(
    changed: &tokio::sync::Notify,
    mode: impl Fn() -> ReceiverMode,
) -> ReceiverMode {
    loop {
        let notified = changed.notified();
        tokio::pin!(notified);
        // Registered before the check, so a change in between is not missed.
        notified.as_mut().enable();
        match mode() {
            ReceiverMode::Hang => notified.await,
            other => return other,
        }
    }
}
