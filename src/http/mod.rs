//! The HTTP facade: the engine behind Salesforce's REST shape (`domain.md` §5), so existing
//! Salesforce clients and tooling can drive a checkout with actions and record updates alone.
//!
//! | Route | Answer |
//! |---|---|
//! | `GET /services/data/` | the API versions |
//! | `GET /services/data/vNN.N/actions/standard` | the actions |
//! | `GET /services/data/vNN.N/actions/standard/{name}` | one action's inputs and outputs |
//! | `POST /services/data/vNN.N/actions/standard/{name}` | invoke it: one result per input |
//! | `GET /services/data/vNN.N/sobjects/{Object}/{Id}` | a record |
//! | `GET /services/data/vNN.N/sobjects/WebCart/{Id}/CartItems` (or `/CartValidationOutputs`) | a cart's related records |
//! | `PATCH /services/data/vNN.N/sobjects/CartCheckoutSession/{Id}` | a screen step (`State`) |
//! | `PATCH /services/data/vNN.N/sobjects/WebCart/{Id}` | a screen's input (`DeliverTo`, `DeliveryMethodId`, `PaymentToken`) |
//!
//! Every route but the versions list needs `Authorization: Bearer <token>` ([`Tokens`]); the
//! caller's permissions and sharing apply to every call and every record read. The engine is
//! synchronous, so each request's engine and store work runs on tokio's blocking pool.
//! `docs/http.md` documents the status rule, the limits and the error codes.
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
mod error;
mod idempotency;
mod records;
mod versions;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;
use http_body_util::BodyExt as _;
use tokio::sync::{Notify, oneshot};

pub use auth::{Tokens, TokensError};
pub use error::SfError;
pub use idempotency::{DEFAULT_KEY_TTL, IDEMPOTENCY_KEY_HEADER, MAX_KEY_LENGTH, REPLAYED_HEADER};
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
}

/// The facade's routes over `engine`, accepting `tokens`. Serve it with any axum server, or
/// use [`Server`], which also runs the workers and stops gracefully. Idempotency keys are
/// kept for [`DEFAULT_KEY_TTL`].
pub fn router(engine: Engine, tokens: Tokens) -> Router {
    router_keeping_keys(engine, tokens, DEFAULT_KEY_TTL)
}

/// [`router`], keeping each `Idempotency-Key` and its answer for `key_ttl`.
pub fn router_keeping_keys(engine: Engine, tokens: Tokens, key_ttl: Duration) -> Router {
    let state = AppState(Arc::new(Inner {
        engine,
        tokens,
        key_ttl,
    }));
    Router::new()
        .route("/services/data", get(list_versions))
        .route("/services/data/", get(list_versions))
        .route(
            "/services/data/{version}/actions/standard",
            get(actions::list),
        )
        .route(
            "/services/data/{version}/actions/standard/{name}",
            get(actions::describe).post(actions::invoke),
        )
        .route(
            "/services/data/{version}/sobjects/{object}/{id}",
            get(records::read).patch(records::update),
        )
        .route(
            "/services/data/{version}/sobjects/{object}/{id}/{relationship}",
            get(records::related),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn(log_request))
        .with_state(state)
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

/// One debug line per request: method, path, status, time. Never headers (tokens) or bodies.
async fn log_request(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    tracing::debug!(
        %method,
        path,
        status = response.status().as_u16(),
        ms = started.elapsed().as_millis() as u64,
        "request"
    );
    response
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
        let frame = frame.map_err(|_| {
            SfError::new(
                StatusCode::BAD_REQUEST,
                "JSON_PARSER_ERROR",
                "The request body could not be read",
            )
        })?;
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

/// Parses a JSON request body; 400 `JSON_PARSER_ERROR` when it is not JSON.
fn parse_json(body: &[u8]) -> Result<serde_json::Value, SfError> {
    serde_json::from_slice(body).map_err(|e| SfError::parser(format!("The body is not JSON: {e}")))
}

/// How [`Server`] runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Where to listen; port 0 picks a free port ([`Server::local_addr`] tells which).
    pub addr: SocketAddr,
    /// Worker threads running background operations in this process; 0 for none (when
    /// separate `cartflow worker` processes share the database).
    pub workers: usize,
    /// How long a stop waits for in-flight requests before it closes their connections.
    pub grace: Duration,
    /// How long an `Idempotency-Key` and its answer are kept (default 24 hours); after
    /// that the key is new again.
    pub idempotency_ttl: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            workers: 1,
            grace: Duration::from_secs(30),
            idempotency_ttl: DEFAULT_KEY_TTL,
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
        let app = router_keeping_keys(engine.clone(), tokens, config.idempotency_ttl);
        let (stop, stopped) = oneshot::channel();
        let grace = config.grace;
        let thread = thread::Builder::new()
            .name("cartflow-http".into())
            .spawn(move || serve(runtime, listener, app, stopped, grace))?;
        let workers = (config.workers > 0).then(|| engine.start_workers(config.workers));
        Ok(Server {
            addr,
            stop: Some(stop),
            thread: Some(thread),
            workers,
        })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops gracefully: no new connections, in-flight requests finish (for up to the
    /// configured grace), then the workers stop after the operations in hand.
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
    grace: Duration,
) {
    runtime.block_on(async move {
        let listener = match tokio::net::TcpListener::from_std(listener) {
            Ok(listener) => listener,
            Err(e) => {
                tracing::error!(error = %e, "cannot listen");
                return;
            }
        };
        let draining = Arc::new(Notify::new());
        let signal = Arc::clone(&draining);
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { signal.notified().await })
                .await
        });
        let _ = stopped.await;
        // notify_one keeps the wake-up should the server not be waiting yet.
        draining.notify_one();
        match tokio::time::timeout(grace, server).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::error!(error = %e, "the HTTP server failed"),
            Ok(Err(e)) => tracing::error!(error = %e, "the HTTP server task failed"),
            Err(_) => tracing::warn!(
                grace_ms = grace.as_millis() as u64,
                "requests still in flight after the grace period; closing them"
            ),
        }
    });
    // Engine calls cut off by the grace period finish on their own threads.
    runtime.shutdown_timeout(grace);
}
