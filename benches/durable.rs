//! Benchmarks of the durable stores: `checkCartInventoryAction` starts and whole checkouts on
//! SQLite (`synchronous` NORMAL and FULL) and PostgreSQL, each beside the raw database's rate
//! for one single-row UPDATE plus one INSERT in one transaction on the same kind of
//! connection (the ceiling a commit can reach), and the throughput of 1, 2 and 4
//! `cartflow worker` processes sharing one PostgreSQL database.
//!
//! Run with `cargo bench --bench durable` (Cargo builds the `cartflow` binary the worker
//! benchmark spawns). PostgreSQL comes from the test harness: a throw-away cluster when
//! `initdb` and `pg_ctl` are installed, or the server `CARTFLOW_TEST_DATABASE_URL` names;
//! without either the PostgreSQL benchmarks are skipped with a line saying so. Results and
//! the machine they came from are in `docs/performance.md`.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeSet;
use std::fs::File;
use std::io::Write as _;
use std::os::unix::fs::FileExt as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cartflow::flow::{BuyerInput, Drive, Waiting, drive};
use cartflow::ids::RandomIds;
use cartflow::machine::{Command as Cmd, Output, Snapshot};
use cartflow::model::{KeyPrefix, OperationStatus, SfId};
use cartflow::sample;
use cartflow::store::{Commit, DataSet, Durability, LoadKey, PostgresStore, SqliteStore};
use cartflow::{Engine, MemoryStore, Store, StoreError};
use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use postgres::types::Json;
use rusqlite::TransactionBehavior;
use serde_json::{Value, json};
use tempfile::TempDir;

/// The worker binary; Cargo builds it (bench profile) before running a benchmark.
const BIN: &str = env!("CARGO_BIN_EXE_cartflow");

/// Carts seeded with a New inventory operation for each worker-process run.
const WORKER_CARTS: u64 = 400;

/// Worker processes per run of the worker benchmark.
const WORKER_PROCESSES: [usize; 3] = [1, 2, 4];

/// 4 KiB blocks of the file the disk-sync probe overwrites in turn (4 MiB, about a WAL's
/// size between checkpoints).
const PROBE_BLOCKS: u64 = 1_024;

/// Session rows the raw transactions update in turn.
const RAW_ROWS: u64 = 1_000;

/// Record numbers for copied carts and lines: every preparation takes new ones, so the carts
/// of successive preparations can be imported into one database.
static NEXT_CART: AtomicU64 = AtomicU64::new(1 << 32);

fn buyer() -> String {
    sample::buyer_id().to_string()
}

/// How far carts are taken before a measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Active, no session.
    Active,
    /// Session at Inventory with the step locked (IsProcessing): ready for
    /// `checkCartInventoryAction`.
    InventoryLocked,
    /// The inventory check invoked: a New operation waits for a worker.
    InventoryStarted,
}

/// `n` fresh copies of the sample in-stock cart (three lines) taken to `stage` through the
/// library on an in-memory store: the records of those carts only, ready to import into a
/// store that holds the sample world, and the carts.
fn prepared(n: u64, stage: Stage) -> (DataSet, Vec<SfId>) {
    let mut data = sample::dataset();
    let first = NEXT_CART.fetch_add(n, Ordering::Relaxed);
    let carts = sample::add_in_stock_copies(&mut data, first, n);
    if stage != Stage::Active {
        let integrations = sample::integrations(&data);
        let store = Arc::new(MemoryStore::from_dataset(data).expect("a valid data set"));
        let engine = Engine::new(store.clone())
            .with_ids(Arc::new(RandomIds))
            .with_integrations(integrations);
        for cart in &carts {
            lock_inventory(&engine, cart);
            if stage == Stage::InventoryStarted {
                let started =
                    engine.invoke("checkCartInventoryAction", &cart_input(cart), &buyer());
                assert!(started.is_success, "{:?}", started.errors);
            }
        }
        data = store.to_dataset();
    }
    (only_carts(data, &carts), carts)
}

fn cart_input(cart: &SfId) -> Value {
    json!({"cartId": cart.to_string()})
}

/// Starts `cart`'s checkout and walks it to a locked Inventory step.
fn lock_inventory(engine: &Engine, cart: &SfId) {
    let buyer = buyer();
    let start = Cmd::StartSession {
        cart_id: cart.to_string(),
        initial_state: Some("Start".into()),
    };
    let session = match engine.execute(&buyer, start) {
        Ok(Output::RequestId(id)) => id.to_string(),
        other => panic!("the checkout of {cart} did not start: {other:?}"),
    };
    for (from, to) in [
        ("Start", "Shipping Address"),
        ("Shipping Address", "Inventory"),
    ] {
        let advance = Cmd::Advance {
            session_id: session.clone(),
            state: to.into(),
            exp_current_state: Some(from.into()),
        };
        engine
            .execute(&buyer, advance)
            .expect("the screen step advances");
    }
    let lock = Cmd::UpdateSession {
        session_id: session,
        next_state: "Confirm Price".into(),
        exp_current_state: Some("Inventory".into()),
    };
    engine
        .execute(&buyer, lock)
        .expect("the Inventory step locks");
}

/// The records of `carts` in `data`, without the world they live in.
fn only_carts(data: DataSet, carts: &[SfId]) -> DataSet {
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

/// An engine on `store` as a server process has it: random IDs, the sample providers.
fn engine_on(store: Arc<dyn Store>) -> Engine {
    Engine::new(store)
        .with_ids(Arc::new(RandomIds))
        .with_integrations(sample::integrations(&sample::dataset()))
}

fn buyer_input() -> BuyerInput {
    BuyerInput {
        deliver_to: Some(sample::denver()),
        delivery_method_id: None,
        payment_token: Some(sample::GOOD_TOKEN.into()),
        place_order: true,
    }
}

fn check_out(engine: &Engine, cart: &SfId) {
    match drive(engine, &buyer(), cart, &buyer_input(), Waiting::RunInline) {
        Ok(Drive::Complete { .. }) => {}
        other => panic!("cart {cart} did not complete: {other:?}"),
    }
}

/// A store that counts what is asked of it, to tell what one checkout costs a database.
struct Counting {
    inner: Arc<dyn Store>,
    commits: AtomicU64,
    loads: AtomicU64,
    reads: AtomicU64,
}

impl Counting {
    fn read(&self) {
        self.reads.fetch_add(1, Ordering::Relaxed);
    }
}

// `claim_next` is left to the default, so claims are counted as the load and commit they are.
impl Store for Counting {
    fn load(&self, key: LoadKey) -> Result<Snapshot, StoreError> {
        self.loads.fetch_add(1, Ordering::Relaxed);
        self.inner.load(key)
    }
    fn commit(&self, commit: &Commit) -> Result<(), StoreError> {
        self.commits.fetch_add(1, Ordering::Relaxed);
        self.inner.commit(commit)
    }
    delegate_store!(inner, before read => user, claimable_operations, expired_operations,
        operation_counts, cart, cart_items, cart_item, validation_output, session, sessions_of,
        operation, operations_of, order, validation_outputs, history, owner_of);
    delegate_store!(inner => begin_keyed, keep_answer, release_key);
}

/// Prints what the two measured operations ask of a store (the same whatever the store).
fn print_store_calls() {
    for (what, stage) in [
        ("one checkCartInventoryAction", Stage::InventoryLocked),
        ("one checkout (Start to activated order)", Stage::Active),
    ] {
        let (part, carts) = prepared(1, stage);
        let mut data = sample::dataset();
        merge(&mut data, part);
        let counting = Arc::new(Counting {
            inner: Arc::new(MemoryStore::from_dataset(data).expect("a valid data set")),
            commits: AtomicU64::new(0),
            loads: AtomicU64::new(0),
            reads: AtomicU64::new(0),
        });
        let engine = engine_on(counting.clone());
        match stage {
            Stage::Active => check_out(&engine, &carts[0]),
            _ => {
                let started =
                    engine.invoke("checkCartInventoryAction", &cart_input(&carts[0]), &buyer());
                assert!(started.is_success, "{:?}", started.errors);
            }
        }
        println!(
            "store calls of {what}: {} commits, {} snapshot loads, {} other reads",
            counting.commits.load(Ordering::Relaxed),
            counting.loads.load(Ordering::Relaxed),
            counting.reads.load(Ordering::Relaxed)
        );
    }
}

fn merge(into: &mut DataSet, part: DataSet) {
    into.carts.extend(part.carts);
    into.items.extend(part.items);
    into.sessions.extend(part.sessions);
    into.operations.extend(part.operations);
    into.validation_outputs.extend(part.validation_outputs);
    into.orders.extend(part.orders);
    into.history.extend(part.history);
}

/// A database under test: a store on it, and the means to open a raw connection of the same
/// kind and settings (on a database of its own).
enum Target {
    Sqlite {
        durability: Durability,
        dir: TempDir,
        store: Arc<SqliteStore>,
    },
    Postgres {
        _db: support::TestDb,
        store: Arc<PostgresStore>,
    },
}

impl Target {
    /// A new SQLite file holding the sample world. Its directory is on the default temporary
    /// directory's file system, which is where the raw database goes too.
    fn sqlite(durability: Durability) -> Target {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = SqliteStore::open(dir.path().join("cartflow.db"), durability)
            .expect("the SQLite store opens");
        store
            .import(&sample::dataset())
            .expect("the sample world imports");
        Target::Sqlite {
            durability,
            dir,
            store: Arc::new(store),
        }
    }

    /// A new PostgreSQL database holding the sample world, or `None` without PostgreSQL.
    fn postgres() -> Option<Target> {
        let db = support::postgres()?;
        let store = PostgresStore::connect(db.url()).expect("the PostgreSQL store connects");
        store
            .import(&sample::dataset())
            .expect("the sample world imports");
        Some(Target::Postgres {
            _db: db,
            store: Arc::new(store),
        })
    }

    fn name(&self) -> &'static str {
        match self {
            Target::Sqlite {
                durability: Durability::Normal,
                ..
            } => "sqlite_normal",
            Target::Sqlite {
                durability: Durability::Full,
                ..
            } => "sqlite_full",
            Target::Postgres { .. } => "postgres",
        }
    }

    fn store(&self) -> Arc<dyn Store> {
        match self {
            Target::Sqlite { store, .. } => store.clone(),
            Target::Postgres { store, .. } => store.clone(),
        }
    }

    fn import(&self, data: &DataSet) {
        match self {
            Target::Sqlite { store, .. } => store.import(data),
            Target::Postgres { store, .. } => store.import(data),
        }
        .expect("the prepared carts import");
    }

    /// A raw connection to a fresh database beside this one, with `RAW_ROWS` session rows.
    fn raw(&self, bodies: &Bodies) -> Option<Box<dyn Raw>> {
        match self {
            Target::Sqlite {
                durability, dir, ..
            } => Some(Box::new(RawSqlite::open(
                &dir.path().join("raw.db"),
                *durability,
                bodies,
            ))),
            Target::Postgres { .. } => RawPostgres::open(bodies).map(|raw| Box::new(raw) as _),
        }
    }
}

/// The bodies the raw transactions write: a real session and a real history entry, as the
/// store serializes them, so the raw rows are as wide as the engine's.
struct Bodies {
    session: Value,
    history: Value,
}

impl Bodies {
    fn sample() -> Bodies {
        let (part, _) = prepared(1, Stage::InventoryLocked);
        Bodies {
            session: serde_json::to_value(&part.sessions[0]).expect("a session serializes"),
            history: serde_json::to_value(part.history.last().expect("a history entry"))
                .expect("a history entry serializes"),
        }
    }
}

/// A raw connection: one single-row UPDATE plus one INSERT per transaction.
trait Raw {
    /// One transaction: update session row `n % RAW_ROWS`, insert one history row.
    fn transaction(&mut self, n: u64);
}

fn row_id(n: u64) -> String {
    SfId::from_number(KeyPrefix::CartCheckoutSession, n).to_string()
}

/// SQLite through rusqlite, as the store connects: WAL, the same `synchronous`, tables
/// shaped like its sessions and history.
struct RawSqlite {
    conn: rusqlite::Connection,
    session: String,
    history: String,
}

impl RawSqlite {
    fn open(path: &Path, durability: Durability, bodies: &Bodies) -> RawSqlite {
        let mut conn = rusqlite::Connection::open(path).expect("the raw database opens");
        conn.pragma_update(None, "journal_mode", "WAL")
            .expect("WAL");
        let sync = match durability {
            Durability::Normal => "NORMAL",
            Durability::Full => "FULL",
        };
        conn.pragma_update(None, "synchronous", sync)
            .expect("synchronous");
        conn.execute_batch(
            "CREATE TABLE sessions (id TEXT PRIMARY KEY, version INTEGER NOT NULL, body TEXT NOT NULL);
             CREATE TABLE history (seq INTEGER PRIMARY KEY AUTOINCREMENT, cart_id TEXT NOT NULL,
                                   body TEXT NOT NULL);
             CREATE INDEX history_by_cart ON history (cart_id, seq);",
        )
        .expect("the raw schema");
        let session = bodies.session.to_string();
        let tx = conn.transaction().expect("a transaction");
        for n in 0..RAW_ROWS {
            tx.execute(
                "INSERT INTO sessions (id, version, body) VALUES (?1, 1, ?2)",
                rusqlite::params![row_id(n), session],
            )
            .expect("a row");
        }
        tx.commit().expect("the rows commit");
        RawSqlite {
            conn,
            session,
            history: bodies.history.to_string(),
        }
    }
}

impl Raw for RawSqlite {
    fn transaction(&mut self, n: u64) {
        let id = row_id(n % RAW_ROWS);
        // IMMEDIATE, as the store's commits begin.
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .expect("a transaction");
        let updated = tx
            .prepare_cached("UPDATE sessions SET version = version + 1, body = ?1 WHERE id = ?2")
            .and_then(|mut s| s.execute(rusqlite::params![self.session, id]))
            .expect("the update");
        assert_eq!(updated, 1);
        tx.prepare_cached("INSERT INTO history (cart_id, body) VALUES (?1, ?2)")
            .and_then(|mut s| s.execute(rusqlite::params![id, self.history]))
            .expect("the insert");
        tx.commit().expect("the commit");
    }
}

/// PostgreSQL through the `postgres` client the store uses, on a database of its own on
/// the same server, tables shaped like the store's, READ COMMITTED as the store's commits.
struct RawPostgres {
    _db: support::TestDb,
    client: postgres::Client,
    update: postgres::Statement,
    insert: postgres::Statement,
    session: Value,
    history: Value,
}

impl RawPostgres {
    fn open(bodies: &Bodies) -> Option<RawPostgres> {
        let db = support::postgres()?;
        let mut client = db.client();
        client
            .batch_execute(
                "CREATE TABLE sessions (id text PRIMARY KEY, version bigint NOT NULL, body jsonb NOT NULL);
                 CREATE TABLE history (seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                                       cart_id text NOT NULL, body jsonb NOT NULL);
                 CREATE INDEX history_by_cart ON history (cart_id, seq);",
            )
            .expect("the raw schema");
        let session = Json(&bodies.session);
        for n in 0..RAW_ROWS {
            client
                .execute(
                    "INSERT INTO sessions (id, version, body) VALUES ($1, 1, $2)",
                    &[&row_id(n), &session],
                )
                .expect("a row");
        }
        let update = client
            .prepare("UPDATE sessions SET version = version + 1, body = $1 WHERE id = $2")
            .expect("the update prepares");
        let insert = client
            .prepare("INSERT INTO history (cart_id, body) VALUES ($1, $2)")
            .expect("the insert prepares");
        Some(RawPostgres {
            _db: db,
            client,
            update,
            insert,
            session: bodies.session.clone(),
            history: bodies.history.clone(),
        })
    }
}

impl Raw for RawPostgres {
    fn transaction(&mut self, n: u64) {
        let id = row_id(n % RAW_ROWS);
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

/// The raw ceiling, the action and the whole checkout on one database, side by side.
fn target_benches(c: &mut Criterion, target: &Target, bodies: &Bodies) {
    let engine = engine_on(target.store());
    let buyer = buyer();
    // Once outside the measurement: a prepared cart checks out on this store.
    let (part, carts) = prepared(1, Stage::Active);
    target.import(&part);
    check_out(&engine, &carts[0]);

    let mut group = c.benchmark_group(target.name());
    group.sampling_mode(SamplingMode::Flat);
    group.throughput(Throughput::Elements(1));
    if let Target::Sqlite {
        durability: Durability::Full,
        dir,
        ..
    } = target
    {
        // The disk's floor under a FULL commit: overwrite 4 KiB of a written file (as a
        // commit writes into a recycled WAL) and wait for it to reach the disk.
        let mut file = File::create(dir.path().join("sync.probe")).expect("a probe file");
        let block = [0_u8; 4096];
        for _ in 0..PROBE_BLOCKS {
            file.write_all(&block).expect("the probe file fills");
        }
        file.sync_all().expect("the probe file syncs");
        let mut n = 0;
        group.bench_function("fdatasync_4k", |b| {
            b.iter(|| {
                n = (n + 1) % PROBE_BLOCKS;
                file.write_all_at(&block, n * 4096).expect("the write");
                file.sync_data().expect("the sync")
            })
        });
    }
    if let Some(mut raw) = target.raw(bodies) {
        let mut n = 0;
        group.bench_function("raw_update_insert", |b| {
            b.iter(|| {
                n += 1;
                raw.transaction(n)
            })
        });
    }
    group.bench_function("check_cart_inventory_action", |b| {
        b.iter_custom(|iters| {
            let (part, carts) = prepared(iters, Stage::InventoryLocked);
            target.import(&part);
            let inputs: Vec<Value> = carts.iter().map(cart_input).collect();
            let started = Instant::now();
            for input in &inputs {
                let result = engine.invoke("checkCartInventoryAction", input, &buyer);
                assert!(result.is_success, "{:?}", result.errors);
            }
            started.elapsed()
        })
    });
    group.bench_function("checkout", |b| {
        b.iter_custom(|iters| {
            let (part, carts) = prepared(iters, Stage::Active);
            target.import(&part);
            let started = Instant::now();
            for cart in &carts {
                check_out(&engine, cart);
            }
            started.elapsed()
        })
    });
    group.finish();
}

/// The `--data` URL of a harness database: the CLI takes URLs; the harness may hand out
/// `key=value` connection strings.
fn cli_url(db: &support::TestDb) -> String {
    if db.url().contains("://") {
        return db.url().to_owned();
    }
    let field = |key: &str| {
        db.url()
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
            .unwrap_or_default()
            .to_owned()
    };
    format!(
        "postgresql:///{}?host={}&port={}&user={}",
        field("dbname"),
        field("host"),
        field("port"),
        field("user")
    )
}

/// One run: a fresh database seeded with `carts` New inventory operations, then the time
/// from spawning `processes` workers (`--exit-when-idle`) until the last one exits. The time
/// includes each process's start (exec, connect, schema check, stock read) and its idle exit
/// (two idle checks a 50 ms poll apart).
fn worker_run(processes: usize, carts: u64) -> Duration {
    let db = support::postgres().expect("PostgreSQL was available a moment ago");
    let (part, carts) = prepared(carts, Stage::InventoryStarted);
    let operations: Vec<SfId> = part.operations.iter().map(|op| op.id).collect();
    assert_eq!(operations.len(), carts.len());
    let mut data = sample::dataset();
    merge(&mut data, part);
    let store = PostgresStore::connect(db.url()).expect("the PostgreSQL store connects");
    store.import(&data).expect("the seeded carts import");
    let url = cli_url(&db);
    let logs = tempfile::tempdir().expect("a temporary directory");

    let started = Instant::now();
    let mut workers: Vec<(Child, std::path::PathBuf)> = (0..processes)
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
        let op = store
            .operation(id)
            .expect("the store reads")
            .expect("the operation");
        assert_eq!(op.status, OperationStatus::Complete, "operation {id}");
    }
    elapsed
}

fn worker_benches(c: &mut Criterion) {
    if !support::postgres_available() {
        println!("workers: skipped, no PostgreSQL cluster could be started");
        return;
    }
    let mut group = c.benchmark_group("workers_postgres");
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(8));
    // One iteration is one run of WORKER_CARTS operations: elements/s are operations/s.
    group.throughput(Throughput::Elements(WORKER_CARTS));
    for processes in WORKER_PROCESSES {
        group.bench_function(format!("{processes}_processes"), |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| worker_run(processes, WORKER_CARTS))
                    .sum()
            })
        });
    }
    group.finish();

    // The fixed cost inside every run above: one process starting and exiting with no work.
    let mut group = c.benchmark_group("workers_postgres_no_work");
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(4));
    group.bench_function("1_processes", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| worker_run(1, 0)).sum())
    });
    group.finish();
}

fn store_benches(c: &mut Criterion) {
    print_store_calls();
    let bodies = Bodies::sample();
    let mut targets = vec![
        Target::sqlite(Durability::Normal),
        Target::sqlite(Durability::Full),
    ];
    match Target::postgres() {
        Some(target) => targets.push(target),
        None => println!("postgres: skipped, no PostgreSQL cluster could be started"),
    }
    for target in &targets {
        target_benches(c, target, &bodies);
    }
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(6))
}

criterion_group! {
    name = benches;
    config = config();
    targets = store_benches, worker_benches
}
criterion_main!(benches);
