//! The fences of the worker commands, decided directly (`decide_worker`) and through the
//! engine's sweep and worker: a lease that still runs is never ended, one that ended (at its
//! very instant or before) is, and a Closed cart refuses every worker command, whatever its
//! operation's state.

mod support;

use support::queue::{Rig, decide_at, rig_on_memory, rig_over, signalling_gated_provider};

use std::sync::Arc;
use std::thread;

use cartflow::integrations::Integrations;
use cartflow::machine::{Changes, OperationSettings, Snapshot, StepOutcome, WorkerCommand};
use cartflow::model::{CartStatus, OperationStatus, SfId};
use cartflow::sample::SampleCart;
use cartflow::store::{Commit, LoadKey};
use cartflow::{CheckoutError, EngineConfig, Fenced, MemoryStore, Store, StoreError};
use chrono::{DateTime, Duration, TimeZone, Utc};

/// The lease every claim here takes.
const LEASE_MS: u64 = 30_000;

fn lease() -> Duration {
    Duration::milliseconds(LEASE_MS as i64)
}

fn config() -> EngineConfig {
    EngineConfig {
        operations: OperationSettings {
            timeout_ms: 3_600_000,
            retry_limit: 2,
        },
        lease_ms: LEASE_MS,
        // No heartbeat renews a lease during these tests.
        heartbeat_ms: 3_600_000,
        ..EngineConfig::default()
    }
}

/// A store that answers the sweeper with every Running operation, lease ended or not: a
/// sweeper that read the leases before a heartbeat renewed them. The decision, not the store's
/// query, must then keep a running lease.
struct StaleLeaseReads {
    inner: Arc<MemoryStore>,
}

impl Store for StaleLeaseReads {
    fn expired_operations(
        &self,
        _now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<SfId>, StoreError> {
        Ok(self
            .inner
            .to_dataset()
            .operations
            .iter()
            .filter(|op| op.status == OperationStatus::Running)
            .map(|op| op.id)
            .take(limit)
            .collect())
    }
    delegate_store!(inner => user, load, commit, claimable_operations, claim_next, cart,
        carts_after, cart_items, cart_item, validation_output, session, sessions_of, operation,
        operations_of, order, validation_outputs, history, events_after, last_event, webhook_cursor, advance_webhook, deliveries, begin_keyed, keep_answer, release_key,
        operation_counts, web_stores, owner_of);
}

fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 9, 0, 0).unwrap()
}

/// [`rig_over`] the memory store itself, or the stale-reading wrapper around it.
fn rig(stale_reads: bool) -> Rig {
    rig_over(start(), Integrations::new(), config(), |memory| {
        if stale_reads {
            Arc::new(StaleLeaseReads { inner: memory })
        } else {
            memory
        }
    })
}

fn claim(operation_id: SfId) -> WorkerCommand {
    WorkerCommand::Claim {
        operation_id,
        lease_ms: LEASE_MS,
    }
}

fn heartbeat(operation_id: SfId) -> WorkerCommand {
    WorkerCommand::Heartbeat {
        operation_id,
        attempt: 1,
        lease_ms: LEASE_MS,
    }
}

fn expire(operation_id: SfId) -> WorkerCommand {
    WorkerCommand::Expire {
        operation_id,
        attempt: 1,
    }
}

fn finish(operation_id: SfId) -> WorkerCommand {
    WorkerCommand::Finish {
        operation_id,
        attempt: 1,
        outcome: StepOutcome::Passed,
        update: None,
        order: None,
    }
}

/// A worker claims the rig's operation now and dies: it stays Running at attempt 1 until its
/// lease (now + [`LEASE_MS`]) ends. Returns when the lease ends.
fn claim_and_die(rig: &Rig) -> DateTime<Utc> {
    let now = rig.engine.now();
    let snapshot = rig.memory.load(LoadKey::Operation(rig.operation)).unwrap();
    let decision = decide_at(&snapshot, now, &claim(rig.operation)).unwrap();
    rig.memory
        .commit(&Commit {
            changes: decision.changes,
            history: Vec::new(),
        })
        .unwrap();
    let op = rig.memory.operation(&rig.operation).unwrap().unwrap();
    assert_eq!((op.status, op.attempt), (OperationStatus::Running, 1));
    assert_eq!(op.expires_at, Some(now + lease()));
    now + lease()
}

/// Moves the rig's clock to `at` (never back: the rig starts before every lease).
fn set_clock(rig: &Rig, at: DateTime<Utc>) {
    let now = rig.engine.now();
    assert!(at >= now, "the clock only moves forward here");
    rig.clock.advance(at - now);
}

/// The sweep at `at` ends no claim and changes nothing.
fn assert_sweep_keeps_the_claim(rig: &Rig, at: DateTime<Utc>) {
    set_clock(rig, at);
    let before = rig.memory.to_dataset();
    assert_eq!(rig.engine.sweep_expired().unwrap(), 0, "swept at {at}");
    assert!(
        rig.memory.to_dataset() == before,
        "the sweep at {at} changed the store"
    );
}

/// The sweep at `at` ends the claim: the operation is New again, its lease gone.
fn assert_sweep_ends_the_claim(rig: &Rig, at: DateTime<Utc>) {
    set_clock(rig, at);
    assert_eq!(rig.engine.sweep_expired().unwrap(), 1, "not swept at {at}");
    let op = rig.memory.operation(&rig.operation).unwrap().unwrap();
    assert_eq!(
        (op.status, op.attempt, op.expires_at),
        (OperationStatus::New, 1, None)
    );
}

#[test]
fn expire_refuses_a_lease_that_runs_on_and_changes_nothing() {
    // Decided directly: the documented refusal, at every instant before the lease ends.
    let rig = rig(false);
    let until = claim_and_die(&rig);
    let running = rig.memory.load(LoadKey::Operation(rig.operation)).unwrap();
    for before_the_end in [
        rig.engine.now(),
        until - Duration::seconds(1),
        until - Duration::milliseconds(1),
    ] {
        match decide_at(&running, before_the_end, &expire(rig.operation)) {
            Err(CheckoutError::Fenced(reason)) => assert_eq!(
                reason,
                Fenced::LeaseRunning {
                    operation: rig.operation,
                    until,
                },
                "at {before_the_end}"
            ),
            other => panic!("expired at {before_the_end}, before {until}: {other:?}"),
        }
    }

    // Through the sweep, even when the store offers the running claim as expired.
    let rig = rig_over(start(), Integrations::new(), config(), |memory| {
        Arc::new(StaleLeaseReads { inner: memory })
    });
    let until = claim_and_die(&rig);
    assert_sweep_keeps_the_claim(&rig, rig.engine.now());
    assert_sweep_keeps_the_claim(&rig, until - Duration::seconds(1));
    assert_sweep_keeps_the_claim(&rig, until - Duration::milliseconds(1));
    let op = rig.memory.operation(&rig.operation).unwrap().unwrap();
    assert_eq!(
        (op.status, op.attempt, op.expires_at),
        (OperationStatus::Running, 1, Some(until))
    );
}

/// A lease runs while its end lies ahead (`LeaseRunning` says it "runs until" that instant)
/// and has ended at that very instant, where the stores' query (`expires_at <= now`) offers
/// it to the sweeper too: the last millisecond before the end keeps the claim, the end ends it.
#[test]
fn a_lease_ends_at_the_instant_it_expires() {
    for stale_reads in [false, true] {
        let rig = rig(stale_reads);
        let until = claim_and_die(&rig);
        assert_sweep_keeps_the_claim(&rig, until - Duration::milliseconds(1));
        assert_sweep_ends_the_claim(&rig, until);
    }
    let rig = rig(false);
    let until = claim_and_die(&rig);
    let running = rig.memory.load(LoadKey::Operation(rig.operation)).unwrap();
    let decision = decide_at(&running, until, &expire(rig.operation)).unwrap();
    let [op] = decision.changes.operations.as_slice() else {
        panic!("the expiry writes its operation: {decision:?}");
    };
    assert_eq!(
        (op.status, op.attempt, op.expires_at),
        (OperationStatus::New, 1, None)
    );
}

#[test]
fn a_lease_that_ended_a_millisecond_ago_is_expired() {
    for stale_reads in [false, true] {
        let rig = rig(stale_reads);
        let until = claim_and_die(&rig);
        assert_sweep_ends_the_claim(&rig, until + Duration::milliseconds(1));
    }
}

/// The rig's snapshot with its cart Closed.
fn closed(snapshot: &Snapshot) -> Snapshot {
    let mut closed = snapshot.clone();
    closed.cart.as_mut().unwrap().status = CartStatus::Closed;
    closed
}

/// The claim queue passes Closed carts by, so only a direct decision reaches the refusal of
/// a claim, a heartbeat, a report or an expiry of a Closed cart's operation: each is refused
/// `CartClosed`, where the same command on the cart in checkout is decided.
#[test]
fn every_worker_command_is_refused_on_a_closed_cart() {
    let rig = rig(false);
    let new = rig.memory.load(LoadKey::Operation(rig.operation)).unwrap();
    let until = claim_and_die(&rig);
    let running = rig.memory.load(LoadKey::Operation(rig.operation)).unwrap();
    assert_eq!(
        running.cart.as_ref().map(|c| c.status),
        Some(CartStatus::Checkout)
    );
    let cart = running.cart.as_ref().unwrap().id;
    let op = rig.operation;
    // Expiry after the lease; everything else while it runs (a heartbeat a second later, so
    // that it extends the lease).
    let now = rig.engine.now();
    let cases = [
        (new.clone(), claim(op), now),
        (running.clone(), claim(op), now),
        (running.clone(), heartbeat(op), now + Duration::seconds(1)),
        (running.clone(), finish(op), now),
        (running.clone(), expire(op), until),
    ];
    for (snapshot, command, at) in cases {
        let status = snapshot.operation.as_ref().unwrap().status;
        let on_closed = decide_at(&closed(&snapshot), at, &command);
        assert!(
            matches!(&on_closed, Err(CheckoutError::Fenced(Fenced::CartClosed { cart: c })) if *c == cart),
            "{command:?} of a {status:?} operation on a Closed cart: {on_closed:?}"
        );
        // The same command on the cart in checkout is decided (or refused for its
        // operation, never for the cart): the Closed cart alone refuses it.
        match decide_at(&snapshot, at, &command) {
            Ok(decision) => assert!(
                !decision.changes.operations.is_empty(),
                "{command:?} of a {status:?} operation wrote nothing: {decision:?}"
            ),
            Err(CheckoutError::Fenced(Fenced::NotClaimable { .. })) => {
                assert_eq!(status, OperationStatus::Running, "{command:?}");
            }
            Err(e) => panic!("{command:?} of a {status:?} operation in checkout: {e}"),
        }
    }
}

/// Closes the rig's cart behind the engine's back (as another system might).
fn close_cart(memory: &MemoryStore) {
    let mut cart = memory.cart(&SampleCart::InStock.id()).unwrap().unwrap();
    cart.status = CartStatus::Closed;
    cart.version += 1;
    memory
        .commit(&Commit {
            changes: Changes {
                carts: vec![cart],
                ..Changes::default()
            },
            history: Vec::new(),
        })
        .unwrap();
}

#[test]
fn the_sweep_leaves_an_expired_claim_of_a_closed_cart_alone() {
    let rig = rig(false);
    let until = claim_and_die(&rig);
    close_cart(&rig.memory);
    set_clock(&rig, until + Duration::seconds(1));
    let before = rig.memory.to_dataset();
    assert_eq!(
        rig.memory.expired_operations(rig.engine.now(), 8).unwrap(),
        vec![rig.operation],
        "the store offers the expired claim"
    );
    assert_eq!(rig.engine.sweep_expired().unwrap(), 0);
    assert!(
        rig.memory.to_dataset() == before,
        "the sweep changed a Closed cart"
    );
}

#[test]
fn a_report_for_a_cart_closed_while_its_provider_ran_is_discarded() {
    let (integrations, release, entered) = signalling_gated_provider();
    let rig = rig_on_memory(start(), integrations, config());
    let worker = {
        let engine = rig.engine.clone();
        thread::spawn(move || engine.run_next_operation())
    };
    entered.recv().unwrap();
    close_cart(&rig.memory);
    let before = rig.memory.to_dataset();
    release.send(()).unwrap();
    let report = worker.join().unwrap().unwrap().unwrap();
    assert_eq!(
        (report.operation_id, report.outcome, report.applied),
        (rig.operation, StepOutcome::Passed, false)
    );
    assert!(
        rig.memory.to_dataset() == before,
        "the report changed a Closed cart"
    );
    let op = rig.memory.operation(&rig.operation).unwrap().unwrap();
    assert_eq!((op.status, op.attempt), (OperationStatus::Running, 1));
}
