//! The HTTP facade end to end, through an ordinary HTTP client: a whole checkout driven with
//! actions and record updates alone, authentication and sharing, the bulk shape and its
//! status rule, and the answers to bad requests. The server runs in-process over a SQLite
//! data directory seeded from the sample world; the last test runs the real binary.

#![cfg(feature = "http")]

use std::net::TcpStream;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use cartflow::clock::{Clock, SystemClock};
use cartflow::http::{BODY_LIMIT, Server, ServerConfig, Tokens};
use cartflow::model::SfId;
use cartflow::sample::{self, SampleCart};
use cartflow::store::{Durability, SqliteStore};
use cartflow::{Engine, Store};
use serde_json::{Value, json};
use tempfile::TempDir;

const V: &str = "v64.0";
const BUYER: &str = "buyer-token";
const READER: &str = "reader-token";
const STRANGER: &str = "stranger-token";
const INTEGRATOR: &str = "integrator-token";
/// A token for a user the store does not hold.
const GHOST: &str = "ghost-token";

/// The longest a background step may take before a test gives up (a bound, not a measure).
const STEP_BOUND: Duration = Duration::from_secs(60);

struct Fixture {
    server: Option<Server>,
    base: String,
    agent: ureq::Agent,
    dir: TempDir,
}

/// One answer: status and JSON body (`Null` when there is none).
#[derive(Debug)]
struct Reply {
    status: u16,
    body: Value,
}

impl Reply {
    fn error_code(&self) -> &str {
        self.body[0]["errorCode"].as_str().unwrap_or_default()
    }
}

fn tokens() -> Tokens {
    Tokens::new()
        .with(BUYER, sample::buyer_id())
        .with(READER, sample::reader_id())
        .with(STRANGER, sample::stranger_id())
        .with(INTEGRATOR, sample::integrator_id())
        .with(
            GHOST,
            SfId::from_number(cartflow::model::KeyPrefix::User, 999_999),
        )
}

fn start(workers: usize) -> Fixture {
    start_with(workers, Arc::new(SystemClock))
}

/// A server over a fresh SQLite data directory seeded with the sample world.
fn start_with(workers: usize, clock: Arc<dyn Clock>) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("cartflow.db"), Durability::Normal).unwrap();
    store.import(&sample::dataset()).unwrap();
    start_on(Arc::new(store), dir, workers, clock)
}

/// A server over `store`, which holds the sample world.
fn start_on(store: Arc<dyn Store>, dir: TempDir, workers: usize, clock: Arc<dyn Clock>) -> Fixture {
    let engine = Engine::new(store)
        .with_integrations(sample::integrations(&sample::dataset()))
        .with_clock(clock);
    let config = ServerConfig {
        addr: "127.0.0.1:0".parse().unwrap(),
        workers,
        ..ServerConfig::default()
    };
    let server = Server::start(engine, tokens(), &config).unwrap();
    let base = format!("http://{}/services/data", server.local_addr());
    Fixture {
        server: Some(server),
        base,
        agent: agent(),
        dir,
    }
}

fn agent() -> ureq::Agent {
    support::server::agent(Duration::from_secs(120))
}

fn reply(response: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Reply {
    let response = response.expect("the server answers");
    let status = response.status().as_u16();
    let text = response.into_body().read_to_string().unwrap();
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
    };
    Reply { status, body }
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

impl Fixture {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn get(&self, token: Option<&str>, path: &str) -> Reply {
        let mut request = self.agent.get(self.url(path));
        if let Some(token) = token {
            request = request.header("Authorization", bearer(token));
        }
        reply(request.call())
    }

    fn post_raw(&self, token: Option<&str>, path: &str, body: &[u8]) -> Reply {
        let mut request = self
            .agent
            .post(self.url(path))
            .header("Content-Type", "application/json");
        if let Some(token) = token {
            request = request.header("Authorization", bearer(token));
        }
        reply(request.send(body))
    }

    fn patch(&self, token: &str, path: &str, body: &Value) -> Reply {
        reply(
            self.agent
                .patch(self.url(path))
                .header("Authorization", bearer(token))
                .header("Content-Type", "application/json")
                .send(body.to_string()),
        )
    }

    /// Invokes an action with these inputs.
    fn action(&self, token: &str, name: &str, inputs: Value) -> Reply {
        let body = json!({ "inputs": inputs }).to_string();
        self.post_raw(
            Some(token),
            &format!("/{V}/actions/standard/{name}"),
            body.as_bytes(),
        )
    }

    /// Invokes an action with one input; it must succeed. Returns its only output value.
    fn succeed(&self, token: &str, name: &str, input: Value) -> Option<String> {
        let reply = self.action(token, name, json!([input]));
        assert_eq!(reply.status, 200, "{name}: {:?}", reply.body);
        let element = &reply.body[0];
        assert_eq!(element["isSuccess"], true, "{name}: {element}");
        assert_eq!(element["actionName"], name);
        element["outputValues"]
            .as_object()
            .and_then(|values| values.values().next())
            .and_then(Value::as_str)
            .map(str::to_owned)
    }

    fn record(&self, token: &str, object: &str, id: &str) -> Value {
        let reply = self.get(Some(token), &format!("/{V}/sobjects/{object}/{id}"));
        assert_eq!(reply.status, 200, "{object} {id}: {:?}", reply.body);
        reply.body
    }

    /// A screen step: PATCH the session's State; must answer 204.
    fn advance(&self, session: &str, state: &str) {
        let reply = self.patch(
            BUYER,
            &format!("/{V}/sobjects/CartCheckoutSession/{session}"),
            &json!({ "State": state }),
        );
        assert_eq!((reply.status, &reply.body), (204, &Value::Null), "{state}");
    }

    /// A screen's input: PATCH the cart; must answer 204.
    fn set_on_cart(&self, cart: &str, fields: Value) {
        let reply = self.patch(BUYER, &format!("/{V}/sobjects/WebCart/{cart}"), &fields);
        assert_eq!((reply.status, &reply.body), (204, &Value::Null), "{fields}");
    }

    /// Polls the session until it is no longer processing, as the template's hub does.
    fn settled_session(&self, session: &str) -> Value {
        let started = Instant::now();
        loop {
            let record = self.record(BUYER, "CartCheckoutSession", session);
            if record["IsProcessing"] == false {
                return record;
            }
            assert!(
                started.elapsed() < STEP_BOUND,
                "session {session} still processing: {record}"
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Locks the session's current step and invokes its action, then waits for the worker.
    fn async_step(&self, session: &str, cart: &str, from: &str, to: &str, action: &str) {
        let locked = self.succeed(
            BUYER,
            "updateCheckoutSessionStateAction",
            json!({"checkoutSessionId": session, "expCurrentState": from, "nextState": to}),
        );
        assert_eq!(locked.as_deref(), Some(session));
        let mut input = json!({ "cartId": cart });
        if action == "activateOrderAction" {
            input["orderStatus"] = json!("Activated");
        }
        let operation = self.succeed(BUYER, action, input).expect("an operation");
        let settled = self.settled_session(session);
        assert_eq!(settled["State"], to, "{action}: {settled}");
        assert_eq!(settled["BackgroundOperationId"], operation.as_str());
        let operation = self.record(BUYER, "BackgroundOperation", &operation);
        assert_eq!(operation["Status"], "Complete", "{operation}");
        assert_eq!(operation["Name"], action);
    }

    fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown();
        }
    }
}

/// Starts checkout on `cart` and walks it to a locked Inventory step whose check runs.
fn start_checkout(f: &Fixture, cart: SampleCart) -> (String, String) {
    let cart = cart.id().to_string();
    let session = f
        .succeed(
            BUYER,
            "checkoutSessionAction",
            json!({"cartId": cart, "initialState": "Start"}),
        )
        .expect("a session");
    f.advance(&session, "Shipping Address");
    f.set_on_cart(&cart, json!({ "DeliverTo": sample::denver() }));
    f.advance(&session, "Inventory");
    (cart, session)
}

/// Walks the in-stock cart's checkout through Authorize Payment, choosing the cheapest
/// delivery method: the session is at Activate Order, its order a Draft. Returns the cart,
/// the session and the method chosen.
fn walk_to_activate_order(f: &Fixture) -> (String, String, Value) {
    let (cart, session) = start_checkout(f, SampleCart::InStock);
    assert_eq!(
        f.record(BUYER, "WebCart", &cart)["DeliverTo"]["City"],
        "Denver"
    );
    for (from, to, action) in [
        ("Inventory", "Confirm Price", "checkCartInventoryAction"),
        ("Confirm Price", "Calculate Promotions", "priceCart"),
        (
            "Calculate Promotions",
            "Shipping Cost",
            "calcCartPromotionsAction",
        ),
        ("Shipping Cost", "Delivery Method", "calcCartShipmentAction"),
    ] {
        f.async_step(&session, &cart, from, to, action);
    }
    // Delivery Method: the buyer picks the cheapest option the shipment step offered.
    let offered = f.record(BUYER, "WebCart", &cart)["DeliveryOptions"].clone();
    let cheapest = offered
        .as_array()
        .unwrap()
        .iter()
        .min_by_key(|o| {
            o["Amount"]
                .as_str()
                .unwrap()
                .parse::<rust_decimal::Decimal>()
                .unwrap()
        })
        .expect("the shipment step offers options")["DeliveryMethodId"]
        .clone();
    f.set_on_cart(&cart, json!({ "DeliveryMethodId": cheapest }));
    f.advance(&session, "Taxes");
    f.async_step(
        &session,
        &cart,
        "Taxes",
        "Payment And Billing Address",
        "calcCartTaxesAction",
    );
    f.set_on_cart(&cart, json!({ "PaymentToken": sample::GOOD_TOKEN }));
    f.advance(&session, "Checkout Summary");
    f.advance(&session, "Cart To Order");
    f.async_step(
        &session,
        &cart,
        "Cart To Order",
        "Authorize Payment",
        "cartToOrderAction",
    );
    f.async_step(
        &session,
        &cart,
        "Authorize Payment",
        "Activate Order",
        "authorizePayment",
    );
    (cart, session, cheapest)
}

#[test]
fn a_whole_checkout_over_http_ends_with_an_activated_order() {
    let mut f = start(2);
    let (cart, session, cheapest) = walk_to_activate_order(&f);
    f.async_step(
        &session,
        &cart,
        "Activate Order",
        "Order Confirmation",
        "activateOrderAction",
    );
    f.advance(&session, "Complete");
    // A closed cart takes no more input.
    let closed_cart = f.patch(
        BUYER,
        &format!("/{V}/sobjects/WebCart/{cart}"),
        &json!({"PaymentToken": sample::DECLINED_TOKEN}),
    );
    assert_eq!(
        (closed_cart.status, closed_cart.error_code()),
        (403, "INVALID_OPERATION")
    );

    let done = f.record(BUYER, "CartCheckoutSession", &session);
    assert_eq!(done["State"], "Complete");
    assert_eq!(done["IsArchived"], true);
    assert_eq!(done["IsError"], false);
    assert_eq!(done["attributes"]["type"], "CartCheckoutSession");
    assert_eq!(
        done["attributes"]["url"],
        format!("/services/data/{V}/sobjects/CartCheckoutSession/{session}")
    );
    let order_id = done["OrderId"].as_str().expect("the session's order");
    let order = f.record(BUYER, "Order", order_id);
    assert_eq!(order["Status"], "Activated");
    // No orderLifeCycleType was given: the order is UNMANAGED.
    assert_eq!(order["OrderLifeCycleType"], "UNMANAGED");
    assert_eq!(order["DeliveryMethodId"], cheapest);
    assert!(order["PaymentAuthorizationId"].is_string(), "{order}");
    let closed = f.record(BUYER, "WebCart", &cart);
    assert_eq!(closed["Status"], "Closed");
    assert_eq!(order["GrandTotalAmount"], closed["GrandTotalAmount"]);
    // The order's lines are the cart's lines.
    let items = f.get(
        Some(BUYER),
        &format!("/{V}/sobjects/WebCart/{cart}/CartItems"),
    );
    assert_eq!(items.status, 200);
    assert_eq!(items.body["done"], true);
    assert_eq!(
        items.body["totalSize"].as_u64().unwrap() as usize,
        order["Items"].as_array().unwrap().len()
    );
    f.stop();
}

/// What an activation may change: the session, the cart, its lines and its order.
fn activation_records(f: &Fixture, cart: &str, session: &str) -> Vec<Value> {
    let session_record = f.record(BUYER, "CartCheckoutSession", session);
    let order = session_record["OrderId"].as_str().expect("a draft order");
    vec![
        f.record(BUYER, "Order", order),
        f.record(BUYER, "WebCart", cart),
        f.get(
            Some(BUYER),
            &format!("/{V}/sobjects/WebCart/{cart}/CartItems"),
        )
        .body,
        f.get(
            Some(BUYER),
            &format!("/{V}/sobjects/WebCart/{cart}/CartValidationOutputs"),
        )
        .body,
        session_record,
    ]
}

#[test]
fn an_activation_keeps_a_managed_life_cycle_type_and_refuses_any_other_value() {
    let mut f = start(2);
    let (cart, session, _) = walk_to_activate_order(&f);
    f.succeed(
        BUYER,
        "updateCheckoutSessionStateAction",
        json!({"checkoutSessionId": session, "expCurrentState": "Activate Order", "nextState": "Order Confirmation"}),
    );
    let before = activation_records(&f, &cart, &session);
    assert_eq!(before[0]["Status"], "Draft");

    // Values that name no type, exactly: each input is refused and nothing changes.
    let bad: Vec<Value> = [json!("managed"), json!("Managed"), json!(""), json!(7)]
        .into_iter()
        .map(|value| {
            json!({"cartId": cart, "orderStatus": "Activated", "orderLifeCycleType": value})
        })
        .collect();
    let refused = f.action(BUYER, "activateOrderAction", Value::Array(bad.clone()));
    assert_eq!(refused.status, 400, "{:?}", refused.body);
    for (element, input) in refused.body.as_array().unwrap().iter().zip(&bad) {
        assert_eq!(element["isSuccess"], false, "{element}");
        assert_eq!(
            element["errors"][0]["statusCode"], "INVALID_INPUT",
            "{element}"
        );
        let message = element["errors"][0]["message"].as_str().unwrap();
        assert!(
            message.contains("orderLifeCycleType") && message.contains("MANAGED"),
            "{input}: {message}"
        );
    }
    assert_eq!(activation_records(&f, &cart, &session), before);

    let operation = f
        .succeed(
            BUYER,
            "activateOrderAction",
            json!({"cartId": cart, "orderStatus": "Activated", "orderLifeCycleType": "MANAGED"}),
        )
        .expect("an operation");
    let settled = f.settled_session(&session);
    assert_eq!(settled["State"], "Order Confirmation", "{settled}");
    let order = f.record(BUYER, "Order", settled["OrderId"].as_str().unwrap());
    assert_eq!(order["Status"], "Activated");
    assert_eq!(order["OrderLifeCycleType"], "MANAGED");
    // The operation carried the choice from the call to the worker.
    let operation = f.record(BUYER, "BackgroundOperation", &operation);
    assert_eq!(operation["Status"], "Complete");
    assert_eq!(operation["OrderLifeCycleType"], "MANAGED");
    f.stop();
}

#[test]
fn calls_without_a_valid_token_answer_401() {
    let f = start(0);
    let versions = f.get(None, "/");
    assert_eq!(versions.status, 200);
    assert_eq!(versions.body[0]["version"], "47.0");
    let input = json!({"inputs": [{"cartId": SampleCart::InStock.id().to_string()}]}).to_string();
    let path = format!("/{V}/actions/standard/checkoutSessionAction");
    let cart_path = format!("/{V}/sobjects/WebCart/{}", SampleCart::InStock.id());
    let refused = |reply: Reply| {
        assert_eq!(reply.status, 401, "{:?}", reply.body);
        assert_eq!(
            reply.body,
            json!([{"errorCode": "INVALID_SESSION_ID", "message": "Session expired or invalid"}])
        );
    };
    refused(f.post_raw(None, &path, input.as_bytes()));
    refused(f.post_raw(Some("not-a-token"), &path, input.as_bytes()));
    refused(f.post_raw(Some(GHOST), &path, input.as_bytes()));
    refused(f.get(None, &cart_path));
    refused(f.get(Some("not-a-token"), &format!("/{V}/actions/standard")));
    refused(reply(
        f.agent
            .get(f.url(&cart_path))
            .header("Authorization", format!("Basic {BUYER}"))
            .call(),
    ));
    // Nothing happened to the cart, and the buyer's token works.
    let cart = f.record(BUYER, "WebCart", &SampleCart::InStock.id().to_string());
    assert_eq!(cart["Status"], "Active");
}

#[test]
fn other_users_cannot_read_the_carts_records() {
    let f = start(1);
    let (cart, session) = start_checkout(&f, SampleCart::ShortStock);
    f.succeed(
        BUYER,
        "updateCheckoutSessionStateAction",
        json!({"checkoutSessionId": session, "expCurrentState": "Inventory", "nextState": "Confirm Price"}),
    );
    let operation = f
        .succeed(BUYER, "checkCartInventoryAction", json!({"cartId": cart}))
        .unwrap();
    f.settled_session(&session);
    let paths = [
        format!("/{V}/sobjects/WebCart/{cart}"),
        format!("/{V}/sobjects/CartCheckoutSession/{session}"),
        format!("/{V}/sobjects/BackgroundOperation/{operation}"),
        format!("/{V}/sobjects/WebCart/{cart}/CartValidationOutputs"),
        format!("/{V}/sobjects/WebCart/{cart}/CartItems"),
    ];
    let missing = f.get(
        Some(BUYER),
        &format!(
            "/{V}/sobjects/WebCart/{}",
            SfId::from_number(cartflow::model::KeyPrefix::WebCart, 999_999)
        ),
    );
    assert_eq!(missing.status, 404);
    for path in &paths {
        assert_eq!(f.get(Some(BUYER), path).status, 200, "{path}");
        assert_eq!(f.get(Some(READER), path).status, 200, "{path}");
        assert_eq!(f.get(Some(INTEGRATOR), path).status, 200, "{path}");
        // A stranger learns nothing: the answer is the one for a record that does not exist.
        let hidden = f.get(Some(STRANGER), path);
        assert_eq!(
            (hidden.status, &hidden.body),
            (missing.status, &missing.body),
            "{path}"
        );
    }
    let before = f.record(BUYER, "CartCheckoutSession", &session);
    let hidden = f.patch(
        STRANGER,
        &format!("/{V}/sobjects/CartCheckoutSession/{session}"),
        &json!({"State": "Start"}),
    );
    assert_eq!(
        (hidden.status, &hidden.body),
        (missing.status, &missing.body)
    );
    // The reader sees the session but may not move it: the engine's refusal, nothing changed.
    let refused = f.patch(
        READER,
        &format!("/{V}/sobjects/WebCart/{cart}"),
        &json!({"PaymentToken": "tok_reader"}),
    );
    assert_eq!(
        (refused.status, refused.error_code()),
        (400, "INSUFFICIENT_ACCESS_OR_READONLY")
    );
    assert_eq!(f.record(BUYER, "CartCheckoutSession", &session), before);
    assert_eq!(
        f.record(BUYER, "WebCart", &cart)["PaymentToken"],
        Value::Null
    );
}

#[test]
fn bulk_inputs_answer_in_order_under_the_status_rule() {
    let f = start(0);
    let cart = |c: SampleCart| json!({"cartId": c.id().to_string()});
    let no_such_cart = json!({"cartId": "not-a-cart-id"});

    let mixed = f.action(
        BUYER,
        "checkoutSessionAction",
        json!([
            cart(SampleCart::InStock),
            cart(SampleCart::Closed),
            no_such_cart,
            cart(SampleCart::ShortStock)
        ]),
    );
    assert_eq!(mixed.status, 200, "any success answers 200");
    let elements = mixed.body.as_array().unwrap();
    let outcome: Vec<_> = elements
        .iter()
        .map(|e| {
            (
                e["isSuccess"].as_bool().unwrap(),
                e["errors"][0]["statusCode"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned(),
            )
        })
        .collect();
    assert_eq!(
        outcome,
        [
            (true, String::new()),
            (false, "INVALID_OPERATION".to_owned()),
            (false, "UNKNOWN_EXCEPTION".to_owned()),
            (true, String::new()),
        ]
    );
    // Each success names its own cart's session, in input order.
    for (index, which) in [(0, SampleCart::InStock), (3, SampleCart::ShortStock)] {
        let session = elements[index]["outputValues"]["requestId"]
            .as_str()
            .unwrap();
        let record = f.record(BUYER, "CartCheckoutSession", session);
        assert_eq!(record["WebCartId"], which.id().to_string());
    }

    // Every input failed: the first error's documented status.
    let closed_first = f.action(
        BUYER,
        "checkoutSessionAction",
        json!([cart(SampleCart::Closed), {"cartId": "not-a-cart-id"}]),
    );
    assert_eq!(closed_first.status, 403);
    let invalid_first = f.action(
        BUYER,
        "checkoutSessionAction",
        json!([{"cartId": "not-a-cart-id"}, cart(SampleCart::Closed)]),
    );
    assert_eq!(invalid_first.status, 500);
    assert_eq!(invalid_first.body.as_array().unwrap().len(), 2);
    assert!(
        invalid_first
            .body
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["isSuccess"] == false)
    );
}

#[test]
fn bad_requests_get_their_codes_and_the_server_stays_up() {
    let f = start(0);
    let path = format!("/{V}/actions/standard/checkoutSessionAction");
    let check = |reply: Reply, status: u16, code: &str| {
        assert_eq!(
            (reply.status, reply.error_code()),
            (status, code),
            "{:?}",
            reply.body
        );
        reply
    };
    check(
        f.post_raw(Some(BUYER), &path, b"{\"inputs\": ["),
        400,
        "JSON_PARSER_ERROR",
    );
    let missing = check(
        f.post_raw(Some(BUYER), &path, b"{}"),
        400,
        "JSON_PARSER_ERROR",
    );
    assert!(
        missing.body[0]["message"]
            .as_str()
            .unwrap()
            .contains("inputs")
    );
    let unknown = check(
        f.post_raw(Some(BUYER), &path, br#"{"inputs": [], "extra": true}"#),
        400,
        "JSON_PARSER_ERROR",
    );
    assert!(
        unknown.body[0]["message"]
            .as_str()
            .unwrap()
            .contains("extra")
    );
    check(
        f.post_raw(Some(BUYER), &path, br#"{"inputs": []}"#),
        400,
        "INVALID_INPUT",
    );

    // The limit is inclusive: a body of exactly BODY_LIMIT bytes is read, one more is not.
    let input = json!({"inputs": [{"cartId": SampleCart::InStock.id().to_string()}]}).to_string();
    let mut at_limit = input.into_bytes();
    at_limit.resize(BODY_LIMIT, b' ');
    let accepted = f.post_raw(Some(BUYER), &path, &at_limit);
    assert_eq!(accepted.status, 200, "{:?}", accepted.body);
    at_limit.push(b' ');
    check(
        f.post_raw(Some(BUYER), &path, &at_limit),
        413,
        "REQUEST_ENTITY_TOO_LARGE",
    );
    check(
        f.post_raw(Some(BUYER), &path, &vec![b' '; 2 * BODY_LIMIT]),
        413,
        "REQUEST_ENTITY_TOO_LARGE",
    );

    let inputs = br#"{"inputs": [{"cartId": "x"}]}"#;
    check(
        f.post_raw(
            Some(BUYER),
            &format!("/{V}/actions/standard/noSuchAction"),
            inputs,
        ),
        404,
        "NOT_FOUND",
    );
    for version in ["v46.0", "v47", "47.0", "latest", "v47.0.0"] {
        let path = format!("/{version}/actions/standard/checkoutSessionAction");
        check(f.post_raw(Some(BUYER), &path, inputs), 404, "NOT_FOUND");
        check(
            f.get(Some(BUYER), &format!("/{version}/actions/standard")),
            404,
            "NOT_FOUND",
        );
    }
    // Every version from 47.0 up is accepted, listed or not.
    for version in ["v47.0", "v99.0"] {
        assert_eq!(
            f.get(Some(BUYER), &format!("/{version}/actions/standard"))
                .status,
            200
        );
    }
    let cart = SampleCart::InStock.id();
    for path in [
        format!("/{V}/sobjects/Account/{cart}"),
        format!("/{V}/sobjects/WebCart/not-an-id"),
        format!("/{V}/sobjects/CartCheckoutSession/{cart}"),
        format!("/{V}/sobjects/WebCart/{cart}/Orders"),
        format!("/{V}/no/such/resource"),
    ] {
        check(f.get(Some(BUYER), &path), 404, "NOT_FOUND");
    }
    let deleted = reply(
        f.agent
            .delete(f.url(&format!("/{V}/sobjects/WebCart/{cart}")))
            .header("Authorization", bearer(BUYER))
            .call(),
    );
    check(deleted, 405, "METHOD_NOT_ALLOWED");
    // The cart was checked out once (the inclusive-limit call) and the server still answers.
    assert_eq!(
        f.record(BUYER, "WebCart", &cart.to_string())["Status"],
        "Checkout"
    );
}

#[test]
fn patches_the_table_does_not_declare_are_refused_and_change_nothing() {
    let f = start(0);
    let cart = SampleCart::InStock.id().to_string();
    let session = f
        .succeed(BUYER, "checkoutSessionAction", json!({"cartId": cart}))
        .unwrap();
    let session_path = format!("/{V}/sobjects/CartCheckoutSession/{session}");
    let cart_path = format!("/{V}/sobjects/WebCart/{cart}");
    let session_before = f.record(BUYER, "CartCheckoutSession", &session);
    let cart_before = f.record(BUYER, "WebCart", &cart);
    assert_eq!(session_before["State"], "Start");

    // Skipping a step is an undeclared move.
    let skipped = f.patch(BUYER, &session_path, &json!({"State": "Inventory"}));
    assert_eq!(
        (skipped.status, skipped.error_code()),
        (403, "INVALID_OPERATION")
    );
    let unknown_state = f.patch(BUYER, &session_path, &json!({"State": "Nowhere"}));
    assert_eq!(
        (unknown_state.status, unknown_state.error_code()),
        (403, "INVALID_OPERATION")
    );
    let locked_field = f.patch(BUYER, &session_path, &json!({"IsProcessing": true}));
    assert_eq!(
        (locked_field.status, locked_field.error_code()),
        (400, "INVALID_FIELD")
    );
    assert_eq!(locked_field.body[0]["fields"], json!(["IsProcessing"]));
    let status_field = f.patch(
        BUYER,
        &cart_path,
        &json!({"Status": "Active", "PaymentToken": "t"}),
    );
    assert_eq!(
        (status_field.status, status_field.error_code()),
        (400, "INVALID_FIELD")
    );
    let bad_address = f.patch(BUYER, &cart_path, &json!({"DeliverTo": {"City": "Denver"}}));
    assert_eq!(
        (bad_address.status, bad_address.error_code()),
        (400, "JSON_PARSER_ERROR")
    );
    let not_json = reply(
        f.agent
            .patch(f.url(&cart_path))
            .header("Authorization", bearer(BUYER))
            .send("{\"PaymentToken\": "),
    );
    assert_eq!(
        (not_json.status, not_json.error_code()),
        (400, "JSON_PARSER_ERROR")
    );

    assert_eq!(
        f.record(BUYER, "CartCheckoutSession", &session),
        session_before
    );
    assert_eq!(f.record(BUYER, "WebCart", &cart), cart_before);

    // The declared moves go through.
    f.advance(&session, "Shipping Address");
    f.advance(&session, "Inventory");
    assert_eq!(
        f.record(BUYER, "CartCheckoutSession", &session)["State"],
        "Inventory"
    );

    // A locked session (no worker runs here) refuses screen writes until its step ends.
    f.succeed(
        BUYER,
        "updateCheckoutSessionStateAction",
        json!({"checkoutSessionId": session, "expCurrentState": "Inventory", "nextState": "Confirm Price"}),
    );
    let locked = f.record(BUYER, "CartCheckoutSession", &session);
    assert_eq!(locked["IsProcessing"], true);
    let busy = f.patch(BUYER, &session_path, &json!({"State": "Confirm Price"}));
    assert_eq!((busy.status, busy.error_code()), (409, "INVALID_OPERATION"));
    let busy = f.patch(BUYER, &cart_path, &json!({"PaymentToken": "tok_visa_4242"}));
    assert_eq!((busy.status, busy.error_code()), (409, "INVALID_OPERATION"));
    assert_eq!(f.record(BUYER, "CartCheckoutSession", &session), locked);
}

#[test]
fn a_failed_step_lists_its_validation_outputs() {
    let f = start(1);
    let (cart, session) = start_checkout(&f, SampleCart::ShortStock);
    f.succeed(
        BUYER,
        "updateCheckoutSessionStateAction",
        json!({"checkoutSessionId": session, "expCurrentState": "Inventory", "nextState": "Confirm Price"}),
    );
    let operation = f
        .succeed(BUYER, "checkCartInventoryAction", json!({"cartId": cart}))
        .unwrap();
    let failed = f.settled_session(&session);
    assert_eq!(
        (&failed["State"], &failed["IsError"]),
        (&json!("Error"), &json!(true))
    );
    let outputs = f.get(
        Some(BUYER),
        &format!("/{V}/sobjects/WebCart/{cart}/CartValidationOutputs"),
    );
    assert_eq!(outputs.status, 200);
    assert_eq!(outputs.body["done"], true);
    let records = outputs.body["records"].as_array().unwrap();
    assert_eq!(
        outputs.body["totalSize"].as_u64(),
        Some(records.len() as u64)
    );
    let mut messages: Vec<&str> = records
        .iter()
        .map(|r| r["Message"].as_str().unwrap())
        .collect();
    messages.sort_unstable();
    assert_eq!(
        messages,
        [
            "SKU STOVE-X: 2 wanted, only 1 available.",
            "SKU TENT-4P: 5 wanted, only 4 available."
        ]
    );
    for record in records {
        assert_eq!(record["attributes"]["type"], "CartValidationOutput");
        assert_eq!(record["Level"], "Error");
        assert_eq!(record["BackgroundOperationId"], operation.as_str());
        // Each is also readable on its own, at its attributes' url.
        let url = record["attributes"]["url"].as_str().unwrap();
        let one = f.get(Some(BUYER), &url.replacen("/services/data", "", 1));
        assert_eq!(one.status, 200, "{url}");
        assert_eq!(one.body["Id"], record["Id"]);
    }
    assert_eq!(
        f.record(BUYER, "BackgroundOperation", &operation)["Status"],
        "Error"
    );
}

#[test]
fn actions_are_listed_and_described() {
    let f = start(0);
    let list = f.get(Some(BUYER), &format!("/{V}/actions/standard"));
    assert_eq!(list.status, 200);
    let actions = list.body["actions"].as_array().unwrap();
    let names: Vec<&str> = actions
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 12);
    for name in [
        "checkoutSessionAction",
        "setCheckoutDeliveryMethod",
        "cartToOrderAction",
        "authorizePayment",
    ] {
        assert!(names.contains(&name), "{name}");
    }
    assert!(
        actions
            .iter()
            .all(|a| a["label"].is_string() && a["type"].is_string())
    );

    let described = f.get(
        Some(BUYER),
        &format!("/{V}/actions/standard/checkoutSessionAction"),
    );
    assert_eq!(described.status, 200);
    let inputs: Vec<&str> = described.body["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    let expected = cartflow::api::input_names(cartflow::machine::Action::CheckoutSession);
    assert_eq!(inputs, expected);
    assert_eq!(described.body["outputs"][0]["name"], "requestId");
    let activate = f.get(
        Some(BUYER),
        &format!("/{V}/actions/standard/activateOrderAction"),
    );
    assert_eq!(activate.status, 200);
    let inputs = activate.body["inputs"].as_array().unwrap();
    let names: Vec<&str> = inputs.iter().map(|i| i["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["cartId", "orderStatus", "orderLifeCycleType", "runAsync"]
    );
    let life_cycle = &inputs[2];
    assert_eq!(life_cycle["type"], "STRING");
    assert_eq!(life_cycle["required"], false);
    let description = life_cycle["description"].as_str().unwrap();
    assert!(
        description.contains("UNMANAGED") && description.contains("MANAGED ("),
        "{description}"
    );
    let cancel = f.get(
        Some(BUYER),
        &format!("/{V}/actions/standard/cancelCartAsyncOperation"),
    );
    assert_eq!(cancel.body["outputs"], json!([]));
    let unknown = f.get(Some(BUYER), &format!("/{V}/actions/standard/noSuchAction"));
    assert_eq!((unknown.status, unknown.error_code()), (404, "NOT_FOUND"));
}

#[path = "support/mod.rs"]
mod support;

/// The synchronous PostgreSQL client runs its own runtime; called from the server's blocking
/// pool it must not collide with the server's.
#[test]
fn the_inventory_step_over_http_on_postgresql() {
    let Some(db) = support::postgres() else {
        return;
    };
    let store = cartflow::store::PostgresStore::connect(db.url()).unwrap();
    store.import(&sample::dataset()).unwrap();
    let f = start_on(
        Arc::new(store),
        tempfile::tempdir().unwrap(),
        1,
        Arc::new(SystemClock),
    );
    let (cart, session) = start_checkout(&f, SampleCart::InStock);
    f.async_step(
        &session,
        &cart,
        "Inventory",
        "Confirm Price",
        "checkCartInventoryAction",
    );
    let hidden = f.get(
        Some(STRANGER),
        &format!("/{V}/sobjects/CartCheckoutSession/{session}"),
    );
    assert_eq!(hidden.status, 404);
}

/// A clock that, once armed, holds the next command inside the engine until released: a
/// request that is certainly in flight.
/// Armed to panic instead, it stands for a bug inside the engine.
struct GatedClock {
    armed: AtomicBool,
    panic_next: AtomicBool,
    entered: mpsc::Sender<()>,
    release: Mutex<mpsc::Receiver<()>>,
}

impl GatedClock {
    fn new() -> (Arc<GatedClock>, mpsc::Receiver<()>, mpsc::Sender<()>) {
        let (entered, in_engine) = mpsc::channel();
        let (release, released) = mpsc::channel();
        let clock = GatedClock {
            armed: AtomicBool::new(false),
            panic_next: AtomicBool::new(false),
            entered,
            release: Mutex::new(released),
        };
        (Arc::new(clock), in_engine, release)
    }
}

impl Clock for GatedClock {
    fn now(&self) -> chrono::DateTime<chrono::Utc> {
        if self.panic_next.swap(false, Ordering::SeqCst) {
            panic!("the test clock panics on purpose");
        }
        if self.armed.swap(false, Ordering::SeqCst) {
            let _ = self.entered.send(());
            let _ = self.release.lock().unwrap().recv();
        }
        chrono::Utc::now()
    }
}

#[test]
fn shutdown_stops_accepting_and_finishes_the_requests_in_flight() {
    let (clock, in_engine, release) = GatedClock::new();
    let mut f = start_with(0, clock.clone());
    let address = f.server.as_ref().unwrap().local_addr();
    let cart = SampleCart::InStock.id().to_string();
    let url = f.url(&format!("/{V}/actions/standard/checkoutSessionAction"));

    clock.armed.store(true, Ordering::SeqCst);
    let request = {
        let agent = f.agent.clone();
        let body = json!({"inputs": [{"cartId": cart}]}).to_string();
        thread::spawn(move || {
            reply(
                agent
                    .post(url)
                    .header("Authorization", bearer(BUYER))
                    .send(body),
            )
        })
    };
    in_engine
        .recv_timeout(STEP_BOUND)
        .expect("the request reaches the engine");
    let server = f.server.take().unwrap();
    let stopping = thread::spawn(move || server.shutdown());
    // Once the listener is closed, new connections are refused ...
    let started = Instant::now();
    while TcpStream::connect(address).is_ok() {
        assert!(started.elapsed() < STEP_BOUND, "still accepting");
        thread::sleep(Duration::from_millis(5));
    }
    // ... while the request in flight finishes and is answered.
    release.send(()).unwrap();
    let answered = request.join().unwrap();
    assert_eq!(answered.status, 200, "{:?}", answered.body);
    assert_eq!(answered.body[0]["isSuccess"], true);
    stopping.join().unwrap();
    let store = SqliteStore::open(f.dir.path().join("cartflow.db"), Durability::Normal).unwrap();
    let status = store
        .cart(&SampleCart::InStock.id())
        .unwrap()
        .unwrap()
        .status;
    assert_eq!(status, cartflow::model::CartStatus::Checkout);
}

#[test]
fn a_panic_inside_the_engine_answers_500_and_the_server_goes_on() {
    let (clock, _, _) = GatedClock::new();
    let f = start_with(0, clock.clone());
    let cart = json!([{"cartId": SampleCart::InStock.id().to_string()}]);
    clock.panic_next.store(true, Ordering::SeqCst);
    let failed = f.action(BUYER, "checkoutSessionAction", cart.clone());
    assert_eq!(
        (failed.status, failed.error_code()),
        (500, "UNKNOWN_EXCEPTION")
    );
    // Nothing was committed, and the same call now goes through.
    let cart_id = SampleCart::InStock.id().to_string();
    assert_eq!(f.record(BUYER, "WebCart", &cart_id)["Status"], "Active");
    let retried = f.action(BUYER, "checkoutSessionAction", cart);
    assert_eq!(retried.status, 200, "{:?}", retried.body);
    assert_eq!(f.record(BUYER, "WebCart", &cart_id)["Status"], "Checkout");
}

/// `cartflow serve` in an empty directory answers the versions list, refuses an action call
/// without a token, writes nothing, and stops cleanly on SIGTERM.
#[test]
fn serve_in_an_empty_directory_answers_versions_and_refuses_calls_without_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let support::server::Listening {
        mut child,
        lines: received,
        seen,
        address,
    } = support::server::start_listening(
        Command::new(env!("CARGO_BIN_EXE_cartflow"))
            .args(["serve", "--addr", "127.0.0.1:0", "--data"])
            .arg(dir.path()),
        STEP_BOUND,
    );
    let base = format!("http://{address}/services/data");
    let agent = agent();
    let versions = reply(agent.get(format!("{base}/")).call());
    assert_eq!(versions.status, 200);
    assert!(
        versions
            .body
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["version"] == "47.0"),
        "{:?}",
        versions.body
    );
    let refused = reply(
        agent
            .post(format!("{base}/{V}/actions/standard/checkoutSessionAction"))
            .header("Content-Type", "application/json")
            .send(r#"{"inputs": [{"cartId": "0a6000000000001"}]}"#),
    );
    assert_eq!(refused.status, 401);
    assert_eq!(refused.body[0]["errorCode"], "INVALID_SESSION_ID");

    assert!(support::server::sigterm(&child));
    let status = child.wait().unwrap();
    let rest: Vec<String> = received.iter().collect();
    assert_eq!(status.code(), Some(0), "stderr: {seen:?} {rest:?}");
    assert!(rest.iter().any(|l| l.ends_with("stopped")), "{rest:?}");
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "nothing written"
    );
}
