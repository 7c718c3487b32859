//! The operation queue: leases, heartbeats, the sweeper and fencing by attempt.

mod support;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;

use cartflow::integrations::Integrations;
use cartflow::machine::{CartUpdate, OperationSettings, Snapshot, StepOutcome, WorkerCommand};
use cartflow::model::{
    BackgroundOperation, CartStatus, KeyPrefix, OperationStatus, Order, OutputType, SessionState,
    SfId,
};
use cartflow::sample::{self, SampleCart};
use cartflow::store::LoadKey;
use cartflow::{
    CheckoutError, EngineConfig, Fenced, MemoryStore, RecordKind, Stale, Store, StoreError,
};
use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::json;
use support::queue::{Rig, decide_at, rig_on_memory, rig_over, signalling_gated_provider};

/// A provider that waits until the test releases it, then passes ([`signalling_gated_provider`]
/// without its receiver).
fn gated_provider() -> (Integrations, mpsc::Sender<()>) {
    let (integrations, release, _entered) = signalling_gated_provider();
    (integrations, release)
}

/// An engine with a manual clock whose InStock cart has a New inventory operation.
fn rig(integrations: Integrations, config: EngineConfig) -> Rig {
    rig_on_memory(
        Utc.with_ymd_and_hms(2026, 3, 1, 9, 0, 0).unwrap(),
        integrations,
        config,
    )
}

fn quiet_config(retry_limit: u32) -> EngineConfig {
    EngineConfig {
        operations: OperationSettings {
            timeout_ms: 3_600_000,
            retry_limit,
        },
        lease_ms: 30_000,
        // No heartbeat during the test: the worker behaves as if it had died.
        heartbeat_ms: 3_600_000,
        ..EngineConfig::default()
    }
}

#[test]
fn an_expired_claim_is_retried_and_the_stale_workers_report_is_discarded() {
    let (integrations, release, entered) = signalling_gated_provider();
    let rig = rig(integrations, quiet_config(2));
    let store = rig.engine.store().clone();

    let first = {
        let engine = rig.engine.clone();
        thread::spawn(move || engine.run_next_operation())
    };
    // Wait until the first worker is inside the provider: it then holds the gate, so the first
    // release below is surely its own (a worker still before the gate when the second one
    // took it would wait for a release sent only after it returns).
    entered.recv().unwrap();
    assert_eq!(
        store.operation(&rig.operation).unwrap().unwrap().status,
        OperationStatus::Running
    );
    assert_eq!(
        rig.engine.sweep_expired().unwrap(),
        0,
        "the lease still runs"
    );
    rig.clock.advance(Duration::seconds(31));
    assert_eq!(rig.engine.sweep_expired().unwrap(), 1);
    let op = store.operation(&rig.operation).unwrap().unwrap();
    assert_eq!((op.status, op.attempt), (OperationStatus::New, 1));
    let session = store.session(&rig.session).unwrap().unwrap();
    assert!(
        session.is_processing,
        "the session still waits for its operation"
    );

    // A second worker claims attempt 2; the first (stale) worker then reports: discarded.
    let second = {
        let engine = rig.engine.clone();
        thread::spawn(move || engine.run_next_operation())
    };
    while store.operation(&rig.operation).unwrap().unwrap().attempt != 2 {
        thread::yield_now();
    }
    release.send(()).unwrap();
    let stale = first.join().unwrap().unwrap().unwrap();
    assert_eq!((stale.attempt, stale.applied), (1, false));
    release.send(()).unwrap();
    let fresh = second.join().unwrap().unwrap().unwrap();
    assert_eq!(
        (fresh.attempt, fresh.applied, fresh.outcome),
        (2, true, StepOutcome::Passed)
    );

    let op = store.operation(&rig.operation).unwrap().unwrap();
    assert_eq!(op.status, OperationStatus::Complete);
    let session = store.session(&rig.session).unwrap().unwrap();
    assert_eq!(session.state, Some(SessionState::ConfirmPrice));
    let requeues = store
        .history(&SampleCart::InStock.id())
        .unwrap()
        .into_iter()
        .filter(|h| h.from == "Running" && h.to == "New")
        .count();
    assert_eq!(requeues, 1);
}

#[test]
fn a_claim_that_expires_after_its_last_retry_fails_the_step() {
    let (integrations, release) = gated_provider();
    let rig = rig(integrations, quiet_config(0));
    let store = rig.engine.store().clone();
    let worker = {
        let engine = rig.engine.clone();
        thread::spawn(move || engine.run_next_operation())
    };
    while store.operation(&rig.operation).unwrap().unwrap().status != OperationStatus::Running {
        thread::yield_now();
    }
    rig.clock.advance(Duration::seconds(31));
    assert_eq!(rig.engine.sweep_expired().unwrap(), 1);
    let op = store.operation(&rig.operation).unwrap().unwrap();
    assert_eq!(op.status, OperationStatus::Error);
    let session = store.session(&rig.session).unwrap().unwrap();
    assert_eq!(session.state, Some(SessionState::Error));
    assert!(session.is_error && !session.is_processing);
    let outputs = store.validation_outputs(&SampleCart::InStock.id()).unwrap();
    assert_eq!(outputs.len(), 1);
    assert_eq!(outputs[0].output_type, OutputType::SystemError);
    release.send(()).unwrap();
    assert!(!worker.join().unwrap().unwrap().unwrap().applied);
    assert_eq!(
        store.operation(&rig.operation).unwrap().unwrap().status,
        OperationStatus::Error
    );
}

#[test]
fn heartbeats_keep_a_long_provider_call_claimed() {
    let (integrations, release) = gated_provider();
    let config = EngineConfig {
        heartbeat_ms: 5,
        ..quiet_config(2)
    };
    let rig = rig(integrations, config);
    let store = rig.engine.store().clone();
    let worker = {
        let engine = rig.engine.clone();
        thread::spawn(move || engine.run_next_operation())
    };
    let first_lease = loop {
        let op = store.operation(&rig.operation).unwrap().unwrap();
        if op.status == OperationStatus::Running {
            break op.expires_at.unwrap();
        }
        thread::yield_now();
    };
    // Far past the first lease: only a heartbeat taken after the move can have renewed it.
    rig.clock.advance(Duration::seconds(120));
    let renewed = loop {
        let until = store
            .operation(&rig.operation)
            .unwrap()
            .unwrap()
            .expires_at
            .unwrap();
        if until > first_lease + Duration::seconds(100) {
            break until;
        }
        thread::yield_now();
    };
    assert_eq!(
        rig.engine.sweep_expired().unwrap(),
        0,
        "renewed until {renewed}"
    );
    release.send(()).unwrap();
    let report = worker.join().unwrap().unwrap().unwrap();
    assert!(report.applied && report.attempt == 1);
}

/// The rig's operation as `decide_worker` sees it, with the table and a context at `now`.
fn worker_snapshot(rig: &Rig) -> Snapshot {
    rig.engine
        .store()
        .load(LoadKey::Operation(rig.operation))
        .unwrap()
}

fn fenced(snapshot: &Snapshot, now: DateTime<Utc>, command: WorkerCommand) -> Fenced {
    match decide_at(snapshot, now, &command) {
        Err(CheckoutError::Fenced(reason)) => reason,
        other => panic!("{command:?} was not fenced: {other:?}"),
    }
}

#[test]
fn each_stale_worker_command_is_fenced_with_its_reason() {
    let (integrations, _release) = gated_provider();
    let rig = rig(integrations, quiet_config(2));
    let now = rig.engine.now();
    let new = worker_snapshot(&rig);
    let op = rig.operation;
    let heartbeat = |attempt| WorkerCommand::Heartbeat {
        operation_id: op,
        attempt,
        lease_ms: 30_000,
    };
    let claim = WorkerCommand::Claim {
        operation_id: op,
        lease_ms: 30_000,
    };
    assert_eq!(
        fenced(&Snapshot::default(), now, claim.clone()),
        Fenced::OperationMissing
    );
    assert_eq!(
        fenced(&new, now, heartbeat(0)),
        Fenced::AttemptSuperseded {
            operation: op,
            status: OperationStatus::New,
            held: 0,
            current: 0,
        }
    );
    let mut closed = new.clone();
    let cart = closed.cart.as_mut().unwrap();
    cart.status = CartStatus::Closed;
    let cart = cart.id;
    assert_eq!(
        fenced(&closed, now, claim.clone()),
        Fenced::CartClosed { cart }
    );

    // Claimed: Running at attempt 1, its lease running for 30 s.
    let mut running = new.clone();
    running.operation = Some(claimed(&new, now, claim.clone()));
    assert_eq!(
        fenced(&running, now, claim),
        Fenced::NotClaimable {
            operation: op,
            status: OperationStatus::Running,
        }
    );
    assert_eq!(
        fenced(&running, now, heartbeat(2)),
        Fenced::AttemptSuperseded {
            operation: op,
            status: OperationStatus::Running,
            held: 2,
            current: 1,
        }
    );
    let expire = WorkerCommand::Expire {
        operation_id: op,
        attempt: 1,
    };
    assert_eq!(
        fenced(&running, now, expire),
        Fenced::LeaseRunning {
            operation: op,
            until: now + Duration::seconds(30),
        }
    );
    let mut archived = running.clone();
    archived.session.as_mut().unwrap().is_archived = true;
    let finish = WorkerCommand::Finish {
        operation_id: op,
        attempt: 1,
        outcome: StepOutcome::Passed,
        update: None,
        order: None,
    };
    assert_eq!(
        fenced(&archived, now, finish),
        Fenced::SessionFinished { operation: op }
    );
}

/// The operation a claim decided on `snapshot` writes.
fn claimed(snapshot: &Snapshot, now: DateTime<Utc>, claim: WorkerCommand) -> BackgroundOperation {
    let decision = decide_at(snapshot, now, &claim).unwrap();
    let [operation] = decision.changes.operations.as_slice() else {
        panic!("a claim writes its operation: {decision:?}");
    };
    assert_eq!(
        (operation.status, operation.attempt),
        (OperationStatus::Running, 1)
    );
    operation.clone()
}

#[test]
fn a_cancel_fences_the_claim_of_its_operation() {
    let (integrations, _release) = gated_provider();
    let rig = rig(integrations, quiet_config(2));
    let buyer = sample::buyer_id().to_string();
    let cart = json!({"cartId": SampleCart::InStock.id().to_string()});
    let cancel = rig.engine.invoke("cancelCartAsyncOperation", &cart, &buyer);
    assert!(cancel.is_success, "{cancel:?}");
    assert_eq!(rig.engine.run_operation_now(rig.operation).unwrap(), None);
    let op = rig
        .engine
        .store()
        .operation(&rig.operation)
        .unwrap()
        .unwrap();
    assert_eq!(op.status, OperationStatus::Canceled);
}

/// A report naming a record of another cart changes nothing, and the refusal says which kind
/// of record it named (the worker discards such a report rather than retrying it).
#[test]
fn a_report_naming_another_carts_line_or_order_is_stale() {
    let (integrations, _release) = gated_provider();
    let rig = rig(integrations, quiet_config(2));
    let now = rig.engine.now();
    let new = worker_snapshot(&rig);
    let op = rig.operation;
    let claim = WorkerCommand::Claim {
        operation_id: op,
        lease_ms: 30_000,
    };
    let mut running = new.clone();
    running.operation = Some(claimed(&new, now, claim));
    let other = SampleCart::ShortStock.id();
    let store = rig.engine.store();
    let mut line = store.cart_items(&SampleCart::InStock.id()).unwrap()[0].clone();
    line.cart_id = other;
    let finish = |update, order| WorkerCommand::Finish {
        operation_id: op,
        attempt: 1,
        outcome: StepOutcome::Passed,
        update,
        order,
    };
    let foreign_line = finish(
        Some(CartUpdate {
            items: vec![line],
            ..CartUpdate::default()
        }),
        None,
    );
    assert_eq!(
        decide_at(&running, now, &foreign_line).err(),
        Some(CheckoutError::Stale(Stale::ForeignRecord(RecordKind::Line)))
    );
    let cart = store.cart(&other).unwrap().unwrap();
    let order = Order::draft(
        SfId::from_number(KeyPrefix::Order, 7_001),
        &cart,
        sample::buyer_id(),
        now,
    );
    let foreign_order = finish(None, Some(order));
    assert_eq!(
        decide_at(&running, now, &foreign_order).err(),
        Some(CheckoutError::Stale(Stale::ForeignRecord(
            RecordKind::Order
        )))
    );
}

/// The memory store, counting the reads of one cart or one operation by Id.
struct CountedReads {
    inner: Arc<MemoryStore>,
    reads: Arc<AtomicU32>,
}

impl Store for CountedReads {
    fn cart(&self, id: &SfId) -> Result<Option<cartflow::model::WebCart>, StoreError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.inner.cart(id)
    }
    fn operation(&self, id: &SfId) -> Result<Option<BackgroundOperation>, StoreError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.inner.operation(id)
    }
    delegate_store!(inner => user, load, commit, claimable_operations, expired_operations,
        claim_next, carts_after, cart_items, cart_item, validation_output, session, sessions_of,
        operations_of, order, validation_outputs, history, events_after, last_event,
        webhook_cursor, advance_webhook, deliveries, begin_keyed, keep_answer, release_key,
        operation_counts, web_stores, owner_of);
}

/// A rig over [`CountedReads`], and its count, set to zero.
fn counted_rig() -> (Rig, Arc<AtomicU32>) {
    let reads = Arc::new(AtomicU32::new(0));
    let counted = reads.clone();
    let rig = rig_over(
        Utc.with_ymd_and_hms(2026, 3, 1, 9, 0, 0).unwrap(),
        Integrations::new(),
        quiet_config(2),
        move |inner| {
            Arc::new(CountedReads {
                inner,
                reads: counted,
            })
        },
    );
    reads.store(0, Ordering::SeqCst);
    (rig, reads)
}

/// A worker works from what its claim read: the operation as the claim wrote it and the cart
/// as the claim's snapshot held it, neither read again; its report names both.
#[test]
fn a_worker_reads_neither_the_operation_nor_the_cart_again_after_its_claim() {
    let (rig, reads) = counted_rig();
    let report = rig.engine.run_next_operation().unwrap().unwrap();
    assert_eq!(reads.load(Ordering::SeqCst), 0);
    assert!(report.applied, "{report:?}");
    assert_eq!(report.operation_id, rig.operation);
    assert_eq!(report.name, "checkCartInventoryAction");
    assert_eq!(report.cart_id, SampleCart::InStock.id());
    let op = rig.memory.operation(&rig.operation).unwrap().unwrap();
    assert_eq!(op.status, OperationStatus::Complete);
}

/// An operation run now (`runAsync` false, the flow driver's inline mode) works from what its
/// claim's command read and wrote, like a worker's claim: neither is read again.
#[test]
fn an_operation_run_now_reads_neither_itself_nor_its_cart_again_after_its_claim() {
    let (rig, reads) = counted_rig();
    let report = rig
        .engine
        .run_operation_now(rig.operation)
        .unwrap()
        .unwrap();
    assert_eq!(reads.load(Ordering::SeqCst), 0);
    assert!(report.applied, "{report:?}");
    assert_eq!(report.operation_id, rig.operation);
    let op = rig.memory.operation(&rig.operation).unwrap().unwrap();
    assert_eq!(op.status, OperationStatus::Complete);
}
