//! The ratio benchmark: each store against its raw ceiling on the same kind of connection, in
//! one process and one run, written to `target/cartflow-ratios.json` for scripts (the keys
//! and their definitions are in `docs/performance.md`) with a short summary on stdout.
//!
//! Run with `cargo bench --bench ratios`. Without `--bench` (as `cargo test --benches` runs
//! it) every figure is measured once on tiny budgets and the JSON goes to a temporary file: a
//! smoke test that every measurement still runs and the file still has its keys.
//!
//! How a figure is measured (no criterion: a plain timed loop). A *batch* prepares its work
//! outside the timing (carts walked to the wanted stage on an in-memory store and imported,
//! a fresh engine) and then times only the work itself. One warm-up batch is thrown away;
//! then [`RUNS`] runs each time batches until their timed total reaches the figure's budget;
//! a run's rate is its units over its timed total, and the figure is the median run. Times per
//! unit (`decide_ns`, the `_us` figures) are the inverse of that median rate.
//!
//! PostgreSQL is the test harness's throw-away cluster started with fsync on
//! ([`support::start_with_fsync`]), or the server `CARTFLOW_TEST_DATABASE_URL` names (its own
//! settings, printed); without either the PostgreSQL keys are left out, with a line saying so.

mod common;

use common::{
    DurableStore, PlainPostgres, PlainSqlite, Recorder, Stage, WORKER_CARTS, WorkerSpans,
    bulk_world, buyer, check_out, engine_on, invoke_inventory, merge, next_carts, prepared,
    prepared_recording, support, worker_run_spans,
};

use std::collections::BTreeSet;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use cartflow::ids::SequentialIds;
use cartflow::integrations::Integrations;
use cartflow::machine::{
    Action, Changes, Command, DecideContext, Decision, Event, IdSource, Machine, Move, Node,
    OperationNode, OperationSettings, Output, Phase, ProviderAction, SessionNode, Snapshot,
    TransitionTable, decide,
};
use cartflow::model::{
    Access, BackgroundOperation, CartCheckoutSession, CartStatus, KeyPrefix, OperationStatus,
    OrderStatus, Permission, SessionState, SfId, WebCart,
};
use cartflow::sample;
use cartflow::store::{Commit, DataSet, Durability, LoadKey};
use cartflow::{Engine, MemoryStore, Store};
use chrono::{SecondsFormat, Utc};
use postgres::types::Json;
use rusqlite::TransactionBehavior;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use tempfile::TempDir;

/// Timed runs per figure; the figure is their median.
const RUNS: usize = 3;

/// Cart sizes of `lines.checkout_us_by_lines`.
const CHECKOUT_LINES: [u64; 3] = [1, 100, 2_000];

/// How much measuring a run does: the full benchmark, or the smoke test.
#[derive(Debug, Clone, Copy)]
struct Plan {
    /// Timed runs per figure.
    runs: usize,
    /// Whether to throw a warm-up batch away first.
    warm_up: bool,
    /// Budgets are multiplied by this (0: one batch per run).
    budget_scale: u32,
    /// Carts per worker run.
    worker_carts: u64,
}

impl Plan {
    const BENCH: Plan = Plan {
        runs: RUNS,
        warm_up: true,
        budget_scale: 1,
        worker_carts: WORKER_CARTS,
    };
    const SMOKE: Plan = Plan {
        runs: 1,
        warm_up: false,
        budget_scale: 0,
        worker_carts: 10,
    };

    /// The median rate (units per second) of this plan's runs of `batch`, each run timing
    /// batches until `budget_ms` of timed work.
    fn rate(&self, budget_ms: u64, mut batch: impl FnMut() -> Timed) -> f64 {
        self.rates_side_by_side(&mut [(budget_ms, &mut batch)])[0]
    }

    /// [`Plan::rate`] of several figures whose runs take turns (the first figure's run, the
    /// second's, ..., then the first's again), so that a drift of the machine (a disk whose
    /// flushes slow down, a neighbour starting) falls on all of them, not on the one measured
    /// last: a ratio of two of them is then measured side by side.
    fn rates_side_by_side(&self, figures: &mut [(u64, &mut dyn FnMut() -> Timed)]) -> Vec<f64> {
        if self.warm_up {
            figures.iter_mut().for_each(|(_, batch)| {
                batch();
            });
        }
        let mut rates = vec![Vec::new(); figures.len()];
        for _ in 0..self.runs {
            for (figure, (budget_ms, batch)) in figures.iter_mut().enumerate() {
                let budget = Duration::from_millis(*budget_ms) * self.budget_scale;
                rates[figure].push(run_rate(budget, batch));
            }
        }
        rates.iter_mut().map(|runs| median(runs)).collect()
    }
}

/// One run: batches until `budget` of timed work, and their units per second.
fn run_rate(budget: Duration, batch: &mut dyn FnMut() -> Timed) -> f64 {
    let (mut time, mut units) = (Duration::ZERO, 0);
    loop {
        let timed = batch();
        time += timed.elapsed;
        units += timed.units;
        if time >= budget {
            break;
        }
    }
    units as f64 / time.as_secs_f64().max(1e-9)
}

/// The timed part of one batch.
struct Timed {
    elapsed: Duration,
    units: u64,
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// `units` of work done in the time `work` takes.
fn timed(units: u64, work: impl FnOnce()) -> Timed {
    let started = Instant::now();
    work();
    Timed {
        elapsed: started.elapsed(),
        units,
    }
}

/// Rounded for the file: figures are noisy well before their third decimal.
fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// The rows one `checkCartInventoryAction` commit writes, serialized as the stores store
/// them: the session update (guarded by its old version), the new operation, the history.
struct InventoryRows {
    session_id: String,
    session_version: i64,
    session_archived: bool,
    session: Body,
    operation_id: String,
    operation_cart: String,
    operation_status: &'static str,
    operation_submitted: chrono::DateTime<Utc>,
    operation_expires: Option<chrono::DateTime<Utc>>,
    operation: Body,
    history: Vec<(String, Body)>,
}

impl InventoryRows {
    /// The rows of `commit`; panics when the action writes anything else, since the raw
    /// transaction would then no longer write what the store does.
    fn of(commit: &Commit) -> InventoryRows {
        let Changes {
            carts,
            sessions,
            operations,
            items,
            removed_items,
            orders,
            clear_outputs_of,
            outputs,
        } = &commit.changes;
        assert!(
            carts.is_empty()
                && items.is_empty()
                && removed_items.is_empty()
                && orders.is_empty()
                && clear_outputs_of.is_none()
                && outputs.is_empty()
                && sessions.len() == 1
                && operations.len() == 1
                && operations[0].version == 1,
            "checkCartInventoryAction now writes more than a session update, an operation \
             insert and history: the raw transaction needs those rows too"
        );
        let (session, operation) = (&sessions[0], &operations[0]);
        InventoryRows {
            session_id: session.id.to_string(),
            session_version: session.version as i64,
            session_archived: session.is_archived,
            session: Body::of(session),
            operation_id: operation.id.to_string(),
            operation_cart: operation.cart_id.to_string(),
            operation_status: operation.status.as_str(),
            operation_submitted: operation.submitted_at,
            operation_expires: operation.expires_at,
            operation: Body::of(operation),
            history: commit
                .history
                .iter()
                .map(|h| (h.cart_id.to_string(), Body::of(h)))
                .collect(),
        }
    }
}

/// A record serialized before the timing: as JSON text for SQLite, as a JSON value that the
/// `postgres` client encodes (as it does the store's records) for PostgreSQL.
struct Body {
    value: Value,
    text: String,
}

impl Body {
    fn of<T: serde::Serialize>(record: &T) -> Body {
        let value = serde_json::to_value(record).expect("a record serializes");
        Body {
            text: value.to_string(),
            value,
        }
    }
}

/// A raw connection of the same kind and settings as a store's.
trait Raw {
    /// Writes `rows` with prepared statements in one transaction.
    fn inventory_rows(&mut self, rows: &InventoryRows);
    /// The plain ceiling: one single-row UPDATE (session row `n % PLAIN_ROWS`) and one INSERT
    /// (a history row) in one transaction, on tables of their own.
    fn update_insert(&mut self, n: u64);
}

/// SQLite through rusqlite, as the store connects: WAL, the same `synchronous`, a busy
/// timeout, `BEGIN IMMEDIATE`, statements from the connection's cache.
struct RawSqlite {
    plain: PlainSqlite,
}

impl RawSqlite {
    /// A connection to `path`, a database the store's own schema made; the plain tables are
    /// added to it.
    fn open(path: &Path, durability: Durability, rows: &InventoryRows) -> RawSqlite {
        RawSqlite {
            plain: PlainSqlite::open(
                path,
                durability,
                rows.session.text.clone(),
                rows.history[0].1.text.clone(),
            ),
        }
    }
}

fn sqlite_time(t: &chrono::DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

impl Raw for RawSqlite {
    fn inventory_rows(&mut self, rows: &InventoryRows) {
        let tx = self
            .plain
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .expect("a transaction");
        let updated = tx
            .prepare_cached(
                "UPDATE sessions SET version = ?1, is_archived = ?2, body = ?3
                 WHERE id = ?4 AND version = ?5",
            )
            .and_then(|mut s| {
                s.execute(rusqlite::params![
                    rows.session_version,
                    rows.session_archived,
                    rows.session.text,
                    rows.session_id,
                    rows.session_version - 1
                ])
            })
            .expect("the session update");
        assert_eq!(
            updated, 1,
            "the session row is at the version the commit expects"
        );
        tx.prepare_cached(
            "INSERT INTO operations (id, cart_id, version, status, submitted_at, expires_at, body)
             VALUES (?1, ?2, 1, ?3, ?4, ?5, ?6)",
        )
        .and_then(|mut s| {
            s.execute(rusqlite::params![
                rows.operation_id,
                rows.operation_cart,
                rows.operation_status,
                sqlite_time(&rows.operation_submitted),
                rows.operation_expires.as_ref().map(sqlite_time),
                rows.operation.text
            ])
        })
        .expect("the operation insert");
        let mut history = tx
            .prepare_cached("INSERT INTO history (cart_id, body) VALUES (?1, ?2)")
            .expect("the history insert prepares");
        for (cart, body) in &rows.history {
            history
                .execute(rusqlite::params![cart, body.text])
                .expect("a history insert");
        }
        drop(history);
        tx.commit().expect("the commit");
    }

    fn update_insert(&mut self, n: u64) {
        self.plain.update_insert(n);
    }
}

/// PostgreSQL through the `postgres` client the store uses, READ COMMITTED as the store's
/// commits, statements prepared once.
struct RawPostgres {
    session_update: postgres::Statement,
    operation_insert: postgres::Statement,
    history_insert: postgres::Statement,
    plain: PlainPostgres,
}

impl RawPostgres {
    /// A connection to `db`, a database the store's own schema made; the plain tables are
    /// added to it.
    fn open(db: &support::TestDb, rows: &InventoryRows) -> RawPostgres {
        let mut plain = PlainPostgres::open(
            db,
            rows.session.value.clone(),
            rows.history[0].1.value.clone(),
        );
        let client = &mut plain.client;
        let mut prepare = |sql: &str| client.prepare(sql).expect("a statement prepares");
        let session_update = prepare(
            "UPDATE sessions SET version = $1, is_archived = $2, body = $3
             WHERE id = $4 AND version = $5",
        );
        let operation_insert = prepare(
            "INSERT INTO operations (id, cart_id, version, status, submitted_at, expires_at, body)
             VALUES ($1, $2, 1, $3, $4, $5, $6)",
        );
        let history_insert = prepare("INSERT INTO history (cart_id, body) VALUES ($1, $2)");
        RawPostgres {
            session_update,
            operation_insert,
            history_insert,
            plain,
        }
    }
}

impl Raw for RawPostgres {
    fn inventory_rows(&mut self, rows: &InventoryRows) {
        let mut tx = self.plain.client.transaction().expect("a transaction");
        let updated = tx
            .execute(
                &self.session_update,
                &[
                    &rows.session_version,
                    &rows.session_archived,
                    &Json(&rows.session.value),
                    &rows.session_id,
                    &(rows.session_version - 1),
                ],
            )
            .expect("the session update");
        assert_eq!(
            updated, 1,
            "the session row is at the version the commit expects"
        );
        tx.execute(
            &self.operation_insert,
            &[
                &rows.operation_id,
                &rows.operation_cart,
                &rows.operation_status,
                &rows.operation_submitted,
                &rows.operation_expires,
                &Json(&rows.operation.value),
            ],
        )
        .expect("the operation insert");
        for (cart, body) in &rows.history {
            tx.execute(&self.history_insert, &[cart, &Json(&body.value)])
                .expect("a history insert");
        }
        tx.commit().expect("the commit");
    }

    fn update_insert(&mut self, n: u64) {
        self.plain.update_insert(n);
    }
}

/// A durable store under test, and a second database of the same kind and settings (made by
/// the same store code, so with the same schema and indexes) for the raw transactions.
struct Target {
    durable: DurableStore,
    raw_store: DurableStore,
    place: Place,
}

/// Where a target's two databases live, kept as long as the stores.
enum Place {
    /// The directory of both SQLite files.
    Dir { _dir: TempDir },
    Databases {
        _db: support::TestDb,
        raw_db: support::TestDb,
    },
}

impl Target {
    fn sqlite(durability: Durability) -> Target {
        let dir = tempfile::tempdir().expect("a temporary directory");
        Target {
            durable: DurableStore::sqlite(&dir.path().join("cartflow.db"), durability),
            raw_store: DurableStore::sqlite(&dir.path().join("raw.db"), durability),
            place: Place::Dir { _dir: dir },
        }
    }

    fn postgres() -> Option<Target> {
        let db = support::postgres()?;
        let raw_db = support::postgres()?;
        Some(Target {
            durable: DurableStore::postgres(&db),
            raw_store: DurableStore::postgres(&raw_db),
            place: Place::Databases { _db: db, raw_db },
        })
    }

    fn raw(&self, rows: &InventoryRows) -> Box<dyn Raw> {
        match (&self.raw_store, &self.place) {
            (DurableStore::Sqlite { durability, store }, _) => {
                Box::new(RawSqlite::open(store.path(), *durability, rows))
            }
            (DurableStore::Postgres(_), Place::Databases { raw_db, .. }) => {
                Box::new(RawPostgres::open(raw_db, rows))
            }
            (DurableStore::Postgres(_), Place::Dir { .. }) => {
                unreachable!("a PostgreSQL target keeps its databases")
            }
        }
    }

    /// Carts per prepared batch: fewer where each unit is slow.
    fn batch(&self, fast: u64, slow: u64) -> u64 {
        match self.durable {
            DurableStore::Sqlite { .. } => fast,
            DurableStore::Postgres(_) => slow,
        }
    }
}

/// The commits the store receives during one whole checkout of a fresh cart.
fn commits_per_checkout(target: &Target) -> u64 {
    let recorder = Arc::new(Recorder::new(target.durable.store()));
    let engine = engine_on(recorder.clone());
    let cart = prepared(1, Stage::Active);
    target.durable.import(&cart.data);
    check_out(&engine, &cart.carts[0]);
    recorder.commits.load(Ordering::Relaxed)
}

/// The six figures of one durable store.
fn durable_figures(plan: &Plan, target: &Target) -> Value {
    let engine = engine_on(target.durable.store());
    let batch = target.batch(100, 25);
    let first = prepared_recording(1, Stage::InventoryLocked);
    target.raw_store.import(&first.data);
    let sample_rows = InventoryRows::of(&first.inventory_commits[0]);
    let mut raw = target.raw(&sample_rows);
    raw.inventory_rows(&sample_rows);

    // The raw transaction and the plain one share a connection.
    let raw = std::cell::RefCell::new(raw);
    let mut raw_txn = || {
        let part = prepared_recording(batch, Stage::InventoryLocked);
        target.raw_store.import(&part.data);
        let rows: Vec<InventoryRows> = part
            .inventory_commits
            .iter()
            .map(InventoryRows::of)
            .collect();
        let mut raw = raw.borrow_mut();
        timed(batch, || rows.iter().for_each(|r| raw.inventory_rows(r)))
    };
    let mut n = 0;
    let mut raw_update_insert = || {
        let mut raw = raw.borrow_mut();
        timed(batch, || {
            for _ in 0..batch {
                n += 1;
                raw.update_insert(n);
            }
        })
    };
    let mut action = || {
        let part = prepared(batch, Stage::InventoryLocked);
        target.durable.import(&part.data);
        timed(batch, || {
            part.carts.iter().for_each(|c| invoke_inventory(&engine, c))
        })
    };
    let checkouts = target.batch(10, 4);
    let mut checkout = || {
        let part = prepared(checkouts, Stage::Active);
        target.durable.import(&part.data);
        timed(checkouts, || {
            part.carts.iter().for_each(|c| check_out(&engine, c))
        })
    };
    let rates = plan.rates_side_by_side(&mut [
        (400, &mut raw_txn),
        (400, &mut raw_update_insert),
        (600, &mut action),
        (1_500, &mut checkout),
    ]);
    let [
        raw_txn_per_s,
        raw_update_insert_per_s,
        action_per_s,
        checkout_per_s,
    ] = rates[..]
    else {
        unreachable!("four figures, four rates")
    };
    let commits = commits_per_checkout(target);
    // A checkout's time over the time of the raw transactions its commits would be.
    let equiv = (1.0 / checkout_per_s) / (commits as f64 / raw_txn_per_s);
    json!({
        "raw_txn_per_s": round(raw_txn_per_s),
        "raw_update_insert_per_s": round(raw_update_insert_per_s),
        "action_per_s": round(action_per_s),
        "action_ratio": round(action_per_s / raw_txn_per_s),
        "checkout_per_s": round(checkout_per_s),
        "commits_per_checkout": commits,
        "checkout_raw_txn_equiv": round(equiv),
    })
}

/// Hands out one ID, every time: `decide` and the hand-written decision then make equal
/// decisions.
struct OneId(SfId);

impl IdSource for OneId {
    fn next_id(&self, _kind: KeyPrefix) -> SfId {
        self.0
    }
}

/// Why the hand-written decision refuses (a name, no message built).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refused {
    NotThisCommand,
    Caller,
    CartId,
    CartAccess,
    Account,
    StoreMember,
    CartStatus,
    NoActiveSession,
    SessionExpired,
    NotAtInventory,
    NotLocked,
    NextState,
    OrderActivated,
    AlreadyInProcess,
}

/// `checkCartInventoryAction` decided by hand: the baseline of `decide_ns`.
///
/// It makes the same checks as the action's guards, in their order (the caller's
/// permission, the cart ID, edit access, the effective account, store membership, the cart in
/// Checkout, an active unexpired session at Inventory, locked, NextState Confirm Price, no
/// activated order, no operation in progress) and builds the same decision: the New
/// operation, the session pointing at it with its version bumped, the two moves and the
/// answer. It does not read the transition table or the template (the Inventory row, its
/// provider kind, NextState and the moves are written in), builds no refusal message, does
/// not check its moves against the table, and handles no other step or command.
fn decide_by_hand(
    ctx: &DecideContext<'_>,
    snapshot: &Snapshot,
    command: &Command,
) -> Result<Decision, Refused> {
    let (cart, session) = check_by_hand(ctx, snapshot, command)?;
    Ok(start_by_hand(ctx, cart, session))
}

/// The checks of [`decide_by_hand`], in the guards' order: the cart and session they passed.
fn check_by_hand<'s>(
    ctx: &DecideContext<'_>,
    snapshot: &'s Snapshot,
    command: &Command,
) -> Result<(&'s WebCart, &'s CartCheckoutSession), Refused> {
    let Command::RunStep {
        action: ProviderAction::CheckCartInventory,
        cart_id,
    } = command
    else {
        return Err(Refused::NotThisCommand);
    };
    let user = snapshot.user.as_ref().ok_or(Refused::Caller)?;
    let permitted = [
        Permission::B2BBuyer,
        Permission::B2BCommerceIntegrator,
        Permission::ModifyAllData,
    ];
    if !permitted.iter().any(|p| user.has(*p)) {
        return Err(Refused::Caller);
    }
    let cart = snapshot.cart.as_ref().ok_or(Refused::CartId)?;
    match SfId::parse_kind(cart_id, KeyPrefix::WebCart) {
        Ok(id) if id == cart.id => {}
        _ => return Err(Refused::CartId),
    }
    if cart.access_of(user) != Some(Access::Edit) {
        return Err(Refused::CartAccess);
    }
    match &snapshot.account {
        Some(a) if a.is_active && user.account_id.is_none_or(|own| own == a.id) => {}
        _ => return Err(Refused::Account),
    }
    let buyer = user.account_id.unwrap_or(cart.account_id);
    let store = snapshot
        .store
        .as_ref()
        .filter(|s| s.buyer_accounts.contains(&buyer))
        .ok_or(Refused::StoreMember)?;
    if cart.status != CartStatus::Checkout {
        return Err(Refused::CartStatus);
    }
    let session = snapshot
        .session
        .as_ref()
        .filter(|s| !s.is_archived)
        .ok_or(Refused::NoActiveSession)?;
    let expiry = session.created_date.and_then(|c| store.checkout_expiry(c));
    if expiry.is_some_and(|e| ctx.now >= e) {
        return Err(Refused::SessionExpired);
    }
    if session.state != Some(SessionState::Inventory) {
        return Err(Refused::NotAtInventory);
    }
    if !session.is_processing {
        return Err(Refused::NotLocked);
    }
    if session.next_state != Some(SessionState::ConfirmPrice) {
        return Err(Refused::NextState);
    }
    if let Some(order) = &snapshot.order
        && session.order_id == Some(order.id)
        && order.status == OrderStatus::Activated
    {
        return Err(Refused::OrderActivated);
    }
    let in_progress = snapshot
        .operation
        .as_ref()
        .is_some_and(|op| op.status.is_active());
    if in_progress || snapshot.cart_has_active_operation {
        return Err(Refused::AlreadyInProcess);
    }
    Ok((cart, session))
}

/// The decision of [`decide_by_hand`] once its checks passed: the New operation, the
/// session pointing at it, the two moves, the answer.
fn start_by_hand(
    ctx: &DecideContext<'_>,
    cart: &WebCart,
    session: &CartCheckoutSession,
) -> Decision {
    let action = Action::CheckCartInventory;
    let operation = BackgroundOperation {
        id: ctx.ids.next_id(KeyPrefix::BackgroundOperation),
        name: action.api_name().to_owned(),
        cart_id: cart.id,
        checkout_session_id: session.id,
        provider_kind: action.provider_kind(),
        status: OperationStatus::New,
        error: None,
        submitted_at: ctx.now,
        started_at: None,
        finished_at: None,
        expires_at: None,
        attempt: 0,
        retry_limit: ctx.settings.retry_limit,
        timeout_ms: ctx.settings.timeout_ms,
        order_life_cycle_type: None,
        version: 1,
    };
    let mut next = session.clone();
    next.background_operation_id = Some(operation.id);
    next.version += 1;
    let state = Some(SessionState::Inventory);
    let moves = vec![
        Move {
            machine: Machine::Session,
            record: session.id,
            from: Node::Session(SessionNode::At(state, Phase::Locked)),
            to: Node::Session(SessionNode::At(state, Phase::Running)),
        },
        Move {
            machine: Machine::Operation,
            record: operation.id,
            from: Node::Operation(OperationNode::Absent),
            to: Node::Operation(OperationNode::Is(OperationStatus::New)),
        },
    ];
    let output = Output::BackgroundOperationId(operation.id);
    Decision {
        event: Event::Action(action),
        moves,
        changes: Changes {
            sessions: vec![next],
            operations: vec![operation],
            ..Changes::default()
        },
        output,
    }
}

/// The snapshot `checkCartInventoryAction` decides on, as the engine loads it.
fn inventory_snapshot(store: &MemoryStore, cart: SfId) -> Snapshot {
    let mut snapshot = store.load(LoadKey::Cart(cart)).expect("the store reads");
    snapshot.user = store.user(&sample::buyer_id()).expect("the store reads");
    snapshot
}

/// `decide` and the hand-written decision on one locked session, in nanoseconds each.
fn decide_figures(plan: &Plan) -> (f64, f64) {
    let part = prepared(1, Stage::InventoryLocked);
    let cart = part.carts[0];
    let mut data = sample::dataset();
    merge(&mut data, part.data);
    let store = MemoryStore::from_dataset(data).expect("a valid data set");
    let open = inventory_snapshot(&store, cart);
    let table = TransitionTable::standard();
    let ids = OneId(SfId::from_number(KeyPrefix::BackgroundOperation, 1 << 40));
    let ctx = DecideContext {
        table: &table,
        now: Utc::now(),
        ids: &ids,
        settings: OperationSettings::default(),
    };
    let command = Command::RunStep {
        action: ProviderAction::CheckCartInventory,
        cart_id: cart.to_string(),
    };
    let by_table = decide(&ctx, &open, &command).expect("the inventory check is accepted");
    let by_hand = decide_by_hand(&ctx, &open, &command).expect("accepted by hand too");
    assert_eq!(by_table, by_hand, "the hand-written decision is decide's");

    // Once its operation exists, both refuse a second check.
    let engine = engine_on(Arc::new(store));
    invoke_inventory(&engine, &cart);
    let mut running = engine.store().load(LoadKey::Cart(cart)).expect("read");
    running.user = engine.store().user(&sample::buyer_id()).expect("read");
    assert!(decide(&ctx, &running, &command).is_err());
    assert_eq!(
        decide_by_hand(&ctx, &running, &command),
        Err(Refused::AlreadyInProcess)
    );

    const CALLS: u64 = 20_000;
    let decide_per_s = plan.rate(500, || {
        timed(CALLS, || {
            for _ in 0..CALLS {
                let _ = black_box(decide(&ctx, black_box(&open), black_box(&command)));
            }
        })
    });
    let match_per_s = plan.rate(500, || {
        timed(CALLS, || {
            for _ in 0..CALLS {
                let _ = black_box(decide_by_hand(&ctx, black_box(&open), black_box(&command)));
            }
        })
    });
    (1e9 / decide_per_s, 1e9 / match_per_s)
}

/// An engine over a fresh in-memory store of `data`, with sequential IDs and `integrations`.
fn memory_engine(data: DataSet, integrations: Integrations) -> Engine {
    let store = Arc::new(MemoryStore::from_dataset(data).expect("a valid data set"));
    Engine::new(store)
        .with_ids(Arc::new(SequentialIds::starting_at(1 << 40)))
        .with_integrations(integrations)
}

/// Whole checkouts per second on the in-memory store, one thread.
fn memory_checkouts(plan: &Plan) -> f64 {
    const BATCH: u64 = 50;
    plan.rate(1_500, || {
        let mut data = sample::dataset();
        let carts = sample::add_in_stock_copies(&mut data, next_carts(BATCH), BATCH);
        let integrations = sample::integrations(&data);
        let engine = memory_engine(data, integrations);
        timed(BATCH, || carts.iter().for_each(|c| check_out(&engine, c)))
    })
}

/// The sample world plus a bulk cart of `lines` lines (one SKU each, exactly the stock it
/// needs, each SKU at 1.00 in the price book), and its integrations.
fn priced_bulk_world(lines: u64) -> (DataSet, SfId, Integrations) {
    let (data, id) = bulk_world(lines);
    let mut config = sample::provider_config();
    let providers = config
        .get_mut(&sample::store_id())
        .expect("the sample store's providers");
    let book = providers.price.take().expect("the sample price book");
    providers.price =
        Some((0..lines).fold(book, |book, n| book.list(&format!("SKU-{n}"), Decimal::ONE)));
    let mut integrations = Integrations::with_stock_tables(&data.stock);
    integrations
        .configure(&config)
        .expect("the bulk configuration is valid");
    (data, id, integrations)
}

/// One inventory operation (the action, then worker steps until it applied) on a 2,000-line
/// cart, and whole checkouts of 1, 100 and 2,000 lines, in microseconds each.
fn lines_figures(plan: &Plan) -> Value {
    let (data, cart, integrations) = priced_bulk_world(2_000);
    let locked = {
        let store = Arc::new(MemoryStore::from_dataset(data).expect("a valid data set"));
        let engine = Engine::new(store.clone())
            .with_ids(Arc::new(SequentialIds::starting_at(1 << 44)))
            .with_integrations(integrations.clone());
        sample::lock_inventory_step(&engine, &buyer(), cart).expect("the Inventory step locks");
        store.to_dataset()
    };
    let inventory_per_s = plan.rate(500, || {
        let engine = memory_engine(locked.clone(), integrations.clone());
        timed(1, || {
            invoke_inventory(&engine, &cart);
            while let Some(report) = engine.run_next_operation().expect("the worker step runs") {
                if report.applied {
                    break;
                }
            }
        })
    });
    let mut by_lines = serde_json::Map::new();
    for lines in CHECKOUT_LINES {
        let (data, cart, integrations) = priced_bulk_world(lines);
        let per_s = plan.rate(800, || {
            let engine = memory_engine(data.clone(), integrations.clone());
            timed(1, || check_out(&engine, &cart))
        });
        by_lines.insert(lines.to_string(), json!(round(1e6 / per_s)));
    }
    json!({
        "inventory_2000_us": round(1e6 / inventory_per_s),
        "checkout_us_by_lines": by_lines,
    })
}

/// Operations per second with one and with two worker processes, each the median of the
/// plan's runs: over each run's whole time (`ops_per_s_*`, the processes' start and idle exit
/// included), and over its working time alone (`working_ops_per_s_*`, first claim to last
/// completion).
fn worker_figures(plan: &Plan) -> Value {
    let carts = plan.worker_carts as f64;
    let mut figures = serde_json::Map::new();
    for processes in [1, 2] {
        let runs: Vec<WorkerSpans> = (0..plan.runs)
            .map(|_| worker_run_spans(processes, plan.worker_carts))
            .collect();
        let mut whole: Vec<f64> = runs.iter().map(|r| carts / r.whole.as_secs_f64()).collect();
        let mut working: Vec<f64> = runs
            .iter()
            .map(|r| carts / r.working.as_secs_f64().max(1e-6))
            .collect();
        figures.insert(
            format!("ops_per_s_{processes}"),
            json!(round(median(&mut whole))),
        );
        figures.insert(
            format!("working_ops_per_s_{processes}"),
            json!(round(median(&mut working))),
        );
    }
    Value::Object(figures)
}

/// What the PostgreSQL server does with commits, for the summary.
fn postgres_settings(target: &Target) -> String {
    let Place::Databases { raw_db, .. } = &target.place else {
        return String::new();
    };
    let mut client = raw_db.client();
    let show = |client: &mut postgres::Client, name: &str| -> String {
        let row = client
            .query_one(&format!("SHOW {name}"), &[])
            .expect("a setting reads");
        format!("{name}={}", row.get::<_, String>(0))
    };
    ["fsync", "synchronous_commit", "full_page_writes"]
        .map(|name| show(&mut client, name))
        .join(", ")
}

/// The keys of the file, as issue-level scripts read them.
const STORE_KEYS: [&str; 7] = [
    "raw_txn_per_s",
    "raw_update_insert_per_s",
    "action_per_s",
    "action_ratio",
    "checkout_per_s",
    "commits_per_checkout",
    "checkout_raw_txn_equiv",
];

/// Panics unless `report` has exactly the file's keys (the PostgreSQL ones only when
/// `with_postgres`), each a number.
fn check_keys(report: &Value, with_postgres: bool) {
    let keys = |value: &Value| -> BTreeSet<String> {
        value
            .as_object()
            .expect("an object")
            .keys()
            .cloned()
            .collect()
    };
    let set =
        |names: &[&str]| -> BTreeSet<String> { names.iter().map(|n| n.to_string()).collect() };
    let mut top = vec!["sqlite_normal", "sqlite_full", "memory", "lines"];
    if with_postgres {
        top.extend(["postgres", "workers_postgres"]);
    }
    assert_eq!(keys(report), set(&top));
    let stores: &[&str] = if with_postgres {
        &["sqlite_normal", "sqlite_full", "postgres"]
    } else {
        &["sqlite_normal", "sqlite_full"]
    };
    let groups = stores.iter().map(|s| (*s, &STORE_KEYS[..])).chain([
        ("memory", &["checkout_per_s", "decide_ns", "match_ns"][..]),
        ("lines", &["inventory_2000_us", "checkout_us_by_lines"][..]),
    ]);
    for (group, names) in groups {
        assert_eq!(keys(&report[group]), set(names), "the keys of {group}");
    }
    if with_postgres {
        assert_eq!(
            keys(&report["workers_postgres"]),
            set(&[
                "ops_per_s_1",
                "ops_per_s_2",
                "working_ops_per_s_1",
                "working_ops_per_s_2"
            ])
        );
    }
    let by_lines = &report["lines"]["checkout_us_by_lines"];
    assert_eq!(keys(by_lines), set(&["1", "100", "2000"]));
    let mut numbers = vec![&report["lines"]["inventory_2000_us"]];
    numbers.extend(by_lines.as_object().expect("an object").values());
    for group in stores.iter().copied().chain(["memory", "workers_postgres"]) {
        if let Some(fields) = report[group].as_object() {
            numbers.extend(fields.values());
        }
    }
    for value in numbers {
        assert!(
            value.as_f64().is_some_and(|x| x.is_finite() && x > 0.0),
            "{value} is not a positive number"
        );
    }
}

/// Where the file goes: `target/cartflow-ratios.json` (under `CARGO_TARGET_DIR` when set).
fn report_path() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
        .join("cartflow-ratios.json")
}

fn print_store(name: &str, f: &Value) {
    println!(
        "{name}: raw txn {}/s (plain UPDATE+INSERT {}/s); action {}/s, ratio {}; \
         checkout {}/s, {} commits, {}x the raw time of its commits",
        f["raw_txn_per_s"],
        f["raw_update_insert_per_s"],
        f["action_per_s"],
        f["action_ratio"],
        f["checkout_per_s"],
        f["commits_per_checkout"],
        f["checkout_raw_txn_equiv"]
    );
}

/// Measures one section and prints it (see [`only_section`]).
fn measure_only(plan: &Plan, section: &str) {
    match section {
        "durable" => {
            for target in [
                Target::sqlite(Durability::Normal),
                Target::sqlite(Durability::Full),
            ] {
                print_store(target.durable.name(), &durable_figures(plan, &target));
            }
        }
        "decide" => {
            let (decide_ns, match_ns) = decide_figures(plan);
            println!("decide {decide_ns:.0} ns, hand-written match {match_ns:.0} ns");
        }
        "memory" => {
            let (decide_ns, match_ns) = decide_figures(plan);
            let checkout_per_s = memory_checkouts(plan);
            println!(
                "memory: checkout {checkout_per_s:.0}/s; decide {decide_ns:.0} ns, \
                 hand-written match {match_ns:.0} ns"
            );
        }
        "postgres" => match Target::postgres() {
            Some(target) => print_store(target.durable.name(), &durable_figures(plan, &target)),
            None => println!("postgres: skipped, no PostgreSQL cluster could be started"),
        },
        "workers" => println!("workers_postgres: {}", worker_figures(plan)),
        _ => println!("lines: {}", lines_figures(plan)),
    }
    println!("--only {section}: no report written");
}

/// The section `--only <name>` names (`durable`, `postgres`, `decide`, `memory`, `workers`,
/// `lines`), if any: a profiling aid that measures that section alone and writes no report.
fn only_section() -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    let at = args.iter().position(|a| a == "--only")?;
    let name = args.get(at + 1).cloned().unwrap_or_default();
    let known = [
        "durable", "postgres", "decide", "memory", "workers", "lines",
    ];
    assert!(
        known.contains(&name.as_str()),
        "--only takes one of {known:?}, not {name:?}"
    );
    Some(name)
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let plan = if bench { Plan::BENCH } else { Plan::SMOKE };
    let started = Instant::now();
    // Before any database is asked for: the cluster starts once per process.
    assert!(
        support::start_with_fsync(),
        "the PostgreSQL cluster started before fsync was asked for"
    );
    if let Some(section) = only_section() {
        measure_only(&plan, &section);
        return;
    }

    let rows =
        InventoryRows::of(&prepared_recording(1, Stage::InventoryLocked).inventory_commits[0]);
    println!(
        "raw txn: the action's rows, 1 session update, 1 operation insert, {} history inserts",
        rows.history.len()
    );
    let mut report = serde_json::Map::new();
    let mut targets = vec![
        Target::sqlite(Durability::Normal),
        Target::sqlite(Durability::Full),
    ];
    match Target::postgres() {
        Some(target) => {
            let settings = postgres_settings(&target);
            println!("postgres: {settings}");
            // The harness's own cluster must commit as a durable server does.
            let external =
                std::env::var(support::DATABASE_URL_VAR).is_ok_and(|url| !url.trim().is_empty());
            assert!(
                external || settings == "fsync=on, synchronous_commit=on, full_page_writes=on",
                "the benchmark's cluster runs with {settings}"
            );
            targets.push(target);
        }
        None => {
            println!("postgres, workers_postgres: skipped, no PostgreSQL cluster could be started")
        }
    }
    let with_postgres = targets.len() == 3;
    for target in &targets {
        let figures = durable_figures(&plan, target);
        print_store(target.durable.name(), &figures);
        report.insert(target.durable.name().into(), figures);
    }
    drop(targets);

    let (decide_ns, match_ns) = decide_figures(&plan);
    let checkout_per_s = memory_checkouts(&plan);
    println!(
        "memory: checkout {checkout_per_s:.0}/s; decide {decide_ns:.0} ns, hand-written match \
         {match_ns:.0} ns"
    );
    report.insert(
        "memory".into(),
        json!({"checkout_per_s": round(checkout_per_s), "decide_ns": round(decide_ns),
               "match_ns": round(match_ns)}),
    );
    if with_postgres {
        let workers = worker_figures(&plan);
        println!(
            "workers_postgres: {} ops/s with one process, {} with two; working alone, {} and {}",
            workers["ops_per_s_1"],
            workers["ops_per_s_2"],
            workers["working_ops_per_s_1"],
            workers["working_ops_per_s_2"]
        );
        report.insert("workers_postgres".into(), workers);
    }
    let lines = lines_figures(&plan);
    println!(
        "lines: inventory operation on 2,000 lines {} us; checkout by lines (us) {}",
        lines["inventory_2000_us"], lines["checkout_us_by_lines"]
    );
    report.insert("lines".into(), lines);

    let report = Value::Object(report);
    check_keys(&report, with_postgres);
    let text = serde_json::to_string_pretty(&report).expect("the report serializes");
    let scratch = tempfile::tempdir().expect("a temporary directory");
    let path = if bench {
        report_path()
    } else {
        scratch.path().join("cartflow-ratios.json")
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).expect("the report's directory");
    }
    std::fs::write(&path, &text).expect("the report writes");
    let written: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("the report reads"))
            .expect("the report is JSON");
    check_keys(&written, with_postgres);
    println!(
        "wrote {} in {:.0} s",
        path.display(),
        started.elapsed().as_secs_f64()
    );
}
