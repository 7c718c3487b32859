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

mod common;

use common::{
    DurableStore, PlainPostgres, PlainSqlite, Stage, WORKER_CARTS, buyer, cart_input, check_out,
    engine_on, invoke_inventory, merge, prepared, support, worker_run,
};

use std::fs::File;
use std::io::Write as _;
use std::os::unix::fs::FileExt as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cartflow::machine::Snapshot;
use cartflow::sample;
use cartflow::store::{Commit, Durability, LoadKey};
use cartflow::{MemoryStore, Store, StoreError};
use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use serde_json::Value;
use tempfile::TempDir;

/// Worker processes per run of the worker benchmark.
const WORKER_PROCESSES: [usize; 3] = [1, 2, 4];

/// 4 KiB blocks of the file the disk-sync probe overwrites in turn (4 MiB, about a WAL's
/// size between checkpoints).
const PROBE_BLOCKS: u64 = 1_024;

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
        operation_counts, web_stores, cart, carts_after, cart_items, cart_item, validation_output, session, sessions_of,
        operation, operations_of, order, validation_outputs, history, owner_of);
    delegate_store!(inner => begin_keyed, keep_answer, release_key, events_after, last_event,
        webhook_cursor, advance_webhook, deliveries);
}

/// Prints what the two measured operations ask of a store (the same whatever the store).
fn print_store_calls() {
    for (what, stage) in [
        ("one checkCartInventoryAction", Stage::InventoryLocked),
        ("one checkout (Start to activated order)", Stage::Active),
    ] {
        let part = prepared(1, stage);
        let carts = part.carts;
        let mut data = sample::dataset();
        merge(&mut data, part.data);
        let counting = Arc::new(Counting {
            inner: Arc::new(MemoryStore::from_dataset(data).expect("a valid data set")),
            commits: AtomicU64::new(0),
            loads: AtomicU64::new(0),
            reads: AtomicU64::new(0),
        });
        let engine = engine_on(counting.clone());
        match stage {
            Stage::Active => check_out(&engine, &carts[0]),
            _ => invoke_inventory(&engine, &carts[0]),
        }
        println!(
            "store calls of {what}: {} commits, {} snapshot loads, {} other reads",
            counting.commits.load(Ordering::Relaxed),
            counting.loads.load(Ordering::Relaxed),
            counting.reads.load(Ordering::Relaxed)
        );
    }
}

/// A database under test: a store on it, and the means to open a raw connection of the same
/// kind and settings (on a database of its own).
struct Target {
    durable: DurableStore,
    place: Place,
}

/// Where a target's store lives, kept as long as the store.
enum Place {
    /// The SQLite file's directory, on the default temporary directory's file system, which
    /// is where the raw database goes too.
    Dir(TempDir),
    Database {
        _db: support::TestDb,
    },
}

impl Target {
    /// A new SQLite file holding the sample world.
    fn sqlite(durability: Durability) -> Target {
        let dir = tempfile::tempdir().expect("a temporary directory");
        Target {
            durable: DurableStore::sqlite(&dir.path().join("cartflow.db"), durability),
            place: Place::Dir(dir),
        }
    }

    /// A new PostgreSQL database holding the sample world, or `None` without PostgreSQL.
    fn postgres() -> Option<Target> {
        let db = support::postgres()?;
        Some(Target {
            durable: DurableStore::postgres(&db),
            place: Place::Database { _db: db },
        })
    }

    /// A raw connection to a fresh database beside this one, with `PLAIN_ROWS` session rows.
    fn raw(&self, bodies: &Bodies) -> Option<Box<dyn Raw>> {
        match (&self.durable, &self.place) {
            (DurableStore::Sqlite { durability, .. }, Place::Dir(dir)) => {
                Some(Box::new(PlainSqlite::open(
                    &dir.path().join("raw.db"),
                    *durability,
                    bodies.session.to_string(),
                    bodies.history.to_string(),
                )))
            }
            _ => RawPostgres::open(bodies).map(|raw| Box::new(raw) as _),
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
        let part = prepared(1, Stage::InventoryLocked).data;
        Bodies {
            session: serde_json::to_value(&part.sessions[0]).expect("a session serializes"),
            history: serde_json::to_value(part.history.last().expect("a history entry"))
                .expect("a history entry serializes"),
        }
    }
}

/// A raw connection: one single-row UPDATE plus one INSERT per transaction.
trait Raw {
    /// One transaction: update session row `n % PLAIN_ROWS`, insert one history row.
    fn transaction(&mut self, n: u64);
}

impl Raw for PlainSqlite {
    fn transaction(&mut self, n: u64) {
        self.update_insert(n);
    }
}

/// PostgreSQL on a database of its own on the same server.
struct RawPostgres {
    _db: support::TestDb,
    plain: PlainPostgres,
}

impl RawPostgres {
    fn open(bodies: &Bodies) -> Option<RawPostgres> {
        let db = support::postgres()?;
        let plain = PlainPostgres::open(&db, bodies.session.clone(), bodies.history.clone());
        Some(RawPostgres { _db: db, plain })
    }
}

impl Raw for RawPostgres {
    fn transaction(&mut self, n: u64) {
        self.plain.update_insert(n);
    }
}

/// The raw ceiling, the action and the whole checkout on one database, side by side.
fn target_benches(c: &mut Criterion, target: &Target, bodies: &Bodies) {
    let engine = engine_on(target.durable.store());
    let buyer = buyer();
    // Once outside the measurement: a prepared cart checks out on this store.
    let part = prepared(1, Stage::Active);
    target.durable.import(&part.data);
    check_out(&engine, &part.carts[0]);

    let mut group = c.benchmark_group(target.durable.name());
    group.sampling_mode(SamplingMode::Flat);
    group.throughput(Throughput::Elements(1));
    if let (
        DurableStore::Sqlite {
            durability: Durability::Full,
            ..
        },
        Place::Dir(dir),
    ) = (&target.durable, &target.place)
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
            let part = prepared(iters, Stage::InventoryLocked);
            target.durable.import(&part.data);
            let carts = part.carts;
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
            let part = prepared(iters, Stage::Active);
            target.durable.import(&part.data);
            let carts = part.carts;
            let started = Instant::now();
            for cart in &carts {
                check_out(&engine, cart);
            }
            started.elapsed()
        })
    });
    group.finish();
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
