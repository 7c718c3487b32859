//! SOQL queries over HTTP, as a Salesforce client sends them (`GET .../query?q=`): a buyer
//! finds the cart's active session and another buyer finds nothing; malformed queries,
//! unknown objects and fields are refused as Salesforce refuses them; every field a record
//! shows can be selected, and answers what the record shows; filters, parent fields, order,
//! LIMIT, OFFSET and COUNT() select what they say; a result past a batch answers a locator
//! for the rest; and the objects, their descriptions, `?fields=` and the composite retrieve
//! answer what a client asks before and besides a query.

#![cfg(feature = "http")]

use std::collections::BTreeSet;

use cartflow::sample::{self, SampleCart};
use serde_json::{Value, json};

#[path = "support/mod.rs"]
mod support;

use support::checkout_http::*;

/// A query string's `q` as a client encodes it: spaces as `+`, the rest percent-encoded.
fn q(text: &str) -> String {
    let mut encoded = String::from("/query?q=");
    for byte in text.bytes() {
        match byte {
            b' ' => encoded.push('+'),
            b if b.is_ascii_alphanumeric() || b"-_.".contains(&b) => encoded.push(b as char),
            b => encoded.push_str(&format!("%{b:02X}")),
        }
    }
    encoded
}

impl Fixture {
    fn query(&self, text: &str) -> Reply {
        self.get(&q(text))
    }

    /// A query that must be answered: its records.
    fn rows(&self, text: &str) -> Vec<Value> {
        let reply = self.query(text);
        assert_eq!(reply.status, 200, "{text}: {:?}", reply.body);
        assert_eq!(reply.body["done"], true, "{text}");
        let records = reply.body["records"].as_array().unwrap().clone();
        assert_eq!(reply.body["totalSize"], records.len(), "{text}");
        records
    }

    /// The Ids a query answers, in its order.
    fn ids(&self, text: &str) -> Vec<String> {
        self.rows(text)
            .iter()
            .map(|r| r["Id"].as_str().unwrap().to_owned())
            .collect()
    }

    fn session_of(&self, cart: &str) -> String {
        self.succeed(
            "checkoutSessionAction",
            json!({"cartId": cart, "initialState": "Start"}),
        )
        .expect("a session")
    }
}

#[test]
fn a_buyer_finds_the_carts_active_session_and_another_buyer_finds_nothing() {
    let mut f = start_with(0);
    let cart = SampleCart::InStock.id().to_string();
    let session = f.session_of(&cart);
    let text = format!(
        "SELECT Id, State FROM CartCheckoutSession WHERE WebCartId = '{cart}' AND IsArchived = false"
    );
    let reply = f.query(&text);
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(reply.body["totalSize"], 1);
    assert_eq!(reply.body["done"], true);
    let record = &reply.body["records"][0];
    assert_eq!(record["Id"], session.as_str());
    assert_eq!(record["State"], "Start");
    assert_eq!(record["attributes"]["type"], "CartCheckoutSession");
    assert_eq!(
        record["attributes"]["url"],
        format!("/services/data/{V}/sobjects/CartCheckoutSession/{session}")
    );
    let fields: BTreeSet<&str> = record
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(fields, BTreeSet::from(["Id", "State", "attributes"]));

    let theirs = f.get_as(STRANGER, &q(&text));
    assert_eq!(theirs.status, 200, "{:?}", theirs.body);
    assert_eq!(theirs.body["totalSize"], 0);
    assert_eq!(theirs.body["records"], json!([]));
    let counted = f.get_as(STRANGER, &q("SELECT COUNT() FROM WebCart"));
    assert_eq!(counted.body["totalSize"], 0, "{:?}", counted.body);

    // `= null` names no record, so it does not narrow the carts read.
    let idle = f.ids(&format!(
        "SELECT Id FROM CartCheckoutSession WHERE BackgroundOperationId = null AND WebCartId = '{cart}'"
    ));
    assert_eq!(idle, std::slice::from_ref(&session));
    // The filter is applied: the cart has no archived session.
    let archived = text.replace("IsArchived = false", "IsArchived = true");
    assert_eq!(f.rows(&archived), Vec::<Value>::new());
    f.stop();
}

#[test]
fn malformed_queries_unknown_objects_and_fields_are_refused_as_salesforce_refuses_them() {
    let mut f = start_with(0);
    let refused = [
        (
            "SELECT Id FROM Nothing",
            400,
            "INVALID_TYPE",
            "ERROR at Row:1:Column:16\nsObject type 'Nothing' is not supported.",
        ),
        (
            "SELEKT Id",
            400,
            "MALFORMED_QUERY",
            "ERROR at Row:1:Column:1\nunexpected token: 'SELEKT'",
        ),
        (
            "SELECT Id, Nope FROM WebCart",
            400,
            "INVALID_FIELD",
            "ERROR at Row:1:Column:12\nNo such column 'Nope' on entity 'WebCart'.",
        ),
        (
            "SELECT Id FROM WebCart WHERE Id = 'x'",
            400,
            "INVALID_QUERY_FILTER_OPERATOR",
            "invalid ID field: x",
        ),
        (
            "SELECT Id FROM CartItem WHERE Quantity = '2'",
            400,
            "INVALID_FIELD",
            "value of filter criterion for field 'Quantity' must be of type double and should not be enclosed in quotes",
        ),
    ];
    for (text, status, code, message) in refused {
        let reply = f.query(text);
        assert_eq!(reply.status, status, "{text}: {:?}", reply.body);
        assert_eq!(reply.error_code(), code, "{text}");
        assert!(
            reply.message().contains(message),
            "{text}: {}",
            reply.message()
        );
    }
    let long = format!(
        "SELECT Id FROM WebCart WHERE Status IN ({})",
        vec!["'Active'"; 3_000].join(",")
    );
    assert_eq!(f.query(&long).status, 414);
    assert_eq!(f.get("/query").error_code(), "MALFORMED_QUERY");
    assert_eq!(f.get_as("nobody", &q("SELECT Id FROM WebCart")).status, 401);
    assert_eq!(
        f.get("/query/not-a-locator").error_code(),
        "INVALID_QUERY_LOCATOR"
    );
    f.stop();
}

/// Every record of a whole checkout, by object: (object, Id).
fn records_of_a_checkout(f: &Fixture) -> Vec<(&'static str, String)> {
    let order = checkout_for(f, SampleCart::InStock, &sample::denver(), "GROUND");
    let cart = SampleCart::InStock.id().to_string();
    let first = |path: &str| -> String {
        let reply = f.get(path);
        reply.body["records"][0]["Id"]
            .as_str()
            .unwrap_or_else(|| panic!("{path}: {:?}", reply.body))
            .to_owned()
    };
    let session = f.ids(&format!(
        "SELECT Id FROM CartCheckoutSession WHERE WebCartId = '{cart}'"
    ));
    let operation = f.ids(&format!(
        "SELECT Id FROM BackgroundOperation WHERE CartId = '{cart}' LIMIT 1"
    ));
    let order_id = order["Id"].as_str().unwrap().to_owned();
    let line = first(&format!("/sobjects/WebCart/{cart}/CartItems"));
    vec![
        ("WebCart", cart.clone()),
        ("CartItem", line.clone()),
        ("CartCheckoutSession", session[0].clone()),
        ("BackgroundOperation", operation[0].clone()),
        (
            "CartDeliveryGroup",
            first(&format!("/sobjects/WebCart/{cart}/CartDeliveryGroups")),
        ),
        (
            "CartDeliveryGroupMethod",
            first(&format!(
                "/sobjects/WebCart/{cart}/CartDeliveryGroupMethods"
            )),
        ),
        (
            "CartTax",
            first(&format!("/sobjects/CartItem/{line}/CartTaxes")),
        ),
        ("Order", order_id.clone()),
        (
            "OrderItem",
            first(&format!("/sobjects/Order/{order_id}/OrderItems")),
        ),
        (
            "OrderDeliveryGroup",
            first(&format!("/sobjects/Order/{order_id}/OrderDeliveryGroups")),
        ),
        (
            "PaymentAuthorization",
            order["PaymentAuthorization"]["Id"]
                .as_str()
                .unwrap()
                .to_owned(),
        ),
    ]
}

#[test]
fn every_field_a_record_shows_can_be_selected_and_answers_what_the_record_shows() {
    let mut f = start();
    let mut records = records_of_a_checkout(&f);
    // A validation output: the short-stock cart's inventory check fails.
    let short = SampleCart::ShortStock.id().to_string();
    let session = f.session_of(&short);
    f.advance(&session, "Shipping Address");
    f.set_on_cart(&short, json!({ "DeliverTo": sample::denver() }));
    f.advance(&session, "Inventory");
    f.succeed(
        "updateCheckoutSessionStateAction",
        json!({"checkoutSessionId": session, "expCurrentState": "Inventory", "nextState": "Confirm Price"}),
    );
    f.succeed("checkCartInventoryAction", json!({ "cartId": short }));
    f.settled_session(&session);
    let outputs = f.ids(&format!(
        "SELECT Id FROM CartValidationOutput WHERE CartId = '{short}'"
    ));
    records.push((
        "CartValidationOutput",
        outputs.first().expect("an output").clone(),
    ));

    for (object, id) in records {
        let mut shown = f.record(object, &id);
        shown.as_object_mut().unwrap().remove("attributes");
        let fields: Vec<&String> = shown.as_object().unwrap().keys().collect();
        let names: Vec<&str> = fields.iter().map(|s| s.as_str()).collect();
        let text = format!(
            "SELECT {} FROM {object} WHERE Id = '{id}'",
            names.join(", ")
        );
        let rows = f.rows(&text);
        assert_eq!(rows.len(), 1, "{text}");
        let mut answered = rows[0].clone();
        answered.as_object_mut().unwrap().remove("attributes");
        assert_eq!(
            answered, shown,
            "{object}: the query answers what the record shows"
        );
    }
    f.stop();
}

#[test]
fn filters_parent_fields_order_limit_offset_and_count_select_what_they_say() {
    let mut f = start();
    let order = checkout_for(&f, SampleCart::InStock, &sample::denver(), "GROUND");
    let cart = SampleCart::InStock.id().to_string();
    let lines = f.lines(&cart);
    let products: Vec<&Value> = lines.iter().filter(|l| l["Type"] == "Product").collect();
    assert!(products.len() >= 2, "{lines:?}");

    // Sorted as the query sorts: quantity descending, then Id.
    let mut expected: Vec<(String, String)> = products
        .iter()
        .map(|l| {
            (
                l["Quantity"].as_str().unwrap().to_owned(),
                l["Id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    expected.sort_by(|a, b| {
        let qa: f64 = a.0.parse().unwrap();
        let qb: f64 = b.0.parse().unwrap();
        qb.total_cmp(&qa).then(a.1.cmp(&b.1))
    });
    let by_quantity = f.ids(&format!(
        "SELECT Id FROM CartItem WHERE CartId = '{cart}' AND Type = 'product' ORDER BY Quantity DESC, Id"
    ));
    assert_eq!(
        by_quantity,
        expected.iter().map(|e| e.1.clone()).collect::<Vec<_>>()
    );
    let page = f.ids(&format!(
        "SELECT Id FROM CartItem WHERE CartId = '{cart}' AND Type = 'Product' ORDER BY Quantity DESC, Id LIMIT 1 OFFSET 1"
    ));
    assert_eq!(page, [expected[1].1.clone()]);

    let count = f.query(&format!(
        "SELECT COUNT() FROM CartItem WHERE CartId = '{cart}'"
    ));
    assert_eq!(
        (
            count.body["totalSize"].clone(),
            count.body["records"].clone()
        ),
        (json!(lines.len()), json!([]))
    );

    let charge = f.ids(&format!(
        "SELECT Id FROM CartItem WHERE CartId = '{cart}' AND NOT Type IN ('Product')"
    ));
    let charges: Vec<&str> = lines
        .iter()
        .filter(|l| l["Type"] == "Charge")
        .map(|l| l["Id"].as_str().unwrap())
        .collect();
    assert_eq!(charge, charges);

    let sku = products[0]["Sku"].as_str().unwrap();
    let prefix: String = sku.chars().take(2).collect();
    let like = f.ids(&format!(
        "SELECT Id FROM CartItem WHERE CartId = '{cart}' AND (Sku LIKE '{}%' OR Sku = null)",
        prefix.to_lowercase()
    ));
    let expected_like: Vec<&str> = lines
        .iter()
        .filter(|l| {
            l["Sku"]
                .as_str()
                .is_none_or(|s| s.to_lowercase().starts_with(&prefix.to_lowercase()))
        })
        .map(|l| l["Id"].as_str().unwrap())
        .collect();
    assert_eq!(like, expected_like);

    let with_cart = f.rows(&format!("SELECT Id, Cart.Status, Cart.GrandTotalAmount FROM CartItem WHERE CartId = '{cart}' LIMIT 1"));
    let parent = &with_cart[0]["Cart"];
    assert_eq!(parent["attributes"]["type"], "WebCart");
    assert_eq!(parent["Status"], f.record("WebCart", &cart)["Status"]);
    assert_eq!(
        parent["GrandTotalAmount"],
        f.record("WebCart", &cart)["GrandTotalAmount"]
    );

    let order_id = order["Id"].as_str().unwrap();
    let activated = f.ids(&format!("SELECT Id FROM Order WHERE CartId = '{cart}' AND Status = 'Activated' AND GrandTotalAmount > 0"));
    assert_eq!(activated, [order_id]);
    let none = f.ids(&format!(
        "SELECT Id FROM Order WHERE CartId = '{cart}' AND ActivatedDate < 2000-01-01T00:00:00Z"
    ));
    assert!(none.is_empty());
    let items = f.ids(&format!(
        "SELECT Id FROM OrderItem WHERE OrderId = '{order_id}'"
    ));
    assert_eq!(items.len(), order["Items"].as_array().unwrap().len());
    f.stop();
}

#[test]
fn a_result_past_a_batch_answers_a_locator_for_the_rest() {
    let mut data = sample::dataset();
    let copies = sample::add_in_stock_copies(&mut data, 1 << 20, 600);
    let mut f = start_over(&data, sample::integrations(&data), 0);
    let owned: BTreeSet<String> = data
        .carts
        .iter()
        .filter(|c| c.owner_id == sample::buyer_id())
        .map(|c| c.id.to_string())
        .collect();
    assert!(owned.len() > copies.len());
    let options = [("Sforce-Query-Options", "batchSize=250")];
    let mut reply = f.get_with(BUYER, &q("SELECT Id FROM WebCart ORDER BY Id"), &options);
    let mut seen: Vec<String> = Vec::new();
    let mut batches = 0;
    loop {
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        assert_eq!(reply.body["totalSize"], owned.len());
        let records = reply.body["records"].as_array().unwrap();
        batches += 1;
        seen.extend(records.iter().map(|r| r["Id"].as_str().unwrap().to_owned()));
        if reply.body["done"] == true {
            assert!(reply.body.get("nextRecordsUrl").is_none());
            break;
        }
        assert_eq!(records.len(), 250);
        let next = reply.body["nextRecordsUrl"].as_str().unwrap();
        let path = next.strip_prefix(&format!("/services/data/{V}")).unwrap();
        reply = f.get(path);
    }
    assert_eq!(batches, owned.len().div_ceil(250));
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(seen, sorted, "the batches follow the query's order");
    assert_eq!(seen.into_iter().collect::<BTreeSet<_>>(), owned);
    f.stop();
}

#[test]
fn the_objects_and_their_descriptions_name_every_field_a_query_accepts() {
    let mut f = start_with(0);
    let listed = f.get("/sobjects");
    assert_eq!(listed.status, 200, "{:?}", listed.body);
    let objects = listed.body["sobjects"].as_array().unwrap();
    assert_eq!(objects.len(), 12);
    let cart = objects.iter().find(|o| o["name"] == "WebCart").unwrap();
    assert_eq!(cart["keyPrefix"], "0a6");
    assert_eq!(
        cart["urls"]["describe"],
        format!("/services/data/{V}/sobjects/WebCart/describe")
    );

    for object in objects {
        let name = object["name"].as_str().unwrap();
        let described = f.get(&format!("/sobjects/{name}/describe"));
        assert_eq!(described.status, 200, "{name}: {:?}", described.body);
        let fields = described.body["fields"].as_array().unwrap();
        let names: Vec<&str> = fields.iter().map(|f| f["name"].as_str().unwrap()).collect();
        assert_eq!(names[0], "Id", "{name}");
        // Every field described is one a query selects.
        let rows = f.query(&format!("SELECT {} FROM {name} LIMIT 1", names.join(", ")));
        assert_eq!(rows.status, 200, "{name}: {:?}", rows.body);
        for relationship in described.body["childRelationships"].as_array().unwrap() {
            let child = relationship["childSObject"].as_str().unwrap();
            assert!(
                objects.iter().any(|o| o["name"] == child),
                "{name}: {relationship}"
            );
        }
    }
    let session = f.get("/sobjects/CartCheckoutSession/describe").body;
    let web_cart = session["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "WebCartId")
        .unwrap()
        .clone();
    assert_eq!(
        (
            web_cart["type"].clone(),
            web_cart["referenceTo"].clone(),
            web_cart["relationshipName"].clone(),
            web_cart["nillable"].clone()
        ),
        (
            json!("reference"),
            json!(["WebCart"]),
            json!("WebCart"),
            json!(false)
        )
    );
    let state = session["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "State")
        .unwrap()
        .clone();
    assert_eq!(
        (state["updateable"].clone(), state["nillable"].clone()),
        (json!(true), json!(true))
    );
    let cart = f.get("/sobjects/WebCart/describe").body;
    let children: Vec<&str> = cart["childRelationships"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["relationshipName"].as_str().unwrap())
        .collect();
    assert_eq!(
        children,
        [
            "CartItems",
            "CartValidationOutputs",
            "CartDeliveryGroups",
            "CartDeliveryGroupMethods",
            "CartTaxes"
        ]
    );
    assert_eq!(f.get("/sobjects/Nothing/describe").status, 404);
    assert_eq!(f.get_as("nobody", "/sobjects").status, 401);
    f.stop();
}

#[test]
fn a_read_with_fields_and_a_composite_retrieve_answer_only_the_fields_asked_for() {
    let mut f = start_with(0);
    let cart = SampleCart::InStock.id().to_string();
    let reorder = SampleCart::Reorder.id().to_string();
    let whole = f.record("WebCart", &cart);

    let some = f.get(&format!(
        "/sobjects/WebCart/{cart}?fields=Status,grandtotalamount"
    ));
    assert_eq!(some.status, 200, "{:?}", some.body);
    let expected = json!({"attributes": whole["attributes"], "Status": whole["Status"], "GrandTotalAmount": whole["GrandTotalAmount"]});
    assert_eq!(some.body, expected);
    let unknown = f.get(&format!("/sobjects/WebCart/{cart}?fields=Status,Nope"));
    assert_eq!(
        (unknown.status, unknown.error_code()),
        (400, "INVALID_FIELD")
    );

    let path = format!(
        "/composite/sobjects/WebCart?ids={cart},0a6000000009999,nope,{reorder}&fields=Status,GrandTotalAmount"
    );
    let retrieved = f.get(&path);
    assert_eq!(retrieved.status, 200, "{:?}", retrieved.body);
    let records = retrieved.body.as_array().unwrap();
    assert_eq!(records.len(), 4);
    assert_eq!(records[0], expected);
    assert_eq!(
        (records[1].clone(), records[2].clone()),
        (Value::Null, Value::Null)
    );
    assert_eq!(
        records[3]["attributes"]["url"],
        format!(
            "/services/data/{V}/sobjects/WebCart/{}",
            f.record("WebCart", &reorder)["Id"].as_str().unwrap()
        )
    );
    // Another buyer reads none of them.
    let theirs = f.get_as(STRANGER, &path);
    assert_eq!(theirs.body, json!([null, null, null, null]));
    let missing = f.get(&format!("/composite/sobjects/WebCart?ids={cart}"));
    assert_eq!(
        (missing.status, missing.error_code()),
        (400, "MISSING_ARGUMENT")
    );
    let missing = f.get("/composite/sobjects/WebCart?fields=Id");
    assert_eq!(
        (missing.status, missing.error_code()),
        (400, "MISSING_ARGUMENT")
    );
    f.stop();
}
