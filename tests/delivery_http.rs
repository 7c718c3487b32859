//! The delivery and tax model over HTTP, as a Salesforce client drives it, with the sample
//! store's own providers (price book, promotions, the GROUND and FREIGHT shipping rates, the
//! tax table with Denver's 2.9 % and New York's 5 %, the token gateway): a changed address
//! rewinds the checkout and the order carries the new address's tax; a change after the
//! order exists is refused and the payment authorises the order's total; a screen does not
//! move on without the input it collects; and `setCheckoutDeliveryMethod` writes and reprices
//! the cart's charge line. The server runs in-process over a SQLite data directory seeded
//! from the sample world.

#![cfg(feature = "http")]

use std::sync::Arc;

use cartflow::integrations::{CartPatch, IntegrationRequest, Provider, ProviderError, Verdict};
use cartflow::sample::{self, SampleCart};
use rust_decimal::Decimal;
use serde_json::{Value, json};

#[path = "support/mod.rs"]
mod support;

use support::checkout_http::*;

/// An order's amounts, line by line (without the cart lines they came from, which differ
/// between carts), and its grand total.
fn order_amounts(order: &Value) -> (Vec<Value>, Decimal) {
    let mut lines: Vec<Value> = order["Items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| {
            // Record Ids differ between the two orders; the amounts must not.
            let mut item = item.clone();
            let fields = item.as_object_mut().unwrap();
            fields.remove("CartItemId");
            fields.remove("Id");
            item
        })
        .collect();
    lines.sort_by_key(Value::to_string);
    (lines, amount(&order["GrandTotalAmount"]))
}

/// The sum of the lines' TaxAmount.
fn line_taxes(lines: &[Value]) -> Decimal {
    lines
        .iter()
        .filter(|l| !l["TaxAmount"].is_null())
        .map(|l| amount(&l["TaxAmount"]))
        .sum()
}

#[test]
fn an_address_changed_after_taxes_rewinds_to_shipping_and_the_order_carries_the_new_tax() {
    let mut f = start();
    let (cart, session) = to_delivery_method(&f, SampleCart::InStock, &sample::denver());
    f.set_on_cart(&cart, json!({ "DeliveryMethodId": "GROUND" }));
    through_taxes(&f, &cart, &session);
    let denver = f.record("WebCart", &cart);
    assert!(
        amount(&denver["TotalTaxAmount"]) > Decimal::ZERO,
        "{denver}"
    );

    // At Payment And Billing Address the buyer ships to New York instead.
    f.set_on_cart(&cart, json!({ "DeliverTo": sample::new_york() }));
    let rewound = f.record("CartCheckoutSession", &session);
    assert_eq!(rewound["State"], "Shipping Cost", "{rewound}");
    assert_eq!(rewound["IsProcessing"], false);
    let moved = f.record("WebCart", &cart);
    assert_eq!(moved["DeliverTo"]["City"], "New York");
    assert!(moved["TotalTaxAmount"].is_null(), "{moved}");
    let lines = f.lines(&cart);
    assert!(lines.iter().all(|l| l["TaxAmount"].is_null()), "{lines:?}");
    // The buyer's choice stays; its fee (the charge line) waits for the shipping step to
    // offer the method again.
    assert_eq!(moved["DeliveryMethodId"], "GROUND");
    assert!(f.charges(&cart).is_empty());
    assert!(moved["TotalChargeAmount"].is_null(), "{moved}");

    f.async_step(
        &session,
        &cart,
        "Shipping Cost",
        "Delivery Method",
        "calcCartShipmentAction",
    );
    let reshipped = f.record("WebCart", &cart);
    assert_eq!(reshipped["DeliveryMethodId"], "GROUND", "{reshipped}");
    let charges = f.charges(&cart);
    assert_eq!(charges.len(), 1, "{charges:?}");
    assert_eq!(amount(&charges[0]["TotalPrice"]), f.fee(&cart, "GROUND"));
    through_taxes(&f, &cart, &session);
    let order = through_cart_to_order(&f, &cart, &session);
    let order = through_activation(&f, &cart, &session, &order);
    assert_eq!(order["DeliverTo"]["City"], "New York");
    assert_eq!(order["DeliveryMethodId"], "GROUND");

    // A second cart with the same lines, shipped to New York from the start.
    let direct = checkout_for(&f, SampleCart::Reorder, &sample::new_york(), "GROUND");
    assert_eq!(order_amounts(&order), order_amounts(&direct));
    assert_ne!(
        amount(&order["GrandTotalAmount"]),
        amount(&denver["GrandTotalAmount"])
    );
    let (lines, _) = order_amounts(&order);
    assert!(line_taxes(&lines) > amount(&denver["TotalTaxAmount"]));
    f.stop();
}

#[test]
fn a_delivery_method_change_after_the_order_is_refused_and_the_payment_covers_the_order() {
    let mut f = start();
    let (cart, session) = to_delivery_method(&f, SampleCart::InStock, &sample::denver());
    let freight = f.fee(&cart, "FREIGHT");
    assert!(f.fee(&cart, "GROUND") < freight);
    f.succeed(
        "setCheckoutDeliveryMethod",
        json!({"cartId": cart, "deliveryMethodId": "FREIGHT"}),
    );
    through_taxes(&f, &cart, &session);
    let order_id = through_cart_to_order(&f, &cart, &session);
    let before = (f.checkout(&cart, &session), f.record("Order", &order_id));
    assert_eq!(before.1["DeliveryMethodId"], "FREIGHT");

    let by_action = f.choose(&cart, "GROUND");
    assert_eq!(
        (by_action.status, by_action.error_code()),
        (403, "INVALID_OPERATION"),
        "{:?}",
        by_action.body
    );
    assert_eq!(by_action.body[0]["isSuccess"], false);
    let by_patch = f.write_cart(&cart, json!({ "DeliveryMethodId": "GROUND" }));
    assert_eq!(
        (by_patch.status, by_patch.error_code()),
        (403, "INVALID_OPERATION"),
        "{:?}",
        by_patch.body
    );
    // So is any other input the order was made from.
    let address = f.write_cart(&cart, json!({ "DeliverTo": sample::new_york() }));
    assert_eq!(
        (address.status, address.error_code()),
        (403, "INVALID_OPERATION")
    );
    let after = (f.checkout(&cart, &session), f.record("Order", &order_id));
    assert_eq!(before, after);

    let order = through_activation(&f, &cart, &session, &order_id);
    assert_eq!(
        order["AuthorizedAmount"], order["GrandTotalAmount"],
        "{order}"
    );
    assert_eq!(order["GrandTotalAmount"], before.1["GrandTotalAmount"]);
    assert_eq!(order["DeliveryMethodId"], "FREIGHT");
    let charges: Vec<&Value> = order["Items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["Type"] == "Delivery Charge")
        .collect();
    assert_eq!(charges.len(), 1, "{order}");
    assert_eq!(amount(&charges[0]["TotalPrice"]), freight);
    f.stop();
}

#[test]
fn the_delivery_method_screen_does_not_move_on_without_a_chosen_method() {
    let mut f = start();
    let (cart, session) = to_delivery_method(&f, SampleCart::InStock, &sample::denver());
    let before = f.checkout(&cart, &session);
    let refused = f.move_to(&session, "Taxes");
    assert_eq!(
        (refused.status, refused.error_code(), refused.message()),
        (
            400,
            "REQUIRED_FIELD_MISSING",
            "Delivery Method cannot move on without one of the offered delivery methods (DeliveryMethodId)"
        ),
        "{:?}",
        refused.body
    );
    assert_eq!(f.checkout(&cart, &session), before);

    f.set_on_cart(&cart, json!({ "DeliveryMethodId": "GROUND" }));
    f.advance(&session, "Taxes");
    assert_eq!(f.state(&session), "Taxes");
    f.stop();
}

#[test]
fn the_payment_screen_does_not_move_on_without_a_payment_token() {
    let mut f = start();
    let (cart, session) = to_delivery_method(&f, SampleCart::InStock, &sample::denver());
    f.set_on_cart(&cart, json!({ "DeliveryMethodId": "GROUND" }));
    through_taxes(&f, &cart, &session);
    let before = f.checkout(&cart, &session);
    assert_eq!(before[0]["PaymentTokenSet"], false);
    let refused = f.move_to(&session, "Checkout Summary");
    assert_eq!(
        (refused.status, refused.error_code(), refused.message()),
        (
            400,
            "REQUIRED_FIELD_MISSING",
            "Payment And Billing Address cannot move on without a payment method (PaymentToken)"
        ),
        "{:?}",
        refused.body
    );
    assert_eq!(f.checkout(&cart, &session), before);

    f.set_on_cart(&cart, json!({ "PaymentToken": sample::GOOD_TOKEN }));
    f.advance(&session, "Checkout Summary");
    f.stop();
}

#[test]
fn set_checkout_delivery_method_is_listed_and_described_with_its_two_inputs() {
    let mut f = start();
    let list = f.get("/actions/standard");
    assert_eq!(list.status, 200);
    let listed = list.body["actions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "setCheckoutDeliveryMethod")
        .cloned()
        .expect("setCheckoutDeliveryMethod is listed");
    assert!(listed["label"].is_string(), "{listed}");

    let described = f.get("/actions/standard/setCheckoutDeliveryMethod");
    assert_eq!(described.status, 200);
    assert_eq!(described.body["name"], "setCheckoutDeliveryMethod");
    let inputs = described.body["inputs"].as_array().unwrap();
    let names: Vec<&str> = inputs.iter().map(|i| i["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["cartId", "deliveryMethodId"]);
    assert!(inputs.iter().all(|i| i["required"] == true), "{inputs:?}");
    assert!(
        inputs[1]["description"]
            .as_str()
            .unwrap()
            .contains("offered")
    );
    assert_eq!(described.body["outputs"], json!([]));
    f.stop();
}

#[test]
fn set_checkout_delivery_method_writes_and_reprices_the_charge_line() {
    let mut f = start();
    let (cart, session) = to_delivery_method(&f, SampleCart::InStock, &sample::denver());
    assert!(f.charges(&cart).is_empty());

    // A method the shipping step did not offer: refused, nothing changed.
    let before = f.checkout(&cart, &session);
    let refused = f.choose(&cart, "DRONE");
    assert_eq!(
        (refused.status, refused.error_code()),
        (400, "INVALID_INPUT"),
        "{:?}",
        refused.body
    );
    assert_eq!(f.checkout(&cart, &session), before);

    // An offered one: its fee is the charge line and the cart's charges. The action answers
    // no output values, as its description says.
    let chosen = f.choose(&cart, "GROUND");
    assert_eq!(chosen.status, 200, "{:?}", chosen.body);
    assert_eq!(chosen.body[0]["isSuccess"], true);
    assert_eq!(chosen.body[0]["outputValues"], Value::Null);
    let ground = f.fee(&cart, "GROUND");
    let charges = f.charges(&cart);
    assert_eq!(charges.len(), 1, "{charges:?}");
    let charge_id = charges[0]["Id"].clone();
    assert_eq!(charges[0]["Type"], "Charge");
    assert_eq!(amount(&charges[0]["TotalPrice"]), ground);
    let chosen = f.record("WebCart", &cart);
    assert_eq!(chosen["DeliveryMethodId"], "GROUND");
    assert_eq!(amount(&chosen["TotalChargeAmount"]), ground);
    assert_eq!(f.state(&session), "Delivery Method");

    // Another method reprices the same line.
    f.succeed(
        "setCheckoutDeliveryMethod",
        json!({"cartId": cart, "deliveryMethodId": "FREIGHT"}),
    );
    let freight = f.fee(&cart, "FREIGHT");
    let charges = f.charges(&cart);
    assert_eq!(charges.len(), 1, "{charges:?}");
    assert_eq!(charges[0]["Id"], charge_id);
    assert_eq!(amount(&charges[0]["TotalPrice"]), freight);
    let repriced = f.record("WebCart", &cart);
    assert_eq!(amount(&repriced["TotalChargeAmount"]), freight);
    assert_eq!(
        amount(&repriced["GrandTotalAmount"]) - amount(&chosen["GrandTotalAmount"]),
        freight - ground
    );

    // After the taxes, a change of method sends the session back to Taxes and drops them.
    through_taxes(&f, &cart, &session);
    assert!(amount(&f.record("WebCart", &cart)["TotalTaxAmount"]) > Decimal::ZERO);
    f.succeed(
        "setCheckoutDeliveryMethod",
        json!({"cartId": cart, "deliveryMethodId": "GROUND"}),
    );
    assert_eq!(f.state(&session), "Taxes");
    let rewound = f.record("WebCart", &cart);
    assert!(rewound["TotalTaxAmount"].is_null(), "{rewound}");
    let charges = f.charges(&cart);
    assert_eq!(charges[0]["Id"], charge_id);
    assert_eq!(amount(&charges[0]["TotalPrice"]), ground);
    assert_eq!(line_taxes(&f.lines(&cart)), Decimal::ZERO);
    f.stop();
}

#[test]
fn set_checkout_delivery_method_answers_the_shared_codes_and_changes_nothing() {
    // No worker: an operation the test starts stays New.
    let mut f = start_with(0);
    let cart = SampleCart::InStock.id().to_string();
    let refuse = |input: Value, expected: (u16, &str), f: &Fixture, before: &[Value]| {
        let reply = f.action("setCheckoutDeliveryMethod", input.clone());
        assert_eq!(
            (reply.status, reply.error_code()),
            expected,
            "{input}: {:?}",
            reply.body
        );
        assert_eq!(f.record("WebCart", &cart), before[0], "{input}");
        assert_eq!(json!(f.lines(&cart)), before[1], "{input}");
    };
    let active = [f.record("WebCart", &cart), json!(f.lines(&cart))];
    refuse(
        json!({"cartId": cart, "deliveryMethodId": "GROUND"}),
        (403, "INVALID_OPERATION"),
        &f,
        &active,
    );
    refuse(
        json!({"cartId": "0a6000000009999", "deliveryMethodId": "GROUND"}),
        (500, "UNKNOWN_EXCEPTION"),
        &f,
        &active,
    );

    let session = f
        .succeed(
            "checkoutSessionAction",
            json!({"cartId": cart, "initialState": "Start"}),
        )
        .expect("a session");
    let opened = f.checkout(&cart, &session);
    refuse(
        json!({ "cartId": cart }),
        (400, "INVALID_INPUT"),
        &f,
        &opened,
    );
    f.advance(&session, "Shipping Address");
    f.set_on_cart(&cart, json!({ "DeliverTo": sample::denver() }));
    f.advance(&session, "Inventory");
    f.succeed(
        "updateCheckoutSessionStateAction",
        json!({"checkoutSessionId": session, "expCurrentState": "Inventory", "nextState": "Confirm Price"}),
    );
    let locked = f.checkout(&cart, &session);
    refuse(
        json!({"cartId": cart, "deliveryMethodId": "GROUND"}),
        (403, "INVALID_OPERATION"),
        &f,
        &locked,
    );
    f.succeed("checkCartInventoryAction", json!({ "cartId": cart }));
    let running = f.checkout(&cart, &session);
    refuse(
        json!({"cartId": cart, "deliveryMethodId": "GROUND"}),
        (400, "ALREADY_IN_PROCESS"),
        &f,
        &running,
    );
    assert_eq!(f.checkout(&cart, &session), running);
    f.stop();
}

#[test]
fn after_the_order_a_buyer_who_wants_another_method_cancels_and_checks_out_again() {
    let mut f = start();
    let (cart, session) = to_delivery_method(&f, SampleCart::InStock, &sample::denver());
    f.set_on_cart(&cart, json!({ "DeliveryMethodId": "FREIGHT" }));
    through_taxes(&f, &cart, &session);
    let draft = through_cart_to_order(&f, &cart, &session);

    f.succeed("cancelCartAsyncOperation", json!({ "cartId": cart }));
    assert_eq!(f.record("WebCart", &cart)["Status"], "Active");
    assert_eq!(
        f.record("CartCheckoutSession", &session)["IsArchived"],
        true
    );
    let order = checkout_for(&f, SampleCart::InStock, &sample::denver(), "GROUND");
    assert_ne!(order["Id"], draft.as_str());
    assert_eq!(order["DeliveryMethodId"], "GROUND");
    assert_eq!(order["AuthorizedAmount"], order["GrandTotalAmount"]);
    // The draft of the cancelled checkout was never paid for.
    let abandoned = f.record("Order", &draft);
    assert_eq!(abandoned["Status"], "Draft", "{abandoned}");
    assert!(abandoned["AuthorizedAmount"].is_null(), "{abandoned}");
    f.stop();
}

#[test]
fn a_checkout_cancelled_after_its_payment_leaves_no_authorisation_on_the_next_order() {
    let mut f = start();
    let (cart, session) = to_delivery_method(&f, SampleCart::InStock, &sample::denver());
    f.set_on_cart(&cart, json!({ "DeliveryMethodId": "FREIGHT" }));
    through_taxes(&f, &cart, &session);
    let paid = through_cart_to_order(&f, &cart, &session);
    f.async_step(
        &session,
        &cart,
        "Authorize Payment",
        "Activate Order",
        "authorizePayment",
    );
    let freight_total = f.record("Order", &paid)["AuthorizedAmount"].clone();
    assert!(!freight_total.is_null());
    f.succeed("cancelCartAsyncOperation", json!({ "cartId": cart }));

    let (cart, session) = to_delivery_method(&f, SampleCart::InStock, &sample::denver());
    f.set_on_cart(&cart, json!({ "DeliveryMethodId": "GROUND" }));
    through_taxes(&f, &cart, &session);
    let draft = through_cart_to_order(&f, &cart, &session);
    // The authorisation of the cancelled checkout was for another order and another total.
    let unpaid = f.record("Order", &draft);
    assert!(unpaid["AuthorizedAmount"].is_null(), "{unpaid}");
    assert!(unpaid["PaymentAuthorizationId"].is_null(), "{unpaid}");
    let order = through_activation(&f, &cart, &session, &draft);
    assert_ne!(order["GrandTotalAmount"], freight_total);
    assert_eq!(order["AuthorizedAmount"], order["GrandTotalAmount"]);
    f.stop();
}

type PaymentAnswer = fn(&IntegrationRequest) -> Result<Verdict, ProviderError>;

/// Payment answers that pass without paying for the order: each must fail the step.
const UNUSABLE_PAYMENT_ANSWERS: [(&str, PaymentAnswer); 4] = [
    ("a cent more than the order's total", |request| {
        let total = request.order.as_ref().and_then(|o| o.grand_total_amount);
        Ok(Verdict::Updated(CartPatch {
            payment_authorization_id: Some("AUTH-OFF-BY-A-CENT".into()),
            authorized_amount: total.map(|t| t + Decimal::new(1, 2)),
            ..CartPatch::default()
        }))
    }),
    ("a pass that authorises nothing", |_| Ok(Verdict::Passed)),
    ("an authorisation with a blank reference", |request| {
        Ok(Verdict::authorized("  ", request))
    }),
    ("a reference with no amount", |_| {
        Ok(Verdict::Updated(CartPatch {
            payment_authorization_id: Some("AUTH-NO-AMOUNT".into()),
            ..CartPatch::default()
        }))
    }),
];

#[test]
fn a_payment_answer_that_does_not_authorise_the_orders_total_fails_the_step() {
    for (what, answer) in UNUSABLE_PAYMENT_ANSWERS {
        let mut integrations = sample::integrations(&sample::dataset());
        integrations.set(sample::store_id(), Provider::Payment(Arc::new(answer)));
        let mut f = start_on(integrations, 1);
        let (cart, session) = to_delivery_method(&f, SampleCart::InStock, &sample::denver());
        f.set_on_cart(&cart, json!({ "DeliveryMethodId": "GROUND" }));
        through_taxes(&f, &cart, &session);
        let order = through_cart_to_order(&f, &cart, &session);

        f.succeed(
            "updateCheckoutSessionStateAction",
            json!({"checkoutSessionId": session, "expCurrentState": "Authorize Payment", "nextState": "Activate Order"}),
        );
        f.succeed("authorizePayment", json!({ "cartId": cart }));
        let failed = f.settled_session(&session);
        assert_eq!(failed["State"], "Error", "{what}: {failed}");
        let outputs = f.get(&format!("/sobjects/WebCart/{cart}/CartValidationOutputs"));
        let types: Vec<&Value> = outputs.body["records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| &o["Type"])
            .collect();
        assert_eq!(types, [&json!("SystemError")], "{what}: {:?}", outputs.body);
        let unpaid = f.record("WebCart", &cart);
        assert!(
            unpaid["PaymentAuthorizationId"].is_null(),
            "{what}: {unpaid}"
        );
        assert!(unpaid["AuthorizedAmount"].is_null(), "{what}: {unpaid}");
        let draft = f.record("Order", &order);
        assert_eq!(draft["Status"], "Draft", "{what}");
        assert!(draft["PaymentAuthorizationId"].is_null(), "{what}: {draft}");
        f.stop();
    }
}
