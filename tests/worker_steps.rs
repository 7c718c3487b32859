//! A worker loop of the caller's own: claim, heartbeat, perform and report as separate calls
//! (`Engine::claim_operation`, `heartbeat`, `perform`, `report`), and the timeout measured on
//! the engine's clock.

mod support;

use std::sync::Arc;

use cartflow::clock::ManualClock;
use cartflow::integrations::{IntegrationRequest, Integrations, ProviderError, Verdict};
use cartflow::machine::{OperationSettings, StepOutcome};
use cartflow::model::{OperationStatus, SessionState};
use cartflow::sample::{self, SampleCart};
use cartflow::{CheckoutError, EngineConfig, Store};
use chrono::{Duration, TimeZone, Utc};
use support::queue::{Rig, rig_on_memory};

const LEASE_MS: u64 = 30_000;
const TIMEOUT_MS: u64 = 10_000;

/// An engine on a manual clock whose InStock cart has a New inventory operation, checked by
/// `inventory`.
fn rig(
    inventory: impl Fn(&IntegrationRequest) -> Result<Verdict, ProviderError> + Send + Sync + 'static,
) -> Rig {
    let mut integrations = Integrations::new();
    integrations.set_inventory(sample::store_id(), Arc::new(inventory));
    rig_on_memory(
        Utc.with_ymd_and_hms(2026, 5, 1, 9, 0, 0).unwrap(),
        integrations,
        EngineConfig {
            operations: OperationSettings {
                timeout_ms: TIMEOUT_MS,
                retry_limit: 2,
            },
            lease_ms: LEASE_MS,
            // No heartbeat from the machine's time: the test sends them.
            heartbeat_ms: 3_600_000,
            ..EngineConfig::default()
        },
    )
}

fn passes(_: &IntegrationRequest) -> Result<Verdict, ProviderError> {
    Ok(Verdict::Passed)
}

#[test]
fn claim_heartbeat_perform_and_report_are_one_operation_in_four_calls() {
    let rig = rig(passes);
    let claim = rig.engine.claim_operation().unwrap().expect("a claim");
    assert_eq!(claim.operation().id, rig.operation);
    assert_eq!(claim.operation().status, OperationStatus::Running);
    let claimed_until = claim.operation().expires_at.unwrap();

    rig.clock.advance(Duration::seconds(20));
    rig.engine.heartbeat(&claim).unwrap();
    let renewed = rig.memory.operation(&rig.operation).unwrap().unwrap();
    assert_eq!(
        renewed.expires_at.unwrap(),
        rig.engine.now() + Duration::milliseconds(LEASE_MS as i64)
    );
    assert!(renewed.expires_at.unwrap() > claimed_until);

    // The work changes nothing until it is reported.
    let before = rig.memory.to_dataset();
    let performed = rig.engine.perform(&claim).unwrap();
    assert_eq!(performed.outcome(), &StepOutcome::Passed);
    assert_eq!(rig.memory.to_dataset(), before);

    let report = rig.engine.report(performed).unwrap();
    assert!(report.applied, "{report:?}");
    let done = rig.memory.operation(&rig.operation).unwrap().unwrap();
    assert_eq!(done.status, OperationStatus::Complete);
    let cart = SampleCart::InStock.id();
    let session = rig.memory.sessions_of(&cart).unwrap().pop().unwrap();
    assert_eq!(session.state, Some(SessionState::ConfirmPrice));
    assert!(!session.is_processing);
}

#[test]
fn a_report_made_twice_is_applied_once() {
    let rig = rig(passes);
    let claim = rig.engine.claim_operation().unwrap().unwrap();
    let performed = rig.engine.perform(&claim).unwrap();
    assert!(rig.engine.report(performed.clone()).unwrap().applied);
    let after_first = rig.memory.to_dataset();
    let again = rig.engine.report(performed).unwrap();
    assert!(!again.applied, "{again:?}");
    assert_eq!(rig.memory.to_dataset(), after_first);
}

#[test]
fn a_heartbeat_after_the_lease_was_swept_is_fenced_and_the_late_report_discarded() {
    let rig = rig(passes);
    let claim = rig.engine.claim_operation().unwrap().unwrap();
    rig.clock
        .advance(Duration::milliseconds(LEASE_MS as i64 + 1));
    assert_eq!(rig.engine.sweep_expired().unwrap(), 1);
    let swept = rig.memory.to_dataset();
    assert!(matches!(
        rig.engine.heartbeat(&claim),
        Err(CheckoutError::Fenced(_))
    ));
    let performed = rig.engine.perform(&claim).unwrap();
    assert!(!rig.engine.report(performed).unwrap().applied);
    assert_eq!(rig.memory.to_dataset(), swept);
    // The operation waits for its next claim.
    let op = rig.memory.operation(&rig.operation).unwrap().unwrap();
    assert_eq!(op.status, OperationStatus::New);
}

#[test]
fn an_answer_later_than_the_timeout_on_the_engines_clock_fails_the_step() {
    // The provider answers at once in the machine's time, but the engine's clock says it
    // took longer than the timeout: the answer is not used.
    let clock = Arc::new(std::sync::Mutex::new(None::<Arc<ManualClock>>));
    let seen = clock.clone();
    let rig = rig(move |_: &IntegrationRequest| {
        if let Some(clock) = seen.lock().unwrap().as_ref() {
            clock.advance(Duration::milliseconds(TIMEOUT_MS as i64 + 1));
        }
        Ok(Verdict::Passed)
    });
    *clock.lock().unwrap() = Some(rig.clock.clone());
    let claim = rig.engine.claim_operation().unwrap().unwrap();
    let performed = rig.engine.perform(&claim).unwrap();
    let StepOutcome::SystemFailure(reason) = performed.outcome() else {
        panic!("a late answer was used: {:?}", performed.outcome());
    };
    assert!(
        reason.contains("did not answer within 10000 ms"),
        "{reason}"
    );
    rig.engine.report(performed).unwrap();
    let op = rig.memory.operation(&rig.operation).unwrap().unwrap();
    assert_eq!(op.status, OperationStatus::Error);
}

#[test]
fn an_answer_just_within_the_timeout_is_used() {
    let clock = Arc::new(std::sync::Mutex::new(None::<Arc<ManualClock>>));
    let seen = clock.clone();
    let rig = rig(move |_: &IntegrationRequest| {
        if let Some(clock) = seen.lock().unwrap().as_ref() {
            clock.advance(Duration::milliseconds(TIMEOUT_MS as i64));
        }
        Ok(Verdict::Passed)
    });
    *clock.lock().unwrap() = Some(rig.clock.clone());
    let claim = rig.engine.claim_operation().unwrap().unwrap();
    let performed = rig.engine.perform(&claim).unwrap();
    assert_eq!(performed.outcome(), &StepOutcome::Passed);
}
