//! Events: every committed move is published, in commit order, on every store (PostgreSQL
//! too when the harness in `tests/support` can provide a database). A commit that fails
//! publishes nothing; a reader following the log while many threads commit misses no event
//! and never sees one placed before an event it already read. Webhooks' cursors only move
//! forward, and their delivery log is read back latest first.

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use cartflow::events::{Delivery, DeliveryOutcome, EventPosition, PublishedEvent};
use cartflow::flow::{self, Drive, Waiting};
use cartflow::machine::Changes;
use cartflow::model::{CartStatus, SfId};
use cartflow::sample::{self, SampleCart};
use cartflow::store::{Commit, HistoryEntry};
use cartflow::{Engine, Store, StoreError};
use chrono::{TimeZone, Utc};
use support::stores;

fn engine_on(store: Arc<dyn Store>) -> Engine {
    let integrations = sample::integrations(&sample::dataset());
    Engine::new(store).with_integrations(integrations)
}

/// Walks `cart`'s checkout to the order, running each operation inline.
fn check_out(engine: &Engine, cart: &SfId) {
    let buyer = sample::buyer_id().to_string();
    let drive = flow::drive(
        engine,
        &buyer,
        cart,
        &sample::buyer_input(),
        Waiting::RunInline,
    );
    assert!(matches!(drive, Ok(Drive::Complete { .. })), "{drive:?}");
}

/// Every event after `after`, read `page` at a time.
fn read_all(engine: &Engine, after: Option<EventPosition>, page: usize) -> Vec<PublishedEvent> {
    let mut all = Vec::new();
    let mut cursor = after;
    loop {
        let batch = engine.events(cursor.as_ref(), page).unwrap();
        let Some(last) = batch.last() else {
            return all;
        };
        cursor = Some(last.position);
        all.extend(batch);
    }
}

/// The first `count` events after `after`, once they are all readable. On PostgreSQL an
/// event is read only once every transaction older than its own has ended, which other
/// tests' transactions may delay for a moment; the deadline only bounds a hang.
fn wait_for(store: &dyn Store, after: Option<EventPosition>, count: usize) -> Vec<PublishedEvent> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let events = store.events_after(after.as_ref(), count).unwrap();
        if events.len() >= count || std::time::Instant::now() > deadline {
            return events;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

fn assert_increasing(events: &[PublishedEvent], name: &str) {
    for pair in events.windows(2) {
        assert!(
            pair[0].position < pair[1].position,
            "{name}: {} then {}",
            pair[0].position,
            pair[1].position
        );
    }
}

#[test]
fn a_checkouts_events_are_its_history_in_commit_order() {
    for (name, open) in stores::all() {
        let (store, _guard) = open(sample::dataset());
        let engine = engine_on(Arc::clone(&store));
        let before = engine.last_event().unwrap();
        let cart = SampleCart::InStock.id();
        check_out(&engine, &cart);
        let moves = store.history(&cart).unwrap().len();
        let events = wait_for(store.as_ref(), before, moves);
        assert_eq!(read_all(&engine, before, 1_000), events, "{name}");
        assert_increasing(&events, name);
        let entries: Vec<HistoryEntry> = events.iter().map(|e| e.entry.clone()).collect();
        assert_eq!(entries, store.history(&cart).unwrap(), "{name}");
        assert!(entries.len() > 20, "{name}: {} moves", entries.len());
        assert_eq!(
            engine.last_event().unwrap(),
            events.last().map(|e| e.position),
            "{name}"
        );
        // Read seven at a time, the same events; past the last, none.
        assert_eq!(read_all(&engine, before, 7), events, "{name}");
        let last = events.last().unwrap().position;
        assert!(engine.events(Some(&last), 10).unwrap().is_empty(), "{name}");
        // A position past every transaction the store has run is past every event.
        let beyond = EventPosition::new(1 << 62, 0);
        assert!(
            engine.events(Some(&beyond), 10).unwrap().is_empty(),
            "{name}"
        );
        // From the middle on, the rest.
        let middle = events[events.len() / 2].position;
        assert_eq!(
            read_all(&engine, Some(middle), 1_000),
            events[events.len() / 2 + 1..],
            "{name}"
        );
    }
}

#[test]
fn a_commit_that_fails_publishes_nothing() {
    for (name, open) in stores::all() {
        let (store, _guard) = open(sample::dataset());
        let before = store.last_event().unwrap();
        let cart_id = SampleCart::InStock.id();
        let mut cart = store.cart(&cart_id).unwrap().unwrap();
        cart.status = CartStatus::Checkout;
        cart.version += 1;
        let entry = HistoryEntry {
            at: Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(),
            actor: None,
            cart_id,
            event: cartflow::machine::Event::Edit,
            machine: cartflow::machine::Machine::Cart,
            record: cart_id,
            from: "Active".into(),
            to: "Checkout".into(),
        };
        let commit = Commit {
            changes: Changes {
                carts: vec![cart],
                ..Changes::default()
            },
            history: vec![entry.clone()],
        };
        store.commit(&commit).unwrap();
        let published = wait_for(store.as_ref(), before, 1);
        assert_eq!(published.len(), 1, "{name}");
        assert_eq!(published[0].entry, entry, "{name}");
        // The same version again loses the compare-and-set: no event.
        let again = store.commit(&commit);
        assert!(matches!(again, Err(StoreError::Conflict(_))), "{name}");
        assert_eq!(
            store.last_event().unwrap(),
            Some(published[0].position),
            "{name}"
        );
        // A refused command commits nothing, so publishes nothing.
        let engine = engine_on(Arc::clone(&store));
        let refused = engine.invoke(
            "checkCartInventoryAction",
            &serde_json::json!({"cartId": cart_id.to_string()}),
            &sample::stranger_id().to_string(),
        );
        assert!(!refused.is_success, "{name}");
        assert_eq!(
            store.last_event().unwrap(),
            Some(published[0].position),
            "{name}"
        );
    }
}

/// Checkouts committed by `threads` threads at once while a subscriber follows the log: the
/// subscriber gets every event exactly once and in the order a full read gives afterwards.
#[test]
fn a_subscriber_following_concurrent_commits_misses_none_and_repeats_none() {
    const THREADS: u64 = 4;
    const CARTS_EACH: u64 = 3;
    for (name, open) in stores::all() {
        let mut data = sample::dataset();
        let carts = sample::add_in_stock_copies(&mut data, 500, THREADS * CARTS_EACH);
        let (store, _guard) = open(data);
        let engine = Arc::new(engine_on(Arc::clone(&store)));
        let start = engine.last_event().unwrap();
        let done = Arc::new(AtomicBool::new(false));
        let follower = {
            let mut subscription = engine.subscribe(start).batch(5);
            let done = Arc::clone(&done);
            thread::spawn(move || {
                let mut seen = Vec::new();
                loop {
                    let finished = done.load(Ordering::Acquire);
                    let batch = subscription.next_batch(Duration::from_millis(20)).unwrap();
                    if batch.is_empty() && finished {
                        return seen;
                    }
                    seen.extend(batch);
                }
            })
        };
        let workers: Vec<_> = carts
            .chunks(CARTS_EACH as usize)
            .map(|mine| {
                let engine = Arc::clone(&engine);
                let mine = mine.to_vec();
                thread::spawn(move || mine.iter().for_each(|cart| check_out(&engine, cart)))
            })
            .collect();
        for worker in workers {
            worker.join().unwrap();
        }
        let moves: usize = carts.iter().map(|c| store.history(c).unwrap().len()).sum();
        // Once every commit is readable, the follower's last empty batch ends it.
        wait_for(store.as_ref(), start, moves);
        done.store(true, Ordering::Release);
        let seen = follower.join().unwrap();
        let all = read_all(&engine, start, 1_000);
        assert_increasing(&seen, name);
        assert_eq!(seen.len(), all.len(), "{name}");
        assert_eq!(seen, all, "{name}");
        // Every move of every cart is there, in each cart's own order.
        for cart in &carts {
            let of_cart: Vec<HistoryEntry> = seen
                .iter()
                .filter(|e| e.entry.cart_id == *cart)
                .map(|e| e.entry.clone())
                .collect();
            assert_eq!(of_cart, store.history(cart).unwrap(), "{name}");
        }
        let distinct: BTreeSet<EventPosition> = seen.iter().map(|e| e.position).collect();
        assert_eq!(distinct.len(), seen.len(), "{name}");
    }
}

fn delivery(hook: &str, position: EventPosition, attempt: u32, ok: bool) -> Delivery {
    Delivery {
        hook: hook.into(),
        position,
        attempt,
        at: Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, attempt).unwrap(),
        outcome: if ok {
            DeliveryOutcome::Delivered { status: 204 }
        } else {
            DeliveryOutcome::Failed {
                status: Some(503),
                reason: "unavailable".into(),
            }
        },
    }
}

#[test]
fn a_webhooks_cursor_only_moves_forward_and_its_log_reads_latest_first() {
    for (name, open) in stores::all() {
        let (store, _guard) = open(sample::dataset());
        assert_eq!(store.webhook_cursor("erp").unwrap(), None, "{name}");
        let (first, second) = (EventPosition::new(0, 3), EventPosition::new(0, 9));
        store.advance_webhook("erp", Some(&first), None).unwrap();
        assert_eq!(store.webhook_cursor("erp").unwrap(), Some(first), "{name}");
        let failed = delivery("erp", second, 1, false);
        store.advance_webhook("erp", None, Some(&failed)).unwrap();
        assert_eq!(store.webhook_cursor("erp").unwrap(), Some(first), "{name}");
        let delivered = delivery("erp", second, 2, true);
        store
            .advance_webhook("erp", Some(&second), Some(&delivered))
            .unwrap();
        assert_eq!(store.webhook_cursor("erp").unwrap(), Some(second), "{name}");
        // An older position leaves the cursor where it is.
        store.advance_webhook("erp", Some(&first), None).unwrap();
        assert_eq!(store.webhook_cursor("erp").unwrap(), Some(second), "{name}");
        // Another hook has its own cursor and log.
        store
            .advance_webhook("crm", None, Some(&delivery("crm", first, 1, true)))
            .unwrap();
        assert_eq!(store.webhook_cursor("crm").unwrap(), None, "{name}");
        assert_eq!(
            store.deliveries("erp", 10).unwrap(),
            vec![delivered.clone(), failed],
            "{name}"
        );
        assert_eq!(
            store.deliveries("erp", 1).unwrap(),
            vec![delivered],
            "{name}"
        );
        assert_eq!(store.deliveries("crm", 10).unwrap().len(), 1, "{name}");
    }
}

#[test]
fn events_serialize_with_their_position_beside_the_move() {
    let (store, _guard) = stores::memory(sample::dataset());
    let engine = engine_on(store);
    check_out(&engine, &SampleCart::InStock.id());
    let event = &engine.events(None, 1).unwrap()[0];
    let json = serde_json::to_value(event).unwrap();
    assert_eq!(json["Position"], event.position.to_string());
    assert_eq!(json["CartId"], event.entry.cart_id.to_string());
    assert_eq!(
        serde_json::from_value::<PublishedEvent>(json).unwrap(),
        *event
    );
}
