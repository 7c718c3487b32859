//! The sample store's providers, each wrapped so that the simulation decides, call by call,
//! whether it answers, errs, panics, or hangs past its timeout.

use std::sync::{Arc, Mutex};

use cartflow::clock::ManualClock;
use cartflow::integrations::{Integrations, Provider, ProviderError};
use cartflow::model::{ProviderKind, SfId};

/// What the next provider call does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderFault {
    /// Answers as the sample provider does.
    Answers,
    /// Answers with an error.
    Errs,
    /// Panics.
    Panics,
    /// Answers only after its timeout (the engine's clock moves past it meanwhile).
    Hangs,
}

/// The fault of the next provider call, set by the worker that is about to make it.
pub struct ProviderFaults {
    next: Mutex<ProviderFault>,
    clock: Arc<ManualClock>,
    timeout_ms: i64,
}

impl ProviderFaults {
    /// Faults over `clock`, for operations that time out after `timeout_ms`.
    pub fn new(clock: Arc<ManualClock>, timeout_ms: u64) -> Arc<ProviderFaults> {
        Arc::new(ProviderFaults {
            next: Mutex::new(ProviderFault::Answers),
            clock,
            timeout_ms: i64::try_from(timeout_ms).expect("a small timeout"),
        })
    }

    /// The next call does `fault` (then they answer again).
    pub fn set_next(&self, fault: ProviderFault) {
        *self.next.lock().unwrap_or_else(|e| e.into_inner()) = fault;
    }

    fn take(&self) -> ProviderFault {
        std::mem::replace(
            &mut self.next.lock().unwrap_or_else(|e| e.into_inner()),
            ProviderFault::Answers,
        )
    }
}

/// `integrations`, with every provider of `store` wrapped by `faults`.
pub fn faulty(
    mut integrations: Integrations,
    store: SfId,
    faults: &Arc<ProviderFaults>,
) -> Integrations {
    use ProviderKind as K;
    for kind in [
        K::Inventory,
        K::Price,
        K::Promotions,
        K::Shipment,
        K::Tax,
        K::Payment,
    ] {
        let inner = integrations.provider(store, kind);
        if matches!(inner, Provider::Internal) {
            continue;
        }
        let faults = Arc::clone(faults);
        let run = move |request: &cartflow::integrations::IntegrationRequest| match faults.take() {
            ProviderFault::Answers => inner.run(request),
            ProviderFault::Errs => Err(ProviderError("simulated: the service is down".into())),
            ProviderFault::Panics => panic!("simulated provider panic"),
            ProviderFault::Hangs => {
                faults
                    .clock
                    .advance(chrono::Duration::milliseconds(faults.timeout_ms + 1));
                inner.run(request)
            }
        };
        let provider = match kind {
            K::Inventory => Provider::Inventory(Arc::new(run)),
            K::Price => Provider::Price(Arc::new(run)),
            K::Promotions => Provider::Promotions(Arc::new(run)),
            K::Shipment => Provider::Shipment(Arc::new(run)),
            K::Tax => Provider::Tax(Arc::new(run)),
            _ => Provider::Payment(Arc::new(run)),
        };
        integrations.set(store, provider);
    }
    integrations
}
