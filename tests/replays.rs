//! Repeated writes over HTTP: the documented refusal by default, and the opt-in replay of an
//! `Idempotency-Key` (same key and body: the first answer, nothing run again; another body or
//! route: 422; while the first runs: 409; after the kept time: a new key). Also the record
//! routes' answers about records a caller cannot see, and the BackgroundOperation's fields.

#![cfg(feature = "http")]

mod support;

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cartflow::clock::ManualClock;
use cartflow::http::{Server, ServerConfig, Tokens};
use cartflow::model::{
    BackgroundOperation, CartCheckoutSession, CartStatus, KeyPrefix, SessionState, SfId,
};
use cartflow::sample::{self, SampleCart};
use cartflow::store::{Commit, DataSet, Durability, SqliteStore};
use cartflow::{Engine, Store, StoreError};
use chrono::{TimeZone, Utc};
use serde_json::{Value, json};
use tempfile::TempDir;

const V: &str = "v64.0";
const BUYER: &str = "buyer-token";
const STRANGER: &str = "stranger-token";
const KEY_TTL: Duration = Duration::from_secs(60 * 60);

/// A commit that waits, once armed, until the test lets it go: a request in flight.
struct Gate {
    entered: mpsc::Sender<()>,
    release: mpsc::Receiver<()>,
}

/// The SQLite store, with commits that can be held.
struct Gated {
    inner: SqliteStore,
    gate: Mutex<Option<Gate>>,
}

impl Store for Gated {
    fn commit(&self, commit: &Commit) -> Result<(), StoreError> {
        let gate = self.gate.lock().unwrap().take();
        if let Some(gate) = gate {
            gate.entered.send(()).unwrap();
            gate.release.recv().unwrap();
        }
        self.inner.commit(commit)
    }
    delegate_store!(inner => user, load, claimable_operations, expired_operations, cart,
        carts_after, cart_items, cart_item, validation_output, session, sessions_of, operation, operations_of,
        order, validation_outputs, history, events_after, last_event, webhook_cursor, advance_webhook, deliveries, begin_keyed, keep_answer, release_key,
        operation_counts, web_stores, owner_of);
}

/// The in-stock cart in Checkout with its session locked at Inventory, as Update Checkout
/// Session leaves it.
fn locked_at_inventory() -> (DataSet, SfId) {
    let mut data = sample::dataset();
    let cart = SampleCart::InStock.id();
    data.carts.iter_mut().find(|c| c.id == cart).unwrap().status = CartStatus::Checkout;
    let session = SfId::from_number(KeyPrefix::CartCheckoutSession, 7_001);
    data.sessions.push(CartCheckoutSession {
        id: session,
        web_cart_id: cart,
        state: Some(SessionState::Inventory),
        next_state: Some(SessionState::ConfirmPrice),
        is_processing: true,
        is_error: false,
        is_archived: false,
        background_operation_id: None,
        order_id: None,
        created_date: None,
        version: 0,
    });
    (data, session)
}

struct Fixture {
    _server: Server,
    base: String,
    agent: ureq::Agent,
    engine: Engine,
    store: Arc<Gated>,
    clock: Arc<ManualClock>,
    session: SfId,
    _dir: TempDir,
}

/// One answer: status, the replay header, and the body as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Reply {
    status: u16,
    replayed: bool,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    fn error_code(&self) -> String {
        self.json()[0]["errorCode"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

fn start() -> Fixture {
    let (data, session) = locked_at_inventory();
    let dir = tempfile::tempdir().unwrap();
    let inner = SqliteStore::open(dir.path().join("cartflow.db"), Durability::Normal).unwrap();
    inner.import(&data).unwrap();
    let store = Arc::new(Gated {
        inner,
        gate: Mutex::new(None),
    });
    let clock = Arc::new(ManualClock::new(
        Utc.with_ymd_and_hms(2026, 3, 1, 9, 0, 0).unwrap(),
    ));
    let engine = Engine::new(store.clone())
        .with_integrations(sample::integrations(&data))
        .with_clock(clock.clone());
    let tokens = Tokens::new()
        .with(BUYER, sample::buyer_id())
        .with(STRANGER, sample::stranger_id());
    let config = ServerConfig {
        addr: "127.0.0.1:0".parse().unwrap(),
        workers: 0,
        idempotency_ttl: KEY_TTL,
        ..ServerConfig::default()
    };
    let server = Server::start(engine.clone(), tokens, &config).unwrap();
    let base = format!("http://{}/services/data/{V}", server.local_addr());
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(120)))
        .build()
        .new_agent();
    Fixture {
        _server: server,
        base,
        agent,
        engine,
        store,
        clock,
        session,
        _dir: dir,
    }
}

fn reply(response: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Reply {
    let response = response.expect("the server answers");
    let status = response.status().as_u16();
    let replayed = response
        .headers()
        .get(cartflow::http::REPLAYED_HEADER)
        .is_some_and(|v| v == "true");
    let body = response.into_body().read_to_string().unwrap();
    Reply {
        status,
        replayed,
        body,
    }
}

impl Fixture {
    fn post(&self, token: &str, path: &str, body: &str, key: Option<&str>) -> Reply {
        let mut request = self
            .agent
            .post(format!("{}{path}", self.base))
            .header("Authorization", format!("Bearer {token}"));
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        reply(request.send(body))
    }

    fn patch(&self, token: &str, path: &str, body: &str, key: Option<&str>) -> Reply {
        let mut request = self
            .agent
            .patch(format!("{}{path}", self.base))
            .header("Authorization", format!("Bearer {token}"));
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        reply(request.send(body))
    }

    fn get(&self, token: &str, path: &str) -> Reply {
        reply(
            self.agent
                .get(format!("{}{path}", self.base))
                .header("Authorization", format!("Bearer {token}"))
                .call(),
        )
    }

    fn inventory(&self, key: Option<&str>) -> Reply {
        self.post(
            BUYER,
            "/actions/standard/checkCartInventoryAction",
            &inventory_body(),
            key,
        )
    }

    fn operations(&self) -> Vec<BackgroundOperation> {
        self.store.operations_of(&SampleCart::InStock.id()).unwrap()
    }
}

fn inventory_body() -> String {
    json!({"inputs": [{"cartId": SampleCart::InStock.id().to_string()}]}).to_string()
}

#[test]
fn without_a_key_a_step_repeated_after_it_completed_is_refused_invalid_operation_403() {
    let f = start();
    assert_eq!(f.inventory(None).status, 200);
    f.engine.run_until_idle().unwrap();
    let again = f.inventory(None);
    assert_eq!(again.status, 403, "{}", again.body);
    assert_eq!(
        again.json()[0]["errors"][0]["statusCode"],
        "INVALID_OPERATION"
    );
    assert!(!again.replayed);
    assert_eq!(f.operations().len(), 1);
}

#[test]
fn the_same_key_and_body_answer_the_first_answer_and_run_nothing_again() {
    let f = start();
    let first = f.inventory(Some("inv-1"));
    assert_eq!(first.status, 200, "{}", first.body);
    assert!(!first.replayed);
    f.engine.run_until_idle().unwrap();
    let history = f.store.history(&SampleCart::InStock.id()).unwrap().len();
    for _ in 0..2 {
        let again = f.inventory(Some("inv-1"));
        assert_eq!((again.status, &again.body), (first.status, &first.body));
        assert!(again.replayed);
    }
    assert_eq!(f.operations().len(), 1, "one operation");
    assert_eq!(
        f.store.history(&SampleCart::InStock.id()).unwrap().len(),
        history,
        "nothing ran again"
    );
    // A refusal is kept and replayed as well.
    let refused = f.inventory(Some("inv-2"));
    assert_eq!(refused.status, 403);
    assert_eq!(
        f.inventory(Some("inv-2")),
        Reply {
            replayed: true,
            ..refused
        }
    );
}

#[test]
fn the_same_key_with_another_body_or_route_is_unprocessable_422() {
    let f = start();
    assert_eq!(f.inventory(Some("k")).status, 200);
    let other_body = json!({"inputs": [{"cartId": SampleCart::ShortStock.id().to_string()}]});
    let reused = f.post(
        BUYER,
        "/actions/standard/checkCartInventoryAction",
        &other_body.to_string(),
        Some("k"),
    );
    assert_eq!(reused.status, 422, "{}", reused.body);
    assert_eq!(reused.error_code(), "IDEMPOTENCY_KEY_REUSED");
    let other_route = f.post(
        BUYER,
        "/actions/standard/priceCart",
        &inventory_body(),
        Some("k"),
    );
    assert_eq!(other_route.status, 422);
    assert_eq!(other_route.error_code(), "IDEMPOTENCY_KEY_REUSED");
    assert_eq!(f.operations().len(), 1, "nothing else ran");
    // Keys are per user: the stranger's "k" is a key of its own.
    let stranger = f.post(
        STRANGER,
        "/actions/standard/checkCartInventoryAction",
        &inventory_body(),
        Some("k"),
    );
    assert_eq!(stranger.status, 500, "{}", stranger.body);
    assert!(!stranger.replayed);
}

#[test]
fn a_repeat_while_the_first_request_runs_is_conflict_409() {
    let f = Arc::new(start());
    let (entered_tx, entered) = mpsc::channel();
    let (release, release_rx) = mpsc::channel();
    *f.store.gate.lock().unwrap() = Some(Gate {
        entered: entered_tx,
        release: release_rx,
    });
    let first = {
        let f = Arc::clone(&f);
        std::thread::spawn(move || f.inventory(Some("slow")))
    };
    entered
        .recv_timeout(Duration::from_secs(60))
        .expect("the first request reaches its commit");
    let during = f.inventory(Some("slow"));
    assert_eq!(during.status, 409, "{}", during.body);
    assert_eq!(during.error_code(), "IDEMPOTENCY_KEY_IN_USE");
    release.send(()).unwrap();
    let first = first.join().unwrap();
    assert_eq!(first.status, 200, "{}", first.body);
    let after = f.inventory(Some("slow"));
    assert_eq!((after.status, &after.body), (200, &first.body));
    assert_eq!(f.operations().len(), 1);
}

#[test]
fn a_key_is_new_again_once_its_kept_time_has_passed() {
    let f = start();
    let first = f.inventory(Some("daily"));
    assert_eq!(first.status, 200);
    f.engine.run_until_idle().unwrap();
    f.clock
        .advance(chrono::Duration::from_std(KEY_TTL).unwrap() - chrono::Duration::seconds(1));
    assert!(f.inventory(Some("daily")).replayed, "still kept");
    f.clock.advance(chrono::Duration::seconds(1));
    // The key is new: the request runs, and meets the documented refusal of a repeat.
    let later = f.inventory(Some("daily"));
    assert!(!later.replayed);
    assert_eq!(later.status, 403, "{}", later.body);
    assert_eq!(f.operations().len(), 1);
}

#[test]
fn a_malformed_key_is_bad_request_400_and_runs_nothing() {
    let f = start();
    let long = "k".repeat(cartflow::http::MAX_KEY_LENGTH + 1);
    for key in [long.as_str(), "tab\there"] {
        let answer = f.inventory(Some(key));
        assert_eq!(answer.status, 400, "{}", answer.body);
        assert_eq!(answer.error_code(), "INVALID_IDEMPOTENCY_KEY");
    }
    let longest = "k".repeat(cartflow::http::MAX_KEY_LENGTH);
    assert_eq!(f.inventory(Some(&longest)).status, 200);
    assert_eq!(f.operations().len(), 1);
}

#[test]
fn a_patch_with_a_key_is_replayed_with_its_204() {
    let f = start();
    f.engine
        .execute(
            &sample::buyer_id().to_string(),
            cartflow::machine::Command::Cancel {
                cart_id: SampleCart::InStock.id().to_string(),
            },
        )
        .unwrap();
    let start = f.post(
        BUYER,
        "/actions/standard/checkoutSessionAction",
        &inventory_body(),
        None,
    );
    let session = start.json()[0]["outputValues"]["requestId"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/sobjects/CartCheckoutSession/{session}");
    let body = r#"{"State": "Shipping Address"}"#;
    let first = f.patch(BUYER, &path, body, Some("screen-1"));
    assert_eq!((first.status, first.body.as_str()), (204, ""));
    let again = f.patch(BUYER, &path, body, Some("screen-1"));
    assert_eq!(
        (again.status, again.body.as_str(), again.replayed),
        (204, "", true)
    );
    // Without the key the repeat runs, and the table refuses the move from Shipping Address.
    assert_eq!(f.patch(BUYER, &path, body, None).status, 403);
    let reused = f.patch(BUYER, &path, r#"{"State": "Inventory"}"#, Some("screen-1"));
    assert_eq!(reused.status, 422);
}

#[test]
fn patching_a_foreign_record_answers_exactly_as_a_missing_one() {
    let f = start();
    let missing_session = SfId::from_number(KeyPrefix::CartCheckoutSession, 9_999);
    let missing_cart = SfId::from_number(KeyPrefix::WebCart, 9_999);
    let pairs = [
        (
            format!("/sobjects/CartCheckoutSession/{}", f.session),
            format!("/sobjects/CartCheckoutSession/{missing_session}"),
            r#"{"State": "Confirm Price"}"#,
        ),
        (
            format!("/sobjects/WebCart/{}", SampleCart::InStock.id()),
            format!("/sobjects/WebCart/{missing_cart}"),
            r#"{"PaymentToken": "tok"}"#,
        ),
    ];
    for (foreign, missing, body) in pairs {
        let a = f.patch(STRANGER, &foreign, body, None);
        let b = f.patch(STRANGER, &missing, body, None);
        assert_eq!(a, b, "{foreign}");
        assert_eq!(a.status, 404);
    }
}

#[test]
fn a_background_operation_is_served_with_salesforce_field_names() {
    let f = start();
    let answer = f.inventory(None);
    let op = answer.json()[0]["outputValues"]["backgroundOperationId"]
        .as_str()
        .unwrap()
        .to_owned();
    f.engine.run_until_idle().unwrap();
    let record = f
        .get(BUYER, &format!("/sobjects/BackgroundOperation/{op}"))
        .json();
    for field in [
        "RetryCount",
        "RetryLimit",
        "Timeout",
        "SubmittedAt",
        "StartedAt",
        "FinishedAt",
        "ExpiresAt",
        "Status",
        "Error",
        "Name",
    ] {
        assert!(record.get(field).is_some(), "no {field} in {record}");
    }
    for field in ["Attempt", "TimeoutMs"] {
        assert!(record.get(field).is_none(), "{field} in {record}");
    }
    assert_eq!(record["RetryCount"], 1);
    assert_eq!(record["Timeout"], 120_000);
    assert_eq!(record["Status"], "Complete");
}
