//! A deterministic simulation of cartflow in production: several engines and workers over
//! one store, buyers racing in two tabs, and faults injected on purpose, all interleaved by
//! one seeded scheduler ([`baton`]) so that a seed replays its run exactly.
//!
//! Actors, each a thread that runs one task at a time:
//! - buyers: a command the engine permits now (as a client that reads the session does) or
//!   one from a stale or wrong view (inputs, a delivery method, an edit, a cancel, a start);
//!   some are double clicks, some answers are lost and the call is retried;
//! - workers: claim an operation, heartbeat, perform it (the provider may err, panic or hang
//!   past its timeout), report it (sometimes twice), or die holding it;
//! - the operator: sweeps expired leases, moves the clock forward and back, and crashes the
//!   store's process (SQLite opens its file again).
//!
//! The store fails some commits before they apply and loses the answer of others after they
//! applied. After every task the invariants ([`invariants`]) are checked on the real store;
//! at the end the queue is drained and every operation must have ended.

pub mod baton;
pub mod invariants;
pub mod providers;
pub mod store;

use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use cartflow::clock::ManualClock;
use cartflow::engine::{Claim, Performed};
use cartflow::ids::SequentialIds;
use cartflow::machine::{CartEdit, CheckoutDetails, Command, OperationSettings, StepOutcome};
use cartflow::model::SfId;
use cartflow::sample::{self, SampleCart};
use cartflow::store::{DataSet, Durability, SqliteStore};
use cartflow::{CheckoutError, Engine, EngineConfig, MemoryStore, Store, StoreError};
use chrono::{Duration, TimeZone, Utc};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rust_decimal::Decimal;

use baton::Baton;
use providers::{ProviderFault, ProviderFaults};
use store::{FaultRates, SimStore};

/// How long a claim lasts without a heartbeat, in the simulation's time.
const LEASE_MS: u64 = 30_000;
/// How long a provider may take.
const TIMEOUT_MS: u64 = 10_000;

/// Which store the engines share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backing {
    /// The memory store.
    Memory,
    /// SQLite in a temporary file (a crash opens the file again).
    Sqlite,
}

/// One run's settings.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Everything the run does follows from it.
    pub seed: u64,
    /// Tasks to run before the drain.
    pub steps: u64,
    /// The store.
    pub backing: Backing,
    /// The broken engine of the simulator's own test: commits without compare-and-set.
    pub broken_cas: bool,
}

/// What a run did.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Tasks run (the drain not included).
    pub steps: u64,
    /// One line per task, in order.
    pub log: Vec<String>,
    /// The first invariant that failed, and after which step.
    pub violation: Option<(u64, String)>,
    /// How often each kind of thing happened, by name.
    pub tally: std::collections::BTreeMap<&'static str, u64>,
}

/// The world the actors share.
struct World {
    engines: Vec<Engine>,
    store: Arc<SimStore>,
    clock: Arc<ManualClock>,
    faults: Arc<ProviderFaults>,
    carts: Vec<SfId>,
    baton: Arc<Baton>,
    budget: u64,
    steps: AtomicU64,
    outcome: Mutex<Outcome>,
    closed: Mutex<invariants::Closed>,
    _dir: Option<tempfile::TempDir>,
}

/// Runs one simulation.
pub fn run(settings: Settings) -> Outcome {
    quiet_simulated_panics();
    let actors: Vec<Box<dyn Actor>> = vec![
        // The buyer's two tabs on one cart, and a colleague on another of the account's.
        Box::new(Buyer::new(sample::buyer_id(), 0, sample::denver())),
        Box::new(Buyer::new(sample::buyer_id(), 0, sample::denver())),
        Box::new(Buyer::new(sample::colleague_id(), 2, sample::new_york())),
        Box::new(Worker::new(0)),
        Box::new(Worker::new(1)),
        Box::new(Operator),
    ];
    let count = actors.len();
    let world = Arc::new(World::new(settings, count));
    let threads: Vec<_> = actors
        .into_iter()
        .enumerate()
        .map(|(n, actor)| {
            let world = Arc::clone(&world);
            let seed = settings.seed ^ (0x9e37_79b9_7f4a_7c15_u64.wrapping_mul(n as u64 + 1));
            std::thread::spawn(move || act(&world, n, actor, seed))
        })
        .collect();
    world.baton.start(count);
    for thread in threads {
        thread.join().expect("an actor's thread ends");
    }
    world.drain();
    let world = Arc::try_unwrap(world).ok().expect("the actors are done");
    let mut outcome = world
        .outcome
        .into_inner()
        .unwrap_or_else(|e| e.into_inner());
    outcome.steps = world.steps.into_inner();
    outcome
}

/// An actor's thread: tasks until the run stops.
fn act(world: &World, me: usize, mut actor: Box<dyn Actor>, seed: u64) {
    let mut rng = SmallRng::seed_from_u64(seed);
    world.baton.join(me, actor.weight());
    while !world.baton.stopping() {
        let line = panic::catch_unwind(AssertUnwindSafe(|| actor.task(world, &mut rng)))
            .unwrap_or_else(|payload| {
                let message = panic_text(payload.as_ref());
                world.violate(format!("a task panicked: {message}"));
                format!("panicked: {message}")
            });
        // A worker's poll of an empty queue changes nothing and is not a step.
        if !actor.idle() {
            world.finish_task(me, line);
        }
        world.baton.yield_now();
    }
    world.baton.leave();
}

impl World {
    fn new(settings: Settings, actors: usize) -> World {
        let baton = Arc::new(Baton::new(settings.seed, actors));
        let mut data = sample::dataset();
        let mut carts = vec![
            SampleCart::InStock.id(),
            SampleCart::ShortStock.id(),
            SampleCart::Reorder.id(),
        ];
        carts.extend(sample::add_in_stock_copies(&mut data, 100, 1));
        let integrations = sample::integrations(&data);
        let (inner, reopen, dir) = open(settings.backing, data);
        let rates = FaultRates {
            fails: 1,
            crash_after: 1,
        };
        let store = Arc::new(SimStore::new(
            inner,
            reopen,
            Arc::clone(&baton),
            settings.seed.rotate_left(17),
            rates,
            settings.broken_cas,
        ));
        let start = Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap();
        let clock = Arc::new(ManualClock::new(start));
        let faults = ProviderFaults::new(Arc::clone(&clock), TIMEOUT_MS);
        let integrations = providers::faulty(integrations, sample::store_id(), &faults);
        let config = EngineConfig {
            operations: OperationSettings {
                timeout_ms: TIMEOUT_MS,
                retry_limit: 2,
            },
            max_attempts: 64,
            lease_ms: LEASE_MS,
            // Heartbeats are the workers' own tasks: none comes from the machine's time.
            heartbeat_ms: 24 * 3_600_000,
            // The simulated workers never wait: the scheduler runs them.
            idle_poll_ms: 50,
            ..EngineConfig::default()
        };
        let engines = (0..2u64)
            .map(|k| {
                Engine::new(Arc::clone(&store) as Arc<dyn Store>)
                    .with_clock(Arc::clone(&clock) as _)
                    .with_ids(Arc::new(SequentialIds::starting_at(1_000_000 * (k + 1))))
                    .with_integrations(integrations.clone())
                    .with_config(config)
            })
            .collect();
        World {
            engines,
            store,
            clock,
            faults,
            carts,
            baton,
            budget: settings.steps,
            steps: AtomicU64::new(0),
            outcome: Mutex::new(Outcome::default()),
            closed: Mutex::new(invariants::Closed::default()),
            _dir: dir,
        }
    }

    fn engine(&self, rng: &mut SmallRng) -> &Engine {
        &self.engines[rng.random_range(0..self.engines.len())]
    }

    fn count(&self, what: &'static str) {
        let mut outcome = self.outcome.lock().unwrap_or_else(|e| e.into_inner());
        *outcome.tally.entry(what).or_default() += 1;
    }

    /// Records a violation found during the task now running.
    fn violate(&self, reason: String) {
        self.violate_at(self.steps.load(Ordering::SeqCst) + 1, reason);
    }

    fn violate_at(&self, step: u64, reason: String) {
        let mut outcome = self.outcome.lock().unwrap_or_else(|e| e.into_inner());
        outcome.violation.get_or_insert((step, reason));
        self.baton.stop();
    }

    /// Logs a task, checks the invariants, and stops the run at its budget.
    fn finish_task(&self, me: usize, line: String) {
        let step = self.steps.fetch_add(1, Ordering::SeqCst) + 1;
        self.outcome
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .log
            .push(format!("{step:>5} actor {me}: {line}"));
        if let Err(reason) = self.check() {
            self.violate_at(step, reason);
        }
        if step >= self.budget {
            self.baton.stop();
        }
    }

    /// Every invariant, on the real store.
    fn check(&self) -> Result<(), String> {
        let store = self.store.real();
        invariants::check(store.as_ref(), &self.carts, &self.store.acked())?;
        self.closed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .check(store.as_ref(), &self.carts)
    }

    /// After the run, with no faults: time passes, sweeps and workers run until nothing is
    /// left to do, and then every operation must have ended and no session be processing.
    fn drain(&self) {
        self.store.calm();
        let engine = &self.engines[0];
        // Long enough for any lease the clock's jumps left in the future to run out.
        for _ in 0..100 {
            if !invariants::any_live(self.store.real().as_ref(), &self.carts) {
                break;
            }
            self.clock
                .advance(Duration::milliseconds(LEASE_MS as i64 + 1_000));
            if let Err(e) = engine.sweep_expired().and_then(|_| engine.run_until_idle()) {
                self.violate(format!("the drain failed: {e}"));
                return;
            }
        }
        let store = self.store.real();
        for (what, count) in invariants::census(store.as_ref(), &self.carts) {
            let mut outcome = self.outcome.lock().unwrap_or_else(|e| e.into_inner());
            *outcome.tally.entry(what).or_default() += count;
        }
        if let Err(reason) = self
            .check()
            .and_then(|()| invariants::check_drained(store.as_ref(), &self.carts))
        {
            self.violate(format!("after the drain: {reason}"));
        }
    }
}

/// The shared store, a way to open it again after a crash, and what keeps its file.
type Opened = (
    Arc<dyn Store>,
    Option<store::Reopen>,
    Option<tempfile::TempDir>,
);

fn open(backing: Backing, data: DataSet) -> Opened {
    match backing {
        Backing::Memory => (
            Arc::new(MemoryStore::from_dataset(data).expect("the sample data set is valid")),
            None,
            None,
        ),
        Backing::Sqlite => {
            let dir = tempfile::tempdir().expect("a temporary directory");
            let path = dir.path().join("cartflow.db");
            let store = SqliteStore::open(&path, Durability::Normal).expect("SQLite opens");
            store.import(&data).expect("the sample data set imports");
            let reopen: store::Reopen = Box::new(move || {
                Arc::new(SqliteStore::open(&path, Durability::Normal).expect("SQLite reopens"))
            });
            (Arc::new(store), Some(reopen), Some(dir))
        }
    }
}

/// One of the simulation's actors.
trait Actor: Send {
    /// Does one thing and says what, for the step log.
    fn task(&mut self, world: &World, rng: &mut SmallRng) -> String;
    /// How often the scheduler gives it a turn, relative to the others.
    fn weight(&self) -> u32;
    /// Whether its last task found nothing to do.
    fn idle(&self) -> bool {
        false
    }
}

/// A buyer (or a colleague sharing the account), in one browser tab.
struct Buyer {
    user: String,
    cart: usize,
    address: cartflow::model::Address,
}

impl Buyer {
    fn new(user: SfId, cart: usize, address: cartflow::model::Address) -> Buyer {
        Buyer {
            user: user.to_string(),
            cart,
            address,
        }
    }

    /// What a buyer who fills the screens in enters: one of the methods offered when none is
    /// chosen, else the buyer's address and a good token.
    fn inputs(&self, world: &World, cart: SfId, rng: &mut SmallRng) -> Command {
        let cart_id = cart.to_string();
        let record = world.store.real().cart(&cart).ok().flatten();
        let offered = record
            .filter(|c| c.delivery_method_id.is_none())
            .map(|c| c.delivery_options)
            .unwrap_or_default();
        if !offered.is_empty() {
            let method = &offered[rng.random_range(0..offered.len())];
            return Command::SetDeliveryMethod {
                cart_id,
                delivery_method_id: method.delivery_method_id.clone(),
            };
        }
        Command::SetDetails {
            cart_id,
            details: CheckoutDetails {
                deliver_to: Some(self.address.clone()),
                delivery_method_id: None,
                payment_token: Some(sample::GOOD_TOKEN.into()),
            },
        }
    }

    /// A command from what the engine permits now (mostly one that moves the checkout on),
    /// the inputs a screen asks for, or now and then one from a wrong or stale view.
    fn command(&self, world: &World, engine: &Engine, cart: SfId, rng: &mut SmallRng) -> Command {
        let cart_id = cart.to_string();
        let roll = rng.random_range(0..100);
        if roll < 85
            && let Some(command) = self.permitted(engine, cart, rng)
        {
            return command;
        }
        if roll < 97 {
            return self.inputs(world, cart, rng);
        }
        match roll % 6 {
            0 => Command::SetDetails {
                cart_id,
                details: details(rng),
            },
            1 => Command::SetDeliveryMethod {
                cart_id,
                delivery_method_id: ["GROUND", "FREIGHT", "NONE"][rng.random_range(0..3)].into(),
            },
            2 => Command::EditCart {
                cart_id,
                edit: edit(world, cart, rng),
            },
            3 => Command::Cancel { cart_id },
            4 => Command::StartSession {
                cart_id,
                initial_state: None,
            },
            _ => Command::Advance {
                session_id: world
                    .store
                    .real()
                    .sessions_of(&cart)
                    .ok()
                    .and_then(|s| s.last().map(|s| s.id.to_string()))
                    .unwrap_or_default(),
                state: "Order Confirmation".into(),
                exp_current_state: Some("Checkout Summary".into()),
            },
        }
    }
}

/// Buyer's input: an address, a method, a token, each perhaps left out.
fn details(rng: &mut SmallRng) -> CheckoutDetails {
    let address = [Some(sample::denver()), Some(sample::new_york()), None];
    let method = [Some("GROUND"), Some("FREIGHT"), None];
    let token = [Some(sample::GOOD_TOKEN), Some(sample::DECLINED_TOKEN), None];
    CheckoutDetails {
        deliver_to: address[rng.random_range(0..3)].clone(),
        delivery_method_id: method[rng.random_range(0..3)].map(str::to_owned),
        payment_token: token[rng.random_range(0..3)].map(str::to_owned),
    }
}

/// A change to one of the cart's lines, or a new line.
fn edit(world: &World, cart: SfId, rng: &mut SmallRng) -> CartEdit {
    let lines = world.store.real().cart_items(&cart).unwrap_or_default();
    let line = (!lines.is_empty()).then(|| lines[rng.random_range(0..lines.len())].id.to_string());
    match (rng.random_range(0..3), line) {
        (0, Some(item_id)) => CartEdit::SetQuantity {
            item_id,
            quantity: Decimal::from(rng.random_range(1..4)),
        },
        (1, Some(item_id)) => CartEdit::RemoveItem { item_id },
        _ => CartEdit::AddItem {
            sku: ["TENT-4P", "ROPE-60M", "STOVE-X"][rng.random_range(0..3)].into(),
            quantity: Decimal::ONE,
        },
    }
}

impl Buyer {
    /// One of the commands the engine permits now that moves the checkout on, or a start (a
    /// reload, which resumes) when there is none; the cancels come from the wrong views.
    fn permitted(&self, engine: &Engine, cart: SfId, rng: &mut SmallRng) -> Option<Command> {
        let permitted = engine.permitted(&self.user, &cart).ok()?;
        let forward: Vec<Command> = permitted
            .iter()
            .map(|p| p.command.clone())
            .filter(|c| !matches!(c, Command::Cancel { .. } | Command::StartSession { .. }))
            .collect();
        let start = permitted
            .into_iter()
            .map(|p| p.command)
            .find(|c| matches!(c, Command::StartSession { .. }));
        if forward.is_empty() {
            // Nothing to do but wait (an operation runs) or start: the tab reloads.
            return start;
        }
        Some(forward[rng.random_range(0..forward.len())].clone())
    }
}

impl Actor for Buyer {
    fn weight(&self) -> u32 {
        4
    }

    fn task(&mut self, world: &World, rng: &mut SmallRng) -> String {
        // Mostly the tab's own cart (the buyer's two tabs share one), now and then another.
        let cart = if rng.random_range(0..100) < 85 {
            world.carts[self.cart]
        } else {
            world.carts[rng.random_range(0..world.carts.len())]
        };
        let engine = world.engine(rng);
        let command = self.command(world, engine, cart, rng);
        let first = engine.execute(&self.user, command.clone());
        world.count("buyer calls");
        let lost = first.is_ok() && rng.random_range(0..100) < 4;
        let retried = matches!(first, Err(CheckoutError::Store(StoreError::Io(_))));
        let double = rng.random_range(0..100) < 5;
        let mut line = format!("{} {} -> {}", self.user, brief(&command), result(&first));
        if lost || retried || double {
            let why = if lost {
                "answer lost"
            } else if retried {
                "store failed"
            } else {
                "double click"
            };
            world.count(why);
            let again = world.engine(rng).execute(&self.user, command);
            line.push_str(&format!("; again ({why}) -> {}", result(&again)));
            check_refusal(world, &again);
        }
        check_refusal(world, &first);
        line
    }
}

/// A refusal must be one of the documented ones: the engine never computes a move its table
/// does not declare.
fn check_refusal<T>(world: &World, answer: &Result<T, CheckoutError>) {
    if let Err(e @ CheckoutError::Undeclared(_)) = answer {
        world.violate(format!("the engine computed an undeclared move: {e}"));
    }
}

/// A worker process of one engine, holding at most one claim.
struct Worker {
    engine: usize,
    claim: Option<Claim>,
    performed: Option<Performed>,
    idle: bool,
}

impl Worker {
    fn new(engine: usize) -> Worker {
        Worker {
            engine,
            claim: None,
            performed: None,
            idle: false,
        }
    }

    fn perform(
        &mut self,
        engine: &Engine,
        world: &World,
        claim: Claim,
        rng: &mut SmallRng,
    ) -> String {
        let fault = match rng.random_range(0..100) {
            0..3 => ProviderFault::Errs,
            3..5 => ProviderFault::Panics,
            5..7 => ProviderFault::Hangs,
            _ => ProviderFault::Answers,
        };
        world.faults.set_next(fault);
        let performed = engine.perform(&claim);
        world.faults.set_next(ProviderFault::Answers);
        if let Ok(p) = &performed {
            world.count(match p.outcome() {
                StepOutcome::Passed => "provider passed",
                StepOutcome::Failed(_) => "provider failed the check",
                StepOutcome::SystemFailure(r) if r.contains("did not answer") => {
                    "provider timed out"
                }
                StepOutcome::SystemFailure(r) if r.contains("panicked") => "provider panicked",
                StepOutcome::SystemFailure(_) => "provider erred",
            });
        }
        let line = format!(
            "perform {} ({fault:?}) -> {}",
            claim.operation().id,
            result(&performed)
        );
        if let Ok(performed) = performed {
            self.performed = Some(performed);
        }
        line
    }

    fn report(&mut self, engine: &Engine, world: &World, rng: &mut SmallRng) -> String {
        let Some(performed) = self.performed.take() else {
            return "nothing to report".into();
        };
        let report = engine.report(performed.clone());
        if matches!(&report, Ok(r) if !r.applied) {
            world.count("reports discarded");
        }
        let mut line = format!("report {:?} -> {}", performed.outcome(), result(&report));
        if rng.random_range(0..100) < 10 {
            world.count("answered twice");
            let again = engine.report(performed);
            let applied =
                |r: &Result<cartflow::engine::OperationReport, _>| matches!(r, Ok(r) if r.applied);
            if applied(&report) && applied(&again) {
                world.violate("a report was applied twice".into());
            }
            line.push_str(&format!("; again -> {}", result(&again)));
        }
        line
    }
}

impl Actor for Worker {
    fn weight(&self) -> u32 {
        3
    }

    fn idle(&self) -> bool {
        self.idle
    }

    fn task(&mut self, world: &World, rng: &mut SmallRng) -> String {
        self.idle = false;
        let engine = &world.engines[self.engine];
        let roll = rng.random_range(0..100);
        if self.performed.is_some() {
            if roll < 4 {
                world.count("worker killed");
                self.performed = None;
                return "killed after its work, before its report".into();
            }
            return self.report(engine, world, rng);
        }
        let Some(claim) = self.claim.take() else {
            let claimed = engine.claim_operation();
            let mut line = format!("claim -> {}", result(&claimed));
            self.idle = matches!(claimed, Ok(None));
            self.claim = claimed.ok().flatten();
            // Mostly a worker runs what it claimed at once, as its loop does; else it holds
            // the claim over later tasks (heartbeats, a slow provider, its death).
            if roll < 70
                && let Some(claim) = self.claim.take()
            {
                line.push_str("; ");
                line.push_str(&self.perform(engine, world, claim, rng));
                if self.performed.is_some() {
                    line.push_str("; ");
                    line.push_str(&self.report(engine, world, rng));
                }
            }
            return line;
        };
        match roll {
            0..4 => {
                world.count("worker killed");
                "killed holding its claim".into()
            }
            4..20 => {
                let beat = engine.heartbeat(&claim);
                world.count(if beat.is_ok() {
                    "heartbeats"
                } else {
                    "heartbeats fenced"
                });
                let line = format!("heartbeat {} -> {}", claim.operation().id, result(&beat));
                if beat.is_ok() {
                    self.claim = Some(claim);
                }
                line
            }
            20..25 => {
                self.claim = Some(claim);
                "works slowly".into()
            }
            _ => self.perform(engine, world, claim, rng),
        }
    }
}

/// Sweeps, the clock, and the store's process.
struct Operator;

impl Actor for Operator {
    fn weight(&self) -> u32 {
        2
    }

    fn task(&mut self, world: &World, rng: &mut SmallRng) -> String {
        match rng.random_range(0..100) {
            0..45 => {
                let swept = world.engine(rng).sweep_expired();
                format!("sweep -> {}", result(&swept))
            }
            45..83 => advance(world, rng.random_range(500..4_000)),
            83..87 => {
                world.count("leases run out");
                advance(
                    world,
                    LEASE_MS as i64 + rng.random_range(1..LEASE_MS as i64),
                )
            }
            87..93 => {
                world.count("clock jumped back");
                advance(world, -rng.random_range(1_000..60_000))
            }
            _ if world.store.reopens() => {
                world.count("store crashed");
                world.store.crash_and_reopen();
                "the store's process crashed and was opened again".into()
            }
            _ => advance(world, 500),
        }
    }
}

fn advance(world: &World, ms: i64) -> String {
    world.clock.advance(Duration::milliseconds(ms));
    format!("clock {ms:+} ms")
}

/// A command, short, for the step log.
fn brief(command: &Command) -> String {
    let text = format!("{command:?}");
    text.chars().take(140).collect()
}

/// An answer, short, for the step log.
fn result<T: std::fmt::Debug>(answer: &Result<T, CheckoutError>) -> String {
    let text = match answer {
        Ok(value) => format!("ok {value:?}"),
        Err(e) => format!("refused: {e}"),
    };
    text.chars().take(160).collect()
}

fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-text payload".into())
}

/// The simulated providers' panics are expected: they are not printed.
fn quiet_simulated_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            let simulated = info
                .payload()
                .downcast_ref::<&str>()
                .is_some_and(|m| m.starts_with("simulated"));
            if !simulated {
                default(info);
            }
        }));
    });
}
