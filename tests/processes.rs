//! Real `cartflow worker` processes on one database: several workers share a stream of
//! inventory checks, and workers killed with SIGKILL at random points lose nothing that was
//! acknowledged. Checkouts are driven through the library on the same database while the
//! workers run.
//!
//! Each scenario takes a [`Target`]: the SQLite one lives here; another database runs the
//! same scenario by implementing `Target` and calling the scenario function. Assertions are
//! about outcomes only (what the database holds, what each process acknowledged), never
//! about timing; the deadlines only keep a broken build from hanging.

#![cfg(unix)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use cartflow::engine::EngineConfig;
use cartflow::ids::RandomIds;
use cartflow::machine::{Command as Cmd, Event, Machine, OperationSettings};
use cartflow::model::{OperationStatus, OutputType, SessionState, SfId};
use cartflow::sample;
use cartflow::store::{DataSet, Durability, PostgresStore, SqliteStore};
use cartflow::{Engine, Store};
use proptest::prelude::RngExt;
use proptest::test_runner::{RngAlgorithm, TestRng};
use serde_json::{Value, json};
use tempfile::TempDir;

const BIN: &str = env!("CARGO_BIN_EXE_cartflow");

/// Carts in each scenario.
const CARTS: u64 = 150;
/// Lines per cart: enough that loading and checking a cart takes a moment.
const LINES: u64 = 500;
/// SKUs in stock. Even carts spread their lines over all of them, wanting exactly the
/// units in stock of each; odd carts over [`SHORT_SKUS`] of them, wanting more.
const SKUS: u64 = 10;
const UNITS: u32 = (LINES / SKUS) as u32;
const SHORT_SKUS: u64 = 4;
const _: () = assert!(LINES.is_multiple_of(SKUS) && LINES / SHORT_SKUS > LINES / SKUS);
/// How long any phase may take before the test gives up (a hang, not a measurement).
const DEADLINE: Duration = Duration::from_secs(90);

/// A database the scenarios run on: the `--data` value worker processes get, and the same
/// database through the library.
#[path = "support/mod.rs"]
mod support;

trait Target {
    /// The `--data` argument of `cartflow worker`.
    fn data_arg(&self) -> String;
    /// The database through the library.
    fn store(&self) -> Arc<dyn Store>;
    /// Writes the records the scenario starts from.
    fn seed(&self, data: &DataSet);
    /// The database's own consistency check.
    fn check_integrity(&self);
}

/// A SQLite file in a temporary directory.
struct SqliteTarget {
    _dir: TempDir,
    store: Arc<SqliteStore>,
}

impl SqliteTarget {
    fn new() -> SqliteTarget {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("cartflow.db"), Durability::Normal).unwrap();
        SqliteTarget {
            _dir: dir,
            store: Arc::new(store),
        }
    }
}

impl Target for SqliteTarget {
    fn data_arg(&self) -> String {
        format!("sqlite:{}", self.store.path().display())
    }

    fn store(&self) -> Arc<dyn Store> {
        self.store.clone()
    }

    fn seed(&self, data: &DataSet) {
        self.store.import(data).unwrap();
    }

    fn check_integrity(&self) {
        self.store.integrity_check().unwrap();
    }
}

/// A fresh database on the test harness's PostgreSQL.
struct PostgresTarget {
    db: support::TestDb,
    store: Arc<PostgresStore>,
}

impl PostgresTarget {
    fn new() -> Option<PostgresTarget> {
        let db = support::postgres()?;
        let store = Arc::new(PostgresStore::connect(db.url()).unwrap());
        Some(PostgresTarget { db, store })
    }
}

impl Target for PostgresTarget {
    fn data_arg(&self) -> String {
        self.db.cli_url()
    }

    fn store(&self) -> Arc<dyn Store> {
        self.store.clone()
    }

    fn seed(&self, data: &DataSet) {
        self.store.import(data).unwrap();
    }

    fn check_integrity(&self) {
        // PostgreSQL checks its own pages; what is ours to check is that the invariants the
        // schema enforces still hold row by row.
        let mut client = self.db.client();
        for sql in [
            "SELECT cart_id FROM operations WHERE status IN ('New', 'Running')
             GROUP BY cart_id HAVING count(*) > 1",
            "SELECT cart_id FROM sessions WHERE NOT is_archived GROUP BY cart_id HAVING count(*) > 1",
        ] {
            assert!(client.query(sql, &[]).unwrap().is_empty(), "{sql}");
        }
    }
}

#[test]
fn three_worker_processes_share_a_stream_of_work_on_postgres() {
    if let Some(target) = PostgresTarget::new() {
        workers_share_a_stream_of_work(&target);
    }
}

#[test]
fn sigkilled_worker_processes_lose_no_acknowledged_commit_on_postgres() {
    if let Some(target) = PostgresTarget::new() {
        killed_workers_lose_nothing(&target);
    }
}

#[test]
fn three_worker_processes_share_a_stream_of_work_on_sqlite() {
    workers_share_a_stream_of_work(&SqliteTarget::new());
}

#[test]
fn sigkilled_worker_processes_lose_no_acknowledged_commit_on_sqlite() {
    killed_workers_lose_nothing(&SqliteTarget::new());
}

/// The sample world plus [`CARTS`] bulk carts: even ones fit the stock, odd ones do not.
fn world() -> DataSet {
    let mut data = sample::dataset();
    for n in 0..CARTS {
        let skus = if n % 2 == 0 { SKUS } else { SHORT_SKUS };
        let (cart, items) = sample::bulk_cart(n, LINES, skus);
        data.carts.push(cart);
        data.items.extend(items);
    }
    data.stock.extend(sample::bulk_stock(SKUS, UNITS));
    data
}

fn cart_id(n: u64) -> SfId {
    sample::bulk_cart(n, 0, 1).0.id
}

/// How a cart's check must end.
fn expected(n: u64) -> OperationStatus {
    if n.is_multiple_of(2) {
        OperationStatus::Complete
    } else {
        OperationStatus::Error
    }
}

/// What the library acknowledged for one cart: its session and its operation.
#[derive(Debug, Clone, Copy)]
struct Started {
    cart: u64,
    session: SfId,
    operation: SfId,
}

/// The driver: an engine on the same database that starts checkouts and never runs
/// operations. Its operations may be retried many times, so every outcome is the provider's.
fn driver(target: &dyn Target) -> Engine {
    Engine::new(target.store())
        .with_ids(Arc::new(RandomIds))
        .with_config(EngineConfig {
            operations: OperationSettings {
                retry_limit: 1_000,
                ..OperationSettings::default()
            },
            ..EngineConfig::default()
        })
}

/// Walks cart `n` to a locked Inventory step and starts its inventory check.
fn start_check(engine: &Engine, n: u64) -> Started {
    let buyer = sample::buyer_id().to_string();
    let cart = json!({"cartId": cart_id(n).to_string()});
    let output = |result: cartflow::ActionResult, key: &str| -> SfId {
        assert!(result.is_success, "cart {n}: {:?}", result.errors);
        result.output_values.unwrap()[key]
            .as_str()
            .unwrap()
            .parse()
            .unwrap()
    };
    let session = output(
        engine.invoke("checkoutSessionAction", &cart, &buyer),
        "requestId",
    );
    for (from, to) in [
        ("Start", "Shipping Address"),
        ("Shipping Address", "Inventory"),
    ] {
        engine
            .execute(
                &buyer,
                Cmd::Advance {
                    session_id: session.to_string(),
                    state: to.into(),
                    exp_current_state: Some(from.into()),
                },
            )
            .unwrap();
    }
    let lock = json!({"checkoutSessionId": session.to_string(),
                      "expCurrentState": "Inventory", "nextState": "Confirm Price"});
    output(
        engine.invoke("updateCheckoutSessionStateAction", &lock, &buyer),
        "requestId",
    );
    let operation = output(
        engine.invoke("checkCartInventoryAction", &cart, &buyer),
        "backgroundOperationId",
    );
    Started {
        cart: n,
        session,
        operation,
    }
}

/// One `cartflow worker` process, its stdout and stderr in files.
struct Worker {
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Worker {
    fn spawn(target: &dyn Target, logs: &Path, name: &str, extra: &[&str]) -> Worker {
        let stdout = logs.join(format!("{name}.out"));
        let stderr = logs.join(format!("{name}.err"));
        let child = Command::new(BIN)
            .args(["worker", "--data", &target.data_arg()])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(File::create(&stdout).unwrap())
            .stderr(File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        Worker {
            child,
            stdout,
            stderr,
        }
    }

    fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Waits until the worker has installed its signal handler (it says so on stderr).
    fn wait_ready(&self) {
        let start = Instant::now();
        while !self.stderr().contains("thread(s) on") {
            assert!(start.elapsed() < DEADLINE, "never ready: {}", self.stderr());
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGTERM, then the exit status.
    fn terminate(mut self) -> Option<i32> {
        self.wait_ready();
        assert!(support::server::sigterm(&self.child));
        self.wait()
    }

    /// SIGKILL (what `Child::kill` sends on Unix).
    fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Waits for the process to end by itself.
    fn wait(&mut self) -> Option<i32> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            if start.elapsed() > DEADLINE {
                self.kill();
                panic!("the worker did not exit: {}", self.stderr());
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A failing test must not leave workers running.
impl Drop for Worker {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Every complete line a worker wrote on stdout (a line cut short by SIGKILL is no report).
fn reports(paths: &[PathBuf]) -> Vec<Value> {
    let mut lines = Vec::new();
    for path in paths {
        let text = fs::read_to_string(path).unwrap();
        let complete = &text[..text.rfind('\n').map_or(0, |end| end + 1)];
        for line in complete.lines() {
            lines.push(serde_json::from_str(line).unwrap());
        }
    }
    lines
}

/// Waits until every started operation is Complete or Error.
fn wait_until_terminal(store: &dyn Store, started: &[Started]) {
    let start = Instant::now();
    loop {
        let open = started
            .iter()
            .filter(|s| {
                let op = store.operation(&s.operation).unwrap().unwrap();
                op.status.is_active()
            })
            .count();
        if open == 0 {
            return;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "{open} operations never finished"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// What the checks found, for the test's output.
#[derive(Debug, Default)]
struct Tally {
    claims: u32,
    requeues: u32,
    applied_reports: usize,
    discarded_reports: usize,
}

/// The checks every scenario ends with. `all_reported`: every operation's final result must
/// have been reported (no worker died after committing it).
fn check_outcome(
    target: &dyn Target,
    started: &[Started],
    lines: &[Value],
    all_reported: bool,
) -> Tally {
    let store = target.store();
    target.check_integrity();
    let mut tally = Tally::default();

    // Every acknowledged commit of the driver is there, and every operation ended as its
    // cart's stock says, with no session left processing.
    assert_eq!(started.len() as u64, CARTS);
    for s in started {
        let op = store
            .operation(&s.operation)
            .unwrap()
            .expect("acknowledged");
        assert_eq!(op.cart_id, cart_id(s.cart));
        assert_eq!(op.checkout_session_id, s.session);
        assert_eq!(op.status, expected(s.cart), "cart {}: {op:?}", s.cart);
        let sessions = store.sessions_of(&cart_id(s.cart)).unwrap();
        assert_eq!(sessions.len(), 1);
        let session = &sessions[0];
        assert_eq!(session.id, s.session);
        assert!(!session.is_processing, "{session:?}");
        let state = match op.status {
            OperationStatus::Complete => SessionState::ConfirmPrice,
            _ => SessionState::Error,
        };
        assert_eq!(session.state, Some(state));
        // A result applied twice would write its validation outputs twice.
        let outputs = store.validation_outputs(&op.cart_id).unwrap();
        let wanted = if op.status == OperationStatus::Error {
            SHORT_SKUS as usize
        } else {
            0
        };
        assert_eq!(outputs.len(), wanted, "cart {}", s.cart);
        assert!(
            outputs
                .iter()
                .all(|o| o.output_type == OutputType::Inventory
                    && o.background_operation_id == Some(op.id))
        );

        // The history: created New; each attempt a claim, then a requeue or the one end.
        let history = store.history(&op.cart_id).unwrap();
        let moves: Vec<_> = history
            .iter()
            .filter(|h| h.machine == Machine::Operation)
            .collect();
        assert!(moves.iter().all(|h| h.record == op.id));
        let (first, rest) = moves.split_first().expect("a history");
        assert!(
            matches!(first.event, Event::Action(_))
                && (first.from.as_str(), first.to.as_str()) == ("no operation", "New"),
            "{first:?}"
        );
        let mut node = "New".to_owned();
        let mut claims = 0;
        for h in rest {
            assert_eq!(h.from, node, "cart {}: {moves:?}", s.cart);
            let step = (h.event, h.from.as_str(), h.to.as_str());
            match step {
                (Event::Claim, "New", "Running") => claims += 1,
                (Event::Requeue, "Running", "New") => tally.requeues += 1,
                (Event::Succeed, "Running", "Complete") | (Event::Fail, "Running", "Error") => {}
                other => panic!("cart {}: an undeclared operation move {other:?}", s.cart),
            }
            node.clone_from(&h.to);
        }
        assert_eq!(node, op.status.as_str(), "ends once, where the record is");
        assert_eq!(claims, op.attempt, "one claim per attempt");
        tally.claims += claims;

        // No cart ever had two active operations, replaying every operation move.
        let mut active = BTreeSet::new();
        for h in history.iter().filter(|h| h.machine == Machine::Operation) {
            if matches!(h.to.as_str(), "New" | "Running") {
                active.insert(h.record);
            } else {
                active.remove(&h.record);
            }
            assert!(active.len() <= 1, "cart {}", s.cart);
        }
    }

    // What the workers acknowledged is what the database holds, and no operation was
    // applied twice.
    let mut applied: BTreeMap<SfId, usize> = BTreeMap::new();
    for line in lines {
        let id: SfId = line["operationId"].as_str().unwrap().parse().unwrap();
        if line["applied"] == true {
            *applied.entry(id).or_default() += 1;
            let op = store.operation(&id).unwrap().expect("reported");
            assert_eq!(line["status"], op.status.as_str(), "{line}");
            tally.applied_reports += 1;
        } else {
            tally.discarded_reports += 1;
        }
    }
    assert!(
        applied.values().all(|&n| n == 1),
        "an operation was applied twice"
    );
    if all_reported {
        assert_eq!(applied.len(), started.len(), "every operation was reported");
    }
    tally
}

/// Three worker processes of two threads each take checks as the driver starts them, then
/// stop on SIGTERM.
fn workers_share_a_stream_of_work(target: &dyn Target) {
    let begin = Instant::now();
    target.seed(&world());
    let logs = tempfile::tempdir().unwrap();
    let workers: Vec<Worker> = (0..3)
        .map(|n| {
            Worker::spawn(
                target,
                logs.path(),
                &format!("worker-{n}"),
                &["--threads", "2"],
            )
        })
        .collect();
    let engine = driver(target);
    let started: Vec<Started> = (0..CARTS).map(|n| start_check(&engine, n)).collect();
    wait_until_terminal(target.store().as_ref(), &started);
    let outputs: Vec<PathBuf> = workers.iter().map(|w| w.stdout.clone()).collect();
    for worker in workers {
        assert_eq!(worker.terminate(), Some(0), "a clean stop on SIGTERM");
    }

    let lines = reports(&outputs);
    let tally = check_outcome(target, &started, &lines, true);
    assert_eq!(tally.discarded_reports, 0);
    let per_worker: Vec<usize> = outputs
        .iter()
        .map(|o| reports(std::slice::from_ref(o)).len())
        .collect();
    eprintln!(
        "shared stream: {CARTS} checks by 3 workers {per_worker:?}, {} claims, {} requeues, {:.1} s",
        tally.claims,
        tally.requeues,
        begin.elapsed().as_secs_f64()
    );
}

/// Workers are killed with SIGKILL at random points and restarted while the driver starts
/// checks; a short lease lets survivors sweep and retry the dead workers' claims. Then the
/// last workers are killed too, a last batch of checks is started with no worker alive, and
/// `--exit-when-idle` workers drain what is left.
fn killed_workers_lose_nothing(target: &dyn Target) {
    const KILLS: u32 = 50;
    /// Checks started once every worker is dead: the drainers must run them.
    const TAIL: u64 = 10;
    let lease = ["--lease-ms", "300", "--heartbeat-ms", "50"];
    let begin = Instant::now();
    target.seed(&world());
    let logs = tempfile::tempdir().unwrap();
    let mut spawned = 0;
    let mut spawn = |extra: &[&str]| {
        spawned += 1;
        Worker::spawn(target, logs.path(), &format!("worker-{spawned}"), extra)
    };
    let mut workers: Vec<Worker> = (0..3).map(|_| spawn(&lease)).collect();
    let mut outputs = Vec::new();

    let started = Arc::new(Mutex::new(Vec::new()));
    let feeding = {
        let engine = driver(target);
        let started = Arc::clone(&started);
        thread::spawn(move || {
            for n in 0..CARTS - TAIL {
                let s = start_check(&engine, n);
                started.lock().unwrap().push(s);
            }
        })
    };

    let mut rng = TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]);
    let mut kills = 0;
    while kills < KILLS || !feeding.is_finished() {
        thread::sleep(Duration::from_millis(rng.random_range(5..60)));
        let victim = rng.random_range(0..workers.len());
        workers[victim].kill();
        kills += 1;
        outputs.push(workers[victim].stdout.clone());
        workers[victim] = spawn(&lease);
        assert!(begin.elapsed() < DEADLINE, "the kill phase never ended");
    }
    feeding.join().unwrap();
    let fed = begin.elapsed();
    for worker in &mut workers {
        worker.kill();
        kills += 1;
        outputs.push(worker.stdout.clone());
    }
    let mut started = started.lock().unwrap().clone();
    let engine = driver(target);
    let tail: Vec<Started> = (CARTS - TAIL..CARTS)
        .map(|n| start_check(&engine, n))
        .collect();
    started.extend(&tail);
    let store = target.store();
    let count = |status: OperationStatus| {
        started
            .iter()
            .filter(|s| store.operation(&s.operation).unwrap().unwrap().status == status)
            .count()
    };
    let (running, waiting) = (count(OperationStatus::Running), count(OperationStatus::New));
    assert!(waiting >= TAIL as usize);

    let mut drain_args = lease.to_vec();
    drain_args.push("--exit-when-idle");
    let mut drainers: Vec<Worker> = (0..2).map(|_| spawn(&drain_args)).collect();
    let mut drained = Vec::new();
    for drainer in &mut drainers {
        assert_eq!(drainer.wait(), Some(0), "{}", drainer.stderr());
        drained.push(drainer.stdout.clone());
    }
    // Only the drainers were alive for the tail: they reported every one of its results.
    let drained_ids: BTreeSet<String> = reports(&drained)
        .iter()
        .filter(|line| line["applied"] == true)
        .map(|line| line["operationId"].as_str().unwrap().to_owned())
        .collect();
    for s in &tail {
        assert!(drained_ids.contains(&s.operation.to_string()), "{s:?}");
    }
    outputs.extend(drained);

    let lines = reports(&outputs);
    let tally = check_outcome(target, &started, &lines, false);
    assert!(kills >= KILLS);
    eprintln!(
        "crash safety: {kills} SIGKILLs over {:.1} s of feeding; after the last kill {running} \
         operations Running and {waiting} New; {} claims, {} requeues after lost leases, {} \
         results reported ({} lost with their worker, {} reports discarded as stale), {:.1} s \
         in all",
        fed.as_secs_f64(),
        tally.claims,
        tally.requeues,
        tally.applied_reports,
        started.len() - tally.applied_reports,
        tally.discarded_reports,
        begin.elapsed().as_secs_f64()
    );
}
