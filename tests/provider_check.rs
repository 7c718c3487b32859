//! The engine names the WebStores whose template steps that money depends on (pricing,
//! payment) have no provider mapped.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use cartflow::machine::{Command, StepKind, Template, TransitionTable};
use cartflow::model::{ProviderKind, WebStore};
use cartflow::sample::{self, SampleCart};
use cartflow::{Engine, MemoryStore, MissingProvider, Store, StoreError};

fn engine() -> Engine {
    Engine::new(Arc::new(
        MemoryStore::from_dataset(sample::dataset()).unwrap(),
    ))
}

/// The (store, kind) pairs an engine reports missing.
fn missing(engine: &Engine) -> Vec<(String, ProviderKind)> {
    engine
        .missing_providers()
        .unwrap()
        .into_iter()
        .map(|MissingProvider { store, kind, .. }| (store.to_string(), kind))
        .collect()
}

#[test]
fn an_engine_without_integrations_lacks_pricing_and_payment_in_every_store() {
    let stores = [sample::store_id(), sample::other_store_id()];
    let mut expected: Vec<(String, ProviderKind)> = stores
        .iter()
        .flat_map(|s| {
            [ProviderKind::Price, ProviderKind::Payment].map(|kind| (s.to_string(), kind))
        })
        .collect();
    expected.sort();
    let mut got = missing(&engine());
    got.sort();
    assert_eq!(got, expected);
}

#[test]
fn only_the_store_without_providers_is_named_once_they_are_mapped() {
    let engine = engine().with_integrations(sample::integrations(&sample::dataset()));
    let other = sample::other_store_id().to_string();
    assert_eq!(
        missing(&engine),
        [
            (other.clone(), ProviderKind::Price),
            (other, ProviderKind::Payment)
        ]
    );
    let reported = engine.missing_providers().unwrap();
    assert!(reported[1].consequence().contains("no order can be placed"));
    assert!(reported[0].consequence().contains("no total"));
}

#[test]
fn a_template_without_a_payment_step_needs_no_payment_provider() {
    let mut template = Template::standard();
    let payment = template
        .steps
        .iter()
        .find(|s| s.kind == StepKind::Payment)
        .map(|s| s.state)
        .unwrap();
    assert!(template.remove_step(payment));
    let table = TransitionTable::build(template).unwrap();
    let engine = engine().with_table(table);
    let kinds: Vec<ProviderKind> = missing(&engine).into_iter().map(|(_, k)| k).collect();
    assert_eq!(kinds, [ProviderKind::Price, ProviderKind::Price]);
}

/// A memory store counting how often the WebStores are listed.
struct CountingStores {
    inner: Arc<MemoryStore>,
    listed: AtomicU32,
}

impl Store for CountingStores {
    fn web_stores(&self) -> Result<Vec<WebStore>, StoreError> {
        self.listed.fetch_add(1, Ordering::SeqCst);
        self.inner.web_stores()
    }

    delegate_store!(inner =>
        user, load, commit, claimable_operations, expired_operations, cart, carts_after, cart_items, cart_item,
        validation_output, session, sessions_of, operation, operations_of, order,
        validation_outputs, history, events_after, last_event, webhook_cursor, advance_webhook, deliveries, begin_keyed, keep_answer, release_key, owner_of,
        operation_counts
    );
}

/// Runs three commands on an engine over a counting store, after `before` (which may check
/// the providers itself); answers how often the WebStores were listed.
fn listings_over_three_commands(before: impl Fn(&Engine)) -> u32 {
    let store = Arc::new(CountingStores {
        inner: Arc::new(MemoryStore::from_dataset(sample::dataset()).unwrap()),
        listed: AtomicU32::new(0),
    });
    let engine = Engine::new(store.clone() as Arc<dyn Store>);
    before(&engine);
    let buyer = sample::buyer_id().to_string();
    for cart in [
        SampleCart::InStock,
        SampleCart::ShortStock,
        SampleCart::InStock,
    ] {
        let start = Command::StartSession {
            cart_id: cart.id().to_string(),
            initial_state: None,
        };
        // The third start is refused (a session is active): a refusal counts as a command.
        let _ = engine.clone().execute(&buyer, start);
    }
    store.listed.load(Ordering::SeqCst)
}

#[test]
fn the_engine_checks_the_providers_once_before_its_first_command() {
    assert_eq!(listings_over_three_commands(|_| {}), 1);
}

#[test]
fn a_caller_that_checked_the_providers_itself_is_not_checked_again() {
    let listed = listings_over_three_commands(|engine| {
        assert_eq!(engine.check_providers().unwrap().len(), 4);
    });
    assert_eq!(listed, 1);
}
