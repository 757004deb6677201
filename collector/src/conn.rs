//! Bounded connections on both ports: at most [`ConnLimits::max_connections`] open at a
//! time on each (when full, new ones wait in the listen backlog until one closes), and
//! none held by a client that sends nothing.
//!
//! | Setting | Default | Flag | What |
//! |---|---|---|---|
//! | connections per port | 1024 | `--max-connections` | accepted connections open at once, each port |
//! | header read timeout | 10s | `--header-read-timeout` | HTTP: a request's headers must arrive within it, the first and each next one on a kept-alive connection (so it is also the idle timeout); gRPC: the connection preface |
//! | gRPC connection age | 10m | `--max-connection-age` | then the connection is asked to close (GOAWAY) and closed 30s later; exporters reconnect |
//! | gRPC request timeout | 120s | `--request-timeout` | an export taking longer is answered `CANCELLED` |
//!
//! gRPC connections are also probed with HTTP/2 pings (every 30s, closed after 10s
//! without an answer) and TCP keep-alive (60s), and serve at most 64 requests at once
//! each. At start the process raises its open-file soft limit to the hard limit
//! ([`raise_fd_limit`]), and both caps are lowered to fit in it.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use futures::Stream;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;
use tonic::transport::server::{Connected, TcpConnectInfo, TcpIncoming};

/// How long to wait after a failed accept (out of descriptors) before the next one.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Descriptors kept for the store, the forwarding clients and the rest of the process.
const RESERVED_FDS: u64 = 64;

/// Parses a timeout such as `10s`, `2m` or `1h`.
///
/// ```
/// use std::time::Duration;
/// assert_eq!(tracia_collector::conn::parse_timeout("10s"), Ok(Duration::from_secs(10)));
/// assert!(tracia_collector::conn::parse_timeout("forever").is_err());
/// ```
pub fn parse_timeout(text: &str) -> Result<Duration, String> {
    crate::parse_retention(text)?
        .ok_or_else(|| format!("invalid timeout {text:?}: expected a number and a unit (10s, 2m)"))
}

/// The bounds on connections (see the module docs), as flags.
///
/// ```
/// let limits = tracia_collector::conn::ConnLimits::default();
/// assert_eq!(limits.max_connections, 1024);
/// assert_eq!(limits.header_read_timeout, std::time::Duration::from_secs(10));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::Args)]
pub struct ConnLimits {
    /// Most connections open at once on each port; more wait until one closes.
    #[arg(
        long,
        value_name = "N",
        env = "TRACIA_COLLECTOR_MAX_CONNECTIONS",
        default_value_t = 1024
    )]
    pub max_connections: usize,
    /// How long a client may take to send a request's headers (HTTP; also the idle
    /// time allowed between kept-alive requests) or the connection preface (gRPC).
    #[arg(long, value_name = "TIME", env = "TRACIA_COLLECTOR_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = parse_timeout)]
    pub header_read_timeout: Duration,
    /// How long a gRPC connection lives before it is asked to close (GOAWAY).
    #[arg(long, value_name = "TIME", env = "TRACIA_COLLECTOR_MAX_CONNECTION_AGE", default_value = "10m", value_parser = parse_timeout)]
    pub max_connection_age: Duration,
    /// How long a gRPC export may take.
    #[arg(long, value_name = "TIME", env = "TRACIA_COLLECTOR_REQUEST_TIMEOUT", default_value = "120s", value_parser = parse_timeout)]
    pub request_timeout: Duration,
}

impl Default for ConnLimits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            header_read_timeout: Duration::from_secs(10),
            max_connection_age: Duration::from_secs(600),
            request_timeout: Duration::from_secs(120),
        }
    }
}

impl ConnLimits {
    /// These limits with both ports' caps lowered to fit in `fd_limit` open files.
    ///
    /// ```
    /// let limits = tracia_collector::conn::ConnLimits::default().fit_to(1024);
    /// assert_eq!(limits.max_connections, 480);
    /// ```
    pub fn fit_to(self, fd_limit: u64) -> Self {
        let per_port = fd_limit.saturating_sub(RESERVED_FDS) / 2;
        Self {
            max_connections: self
                .max_connections
                .min(usize::try_from(per_port).unwrap_or(usize::MAX))
                .max(1),
            ..self
        }
    }
}

/// Raises the open-file soft limit to the hard limit and returns the limit now in
/// force (`None` where it cannot be read).
pub fn raise_fd_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: `limit` is a valid rlimit for getrlimit/setrlimit to read and write.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
                return None;
            }
            if limit.rlim_cur < limit.rlim_max {
                let raised = libc::rlimit {
                    rlim_cur: limit.rlim_max,
                    rlim_max: limit.rlim_max,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                    limit = raised;
                }
            }
        }
        // `rlim_t` is `u64` on Linux, not on every Unix.
        #[allow(clippy::unnecessary_cast)]
        Some(limit.rlim_cur as u64)
    }
    #[cfg(not(unix))]
    None
}

/// Serves `app` (HTTP/1.1) on `listener` within `limits` until `shutdown` resolves,
/// then lets the open requests finish.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
/// let dir = tempfile::tempdir().unwrap();
/// let store = tracia_collector::store::Store::open(dir.path()).unwrap();
/// let app = tracia_collector::app(tracia_collector::AppState::new(store));
/// let limits = tracia_collector::conn::ConnLimits::default();
/// tracia_collector::conn::serve_http(listener, app, limits, async {}).await;
/// # }
/// ```
pub async fn serve_http(
    listener: TcpListener,
    app: Router,
    limits: ConnLimits,
    shutdown: impl Future<Output = ()>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = accept(&listener, &permits) => accepted,
        };
        let (stream, permit) = accepted;
        let service = TowerToHyperService::new(app.clone());
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            // Closed by the client, a timeout, or an error: either way its slot is free.
            let _ = connection.await;
            drop(permit);
        });
    }
    graceful.shutdown().await;
}

/// The next connection once there is room for it.
async fn accept(
    listener: &TcpListener,
    permits: &Arc<Semaphore>,
) -> (TcpStream, OwnedSemaphorePermit) {
    // The semaphore is never closed.
    let permit = permits
        .clone()
        .acquire_owned()
        .await
        .expect("open semaphore");
    loop {
        match listener.accept().await {
            Ok((stream, _)) => return (stream, permit),
            Err(e) => {
                tracing::warn!("cannot accept a connection: {e}");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

/// The gRPC listener's connections within `limits`: at most
/// [`ConnLimits::max_connections`] at once, each closed when its preface does not
/// arrive (whole) within [`ConnLimits::header_read_timeout`].
pub fn grpc_incoming(
    listener: TcpListener,
    limits: ConnLimits,
) -> impl Stream<Item = io::Result<Guarded>> {
    let incoming = TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(Duration::from_secs(60)));
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    futures::stream::unfold(
        (incoming, permits),
        move |(mut incoming, permits)| async move {
            use futures::StreamExt as _;
            let permit = permits
                .clone()
                .acquire_owned()
                .await
                .expect("open semaphore");
            loop {
                match incoming.next().await? {
                    Ok(stream) => {
                        let guarded = Guarded::new(stream, permit, limits.header_read_timeout);
                        return Some((Ok(guarded), (incoming, permits)));
                    }
                    Err(e) => {
                        tracing::warn!("cannot accept a gRPC connection: {e}");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                    }
                }
            }
        },
    )
}

/// The HTTP/2 connection preface a gRPC client sends first (`PRI * HTTP/2.0…`).
const PREFACE_BYTES: usize = 24;

/// A connection holding its slot, closed (reads fail) when its first
/// 24 bytes (the HTTP/2 preface) have not arrived by a deadline: a client that sends nothing,
/// or trickles its preface, does not keep the slot.
#[derive(Debug)]
pub struct Guarded {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
    preface: Option<(Pin<Box<Sleep>>, usize)>,
}

impl Guarded {
    fn new(stream: TcpStream, permit: OwnedSemaphorePermit, timeout: Duration) -> Self {
        Self {
            stream,
            _permit: permit,
            preface: Some((Box::pin(tokio::time::sleep(timeout)), 0)),
        }
    }
}

impl Connected for Guarded {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for Guarded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.stream).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        if let Some((deadline, received)) = &mut self.preface {
            *received += read;
            if *received >= PREFACE_BYTES {
                self.preface = None;
            } else if read == 0 && deadline.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no connection preface before the header read timeout",
                )));
            }
        }
        result
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
