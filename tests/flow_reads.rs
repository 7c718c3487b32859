//! What the flow driver reads: within one call, each turn starts from the session as the
//! driver's last command wrote it, so a whole checkout reads the cart's sessions once.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use cartflow::flow::{Drive, Waiting, drive};
use cartflow::model::{CartCheckoutSession, SfId};
use cartflow::sample::{self, SampleCart};
use cartflow::{Engine, MemoryStore, Store, StoreError};

/// The memory store, counting the reads of a cart's sessions.
struct CountsSessionReads {
    inner: Arc<MemoryStore>,
    reads: AtomicU32,
}

impl Store for CountsSessionReads {
    fn sessions_of(&self, cart_id: &SfId) -> Result<Vec<CartCheckoutSession>, StoreError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.inner.sessions_of(cart_id)
    }
    delegate_store!(inner => user, load, commit, claimable_operations, expired_operations,
        claim_next, cart, carts_after, cart_items, cart_item, validation_output, session,
        operation, operations_of, order, validation_outputs, history, events_after, last_event,
        webhook_cursor, advance_webhook, deliveries, begin_keyed, keep_answer, release_key,
        operation_counts, web_stores, owner_of);
}

#[test]
fn a_whole_inline_checkout_reads_the_carts_sessions_once() {
    let data = sample::dataset();
    let store = Arc::new(CountsSessionReads {
        inner: Arc::new(MemoryStore::from_dataset(data.clone()).unwrap()),
        reads: AtomicU32::new(0),
    });
    let engine = Engine::new(store.clone()).with_integrations(sample::integrations(&data));
    let buyer = sample::buyer_id().to_string();
    let cart = SampleCart::InStock.id();
    let outcome = drive(
        &engine,
        &buyer,
        &cart,
        &sample::buyer_input(),
        Waiting::RunInline,
    )
    .unwrap();
    assert!(matches!(outcome, Drive::Complete { .. }), "{outcome:?}");
    assert_eq!(store.reads.load(Ordering::SeqCst), 1);
    // A second call starts from the store: it reads them again, and finds the checkout done.
    let again = drive(
        &engine,
        &buyer,
        &cart,
        &sample::buyer_input(),
        Waiting::RunInline,
    )
    .unwrap();
    assert_eq!(again, outcome);
    assert_eq!(store.reads.load(Ordering::SeqCst), 2);
}
