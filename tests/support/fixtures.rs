//! Access to the provider exchanges the tests replay, all in `tests/fixtures/providers`
//! (recorded ones and hand-built ones, each one's origin told in the README there), so
//! the tests run from a clone of the repository alone. Names are `PROVIDER/NAME`, e.g.
//! `openai/chat-1`.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use serde_json::Value;

/// The root crate's directory, also when a workspace member (the collector) includes
/// this module: the nearest directory holding `tests/support/mod.rs`.
fn root_crate_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .find(|dir| dir.join("tests/support/mod.rs").is_file())
        .expect("the tracia crate is an ancestor of every workspace member")
}

/// The fixture root: `tests/fixtures/providers` of the tracia crate.
pub fn fixtures_dir() -> PathBuf {
    root_crate_dir().join("tests/fixtures/providers")
}

/// One recorded exchange.
#[derive(Clone, Debug)]
pub struct Fixture {
    pub name: String,
    /// Request method as recorded (always `POST` so far).
    pub method: String,
    /// Full request URI as recorded, e.g. `https://api.openai.com/v1/chat/completions`.
    pub uri: String,
    /// What the recording client sent.
    pub request_body: Value,
    pub status: u16,
    pub content_type: String,
    /// The raw response body, byte for byte.
    pub response_body: Bytes,
}

impl Fixture {
    /// The path part of the recorded URI, e.g. `/v1/chat/completions`.
    pub fn request_path(&self) -> &str {
        let after_scheme = self
            .uri
            .split_once("://")
            .map_or(self.uri.as_str(), |(_, r)| r);
        let path = after_scheme.find('/').map_or("/", |i| &after_scheme[i..]);
        path.split('?').next().unwrap_or(path)
    }
}

/// Loads `NAME.request.json`, `NAME.response.body` and `NAME.response.meta.json`.
/// Panics with the offending path: a missing fixture is a broken test.
pub fn load_fixture(name: &str) -> Fixture {
    let base = fixtures_dir();
    let request = read_json(&base.join(format!("{name}.request.json")));
    let meta = read_json(&base.join(format!("{name}.response.meta.json")));
    let body_path = base.join(format!("{name}.response.body"));
    let response_body = std::fs::read(&body_path)
        .unwrap_or_else(|e| panic!("cannot read fixture {}: {e}", body_path.display()));

    let text = |v: &Value, k: &str| v[k].as_str().unwrap_or_default().to_string();
    Fixture {
        name: name.to_string(),
        method: text(&request, "method"),
        uri: text(&request, "uri"),
        request_body: request["body"].clone(),
        status: meta["status"]
            .as_u64()
            .and_then(|s| u16::try_from(s).ok())
            .unwrap_or_else(|| panic!("fixture {name}: meta.json has no valid status")),
        content_type: text(&meta, "content_type"),
        response_body: Bytes::from(response_body),
    }
}

/// The request body the real client sent, to compare with what the SDK sends.
pub fn fixture_request_body(name: &str) -> Value {
    load_fixture(name).request_body
}

/// The recorded raw response body.
pub fn fixture_response_body(name: &str) -> Bytes {
    load_fixture(name).response_body
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read fixture {}: {e}", path.display()));
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("fixture {} is not JSON: {e}", path.display()))
}
