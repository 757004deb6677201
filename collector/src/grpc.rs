//! The OTLP/gRPC receiver: `opentelemetry.proto.collector.trace.v1.TraceService/Export`,
//! on the same record path as OTLP/HTTP ([`crate::ingest`]).
//!
//! The API key and the rate limit are checked by an interceptor ([`Admit`]) on the
//! request's metadata, before its message is read or decoded: a client without a key
//! is answered `UNAUTHENTICATED` (or `RESOURCE_EXHAUSTED`) without costing memory.

use std::future::Future;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tokio::net::TcpListener;
use tonic::codec::CompressionEncoding;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Response, Status};

use crate::conn::{ConnLimits, grpc_incoming};
use crate::security::Caller;
use crate::{AppState, MAX_BODY_BYTES, ingest};

/// The `TraceService` implementation.
#[derive(Debug, Clone)]
pub struct TraceReceiver {
    state: AppState,
}

#[tonic::async_trait]
impl TraceService for TraceReceiver {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        // The key and the rate limit were checked before decoding, by `Admit`.
        match ingest::ingest(&self.state, request.get_ref()).await {
            Ok(response) => Ok(Response::new(response)),
            // UNAVAILABLE is retryable: the exporter keeps the spans and tries again.
            Err(e) => Err(Status::unavailable(e.to_string())),
        }
    }
}

/// The same key and rate limit as the HTTP routes, on the metadata of a request whose
/// message is not read yet.
#[derive(Debug, Clone)]
pub struct Admit {
    state: AppState,
}

impl Interceptor for Admit {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let caller = self
            .state
            .api_keys
            .identify(&request.metadata().clone().into_headers());
        if let Some(limiter) = &self.state.rate_limiter
            && limiter.acquire(caller).is_err()
        {
            return Err(Status::resource_exhausted("rate limit exceeded"));
        }
        if caller == Caller::Unauthenticated {
            return Err(Status::unauthenticated(
                "missing or invalid API key: send authorization: Bearer <key>",
            ));
        }
        Ok(request)
    }
}

/// The gRPC service, behind [`Admit`]: gzip accepted (and used for answers when the client accepts it),
/// messages up to [`MAX_BODY_BYTES`] after decompression, like OTLP/HTTP (tonic's
/// default of 4 MiB is below what exporters send).
pub fn service(state: AppState) -> InterceptedService<TraceServiceServer<TraceReceiver>, Admit> {
    let admit = Admit {
        state: state.clone(),
    };
    let server = TraceServiceServer::new(TraceReceiver { state })
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(MAX_BODY_BYTES);
    InterceptedService::new(server, admit)
}

/// Serves [`service`] on `listener` until `shutdown` resolves, within the default
/// [`ConnLimits`] ([`serve_with`]).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
/// let dir = tempfile::tempdir().unwrap();
/// let store = tracia_collector::store::Store::open(dir.path()).unwrap();
/// let state = tracia_collector::AppState::new(store);
/// tracia_collector::grpc::serve(listener, state, async {}).await.unwrap();
/// # }
/// ```
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    serve_with(listener, state, ConnLimits::default(), shutdown).await
}

/// Serves [`service`] on `listener` within `limits` until `shutdown` resolves: at most
/// `max_connections` at once, the preface within `header_read_timeout`, connections
/// renewed after `max_connection_age`, exports cut off after `request_timeout`, dead
/// peers found by HTTP/2 pings (see [`crate::conn`]).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
/// let dir = tempfile::tempdir().unwrap();
/// let store = tracia_collector::store::Store::open(dir.path()).unwrap();
/// let state = tracia_collector::AppState::new(store);
/// let limits = tracia_collector::conn::ConnLimits { max_connections: 32, ..Default::default() };
/// tracia_collector::grpc::serve_with(listener, state, limits, async {}).await.unwrap();
/// # }
/// ```
pub async fn serve_with(
    listener: TcpListener,
    state: AppState,
    limits: ConnLimits,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    tonic::transport::Server::builder()
        .timeout(limits.request_timeout)
        .max_connection_age(limits.max_connection_age)
        .max_connection_age_grace(MAX_CONNECTION_AGE_GRACE)
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .concurrency_limit_per_connection(MAX_REQUESTS_PER_CONNECTION)
        .add_service(service(state))
        .serve_with_incoming_shutdown(grpc_incoming(listener, limits), shutdown)
        .await
}

/// How long a connection past its age may finish its exports.
const MAX_CONNECTION_AGE_GRACE: Duration = Duration::from_secs(30);
/// How often an HTTP/2 ping checks that the peer is there.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// How long a ping may go unanswered before the connection is closed.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Exports served at once on one connection.
const MAX_REQUESTS_PER_CONNECTION: usize = 64;
