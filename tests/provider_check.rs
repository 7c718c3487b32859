//! The engine names the WebStores whose template steps that money depends on (pricing,
//! payment) have no provider mapped.

use std::sync::Arc;

use cartflow::machine::{StepKind, Template, TransitionTable};
use cartflow::model::ProviderKind;
use cartflow::sample;
use cartflow::{Engine, MemoryStore, MissingProvider};

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
