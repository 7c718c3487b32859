//! What the benchmarks share: the sample buyer and what they enter, copies of the sample
//! in-stock cart taken to a stage of the checkout on an in-memory store, a bulk cart, and one
//! run of `cartflow worker` processes on a seeded PostgreSQL database.

// Each benchmark uses only part of this module.
#![allow(dead_code)]

#[path = "../../tests/support/mod.rs"]
pub mod support;

use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cartflow::flow::{BuyerInput, Drive, Waiting, drive};
use cartflow::ids::RandomIds;
use cartflow::machine::Machine;
use cartflow::model::{KeyPrefix, OperationStatus, SfId};
use cartflow::sample;
use cartflow::store::{Commit, DataSet, Durability, HistoryEntry, PostgresStore, SqliteStore};
use cartflow::{Engine, MemoryStore, Store, StoreError};
use postgres::types::Json;
use rusqlite::TransactionBehavior;
use serde_json::{Value, json};

/// The worker binary; Cargo builds it (bench profile) before running a benchmark.
pub const BIN: &str = env!("CARGO_BIN_EXE_cartflow");

/// Carts seeded with a New inventory operation for each worker-process run.
pub const WORKER_CARTS: u64 = 400;

/// Record numbers for copied carts and lines: every preparation takes new ones, so the carts
/// of successive preparations can be imported into one database.
static NEXT_CART: AtomicU64 = AtomicU64::new(1 << 32);

/// The first of `n` record numbers no earlier preparation took.
pub fn next_carts(n: u64) -> u64 {
    NEXT_CART.fetch_add(n, Ordering::Relaxed)
}

pub fn buyer() -> String {
    sample::buyer_id().to_string()
}

pub fn cart_input(cart: &SfId) -> Value {
    json!({"cartId": cart.to_string()})
}

/// An engine on `store` as a server process has it: random IDs, the sample providers.
pub fn engine_on(store: Arc<dyn Store>) -> Engine {
    Engine::new(store)
        .with_ids(Arc::new(RandomIds))
        .with_integrations(sample::integrations(&sample::dataset()))
}

/// What the buyer enters: a Denver address, the cheapest delivery, a card the sample
/// gateway authorises, and the order placed.
pub fn buyer_input() -> BuyerInput {
    BuyerInput {
        deliver_to: Some(sample::denver()),
        delivery_method_id: None,
        payment_token: Some(sample::GOOD_TOKEN.into()),
        place_order: true,
    }
}

/// Checks `cart` out as the sample buyer, failing loudly on anything but a completed
/// checkout.
pub fn check_out(engine: &Engine, cart: &SfId) {
    match drive(engine, &buyer(), cart, &buyer_input(), Waiting::RunInline) {
        Ok(Drive::Complete { .. }) => {}
        other => panic!("cart {cart} did not complete: {other:?}"),
    }
}

pub fn invoke_inventory(engine: &Engine, cart: &SfId) {
    let started = engine.invoke("checkCartInventoryAction", &cart_input(cart), &buyer());
    assert!(started.is_success, "{:?}", started.errors);
}

/// A store that counts its commits and, while asked to, keeps a copy of each.
pub struct Recorder {
    inner: Arc<dyn Store>,
    pub commits: AtomicU64,
    kept: Mutex<Option<Vec<Commit>>>,
}

impl Recorder {
    pub fn new(inner: Arc<dyn Store>) -> Recorder {
        Recorder {
            inner,
            commits: AtomicU64::new(0),
            kept: Mutex::new(None),
        }
    }

    /// Keeps every commit from now on.
    pub fn keep(&self) {
        *self.kept.lock().expect("the recorder") = Some(Vec::new());
    }

    pub fn kept(&self) -> Vec<Commit> {
        self.kept
            .lock()
            .expect("the recorder")
            .take()
            .unwrap_or_default()
    }
}

// `claim_next` is left to the default, so a claim's commit is counted too.
impl Store for Recorder {
    fn commit(&self, commit: &Commit) -> Result<(), StoreError> {
        self.commits.fetch_add(1, Ordering::Relaxed);
        if let Some(kept) = self.kept.lock().expect("the recorder").as_mut() {
            kept.push(commit.clone());
        }
        self.inner.commit(commit)
    }
    crate::delegate_store!(inner => load, user, claimable_operations, expired_operations,
        operation_counts, web_stores, cart, carts_after, cart_items, cart_item, validation_output, session, sessions_of,
        operation, operations_of, order, validation_outputs, history, events_after, last_event, webhook_cursor, advance_webhook, deliveries, owner_of, begin_keyed,
        keep_answer, release_key);
}

/// How far carts are taken before a measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Active, no session.
    Active,
    /// Session at Inventory with the step locked (IsProcessing): ready for
    /// `checkCartInventoryAction`.
    InventoryLocked,
    /// The inventory check invoked: a New operation waits for a worker.
    InventoryStarted,
}

/// Fresh copies of the sample in-stock cart (three lines), taken to a stage through the
/// library on an in-memory store.
pub struct Prepared {
    /// The records of those carts only, ready to import into a store holding the sample
    /// world.
    pub data: DataSet,
    pub carts: Vec<SfId>,
    /// From [`prepared_recording`] at `InventoryLocked`: the commit
    /// `checkCartInventoryAction` made on each cart (on the in-memory store, from the records
    /// in `data`). Empty otherwise.
    pub inventory_commits: Vec<Commit>,
}

/// `n` fresh carts taken to `stage`.
pub fn prepared(n: u64, stage: Stage) -> Prepared {
    prepare(n, stage, false)
}

/// As [`prepared`], and at `InventoryLocked` the commits the inventory check makes on the
/// carts too (checked on a copy; the carts in `data` stay locked).
pub fn prepared_recording(n: u64, stage: Stage) -> Prepared {
    prepare(n, stage, true)
}

fn prepare(n: u64, stage: Stage, record: bool) -> Prepared {
    let mut data = sample::dataset();
    let carts = sample::add_in_stock_copies(&mut data, next_carts(n), n);
    if stage == Stage::Active {
        return Prepared {
            data: only_carts(data, &carts),
            carts,
            inventory_commits: Vec::new(),
        };
    }
    let memory = Arc::new(MemoryStore::from_dataset(data).expect("a valid data set"));
    let recorder = Arc::new(Recorder::new(memory.clone()));
    let engine = engine_on(recorder.clone());
    for cart in &carts {
        sample::lock_inventory_step(&engine, &buyer(), *cart).expect("the Inventory step locks");
    }
    let locked = memory.to_dataset();
    if stage == Stage::InventoryLocked && !record {
        return Prepared {
            data: only_carts(locked, &carts),
            carts,
            inventory_commits: Vec::new(),
        };
    }
    recorder.keep();
    for cart in &carts {
        invoke_inventory(&engine, cart);
    }
    let inventory_commits = recorder.kept();
    let data = match stage {
        Stage::InventoryStarted => memory.to_dataset(),
        _ => locked,
    };
    Prepared {
        data: only_carts(data, &carts),
        carts,
        inventory_commits,
    }
}

/// The records of `carts` in `data`, without the world they live in.
pub fn only_carts(data: DataSet, carts: &[SfId]) -> DataSet {
    let keep: BTreeSet<SfId> = carts.iter().copied().collect();
    let DataSet {
        carts: all_carts,
        items,
        sessions,
        operations,
        validation_outputs,
        orders,
        history,
        ..
    } = data;
    DataSet {
        carts: all_carts
            .into_iter()
            .filter(|c| keep.contains(&c.id))
            .collect(),
        items: items
            .into_iter()
            .filter(|r| keep.contains(&r.cart_id))
            .collect(),
        sessions: sessions
            .into_iter()
            .filter(|r| keep.contains(&r.web_cart_id))
            .collect(),
        operations: operations
            .into_iter()
            .filter(|r| keep.contains(&r.cart_id))
            .collect(),
        validation_outputs: validation_outputs
            .into_iter()
            .filter(|r| keep.contains(&r.cart_id))
            .collect(),
        orders: orders
            .into_iter()
            .filter(|r| keep.contains(&r.cart_id))
            .collect(),
        history: history
            .into_iter()
            .filter(|r| keep.contains(&r.cart_id))
            .collect(),
        ..DataSet::default()
    }
}

pub fn merge(into: &mut DataSet, part: DataSet) {
    into.carts.extend(part.carts);
    into.items.extend(part.items);
    into.sessions.extend(part.sessions);
    into.operations.extend(part.operations);
    into.validation_outputs.extend(part.validation_outputs);
    into.orders.extend(part.orders);
    into.history.extend(part.history);
}

/// The sample world plus a bulk cart of `lines` lines, one SKU per line and exactly the stock
/// it needs, so the inventory provider reads every line and the check passes.
pub fn bulk_world(lines: u64) -> (DataSet, SfId) {
    let mut data = sample::dataset();
    let (cart, items) = sample::bulk_cart(1, lines, lines);
    let id = cart.id;
    data.carts.push(cart);
    data.items.extend(items);
    data.stock.extend(sample::bulk_stock(lines, 1));
    (data, id)
}

/// One run of [`worker_run_spans`]: its whole time.
pub fn worker_run(processes: usize, carts: u64) -> Duration {
    worker_run_spans(processes, carts).whole
}

/// The two times of one worker run.
pub struct WorkerSpans {
    /// From spawning the workers until the last one exits: each process's start (exec,
    /// connect, schema check, stock read) and its idle exit (two idle checks a 50 ms poll
    /// apart) are inside it.
    pub whole: Duration,
    /// From the first claim to the last completion, as the operations' history records them
    /// (the workers' clocks, on this machine): the work alone.
    pub working: Duration,
}

/// One run: a fresh database seeded with `carts` New inventory operations, then `processes`
/// workers (`--exit-when-idle`) until the last one exits.
pub fn worker_run_spans(processes: usize, carts: u64) -> WorkerSpans {
    let db = support::postgres().expect("PostgreSQL was available a moment ago");
    let part = prepared(carts, Stage::InventoryStarted);
    let operations: Vec<SfId> = part.data.operations.iter().map(|op| op.id).collect();
    assert_eq!(operations.len(), part.carts.len());
    let mut data = sample::dataset();
    merge(&mut data, part.data);
    let store = PostgresStore::connect(db.url()).expect("the PostgreSQL store connects");
    store.import(&data).expect("the seeded carts import");
    let url = db.cli_url();
    let logs = tempfile::tempdir().expect("a temporary directory");

    let started = Instant::now();
    let mut workers: Vec<(Child, PathBuf)> = (0..processes)
        .map(|n| {
            let log = logs.path().join(format!("worker-{n}.err"));
            let child = Command::new(BIN)
                .args([
                    "worker",
                    "--data",
                    &url,
                    "--threads",
                    "1",
                    "--exit-when-idle",
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(File::create(&log).expect("a log file"))
                .spawn()
                .expect("the worker starts");
            (child, log)
        })
        .collect();
    let statuses: Vec<_> = workers
        .iter_mut()
        .map(|(child, _)| child.wait().expect("the worker ends"))
        .collect();
    let elapsed = started.elapsed();

    for ((_, log), status) in workers.iter().zip(&statuses) {
        assert!(
            status.success(),
            "a worker failed ({status}): {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
    }
    for id in &operations {
        let op = store.operation(id).expect("the store reads");
        assert_eq!(
            op.map(|op| op.status),
            Some(OperationStatus::Complete),
            "operation {id}"
        );
    }
    WorkerSpans {
        whole: elapsed,
        working: working_span(&store, &part.carts),
    }
}

/// From the first claim of an operation of `carts` to the last completion, by their history.
fn working_span(store: &PostgresStore, carts: &[SfId]) -> Duration {
    let moves: Vec<HistoryEntry> = carts
        .iter()
        .flat_map(|cart| store.history(cart).expect("the store reads"))
        .filter(|h| h.machine == Machine::Operation)
        .collect();
    let first_claim = moves
        .iter()
        .filter(|h| h.to == "Running")
        .map(|h| h.at)
        .min();
    let last_completion = moves
        .iter()
        .filter(|h| h.to == "Complete")
        .map(|h| h.at)
        .max();
    match (first_claim, last_completion) {
        (Some(first), Some(last)) => (last - first).to_std().unwrap_or_default(),
        _ => Duration::ZERO,
    }
}

/// A durable store holding the sample world, as a benchmark measures it.
pub enum DurableStore {
    Sqlite {
        durability: Durability,
        store: Arc<SqliteStore>,
    },
    Postgres(Arc<PostgresStore>),
}

impl DurableStore {
    /// A new SQLite file at `path`.
    pub fn sqlite(path: &Path, durability: Durability) -> DurableStore {
        let store = SqliteStore::open(path, durability).expect("the SQLite store opens");
        store
            .import(&sample::dataset())
            .expect("the sample world imports");
        DurableStore::Sqlite {
            durability,
            store: Arc::new(store),
        }
    }

    /// The store on the fresh database `db`.
    pub fn postgres(db: &support::TestDb) -> DurableStore {
        let store = PostgresStore::connect(db.url()).expect("the PostgreSQL store connects");
        store
            .import(&sample::dataset())
            .expect("the sample world imports");
        DurableStore::Postgres(Arc::new(store))
    }

    /// The store's key in reports and criterion groups.
    pub fn name(&self) -> &'static str {
        match self {
            DurableStore::Sqlite {
                durability: Durability::Normal,
                ..
            } => "sqlite_normal",
            DurableStore::Sqlite {
                durability: Durability::Full,
                ..
            } => "sqlite_full",
            DurableStore::Postgres(_) => "postgres",
        }
    }

    pub fn store(&self) -> Arc<dyn Store> {
        match self {
            DurableStore::Sqlite { store, .. } => store.clone(),
            DurableStore::Postgres(store) => store.clone(),
        }
    }

    pub fn import(&self, data: &DataSet) {
        match self {
            DurableStore::Sqlite { store, .. } => store.import(data),
            DurableStore::Postgres(store) => store.import(data),
        }
        .expect("the prepared carts import");
    }
}

/// Session rows the plain UPDATE + INSERT transactions update in turn.
pub const PLAIN_ROWS: u64 = 1_000;

fn plain_row_id(n: u64) -> String {
    SfId::from_number(KeyPrefix::CartCheckoutSession, n).to_string()
}

/// A raw SQLite connection to `path` as the store connects: WAL, the same `synchronous`, a
/// busy timeout.
fn raw_sqlite(path: &Path, durability: Durability) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(path).expect("the raw database opens");
    conn.busy_timeout(Duration::from_secs(10))
        .expect("a busy timeout");
    conn.pragma_update(None, "journal_mode", "WAL")
        .expect("WAL");
    let sync = match durability {
        Durability::Normal => "NORMAL",
        Durability::Full => "FULL",
    };
    conn.pragma_update(None, "synchronous", sync)
        .expect("synchronous");
    conn
}

/// The plain ceiling on SQLite: one single-row UPDATE (a `plain_sessions` row) and one INSERT
/// (a `plain_history` row) in one transaction, the bodies as wide as the engine's.
pub struct PlainSqlite {
    /// The raw connection, as the store connects (see [`raw_sqlite`]).
    pub conn: rusqlite::Connection,
    session: String,
    history: String,
}

impl PlainSqlite {
    /// A connection to the database at `path`, with the plain tables added to it and
    /// [`PLAIN_ROWS`] session rows.
    pub fn open(path: &Path, durability: Durability, session: String, history: String) -> Self {
        let mut conn = raw_sqlite(path, durability);
        conn.execute_batch(
            "CREATE TABLE plain_sessions (id TEXT PRIMARY KEY, version INTEGER NOT NULL,
                                          body TEXT NOT NULL);
             CREATE TABLE plain_history (seq INTEGER PRIMARY KEY AUTOINCREMENT,
                                         cart_id TEXT NOT NULL, body TEXT NOT NULL);
             CREATE INDEX plain_history_by_cart ON plain_history (cart_id, seq);",
        )
        .expect("the plain tables");
        let tx = conn.transaction().expect("a transaction");
        for n in 0..PLAIN_ROWS {
            tx.execute(
                "INSERT INTO plain_sessions (id, version, body) VALUES (?1, 1, ?2)",
                rusqlite::params![plain_row_id(n), session],
            )
            .expect("a plain row");
        }
        tx.commit().expect("the plain rows commit");
        PlainSqlite {
            conn,
            session,
            history,
        }
    }

    /// One transaction: update session row `n % PLAIN_ROWS`, insert one history row.
    pub fn update_insert(&mut self, n: u64) {
        let id = plain_row_id(n % PLAIN_ROWS);
        // IMMEDIATE, as the store's commits begin.
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .expect("a transaction");
        let updated = tx
            .prepare_cached(
                "UPDATE plain_sessions SET version = version + 1, body = ?1 WHERE id = ?2",
            )
            .and_then(|mut s| s.execute(rusqlite::params![self.session, id]))
            .expect("the update");
        assert_eq!(updated, 1);
        tx.prepare_cached("INSERT INTO plain_history (cart_id, body) VALUES (?1, ?2)")
            .and_then(|mut s| s.execute(rusqlite::params![id, self.history]))
            .expect("the insert");
        tx.commit().expect("the commit");
    }
}

/// The plain ceiling on PostgreSQL, through the `postgres` client the store uses, READ
/// COMMITTED as the store's commits, its statements prepared once.
pub struct PlainPostgres {
    pub client: postgres::Client,
    update: postgres::Statement,
    insert: postgres::Statement,
    session: Value,
    history: Value,
}

impl PlainPostgres {
    /// A connection to `db`, with the plain tables added to it and [`PLAIN_ROWS`] session rows.
    pub fn open(db: &support::TestDb, session: Value, history: Value) -> Self {
        let mut client = db.client();
        client
            .batch_execute(
                "CREATE TABLE plain_sessions (id text PRIMARY KEY, version bigint NOT NULL,
                                              body jsonb NOT NULL);
                 CREATE TABLE plain_history (seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                                             cart_id text NOT NULL, body jsonb NOT NULL);
                 CREATE INDEX plain_history_by_cart ON plain_history (cart_id, seq);",
            )
            .expect("the plain tables");
        for n in 0..PLAIN_ROWS {
            client
                .execute(
                    "INSERT INTO plain_sessions (id, version, body) VALUES ($1, 1, $2)",
                    &[&plain_row_id(n), &Json(&session)],
                )
                .expect("a plain row");
        }
        let update = client
            .prepare("UPDATE plain_sessions SET version = version + 1, body = $1 WHERE id = $2")
            .expect("the update prepares");
        let insert = client
            .prepare("INSERT INTO plain_history (cart_id, body) VALUES ($1, $2)")
            .expect("the insert prepares");
        PlainPostgres {
            client,
            update,
            insert,
            session,
            history,
        }
    }

    /// One transaction: update session row `n % PLAIN_ROWS`, insert one history row.
    pub fn update_insert(&mut self, n: u64) {
        let id = plain_row_id(n % PLAIN_ROWS);
        let mut tx = self.client.transaction().expect("a transaction");
        let updated = tx
            .execute(&self.update, &[&Json(&self.session), &id])
            .expect("the update");
        assert_eq!(updated, 1);
        tx.execute(&self.insert, &[&id, &Json(&self.history)])
            .expect("the insert");
        tx.commit().expect("the commit");
    }
}
