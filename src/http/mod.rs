//! The HTTP facade: the engine behind Salesforce's REST shape, so existing Salesforce clients
//! and tooling can drive a checkout with actions and record updates alone.
//!
//! | Route | Answer |
//! |---|---|
//! | `GET /services/data/` | the API versions |
//! | `GET /services/data/vNN.N/actions/standard` | the actions |
//! | `GET /services/data/vNN.N/actions/standard/{name}` | one action's inputs and outputs |
//! | `POST /services/data/vNN.N/actions/standard/{name}` | invoke it: one result per input |
//! | `GET /services/data/vNN.N/actions/custom/apex` | the template's custom actions |
//! | `GET /services/data/vNN.N/actions/custom/apex/{name}` | one custom action's inputs and outputs |
//! | `POST /services/data/vNN.N/actions/custom/apex/{name}` | invoke it: one result per input |
//! | `GET /services/data/vNN.N/sobjects/{Object}/{Id}` | a record |
//! | `GET /services/data/vNN.N/sobjects/WebCart/{Id}/CartItems` (or `/CartValidationOutputs`) | a cart's related records |
//! | `PATCH /services/data/vNN.N/sobjects/CartCheckoutSession/{Id}` | a screen step (`State`) |
//! | `PATCH /services/data/vNN.N/sobjects/WebCart/{Id}` | a screen's input (`DeliverTo`, `DeliveryMethodId`, `PaymentToken`) |
//! | `GET /healthz` | 200 when the store answers a read, 503 with a reason otherwise |
//! | `GET /readyz` | 200 while the server takes traffic, 503 once it is stopping |
//! | `GET /metrics` | Prometheus metrics: requests, latency, operations, queue depth |
//! | `GET /services/data/openapi.json` | the OpenAPI 3.1 document of every route here ([`openapi`]) |
//! | `GET /inspector` | the inspector page; its JSON views under `/inspector/api/` ([`inspector`]) |
//!
//! Every Salesforce route but the versions list needs `Authorization: Bearer <token>`
//! ([`Tokens`]); the caller's permissions and sharing apply to every call and every record
//! read. The three operator routes need no token and belong on an internal network. The
//! engine is synchronous, so each request's engine and store work runs on tokio's blocking
//! pool.
//!
//! Every answer carries an `X-Request-Id` (the client's own, or a new UUID), and every log
//! line of a request is inside a span with that Id, the method and the route. A panic in a
//! handler answers the Salesforce 500 body. [`Server`] adds what a production listener needs:
//! a header read timeout (which also bounds keep-alive idling), a body timeout, a whole-request
//! timeout, and a connection cap at which the longest-idle connection makes room for a new
//! one ([`ServerConfig`] has the defaults). `docs/http.md` documents the status rule, the
//! limits and the error codes.
//!
//! ```no_run
//! use std::sync::Arc;
//! use cartflow::http::{Server, ServerConfig, Tokens};
//! use cartflow::{Engine, MemoryStore, sample};
//!
//! let data = sample::dataset();
//! let integrations = sample::integrations(&data);
//! let engine = Engine::new(Arc::new(MemoryStore::from_dataset(data).unwrap()))
//!     .with_integrations(integrations);
//! let tokens = Tokens::new().with("buyer-token", sample::buyer_id());
//! let server = Server::start(engine, tokens, &ServerConfig::default()).unwrap();
//! println!("listening on http://{}", server.local_addr());
//! server.shutdown();
//! ```

mod actions;
mod auth;
mod body;
mod describe;
mod error;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod idempotency;
pub mod inspector;
mod ops;
mod query;
mod records;
mod routes;
mod schema;
mod server;
mod soql;
mod versions;

use std::any::Any;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse as _, Response};
use http_body_util::BodyExt as _;
use tokio::sync::oneshot;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};

use body::{BodyTimedOut, DeadlineBody};

pub use auth::{Tokens, TokensError};
pub use error::SfError;
pub use idempotency::{DEFAULT_KEY_TTL, IDEMPOTENCY_KEY_HEADER, MAX_KEY_LENGTH, REPLAYED_HEADER};
pub use routes::{OPENAPI_PATH, document as openapi};
pub use versions::{ApiVersion, LATEST_VERSION, MIN_VERSION};

use crate::engine::{Engine, WorkerPool};
use crate::model::User;

/// The largest request body accepted, in bytes (1 MiB). A larger one answers 413.
pub const BODY_LIMIT: usize = 1 << 20;

/// How much of an oversized body is read and thrown away so that the client, still sending,
/// gets to read the 413 answer. Past this (or when Content-Length announces more) the
/// connection is closed after the answer.
pub const DRAIN_LIMIT: usize = 16 << 20;

/// The most inputs one action call may carry.
pub const MAX_INPUTS: usize = 200;

/// What every handler shares.
#[derive(Clone)]
struct AppState(Arc<Inner>);

struct Inner {
    engine: Engine,
    tokens: Tokens,
    /// How long an `Idempotency-Key` and its answer are kept.
    key_ttl: Duration,
    /// Set once the server is stopping: `/readyz` answers 503.
    draining: Arc<AtomicBool>,
}

/// The facade's routes over `engine`, accepting `tokens`, with the request Id, tracing,
/// metrics, panic and timeout layers at [`ServerConfig::default`]'s timeouts, keeping
/// idempotency keys for [`DEFAULT_KEY_TTL`]. Serve it with any axum server, or use
/// [`Server`], which also caps connections, runs the workers and stops gracefully.
pub fn router(engine: Engine, tokens: Tokens) -> Router {
    router_keeping_keys(engine, tokens, DEFAULT_KEY_TTL)
}

/// [`router`], keeping each `Idempotency-Key` and its answer for `key_ttl`.
pub fn router_keeping_keys(engine: Engine, tokens: Tokens, key_ttl: Duration) -> Router {
    let config = ServerConfig {
        idempotency_ttl: key_ttl,
        ..ServerConfig::default()
    };
    app(engine, tokens, &config, Arc::new(AtomicBool::new(false)))
}

fn app(engine: Engine, tokens: Tokens, config: &ServerConfig, draining: Arc<AtomicBool>) -> Router {
    ops::install_recorder();
    let request_timeout = config.request_timeout;
    let body_timeout = config.body_timeout;
    let state = AppState(Arc::new(Inner {
        engine,
        tokens,
        key_ttl: config.idempotency_ttl,
        draining,
    }));
    let mut router = Router::new();
    for route in routes::all() {
        router = router.route(route.path, route.handlers);
    }
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // Innermost first: the body timeout wraps the body the handlers read; the metrics
        // see the status a timeout or a panic turned into; the request Id is set before the
        // span that carries it.
        .layer(middleware::map_request(
            move |request: Request| async move {
                request.map(|body| DeadlineBody::wrap(body, body_timeout))
            },
        ))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            request_timeout,
        ))
        .layer(middleware::map_response(
            move |response: Response| async move { timeout_body(response, request_timeout) },
        ))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(middleware::from_fn(ops::record_request))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span)
                .on_request(())
                .on_response(DefaultOnResponse::new().level(tracing::Level::DEBUG)),
        )
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .with_state(state)
}

/// The span every log line of a request is in: its Id, method and route template (never the
/// raw path or headers, so no token or record Id).
fn request_span(request: &Request) -> tracing::Span {
    let id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str);
    tracing::info_span!("request", request_id = id, method = %request.method(), route)
}

/// A handler that panicked answers the Salesforce 500 body; the server goes on.
fn panic_response(payload: Box<dyn Any + Send + 'static>) -> Response {
    let what = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-text payload".into());
    SfError::internal(&format!("a handler panicked: {what}")).into_response()
}

/// The whole-request timeout answers 503 with no body; give it the Salesforce shape.
fn timeout_body(response: Response, timeout: Duration) -> Response {
    let bodiless = response.headers().get(header::CONTENT_TYPE).is_none();
    if response.status() != StatusCode::SERVICE_UNAVAILABLE || !bodiless {
        return response;
    }
    tracing::warn!(
        timeout_ms = timeout.as_millis() as u64,
        "a request timed out"
    );
    SfError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "REQUEST_RUNNING_TOO_LONG",
        format!(
            "The request did not finish within {} ms; it may still take effect, so read the \
             record before retrying",
            timeout.as_millis()
        ),
    )
    .into_response()
}

async fn list_versions() -> Response {
    error::json_response(StatusCode::OK, &versions::list())
}

async fn not_found() -> SfError {
    SfError::not_found()
}

async fn method_not_allowed() -> SfError {
    SfError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "METHOD_NOT_ALLOWED",
        "HTTP method not allowed for this resource",
    )
}

/// Checks the version segment of a path: anything but `vNN.N` from 47.0 up is 404.
fn api_version(segment: &str) -> Result<ApiVersion, SfError> {
    ApiVersion::parse(segment).ok_or_else(SfError::not_found)
}

/// The caller: a known token whose user exists; otherwise 401 `INVALID_SESSION_ID`.
async fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<User, SfError> {
    let id = state
        .0
        .tokens
        .user_of_request(headers)
        .ok_or_else(SfError::invalid_session)?;
    let engine = state.0.engine.clone();
    blocking(move || engine.store().user(&id))
        .await?
        .map_err(|e| SfError::internal(&e))?
        .ok_or_else(SfError::invalid_session)
}

/// Runs engine or store work on the blocking pool. A panic there is a 500, never a dropped
/// server.
async fn blocking<T, F>(work: F) -> Result<T, SfError>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| SfError::internal(&e))
}

/// Reads a request body of at most [`BODY_LIMIT`] bytes. An oversized one is read on (up to
/// [`DRAIN_LIMIT`]) and thrown away, then answered 413.
async fn read_body(headers: &HeaderMap, mut body: Body) -> Result<Bytes, SfError> {
    let too_large = || {
        SfError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "REQUEST_ENTITY_TOO_LARGE",
            format!("The request body is larger than the {BODY_LIMIT}-byte limit"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > DRAIN_LIMIT as u64) {
        return Err(too_large());
    }
    let mut kept = Vec::new();
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| body_error(&e))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        total = total.saturating_add(data.len());
        if total > DRAIN_LIMIT {
            return Err(too_large());
        }
        if total <= BODY_LIMIT {
            kept.extend_from_slice(&data);
        }
    }
    if total > BODY_LIMIT {
        return Err(too_large());
    }
    Ok(Bytes::from(kept))
}

/// A body that stopped arriving within the body timeout is 408 `REQUEST_TIMEOUT` (and its
/// connection is closed, its body unread); any other read failure is 400.
fn body_error(error: &axum::Error) -> SfError {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = cause {
        if e.is::<BodyTimedOut>() {
            return SfError::new(
                StatusCode::REQUEST_TIMEOUT,
                "REQUEST_TIMEOUT",
                "The request body did not arrive in time",
            );
        }
        cause = e.source();
    }
    SfError::new(
        StatusCode::BAD_REQUEST,
        "JSON_PARSER_ERROR",
        "The request body could not be read",
    )
}

/// Parses a JSON request body; 400 `JSON_PARSER_ERROR` when it is not JSON.
fn parse_json(body: &[u8]) -> Result<serde_json::Value, SfError> {
    serde_json::from_slice(body).map_err(|e| SfError::parser(format!("The body is not JSON: {e}")))
}

/// How [`Server`] runs. Every limit here has a `cartflow serve` flag; `docs/http.md` lists
/// them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Where to listen; port 0 picks a free port ([`Server::local_addr`] tells which).
    pub addr: SocketAddr,
    /// Worker threads running background operations in this process; 0 for none (when
    /// separate `cartflow worker` processes share the database).
    pub workers: usize,
    /// How long a stop waits for in-flight requests before it closes their connections
    /// (default 30 s).
    pub grace: Duration,
    /// How long an `Idempotency-Key` and its answer are kept (default 24 hours); after
    /// that the key is new again.
    pub idempotency_ttl: Duration,
    /// How long a client has to send a request's headers, counted from the connection's
    /// accept and again from the end of each response, so it also closes a keep-alive
    /// connection that idles this long between requests (default 10 s).
    pub header_timeout: Duration,
    /// How long a request's body may take to arrive; past it the request answers 408
    /// `REQUEST_TIMEOUT` and the connection is closed (default 30 s).
    pub body_timeout: Duration,
    /// How long a request may take from its headers to its answer; past it the request
    /// answers 503 `REQUEST_RUNNING_TOO_LONG` (an engine call in progress still finishes, so
    /// the command may take effect) (default 60 s).
    pub request_timeout: Duration,
    /// The most connections open at once (default 512, well under the usual limit of 1,024
    /// descriptors). At the cap a new connection evicts the one idle longest; when every
    /// connection has a request in flight, the newcomer is answered 503 and closed.
    pub max_connections: usize,
    /// How long a stop keeps serving, with `/readyz` answering 503, before it stops
    /// accepting: time for a load balancer to take the server out of rotation (default 0).
    pub drain_delay: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            workers: 1,
            grace: Duration::from_secs(30),
            idempotency_ttl: DEFAULT_KEY_TTL,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(60),
            max_connections: 512,
            drain_delay: Duration::ZERO,
        }
    }
}

impl ServerConfig {
    fn limits(&self) -> server::Limits {
        server::Limits {
            header_timeout: self.header_timeout,
            max_connections: self.max_connections,
            grace: self.grace,
            drain_delay: self.drain_delay,
        }
    }
}

/// A running facade: the HTTP server on its own runtime thread, plus the engine's workers.
/// [`Server::shutdown`] (or dropping it) stops accepting, lets in-flight requests finish,
/// then stops the workers, each finishing the operation in hand.
pub struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    workers: Option<WorkerPool>,
    /// Held until the runtime is gone, so that the last clone of the engine (and of its
    /// store) is never dropped inside it: the synchronous PostgreSQL client runs a runtime of
    /// its own, which cannot start inside another.
    engine: Option<Engine>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Binds `config.addr`, starts `config.workers` workers and serves [`router`] until
    /// stopped. Fails only when the address cannot be bound or a thread cannot start.
    pub fn start(engine: Engine, tokens: Tokens, config: &ServerConfig) -> io::Result<Server> {
        let listener = std::net::TcpListener::bind(config.addr)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .max_blocking_threads(64)
            .thread_name("cartflow-http")
            .enable_io()
            .enable_time()
            .build()?;
        let draining = Arc::new(AtomicBool::new(false));
        let app = app(engine.clone(), tokens, config, Arc::clone(&draining));
        let (stop, stopped) = oneshot::channel();
        let limits = config.limits();
        let thread = thread::Builder::new()
            .name("cartflow-http".into())
            .spawn(move || serve(runtime, listener, app, stopped, limits, draining))?;
        let workers = (config.workers > 0).then(|| engine.start_workers(config.workers));
        Ok(Server {
            addr,
            stop: Some(stop),
            thread: Some(thread),
            workers,
            engine: Some(engine),
        })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops gracefully: `/readyz` answers 503 (for the configured drain delay), then no new
    /// connections, in-flight requests finish (for up to the configured grace), then the
    /// workers stop after the operations in hand.
    pub fn shutdown(mut self) {
        self.stop_all();
    }

    fn stop_all(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the HTTP server thread panicked");
        }
        if let Some(workers) = self.workers.take() {
            workers.stop();
        }
        drop(self.engine.take());
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// The server thread: serves until `stopped` fires (or its sender is dropped), then drains.
fn serve(
    runtime: tokio::runtime::Runtime,
    listener: std::net::TcpListener,
    app: Router,
    stopped: oneshot::Receiver<()>,
    limits: server::Limits,
    draining: Arc<AtomicBool>,
) {
    runtime.block_on(async move {
        match tokio::net::TcpListener::from_std(listener) {
            Ok(listener) => server::serve(listener, app, limits, stopped, draining).await,
            Err(e) => tracing::error!(error = %e, "cannot listen"),
        }
    });
    // Engine calls cut off by the grace period finish on their own threads.
    runtime.shutdown_timeout(limits.grace);
}
