//! What the engine makes of a provider's answer that cannot be used as it stands.

use std::sync::Arc;

use cartflow::flow::{self, Drive, Waiting};
use cartflow::integrations::Verdict;
use cartflow::model::{OperationStatus, OutputType};
use cartflow::sample::{self, SampleCart};
use cartflow::{Engine, MemoryStore};

/// A failure with no message would leave the buyer an error screen that says nothing: the
/// engine takes it as the provider's own fault, a SystemError.
#[test]
fn a_failed_check_without_a_message_is_a_system_error() {
    let data = sample::dataset();
    let mut integrations = sample::integrations(&data);
    integrations.set_inventory(
        sample::store_id(),
        Arc::new(|_: &_| Ok(Verdict::Failed(vec![]))),
    );
    let engine = Engine::new(Arc::new(MemoryStore::from_dataset(data).unwrap()))
        .with_integrations(integrations);
    let buyer = sample::buyer_id().to_string();
    let cart = SampleCart::InStock.id();
    let drive = flow::drive(
        &engine,
        &buyer,
        &cart,
        &sample::buyer_input(),
        Waiting::RunInline,
    );
    let Ok(Drive::Failed { outputs, .. }) = drive else {
        panic!("the empty failure passed: {drive:?}");
    };
    let kinds: Vec<OutputType> = outputs.iter().map(|o| o.output_type).collect();
    assert_eq!(kinds, [OutputType::SystemError], "{outputs:?}");
    let operations = engine.store().operations_of(&cart).unwrap();
    let inventory = operations
        .iter()
        .find(|op| op.name == "checkCartInventoryAction")
        .unwrap();
    assert_eq!(inventory.status, OperationStatus::Error);
    assert_eq!(
        inventory.error.as_deref(),
        Some("the provider failed the check without a message")
    );
}
