//! A Salesforce client's view of a server, for the HTTP tests: a server over a fresh SQLite
//! data directory seeded from the sample world, requests as the sample buyer (or another
//! token), and a checkout walked step by step as the screens and actions drive it.

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use cartflow::Engine;
use cartflow::http::{Server, ServerConfig, Tokens};
use cartflow::integrations::Integrations;
use cartflow::model::Address;
use cartflow::sample::{self, SampleCart};
use cartflow::store::{DataSet, Durability, SqliteStore};
use rust_decimal::Decimal;
use serde_json::{Value, json};
use tempfile::TempDir;

/// The API version the tests call.
pub const V: &str = "v64.0";
/// The sample buyer's token.
pub const BUYER: &str = "buyer-token";
/// The sample stranger's token.
pub const STRANGER: &str = "stranger-token";

/// The longest a background step may take before a test gives up (a bound, not a measure).
pub const STEP_BOUND: Duration = Duration::from_secs(60);

/// One answer: status and JSON body (`Null` when there is none).
#[derive(Debug)]
pub struct Reply {
    /// The HTTP status.
    pub status: u16,
    /// The JSON body.
    pub body: Value,
}

impl Reply {
    /// The errorCode of a record route's error, or of an action's first element.
    pub fn error_code(&self) -> &str {
        let error = &self.body[0];
        error["errorCode"]
            .as_str()
            .or_else(|| error["errors"][0]["statusCode"].as_str())
            .unwrap_or_default()
    }

    /// The message of a record route's error, or of an action's first element.
    pub fn message(&self) -> &str {
        let error = &self.body[0];
        error["message"]
            .as_str()
            .or_else(|| error["errors"][0]["message"].as_str())
            .unwrap_or_default()
    }
}

pub struct Fixture {
    server: Option<Server>,
    /// `http://host:port/services/data/vNN.N`.
    pub base: String,
    agent: ureq::Agent,
    _dir: TempDir,
}

/// A server over a fresh SQLite data directory seeded with the sample world, with one
/// worker running the background steps.
pub fn start() -> Fixture {
    start_with(1)
}

/// As [`start`], with `workers` workers (none: operations stay New).
pub fn start_with(workers: usize) -> Fixture {
    start_on(sample::integrations(&sample::dataset()), workers)
}

/// As [`start`], with these providers and `workers` workers.
pub fn start_on(integrations: Integrations, workers: usize) -> Fixture {
    start_over(&sample::dataset(), integrations, workers)
}

/// A server over a fresh SQLite data directory seeded with `data`, with these providers and
/// `workers` workers. [`BUYER`] is the sample buyer's token, [`STRANGER`] the sample
/// stranger's (a buyer of the same account with no share of the sample carts).
pub fn start_over(data: &DataSet, integrations: Integrations, workers: usize) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("cartflow.db"), Durability::Normal).unwrap();
    store.import(data).unwrap();
    let engine = Engine::new(Arc::new(store)).with_integrations(integrations);
    let config = ServerConfig {
        addr: "127.0.0.1:0".parse().unwrap(),
        workers,
        ..ServerConfig::default()
    };
    let tokens = Tokens::new()
        .with(BUYER, sample::buyer_id())
        .with(STRANGER, sample::stranger_id());
    let server = Server::start(engine, tokens, &config).unwrap();
    Fixture {
        base: format!("http://{}/services/data/{V}", server.local_addr()),
        server: Some(server),
        agent: super::server::agent(Duration::from_secs(120)),
        _dir: dir,
    }
}

pub fn reply(response: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Reply {
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

/// A decimal amount as a record serves it.
pub fn amount(value: &Value) -> Decimal {
    value
        .as_str()
        .unwrap_or_else(|| panic!("not an amount: {value}"))
        .parse()
        .unwrap()
}

impl Fixture {
    /// `GET base + path` as the buyer.
    pub fn get(&self, path: &str) -> Reply {
        self.get_as(BUYER, path)
    }

    /// `GET base + path` with `token`.
    pub fn get_as(&self, token: &str, path: &str) -> Reply {
        self.get_with(token, path, &[])
    }

    /// `GET base + path` with `token`, and these extra headers.
    pub fn get_with(&self, token: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
        let mut request = self
            .agent
            .get(format!("{}{path}", self.base))
            .header("Authorization", format!("Bearer {token}"));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        reply(request.call())
    }

    pub fn patch(&self, path: &str, body: &Value) -> Reply {
        reply(
            self.agent
                .patch(format!("{}{path}", self.base))
                .header("Authorization", format!("Bearer {BUYER}"))
                .header("Content-Type", "application/json")
                .send(body.to_string()),
        )
    }

    /// Invokes a standard action with one input.
    pub fn action(&self, name: &str, input: Value) -> Reply {
        reply(
            self.agent
                .post(format!("{}/actions/standard/{name}", self.base))
                .header("Authorization", format!("Bearer {BUYER}"))
                .header("Content-Type", "application/json")
                .send(json!({ "inputs": [input] }).to_string()),
        )
    }

    /// Invokes a standard action that must succeed; its output value, if it has one.
    pub fn succeed(&self, name: &str, input: Value) -> Option<String> {
        let reply = self.action(name, input);
        assert_eq!(reply.status, 200, "{name}: {:?}", reply.body);
        let element = &reply.body[0];
        assert_eq!(element["isSuccess"], true, "{name}: {element}");
        element["outputValues"]
            .as_object()
            .and_then(|values| values.values().next())
            .and_then(Value::as_str)
            .map(str::to_owned)
    }

    pub fn record(&self, object: &str, id: &str) -> Value {
        let reply = self.get(&format!("/sobjects/{object}/{id}"));
        assert_eq!(reply.status, 200, "{object} {id}: {:?}", reply.body);
        reply.body
    }

    pub fn lines(&self, cart: &str) -> Vec<Value> {
        let reply = self.get(&format!("/sobjects/WebCart/{cart}/CartItems"));
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        reply.body["records"].as_array().unwrap().clone()
    }

    /// The cart's charge lines.
    pub fn charges(&self, cart: &str) -> Vec<Value> {
        let lines = self.lines(cart);
        lines
            .into_iter()
            .filter(|l| l["Type"] == "Charge")
            .collect()
    }

    /// Everything a buyer's input may change: the cart, its lines and the session.
    pub fn checkout(&self, cart: &str, session: &str) -> Vec<Value> {
        vec![
            self.record("WebCart", cart),
            json!(self.lines(cart)),
            self.record("CartCheckoutSession", session),
        ]
    }

    pub fn state(&self, session: &str) -> Value {
        self.record("CartCheckoutSession", session)["State"].clone()
    }

    /// A screen step: PATCH the session's State.
    pub fn move_to(&self, session: &str, state: &str) -> Reply {
        self.patch(
            &format!("/sobjects/CartCheckoutSession/{session}"),
            &json!({ "State": state }),
        )
    }

    /// A screen step that must pass.
    pub fn advance(&self, session: &str, state: &str) {
        let reply = self.move_to(session, state);
        assert_eq!((reply.status, &reply.body), (204, &Value::Null), "{state}");
    }

    /// A screen's input onto the cart.
    pub fn write_cart(&self, cart: &str, fields: Value) -> Reply {
        self.patch(&format!("/sobjects/WebCart/{cart}"), &fields)
    }

    /// A screen's input that must be taken.
    pub fn set_on_cart(&self, cart: &str, fields: Value) {
        let reply = self.write_cart(cart, fields.clone());
        assert_eq!((reply.status, &reply.body), (204, &Value::Null), "{fields}");
    }

    /// Polls the session until it is no longer processing.
    pub fn settled_session(&self, session: &str) -> Value {
        let started = Instant::now();
        loop {
            let record = self.record("CartCheckoutSession", session);
            if record["IsProcessing"] == false {
                return record;
            }
            assert!(started.elapsed() < STEP_BOUND, "still processing: {record}");
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Locks the session's current step, invokes its action and waits until it passed.
    pub fn async_step(&self, session: &str, cart: &str, from: &str, to: &str, action: &str) {
        self.succeed(
            "updateCheckoutSessionStateAction",
            json!({"checkoutSessionId": session, "expCurrentState": from, "nextState": to}),
        );
        let mut input = json!({ "cartId": cart });
        if action == "activateOrderAction" {
            input["orderStatus"] = json!("Activated");
        }
        self.succeed(action, input).expect("an operation");
        let settled = self.settled_session(session);
        assert_eq!(settled["State"], to, "{action}: {settled}");
    }

    /// `setCheckoutDeliveryMethod` for the cart.
    pub fn choose(&self, cart: &str, method: &str) -> Reply {
        self.action(
            "setCheckoutDeliveryMethod",
            json!({"cartId": cart, "deliveryMethodId": method}),
        )
    }

    /// The fee the cart's offered options ask for `method`.
    pub fn fee(&self, cart: &str, method: &str) -> Decimal {
        let record = self.record("WebCart", cart);
        let options = record["DeliveryOptions"].as_array().unwrap();
        let option = options
            .iter()
            .find(|o| o["DeliveryMethodId"] == method)
            .unwrap_or_else(|| panic!("{method} is not offered: {record}"));
        amount(&option["Amount"])
    }

    pub fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown();
        }
    }
}

/// Starts checkout of `cart` with the buyer's address `to`, and walks it through the
/// shipping step: the session is at Delivery Method. Returns the cart and the session.
pub fn to_delivery_method(f: &Fixture, cart: SampleCart, to: &Address) -> (String, String) {
    let cart = cart.id().to_string();
    let session = f
        .succeed(
            "checkoutSessionAction",
            json!({"cartId": cart, "initialState": "Start"}),
        )
        .expect("a session");
    f.advance(&session, "Shipping Address");
    f.set_on_cart(&cart, json!({ "DeliverTo": to }));
    f.advance(&session, "Inventory");
    for (from, next, action) in [
        ("Inventory", "Confirm Price", "checkCartInventoryAction"),
        ("Confirm Price", "Calculate Promotions", "priceCart"),
        (
            "Calculate Promotions",
            "Shipping Cost",
            "calcCartPromotionsAction",
        ),
        ("Shipping Cost", "Delivery Method", "calcCartShipmentAction"),
    ] {
        f.async_step(&session, &cart, from, next, action);
    }
    (cart, session)
}

/// From Delivery Method with a method chosen: the taxes step; the session is at Payment And
/// Billing Address.
pub fn through_taxes(f: &Fixture, cart: &str, session: &str) {
    f.advance(session, "Taxes");
    f.async_step(
        session,
        cart,
        "Taxes",
        "Payment And Billing Address",
        "calcCartTaxesAction",
    );
}

/// From Payment And Billing Address: the token, the summary and the order; the session is at
/// Authorize Payment with a Draft order. Returns the order's Id.
pub fn through_cart_to_order(f: &Fixture, cart: &str, session: &str) -> String {
    f.set_on_cart(cart, json!({ "PaymentToken": sample::GOOD_TOKEN }));
    f.advance(session, "Checkout Summary");
    f.advance(session, "Cart To Order");
    f.async_step(
        session,
        cart,
        "Cart To Order",
        "Authorize Payment",
        "cartToOrderAction",
    );
    let record = f.record("CartCheckoutSession", session);
    record["OrderId"]
        .as_str()
        .expect("a draft order")
        .to_owned()
}

/// From Authorize Payment: the payment and the activation; the session is at Order
/// Confirmation. Returns the activated order.
pub fn through_activation(f: &Fixture, cart: &str, session: &str, order: &str) -> Value {
    f.async_step(
        session,
        cart,
        "Authorize Payment",
        "Activate Order",
        "authorizePayment",
    );
    f.async_step(
        session,
        cart,
        "Activate Order",
        "Order Confirmation",
        "activateOrderAction",
    );
    let order = f.record("Order", order);
    assert_eq!(order["Status"], "Activated", "{order}");
    order
}

/// A whole checkout of `cart` shipped to `to` by `method`: the activated order.
pub fn checkout_for(f: &Fixture, cart: SampleCart, to: &Address, method: &str) -> Value {
    let (cart, session) = to_delivery_method(f, cart, to);
    f.set_on_cart(&cart, json!({ "DeliveryMethodId": method }));
    through_taxes(f, &cart, &session);
    let order = through_cart_to_order(f, &cart, &session);
    through_activation(f, &cart, &session, &order)
}
