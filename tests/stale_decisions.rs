//! A decision on a read that moved on never commits: every record whose state a decision
//! relied on is guarded by its version, the active session included when only the cart is
//! written.

mod support;

use std::sync::{Arc, Mutex};

use cartflow::machine::{CheckoutDetails, Command};
use cartflow::model::{SessionState, SfId};
use cartflow::sample::{self, SampleCart};
use cartflow::store::Commit;
use cartflow::{CheckoutError, Engine, MemoryStore, Store, StoreError};

/// A store that, while `hold` is set, keeps a commit instead of applying it (the process
/// that decided it stalls before its commit reaches the database).
struct Stalling {
    inner: Arc<MemoryStore>,
    hold: Mutex<bool>,
    held: Mutex<Option<Commit>>,
}

impl Store for Stalling {
    fn commit(&self, commit: &Commit) -> Result<(), StoreError> {
        if *self.hold.lock().unwrap() {
            *self.held.lock().unwrap() = Some(commit.clone());
            return Err(StoreError::Io("stalled".into()));
        }
        self.inner.commit(commit)
    }

    delegate_store!(inner =>
        user, load, claimable_operations, expired_operations, cart, carts_after, cart_items, cart_item,
        validation_output, session, sessions_of, operation, operations_of, order,
        validation_outputs, history, events_after, last_event, webhook_cursor, advance_webhook, deliveries, begin_keyed, keep_answer, release_key, owner_of,
        operation_counts, web_stores
    );
}

#[test]
fn buyer_input_decided_before_the_step_was_locked_loses_the_compare_and_set() {
    let session = SfId::parse("2z9000000000009AAA").unwrap();
    let data = support::data::in_checkout_at(session, SessionState::new("Taxes").unwrap(), false);
    let inner = Arc::new(MemoryStore::from_dataset(data).unwrap());
    let stalling = Arc::new(Stalling {
        inner: inner.clone(),
        hold: Mutex::new(true),
        held: Mutex::new(None),
    });
    let buyer = sample::buyer_id().to_string();
    let cart = SampleCart::InStock.id().to_string();

    // One tab enters a payment token at Taxes: decided while the step is open, then stalled.
    let tab = Engine::new(stalling.clone() as Arc<dyn Store>);
    let input = Command::SetDetails {
        cart_id: cart.clone(),
        details: CheckoutDetails {
            payment_token: Some(sample::GOOD_TOKEN.into()),
            ..CheckoutDetails::default()
        },
    };
    assert!(matches!(
        tab.execute(&buyer, input),
        Err(CheckoutError::Store(StoreError::Io(_)))
    ));
    let stale = stalling
        .held
        .lock()
        .unwrap()
        .take()
        .expect("the stalled commit");

    // The other tab locks the step: only the session changes.
    let other = Engine::new(inner.clone() as Arc<dyn Store>);
    other
        .execute(
            &buyer,
            Command::UpdateSession {
                session_id: session.to_string(),
                next_state: "Payment And Billing Address".into(),
                exp_current_state: Some("Taxes".into()),
            },
        )
        .unwrap();
    let before = inner.to_dataset();

    // The stalled commit reaches the store now: it must not write the cart of a locked step.
    let late = inner.commit(&stale);
    assert!(matches!(late, Err(StoreError::Conflict(_))), "{late:?}");
    assert_eq!(inner.to_dataset(), before);
}
