//! The rig of the queue and worker tests: an engine on a manual clock whose InStock cart has
//! a New inventory operation, and worker commands decided directly.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use cartflow::clock::ManualClock;
use cartflow::ids::SequentialIds;
use cartflow::integrations::{IntegrationRequest, Integrations, ProviderError, Verdict};
use cartflow::machine::{
    DecideContext, Decision, OperationSettings, Snapshot, TransitionTable, WorkerCommand,
    decide_worker,
};
use cartflow::model::SfId;
use cartflow::sample::{self, SampleCart};
use cartflow::{CheckoutError, Engine, EngineConfig, MemoryStore, Store};
use chrono::{DateTime, Utc};
use serde_json::json;

/// An engine, the memory store under it, its clock, and the InStock cart's locked session
/// with its New inventory operation.
pub struct Rig {
    pub engine: Engine,
    pub memory: Arc<MemoryStore>,
    pub clock: Arc<ManualClock>,
    pub session: SfId,
    pub operation: SfId,
}

/// A [`Rig`] at `start` with `integrations` and `config`, its engine over `wrap` of the
/// memory store holding the sample data set.
pub fn rig_over(
    start: DateTime<Utc>,
    integrations: Integrations,
    config: EngineConfig,
    wrap: impl FnOnce(Arc<MemoryStore>) -> Arc<dyn Store>,
) -> Rig {
    let memory = Arc::new(MemoryStore::from_dataset(sample::dataset()).unwrap());
    let clock = Arc::new(ManualClock::new(start));
    let engine = Engine::new(wrap(memory.clone()))
        .with_ids(Arc::new(SequentialIds::default()))
        .with_clock(clock.clone())
        .with_integrations(integrations)
        .with_config(config);
    let buyer = sample::buyer_id().to_string();
    let session = sample::lock_inventory_step(&engine, &buyer, SampleCart::InStock.id()).unwrap();
    let cart = json!({"cartId": SampleCart::InStock.id().to_string()});
    let started = engine.invoke("checkCartInventoryAction", &cart, &buyer);
    let operation = started.output_values.unwrap()["backgroundOperationId"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    Rig {
        engine,
        memory,
        clock,
        session,
        operation,
    }
}

/// [`rig_over`] the memory store itself.
pub fn rig_on_memory(
    start: DateTime<Utc>,
    integrations: Integrations,
    config: EngineConfig,
) -> Rig {
    rig_over(start, integrations, config, |memory| memory)
}

/// An inventory provider that waits until the test releases it (once per call, on the returned
/// sender), then passes, and tells on the returned receiver each time a call enters it, so a
/// test can wait until a worker is inside the provider (not only past its claim).
pub fn signalling_gated_provider() -> (Integrations, mpsc::Sender<()>, mpsc::Receiver<()>) {
    let (release, gate) = mpsc::channel::<()>();
    let (enter, entered) = mpsc::channel::<()>();
    let gate = Mutex::new(gate);
    let enter = Mutex::new(enter);
    let mut integrations = Integrations::new();
    integrations.set_inventory(
        sample::store_id(),
        Arc::new(
            move |_: &IntegrationRequest| -> Result<Verdict, ProviderError> {
                let _ = enter.lock().unwrap().send(());
                let _ = gate.lock().unwrap().recv();
                Ok(Verdict::Passed)
            },
        ),
    );
    (integrations, release, entered)
}

/// Decides a worker command on `snapshot` at `now`, over the standard table.
pub fn decide_at(
    snapshot: &Snapshot,
    now: DateTime<Utc>,
    command: &WorkerCommand,
) -> Result<Decision, CheckoutError> {
    let table = TransitionTable::standard();
    let ids = SequentialIds::starting_at(9_000);
    let ctx = DecideContext {
        table: &table,
        now,
        ids: &ids,
        settings: OperationSettings::default(),
    };
    decide_worker(&ctx, snapshot, command)
}

/// Locks `cart`'s Inventory step and starts its inventory check; returns the operation.
pub fn start_inventory_check(engine: &Engine, cart: SfId) -> SfId {
    let buyer = sample::buyer_id().to_string();
    sample::lock_inventory_step(engine, &buyer, cart).unwrap();
    let started = engine
        .execute(
            &buyer,
            cartflow::machine::Command::RunStep {
                action: cartflow::machine::ProviderAction::CheckCartInventory,
                cart_id: cart.to_string(),
            },
        )
        .unwrap();
    let cartflow::machine::Output::BackgroundOperationId(op) = started else {
        panic!("checkCartInventoryAction answered {started:?}");
    };
    op
}
