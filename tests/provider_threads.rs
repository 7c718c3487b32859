//! Where a provider runs: one that only computes in memory on the worker's own thread, any
//! other on a thread of the engine's provider pool; both with their panics contained and
//! their timeouts kept.

mod support;

use std::sync::{Arc, Mutex};
use std::thread::{self, ThreadId};
use std::time::Duration as StdDuration;

use cartflow::integrations::{
    IntegrationRequest, Integrations, InventoryProvider, Provider, ProviderError, Verdict,
};
use cartflow::machine::{OperationSettings, StepOutcome};
use cartflow::model::{OperationStatus, ProviderKind};
use cartflow::sample;
use cartflow::{EngineConfig, Store};
use chrono::{TimeZone, Utc};
use support::queue::{Rig, rig_on_memory};

/// The timeout of the test whose provider overruns it.
const TIMEOUT_MS: u64 = 50;
/// The timeout of the others: a panic's backtrace may take a while to print.
const LONG_TIMEOUT_MS: u64 = 60_000;

/// An inventory check that says it computes in memory, doing `work` on each call.
struct InMemory<F>(F);

impl<F> InventoryProvider for InMemory<F>
where
    F: Fn() -> Result<Verdict, ProviderError> + Send + Sync + 'static,
{
    fn check_inventory(&self, _: &IntegrationRequest) -> Result<Verdict, ProviderError> {
        (self.0)()
    }

    fn computes_in_memory(&self) -> bool {
        true
    }
}

/// An engine whose InStock cart has a New inventory operation, checked by `inventory`
/// within `timeout_ms`.
fn rig_timed(inventory: Arc<dyn InventoryProvider>, timeout_ms: u64) -> Rig {
    let mut integrations = Integrations::new();
    integrations.set_inventory(sample::store_id(), inventory);
    rig_on_memory(
        Utc.with_ymd_and_hms(2026, 5, 1, 9, 0, 0).unwrap(),
        integrations,
        EngineConfig {
            operations: OperationSettings {
                timeout_ms,
                retry_limit: 2,
            },
            ..EngineConfig::default()
        },
    )
}

fn rig(inventory: Arc<dyn InventoryProvider>) -> Rig {
    rig_timed(inventory, LONG_TIMEOUT_MS)
}

/// Claims and performs the rig's operation on this thread: its outcome, and the thread
/// the provider ran on.
fn perform_here(rig: &Rig, ran_on: &Mutex<Option<ThreadId>>) -> (StepOutcome, ThreadId) {
    let claim = rig.engine.claim_operation().unwrap().expect("a claim");
    let performed = rig.engine.perform(&claim).unwrap();
    let outcome = performed.outcome().clone();
    rig.engine.report(performed).unwrap();
    let ran_on = ran_on.lock().unwrap().expect("the provider ran");
    (outcome, ran_on)
}

#[test]
fn a_provider_computing_in_memory_runs_on_the_workers_own_thread() {
    let ran_on = Arc::new(Mutex::new(None));
    let seen = ran_on.clone();
    let rig = rig(Arc::new(InMemory(move || {
        *seen.lock().unwrap() = Some(thread::current().id());
        Ok(Verdict::Passed)
    })));
    let (outcome, thread) = perform_here(&rig, &ran_on);
    assert_eq!(outcome, StepOutcome::Passed);
    assert_eq!(thread, thread::current().id());
}

#[test]
fn any_other_provider_runs_on_a_provider_thread() {
    let ran_on = Arc::new(Mutex::new(None));
    let seen = ran_on.clone();
    let rig = rig(Arc::new(move |_: &IntegrationRequest| {
        *seen.lock().unwrap() = Some(thread::current().id());
        Ok(Verdict::Passed)
    }));
    let (outcome, thread) = perform_here(&rig, &ran_on);
    assert_eq!(outcome, StepOutcome::Passed);
    assert_ne!(thread, thread::current().id());
}

#[test]
fn a_panic_in_an_in_memory_provider_fails_the_step_and_the_worker_goes_on() {
    let rig = rig(Arc::new(InMemory(|| -> Result<Verdict, ProviderError> {
        panic!("a provider bug")
    })));
    let claim = rig.engine.claim_operation().unwrap().unwrap();
    let performed = rig.engine.perform(&claim).unwrap();
    let StepOutcome::SystemFailure(reason) = performed.outcome() else {
        panic!("a panic passed: {:?}", performed.outcome());
    };
    assert!(reason.contains("panicked: a provider bug"), "{reason}");
    rig.engine.report(performed).unwrap();
    let op = rig.memory.operation(&rig.operation).unwrap().unwrap();
    assert_eq!(op.status, OperationStatus::Error);
}

#[test]
fn an_in_memory_answer_later_than_the_timeout_is_not_used() {
    let slow = InMemory(|| {
        thread::sleep(StdDuration::from_millis(4 * TIMEOUT_MS));
        Ok(Verdict::Passed)
    });
    let rig = rig_timed(Arc::new(slow), TIMEOUT_MS);
    let claim = rig.engine.claim_operation().unwrap().unwrap();
    let performed = rig.engine.perform(&claim).unwrap();
    let StepOutcome::SystemFailure(reason) = performed.outcome() else {
        panic!("a late answer was used: {:?}", performed.outcome());
    };
    assert!(
        reason.contains(&format!("did not answer within {TIMEOUT_MS} ms")),
        "{reason}"
    );
}

#[test]
fn the_built_in_providers_compute_in_memory_and_a_closure_does_not() {
    let integrations = sample::integrations(&sample::dataset());
    for kind in [
        ProviderKind::Inventory,
        ProviderKind::Price,
        ProviderKind::Promotions,
        ProviderKind::Shipment,
        ProviderKind::Tax,
        ProviderKind::Payment,
    ] {
        let provider = integrations.provider(sample::store_id(), kind);
        assert_eq!(provider.kind(), Some(kind), "the sample maps {kind:?}");
        assert!(provider.computes_in_memory(), "{kind:?}");
    }
    assert!(Provider::Internal.computes_in_memory());
    let closure = Provider::Inventory(Arc::new(|_: &IntegrationRequest| Ok(Verdict::Passed)));
    assert!(!closure.computes_in_memory());
}
