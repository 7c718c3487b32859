//! A `runAsync: false` call claims its operation in the commit that starts it, so no worker
//! can take it first. With that off (`EngineConfig::claim_inline`), a call whose operation a
//! worker claimed first waits for that worker and answers with its result, or gives up once
//! the worker's lease and timeout have passed.

mod support;

use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread;

use cartflow::engine::Claim;
use cartflow::integrations::Integrations;
use cartflow::machine::OperationSettings;
use cartflow::model::{BackgroundOperation, OperationStatus, SessionState, SfId};
use cartflow::sample::{self, SampleCart};
use cartflow::store::{Commit, Store};
use cartflow::{Engine, EngineConfig, MemoryStore, StoreError};
use serde_json::json;

/// A store on which a worker claims every new operation the moment it is committed, before
/// the call that created it can run it inline. The claim goes to `claims`; the second read of
/// the claimed operation afterwards is told on `awaited`: the first may be the call's try at
/// running the operation itself, the second is the call waiting for the worker.
struct WorkerClaimsFirst {
    inner: Arc<MemoryStore>,
    worker: Engine,
    claims: Mutex<Sender<Claim>>,
    claimed: Mutex<Option<SfId>>,
    looks: Mutex<u32>,
    awaited: Mutex<Option<Sender<()>>>,
}

impl Store for WorkerClaimsFirst {
    fn commit(&self, commit: &Commit) -> Result<(), StoreError> {
        self.inner.commit(commit)?;
        let creates_work = commit
            .changes
            .operations
            .iter()
            .any(|op| op.status == OperationStatus::New);
        if creates_work && let Ok(Some(claim)) = self.worker.claim_operation() {
            *self.claimed.lock().unwrap() = Some(claim.operation().id);
            let _ = self.claims.lock().unwrap().send(claim);
        }
        Ok(())
    }

    fn operation(&self, id: &SfId) -> Result<Option<BackgroundOperation>, StoreError> {
        let operation = self.inner.operation(id);
        if *self.claimed.lock().unwrap() == Some(*id) {
            let mut looks = self.looks.lock().unwrap();
            *looks += 1;
            if *looks == 2
                && let Some(awaited) = self.awaited.lock().unwrap().take()
            {
                let _ = awaited.send(());
            }
        }
        operation
    }

    delegate_store!(inner =>
        user, load, claimable_operations, expired_operations, cart, carts_after, cart_items, cart_item,
        validation_output, session, sessions_of, operations_of, order, validation_outputs,
        history, events_after, last_event, webhook_cursor, advance_webhook, deliveries, begin_keyed, keep_answer, release_key, owner_of, operation_counts, web_stores
    );
}

/// The in-stock cart locked at Cart To Order, an engine over a store whose worker claims
/// first, the claim as it is made, and word of the call's wait for the operation.
fn rig(config: EngineConfig) -> (Engine, Receiver<Claim>, Receiver<()>, Engine) {
    let session = SfId::parse("2z9000000000009AAA").unwrap();
    let mut data = support::data::in_checkout_at(session, SessionState::CartToOrder, true);
    for s in data.sessions.iter_mut().filter(|s| s.id == session) {
        s.next_state = Some(SessionState::new("Authorize Payment").unwrap());
    }
    let integrations = Integrations::with_stock_tables(&data.stock);
    let inner = Arc::new(MemoryStore::from_dataset(data).unwrap());
    let worker = Engine::new(inner.clone())
        .with_integrations(integrations.clone())
        .with_config(config);
    let (claims, claimed) = mpsc::channel();
    let (awaited, first_look) = mpsc::channel();
    let store = Arc::new(WorkerClaimsFirst {
        inner,
        worker: worker.clone(),
        claims: Mutex::new(claims),
        claimed: Mutex::new(None),
        looks: Mutex::new(0),
        awaited: Mutex::new(Some(awaited)),
    });
    let engine = Engine::new(store)
        .with_integrations(integrations)
        .with_config(config);
    (engine, claimed, first_look, worker)
}

/// How long a test waits for a step of the other thread before it fails (not a timing the
/// test measures: the steps follow each other at once).
const WAIT: std::time::Duration = std::time::Duration::from_secs(60);

fn cart_to_order(engine: &Engine) -> cartflow::ActionResult {
    let input = json!({"cartId": SampleCart::InStock.id().to_string(), "runAsync": false});
    engine.invoke("cartToOrderAction", &input, &sample::buyer_id().to_string())
}

#[test]
fn a_call_waits_for_the_worker_that_claimed_its_operation_first_and_answers_its_result() {
    let (engine, claimed, first_look, worker) = rig(leaves_it_new());
    let working = thread::spawn(move || {
        let claim = claimed.recv_timeout(WAIT).expect("a worker claimed first");
        // The worker finishes only once the call has seen the operation Running and waits on.
        first_look.recv_timeout(WAIT).expect("the call waited");
        let performed = worker.perform(&claim).unwrap();
        worker.report(performed).unwrap();
        claim.operation().id
    });
    let answered = cart_to_order(&engine);
    let operation = working.join().unwrap();
    assert!(answered.is_success, "{answered:?}");
    let outputs = answered.output_values.unwrap();
    assert_eq!(outputs["backgroundOperationId"], operation.to_string());
    let stored = engine.store().operation(&operation).unwrap().unwrap();
    assert_eq!(stored.status, OperationStatus::Complete);
    assert_eq!(
        stored.attempt, 1,
        "the call ran the operation a second time"
    );
}

#[test]
fn a_call_gives_up_on_a_worker_that_claimed_its_operation_and_died() {
    let config = EngineConfig {
        operations: OperationSettings {
            timeout_ms: 20,
            ..OperationSettings::default()
        },
        lease_ms: 30,
        ..leaves_it_new()
    };
    let (engine, claimed, _first_look, _worker) = rig(config);
    let answered = cart_to_order(&engine);
    let claim = claimed
        .try_recv()
        .unwrap_or_else(|_| panic!("no worker claimed the operation first: {answered:?}"));
    assert!(!answered.is_success, "{answered:?}");
    let error = &answered.errors.as_ref().expect("errors")[0];
    assert_eq!(error.status_code, "INVALID_OPERATION", "{answered:?}");
    let stored = engine
        .store()
        .operation(&claim.operation().id)
        .unwrap()
        .unwrap();
    assert_eq!(
        stored.status,
        OperationStatus::Running,
        "the dead worker's claim was taken"
    );
}

/// The engine's configuration with an inline operation left New by the commit that starts it.
fn leaves_it_new() -> EngineConfig {
    EngineConfig {
        claim_inline: false,
        ..EngineConfig::default()
    }
}

/// By default the call's own commit claims the operation: the worker that claims every New
/// operation at once never sees it, and the call runs it, once.
#[test]
fn a_call_claims_its_operation_in_the_commit_that_starts_it() {
    let (engine, claimed, _first_look, _worker) = rig(EngineConfig::default());
    let answered = cart_to_order(&engine);
    assert!(answered.is_success, "{answered:?}");
    assert!(
        claimed.try_recv().is_err(),
        "a worker claimed the operation"
    );
    let outputs = answered.output_values.unwrap();
    let id = SfId::parse(outputs["backgroundOperationId"].as_str().unwrap()).unwrap();
    let stored = engine.store().operation(&id).unwrap().unwrap();
    assert_eq!(stored.status, OperationStatus::Complete);
    assert_eq!(stored.attempt, 1);
    let moves: Vec<String> = engine
        .store()
        .history(&SampleCart::InStock.id())
        .unwrap()
        .iter()
        .filter(|h| h.record == id)
        .map(|h| format!("{} {}->{}", h.event, h.from, h.to))
        .collect();
    assert_eq!(
        moves,
        [
            "cartToOrderAction no operation->New",
            "claim New->Running",
            "complete Running->Complete"
        ]
    );
}
