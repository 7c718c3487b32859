//! The store's checkout time-to-live (WebStore.CheckoutTimeToLive: default 2,880 minutes, none = never,
//! 0 = checkout disabled), on an injected clock.

use std::sync::Arc;

use cartflow::clock::ManualClock;
use cartflow::ids::SequentialIds;
use cartflow::integrations::Integrations;
use cartflow::machine::{Command, Requirement};
use cartflow::model::{CartStatus, SfId};
use cartflow::sample::{self, SampleCart};
use cartflow::store::DataSet;
use cartflow::{CheckoutError, Engine, MemoryStore};
use chrono::{Duration, TimeZone, Utc};
use serde_json::json;

struct Rig {
    engine: Engine,
    store: Arc<MemoryStore>,
    clock: Arc<ManualClock>,
}

fn rig(ttl_minutes: Option<u32>) -> Rig {
    let mut data: DataSet = sample::dataset();
    for store in &mut data.stores {
        store.checkout_time_to_live = ttl_minutes;
    }
    let integrations = Integrations::with_stock_tables(&data.stock);
    let store = Arc::new(MemoryStore::from_dataset(data).unwrap());
    let clock = Arc::new(ManualClock::new(
        Utc.with_ymd_and_hms(2026, 5, 4, 8, 0, 0).unwrap(),
    ));
    let engine = Engine::new(store.clone())
        .with_ids(Arc::new(SequentialIds::default()))
        .with_clock(clock.clone())
        .with_integrations(integrations);
    Rig {
        engine,
        store,
        clock,
    }
}

fn buyer() -> String {
    sample::buyer_id().to_string()
}

fn cart() -> serde_json::Value {
    json!({"cartId": SampleCart::InStock.id().to_string()})
}

/// Starts checkout and walks to a locked Inventory step; returns the session.
fn locked_inventory(rig: &Rig) -> SfId {
    sample::lock_inventory_step(&rig.engine, &buyer(), SampleCart::InStock.id()).unwrap()
}

#[test]
fn a_session_past_the_time_to_live_refuses_actions_and_changes_nothing() {
    let rig = rig(Some(60));
    locked_inventory(&rig);
    rig.clock.advance(Duration::minutes(60));
    let before = rig.store.to_dataset();
    let result = rig
        .engine
        .invoke("checkCartInventoryAction", &cart(), &buyer());
    let error = &result.errors.as_ref().unwrap()[0];
    assert_eq!(
        (error.status_code.as_str(), result.http_status),
        ("INVALID_OPERATION", 403)
    );
    assert!(error.message.contains("expired"), "{}", error.message);
    let refused = rig
        .engine
        .execute(
            &buyer(),
            Command::RunStep {
                action: cartflow::machine::ProviderAction::CheckCartInventory,
                cart_id: SampleCart::InStock.id().to_string(),
            },
        )
        .unwrap_err();
    assert_eq!(refused.requirement(), Some(Requirement::SessionNotExpired));
    assert_eq!(rig.store.to_dataset(), before);
}

#[test]
fn a_session_within_the_time_to_live_runs() {
    let rig = rig(Some(60));
    locked_inventory(&rig);
    rig.clock.advance(Duration::minutes(59));
    assert!(
        rig.engine
            .invoke("checkCartInventoryAction", &cart(), &buyer())
            .is_success
    );
}

#[test]
fn no_time_to_live_never_expires() {
    let rig = rig(None);
    locked_inventory(&rig);
    rig.clock.advance(Duration::days(3_650));
    assert!(
        rig.engine
            .invoke("checkCartInventoryAction", &cart(), &buyer())
            .is_success
    );
}

#[test]
fn the_default_time_to_live_is_two_days() {
    let rig = rig(Some(cartflow::model::DEFAULT_CHECKOUT_TTL_MINUTES));
    locked_inventory(&rig);
    rig.clock.advance(Duration::minutes(2_880));
    let result = rig
        .engine
        .invoke("checkCartInventoryAction", &cart(), &buyer());
    assert_eq!(result.http_status, 403);
}

#[test]
fn a_time_to_live_of_zero_disables_checkout() {
    let rig = rig(Some(0));
    let before = rig.store.to_dataset();
    let err = rig
        .engine
        .execute(
            &buyer(),
            Command::StartSession {
                cart_id: SampleCart::InStock.id().to_string(),
                initial_state: None,
            },
        )
        .unwrap_err();
    assert!(matches!(
        err,
        CheckoutError::Refused {
            requirement: Requirement::CheckoutEnabled,
            status: 403,
            ..
        }
    ));
    assert_eq!(rig.store.to_dataset(), before);
}

#[test]
fn an_expired_open_session_restarts_and_an_expired_locked_one_can_be_cancelled() {
    let rig = rig(Some(60));
    // Open (not locked): starting again archives it and opens a fresh session.
    let first = rig
        .engine
        .invoke("checkoutSessionAction", &cart(), &buyer());
    let first: SfId = first.output_values.unwrap()["requestId"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    rig.clock.advance(Duration::minutes(61));
    let again = rig
        .engine
        .invoke("checkoutSessionAction", &cart(), &buyer());
    let second: SfId = again.output_values.unwrap()["requestId"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_ne!(first, second);
    assert!(rig.store_session(&first).is_archived);
    assert!(!rig.store_session(&second).is_archived);

    // Locked: a restart is refused (the cart is in progress); a cancel releases the cart.
    let rig = Rig::fresh(60);
    let locked = locked_inventory(&rig);
    rig.clock.advance(Duration::minutes(61));
    let restart = rig
        .engine
        .invoke("checkoutSessionAction", &cart(), &buyer());
    assert_eq!(restart.errors.unwrap()[0].status_code, "BAD_REQUEST");
    assert!(
        rig.engine
            .invoke("cancelCartAsyncOperation", &cart(), &buyer())
            .is_success
    );
    assert!(rig.store_session(&locked).is_archived);
    let cart = cartflow::Store::cart(&*rig.store, &SampleCart::InStock.id())
        .unwrap()
        .unwrap();
    assert_eq!(cart.status, CartStatus::Active);
}

impl Rig {
    fn fresh(ttl: u32) -> Rig {
        rig(Some(ttl))
    }

    fn store_session(&self, id: &SfId) -> cartflow::model::CartCheckoutSession {
        cartflow::Store::session(&*self.store, id).unwrap().unwrap()
    }
}
