//! The delivery and tax objects over the REST facade: a cart's delivery group, the methods
//! its shipping integration offered, each line's CartTax rows, and the order's items,
//! delivery group and payment authorisation, each read by Id with Salesforce's field names
//! and listed from its parent; and a PATCH of the delivery group, which is the buyer's input.

#![cfg(feature = "http")]

use std::sync::Arc;
use std::time::Duration;

use cartflow::flow::{BuyerInput, Drive, Waiting, drive};
use cartflow::http::{Server, ServerConfig, Tokens};
use cartflow::model::{KeyPrefix, SfId};
use cartflow::sample::{self, SampleCart};
use cartflow::store::{Durability, SqliteStore};
use cartflow::{Engine, Store};
use rust_decimal::Decimal;
use serde_json::{Value, json};

mod support;

const V: &str = "v64.0";
const BUYER: &str = "buyer-token";
const STRANGER: &str = "stranger-token";

struct Fixture {
    _server: Server,
    base: String,
    agent: ureq::Agent,
    engine: Engine,
    _dir: tempfile::TempDir,
}

impl Fixture {
    /// A server over a SQLite store with the sample world and its providers.
    fn start() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("cartflow.db"), Durability::Normal).unwrap();
        store.import(&sample::dataset()).unwrap();
        let engine = Engine::new(Arc::new(store))
            .with_integrations(sample::integrations(&sample::dataset()));
        let tokens = Tokens::new()
            .with(BUYER, sample::buyer_id())
            .with(STRANGER, sample::stranger_id());
        let config = ServerConfig {
            addr: "127.0.0.1:0".parse().unwrap(),
            workers: 0,
            ..ServerConfig::default()
        };
        let server = Server::start(engine.clone(), tokens, &config).unwrap();
        Fixture {
            base: format!("http://{}/services/data/{V}", server.local_addr()),
            _server: server,
            agent: support::server::agent(Duration::from_secs(60)),
            engine,
            _dir: dir,
        }
    }

    fn store(&self) -> &dyn Store {
        self.engine.store().as_ref()
    }

    /// Drives the in-stock cart (Denver, the cheapest method, a good token) with the library.
    fn checkout(&self, place_order: bool) -> Drive {
        let input = BuyerInput {
            deliver_to: Some(sample::denver()),
            delivery_method_id: None,
            payment_token: Some(sample::GOOD_TOKEN.into()),
            place_order,
        };
        let buyer = sample::buyer_id().to_string();
        drive(
            &self.engine,
            &buyer,
            &SampleCart::InStock.id(),
            &input,
            Waiting::RunInline,
        )
        .unwrap()
    }

    fn call(&self, method: &str, token: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let url = format!("{}{path}", self.base);
        let auth = format!("Bearer {token}");
        let response = match (method, body) {
            ("PATCH", Some(body)) => self
                .agent
                .patch(&url)
                .header("Authorization", &auth)
                .header("Content-Type", "application/json")
                .send(body.to_string()),
            _ => self.agent.get(&url).header("Authorization", &auth).call(),
        }
        .expect("the server answers");
        let status = response.status().as_u16();
        let text = response.into_body().read_to_string().unwrap();
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap()
        };
        (status, body)
    }

    /// A record by object name and Id, as the buyer reads it (200 expected).
    fn record(&self, object: &str, id: &str) -> Value {
        let (status, body) = self.call("GET", BUYER, &format!("/sobjects/{object}/{id}"), None);
        assert_eq!(status, 200, "{object}/{id}: {body}");
        assert_eq!(body["attributes"]["type"], object);
        body
    }

    /// A related list's records (200 expected).
    fn related(&self, object: &str, id: &str, relationship: &str) -> Vec<Value> {
        let path = format!("/sobjects/{object}/{id}/{relationship}");
        let (status, body) = self.call("GET", BUYER, &path, None);
        assert_eq!(status, 200, "{path}: {body}");
        assert_eq!(body["totalSize"], body["records"].as_array().unwrap().len());
        body["records"].as_array().unwrap().clone()
    }
}

fn text(value: &Value) -> &str {
    value
        .as_str()
        .unwrap_or_else(|| panic!("not text: {value}"))
}

fn money(value: &Value) -> Decimal {
    serde_json::from_value(value.clone()).unwrap_or_else(|e| panic!("{value}: {e}"))
}

#[test]
fn the_carts_delivery_group_methods_and_taxes_are_read_by_id_and_listed() {
    let f = Fixture::start();
    let Drive::NeedsInput { .. } = f.checkout(false) else {
        panic!("the drive stops before placing the order");
    };
    let cart = SampleCart::InStock.id().to_string();
    let groups = f.related("WebCart", &cart, "CartDeliveryGroups");
    assert_eq!(groups.len(), 1, "one delivery group per cart");
    let group_id = text(&groups[0]["Id"]).to_owned();
    let group = f.record("CartDeliveryGroup", &group_id);
    assert_eq!(group["CartId"], cart.as_str());
    assert_eq!(group["DeliverToCity"], sample::denver().city.as_str());
    assert_eq!(group["DeliverToCountry"], "US");
    let chosen = text(&group["DeliveryMethodId"]).to_owned();

    let methods = f.related("CartDeliveryGroup", &group_id, "CartDeliveryGroupMethods");
    assert!(methods.len() >= 2, "{methods:?}");
    assert_eq!(
        methods,
        f.related("WebCart", &cart, "CartDeliveryGroupMethods")
    );
    for listed in &methods {
        let method = f.record("CartDeliveryGroupMethod", text(&listed["Id"]));
        assert_eq!(method["CartDeliveryGroupId"], group_id.as_str());
        assert_eq!(method["WebCartId"], cart.as_str());
        assert!(money(&method["ShippingFee"]) >= Decimal::ZERO);
    }
    let fee = methods
        .iter()
        .find(|m| m["DeliveryMethodId"] == chosen.as_str())
        .map(|m| money(&m["ShippingFee"]))
        .expect("the chosen method is offered");

    let web_cart = f.record("WebCart", &cart);
    assert_eq!(money(&web_cart["TotalChargeAmount"]), fee);
    let lines = f.related("WebCart", &cart, "CartItems");
    assert!(lines.iter().all(|l| l.get("CartTaxes").is_none()));
    let charges: Vec<&Value> = lines.iter().filter(|l| l["Type"] == "Charge").collect();
    assert_eq!(charges.len(), 1);
    assert_eq!(money(&charges[0]["TotalPrice"]), fee);

    let taxes = f.related("WebCart", &cart, "CartTaxes");
    assert!(!taxes.is_empty());
    let mut total = Decimal::ZERO;
    for listed in &taxes {
        let tax = f.record("CartTax", text(&listed["Id"]));
        assert_eq!(tax["TaxType"], "Estimated");
        assert!(tax["TaxRate"].is_string() || tax["TaxRate"].is_number());
        let line = text(&tax["CartItemId"]);
        let of_line = f.related("CartItem", line, "CartTaxes");
        assert!(of_line.iter().any(|t| t["Id"] == tax["Id"]));
        total += money(&tax["Amount"]);
    }
    assert_eq!(total, money(&web_cart["TotalTaxAmount"]));

    // Another user reads none of them; an Id of the right kind that names nothing is 404.
    for (object, id) in [
        ("CartDeliveryGroup", group_id.as_str()),
        ("CartDeliveryGroupMethod", text(&methods[0]["Id"])),
        ("CartTax", text(&taxes[0]["Id"])),
    ] {
        let path = format!("/sobjects/{object}/{id}");
        assert_eq!(f.call("GET", STRANGER, &path, None).0, 404, "{path}");
    }
    let nothing = SfId::from_number(KeyPrefix::CartTax, 999_999).to_string();
    let path = format!("/sobjects/CartTax/{nothing}");
    assert_eq!(f.call("GET", BUYER, &path, None).0, 404);
}

#[test]
fn the_orders_items_delivery_group_and_payment_authorization_are_records() {
    let f = Fixture::start();
    let Drive::Complete { order_id, .. } = f.checkout(true) else {
        panic!("the checkout completes");
    };
    let order_id = order_id.to_string();
    let order = f.record("Order", &order_id);
    let items = f.related("Order", &order_id, "OrderItems");
    let types: Vec<&str> = items.iter().map(|i| text(&i["Type"])).collect();
    assert!(types.contains(&"Order Product"), "{types:?}");
    assert_eq!(
        types.iter().filter(|t| **t == "Delivery Charge").count(),
        1,
        "{types:?}"
    );
    for listed in &items {
        let item = f.record("OrderItem", text(&listed["Id"]));
        assert_eq!(item["OrderId"], order_id.as_str());
    }
    let groups = f.related("Order", &order_id, "OrderDeliveryGroups");
    assert_eq!(groups.len(), 1);
    let group = f.record("OrderDeliveryGroup", text(&groups[0]["Id"]));
    assert_eq!(group["OrderId"], order_id.as_str());
    assert_eq!(group["OrderDeliveryMethodId"], order["DeliveryMethodId"]);
    assert_eq!(group["DeliverToCity"], sample::denver().city.as_str());

    let authorization = &order["PaymentAuthorization"];
    let read = f.record("PaymentAuthorization", text(&authorization["Id"]));
    assert_eq!(read["Status"], "Processed");
    assert_eq!(money(&read["Amount"]), money(&order["GrandTotalAmount"]));
    assert_eq!(
        money(&order["AuthorizedAmount"]),
        money(&order["GrandTotalAmount"])
    );
}

#[test]
fn a_patch_of_the_delivery_group_changes_the_address_and_sends_the_session_back() {
    let f = Fixture::start();
    let Drive::NeedsInput { session_id, .. } = f.checkout(false) else {
        panic!("the drive stops before placing the order");
    };
    let cart = SampleCart::InStock.id();
    let group = cartflow::model::CartDeliveryGroup::id_of(&cart).to_string();
    let before = f.store().cart(&cart).unwrap().unwrap();
    assert!(before.total_tax_amount.is_some());

    let path = format!("/sobjects/CartDeliveryGroup/{group}");
    let (status, body) = f.call("PATCH", BUYER, &path, Some(json!({"Status": "x"})));
    assert_eq!(
        (status, body[0]["errorCode"].as_str()),
        (400, Some("INVALID_FIELD"))
    );
    assert_eq!(f.store().cart(&cart).unwrap().unwrap(), before);

    let moved = json!({"DeliverToCity": "New York", "DeliverToState": "NY"});
    let (status, body) = f.call("PATCH", BUYER, &path, Some(moved));
    assert_eq!(status, 204, "{body}");
    let after = f.store().cart(&cart).unwrap().unwrap();
    let address = after.deliver_to.clone().unwrap();
    assert_eq!(
        (address.city.as_str(), address.state_code.as_deref()),
        ("New York", Some("NY"))
    );
    // The fields not given are kept.
    assert_eq!(address.street, sample::denver().street);
    // Taxes and options computed for Denver are gone; the session is back at Shipping Cost.
    assert_eq!(after.total_tax_amount, None);
    assert!(after.delivery_options.is_empty());
    let session = f.store().session(&session_id).unwrap().unwrap();
    assert_eq!(
        session.state.map(|s| s.to_string()).as_deref(),
        Some("Shipping Cost")
    );
    let history = f.store().history(&cart).unwrap();
    let last = history.last().unwrap();
    assert_eq!(last.event.label(), "delivery address changed");
}

#[test]
fn the_delivery_charge_is_no_line_the_buyer_edits_and_an_edit_takes_it_away() {
    use cartflow::machine::{CartEdit, Command};
    use cartflow::model::CartItemType;
    let f = Fixture::start();
    let Drive::NeedsInput { .. } = f.checkout(false) else {
        panic!("the drive stops before placing the order");
    };
    let cart = SampleCart::InStock.id();
    let lines = f.store().cart_items(&cart).unwrap();
    let charge = lines
        .iter()
        .find(|l| l.item_type == CartItemType::Charge)
        .expect("a charge line")
        .id;
    let buyer = sample::buyer_id().to_string();
    let edit = |edit| Command::EditCart {
        cart_id: cart.to_string(),
        edit,
    };
    let before = f.store().cart(&cart).unwrap().unwrap();
    for refused in [
        CartEdit::SetQuantity {
            item_id: charge.to_string(),
            quantity: Decimal::TWO,
        },
        CartEdit::RemoveItem {
            item_id: charge.to_string(),
        },
    ] {
        let error = f.engine.execute(&buyer, edit(refused)).unwrap_err();
        assert_eq!(
            error.requirement(),
            Some(cartflow::machine::Requirement::EditValid)
        );
        assert_eq!(f.store().cart(&cart).unwrap().unwrap(), before);
        assert_eq!(f.store().cart_items(&cart).unwrap(), lines);
    }
    let added = CartEdit::AddItem {
        sku: "ROPE-60M".into(),
        quantity: Decimal::ONE,
    };
    f.engine.execute(&buyer, edit(added)).unwrap();
    let after = f.store().cart_items(&cart).unwrap();
    assert!(after.iter().all(|l| l.item_type == CartItemType::Product));
    assert_eq!(f.store().cart_item(&charge).unwrap(), None);
    let cart = f.store().cart(&cart).unwrap().unwrap();
    assert_eq!(cart.delivery_method_id, None);
    assert_eq!(cart.total_charge_amount, None);
}

#[test]
fn cart_to_order_refuses_a_cart_offered_methods_without_a_choice() {
    use cartflow::machine::{Changes, Command};
    use cartflow::store::Commit;
    let f = Fixture::start();
    let Drive::NeedsInput { session_id, .. } = f.checkout(false) else {
        panic!("the drive stops before placing the order");
    };
    let cart_id = SampleCart::InStock.id();
    // Something behind the engine's back (an import, another system) drops the choice.
    let mut cart = f.store().cart(&cart_id).unwrap().unwrap();
    cart.delivery_method_id = None;
    cart.version += 1;
    let commit = Commit {
        changes: Changes {
            carts: vec![cart],
            ..Changes::default()
        },
        history: Vec::new(),
    };
    f.store().commit(&commit).unwrap();
    let buyer = sample::buyer_id().to_string();
    let session = session_id.to_string();
    let steps = [
        Command::Advance {
            session_id: session.clone(),
            state: "Cart To Order".into(),
            exp_current_state: Some("Checkout Summary".into()),
        },
        Command::UpdateSession {
            session_id: session.clone(),
            next_state: "Authorize Payment".into(),
            exp_current_state: Some("Cart To Order".into()),
        },
        Command::CartToOrder {
            cart_id: cart_id.to_string(),
            run_async: true,
        },
    ];
    for step in steps {
        f.engine.execute(&buyer, step).unwrap();
    }
    assert_eq!(f.engine.run_until_idle().unwrap(), 1);
    let session = f.store().session(&session_id).unwrap().unwrap();
    assert!(
        session.is_error && session.order_id.is_none(),
        "{session:?}"
    );
    let outputs = f.store().validation_outputs(&cart_id).unwrap();
    assert_eq!(outputs.len(), 1);
    assert!(
        outputs[0].message.contains("no delivery method"),
        "{outputs:?}"
    );
    let group = cartflow::model::CartDeliveryGroup::id_of(&cart_id);
    assert_eq!(outputs[0].related_entity_id, Some(group));
}
