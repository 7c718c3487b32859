//! The operator's surface of the HTTP server: `/healthz`, `/readyz`, Prometheus `/metrics`,
//! request Ids; and a clean stop of `cartflow serve --workers 0` on PostgreSQL.

#![cfg(all(feature = "http", unix))]

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use cartflow::error::StoreError;
use cartflow::sample::{self, SampleCart};
use cartflow::{Engine, MemoryStore, Store};
use serde_json::json;

#[path = "support/mod.rs"]
mod support;

/// How long any wait may take before the test gives up (a hang, not a measurement).
const DEADLINE: Duration = Duration::from_secs(60);
const BUYER: &str = "buyer-token";

/// Metrics are one registry per process and the queue-depth gauge is set at each scrape:
/// the tests that read `/metrics` take turns.
static METRICS: Mutex<()> = Mutex::new(());

fn agent() -> ureq::Agent {
    support::server::agent(DEADLINE)
}

struct Reply {
    status: u16,
    request_id: Option<String>,
    text: String,
}

fn get(base: &str, path: &str, request_id: Option<&str>) -> Reply {
    let mut request = agent().get(format!("{base}{path}"));
    if let Some(id) = request_id {
        request = request.header("X-Request-Id", id);
    }
    let response = request.call().expect("the server answers");
    let status = response.status().as_u16();
    let request_id = response
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let text = response.into_body().read_to_string().unwrap();
    Reply {
        status,
        request_id,
        text,
    }
}

fn config() -> cartflow::http::ServerConfig {
    cartflow::http::ServerConfig {
        addr: "127.0.0.1:0".parse().unwrap(),
        workers: 0,
        ..cartflow::http::ServerConfig::default()
    }
}

fn start(store: Arc<dyn Store>, config: &cartflow::http::ServerConfig) -> (Engine, Server) {
    let engine = Engine::new(store).with_integrations(sample::integrations(&sample::dataset()));
    let tokens = cartflow::http::Tokens::new().with(BUYER, sample::buyer_id());
    let server = cartflow::http::Server::start(engine.clone(), tokens, config).unwrap();
    let base = format!("http://{}", server.local_addr());
    (engine, Server { server, base })
}

struct Server {
    server: cartflow::http::Server,
    base: String,
}

fn sample_store() -> Arc<dyn Store> {
    Arc::new(MemoryStore::from_dataset(sample::dataset()).unwrap())
}

/// A store whose reads fail once `failing` is set (a database that went away).
struct FailingStore {
    inner: MemoryStore,
    failing: AtomicBool,
}

impl FailingStore {
    fn check(&self) -> Result<(), StoreError> {
        if self.failing.load(Ordering::SeqCst) {
            Err(StoreError::Io("connection refused (a test failure)".into()))
        } else {
            Ok(())
        }
    }
}

impl Store for FailingStore {
    delegate_store!(inner, before check? => user, load, commit, claimable_operations,
        expired_operations, cart, carts_after, cart_items, cart_item, validation_output, session, sessions_of,
        operation, operations_of, order, validation_outputs, history, events_after, last_event, webhook_cursor, advance_webhook, deliveries, operation_counts, web_stores, owner_of,
        begin_keyed, keep_answer, release_key);
}

#[test]
fn healthz_answers_200_while_the_store_answers_and_503_with_a_reason_when_its_reads_fail() {
    let store = Arc::new(FailingStore {
        inner: MemoryStore::from_dataset(sample::dataset()).unwrap(),
        failing: AtomicBool::new(false),
    });
    let (_, s) = start(store.clone(), &config());
    let healthy = get(&s.base, "/healthz", None);
    assert_eq!(healthy.status, 200, "{}", healthy.text);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&healthy.text).unwrap(),
        json!({"status": "ok"})
    );

    store.failing.store(true, Ordering::SeqCst);
    let sick = get(&s.base, "/healthz", None);
    assert_eq!(sick.status, 503, "{}", sick.text);
    let body: serde_json::Value = serde_json::from_str(&sick.text).unwrap();
    assert_eq!(body["status"], "unavailable");
    let reason = body["reason"].as_str().unwrap();
    assert!(reason.contains("store"), "{reason}");
    assert!(
        !reason.contains("connection refused"),
        "the cause stays in the log"
    );
    // Readiness is about serving, not about the store.
    assert_eq!(get(&s.base, "/readyz", None).status, 200);

    store.failing.store(false, Ordering::SeqCst);
    assert_eq!(get(&s.base, "/healthz", None).status, 200);
}

#[test]
fn readyz_answers_200_while_serving_and_503_while_the_server_drains() {
    let (_, s) = start(
        sample_store(),
        &cartflow::http::ServerConfig {
            drain_delay: Duration::from_secs(5),
            ..config()
        },
    );
    let base = s.base.clone();
    let ready = get(&base, "/readyz", None);
    assert_eq!(
        (ready.status, ready.text.as_str()),
        (200, r#"{"status":"ready"}"#)
    );

    let stopping = thread::spawn(move || s.server.shutdown());
    let started = Instant::now();
    let draining = loop {
        let reply = get(&base, "/readyz", None);
        if reply.status != 200 {
            break reply;
        }
        assert!(started.elapsed() < DEADLINE, "readyz never turned 503");
        thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(draining.status, 503, "{}", draining.text);
    assert!(draining.text.contains("draining"), "{}", draining.text);
    // Still serving while it drains.
    assert_eq!(get(&base, "/services/data/", None).status, 200);
    stopping.join().unwrap();
}

#[test]
fn every_answer_carries_a_request_id_and_a_clients_own_is_kept() {
    let (_, s) = start(sample_store(), &config());
    let fresh = get(&s.base, "/services/data/", None);
    let id = fresh.request_id.expect("an X-Request-Id");
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "a UUID: {id}");
    let other = get(&s.base, "/services/data/", None).request_id.unwrap();
    assert_ne!(id, other, "one Id per request");

    let echoed = get(&s.base, "/services/data/", Some("trace-from-the-client-42"));
    assert_eq!(
        echoed.request_id.as_deref(),
        Some("trace-from-the-client-42")
    );
    let missing = get(&s.base, "/no/such/route", Some("lost-42"));
    assert_eq!(missing.status, 404);
    assert_eq!(missing.request_id.as_deref(), Some("lost-42"));
}

/// The value of the sample `line` starts with in Prometheus text, if any.
fn sample_value(metrics: &str, line_start: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn metrics_show_requests_latency_operations_and_queue_depth() {
    let _turn = METRICS.lock().unwrap_or_else(|e| e.into_inner());
    let (engine, s) = start(sample_store(), &config());
    for _ in 0..3 {
        assert_eq!(get(&s.base, "/services/data/", None).status, 200);
    }
    assert_eq!(
        get(&s.base, "/services/data/v64.0/no/such/thing", None).status,
        404
    );

    // An inventory check waits in the queue (this server runs no worker) ...
    let buyer = sample::buyer_id().to_string();
    sample::lock_inventory_step(&engine, &buyer, SampleCart::InStock.id()).unwrap();
    let cart = json!({"cartId": SampleCart::InStock.id().to_string()});
    let invoked = engine.invoke("checkCartInventoryAction", &cart, &buyer);
    assert!(invoked.is_success, "{invoked:?}");
    let queued = get(&s.base, "/metrics", None);
    assert_eq!(queued.status, 200);
    assert_eq!(
        sample_value(&queued.text, r#"cartflow_queue_depth{status="New"}"#),
        Some(1.0),
        "{}",
        queued.text
    );

    // ... until a worker of this process runs it.
    assert_eq!(engine.run_until_idle().unwrap(), 1);
    let metrics = get(&s.base, "/metrics", None).text;
    assert_eq!(
        sample_value(&metrics, r#"cartflow_queue_depth{status="New"}"#),
        Some(0.0)
    );
    let passed = r#"cartflow_operations_total{name="checkCartInventoryAction",outcome="passed"}"#;
    assert!(
        sample_value(&metrics, passed).is_some_and(|n| n >= 1.0),
        "{metrics}"
    );
    let answered =
        r#"cartflow_http_requests_total{method="GET",route="/services/data/",status="200"}"#;
    assert!(
        sample_value(&metrics, answered).is_some_and(|n| n >= 3.0),
        "{metrics}"
    );
    let histogram = r#"cartflow_http_request_duration_seconds_bucket{method="GET",route="/services/data/",le="+Inf"}"#;
    assert!(
        sample_value(&metrics, histogram).is_some_and(|n| n >= 3.0),
        "{metrics}"
    );
    assert!(metrics.contains(
        r#"cartflow_http_request_duration_seconds_count{method="GET",route="/services/data/"}"#
    ));
    // Unmatched paths share one label: no raw path, so no record Id, becomes a series.
    assert!(
        metrics.contains(r#"route="unmatched",status="404""#),
        "{metrics}"
    );
    assert!(!metrics.contains("no/such/thing"));
    // Counters nothing has incremented yet are listed at 0.
    for counter in [
        "cartflow_worker_restarts_total ",
        "cartflow_lease_expiries_total ",
        r#"cartflow_operations_total{name="activateOrderAction",outcome="system_failure"} "#,
    ] {
        assert!(
            sample_value(&metrics, counter).is_some(),
            "{counter}: {metrics}"
        );
    }
}

/// `cartflow serve --workers 0` on PostgreSQL stops cleanly on SIGTERM: exit 0 and no panic
/// (the synchronous PostgreSQL client must not be dropped inside the server's runtime).
#[test]
fn serve_without_workers_on_postgresql_stops_cleanly_on_sigterm() {
    let Some(db) = support::postgres() else {
        return;
    };
    let store = cartflow::store::PostgresStore::connect(db.url()).unwrap();
    store.import(&sample::dataset()).unwrap();
    drop(store);
    let support::server::Listening {
        mut child,
        lines: received,
        mut seen,
        address,
    } = support::server::start_listening(
        Command::new(env!("CARGO_BIN_EXE_cartflow"))
            .args(["serve", "--addr", "127.0.0.1:0", "--workers", "0", "--data"])
            .arg(db.cli_url()),
        DEADLINE,
    );
    // Requests that use the store's connections before the stop.
    let base = format!("http://{address}");
    assert_eq!(get(&base, "/healthz", None).status, 200);
    let metrics = get(&base, "/metrics", None);
    assert!(
        metrics.text.contains("cartflow_queue_depth"),
        "{}",
        metrics.text
    );

    assert!(support::server::sigterm(&child));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > DEADLINE {
            let _ = child.kill();
            panic!("serve did not stop: {seen:?}");
        }
        thread::sleep(Duration::from_millis(20));
    };
    seen.extend(received.iter());
    assert_eq!(status.code(), Some(0), "stderr: {seen:#?}");
    assert!(
        !seen.iter().any(|l| l.contains("panicked")),
        "stderr: {seen:#?}"
    );
    assert!(seen.iter().any(|l| l.ends_with("stopped")), "{seen:#?}");
}
