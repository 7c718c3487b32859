//! Whole checkouts with the flow driver: Start to Complete with an activated order, the
//! failure paths, and a checkout one engine stops that another continues.

use std::sync::Arc;

use cartflow::flow::{BuyerInput, Drive, Waiting, drive};
use cartflow::ids::SequentialIds;
use cartflow::model::{CartStatus, OrderStatus, OutputType, SessionState};
use cartflow::sample::{self, SampleCart};
use cartflow::{Engine, MemoryStore, Store};

fn engine_over(store: Arc<MemoryStore>, first_id: u64) -> Engine {
    let data = sample::dataset();
    Engine::new(store)
        .with_ids(Arc::new(SequentialIds::starting_at(first_id)))
        .with_integrations(sample::integrations(&data))
}

fn store() -> Arc<MemoryStore> {
    Arc::new(MemoryStore::from_dataset(sample::dataset()).unwrap())
}

fn full_input() -> BuyerInput {
    BuyerInput {
        deliver_to: Some(sample::denver()),
        delivery_method_id: None,
        payment_token: Some(sample::GOOD_TOKEN.into()),
        place_order: true,
    }
}

fn buyer() -> String {
    sample::buyer_id().to_string()
}

#[test]
fn a_checkout_runs_from_start_to_an_activated_order_and_a_closed_cart() {
    let store = store();
    let engine = engine_over(store.clone(), 1);
    let cart = SampleCart::InStock.id();
    let outcome = drive(&engine, &buyer(), &cart, &full_input(), Waiting::RunInline).unwrap();
    let Drive::Complete {
        session_id,
        order_id,
    } = outcome
    else {
        panic!("not complete: {outcome:?}");
    };
    let order = store.order(&order_id).unwrap().unwrap();
    assert_eq!(order.status, OrderStatus::Activated);
    assert!(order.order_summary_id.is_some());
    assert!(order.payment_authorization_id.is_some());
    let cart_after = store.cart(&cart).unwrap().unwrap();
    assert_eq!(cart_after.status, CartStatus::Closed);
    // The order carries what the buyer saw: lines and the grand total.
    assert_eq!(order.grand_total_amount, cart_after.grand_total_amount);
    assert_eq!(order.items.len(), store.cart_items(&cart).unwrap().len());
    let session = store.session(&session_id).unwrap().unwrap();
    assert_eq!(session.state, Some(SessionState::Complete));
    assert!(session.is_archived);
    // Every step of the template was passed through, in order.
    let reached: Vec<String> = store
        .history(&cart)
        .unwrap()
        .into_iter()
        .filter(|h| h.record == session_id)
        .map(|h| h.to)
        .collect();
    for state in SessionState::ALL
        .iter()
        .filter(|s| **s != SessionState::Error)
    {
        assert!(
            reached.iter().any(|to| to == state.as_str()),
            "{state} not reached: {reached:?}"
        );
    }
    // Driving a complete checkout again is a no-op answer.
    let again = drive(&engine, &buyer(), &cart, &full_input(), Waiting::RunInline).unwrap();
    assert!(matches!(again, Drive::Complete { .. }));
}

#[test]
fn a_checkout_stopped_anywhere_is_continued_by_another_engine() {
    let store = store();
    let cart = SampleCart::InStock.id();
    // The first engine runs until the buyer must choose a payment method.
    let first = engine_over(store.clone(), 1);
    let partial = BuyerInput {
        payment_token: None,
        ..full_input()
    };
    let stopped = drive(&first, &buyer(), &cart, &partial, Waiting::RunInline).unwrap();
    assert!(
        matches!(
            stopped,
            Drive::NeedsInput {
                state: SessionState::PaymentAndBillingAddress,
                ..
            }
        ),
        "{stopped:?}"
    );
    drop(first);
    // A second engine (another process, in effect) picks it up from the store alone.
    let second = engine_over(store.clone(), 1_000_000);
    let done = drive(&second, &buyer(), &cart, &full_input(), Waiting::RunInline).unwrap();
    assert!(matches!(done, Drive::Complete { .. }), "{done:?}");
}

#[test]
fn a_declined_payment_ends_in_error_without_an_activated_order() {
    let store = store();
    let engine = engine_over(store.clone(), 1);
    let cart = SampleCart::InStock.id();
    let input = BuyerInput {
        payment_token: Some(sample::DECLINED_TOKEN.into()),
        ..full_input()
    };
    let outcome = drive(&engine, &buyer(), &cart, &input, Waiting::RunInline).unwrap();
    let Drive::Failed {
        session_id,
        outputs,
    } = outcome
    else {
        panic!("not failed: {outcome:?}");
    };
    assert_eq!(outputs.len(), 1);
    assert_eq!(outputs[0].output_type, OutputType::Other);
    let session = store.session(&session_id).unwrap().unwrap();
    // The Draft order exists but was never activated, and the cart stays in checkout.
    let order = store.order(&session.order_id.unwrap()).unwrap().unwrap();
    assert_eq!(order.status, OrderStatus::Draft);
    assert_eq!(
        store.cart(&cart).unwrap().unwrap().status,
        CartStatus::Checkout
    );
}

#[test]
fn short_stock_fails_before_any_order_is_made() {
    let store = store();
    let engine = engine_over(store.clone(), 1);
    let cart = SampleCart::ShortStock.id();
    let outcome = drive(&engine, &buyer(), &cart, &full_input(), Waiting::RunInline).unwrap();
    let Drive::Failed {
        outputs,
        session_id,
    } = outcome
    else {
        panic!("not failed: {outcome:?}");
    };
    assert_eq!(outputs.len(), 2);
    assert!(
        outputs
            .iter()
            .all(|o| o.output_type == OutputType::Inventory)
    );
    assert!(
        store
            .session(&session_id)
            .unwrap()
            .unwrap()
            .order_id
            .is_none()
    );
}

#[test]
fn workers_and_the_driver_share_the_work() {
    let store = store();
    let engine = engine_over(store.clone(), 1);
    let workers = engine.start_workers(2);
    let cart = SampleCart::InStock.id();
    let outcome = drive(
        &engine,
        &buyer(),
        &cart,
        &full_input(),
        Waiting::Poll(std::time::Duration::from_secs(30)),
    )
    .unwrap();
    workers.stop();
    assert!(matches!(outcome, Drive::Complete { .. }), "{outcome:?}");
}
