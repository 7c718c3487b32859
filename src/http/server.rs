//! The accept loop: hyper's HTTP/1 connections with a header read timeout and a connection
//! cap that one client cannot use to lock others out.
//!
//! At the cap, a new connection evicts the connection that has been idle longest (no request
//! in flight: a silent socket, a keep-alive connection between requests, or a client still
//! sending its headers). Only when every connection has a request in flight is the newcomer
//! answered a quick 503 and closed. Hyper's header read timeout runs from the moment a
//! connection is accepted and again from the end of each response, so it also bounds how long
//! a keep-alive connection may idle between requests.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinSet;
use tower::ServiceExt as _;

/// How long the accept loop pauses after a failed accept (out of descriptors, ...), so that a
/// persistent failure does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// The body of the answer to a connection refused because every connection is busy.
const BUSY_BODY: &str =
    r#"[{"errorCode":"SERVER_UNAVAILABLE","message":"Every connection is busy; retry shortly"}]"#;

/// What the accept loop enforces.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub header_timeout: Duration,
    pub max_connections: usize,
    pub grace: Duration,
    pub drain_delay: Duration,
}

/// The open connections: whether each has a request in flight, and since when it is idle.
#[derive(Default)]
struct Registry {
    slots: Mutex<Slots>,
}

#[derive(Default)]
struct Slots {
    next_id: u64,
    open: HashMap<u64, Slot>,
}

struct Slot {
    in_flight: usize,
    idle_since: Instant,
    evict: Option<oneshot::Sender<()>>,
}

/// Whether a new connection may be served.
enum Admission {
    Admitted {
        id: u64,
        evicted: oneshot::Receiver<()>,
    },
    Busy,
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes room for a new connection (evicting the longest-idle one at the cap), or
    /// refuses it when every connection has a request in flight.
    fn admit(&self, cap: usize) -> Admission {
        let mut slots = self.lock();
        if slots.open.len() >= cap.max(1) && !slots.evict_longest_idle() {
            return Admission::Busy;
        }
        let (evict, evicted) = oneshot::channel();
        slots.next_id += 1;
        let id = slots.next_id;
        let slot = Slot {
            in_flight: 0,
            idle_since: Instant::now(),
            evict: Some(evict),
        };
        slots.open.insert(id, slot);
        Admission::Admitted { id, evicted }
    }

    /// Evicts the longest-idle connection, to free a descriptor after a failed accept.
    fn evict_one(&self) -> bool {
        self.lock().evict_longest_idle()
    }

    fn close(&self, id: u64) {
        self.lock().open.remove(&id);
    }

    fn begin_request(&self, id: u64) {
        if let Some(slot) = self.lock().open.get_mut(&id) {
            slot.in_flight += 1;
        }
    }

    fn end_request(&self, id: u64) {
        if let Some(slot) = self.lock().open.get_mut(&id) {
            slot.in_flight = slot.in_flight.saturating_sub(1);
            slot.idle_since = Instant::now();
        }
    }
}

impl Slots {
    fn evict_longest_idle(&mut self) -> bool {
        let victim = self
            .open
            .iter()
            .filter(|(_, slot)| slot.in_flight == 0)
            .min_by_key(|(_, slot)| slot.idle_since)
            .map(|(id, _)| *id);
        let Some(mut slot) = victim.and_then(|id| self.open.remove(&id)) else {
            return false;
        };
        if let Some(evict) = slot.evict.take() {
            let _ = evict.send(());
        }
        true
    }
}

/// Marks a request in flight on its connection for as long as it lives (its response is
/// written, or the request was dropped).
struct InFlight {
    registry: Arc<Registry>,
    id: u64,
}

impl InFlight {
    fn begin(registry: &Arc<Registry>, id: u64) -> InFlight {
        registry.begin_request(id);
        InFlight {
            registry: Arc::clone(registry),
            id,
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.registry.end_request(self.id);
    }
}

/// Serves `app` on `listener` until `stop` fires (or its sender is dropped). Then `draining`
/// is set (`/readyz` answers 503) and, after `drain_delay`, the listener is closed, every
/// connection is shut down gracefully (idle ones at once, busy ones after their response),
/// and the loop waits up to `grace` for them before it drops the rest.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    mut stop: oneshot::Receiver<()>,
    draining: Arc<AtomicBool>,
) {
    let registry = Arc::new(Registry::default());
    let (shutdown, shutdown_seen) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut stop_at: Option<tokio::time::Instant> = None;
    loop {
        while connections.try_join_next().is_some() {}
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = &mut stop, if stop_at.is_none() => {
                draining.store(true, Ordering::Release);
                stop_at = Some(tokio::time::Instant::now() + limits.drain_delay);
                continue;
            }
            _ = sleep_until(stop_at) => break,
        };
        match accepted {
            Ok((stream, _)) => {
                let admission = registry.admit(limits.max_connections);
                match admission {
                    Admission::Admitted { id, evicted } => {
                        let connection = Connection {
                            registry: Arc::clone(&registry),
                            id,
                            app: app.clone(),
                            header_timeout: limits.header_timeout,
                        };
                        connections.spawn(connection.run(stream, evicted, shutdown_seen.clone()));
                    }
                    Admission::Busy => refuse(stream),
                }
            }
            Err(e) => {
                // Out of descriptors (or another failure of the listener): free one if an
                // idle connection holds it, and pause rather than spin.
                let freed = registry.evict_one();
                tracing::warn!(error = %e, freed_idle_connection = freed, "accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
    drop(listener);
    let _ = shutdown.send(true);
    let drained = tokio::time::timeout(limits.grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            grace_ms = limits.grace.as_millis() as u64,
            "requests still in flight after the grace period; closing them"
        );
    }
}

/// Sleeps until `at`, or forever when there is no such time yet.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Answers a connection the server has no room for and closes it, without waiting: a fresh
/// socket's send buffer takes the few bytes at once.
fn refuse(stream: TcpStream) {
    tracing::warn!("every connection has a request in flight; refused one with 503");
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json;charset=UTF-8\r\n\
         retry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{BUSY_BODY}",
        BUSY_BODY.len()
    );
    let _ = stream.try_write(response.as_bytes());
}

/// One accepted connection.
struct Connection {
    registry: Arc<Registry>,
    id: u64,
    app: Router,
    header_timeout: Duration,
}

impl Connection {
    async fn run(
        self,
        stream: TcpStream,
        mut evicted: oneshot::Receiver<()>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let Connection {
            registry,
            id,
            app,
            header_timeout,
        } = self;
        let service = {
            let registry = Arc::clone(&registry);
            hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
                let in_flight = InFlight::begin(&registry, id);
                let app = app.clone();
                async move {
                    let response = app.oneshot(request.map(Body::new)).await;
                    drop(in_flight);
                    response
                }
            })
        };
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout);
        let connection = builder.serve_connection(TokioIo::new(stream), service);
        tokio::pin!(connection);
        let finished = tokio::select! {
            finished = connection.as_mut() => Some(finished),
            // Evicted with no request in flight: dropping the connection closes the socket.
            _ = &mut evicted => None,
            _ = shutdown.changed() => {
                connection.as_mut().graceful_shutdown();
                Some(connection.as_mut().await)
            }
        };
        if let Some(Err(e)) = finished {
            tracing::debug!(error = %e, "connection ended");
        }
        registry.close(id);
    }
}
