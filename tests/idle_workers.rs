//! Idle workers: they wake when work is committed, not when their poll ends; they do not spin
//! while there is none; a worker loop that panics at once waits before it runs again; and a
//! pool stopped or dropped claims nothing more.
//!
//! No test measures a speed: each counts what a worker did (claims, restarts), or waits for
//! an operation with a bound that only a worker that never wakes can miss.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use cartflow::engine::{EngineConfig, RESTART_BACKOFF};
use cartflow::ids::SequentialIds;
use cartflow::model::{OperationStatus, SfId};
use cartflow::sample::{self, SampleCart};
use cartflow::store::ClaimFn;
use cartflow::{Engine, MemoryStore, Store, StoreError};

/// Far longer than any test here: a worker that waits for its poll to end never wakes.
const IDLE_POLL_MS: u64 = 3_600_000;

/// How long a test waits for what a working worker does at once.
const BOUND: Duration = Duration::from_secs(30);

/// A memory store that counts the claims asked of it, and panics in each one if told to.
struct CountsClaims {
    inner: MemoryStore,
    claims: AtomicUsize,
    panics: bool,
}

impl Store for CountsClaims {
    fn claim_next(&self, claim: &mut ClaimFn<'_>) -> Result<Option<SfId>, StoreError> {
        self.claims.fetch_add(1, Ordering::SeqCst);
        if self.panics {
            panic!("this store panics in every claim");
        }
        self.inner.claim_next(claim)
    }
    delegate_store!(inner => user, load, commit, claimable_operations, expired_operations,
        cart, carts_after, cart_items, cart_item, validation_output, session, sessions_of, operation,
        operations_of, order, validation_outputs, history, events_after, last_event, webhook_cursor, advance_webhook, deliveries, begin_keyed, keep_answer, release_key,
        operation_counts, web_stores, owner_of);
}

impl CountsClaims {
    fn claims(&self) -> usize {
        self.claims.load(Ordering::SeqCst)
    }
}

/// An engine over the sample data whose idle workers poll once an hour.
fn engine(panics: bool) -> (Engine, Arc<CountsClaims>) {
    let data = sample::dataset();
    let store = Arc::new(CountsClaims {
        inner: MemoryStore::from_dataset(data.clone()).unwrap(),
        claims: AtomicUsize::new(0),
        panics,
    });
    let config = EngineConfig {
        idle_poll_ms: IDLE_POLL_MS,
        ..EngineConfig::default()
    };
    let engine = Engine::new(store.clone())
        .with_ids(Arc::new(SequentialIds::starting_at(1)))
        .with_integrations(sample::integrations(&data))
        .with_config(config);
    (engine, store)
}

/// Whether `done()` holds within `bound`.
fn within(bound: Duration, done: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + bound;
    while !done() {
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(5));
    }
    true
}

/// Waits (within [`BOUND`]) until `done()`.
fn wait_until(what: &str, done: impl Fn() -> bool) {
    assert!(within(BOUND, done), "{what} never happened");
}

fn finished(store: &dyn Store, op: &SfId) -> bool {
    !store.operation(op).unwrap().unwrap().status.is_active()
}

#[test]
fn an_idle_worker_wakes_when_work_is_committed_not_when_its_poll_ends() {
    let (engine, store) = engine(false);
    let pool = engine.start_workers(1);
    // The worker has looked once and found nothing: it now waits for work, or for an hour.
    wait_until("the worker's first claim", || store.claims() >= 1);
    let op = support::queue::start_inventory_check(&engine, SampleCart::InStock.id());
    if !within(BOUND, || finished(store.as_ref(), &op)) {
        // Stopping would wait for the sleeping worker: leave it to the process's end.
        std::mem::forget(pool);
        panic!("the idle worker did not wake for the committed operation");
    }
    let status = store.operation(&op).unwrap().unwrap().status;
    assert_eq!(status, OperationStatus::Complete);
    pool.stop();
}

#[test]
fn an_idle_worker_does_not_look_for_work_again_before_its_poll_ends() {
    let (engine, store) = engine(false);
    let pool = engine.start_workers(1);
    // One operation first, so the signal has announced work once before the worker idles.
    let op = support::queue::start_inventory_check(&engine, SampleCart::InStock.id());
    wait_until("the inventory check", || finished(store.as_ref(), &op));
    let before = store.claims();
    thread::sleep(Duration::from_millis(300));
    let looked = store.claims() - before;
    // At most the claim that found nothing after the operation, and one more if the report's
    // own commit woke the worker; a worker that spins claims thousands of times.
    assert!(
        looked <= 2,
        "an idle worker claimed {looked} times while no work came"
    );
    assert_eq!(
        pool.restarts(),
        0,
        "a worker that never panicked was restarted"
    );
    pool.stop();
}

#[test]
fn a_worker_loop_that_panics_at_once_waits_before_it_runs_again() {
    let (engine, store) = engine(true);
    // However loaded the machine, two restarts come within this bound (a hang, not a measure).
    let bound = Duration::from_secs(60);
    let started = Instant::now();
    let pool = engine.start_workers(1);
    while pool.restarts() < 2 && started.elapsed() < bound {
        thread::sleep(Duration::from_millis(10));
    }
    // Read before the clock, so the count is of restarts within the time read after it.
    let restarts = pool.restarts();
    let elapsed = started.elapsed();
    pool.stop();
    assert!(store.claims() >= 1, "the worker never claimed");
    assert!(
        restarts >= 2,
        "the panicking loop was not restarted twice in {bound:?}"
    );
    // A restart follows each panic after RESTART_BACKOFF, so no more fit in the time than
    // its length over the back-off, and one for the panic at the start.
    let most = elapsed.as_millis() / RESTART_BACKOFF.as_millis() + 1;
    assert!(
        u128::from(restarts) <= most,
        "{restarts} restarts in {elapsed:?}: the loop does not wait {RESTART_BACKOFF:?}"
    );
}

/// Stops `pool` with `stop`, then commits work: no worker of the pool may claim it. A pool
/// whose workers outlived its stop would wake for the work at once and claim it.
fn no_claims_after(stop: impl FnOnce(cartflow::engine::WorkerPool), how: &str) {
    let (engine, store) = engine(false);
    let pool = engine.start_workers(2);
    wait_until("the workers' first claims", || store.claims() >= 2);
    stop(pool);
    let before = store.claims();
    let op = support::queue::start_inventory_check(&engine, SampleCart::InStock.id());
    // Long enough for a worker that is still there to wake and claim (it wakes at once).
    thread::sleep(Duration::from_millis(300));
    assert_eq!(
        store.claims(),
        before,
        "a worker of a {how} pool claimed work"
    );
    let status = store.operation(&op).unwrap().unwrap().status;
    assert_eq!(
        status,
        OperationStatus::New,
        "a worker of a {how} pool ran the operation"
    );
}

#[test]
fn a_stopped_pool_claims_nothing_more() {
    no_claims_after(cartflow::engine::WorkerPool::stop, "stopped");
}

#[test]
fn a_dropped_pool_claims_nothing_more() {
    no_claims_after(drop, "dropped");
}
