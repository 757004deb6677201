//! The plumbing shared by the fake servers: a dedicated server thread, request
//! recording, and polling waits.

use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use bytes::Bytes;
use tokio::sync::oneshot;

/// A running axum server; dropping it shuts the server down.
pub(crate) struct TestServer {
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
}

impl TestServer {
    /// Binds `127.0.0.1:0` and serves `router` on a new thread.
    ///
    /// The socket is bound before this returns, so clients may connect right
    /// away (the kernel queues them until the thread starts accepting).
    pub(crate) fn start(name: &'static str, router: Router) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener.set_nonblocking(true).expect("set_nonblocking");
        let addr = listener.local_addr().expect("local_addr");
        let (shutdown, stop) = oneshot::channel::<()>();

        std::thread::Builder::new()
            .name(format!("{name}-{}", addr.port()))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("build server runtime");
                rt.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener).expect("from_std");
                    let serve = std::future::IntoFuture::into_future(axum::serve(listener, router));
                    // Not graceful on purpose: a `Hang` handler or a paced stream
                    // must not keep the server alive after the test dropped it.
                    tokio::select! {
                        biased;
                        _ = stop => {}
                        res = serve => { if let Err(e) = res { eprintln!("{name}: serve failed: {e}"); } }
                    }
                });
                // Dropping the runtime cancels the per-connection tasks, which
                // closes any connection still open.
                drop(rt);
            })
            .expect("spawn server thread");

        TestServer {
            addr,
            shutdown: Some(shutdown),
        }
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT` (no trailing slash).
    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            // The thread may already be gone if serving failed; nothing to do then.
            let _ = tx.send(());
        }
    }
}

/// One HTTP request as the fake server received it.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub method: http::Method,
    /// The path only, e.g. `/v1/chat/completions`.
    pub path: String,
    /// The raw query string without `?`, if any.
    pub query: Option<String>,
    pub headers: http::HeaderMap,
    /// The body parsed as JSON, or `Value::Null` when it is empty or not JSON
    /// (then see `raw_body`).
    pub body: serde_json::Value,
    pub raw_body: Bytes,
    /// When the request arrived (for checking retry back-off).
    pub received_at: Instant,
}

impl RecordedRequest {
    pub(crate) fn new(parts: &http::request::Parts, raw_body: Bytes) -> Self {
        RecordedRequest {
            method: parts.method.clone(),
            path: parts.uri.path().to_string(),
            query: parts.uri.query().map(str::to_string),
            headers: parts.headers.clone(),
            body: serde_json::from_slice(&raw_body).unwrap_or(serde_json::Value::Null),
            raw_body,
            received_at: Instant::now(),
        }
    }

    /// A header value as text, if present and valid UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The raw body as (lossy) UTF-8 text.
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.raw_body).into_owned()
    }
}

/// Locks a state mutex, ignoring poisoning: a panicking test thread must not
/// turn every later assertion into a confusing `PoisonError`.
pub(crate) fn lock<S>(m: &Mutex<S>) -> MutexGuard<'_, S> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Polls `state` until `done` holds or `timeout` passes, then returns `read`
/// of the state either way: the caller asserts, so a timeout never panics here.
///
/// The deadline uses the wall clock, so it still means real time in a test that
/// paused Tokio's clock.
pub(crate) async fn wait_until<S, R>(
    state: &Mutex<S>,
    timeout: Duration,
    done: impl Fn(&S) -> bool,
    read: impl Fn(&S) -> R,
) -> R {
    let deadline = Instant::now() + timeout;
    loop {
        {
            let s = lock(state);
            if done(&s) || Instant::now() >= deadline {
                return read(&s);
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
