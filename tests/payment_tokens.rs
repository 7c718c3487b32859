//! The buyer's payment token is write-only: no reader of a cart (a read-only sharer or the
//! owner) gets it back, over HTTP or from `cartflow inspect`. And the built-in gateway binds
//! each token to the account it was issued to: a token copied onto another buyer's cart is
//! declined at Authorize Payment and no order is activated.

mod support;

use std::sync::Arc;

use cartflow::flow::{BuyerInput, Drive, Waiting, drive};
use cartflow::ids::SequentialIds;
use cartflow::model::{
    Account, CartItem, CartStatus, KeyPrefix, OrderStatus, OutputType, PAYMENT_TOKEN_SET,
    Permission, SfId, User, WebCart,
};
use cartflow::sample::{self, SampleCart};
use cartflow::store::DataSet;
use cartflow::{Engine, MemoryStore, Store};
use rust_decimal::Decimal;
use serde_json::Value;

/// A second buyer account of the sample store.
fn other_account() -> SfId {
    SfId::from_number(KeyPrefix::Account, 700)
}

/// A buyer of [`other_account`].
fn other_buyer() -> SfId {
    SfId::from_number(KeyPrefix::User, 700)
}

/// The other buyer's cart: the in-stock cart's lines, in the sample store.
fn other_cart() -> SfId {
    SfId::from_number(KeyPrefix::WebCart, 700)
}

/// The sample world plus another buyer account, its buyer and an in-stock cart of theirs.
fn two_buyers() -> DataSet {
    let mut data = sample::dataset();
    data.accounts.push(Account {
        id: other_account(),
        name: "Other Outfitters".into(),
        is_active: true,
    });
    data.stores[0].buyer_accounts.insert(other_account());
    data.users.push(User {
        id: other_buyer(),
        name: "Otto Other".into(),
        account_id: Some(other_account()),
        permissions: [Permission::B2BBuyer].into_iter().collect(),
    });
    data.carts.push(WebCart::new(
        other_cart(),
        sample::store_id(),
        other_account(),
        other_buyer(),
        CartStatus::Active,
    ));
    data.items.push(CartItem::product(
        SfId::from_number(KeyPrefix::CartItem, 700),
        other_cart(),
        Some("ROPE-60M".into()),
        Decimal::from(2),
    ));
    data
}

fn paying_with(token: &str) -> BuyerInput {
    BuyerInput {
        deliver_to: Some(sample::denver()),
        delivery_method_id: None,
        payment_token: Some(token.into()),
        place_order: true,
    }
}

#[test]
fn a_token_copied_to_another_buyers_cart_is_declined_and_no_order_is_activated() {
    let data = two_buyers();
    let store = Arc::new(MemoryStore::from_dataset(data.clone()).unwrap());
    let engine = Engine::new(store.clone())
        .with_ids(Arc::new(SequentialIds::default()))
        .with_integrations(sample::integrations(&data));
    // The sample gateway issued GOOD_TOKEN to the sample buyers' account, not to this one.
    let input = paying_with(sample::GOOD_TOKEN);
    let outcome = drive(
        &engine,
        &other_buyer().to_string(),
        &other_cart(),
        &input,
        Waiting::RunInline,
    )
    .unwrap();
    let Drive::Failed {
        session_id,
        outputs,
    } = outcome
    else {
        panic!("the copied token was not declined: {outcome:?}");
    };
    assert_eq!(outputs.len(), 1, "{outputs:?}");
    assert_eq!(outputs[0].output_type, OutputType::Other);
    let message = &outputs[0].message;
    assert_eq!(
        message,
        "The payment method is not one of this account's: use another one."
    );
    // Whose token it is does not show.
    for owner in [sample::account_id(), sample::buyer_id()] {
        assert!(!message.contains(&owner.to_string()), "{message}");
    }
    assert!(!message.contains("Summit"), "{message}");
    let session = store.session(&session_id).unwrap().unwrap();
    let order = store.order(&session.order_id.unwrap()).unwrap().unwrap();
    assert_eq!(order.status, OrderStatus::Draft);
    assert_eq!(order.payment_authorization_id, None);
    assert_eq!(
        store.cart(&other_cart()).unwrap().unwrap().status,
        CartStatus::Checkout
    );

    // The account it was issued to pays with it.
    let owners = drive(
        &engine,
        &sample::buyer_id().to_string(),
        &SampleCart::InStock.id(),
        &input,
        Waiting::RunInline,
    )
    .unwrap();
    let Drive::Complete { order_id, .. } = owners else {
        panic!("the owner's checkout did not complete: {owners:?}");
    };
    assert_eq!(
        store.order(&order_id).unwrap().unwrap().status,
        OrderStatus::Activated
    );
}

#[test]
fn inspect_never_prints_the_payment_token() {
    let tmp = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_cartflow");
    let run = |args: &[&str]| {
        std::process::Command::new(bin)
            .args(args)
            .current_dir(tmp.path())
            .output()
            .unwrap()
    };
    // The demo pays for the in-stock cart with the sample's good token.
    assert!(run(&["demo"]).status.success());
    let db = format!("sqlite:{}", tmp.path().join("cartflow-demo.db").display());
    let cart = SampleCart::InStock.id().to_string();
    let text = run(&["inspect", "--cart", &cart, "--data", &db]);
    let json = run(&["inspect", "--cart", &cart, "--data", &db, "--json"]);
    for output in [&text, &json] {
        assert_eq!(output.status.code(), Some(0));
        let printed = String::from_utf8_lossy(&output.stdout);
        assert!(!printed.contains(sample::GOOD_TOKEN), "{printed}");
    }
    let report: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(report["cart"][PAYMENT_TOKEN_SET], true);
    assert!(report["cart"].get("PaymentToken").is_none());
}

#[cfg(feature = "http")]
mod over_http {
    use super::*;
    use cartflow::clock::SystemClock;
    use cartflow::http::{Server, ServerConfig, Tokens};
    use serde_json::json;
    use std::time::Duration;

    const V: &str = "v64.0";
    const OWNER: &str = "owner-token";
    const READER: &str = "reader-token";

    fn agent() -> ureq::Agent {
        crate::support::server::agent(Duration::from_secs(120))
    }

    fn answer(response: ureq::http::Response<ureq::Body>) -> (u16, Value) {
        let status = response.status().as_u16();
        let text = response.into_body().read_to_string().unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    #[test]
    fn neither_a_read_only_sharer_nor_the_owner_reads_the_payment_token() {
        let store = Arc::new(MemoryStore::from_dataset(sample::dataset()).unwrap());
        let engine = Engine::new(store.clone())
            .with_integrations(sample::integrations(&sample::dataset()))
            .with_clock(Arc::new(SystemClock));
        let tokens = Tokens::new()
            .with(OWNER, sample::buyer_id())
            .with(READER, sample::reader_id());
        let config = ServerConfig {
            addr: "127.0.0.1:0".parse().unwrap(),
            workers: 0,
            ..ServerConfig::default()
        };
        let server = Server::start(engine, tokens, &config).unwrap();
        let base = format!("http://{}/services/data/{V}", server.local_addr());
        let agent = agent();
        let cart = SampleCart::InStock.id().to_string();
        let cart_url = format!("{base}/sobjects/WebCart/{cart}");
        let read = |token: &str| {
            let (status, body) = answer(
                agent
                    .get(&cart_url)
                    .header("Authorization", format!("Bearer {token}"))
                    .call()
                    .unwrap(),
            );
            assert_eq!(status, 200, "{body}");
            body
        };
        for token in [OWNER, READER] {
            assert_eq!(read(token)[PAYMENT_TOKEN_SET], false, "{token}");
        }

        let (status, started) = answer(
            agent
                .post(format!("{base}/actions/standard/checkoutSessionAction"))
                .header("Authorization", format!("Bearer {OWNER}"))
                .header("Content-Type", "application/json")
                .send(json!({"inputs": [{"cartId": cart}]}).to_string())
                .unwrap(),
        );
        assert_eq!(status, 200, "{started}");
        let (status, body) = answer(
            agent
                .patch(&cart_url)
                .header("Authorization", format!("Bearer {OWNER}"))
                .header("Content-Type", "application/json")
                .send(json!({"PaymentToken": sample::GOOD_TOKEN}).to_string())
                .unwrap(),
        );
        assert_eq!(status, 204, "{body}");

        for token in [OWNER, READER] {
            let record = read(token);
            assert!(record.get("PaymentToken").is_none(), "{token}: {record}");
            assert!(
                !record.to_string().contains(sample::GOOD_TOKEN),
                "{token}: {record}"
            );
            assert_eq!(record[PAYMENT_TOKEN_SET], true, "{token}");
            assert_eq!(record["Status"], "Checkout", "{token}");
        }
        // The store keeps it for the payment step.
        assert_eq!(
            store
                .cart(&SampleCart::InStock.id())
                .unwrap()
                .unwrap()
                .payment_token,
            Some(sample::GOOD_TOKEN.to_owned())
        );
        drop(server);
    }
}
