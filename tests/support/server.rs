//! The plumbing shared by the fake servers: a dedicated server thread, request
//! recording, and polling waits.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::connect_info::{ConnectInfo, Connected};
use axum::serve::{IncomingStream, Listener};
use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::oneshot;

/// A running axum server; dropping it shuts the server down.
pub(crate) struct TestServer {
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    /// Set while the server is down (bound, not listening): starts it.
    up: Mutex<Option<oneshot::Sender<oneshot::Sender<()>>>>,
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
        Self::spawn(name, addr, router, Bound::Listening(listener), None)
    }

    /// A server that is down: its port is bound but not listening, so connections to
    /// it are refused, until [`TestServer::come_up`] starts it on that same port
    /// (nobody else can take the port meanwhile).
    pub(crate) fn start_down(name: &'static str, router: Router) -> Self {
        let socket = TcpSocket::new_v4().expect("a TCP socket");
        socket
            .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .expect("bind 127.0.0.1:0");
        let addr = socket.local_addr().expect("local_addr");
        let (up, wait_up) = oneshot::channel();
        Self::spawn(name, addr, router, Bound::Down(socket, wait_up), Some(up))
    }

    fn spawn(
        name: &'static str,
        addr: SocketAddr,
        router: Router,
        bound: Bound,
        up: Option<oneshot::Sender<oneshot::Sender<()>>>,
    ) -> Self {
        let (shutdown, mut stop) = oneshot::channel::<()>();

        std::thread::Builder::new()
            .name(format!("{name}-{}", addr.port()))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("build server runtime");
                rt.block_on(async move {
                    let listener = match bound {
                        Bound::Listening(listener) => {
                            TcpListener::from_std(listener).expect("from_std")
                        }
                        Bound::Down(socket, wait_up) => {
                            let listening = tokio::select! {
                                biased;
                                _ = &mut stop => return,
                                listening = wait_up => listening,
                            };
                            let Ok(listening) = listening else { return };
                            let listener = socket.listen(1024).expect("listen");
                            let _ = listening.send(());
                            listener
                        }
                    };
                    let app = router.into_make_service_with_connect_info::<ConnectionKill>();
                    let serve = std::future::IntoFuture::into_future(axum::serve(
                        KillableListener(listener),
                        app,
                    ));
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
            up: Mutex::new(up),
        }
    }

    /// Starts a server made by [`TestServer::start_down`]: once this returns, its port
    /// accepts connections. Does nothing if it is up already.
    pub(crate) async fn come_up(&self) {
        let up = lock(&self.up).take();
        if let Some(up) = up {
            let (listening, is_listening) = oneshot::channel();
            up.send(listening)
                .expect("the server thread waits to come up");
            is_listening.await.expect("the server came up");
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

enum Bound {
    Listening(std::net::TcpListener),
    Down(TcpSocket, oneshot::Receiver<oneshot::Sender<()>>),
}

/// Closes the connection a request came on, from its handler: nothing more is read
/// or written on it (not even the handler's response), so the client sees the
/// connection close before any answer. Every test server's requests carry one, as
/// `ConnectInfo<ConnectionKill>` in their extensions.
#[derive(Clone, Debug, Default)]
pub(crate) struct ConnectionKill(Arc<AtomicBool>);

impl ConnectionKill {
    fn killed(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// Kills the connection of the request with these extensions (see [`ConnectionKill`]).
/// A forced answer with the `Retry-After` a test set, if any.
pub(crate) fn with_retry_after(
    mut answer: axum::response::Response,
    retry_after: Option<&str>,
) -> axum::response::Response {
    if let Some(value) = retry_after.and_then(|v| v.parse().ok()) {
        answer
            .headers_mut()
            .insert(http::header::RETRY_AFTER, value);
    }
    answer
}

pub(crate) fn close_connection(extensions: &http::Extensions) {
    extensions
        .get::<ConnectInfo<ConnectionKill>>()
        .expect("test servers run with ConnectionKill")
        .0
        .0
        .store(true, Ordering::Release);
}

impl Connected<IncomingStream<'_, KillableListener>> for ConnectionKill {
    fn connect_info(stream: IncomingStream<'_, KillableListener>) -> Self {
        stream.remote_addr().clone()
    }
}

pub(crate) struct KillableListener(TcpListener);

impl Listener for KillableListener {
    type Io = KillableIo;
    type Addr = ConnectionKill;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (io, _) = Listener::accept(&mut self.0).await;
        let kill = ConnectionKill::default();
        (
            KillableIo {
                io,
                kill: kill.clone(),
            },
            kill,
        )
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(ConnectionKill::default())
    }
}

/// A connection that fails every read and write once killed, which makes hyper drop
/// (close) it.
pub(crate) struct KillableIo {
    io: TcpStream,
    kill: ConnectionKill,
}

fn killed() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "test server: connection closed on purpose",
    )
}

impl AsyncRead for KillableIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.kill.killed() {
            return Poll::Ready(Err(killed()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for KillableIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.kill.killed() {
            return Poll::Ready(Err(killed()));
        }
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.kill.killed() {
            return Poll::Ready(Err(killed()));
        }
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.kill.killed() {
            return Poll::Ready(Err(killed()));
        }
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
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
