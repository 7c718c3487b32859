//! The operator's routes: `/healthz` (the store answers), `/readyz` (the server takes
//! traffic) and `/metrics` (Prometheus text), plus the middleware that counts and times every
//! request. None of them needs a token: they belong on an internal network.

use std::sync::OnceLock;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde_json::json;

use super::{AppState, blocking, error};
use crate::machine::{Action, PAYMENT_OPERATION};
use crate::model::{KeyPrefix, SfId};

/// How long `/healthz` waits for the store before it answers 503.
pub(crate) const HEALTH_TIMEOUT: Duration = Duration::from_secs(5);

/// The route label of a request that matched no route (bounds the label's values).
const UNMATCHED_ROUTE: &str = "unmatched";

/// The latency histogram's buckets, in seconds.
const LATENCY_BUCKETS: [f64; 14] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

const REQUESTS: &str = "cartflow_http_requests_total";
const LATENCY: &str = "cartflow_http_request_duration_seconds";
const QUEUE_DEPTH: &str = "cartflow_queue_depth";

/// The `outcome` label values of `cartflow_operations_total`, as the workers report them.
const OPERATION_OUTCOMES: [&str; 4] = ["passed", "failed", "system_failure", "discarded"];

/// The process's one Prometheus recorder, installed by the first server or router built
/// (tests start many servers in one process; a recorder can be installed only once).
/// `None` when another recorder was installed first: `/metrics` then answers 503.
static PROMETHEUS: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the recorder once and describes every metric, so that `/metrics` lists the
/// counters nothing has incremented yet at 0.
pub(crate) fn install_recorder() -> Option<&'static PrometheusHandle> {
    PROMETHEUS
        .get_or_init(|| {
            let installed = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(LATENCY.into()), &LATENCY_BUCKETS)
                .and_then(PrometheusBuilder::install_recorder);
            match installed {
                Ok(handle) => {
                    describe_metrics();
                    Some(handle)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "no Prometheus recorder: /metrics answers 503");
                    None
                }
            }
        })
        .as_ref()
}

fn describe_metrics() {
    metrics::describe_counter!(
        REQUESTS,
        "HTTP requests answered, by method, route and status"
    );
    metrics::describe_histogram!(
        LATENCY,
        metrics::Unit::Seconds,
        "Time to answer an HTTP request, by method and route"
    );
    metrics::describe_counter!(
        "cartflow_operations_total",
        "Background operations a worker of this process finished, by name and outcome"
    );
    metrics::describe_counter!(
        "cartflow_lease_expiries_total",
        "Claims this process's workers ended because their lease ran out"
    );
    metrics::describe_counter!(
        "cartflow_worker_restarts_total",
        "Worker threads of this process that died and were restarted"
    );
    metrics::describe_gauge!(
        QUEUE_DEPTH,
        "Operations in the store that are New or Running, read at each scrape"
    );
    metrics::counter!("cartflow_lease_expiries_total").increment(0);
    metrics::counter!("cartflow_worker_restarts_total").increment(0);
    // Every operation and outcome at 0, so a fresh server lists them and a rate over the
    // first operation of a kind is right.
    let operations = Action::ALL
        .into_iter()
        .filter(|a| {
            a.provider_kind().is_some() || matches!(a, Action::CartToOrder | Action::ActivateOrder)
        })
        .map(Action::api_name)
        .chain([PAYMENT_OPERATION]);
    for name in operations {
        for outcome in OPERATION_OUTCOMES {
            metrics::counter!("cartflow_operations_total", "name" => name, "outcome" => outcome)
                .increment(0);
        }
    }
}

/// Counts and times each request under its route template (never the raw path, which holds
/// record Ids).
pub(crate) async fn record_request(request: Request, next: Next) -> Response {
    let method = request.method().as_str().to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or(UNMATCHED_ROUTE, MatchedPath::as_str)
        .to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::histogram!(LATENCY, "method" => method.clone(), "route" => route.clone())
        .record(started.elapsed().as_secs_f64());
    metrics::counter!(REQUESTS, "method" => method, "route" => route, "status" => status)
        .increment(1);
    response
}

/// `GET /metrics`: every metric of this process in Prometheus' text format, the queue depth
/// read from the store first.
pub(crate) async fn scrape(State(state): State<AppState>) -> Response {
    let Some(handle) = install_recorder() else {
        return plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "no metrics recorder\n".into(),
        );
    };
    let engine = state.0.engine.clone();
    match blocking(move || engine.store().operation_counts()).await {
        Ok(Ok(counts)) => {
            metrics::gauge!(QUEUE_DEPTH, "status" => "New").set(counts.new as f64);
            metrics::gauge!(QUEUE_DEPTH, "status" => "Running").set(counts.running as f64);
        }
        // The other metrics are still worth serving; the gauge keeps its last value.
        Ok(Err(e)) => tracing::warn!(error = %e, "cannot read the queue depth"),
        Err(e) => tracing::warn!(error = ?e, "cannot read the queue depth"),
    }
    plain(StatusCode::OK, handle.render())
}

/// `GET /healthz`: 200 when the store answers a read, 503 with a reason otherwise. The
/// store's own error goes to the log only (it may name hosts or files).
pub(crate) async fn healthz(State(state): State<AppState>) -> Response {
    let engine = state.0.engine.clone();
    // A primary-key read of an Id no user has: a round trip that finds nothing.
    let probe = SfId::from_number(KeyPrefix::User, 0);
    let read = blocking(move || engine.store().user(&probe));
    let reason = match tokio::time::timeout(HEALTH_TIMEOUT, read).await {
        Ok(Ok(Ok(_))) => return status_json(StatusCode::OK, "ok", None),
        Ok(Ok(Err(e))) => {
            tracing::error!(error = %e, "health check: the store failed a read");
            "the store failed a read; the server's log has the cause".to_owned()
        }
        Ok(Err(_)) => "the store read panicked; the server's log has the cause".to_owned(),
        Err(_) => format!(
            "the store did not answer within {} s",
            HEALTH_TIMEOUT.as_secs()
        ),
    };
    status_json(StatusCode::SERVICE_UNAVAILABLE, "unavailable", Some(reason))
}

/// `GET /readyz`: 200 while the server takes traffic, 503 once it is stopping.
pub(crate) async fn readyz(State(state): State<AppState>) -> Response {
    if state.0.draining.load(Ordering::Acquire) {
        let reason = "the server is stopping".to_owned();
        status_json(StatusCode::SERVICE_UNAVAILABLE, "draining", Some(reason))
    } else {
        status_json(StatusCode::OK, "ready", None)
    }
}

fn status_json(status: StatusCode, word: &str, reason: Option<String>) -> Response {
    let body = match reason {
        Some(reason) => json!({"status": word, "reason": reason}),
        None => json!({"status": word}),
    };
    error::json_response(status, &body)
}

fn plain(status: StatusCode, text: String) -> Response {
    let mut response = (status, text).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}
