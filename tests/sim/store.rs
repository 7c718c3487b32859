//! The store every simulated engine shares: the real store inside, a yield point before each
//! call, faults injected into commits, every acknowledged commit remembered, and, for the
//! simulator's own test, a switch that breaks the compare-and-set.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use cartflow::model::SfId;
use cartflow::store::Commit;
use cartflow::{Store, StoreError};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::baton::Baton;

/// How a store whose process crashed is opened again (SQLite's file survives; the memory
/// store has none).
pub type Reopen = Box<dyn Fn() -> Arc<dyn Store> + Send + Sync>;

/// A record version a commit acknowledged to its caller: every later read must find it (or a
/// later one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Acked {
    /// What kind of record.
    pub kind: &'static str,
    /// The record.
    pub id: SfId,
    /// The version the commit wrote.
    pub version: u64,
}

/// What a commit suffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitFault {
    /// Applied and answered.
    None,
    /// Refused before anything is applied (the database went away).
    Fails,
    /// Applied, then the answer is lost: the process crashed between commit and answer.
    CrashAfter,
}

/// Fault rates, in percent of commits.
#[derive(Debug, Clone, Copy)]
pub struct FaultRates {
    /// Commits refused before they apply.
    pub fails: u32,
    /// Commits applied whose answer is lost.
    pub crash_after: u32,
}

/// See the module's comment.
pub struct SimStore {
    inner: RwLock<Arc<dyn Store>>,
    reopen: Option<Reopen>,
    baton: Arc<Baton>,
    rng: Mutex<SmallRng>,
    rates: FaultRates,
    acked: Mutex<Vec<Acked>>,
    /// Every commit's fault, in order (the step log shows them).
    pub faults: Mutex<Vec<CommitFault>>,
    broken_cas: bool,
    calm: AtomicBool,
}

impl SimStore {
    /// Wraps `inner`; `seed` draws the faults.
    pub fn new(
        inner: Arc<dyn Store>,
        reopen: Option<Reopen>,
        baton: Arc<Baton>,
        seed: u64,
        rates: FaultRates,
        broken_cas: bool,
    ) -> SimStore {
        SimStore {
            inner: RwLock::new(inner),
            reopen,
            baton,
            rng: Mutex::new(SmallRng::seed_from_u64(seed)),
            rates,
            acked: Mutex::new(Vec::new()),
            faults: Mutex::new(Vec::new()),
            broken_cas,
            calm: AtomicBool::new(false),
        }
    }

    /// No more faults from now on.
    pub fn calm(&self) {
        self.calm.store(true, Ordering::SeqCst);
    }

    /// The real store, read without yielding or faults (for the invariant checks).
    pub fn real(&self) -> Arc<dyn Store> {
        Arc::clone(&self.inner.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Whether a crashed process can open this store again.
    pub fn reopens(&self) -> bool {
        self.reopen.is_some()
    }

    /// The process crashes: its connection is dropped and the store opened again from what
    /// it made durable.
    pub fn crash_and_reopen(&self) {
        if let Some(reopen) = &self.reopen {
            let reopened = reopen();
            *self.inner.write().unwrap_or_else(|e| e.into_inner()) = reopened;
        }
    }

    /// Every record version acknowledged so far.
    pub fn acked(&self) -> Vec<Acked> {
        self.acked.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn enter(&self) -> Arc<dyn Store> {
        self.baton.yield_now();
        self.real()
    }

    fn draw_fault(&self) -> CommitFault {
        if self.calm.load(Ordering::SeqCst) {
            return CommitFault::None;
        }
        let roll = self
            .rng
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .random_range(0..100);
        let fault = if roll < self.rates.fails {
            CommitFault::Fails
        } else if roll < self.rates.fails + self.rates.crash_after {
            CommitFault::CrashAfter
        } else {
            CommitFault::None
        };
        self.faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(fault);
        fault
    }

    fn remember(&self, commit: &Commit) {
        let c = &commit.changes;
        let carts = c.carts.iter().map(|r| ("cart", r.id, r.version));
        let sessions = c.sessions.iter().map(|r| ("session", r.id, r.version));
        let operations = c.operations.iter().map(|r| ("operation", r.id, r.version));
        let orders = c.orders.iter().map(|r| ("order", r.id, r.version));
        let mut acked = self.acked.lock().unwrap_or_else(|e| e.into_inner());
        for (kind, id, version) in carts.chain(sessions).chain(operations).chain(orders) {
            acked.push(Acked { kind, id, version });
        }
    }

    /// The broken engine's commit: every record claims to follow the version stored now, so
    /// a decision on a stale read overwrites whatever came between.
    fn without_compare_and_set(
        &self,
        store: &dyn Store,
        commit: &Commit,
    ) -> Result<Commit, StoreError> {
        let mut commit = commit.clone();
        let next = |stored: Option<u64>| stored.map_or(1, |v| v + 1);
        for cart in &mut commit.changes.carts {
            cart.version = next(store.cart(&cart.id)?.map(|r| r.version));
        }
        for session in &mut commit.changes.sessions {
            session.version = next(store.session(&session.id)?.map(|r| r.version));
        }
        for op in &mut commit.changes.operations {
            op.version = next(store.operation(&op.id)?.map(|r| r.version));
        }
        for order in &mut commit.changes.orders {
            order.version = next(store.order(&order.id)?.map(|r| r.version));
        }
        Ok(commit)
    }
}

impl Store for SimStore {
    fn commit(&self, commit: &Commit) -> Result<(), StoreError> {
        let store = self.enter();
        let fault = self.draw_fault();
        if fault == CommitFault::Fails {
            return Err(StoreError::Io("simulated: the database went away".into()));
        }
        let commit = if self.broken_cas {
            self.without_compare_and_set(store.as_ref(), commit)?
        } else {
            commit.clone()
        };
        store.commit(&commit)?;
        if fault == CommitFault::CrashAfter {
            return Err(StoreError::Io(
                "simulated: the connection broke before the answer".into(),
            ));
        }
        self.remember(&commit);
        Ok(())
    }

    // `claim_next` is the trait's own: it claims through this store's yielding reads and
    // faulty commits.
    crate::delegate_store!(enter() =>
        user, load, claimable_operations, expired_operations, cart, carts_after, cart_items, cart_item,
        validation_output, session, sessions_of, operation, operations_of, order,
        validation_outputs, history, events_after, last_event, webhook_cursor, advance_webhook, deliveries, begin_keyed, keep_answer, release_key, owner_of,
        operation_counts, web_stores
    );
}
