//! What the public types print under `{:?}`: enough to tell them apart in a log, and never a
//! secret.

use std::sync::Arc;

use cartflow::integrations::HttpProviderConfig;
use cartflow::machine::{Template, TransitionTable};
use cartflow::sample;
use cartflow::{Engine, MemoryStore};

fn engine() -> Engine {
    Engine::new(Arc::new(
        MemoryStore::from_dataset(sample::dataset()).unwrap(),
    ))
}

#[test]
fn an_engine_prints_its_template_and_settings() {
    let printed = format!("{:?}", engine());
    assert!(printed.starts_with("Engine {"), "{printed}");
    assert!(printed.contains(&Template::standard().name), "{printed}");
    assert!(printed.contains("max_attempts"), "{printed}");
    let other = Template::without_promotions();
    let custom = engine().with_table(TransitionTable::build(other.clone()).unwrap());
    assert!(format!("{custom:?}").contains(&other.name), "{custom:?}");
}

#[test]
fn a_worker_pool_prints_how_many_workers_it_runs() {
    let pool = engine().start_workers(3);
    let printed = format!("{pool:?}");
    assert!(printed.contains("workers: 3"), "{printed}");
    assert!(printed.contains("restarts: 0"), "{printed}");
}

#[test]
fn an_http_providers_secret_never_prints() {
    let secret = "correct-horse-battery-staple";
    let config = HttpProviderConfig {
        url: "http://127.0.0.1:9/tax".into(),
        timeout_ms: 1_000,
        secret: secret.into(),
    };
    let printed = format!("{config:?}");
    assert!(!printed.contains(secret), "{printed}");
    assert!(printed.contains("<redacted>"), "{printed}");
    assert!(printed.contains("127.0.0.1:9/tax"), "{printed}");
}

#[test]
fn a_decision_context_prints_its_template_time_and_settings() {
    let table = TransitionTable::build(Template::without_promotions()).unwrap();
    let ids = cartflow::ids::SequentialIds::default();
    let now = chrono::DateTime::UNIX_EPOCH;
    let context = cartflow::machine::DecideContext {
        table: &table,
        now,
        ids: &ids,
        settings: cartflow::machine::OperationSettings::default(),
    };
    let printed = format!("{context:?}");
    assert!(printed.contains(&table.template().name), "{printed}");
    assert!(printed.contains("1970-01-01"), "{printed}");
    assert!(printed.contains("retry_limit"), "{printed}");
}
