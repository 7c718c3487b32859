//! Stores: where checkouts live. One trait; the in-memory store is the reference.

mod dataset;
mod memory;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod sql;
#[cfg(feature = "sqlite")]
mod sqlite;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use dataset::{DataSet, DataSetError, StockLevel};
pub use memory::MemoryStore;
#[cfg(feature = "postgres")]
pub use postgres::PostgresStore;
#[cfg(feature = "sqlite")]
pub use sqlite::{Durability, SqliteStore};

/// The kept state of one key, as the memory store holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct KeyEntry {
    fingerprint: String,
    expires_at: DateTime<Utc>,
    answer: Option<KeptAnswer>,
}

impl KeyEntry {
    /// What a lookup of `fingerprint` finds in this live entry.
    fn state_for(&self, fingerprint: &str) -> KeyState {
        match &self.answer {
            _ if self.fingerprint != fingerprint => KeyState::Mismatch,
            None => KeyState::InFlight,
            Some(answer) => KeyState::Answered(answer.clone()),
        }
    }
}

/// What a lookup finds in a stored key row: fingerprint, status and body (both `None` while
/// the request runs).
#[cfg(any(feature = "sqlite", feature = "postgres"))]
fn key_state(
    stored: &str,
    given: &str,
    status: Option<i64>,
    body: Option<Vec<u8>>,
) -> Result<KeyState, StoreError> {
    if stored != given {
        return Ok(KeyState::Mismatch);
    }
    Ok(match (status, body) {
        (Some(status), Some(body)) => KeyState::Answered(KeptAnswer {
            status: u16::try_from(status)
                .map_err(|_| StoreError::Io(format!("a kept answer has status {status}").into()))?,
            body,
        }),
        _ => KeyState::InFlight,
    })
}

use crate::error::StoreError;
use crate::events::{Delivery, EventPosition, PublishedEvent};
use crate::machine::{Changes, Event, Machine, Snapshot};
use crate::model::{
    BackgroundOperation, CartCheckoutSession, CartItem, CartValidationOutput, Order, SfId, User,
    WebCart, WebStore,
};

/// One committed move, kept forever: who did what, when, from which node to which.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HistoryEntry {
    /// When it was committed.
    pub at: DateTime<Utc>,
    /// The user, or `None` for a worker.
    pub actor: Option<SfId>,
    /// The cart the move belongs to.
    pub cart_id: SfId,
    /// The event fired.
    pub event: Event,
    /// The machine that moved.
    pub machine: Machine,
    /// The record that moved.
    pub record: SfId,
    /// The node before, as the diagram names it.
    pub from: String,
    /// The node after.
    pub to: String,
}

/// Everything one command writes: applied atomically, or not at all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Commit {
    /// The records, each carrying its new version.
    pub changes: Changes,
    /// The moves, for the history.
    pub history: Vec<HistoryEntry>,
}

/// The lines of several carts, by cart ([`Store::cart_items_of`]).
pub type CartLines = std::collections::HashMap<SfId, Arc<Vec<CartItem>>>;

/// Builds the commit that claims the operation of a snapshot, or `None` to pass it by.
pub type ClaimFn<'a> = dyn FnMut(Snapshot) -> Result<Option<Commit>, StoreError> + 'a;

/// [`ClaimFn`] for a batch ([`Store::claim_batch`]): also told how many candidates its
/// transaction has taken so far (0 for the first), so it can take more only where they fit.
pub type BatchClaimFn<'a> = dyn FnMut(Snapshot, usize) -> Result<Option<Commit>, StoreError> + 'a;

/// A request made under an `Idempotency-Key`: whose key it is and what was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyedRequest {
    /// The caller: keys are per user.
    pub user: SfId,
    /// The key as the caller sent it.
    pub key: String,
    /// What was asked (route and body), so a reuse of the key for another request shows.
    pub fingerprint: String,
}

/// The answer a keyed request got, kept to answer its repeats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptAnswer {
    /// The HTTP status.
    pub status: u16,
    /// The body, byte for byte.
    pub body: Vec<u8>,
}

/// What [`Store::begin_keyed`] found for a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyState {
    /// The key is new (or its time ran out): it is now reserved for this request, which runs
    /// and then [`Store::keep_answer`]s or [`Store::release_key`]s.
    Reserved,
    /// The same request is still running under the key.
    InFlight,
    /// The key was used for another request.
    Mismatch,
    /// The same request ran: its answer.
    Answered(KeptAnswer),
}

/// What a snapshot is loaded for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadKey {
    /// A cart: its active session and that session's operation.
    Cart(SfId),
    /// A session (archived or not) and its cart.
    Session(SfId),
    /// An operation, its session and its cart.
    Operation(SfId),
}

/// What one command reads, in one consistent view: a snapshot, and with it the cart's lines
/// and the acting user when the command needs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reads {
    /// The snapshot's key.
    pub key: LoadKey,
    /// Whether the cart's lines are read too (into [`Snapshot::lines`], in Id order).
    pub lines: bool,
    /// The acting user to read (into [`Snapshot::user`]), or `None` for a worker.
    pub user: Option<SfId>,
}

/// Decides on what was read: the commit to apply, or `None` to write nothing.
pub type DecideFn<'a> = dyn FnMut(Snapshot) -> Result<Option<Commit>, StoreError> + 'a;

/// Reads `reads` with one load and, where asked, one read each of the lines and the user.
pub fn load_reads<S: Store + ?Sized>(store: &S, reads: &Reads) -> Result<Snapshot, StoreError> {
    let mut snapshot = store.load(reads.key)?;
    if reads.lines
        && let Some(cart) = &snapshot.cart
    {
        snapshot.lines = store.cart_items(&cart.id)?;
    }
    if let Some(user) = &reads.user {
        snapshot.user = store.user(user)?;
    }
    Ok(snapshot)
}

/// A store's watch for work that other processes commit: it calls its wake-up each time one
/// does, until it is dropped (which stops its thread and waits for it).
pub struct WorkWatch {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl WorkWatch {
    /// Runs `watch` on a thread of its own; `watch` returns once the flag it is given is set.
    #[cfg(feature = "postgres")]
    pub(crate) fn spawn(
        name: &str,
        watch: impl FnOnce(&std::sync::atomic::AtomicBool) + Send + 'static,
    ) -> std::io::Result<WorkWatch> {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = std::sync::Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || watch(&flag))?;
        Ok(WorkWatch {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for WorkWatch {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl std::fmt::Debug for WorkWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkWatch").finish_non_exhaustive()
    }
}

/// The contract every store keeps: consistent snapshots, and commits that apply every record
/// or none, each only where the stored version is the one the decision read. A store also
/// refuses a commit that would give a cart two New or Running operations or two active
/// sessions, whatever the caller believed.
pub trait Store: Send + Sync {
    /// A user by ID.
    fn user(&self, id: &SfId) -> Result<Option<User>, StoreError>;
    /// Reads everything `decide` needs about one cart in one consistent view (the user is
    /// left for the engine to fill in).
    fn load(&self, key: LoadKey) -> Result<Snapshot, StoreError>;
    /// Applies a commit atomically; [`StoreError::Conflict`] when a version moved.
    fn commit(&self, commit: &Commit) -> Result<(), StoreError>;
    /// Reads `reads` and applies the commit `decide` answers for them. Stores that can do
    /// both in one transaction override this, so that one command costs one transaction and
    /// no other commit can come in between. By default it is [`load_reads`] and then
    /// [`Store::commit`], whose compare-and-set refuses a commit that came in between
    /// ([`StoreError::Conflict`]: the caller decides again).
    fn transact(&self, reads: &Reads, decide: &mut DecideFn<'_>) -> Result<(), StoreError> {
        match decide(load_reads(self, reads)?)? {
            Some(commit) => self.commit(&commit),
            None => Ok(()),
        }
    }
    /// Up to `limit` New operations of carts that are not Closed, oldest first.
    fn claimable_operations(&self, limit: usize) -> Result<Vec<SfId>, StoreError>;
    /// Up to `limit` Running operations whose lease has ended by `now` (at `now` or before),
    /// the earliest end first.
    fn expired_operations(&self, now: DateTime<Utc>, limit: usize)
    -> Result<Vec<SfId>, StoreError>;
    /// Claims one claimable operation: offers candidates' snapshots to `claim`, which answers
    /// the commit that claims it (or `None` to pass), and applies the first such commit that
    /// holds. Returns the claimed operation. Stores with row locks override this so that
    /// concurrent workers skip each other's candidates instead of racing for the oldest.
    fn claim_next(&self, claim: &mut ClaimFn<'_>) -> Result<Option<SfId>, StoreError> {
        for id in self.claimable_operations(8)? {
            let Some(commit) = claim(self.load(LoadKey::Operation(id))?)? else {
                continue;
            };
            match self.commit(&commit) {
                Ok(()) => return Ok(Some(id)),
                Err(StoreError::Conflict(_)) => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }
    /// Claims up to `max` claimable operations in one transaction, where the store can: offers
    /// candidates' snapshots to `claim` as [`Store::claim_next`] does, with the number taken
    /// so far, and applies every commit it answers together, all or none. Returns the claimed
    /// operations, in the order offered. By default, and whenever a batch cannot be had (its
    /// commit lost a race), one [`Store::claim_next`].
    fn claim_batch(
        &self,
        max: usize,
        claim: &mut BatchClaimFn<'_>,
    ) -> Result<Vec<SfId>, StoreError> {
        let _ = max;
        Ok(self
            .claim_next(&mut |snapshot| claim(snapshot, 0))?
            .into_iter()
            .collect())
    }
    /// Starts calling `wake` whenever another process commits work (a New operation) to this
    /// store, until the returned watch is dropped. `None`, the default, when the store has no
    /// way to tell: idle workers then find such work at their next poll
    /// ([`EngineConfig::idle_poll_ms`](crate::EngineConfig::idle_poll_ms)).
    fn watch_for_work(
        &self,
        wake: std::sync::Arc<dyn Fn() + Send + Sync>,
    ) -> Result<Option<WorkWatch>, StoreError> {
        let _ = wake;
        Ok(None)
    }
    /// A cart by ID.
    fn cart(&self, id: &SfId) -> Result<Option<WebCart>, StoreError>;
    /// Up to `limit` carts, in order of ID, each after `after` when it is given: a scan of
    /// every cart, one page at a time.
    fn carts_after(&self, after: Option<&SfId>, limit: usize) -> Result<Vec<WebCart>, StoreError>;
    /// A cart's lines.
    fn cart_items(&self, cart_id: &SfId) -> Result<Vec<CartItem>, StoreError>;
    /// A cart's lines, shared: a store that keeps them in memory hands out its own, so that
    /// a worker reads a large cart without copying it. By default, [`Store::cart_items`].
    fn cart_items_shared(&self, cart_id: &SfId) -> Result<Arc<Vec<CartItem>>, StoreError> {
        Ok(Arc::new(self.cart_items(cart_id)?))
    }
    /// The lines of each of `carts`, shared as [`Store::cart_items_shared`] shares them: a
    /// cart with none maps to an empty list. A worker that claimed several operations reads
    /// their carts' lines at once. By default, one [`Store::cart_items_shared`] per cart.
    fn cart_items_of(&self, carts: &[SfId]) -> Result<CartLines, StoreError> {
        carts
            .iter()
            .map(|cart| Ok((*cart, self.cart_items_shared(cart)?)))
            .collect()
    }
    /// A cart line by ID.
    fn cart_item(&self, id: &SfId) -> Result<Option<CartItem>, StoreError>;
    /// A CartValidationOutput by ID.
    fn validation_output(&self, id: &SfId) -> Result<Option<CartValidationOutput>, StoreError>;
    /// A session by ID.
    fn session(&self, id: &SfId) -> Result<Option<CartCheckoutSession>, StoreError>;
    /// Every session of a cart, archived ones included.
    fn sessions_of(&self, cart_id: &SfId) -> Result<Vec<CartCheckoutSession>, StoreError>;
    /// An operation by ID.
    fn operation(&self, id: &SfId) -> Result<Option<BackgroundOperation>, StoreError>;
    /// Every operation of a cart, oldest first.
    fn operations_of(&self, cart_id: &SfId) -> Result<Vec<BackgroundOperation>, StoreError>;
    /// An order by ID.
    fn order(&self, id: &SfId) -> Result<Option<Order>, StoreError>;
    /// A cart's CartValidationOutputs.
    fn validation_outputs(&self, cart_id: &SfId) -> Result<Vec<CartValidationOutput>, StoreError>;
    /// A cart's history, oldest first.
    fn history(&self, cart_id: &SfId) -> Result<Vec<HistoryEntry>, StoreError>;
    /// Up to `limit` committed moves after `after` (from the first when `None`), in commit
    /// order: the events of [`crate::events`]. A move committed later never sits before one
    /// already answered.
    fn events_after(
        &self,
        after: Option<&EventPosition>,
        limit: usize,
    ) -> Result<Vec<PublishedEvent>, StoreError>;
    /// The position of the last event [`Store::events_after`] can answer, or `None` when
    /// there is none yet: where a consumer that wants only new events starts.
    fn last_event(&self) -> Result<Option<EventPosition>, StoreError>;
    /// The position up to which webhook `hook` has delivered (or skipped) the events, or
    /// `None` when it never ran.
    fn webhook_cursor(&self, hook: &str) -> Result<Option<EventPosition>, StoreError>;
    /// In one transaction: appends `delivery` to the delivery log when it is given, and
    /// moves `hook`'s cursor to `to` when it is given and later than the cursor (a cursor
    /// never moves back).
    fn advance_webhook(
        &self,
        hook: &str,
        to: Option<&EventPosition>,
        delivery: Option<&Delivery>,
    ) -> Result<(), StoreError>;
    /// Up to `limit` of webhook `hook`'s delivery attempts, the latest first.
    fn deliveries(&self, hook: &str, limit: usize) -> Result<Vec<Delivery>, StoreError>;
    /// Looks up `request`'s key at `now`, in one atomic step: a key unused (or whose time ran
    /// out) is reserved for the request until `expires_at`; otherwise the answer says whether
    /// the request is running, was another one, or has its answer kept. Keys whose time ran
    /// out are dropped.
    fn begin_keyed(
        &self,
        request: &KeyedRequest,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<KeyState, StoreError>;
    /// Keeps the answer of the request reserved under its key (until the key's time runs out).
    fn keep_answer(&self, request: &KeyedRequest, answer: &KeptAnswer) -> Result<(), StoreError>;
    /// Frees a key reserved by [`Store::begin_keyed`] whose request kept no answer, so that a
    /// retry runs again.
    fn release_key(&self, request: &KeyedRequest) -> Result<(), StoreError>;
    /// The record that holds the record `id` (a CartTax's cart line, an offered method's
    /// cart, an OrderItem's, an OrderDeliveryGroup's or a PaymentAuthorization's order).
    /// Records held inside another are found by Id through this index, which every commit
    /// and import keeps.
    fn owner_of(&self, id: &SfId) -> Result<Option<SfId>, StoreError>;
    /// How many operations wait for a worker and how many a worker holds (the queue depth
    /// `/metrics` reports), in one read.
    fn operation_counts(&self) -> Result<OperationCounts, StoreError>;
    /// Every WebStore, by ID.
    fn web_stores(&self) -> Result<Vec<WebStore>, StoreError>;
}

/// The checks of a commit that need no stored state, made by every store before it writes:
/// lines are written and removed only with their cart, whose version guards them.
pub(crate) fn check_shape(commit: &Commit) -> Result<(), StoreError> {
    let changes = &commit.changes;
    if !changes.removed_items.is_empty() && changes.carts.is_empty() {
        return Err(StoreError::Invariant(
            "lines are removed without their cart, whose version guards them".into(),
        ));
    }
    if let Some(item) = changes
        .items
        .iter()
        .find(|i| !changes.carts.iter().any(|c| c.id == i.cart_id))
    {
        return Err(StoreError::Invariant(format!(
            "line {} is written without its cart {}, whose version guards it",
            item.id, item.cart_id
        )));
    }
    Ok(())
}

/// The records held inside the records a commit writes, by holder: every cart, line and
/// order written (a removed line holds nothing any more).
pub(crate) fn held_records(changes: &Changes) -> Vec<(SfId, Vec<SfId>)> {
    let carts = changes.carts.iter().map(|c| (c.id, c.child_ids()));
    let items = changes.items.iter().map(|i| (i.id, i.child_ids()));
    let removed = changes.removed_items.iter().map(|id| (*id, Vec::new()));
    let orders = changes.orders.iter().map(|o| (o.id, o.child_ids()));
    carts.chain(items).chain(removed).chain(orders).collect()
}

/// The records held inside the records of a data set, by holder.
pub(crate) fn held_in_dataset(data: &DataSet) -> Vec<(SfId, Vec<SfId>)> {
    let carts = data.carts.iter().map(|c| (c.id, c.child_ids()));
    let items = data.items.iter().map(|i| (i.id, i.child_ids()));
    let orders = data.orders.iter().map(|o| (o.id, o.child_ids()));
    carts.chain(items).chain(orders).collect()
}

/// The operations of a store that are not finished, by status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct OperationCounts {
    /// Operations with status New (waiting for a worker), Closed carts' included.
    pub new: u64,
    /// Operations with status Running (claimed by a worker).
    pub running: u64,
}

impl OperationCounts {
    /// Adds `count` operations of `status`; finished statuses are not counted.
    pub fn add(&mut self, status: &str, count: u64) {
        match status {
            "New" => self.new += count,
            "Running" => self.running += count,
            _ => {}
        }
    }
}
