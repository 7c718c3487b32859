//! What must hold of the store after every step, whatever the interleaving and the faults.

use std::collections::BTreeMap;

use cartflow::Store;
use cartflow::machine::{Action, Event, amounts};
use cartflow::model::{
    BackgroundOperation, CartCheckoutSession, CartItem, CartStatus, OperationStatus, OrderStatus,
    SfId, WebCart,
};
use cartflow::store::HistoryEntry;

use super::store::Acked;

/// Every invariant over `carts`, and the durability of every acknowledged commit.
pub fn check(store: &dyn Store, carts: &[SfId], acked: &[Acked]) -> Result<(), String> {
    for cart in carts {
        check_cart(store, *cart).map_err(|e| format!("cart {cart}: {e}"))?;
    }
    durable(store, acked)
}

/// The event log is the history in commit order: positions only grow, and each cart's
/// events are its history, in its order, none missing and none added.
fn events_match_history(store: &dyn Store, carts: &[SfId]) -> Result<(), String> {
    let mut by_cart: BTreeMap<SfId, Vec<HistoryEntry>> = BTreeMap::new();
    let mut after = None;
    loop {
        let batch = read(store.events_after(after.as_ref(), 500))?;
        let Some(last) = batch.last() else {
            break;
        };
        if after.is_some_and(|a| batch[0].position <= a)
            || batch.windows(2).any(|w| w[0].position >= w[1].position)
        {
            return Err(format!("event positions went back after {after:?}"));
        }
        after = Some(last.position);
        for event in batch {
            by_cart
                .entry(event.entry.cart_id)
                .or_default()
                .push(event.entry);
        }
    }
    for cart in carts {
        let history = read(store.history(cart))?;
        if by_cart.remove(cart).unwrap_or_default() != history {
            return Err(format!("cart {cart}'s events are not its history"));
        }
    }
    match by_cart.keys().next() {
        Some(other) => Err(format!(
            "events of cart {other}, which the run does not have"
        )),
        None => Ok(()),
    }
}

/// After the drain: every operation ended (and, by [`check`], no session waits for one),
/// and the event log is the history. The log only grows, so an event missed, added or out
/// of order at any step is still so at the end.
pub fn check_drained(store: &dyn Store, carts: &[SfId]) -> Result<(), String> {
    events_match_history(store, carts)?;
    for cart in carts {
        let live: Vec<_> = read(store.operations_of(cart))?
            .into_iter()
            .filter(is_live)
            .map(|op| format!("{} {:?}", op.id, op.status))
            .collect();
        if !live.is_empty() {
            return Err(format!("cart {cart}'s operations never ended: {live:?}"));
        }
    }
    Ok(())
}

/// What the run left behind, counted: activated orders, operations by outcome.
pub fn census(store: &dyn Store, carts: &[SfId]) -> Vec<(&'static str, u64)> {
    let mut counts: BTreeMap<&'static str, u64> = BTreeMap::new();
    for cart in carts {
        for op in store.operations_of(cart).unwrap_or_default() {
            let what = match op.status {
                OperationStatus::Complete => "operations completed",
                OperationStatus::Error => "operations failed",
                _ => "operations canceled",
            };
            *counts.entry(what).or_default() += 1;
        }
        for session in store.sessions_of(cart).unwrap_or_default() {
            let order = session
                .order_id
                .and_then(|id| store.order(&id).ok().flatten());
            if order.is_some_and(|o| o.status == OrderStatus::Activated) {
                *counts.entry("orders activated").or_default() += 1;
            }
        }
    }
    counts.into_iter().collect()
}

/// Whether any operation of `carts` is New or Running.
pub fn any_live(store: &dyn Store, carts: &[SfId]) -> bool {
    carts.iter().any(|cart| {
        store
            .operations_of(cart)
            .unwrap_or_default()
            .iter()
            .any(is_live)
    })
}

/// The carts seen Closed, as first seen: nothing may change a cart after its checkout
/// completed.
#[derive(Default)]
pub struct Closed(BTreeMap<SfId, (WebCart, Vec<CartItem>)>);

impl Closed {
    /// Remembers the carts that are Closed now, and fails if one seen Closed before changed.
    pub fn check(&mut self, store: &dyn Store, carts: &[SfId]) -> Result<(), String> {
        for id in carts {
            let Some(cart) = read(store.cart(id))? else {
                continue;
            };
            if cart.status != CartStatus::Closed {
                if self.0.contains_key(id) {
                    return Err(format!("cart {id} was Closed and is {:?} now", cart.status));
                }
                continue;
            }
            let now = (cart, read(store.cart_items(id))?);
            let first = self.0.entry(*id).or_insert_with(|| now.clone());
            if *first != now {
                return Err(format!("cart {id} changed after it was Closed"));
            }
        }
        Ok(())
    }
}

fn read<T>(answer: Result<T, cartflow::StoreError>) -> Result<T, String> {
    answer.map_err(|e| format!("the store failed a read: {e}"))
}

fn is_live(op: &BackgroundOperation) -> bool {
    matches!(op.status, OperationStatus::New | OperationStatus::Running)
}

fn check_cart(store: &dyn Store, id: SfId) -> Result<(), String> {
    let cart = read(store.cart(&id))?.ok_or("it vanished")?;
    let lines = read(store.cart_items(&id))?;
    let sessions = read(store.sessions_of(&id))?;
    let operations = read(store.operations_of(&id))?;
    let active = sessions.iter().filter(|s| !s.is_archived).count();
    if active > 1 {
        return Err(format!("{active} active sessions"));
    }
    let live = operations.iter().filter(|op| is_live(op)).count();
    if live > 1 {
        return Err(format!("{live} New or Running operations"));
    }
    let mut totalled = cart.clone();
    amounts::total_cart(&mut totalled, &lines).map_err(|e| e.to_string())?;
    if totalled != cart {
        return Err(format!(
            "its totals are not its lines': {cart:?} over {lines:?}"
        ));
    }
    check_orders(store, &sessions)?;
    let history = read(store.history(&id))?;
    check_processing(&sessions, &operations, &history)?;
    check_history(&history)?;
    check_held(store, id, cart.child_ids())?;
    for line in &lines {
        check_held(store, line.id, line.child_ids())?;
    }
    Ok(())
}

/// Each order is paid for exactly its total, and a cart is ordered at most once.
fn check_orders(store: &dyn Store, sessions: &[CartCheckoutSession]) -> Result<(), String> {
    let mut activated = 0;
    for order_id in sessions.iter().filter_map(|s| s.order_id) {
        let order = read(store.order(&order_id))?.ok_or(format!("order {order_id} vanished"))?;
        if order.payment_authorization_id.is_some()
            && order.authorized_amount != order.grand_total_amount
        {
            return Err(format!(
                "order {order_id} is authorised for {:?} of its total {:?}",
                order.authorized_amount, order.grand_total_amount
            ));
        }
        if order.status == OrderStatus::Activated {
            activated += 1;
            if order.payment_authorization_id.is_none() {
                return Err(format!("order {order_id} was activated unpaid"));
            }
        }
        check_held(store, order.id, order.child_ids())?;
    }
    if activated > 1 {
        return Err(format!("{activated} activated orders"));
    }
    Ok(())
}

/// A processing session waits for an operation that is still to end, or for the async
/// action its lock asked for (its last move is the lock): never for one that ended.
fn check_processing(
    sessions: &[CartCheckoutSession],
    operations: &[BackgroundOperation],
    history: &[HistoryEntry],
) -> Result<(), String> {
    let lock = Event::Action(Action::UpdateCheckoutSessionState);
    for session in sessions
        .iter()
        .filter(|s| s.is_processing && !s.is_archived)
    {
        let op = session
            .background_operation_id
            .and_then(|id| operations.iter().find(|op| op.id == id));
        if op.is_some_and(is_live) {
            continue;
        }
        let last = history.iter().rev().find(|e| e.record == session.id);
        if last.is_none_or(|e| e.event != lock) {
            return Err(format!(
                "session {} is processing with no operation to wait for (its operation is \
                 {:?}, its last move {:?})",
                session.id,
                op.map(|op| op.status),
                last.map(|e| (e.event, &e.from, &e.to))
            ));
        }
    }
    Ok(())
}

/// Each record's moves form one chain: every move starts where the one before it ended (a
/// move decided on a stale read breaks it).
fn check_history(history: &[HistoryEntry]) -> Result<(), String> {
    let mut last: BTreeMap<SfId, &HistoryEntry> = BTreeMap::new();
    for entry in history {
        if let Some(before) = last.insert(entry.record, entry)
            && before.to != entry.from
        {
            let moves: Vec<String> = history
                .iter()
                .filter(|e| e.record == entry.record)
                .map(|e| format!("{} {} -> {} at {}", e.event, e.from, e.to, e.at))
                .collect();
            return Err(format!(
                "{:?} {} moved {:?} -> {:?} ({}), but its last move ended at {:?} ({}); \
                     its moves: {moves:#?}",
                entry.machine,
                entry.record,
                entry.from,
                entry.to,
                entry.event,
                before.to,
                before.event
            ));
        }
    }
    Ok(())
}

/// The index of held records names `holder` for each of its records.
fn check_held(store: &dyn Store, holder: SfId, held: Vec<SfId>) -> Result<(), String> {
    for id in held {
        let owner = read(store.owner_of(&id))?;
        if owner != Some(holder) {
            return Err(format!(
                "{id} is held by {holder}, the index says {owner:?}"
            ));
        }
    }
    Ok(())
}

/// Every version a commit acknowledged is still there, or a later one.
fn durable(store: &dyn Store, acked: &[Acked]) -> Result<(), String> {
    let mut newest: BTreeMap<(&str, SfId), u64> = BTreeMap::new();
    for a in acked {
        let v = newest.entry((a.kind, a.id)).or_default();
        *v = (*v).max(a.version);
    }
    for ((kind, id), version) in newest {
        let stored = match kind {
            "cart" => read(store.cart(&id))?.map(|r| r.version),
            "session" => read(store.session(&id))?.map(|r| r.version),
            "operation" => read(store.operation(&id))?.map(|r| r.version),
            _ => read(store.order(&id))?.map(|r| r.version),
        };
        if stored.is_none_or(|s| s < version) {
            return Err(format!(
                "{kind} {id} was acknowledged at version {version}; the store has {stored:?}"
            ));
        }
    }
    Ok(())
}
