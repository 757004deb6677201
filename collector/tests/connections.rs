//! Bounded connections (the slowloris attack): idle sockets that never send a request
//! are closed after the header read timeout, at most the cap are held at once, and a
//! normal request made while the cap is full of them is answered once they time out.

use std::net::SocketAddr;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use prost::Message as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tracia_collector::conn::{ConnLimits, serve_http};
use tracia_collector::{app, grpc};

mod common;
use common::{SPAN_ID, app_span, export_request};

/// The cap on each port.
const CAP: usize = 32;

/// A small cap and a short timeout, to keep the test quick.
const LIMITS: ConnLimits = ConnLimits {
    max_connections: CAP,
    header_read_timeout: Duration::from_secs(1),
    max_connection_age: Duration::from_secs(600),
    request_timeout: Duration::from_secs(120),
};

/// Idle sockets opened on each port: the cap and 50 more.
const IDLE: usize = CAP + 50;

/// A deadlock guard, not a speed check.
const GUARD: Duration = Duration::from_secs(120);

/// Both servers on loopback, with [`LIMITS`].
async fn start() -> (tempfile::TempDir, SocketAddr, SocketAddr) {
    let (dir, state) = common::test_state();
    let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let grpc_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (http_addr, grpc_addr) = (
        http.local_addr().unwrap(),
        grpc_listener.local_addr().unwrap(),
    );
    tokio::spawn(serve_http(
        http,
        app(state.clone()),
        LIMITS,
        std::future::pending(),
    ));
    tokio::spawn(grpc::serve_with(
        grpc_listener,
        state,
        LIMITS,
        std::future::pending(),
    ));
    (dir, http_addr, grpc_addr)
}

async fn open_idle(addr: SocketAddr) -> Vec<TcpStream> {
    let mut sockets = Vec::new();
    for _ in 0..IDLE {
        sockets.push(TcpStream::connect(addr).await.unwrap());
    }
    sockets
}

/// Waits until the server closes `socket` (whatever it sent before).
async fn closed_by_server(mut socket: TcpStream) {
    let mut buf = [0_u8; 1024];
    tokio::time::timeout(GUARD, async {
        while let Ok(n @ 1..) = socket.read(&mut buf).await {
            let _ = n;
        }
    })
    .await
    .expect("the server closes an idle connection");
}

fn open_descriptors() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

async fn healthz(addr: SocketAddr) -> reqwest::StatusCode {
    tokio::time::timeout(GUARD, reqwest::get(format!("http://{addr}/healthz")))
        .await
        .expect("a normal request is answered")
        .unwrap()
        .status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_capped_and_closed_and_normal_requests_then_answered() {
    let (_dir, http, grpc_addr) = start().await;
    let before = open_descriptors();
    let idle_http = open_idle(http).await;
    let idle_grpc = open_idle(grpc_addr).await;
    // Give the servers time to accept all they would (this cannot make the test pass
    // wrongly: without a cap they would hold more, not fewer).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let held = open_descriptors() - before - 2 * IDLE;
    assert!(
        held <= 2 * CAP + 8,
        "the servers hold {held} descriptors for {} idle connections",
        2 * IDLE
    );

    // Normal requests while the caps are full of idle sockets: answered once those time
    // out and make room.
    let normal_http = tokio::spawn(healthz(http));
    let normal_grpc = tokio::spawn(async move {
        let mut client = TraceServiceClient::connect(format!("http://{grpc_addr}"))
            .await
            .unwrap();
        let request = export_request(vec![app_span(&SPAN_ID)]);
        assert!(request.encoded_len() > 0);
        tokio::time::timeout(GUARD, client.export(request))
            .await
            .expect("a normal export is answered")
            .unwrap();
    });

    // Every idle socket is closed by the server (they never sent a byte).
    futures::future::join_all(idle_http.into_iter().chain(idle_grpc).map(closed_by_server)).await;
    assert_eq!(normal_http.await.unwrap(), reqwest::StatusCode::OK);
    normal_grpc.await.unwrap();
}

#[tokio::test]
async fn a_kept_alive_http_connection_is_closed_when_idle() {
    let (_dir, http, _) = start().await;
    let mut socket = TcpStream::connect(http).await.unwrap();
    socket
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let mut buf = [0_u8; 1024];
    while !answer.ends_with(b"ok") {
        let n = socket.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed before answering");
        answer.extend_from_slice(&buf[..n]);
    }
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    // Kept alive, then nothing more: closed after the header read timeout.
    closed_by_server(socket).await;
}

#[tokio::test]
async fn a_trickled_request_line_or_preface_is_closed() {
    let (_dir, http, grpc_addr) = start().await;
    for (addr, start) in [
        (http, &b"GET /healthz HT"[..]),
        (grpc_addr, &b"PRI * HTTP/2.0"[..]),
    ] {
        let mut socket = TcpStream::connect(addr).await.unwrap();
        socket.write_all(start).await.unwrap();
        closed_by_server(socket).await;
    }
}
