//! The Check Cart Inventory flow end to end on the in-memory store.

use std::sync::Arc;

use cartflow::ids::SequentialIds;
use cartflow::integrations::Integrations;
use cartflow::model::{CartStatus, OperationStatus, OutputType, SessionState};
use cartflow::sample::{self, SampleCart};
use cartflow::{Engine, MemoryStore};
use serde_json::json;

fn engine() -> Engine {
    let data = sample::dataset();
    let integrations = Integrations::with_stock_tables(&data.stock);
    Engine::new(Arc::new(MemoryStore::from_dataset(data).unwrap()))
        .with_ids(Arc::new(SequentialIds::default()))
        .with_integrations(integrations)
}

fn output(result: &cartflow::ActionResult, key: &str) -> String {
    assert!(result.is_success, "{result:?}");
    result.output_values.as_ref().unwrap()[key]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Starts checkout on `cart` and walks it to a locked Inventory step.
fn to_locked_inventory(engine: &Engine, cart: SampleCart) -> String {
    let buyer = sample::buyer_id().to_string();
    sample::lock_inventory_step(engine, &buyer, cart.id())
        .unwrap()
        .to_string()
}

#[test]
fn an_in_stock_cart_passes_the_inventory_step() {
    let engine = engine();
    let buyer = sample::buyer_id().to_string();
    let session = to_locked_inventory(&engine, SampleCart::InStock);
    let op = output(
        &engine.invoke(
            "checkCartInventoryAction",
            &json!({"cartId": SampleCart::InStock.id().to_string()}),
            &buyer,
        ),
        "backgroundOperationId",
    );
    assert_eq!(engine.run_until_idle().unwrap(), 1);
    let store = engine.store();
    let session = store.session(&session.parse().unwrap()).unwrap().unwrap();
    assert_eq!(session.state, Some(SessionState::ConfirmPrice));
    assert!(!session.is_processing && !session.is_error);
    assert_eq!(session.background_operation_id.unwrap().to_string(), op);
    let op = store.operation(&op.parse().unwrap()).unwrap().unwrap();
    assert_eq!(op.status, OperationStatus::Complete);
    assert_eq!(
        store
            .cart(&SampleCart::InStock.id())
            .unwrap()
            .unwrap()
            .status,
        CartStatus::Checkout
    );
}

#[test]
fn a_short_cart_ends_in_error_with_one_output_per_problem() {
    let engine = engine();
    let buyer = sample::buyer_id().to_string();
    let session = to_locked_inventory(&engine, SampleCart::ShortStock);
    engine.invoke(
        "checkCartInventoryAction",
        &json!({"cartId": SampleCart::ShortStock.id().to_string()}),
        &buyer,
    );
    engine.run_until_idle().unwrap();
    let store = engine.store();
    let session = store.session(&session.parse().unwrap()).unwrap().unwrap();
    assert_eq!(session.state, Some(SessionState::Error));
    assert!(session.is_error && !session.is_processing);
    let outputs = store
        .validation_outputs(&SampleCart::ShortStock.id())
        .unwrap();
    let mut messages: Vec<_> = outputs.iter().map(|o| o.message.clone()).collect();
    messages.sort();
    assert_eq!(
        messages,
        [
            "SKU STOVE-X: 2 wanted, only 1 available.",
            "SKU TENT-4P: 5 wanted, only 4 available."
        ]
    );
    assert!(
        outputs
            .iter()
            .all(|o| o.output_type == OutputType::Inventory)
    );
}
