//! Providers answered over HTTP by a service in another language: a whole checkout whose
//! inventory and tax come from a small Python service (`support/provider_service.py`, the
//! standard library only), and every way the exchange can fail taking the SystemError path.

#![cfg(feature = "http")]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use cartflow::flow::{self, Drive, Waiting};
use cartflow::integrations::{CustomConfig, HttpProviderConfig, Integrations};
use cartflow::model::{CartItemType, OperationStatus, OutputType, ProviderKind};
use cartflow::sample::{self, SampleCart};
use cartflow::{Engine, MemoryStore};
use rust_decimal::Decimal;

const SECRET: &str = "a-secret-of-some-length";

/// The Python service, killed when dropped.
struct Service {
    child: Child,
    port: u16,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn service() -> Service {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/support/provider_service.py"
    );
    let mut child = Command::new("python3")
        .arg(script)
        .arg(SECRET)
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs (CPython 3 from the machine's packages)");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line
        .trim()
        .strip_prefix("listening on ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("the service did not start: {line:?}"));
    Service { child, port }
}

fn http(service: &Service, path: &str, secret: &str, timeout_ms: u64) -> HttpProviderConfig {
    HttpProviderConfig {
        url: format!("http://127.0.0.1:{}{path}", service.port),
        timeout_ms,
        secret: secret.into(),
    }
}

/// The sample store's providers, with `kinds` answered over HTTP instead.
fn engine_with(kinds: &[(ProviderKind, HttpProviderConfig)]) -> Engine {
    let data = sample::dataset();
    let mut config = sample::provider_config();
    let store = config.get_mut(&sample::store_id()).unwrap();
    for (kind, http) in kinds {
        if *kind == ProviderKind::Tax {
            store.tax = None;
        }
        store.http.insert(*kind, http.clone());
    }
    let mut integrations = Integrations::with_stock_tables(&data.stock);
    integrations
        .configure(&config)
        .expect("a valid configuration");
    Engine::new(Arc::new(MemoryStore::from_dataset(data).unwrap())).with_integrations(integrations)
}

fn checkout(engine: &Engine, cart: SampleCart) -> Drive {
    let input = sample::buyer_input();
    let buyer = sample::buyer_id().to_string();
    flow::drive(engine, &buyer, &cart.id(), &input, Waiting::RunInline).unwrap()
}

#[test]
fn a_whole_checkout_takes_its_inventory_and_tax_from_a_python_service() {
    let service = service();
    let engine = engine_with(&[
        (
            ProviderKind::Inventory,
            http(&service, "/inventory", SECRET, 10_000),
        ),
        (ProviderKind::Tax, http(&service, "/tax", SECRET, 10_000)),
    ]);
    let Drive::Complete { .. } = checkout(&engine, SampleCart::InStock) else {
        panic!("the checkout did not complete");
    };
    let cart = engine
        .store()
        .cart(&SampleCart::InStock.id())
        .unwrap()
        .unwrap();
    let lines = engine.store().cart_items(&cart.id).unwrap();
    let mut expected = Decimal::ZERO;
    for line in lines
        .iter()
        .filter(|l| l.item_type == CartItemType::Product)
    {
        let taxed = line.total_price.unwrap() + line.adjustment_amount.unwrap_or_default();
        let tax = (taxed * Decimal::new(10, 2)).round_dp(2);
        assert_eq!(line.tax_amount, Some(tax), "line {}", line.id);
        assert_eq!(line.taxes.len(), 1);
        assert_eq!(line.taxes[0].name, "Python tax");
        expected += tax;
    }
    assert!(expected > Decimal::ZERO);
    assert_eq!(cart.total_tax_amount, Some(expected));
    // The totals add up over what the service answered.
    let products = cart.total_product_amount.unwrap();
    let charges = cart.total_charge_amount.unwrap_or_default();
    let adjustments = cart.total_adjustment_amount.unwrap_or_default();
    assert_eq!(
        cart.grand_total_amount,
        Some(products + charges + adjustments + expected)
    );
}

#[test]
fn a_failed_verdict_from_the_service_is_the_steps_failure() {
    let service = service();
    let engine = engine_with(&[(
        ProviderKind::Inventory,
        http(&service, "/inventory", SECRET, 10_000),
    )]);
    let Drive::Failed { outputs, .. } = checkout(&engine, SampleCart::ShortStock) else {
        panic!("the short cart passed");
    };
    assert!(
        outputs
            .iter()
            .any(|o| o.message == "Python has no STOVE-X" && o.output_type == OutputType::Inventory),
        "{outputs:?}"
    );
}

#[test]
fn a_timeout_an_error_status_a_malformed_answer_or_a_bad_signature_is_a_system_error() {
    let service = service();
    let cases = [
        ("/slow", SECRET, 500, "no answer"),
        ("/broken", SECRET, 10_000, "HTTP 500"),
        ("/garbage", SECRET, 10_000, "not a verdict"),
        ("/tax", "another-secret-entirely", 10_000, "HTTP 401"),
        ("/nowhere", SECRET, 10_000, "HTTP 404"),
    ];
    for (path, secret, timeout_ms, why) in cases {
        let engine = engine_with(&[(ProviderKind::Tax, http(&service, path, secret, timeout_ms))]);
        let Drive::Failed { outputs, .. } = checkout(&engine, SampleCart::InStock) else {
            panic!("{path}: the checkout passed");
        };
        let system = outputs
            .iter()
            .filter(|o| o.output_type == OutputType::SystemError)
            .count();
        assert_eq!(system, 1, "{path}: {outputs:?}");
        // The buyer reads a generic message; the operation keeps the provider's error.
        let operations = engine
            .store()
            .operations_of(&SampleCart::InStock.id())
            .unwrap();
        let failed: Vec<String> = operations
            .iter()
            .filter(|op| op.status == OperationStatus::Error)
            .filter_map(|op| op.error.clone())
            .collect();
        assert_eq!(failed.len(), 1, "{path}: {operations:?}");
        assert!(failed[0].contains(why), "{path}: {}", failed[0]);
        // Nothing the failed step would have computed is on the cart.
        let cart = engine
            .store()
            .cart(&SampleCart::InStock.id())
            .unwrap()
            .unwrap();
        assert_eq!(cart.total_tax_amount, None, "{path}");
    }
}

#[test]
fn a_configuration_that_cannot_work_is_refused_whole() {
    let service = service();
    let mut config = sample::provider_config();
    let store = config.get_mut(&sample::store_id()).unwrap();
    // The sample store has a built-in tax table: an HTTP one beside it is ambiguous.
    store
        .http
        .insert(ProviderKind::Tax, http(&service, "/tax", SECRET, 10_000));
    let mut integrations = Integrations::new();
    let error = integrations.configure(&config).expect_err("refused");
    assert!(
        error.0.contains("both a built-in and an HTTP provider"),
        "{error}"
    );
    let store = config.get_mut(&sample::store_id()).unwrap();
    store.tax = None;
    store
        .http
        .insert(ProviderKind::Tax, http(&service, "/tax", "short", 10_000));
    let error = integrations.configure(&config).expect_err("refused");
    assert!(error.0.contains("Secret"), "{error}");
}

#[test]
fn a_custom_step_runs_a_service_over_http() {
    let service = service();
    let table = cartflow::machine::TransitionTable::from_json(include_str!(
        "../examples/templates/credit-check.json"
    ))
    .unwrap();
    let run = |path: &str| {
        let data = sample::dataset();
        let mut config = sample::provider_config();
        let store = config.get_mut(&sample::store_id()).unwrap();
        store.custom.insert(
            "credit-limit".into(),
            CustomConfig::Http(http(&service, path, SECRET, 10_000)),
        );
        let mut integrations = Integrations::with_stock_tables(&data.stock);
        integrations
            .configure(&config)
            .expect("a valid configuration");
        let engine = Engine::new(Arc::new(MemoryStore::from_dataset(data).unwrap()))
            .with_table(table.clone())
            .with_integrations(integrations);
        let drive = checkout(&engine, SampleCart::InStock);
        let operations = engine
            .store()
            .operations_of(&SampleCart::InStock.id())
            .unwrap();
        let custom = operations
            .into_iter()
            .find(|op| op.provider_kind == Some(ProviderKind::Custom))
            .expect("the custom step ran");
        (drive, custom.status)
    };
    // The service passes a cart without STOVE-X: the checkout completes through the step.
    let (drive, status) = run("/inventory");
    assert!(matches!(drive, Drive::Complete { .. }), "{drive:?}");
    assert_eq!(status, OperationStatus::Complete);
    // A service that errs fails the step, not the engine.
    let (drive, status) = run("/broken");
    assert!(matches!(drive, Drive::Failed { .. }), "{drive:?}");
    assert_eq!(status, OperationStatus::Error);
}
