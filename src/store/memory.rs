//! The in-memory store: the reference implementation of the [`Store`] contract.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use chrono::{DateTime, Utc};

use crate::error::StoreError;
use crate::events::{Delivery, EventPosition, PublishedEvent};
use crate::machine::Snapshot;
use crate::model::{
    Account, BackgroundOperation, CartCheckoutSession, CartItem, CartValidationOutput, Order, SfId,
    User, WebCart, WebStore,
};
use crate::store::{
    Commit, DataSet, DataSetError, DecideFn, HistoryEntry, KeptAnswer, KeyEntry, KeyState,
    KeyedRequest, LoadKey, Reads, StockLevel, Store,
};

#[derive(Debug, Default)]
struct Tables {
    stores: HashMap<SfId, WebStore>,
    accounts: HashMap<SfId, Account>,
    users: HashMap<SfId, User>,
    carts: HashMap<SfId, WebCart>,
    /// Each cart's lines, shared with the readers of [`Store::cart_items_shared`]: a commit
    /// that writes them while a reader holds them copies them first.
    items: HashMap<SfId, Arc<Vec<CartItem>>>,
    /// Line -> its cart.
    line_cart: HashMap<SfId, SfId>,
    stock: Vec<StockLevel>,
    sessions: HashMap<SfId, CartCheckoutSession>,
    sessions_by_cart: HashMap<SfId, Vec<SfId>>,
    active_session: HashMap<SfId, SfId>,
    operations: HashMap<SfId, BackgroundOperation>,
    operations_by_cart: HashMap<SfId, Vec<SfId>>,
    active_operation: HashMap<SfId, SfId>,
    new_operations: BTreeSet<(DateTime<Utc>, SfId)>,
    outputs: HashMap<SfId, Vec<CartValidationOutput>>,
    orders: HashMap<SfId, Order>,
    history: HashMap<SfId, Vec<HistoryEntry>>,
    /// The history in commit order, as (cart, index in its history): the event log, whose
    /// `n`-th entry is at position `n + 1`.
    log: Vec<(SfId, usize)>,
    /// Each webhook's cursor, and every delivery attempt in the order made.
    webhook_cursors: HashMap<String, EventPosition>,
    deliveries: Vec<Delivery>,
    keys: HashMap<(SfId, String), KeyEntry>,
    /// Held record -> its holder, and holder -> what it holds.
    owners: HashMap<SfId, SfId>,
    held: HashMap<SfId, Vec<SfId>>,
}

impl Tables {
    /// Adds a committed move to its cart's history and to the event log.
    fn append_history(&mut self, entry: HistoryEntry) {
        let cart = entry.cart_id;
        let history = self.history.entry(cart).or_default();
        self.log.push((cart, history.len()));
        history.push(entry);
    }

    /// The event at log index `index`.
    fn event(&self, index: usize) -> Option<PublishedEvent> {
        let (cart, at) = self.log.get(index)?;
        let entry = self.history.get(cart)?.get(*at)?.clone();
        let position = EventPosition::sequential(u64::try_from(index).ok()? + 1);
        Some(PublishedEvent { position, entry })
    }

    /// Records that `holder` now holds exactly `children`.
    fn reindex(&mut self, holder: SfId, children: Vec<SfId>) {
        for old in self.held.remove(&holder).unwrap_or_default() {
            if self.owners.get(&old) == Some(&holder) {
                self.owners.remove(&old);
            }
        }
        for child in &children {
            self.owners.insert(*child, holder);
        }
        if !children.is_empty() {
            self.held.insert(holder, children);
        }
    }

    fn put_session(&mut self, session: CartCheckoutSession) {
        let cart = session.web_cart_id;
        if !self.sessions.contains_key(&session.id) {
            self.sessions_by_cart
                .entry(cart)
                .or_default()
                .push(session.id);
        }
        if session.is_archived {
            if self.active_session.get(&cart) == Some(&session.id) {
                self.active_session.remove(&cart);
            }
        } else {
            self.active_session.insert(cart, session.id);
        }
        self.sessions.insert(session.id, session);
    }

    fn put_operation(&mut self, op: BackgroundOperation) {
        let cart = op.cart_id;
        match self.operations.get(&op.id) {
            Some(old) => {
                self.new_operations.remove(&(old.submitted_at, old.id));
            }
            None => self.operations_by_cart.entry(cart).or_default().push(op.id),
        }
        if op.status == crate::model::OperationStatus::New {
            self.new_operations.insert((op.submitted_at, op.id));
        }
        if op.status.is_active() {
            self.active_operation.insert(cart, op.id);
        } else if self.active_operation.get(&cart) == Some(&op.id) {
            self.active_operation.remove(&cart);
        }
        self.operations.insert(op.id, op);
    }

    fn session_order(&self, order: Option<SfId>) -> Option<Order> {
        order.and_then(|id| self.orders.get(&id)).cloned()
    }

    /// Operations of Closed carts are never claimed: a Closed cart is final.
    fn is_closed_cart_operation(&self, operation: &SfId) -> bool {
        self.operations
            .get(operation)
            .and_then(|op| self.carts.get(&op.cart_id))
            .is_some_and(|cart| cart.status == crate::model::CartStatus::Closed)
    }

    fn snapshot(&self, key: LoadKey) -> Snapshot {
        match key {
            LoadKey::Cart(cart) => self.cart_snapshot(cart),
            LoadKey::Session(id) => match self.sessions.get(&id) {
                None => Snapshot::default(),
                Some(session) => {
                    let mut snap = self.cart_snapshot(session.web_cart_id);
                    snap.operation = session
                        .background_operation_id
                        .and_then(|op| self.operations.get(&op))
                        .cloned();
                    snap.session = Some(session.clone());
                    snap
                }
            },
            LoadKey::Operation(id) => match self.operations.get(&id) {
                None => Snapshot::default(),
                Some(op) => {
                    let mut snap = self.cart_snapshot(op.cart_id);
                    snap.session = self.sessions.get(&op.checkout_session_id).cloned();
                    snap.operation = Some(op.clone());
                    snap
                }
            },
        }
    }

    fn cart_snapshot(&self, cart_id: SfId) -> Snapshot {
        let Some(cart) = self.carts.get(&cart_id) else {
            return Snapshot::default();
        };
        let session = self
            .active_session
            .get(&cart_id)
            .and_then(|id| self.sessions.get(id))
            .cloned();
        let operation = session
            .as_ref()
            .and_then(|s| s.background_operation_id)
            .and_then(|id| self.operations.get(&id))
            .cloned();
        let session_order_id = session.as_ref().and_then(|s| s.order_id);
        Snapshot {
            user: None,
            store: self.stores.get(&cart.web_store_id).cloned(),
            account: self.accounts.get(&cart.account_id).cloned(),
            cart: Some(cart.clone()),
            session,
            operation,
            cart_has_active_operation: self.active_operation.contains_key(&cart_id),
            order: self.session_order(session_order_id),
            has_error_outputs: self.outputs.get(&cart_id).is_some_and(|outputs| {
                outputs
                    .iter()
                    .any(|o| o.level == crate::model::Level::Error && !o.is_dismissed)
            }),
            edited_item: None,
            lines: Vec::new(),
        }
    }

    /// Checks versions and invariants of a commit without applying it.
    fn check(&self, commit: &Commit) -> Result<(), StoreError> {
        fn expect(kind: &str, id: SfId, stored: Option<u64>, new: u64) -> Result<(), StoreError> {
            let ok = match stored {
                None => new == 1,
                Some(v) => v + 1 == new,
            };
            if ok {
                Ok(())
            } else {
                Err(StoreError::Conflict(format!(
                    "{kind} {id} is at version {}, the change expects {}",
                    stored.map_or("none".into(), |v| v.to_string()),
                    new.saturating_sub(1)
                )))
            }
        }
        let changes = &commit.changes;
        for cart in &changes.carts {
            let stored = self.carts.get(&cart.id).map(|c| c.version);
            if stored.is_none() {
                return Err(StoreError::Invariant(format!(
                    "cart {} does not exist",
                    cart.id
                )));
            }
            expect("cart", cart.id, stored, cart.version)?;
        }
        super::check_shape(commit)?;
        for item in &changes.items {
            if self
                .line_cart
                .get(&item.id)
                .is_some_and(|c| *c != item.cart_id)
            {
                return Err(StoreError::Invariant(format!(
                    "line {} belongs to a cart other than {}",
                    item.id, item.cart_id
                )));
            }
        }
        let mut active_session = HashMap::new();
        for session in &changes.sessions {
            let stored = self.sessions.get(&session.id).map(|s| s.version);
            expect("session", session.id, stored, session.version)?;
            let cart = session.web_cart_id;
            let current = active_session
                .entry(cart)
                .or_insert_with(|| self.active_session.get(&cart).copied());
            if session.is_archived && *current == Some(session.id) {
                *current = None;
            }
        }
        for session in changes.sessions.iter().filter(|s| !s.is_archived) {
            let current = active_session
                .get_mut(&session.web_cart_id)
                .expect("seen above");
            match current {
                Some(other) if *other != session.id => {
                    // A concurrent start won the cart's one active session.
                    return Err(StoreError::Conflict(format!(
                        "cart {} already has active session {other}",
                        session.web_cart_id
                    )));
                }
                _ => *current = Some(session.id),
            }
        }
        for order in &changes.orders {
            let stored = self.orders.get(&order.id).map(|o| o.version);
            expect("order", order.id, stored, order.version)?;
        }
        let mut active_operation = HashMap::new();
        for op in &changes.operations {
            let stored = self.operations.get(&op.id).map(|o| o.version);
            expect("operation", op.id, stored, op.version)?;
            let current = active_operation
                .entry(op.cart_id)
                .or_insert_with(|| self.active_operation.get(&op.cart_id).copied());
            if !op.status.is_active() && *current == Some(op.id) {
                *current = None;
            }
        }
        for op in changes.operations.iter().filter(|o| o.status.is_active()) {
            let current = active_operation.get_mut(&op.cart_id).expect("seen above");
            match current {
                Some(other) if *other != op.id => {
                    // A concurrent command won the cart's one active operation.
                    return Err(StoreError::Conflict(format!(
                        "cart {} already has New or Running operation {other}",
                        op.cart_id
                    )));
                }
                _ => *current = Some(op.id),
            }
        }
        Ok(())
    }

    /// Removes and replaces a commit's cart lines, finding each by Id once (a commit may
    /// write every line of a large cart).
    fn write_lines(&mut self, changes: &crate::machine::Changes) {
        let removed: HashSet<SfId> = changes.removed_items.iter().copied().collect();
        for cart in &changes.carts {
            if let Some(lines) = self.items.get_mut(&cart.id) {
                Arc::make_mut(lines).retain(|l| !removed.contains(&l.id));
            }
            for id in &removed {
                if self.line_cart.get(id) == Some(&cart.id) {
                    self.line_cart.remove(id);
                }
            }
        }
        let mut at: HashMap<SfId, HashMap<SfId, usize>> = HashMap::new();
        for item in &changes.items {
            let lines = Arc::make_mut(self.items.entry(item.cart_id).or_default());
            let index = at
                .entry(item.cart_id)
                .or_insert_with(|| lines.iter().enumerate().map(|(i, l)| (l.id, i)).collect());
            match index.get(&item.id) {
                Some(&i) => lines[i] = item.clone(),
                None => {
                    index.insert(item.id, lines.len());
                    self.line_cart.insert(item.id, item.cart_id);
                    lines.push(item.clone());
                }
            }
        }
    }

    fn apply(&mut self, commit: &Commit) {
        let changes = &commit.changes;
        for cart in &changes.carts {
            self.carts.insert(cart.id, cart.clone());
        }
        self.write_lines(changes);
        for session in &changes.sessions {
            self.put_session(session.clone());
        }
        for op in &changes.operations {
            self.put_operation(op.clone());
        }
        for order in &changes.orders {
            self.orders.insert(order.id, order.clone());
        }
        if let Some(cart) = changes.clear_outputs_of {
            self.outputs.remove(&cart);
        }
        for output in &changes.outputs {
            self.outputs
                .entry(output.cart_id)
                .or_default()
                .push(output.clone());
        }
        for entry in &commit.history {
            self.append_history(entry.clone());
        }
        for (holder, children) in crate::store::held_records(changes) {
            self.reindex(holder, children);
        }
    }
}

/// Every record in memory behind one lock: each commit is atomic by construction, and the
/// version checks make it behave like the durable stores under concurrency.
#[derive(Debug, Default)]
pub struct MemoryStore {
    tables: RwLock<Tables>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    /// A store holding a data set, after [`DataSet::validate`].
    pub fn from_dataset(data: DataSet) -> Result<MemoryStore, DataSetError> {
        data.validate()?;
        let held = crate::store::held_in_dataset(&data);
        let mut t = Tables {
            stores: data.stores.into_iter().map(|r| (r.id, r)).collect(),
            accounts: data.accounts.into_iter().map(|r| (r.id, r)).collect(),
            users: data.users.into_iter().map(|r| (r.id, r)).collect(),
            carts: data.carts.into_iter().map(|r| (r.id, r)).collect(),
            ..Tables::default()
        };
        for item in data.items {
            t.line_cart.insert(item.id, item.cart_id);
            Arc::make_mut(t.items.entry(item.cart_id).or_default()).push(item);
        }
        t.stock = data.stock;
        for session in data.sessions {
            t.put_session(session);
        }
        for op in data.operations {
            t.put_operation(op);
        }
        for output in data.validation_outputs {
            t.outputs.entry(output.cart_id).or_default().push(output);
        }
        t.orders = data.orders.into_iter().map(|o| (o.id, o)).collect();
        for entry in data.history {
            t.append_history(entry);
        }
        for (holder, children) in held {
            t.reindex(holder, children);
        }
        Ok(MemoryStore {
            tables: RwLock::new(t),
        })
    }

    /// Every record, in the data-directory format (sorted by ID, so files diff well).
    pub fn to_dataset(&self) -> DataSet {
        let t = self.read();
        fn sorted<T: Clone>(values: impl Iterator<Item = T>, key: impl Fn(&T) -> SfId) -> Vec<T> {
            let mut v: Vec<T> = values.collect();
            v.sort_by_key(|r| key(r));
            v
        }
        let mut history: Vec<HistoryEntry> = t.history.values().flatten().cloned().collect();
        history.sort_by_key(|h| (h.at, h.cart_id));
        DataSet {
            stores: sorted(t.stores.values().cloned(), |r| r.id),
            accounts: sorted(t.accounts.values().cloned(), |r| r.id),
            users: sorted(t.users.values().cloned(), |r| r.id),
            carts: sorted(t.carts.values().cloned(), |r| r.id),
            items: sorted(t.items.values().flat_map(|l| l.iter()).cloned(), |r| r.id),
            stock: t.stock.clone(),
            sessions: sorted(t.sessions.values().cloned(), |r| r.id),
            operations: sorted(t.operations.values().cloned(), |r| r.id),
            validation_outputs: sorted(t.outputs.values().flatten().cloned(), |r| r.id),
            orders: sorted(t.orders.values().cloned(), |r| r.id),
            history,
        }
    }

    /// Stock levels carried by the data set this store was loaded from.
    pub fn stock(&self) -> Vec<StockLevel> {
        self.read().stock.clone()
    }

    fn read(&self) -> RwLockReadGuard<'_, Tables> {
        // A panic while holding the lock cannot leave a half-applied commit: `apply` runs
        // only after `check` passed and does not fail, so a poisoned lock is still sound.
        self.tables.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Tables> {
        self.tables.write().unwrap_or_else(|e| e.into_inner())
    }
}

impl Store for MemoryStore {
    fn user(&self, id: &SfId) -> Result<Option<User>, StoreError> {
        Ok(self.read().users.get(id).cloned())
    }

    fn load(&self, key: LoadKey) -> Result<Snapshot, StoreError> {
        Ok(self.read().snapshot(key))
    }

    /// Reads, decides and applies under one write lock: no commit can come in between.
    fn transact(&self, reads: &Reads, decide: &mut DecideFn<'_>) -> Result<(), StoreError> {
        let mut t = self.write();
        let mut snapshot = t.snapshot(reads.key);
        if reads.lines
            && let Some(cart) = &snapshot.cart
        {
            snapshot.lines = t
                .items
                .get(&cart.id)
                .map(|l| l.to_vec())
                .unwrap_or_default();
        }
        if let Some(user) = &reads.user {
            snapshot.user = t.users.get(user).cloned();
        }
        if let Some(commit) = decide(snapshot)? {
            t.check(&commit)?;
            t.apply(&commit);
        }
        Ok(())
    }

    fn commit(&self, commit: &Commit) -> Result<(), StoreError> {
        let mut t = self.write();
        t.check(commit)?;
        t.apply(commit);
        Ok(())
    }

    fn claimable_operations(&self, limit: usize) -> Result<Vec<SfId>, StoreError> {
        let t = self.read();
        Ok(t.new_operations
            .iter()
            .filter(|(_, id)| !t.is_closed_cart_operation(id))
            .take(limit)
            .map(|(_, id)| *id)
            .collect())
    }

    fn expired_operations(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<SfId>, StoreError> {
        let t = self.read();
        let mut expired: Vec<(DateTime<Utc>, SfId)> = t
            .active_operation
            .values()
            .filter_map(|id| t.operations.get(id))
            .filter(|op| op.status == crate::model::OperationStatus::Running)
            .filter_map(|op| {
                op.expires_at
                    .filter(|end| *end <= now)
                    .map(|end| (end, op.id))
            })
            .collect();
        expired.sort();
        Ok(expired.into_iter().take(limit).map(|(_, id)| id).collect())
    }

    fn cart(&self, id: &SfId) -> Result<Option<WebCart>, StoreError> {
        Ok(self.read().carts.get(id).cloned())
    }

    fn carts_after(&self, after: Option<&SfId>, limit: usize) -> Result<Vec<WebCart>, StoreError> {
        let t = self.read();
        let mut carts: Vec<&WebCart> = t
            .carts
            .values()
            .filter(|c| after.is_none_or(|after| c.id > *after))
            .collect();
        carts.sort_by_key(|c| c.id);
        Ok(carts.into_iter().take(limit).cloned().collect())
    }

    fn cart_items(&self, cart_id: &SfId) -> Result<Vec<CartItem>, StoreError> {
        Ok(self
            .read()
            .items
            .get(cart_id)
            .map(|l| l.to_vec())
            .unwrap_or_default())
    }

    fn cart_items_shared(&self, cart_id: &SfId) -> Result<Arc<Vec<CartItem>>, StoreError> {
        Ok(self.read().items.get(cart_id).cloned().unwrap_or_default())
    }

    fn cart_item(&self, id: &SfId) -> Result<Option<CartItem>, StoreError> {
        let t = self.read();
        let lines = t.line_cart.get(id).and_then(|cart| t.items.get(cart));
        Ok(lines
            .into_iter()
            .flat_map(|l| l.iter())
            .find(|l| l.id == *id)
            .cloned())
    }

    fn validation_output(&self, id: &SfId) -> Result<Option<CartValidationOutput>, StoreError> {
        Ok(self
            .read()
            .outputs
            .values()
            .flatten()
            .find(|o| o.id == *id)
            .cloned())
    }

    fn session(&self, id: &SfId) -> Result<Option<CartCheckoutSession>, StoreError> {
        Ok(self.read().sessions.get(id).cloned())
    }

    fn sessions_of(&self, cart_id: &SfId) -> Result<Vec<CartCheckoutSession>, StoreError> {
        let t = self.read();
        Ok(t.sessions_by_cart
            .get(cart_id)
            .into_iter()
            .flatten()
            .filter_map(|id| t.sessions.get(id).cloned())
            .collect())
    }

    fn operation(&self, id: &SfId) -> Result<Option<BackgroundOperation>, StoreError> {
        Ok(self.read().operations.get(id).cloned())
    }

    fn operations_of(&self, cart_id: &SfId) -> Result<Vec<BackgroundOperation>, StoreError> {
        let t = self.read();
        Ok(t.operations_by_cart
            .get(cart_id)
            .into_iter()
            .flatten()
            .filter_map(|id| t.operations.get(id).cloned())
            .collect())
    }

    fn order(&self, id: &SfId) -> Result<Option<Order>, StoreError> {
        Ok(self.read().orders.get(id).cloned())
    }

    fn validation_outputs(&self, cart_id: &SfId) -> Result<Vec<CartValidationOutput>, StoreError> {
        Ok(self
            .read()
            .outputs
            .get(cart_id)
            .cloned()
            .unwrap_or_default())
    }

    fn history(&self, cart_id: &SfId) -> Result<Vec<HistoryEntry>, StoreError> {
        Ok(self
            .read()
            .history
            .get(cart_id)
            .cloned()
            .unwrap_or_default())
    }

    fn events_after(
        &self,
        after: Option<&EventPosition>,
        limit: usize,
    ) -> Result<Vec<PublishedEvent>, StoreError> {
        let Some(sequence) = EventPosition::sequence_after(after) else {
            return Ok(Vec::new());
        };
        let t = self.read();
        // Position n is log index n - 1, so the first after n is index n.
        let first = usize::try_from(sequence).unwrap_or(usize::MAX);
        let last = first.saturating_add(limit).min(t.log.len());
        Ok((first..last).filter_map(|index| t.event(index)).collect())
    }

    fn last_event(&self) -> Result<Option<EventPosition>, StoreError> {
        let count = self.read().log.len();
        Ok((count > 0).then(|| EventPosition::sequential(count as u64)))
    }

    fn webhook_cursor(&self, hook: &str) -> Result<Option<EventPosition>, StoreError> {
        Ok(self.read().webhook_cursors.get(hook).copied())
    }

    fn advance_webhook(
        &self,
        hook: &str,
        to: Option<&EventPosition>,
        delivery: Option<&Delivery>,
    ) -> Result<(), StoreError> {
        let mut t = self.write();
        if let Some(delivery) = delivery {
            t.deliveries.push(delivery.clone());
        }
        if let Some(&to) = to {
            let cursor = t.webhook_cursors.entry(hook.to_owned()).or_insert(to);
            *cursor = (*cursor).max(to);
        }
        Ok(())
    }

    fn deliveries(&self, hook: &str, limit: usize) -> Result<Vec<Delivery>, StoreError> {
        let t = self.read();
        Ok(t.deliveries
            .iter()
            .rev()
            .filter(|d| d.hook == hook)
            .take(limit)
            .cloned()
            .collect())
    }

    fn begin_keyed(
        &self,
        request: &KeyedRequest,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<KeyState, StoreError> {
        let mut tables = self.write();
        tables.keys.retain(|_, entry| entry.expires_at > now);
        let slot = (request.user, request.key.clone());
        if let Some(entry) = tables.keys.get(&slot) {
            return Ok(entry.state_for(&request.fingerprint));
        }
        tables.keys.insert(
            slot,
            KeyEntry {
                fingerprint: request.fingerprint.clone(),
                expires_at,
                answer: None,
            },
        );
        Ok(KeyState::Reserved)
    }

    fn keep_answer(&self, request: &KeyedRequest, answer: &KeptAnswer) -> Result<(), StoreError> {
        let mut tables = self.write();
        if let Some(entry) = tables.keys.get_mut(&(request.user, request.key.clone()))
            && entry.fingerprint == request.fingerprint
        {
            entry.answer = Some(answer.clone());
        }
        Ok(())
    }

    fn release_key(&self, request: &KeyedRequest) -> Result<(), StoreError> {
        let mut tables = self.write();
        let slot = (request.user, request.key.clone());
        if tables
            .keys
            .get(&slot)
            .is_some_and(|e| e.answer.is_none() && e.fingerprint == request.fingerprint)
        {
            tables.keys.remove(&slot);
        }
        Ok(())
    }

    fn operation_counts(&self) -> Result<super::OperationCounts, StoreError> {
        let mut counts = super::OperationCounts::default();
        for op in self.read().operations.values() {
            counts.add(op.status.as_str(), 1);
        }
        Ok(counts)
    }

    fn web_stores(&self) -> Result<Vec<WebStore>, StoreError> {
        let mut stores: Vec<WebStore> = self.read().stores.values().cloned().collect();
        stores.sort_by_key(|s| s.id);
        Ok(stores)
    }

    fn owner_of(&self, id: &SfId) -> Result<Option<SfId>, StoreError> {
        Ok(self.read().owners.get(id).copied())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::Changes;
    use crate::sample::{self, SampleCart};

    #[test]
    fn lines_handed_out_shared_stay_as_they_were_when_a_commit_rewrites_them() {
        let store = MemoryStore::from_dataset(sample::dataset()).expect("the sample is valid");
        let cart_id = SampleCart::InStock.id();
        let held = store.cart_items_shared(&cart_id).unwrap();
        let before = store.cart_items(&cart_id).unwrap();
        assert!(
            before.len() >= 2,
            "the test removes one line and keeps another"
        );
        let mut line = held[0].clone();
        line.quantity += rust_decimal::Decimal::ONE;
        let cart = store.cart(&cart_id).unwrap().expect("the sample cart");
        store.write().write_lines(&Changes {
            carts: vec![cart],
            items: vec![line.clone()],
            removed_items: vec![held[1].id],
            ..Changes::default()
        });
        assert_eq!(*held, before, "the held lines changed");
        let now = store.cart_items(&cart_id).unwrap();
        assert_eq!(now.len(), held.len() - 1);
        assert_eq!(now[0], line);
        assert!(now.iter().all(|l| l.id != held[1].id));
    }
}
