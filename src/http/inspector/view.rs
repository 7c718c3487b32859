//! What the inspector's JSON views read: every cart (up to [`SCAN_LIMIT`]), its sessions and
//! its operations, put on the nodes of the transition table's drawing.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::diagram::Layout;
use crate::engine::Engine;
use crate::error::StoreError;
use crate::machine::{Machine, Node, operation_node, session_node};
use crate::model::{BackgroundOperation, CartCheckoutSession, OperationStatus, SfId, WebCart};
use crate::store::{HistoryEntry, Store};

use super::super::query::first_carts;
use super::super::records::to_value;

/// The most carts one view reads. Past it a view says `"truncated": true` and covers the
/// first carts in Id order only.
pub const SCAN_LIMIT: usize = super::super::query::MAX_SCANNED_CARTS;

/// The most rows a list answers when the request does not say (`limit`).
pub const DEFAULT_ROWS: usize = 100;

/// The most rows a list answers whatever the request says.
pub const MAX_ROWS: usize = 1_000;

/// How long an active operation runs before the stuck list shows it when the request does
/// not say (`older_than`, in seconds).
pub const DEFAULT_STUCK_SECONDS: u64 = 60;

/// Every cart in Id order, at most [`SCAN_LIMIT`] of them, and whether there were more.
fn scan(store: &dyn Store) -> Result<(Vec<WebCart>, bool), StoreError> {
    first_carts(store, SCAN_LIMIT)
}

/// The operation a session waits for, among its cart's.
fn current_operation<'a>(
    session: &CartCheckoutSession,
    operations: &'a [BackgroundOperation],
) -> Option<&'a BackgroundOperation> {
    let id = session.background_operation_id?;
    operations.iter().find(|op| op.id == id)
}

/// The node `session` is on, with its current operation among `operations`.
fn node_of(
    engine: &Engine,
    session: &CartCheckoutSession,
    operations: &[BackgroundOperation],
) -> Node {
    let op = current_operation(session, operations);
    Node::Session(session_node(engine.table(), Some(session), op))
}

/// `GET /inspector/api/table`: the drawing of the engine's table.
pub(crate) fn table(engine: &Engine) -> Value {
    Layout::of(engine.table()).to_json()
}

/// `GET /inspector/api/counts`: how many carts, sessions and operations are on each drawn
/// node now.
pub(crate) fn counts(engine: &Engine) -> Result<Value, StoreError> {
    let store = engine.store().as_ref();
    let layout = Layout::of(engine.table());
    let (carts, truncated) = scan(store)?;
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    let mut count = |node: Node| *counts.entry(layout.id_of(node)).or_default() += 1;
    for cart in &carts {
        count(Node::Cart(cart.status));
        let operations = store.operations_of(&cart.id)?;
        for op in &operations {
            count(Node::Operation(operation_node(Some(op))));
        }
        for session in store.sessions_of(&cart.id)? {
            count(node_of(engine, &session, &operations));
        }
    }
    Ok(json!({
        "at": engine.now(),
        "carts": carts.len(),
        "truncated": truncated,
        "counts": counts,
    }))
}

/// Which carts `GET /inspector/api/carts` lists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CartFilter {
    /// The cart's status (`Active`, `Checkout`, `Closed`, ...).
    pub status: Option<String>,
    /// The cart's store.
    pub store: Option<SfId>,
    /// The most rows answered.
    pub limit: usize,
}

/// `GET /inspector/api/carts`: the carts `filter` picks, in Id order, each with its number
/// of sessions and its latest session's node.
pub(crate) fn carts(engine: &Engine, filter: &CartFilter) -> Result<Value, StoreError> {
    let store = engine.store().as_ref();
    let (carts, truncated) = scan(store)?;
    let picked = carts.iter().filter(|c| {
        filter.store.is_none_or(|s| s == c.web_store_id)
            && filter
                .status
                .as_ref()
                .is_none_or(|want| want == c.status.as_str())
    });
    let mut rows = Vec::new();
    let mut matched = 0usize;
    for cart in picked {
        matched += 1;
        if rows.len() >= filter.limit {
            continue;
        }
        let sessions = store.sessions_of(&cart.id)?;
        let latest = match sessions.iter().max_by_key(|s| s.created_date) {
            Some(session) => {
                let operations = store.operations_of(&cart.id)?;
                let node = node_of(engine, session, &operations);
                Some(json!({"id": session.id, "node": node.to_string()}))
            }
            None => None,
        };
        rows.push(json!({
            "id": cart.id,
            "storeId": cart.web_store_id,
            "accountId": cart.account_id,
            "ownerId": cart.owner_id,
            "status": cart.status,
            "sessions": sessions.len(),
            "latestSession": latest,
        }));
    }
    Ok(json!({"matched": matched, "truncated": truncated, "carts": rows}))
}

/// Which sessions `GET /inspector/api/sessions` lists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionFilter {
    /// The session's State (`Inventory`) or its node (`Inventory (running)`, `Archived`).
    pub state: Option<String>,
    /// The cart's store.
    pub store: Option<SfId>,
    /// Only sessions in error, or whose current operation ended in Error.
    pub failed: bool,
    /// Only sessions processing for at least this many seconds (since their last move).
    pub processing_over: Option<u64>,
    /// The most rows answered.
    pub limit: usize,
}

/// `GET /inspector/api/sessions`: the sessions `filter` picks, in cart Id order.
pub(crate) fn sessions(engine: &Engine, filter: &SessionFilter) -> Result<Value, StoreError> {
    let store = engine.store().as_ref();
    let now = engine.now();
    let (carts, truncated) = scan(store)?;
    let mut rows = Vec::new();
    let mut matched = 0usize;
    for cart in carts
        .iter()
        .filter(|c| filter.store.is_none_or(|s| s == c.web_store_id))
    {
        let operations = store.operations_of(&cart.id)?;
        let mut history: Option<Vec<HistoryEntry>> = None;
        for session in store.sessions_of(&cart.id)? {
            let op = current_operation(&session, &operations);
            let node = node_of(engine, &session, &operations).to_string();
            let state = session.state.map(|s| s.as_str().to_owned());
            if filter
                .state
                .as_ref()
                .is_some_and(|want| Some(want) != state.as_ref() && *want != node)
            {
                continue;
            }
            let failed = session.is_error || op.is_some_and(|o| o.status == OperationStatus::Error);
            if filter.failed && !failed {
                continue;
            }
            let since = if session.is_processing {
                let entries = match &mut history {
                    Some(entries) => entries,
                    None => history.insert(store.history(&cart.id)?),
                };
                last_move_of(entries, &session.id)
            } else {
                None
            };
            let seconds = since.map(|at| (now - at).num_seconds().max(0));
            if let Some(over) = filter.processing_over {
                let long_enough = session.is_processing
                    && seconds.is_none_or(|s| u64::try_from(s).unwrap_or(0) >= over);
                if !long_enough {
                    continue;
                }
            }
            matched += 1;
            if rows.len() < filter.limit {
                rows.push(json!({
                    "id": session.id,
                    "cartId": cart.id,
                    "storeId": cart.web_store_id,
                    "ownerId": cart.owner_id,
                    "cartStatus": cart.status,
                    "state": state,
                    "node": node,
                    "isProcessing": session.is_processing,
                    "isError": session.is_error,
                    "isArchived": session.is_archived,
                    "failed": failed,
                    "processingSince": since,
                    "processingSeconds": seconds,
                    "operation": op.map(|o| json!({"id": o.id, "name": o.name, "status": o.status})),
                }));
            }
        }
    }
    Ok(json!({"matched": matched, "truncated": truncated, "sessions": rows}))
}

/// When `record` last moved, by the history.
fn last_move_of(history: &[HistoryEntry], record: &SfId) -> Option<DateTime<Utc>> {
    history
        .iter()
        .filter(|e| e.record == *record)
        .map(|e| e.at)
        .max()
}

/// Which operations `GET /inspector/api/operations` lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperationFilter {
    /// Active (New or Running) for at least this many seconds since submitted, or whose
    /// lease ran out without a sweep yet.
    Stuck {
        /// Seconds since submitted.
        older_than: u64,
    },
    /// Ended in Error.
    Failed,
}

impl OperationFilter {
    /// Whether `op` is one this filter lists at `now`.
    fn picks(self, op: &BackgroundOperation, now: DateTime<Utc>) -> bool {
        match self {
            OperationFilter::Failed => op.status == OperationStatus::Error,
            OperationFilter::Stuck { older_than } => {
                let age = u64::try_from((now - op.submitted_at).num_seconds()).unwrap_or(0);
                op.status.is_active() && (age >= older_than || lease_ended(op, now))
            }
        }
    }
}

/// Whether `op`'s claim has a lease that ran out at `now`.
fn lease_ended(op: &BackgroundOperation, now: DateTime<Utc>) -> bool {
    op.status == OperationStatus::Running && op.expires_at.is_some_and(|end| end <= now)
}

/// `GET /inspector/api/operations`: the operations `filter` picks, each with its attempts,
/// its lease and the validation outputs it wrote.
pub(crate) fn operations(
    engine: &Engine,
    filter: OperationFilter,
    limit: usize,
) -> Result<Value, StoreError> {
    let store = engine.store().as_ref();
    let now = engine.now();
    let (carts, truncated) = scan(store)?;
    let mut rows = Vec::new();
    let mut matched = 0usize;
    for cart in &carts {
        let picked: Vec<BackgroundOperation> = store
            .operations_of(&cart.id)?
            .into_iter()
            .filter(|op| filter.picks(op, now))
            .collect();
        if picked.is_empty() {
            continue;
        }
        let outputs = store.validation_outputs(&cart.id)?;
        for op in picked {
            matched += 1;
            if rows.len() >= limit {
                continue;
            }
            let written: Vec<Value> = outputs
                .iter()
                .filter(|o| o.background_operation_id == Some(op.id))
                .map(to_value)
                .collect();
            rows.push(json!({
                "id": op.id,
                "name": op.name,
                "cartId": op.cart_id,
                "storeId": cart.web_store_id,
                "sessionId": op.checkout_session_id,
                "status": op.status,
                "error": op.error,
                "attempt": op.attempt,
                "retryLimit": op.retry_limit,
                "timeoutMs": op.timeout_ms,
                "submittedAt": op.submitted_at,
                "startedAt": op.started_at,
                "finishedAt": op.finished_at,
                "leaseEndsAt": op.expires_at,
                "leaseEnded": lease_ended(&op, now),
                "validationOutputs": written,
            }));
        }
    }
    Ok(json!({"matched": matched, "truncated": truncated, "operations": rows}))
}

/// `GET /inspector/api/sessions/{id}`: one session beside its records and its timeline;
/// `None` when there is no such session.
pub(crate) fn session(engine: &Engine, id: &SfId) -> Result<Option<Value>, StoreError> {
    let store = engine.store().as_ref();
    let Some(session) = store.session(id)? else {
        return Ok(None);
    };
    let cart_id = session.web_cart_id;
    let operations: Vec<BackgroundOperation> = store
        .operations_of(&cart_id)?
        .into_iter()
        .filter(|op| op.checkout_session_id == session.id)
        .collect();
    let timeline = timeline(&store.history(&cart_id)?, &session, &operations);
    let node = node_of(engine, &session, &operations).to_string();
    let order = match session.order_id {
        Some(order_id) => store.order(&order_id)?.map(|o| to_value(&o)),
        None => None,
    };
    Ok(Some(json!({
        "session": to_value(&session),
        "node": node,
        "cart": store.cart(&cart_id)?.map(|c| c.shown()),
        "operations": operations.iter().map(to_value).collect::<Vec<_>>(),
        "validationOutputs": store.validation_outputs(&cart_id)?.iter().map(to_value).collect::<Vec<_>>(),
        "order": order,
        "timeline": timeline,
    })))
}

/// The moves of `session`: its own, its operations', and its cart's from the session's first
/// move to its last, in commit order.
fn timeline(
    history: &[HistoryEntry],
    session: &CartCheckoutSession,
    operations: &[BackgroundOperation],
) -> Vec<Value> {
    let own =
        |e: &HistoryEntry| e.record == session.id || operations.iter().any(|op| op.id == e.record);
    let first = history.iter().position(own);
    let last = history.iter().rposition(own);
    let (Some(first), Some(last)) = (first, last) else {
        return Vec::new();
    };
    history[first..=last]
        .iter()
        .filter(|e| own(e) || e.machine == Machine::Cart)
        .map(|e| {
            json!({
                "at": e.at,
                "actor": e.actor,
                "event": e.event.label(),
                "machine": e.machine,
                "record": e.record,
                "from": e.from,
                "to": e.to,
            })
        })
        .collect()
}
