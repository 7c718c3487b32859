//! Concurrency tests: many threads racing the same checkout, cancels racing workers, and
//! worker pools draining many carts. Each race runs many times on fresh engines; the
//! assertions are about outcomes only, never about timing.

mod common;
mod support;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use cartflow::clock::ManualClock;
use cartflow::engine::OperationReport;
use cartflow::ids::SequentialIds;
use cartflow::integrations::{
    IntegrationRequest, Integrations, InventoryProvider, Provider, ProviderError, Verdict,
};
use cartflow::machine::{
    Action, Command, Event, Machine, Output, ProviderAction, Snapshot, ValidationMessage,
};
use cartflow::model::{
    CartStatus, Level, OperationStatus, OrderStatus, ProviderKind, SessionState, SfId,
};
use cartflow::sample::{self, SampleCart};
use cartflow::store::{DataSet, LoadKey};
use cartflow::{ActionResult, Engine, ErrorCode, MemoryStore, Store, StoreError};
use chrono::{TimeZone, Utc};
use serde_json::json;

type ProviderFn = dyn Fn(&IntegrationRequest) -> Result<Verdict, ProviderError> + Send + Sync;

/// An engine over `data` whose sample store prices by the sample's price book, runs `provider` for
/// inventory checks and a gateway that authorises every order's grand total.
fn engine_with(data: DataSet, provider: Arc<ProviderFn>) -> Engine {
    engine_over(
        Arc::new(MemoryStore::from_dataset(data).expect("a valid data set")),
        provider,
    )
}

/// [`engine_with`] over `store`.
fn engine_over(store: Arc<dyn Store>, provider: Arc<ProviderFn>) -> Engine {
    common::quiet_provider_panics();
    // The sample store's price book, so an order has the grand total its payment authorises.
    let price =
        sample::integrations(&sample::dataset()).provider(sample::store_id(), ProviderKind::Price);
    let mut integrations = Integrations::new();
    integrations.set(sample::store_id(), price);
    integrations.set_inventory(sample::store_id(), Arc::new(Shared(provider)));
    let approve = |request: &IntegrationRequest| -> Result<Verdict, ProviderError> {
        Ok(Verdict::authorized("AUTH-approved", request))
    };
    integrations.set(sample::store_id(), Provider::Payment(Arc::new(approve)));
    let start = Utc
        .timestamp_opt(1_700_000_000, 0)
        .single()
        .expect("a valid instant");
    Engine::new(store)
        .with_ids(Arc::new(SequentialIds::default()))
        .with_clock(Arc::new(ManualClock::new(start)))
        .with_integrations(integrations)
}

/// Adapts a shared closure to the provider trait.
struct Shared(Arc<ProviderFn>);

impl InventoryProvider for Shared {
    fn check_inventory(&self, request: &IntegrationRequest) -> Result<Verdict, ProviderError> {
        (self.0)(request)
    }
}

fn passing() -> Arc<ProviderFn> {
    Arc::new(|_: &IntegrationRequest| Ok(Verdict::Passed))
}

fn buyer() -> String {
    sample::buyer_id().to_string()
}

fn execute(engine: &Engine, command: Command) -> Output {
    engine
        .execute(&buyer(), command)
        .unwrap_or_else(|e| panic!("the flow is refused: {e}"))
}

/// Starts checkout on `cart` and returns the session ID.
fn start(engine: &Engine, cart: SfId) -> String {
    match execute(
        engine,
        Command::StartSession {
            cart_id: cart.to_string(),
            initial_state: Some("Start".into()),
        },
    ) {
        Output::RequestId(id) => id.to_string(),
        other => panic!("checkoutSessionAction answered {other:?}"),
    }
}

fn advance(engine: &Engine, session: &str, from: &str, to: &str) {
    execute(
        engine,
        Command::Advance {
            session_id: session.into(),
            state: to.into(),
            exp_current_state: Some(from.into()),
        },
    );
}

/// Walks a checkout to the Inventory step, not yet locked.
fn to_inventory(engine: &Engine, cart: SfId) -> String {
    let session = start(engine, cart);
    advance(engine, &session, "Start", "Shipping Address");
    advance(engine, &session, "Shipping Address", "Inventory");
    session
}

/// Walks a checkout to a locked Inventory step.
fn to_locked_inventory(engine: &Engine, cart: SfId) -> String {
    let session = to_inventory(engine, cart);
    execute(
        engine,
        Command::UpdateSession {
            session_id: session.clone(),
            next_state: "Confirm Price".into(),
            exp_current_state: Some("Inventory".into()),
        },
    );
    session
}

/// Walks a checkout to a running inventory check; returns the session and operation IDs.
fn to_running_inventory(engine: &Engine, cart: SfId) -> (SfId, SfId) {
    let session = to_locked_inventory(engine, cart);
    let Output::BackgroundOperationId(op) = execute(
        engine,
        Command::RunStep {
            action: ProviderAction::CheckCartInventory,
            cart_id: cart.to_string(),
        },
    ) else {
        panic!("checkCartInventoryAction answered no operation");
    };
    (session.parse().expect("a session ID"), op)
}

/// Runs `work` on `n` threads released together by a barrier; returns their results in order.
fn race<T: Send>(n: usize, work: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let barrier = Barrier::new(n);
    thread::scope(|scope| {
        let handles: Vec<_> = (0..n)
            .map(|k| {
                let (barrier, work) = (&barrier, &work);
                scope.spawn(move || {
                    barrier.wait();
                    work(k)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a racing thread panicked"))
            .collect()
    })
}

fn error_of(result: &ActionResult) -> (String, u16) {
    let code = result
        .errors
        .as_ref()
        .and_then(|e| e.first())
        .map_or_else(String::new, |e| e.status_code.clone());
    (code, result.http_status)
}

/// How many history entries of `cart` a given event wrote.
fn history_count(engine: &Engine, cart: &SfId, event: Event) -> usize {
    engine
        .store()
        .history(cart)
        .expect("history")
        .iter()
        .filter(|e| e.event == event)
        .count()
}

#[test]
fn thirty_two_racing_inventory_checks_create_exactly_one_operation() {
    const THREADS: usize = 32;
    let cart = SampleCart::InStock.id();
    // The owner, a colleague with an Edit share and an administrator may all run the step.
    let actors = [
        sample::buyer_id(),
        sample::colleague_id(),
        sample::integrator_id(),
    ]
    .map(|id| id.to_string());
    for round in 0..200 {
        let engine = engine_with(sample::dataset(), passing());
        let session: SfId = to_locked_inventory(&engine, cart)
            .parse()
            .expect("a session ID");
        let input = json!({"cartId": cart.to_string()});
        let results = race(THREADS, |k| {
            engine.invoke(
                "checkCartInventoryAction",
                &input,
                &actors[(k + round) % actors.len()],
            )
        });
        let winners: Vec<&ActionResult> = results.iter().filter(|r| r.is_success).collect();
        assert_eq!(winners.len(), 1, "round {round}: {results:?}");
        let op = winners[0].output_values.as_ref().expect("outputs")["backgroundOperationId"]
            .as_str()
            .expect("a backgroundOperationId")
            .to_owned();
        for loser in results.iter().filter(|r| !r.is_success) {
            assert_eq!(
                error_of(loser),
                ("ALREADY_IN_PROCESS".to_owned(), 400),
                "round {round}"
            );
        }
        let store = engine.store();
        let ops = store.operations_of(&cart).expect("operations");
        assert_eq!(ops.len(), 1, "round {round}: {ops:?}");
        assert_eq!(ops[0].id.to_string(), op);
        assert_eq!(ops[0].status, OperationStatus::New);
        let session = store.session(&session).expect("session").expect("exists");
        assert_eq!(session.background_operation_id, Some(ops[0].id));
        assert!(session.is_processing && !session.is_archived);
        assert_eq!(session.state, Some(SessionState::Inventory));
        // One session move and one operation move, once.
        let runs = history_count(&engine, &cart, Event::Action(Action::CheckCartInventory));
        assert_eq!(runs, 2, "round {round}");
    }
}

#[test]
fn racing_compare_and_sets_have_exactly_one_winner() {
    const THREADS: usize = 32;
    let cart = SampleCart::InStock.id();
    for round in 0..100 {
        let engine = engine_with(sample::dataset(), passing());

        // Screen step: two tabs write the next State over the same expected one.
        let session = start(&engine, cart);
        let results = race(THREADS, |_| {
            engine.execute(
                &buyer(),
                Command::Advance {
                    session_id: session.clone(),
                    state: "Shipping Address".into(),
                    exp_current_state: Some("Start".into()),
                },
            )
        });
        let refusals: Vec<(ErrorCode, u16)> = results
            .iter()
            .filter_map(|r| r.as_ref().err())
            .map(|e| (e.code(), e.http_status()))
            .collect();
        assert_eq!(refusals.len(), THREADS - 1, "round {round}: {results:?}");
        // The State no longer equals expCurrentState: the lost compare-and-set.
        assert!(
            refusals
                .iter()
                .all(|r| *r == (ErrorCode::InvalidOperation, 409)),
            "round {round}: {refusals:?}"
        );
        assert_eq!(history_count(&engine, &cart, Event::Advance), 1);

        // Async step: every tab tries to lock the session for the inventory check.
        advance(&engine, &session, "Shipping Address", "Inventory");
        let input = json!({
            "checkoutSessionId": session,
            "nextState": "Confirm Price",
            "expCurrentState": "Inventory",
        });
        let results = race(THREADS, |_| {
            engine.invoke("updateCheckoutSessionStateAction", &input, &buyer())
        });
        assert_eq!(
            results.iter().filter(|r| r.is_success).count(),
            1,
            "round {round}: {results:?}"
        );
        for loser in results.iter().filter(|r| !r.is_success) {
            // The session is locked now (IsProcessing is true).
            assert_eq!(
                error_of(loser),
                ("INVALID_OPERATION".to_owned(), 409),
                "round {round}"
            );
        }
        let stored = engine
            .store()
            .session(&session.parse().expect("a session ID"))
            .expect("session")
            .expect("exists");
        assert!(stored.is_processing);
        assert_eq!(stored.state, Some(SessionState::Inventory));
        assert_eq!(stored.next_state, Some(SessionState::ConfirmPrice));
        let update = Event::Action(Action::UpdateCheckoutSessionState);
        assert_eq!(history_count(&engine, &cart, update), 1);
    }
}

/// What a provider answers, chosen per run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Pass,
    Fail,
    Error,
    Panic,
}

fn answer(which: Answer, request: &IntegrationRequest) -> Result<Verdict, ProviderError> {
    match which {
        Answer::Pass => Ok(Verdict::Passed),
        Answer::Fail => Ok(Verdict::Failed(vec![ValidationMessage {
            level: Level::Error,
            message: "out of stock".into(),
            related_entity_id: Some(request.cart.id),
        }])),
        Answer::Error => Err(ProviderError("the provider is down".into())),
        Answer::Panic => std::panic::panic_any(common::PROVIDER_PANIC),
    }
}

/// The index of the first history entry of `events`, if any.
fn first_of(history: &[cartflow::store::HistoryEntry], events: &[Event]) -> Option<usize> {
    history.iter().position(|e| events.contains(&e.event))
}

/// A memory store that notes, for the loads of one watched thread, the status of the
/// operation each snapshot held: what a command of that thread decided on.
struct Watched {
    inner: MemoryStore,
    watch: Mutex<Option<(thread::ThreadId, Vec<Option<OperationStatus>>)>>,
}

impl Watched {
    fn new(data: DataSet) -> Watched {
        Watched {
            inner: MemoryStore::from_dataset(data).expect("a valid data set"),
            watch: Mutex::new(None),
        }
    }

    /// Runs `work` on this thread, watching its loads; returns its result and what they saw.
    fn watching<T>(&self, work: impl FnOnce() -> T) -> (T, Vec<Option<OperationStatus>>) {
        *self.watch.lock().unwrap() = Some((thread::current().id(), Vec::new()));
        let result = work();
        let (_, seen) = self.watch.lock().unwrap().take().expect("still watched");
        (result, seen)
    }
}

impl Store for Watched {
    fn load(&self, key: LoadKey) -> Result<Snapshot, StoreError> {
        let snapshot = self.inner.load(key)?;
        if let Some((watched, seen)) = self.watch.lock().unwrap().as_mut()
            && *watched == thread::current().id()
        {
            seen.push(snapshot.operation.as_ref().map(|op| op.status));
        }
        Ok(snapshot)
    }
    delegate_store!(inner => user, commit, claimable_operations, expired_operations, claim_next,
        cart, carts_after, cart_items, cart_item, validation_output, session, sessions_of, operation,
        operations_of, order, validation_outputs, history, events_after, last_event, webhook_cursor, advance_webhook, deliveries, begin_keyed, keep_answer, release_key,
        operation_counts, web_stores, owner_of);
}

/// The share of rounds, in percent, in which the cancel must really meet the worker's report.
const RACED_PERCENT: usize = 20;

/// The race is real, not assumed: a round counts as raced when the cancel decided on the
/// operation while the worker held it Running and the worker then reported (the cancel's
/// commit fenced the report, or the report's moved the records under the cancel, which
/// decided again). Too few raced rounds fail the test: it would prove nothing.
#[test]
fn a_cancel_racing_a_worker_never_lets_the_operation_complete_after_it() {
    let cart = SampleCart::InStock.id();
    let cancel_event = Event::Action(Action::CancelCartAsyncOperation);
    let worker_events = [Event::Claim, Event::Succeed, Event::Fail];
    const ROUNDS: usize = 300;
    let mut tally: BTreeMap<&str, usize> = BTreeMap::new();
    let mut raced = 0;
    for round in 0..ROUNDS {
        let which = [Answer::Pass, Answer::Fail, Answer::Error][round % 3];
        // A short, varying amount of work widens the window in which the cancel can land.
        let spin = round % 7 * 20;
        // Every fourth round the provider also waits until the cancel is on its way, so that
        // the cancel meets the claim however the threads are scheduled; what comes first, the
        // cancel's commit or the report's, is still the race's to decide.
        let meet = round % 4 == 3;
        let cancelling = Arc::new(AtomicBool::new(false));
        let on_its_way = cancelling.clone();
        let provider: Arc<ProviderFn> = Arc::new(move |request: &IntegrationRequest| {
            while meet && !on_its_way.load(Ordering::SeqCst) {
                thread::yield_now();
            }
            for _ in 0..spin {
                thread::yield_now();
            }
            answer(which, request)
        });
        let watched = Arc::new(Watched::new(sample::dataset()));
        let engine = engine_over(watched.clone(), provider);
        let (session, op) = to_running_inventory(&engine, cart);
        let worker_engine = engine.clone();
        let cancel_input = json!({"cartId": cart.to_string()});
        let mut report: Option<OperationReport> = None;
        let mut cancelled: Option<ActionResult> = None;
        let mut cancel_saw = Vec::new();
        let barrier = Barrier::new(2);
        thread::scope(|scope| {
            let worker = scope.spawn(|| {
                barrier.wait();
                worker_engine.run_next_operation()
            });
            barrier.wait();
            for _ in 0..round % 11 * 40 {
                thread::yield_now();
            }
            let (result, saw) = watched.watching(|| {
                cancelling.store(true, Ordering::SeqCst);
                engine.invoke("cancelCartAsyncOperation", &cancel_input, &buyer())
            });
            (cancelled, cancel_saw) = (Some(result), saw);
            report = worker
                .join()
                .expect("the worker panicked")
                .expect("the worker failed");
        });
        let cancelled = cancelled.expect("the cancel ran");
        assert!(cancelled.is_success, "round {round}: {cancelled:?}");

        let store = engine.store();
        let session = store.session(&session).expect("session").expect("exists");
        let op = store.operation(&op).expect("operation").expect("exists");
        let history = store.history(&cart).expect("history");
        let outputs = store.validation_outputs(&cart).expect("outputs");
        let cart_status = store.cart(&cart).expect("cart").expect("exists").status;
        assert!(
            session.is_archived && !session.is_processing,
            "round {round}"
        );
        assert_eq!(cart_status, CartStatus::Active, "round {round}");
        // Nothing a worker does is committed after the cancel.
        let cancel_at = first_of(&history, &[cancel_event]).expect("the cancel is in the history");
        assert!(
            history[cancel_at..]
                .iter()
                .all(|e| !worker_events.contains(&e.event)),
            "round {round}: a worker move follows the cancel: {history:#?}"
        );
        let applied = report.as_ref().is_some_and(|r| r.applied);
        let case = match op.status {
            OperationStatus::Canceled => {
                // Cancelled first: the session never advanced and nothing was reported.
                assert_eq!(
                    session.state,
                    Some(SessionState::Inventory),
                    "round {round}"
                );
                assert!(!session.is_error && outputs.is_empty(), "round {round}");
                assert!(!applied, "round {round}: {report:?}");
                assert_eq!(
                    first_of(&history, &[Event::Succeed, Event::Fail]),
                    None,
                    "round {round}"
                );
                if report.is_some() {
                    "cancelled while running"
                } else {
                    "cancelled before the claim"
                }
            }
            OperationStatus::Complete => {
                assert_eq!(which, Answer::Pass, "round {round}");
                assert_eq!(
                    session.state,
                    Some(SessionState::ConfirmPrice),
                    "round {round}"
                );
                assert!(applied, "round {round}: {report:?}");
                "completed, then cancelled"
            }
            OperationStatus::Error => {
                assert_ne!(which, Answer::Pass, "round {round}");
                assert_eq!(session.state, Some(SessionState::Error), "round {round}");
                assert!(session.is_error && !outputs.is_empty(), "round {round}");
                assert!(applied, "round {round}: {report:?}");
                "failed, then cancelled"
            }
            other => panic!("round {round}: the operation ended {other:?}"),
        };
        *tally.entry(case).or_default() += 1;
        let met_the_claim = cancel_saw.contains(&Some(OperationStatus::Running));
        if met_the_claim && report.is_some() {
            raced += 1;
            let winner = if op.status == OperationStatus::Canceled {
                "raced, the cancel won"
            } else {
                "raced, the report won"
            };
            *tally.entry(winner).or_default() += 1;
        }
    }
    println!("cancel vs. worker, {ROUNDS} rounds, {raced} raced: {tally:?}");
    assert!(
        raced * 100 >= ROUNDS * RACED_PERCENT,
        "the cancel met the worker's claim in only {raced} of {ROUNDS} rounds: {tally:?}"
    );
}

#[test]
fn a_report_that_arrives_after_a_cancel_is_discarded() {
    let cart = SampleCart::InStock.id();
    let (entered_tx, entered_rx) = mpsc::channel::<()>();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let gate = Mutex::new((entered_tx, release_rx));
    // The provider holds its (failing) answer until the test has cancelled.
    let provider: Arc<ProviderFn> = Arc::new(move |request: &IntegrationRequest| {
        let gate = gate.lock().unwrap_or_else(|e| e.into_inner());
        let _ = gate.0.send(());
        let _ = gate.1.recv();
        answer(Answer::Fail, request)
    });
    let engine = engine_with(sample::dataset(), provider);
    let (session, op) = to_running_inventory(&engine, cart);
    let worker_engine = engine.clone();
    let worker = thread::spawn(move || worker_engine.run_next_operation());
    entered_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the provider was called");
    let store = engine.store();
    assert_eq!(
        store.operation(&op).unwrap().unwrap().status,
        OperationStatus::Running
    );
    assert_eq!(
        execute(
            &engine,
            Command::Cancel {
                cart_id: cart.to_string()
            }
        ),
        Output::Nothing
    );
    release_tx.send(()).expect("the provider waits");
    let report = worker
        .join()
        .expect("the worker panicked")
        .expect("the worker failed")
        .expect("the worker ran the operation");
    assert_eq!(report.operation_id, op);
    assert!(!report.applied, "{report:?}");
    let op = store.operation(&op).unwrap().unwrap();
    assert_eq!(op.status, OperationStatus::Canceled);
    let session = store.session(&session).unwrap().unwrap();
    assert!(session.is_archived && !session.is_processing && !session.is_error);
    assert_eq!(session.state, Some(SessionState::Inventory));
    // The failure's messages were not written for a cancelled operation.
    assert!(store.validation_outputs(&cart).unwrap().is_empty());
    assert_eq!(history_count(&engine, &cart, Event::Fail), 0);
}

#[test]
fn worker_pools_drain_many_carts_running_each_operation_once() {
    const CARTS: u64 = 120;
    for workers in 2..=4 {
        let mut data = sample::dataset();
        let mut answers: HashMap<SfId, Answer> = HashMap::new();
        for n in 0..CARTS {
            let (cart, items) = sample::bulk_cart(n, 3, 5);
            let which = match n % 10 {
                0..=4 => Answer::Pass,
                5 | 6 => Answer::Fail,
                7 | 8 => Answer::Error,
                _ => Answer::Panic,
            };
            answers.insert(cart.id, which);
            data.carts.push(cart);
            data.items.extend(items);
        }
        let calls: Arc<Mutex<HashMap<SfId, usize>>> = Arc::default();
        let provider: Arc<ProviderFn> = {
            let (answers, calls) = (answers.clone(), Arc::clone(&calls));
            Arc::new(move |request: &IntegrationRequest| {
                *calls
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .entry(request.operation_id)
                    .or_default() += 1;
                answer(answers[&request.cart.id], request)
            })
        };
        let engine = engine_with(data, provider);
        let pool = engine.start_workers(workers);
        // Operations arrive while the workers run.
        let ops: Vec<(SfId, SfId, SfId)> = answers
            .keys()
            .map(|cart| {
                let (session, op) = to_running_inventory(&engine, *cart);
                (*cart, session, op)
            })
            .collect();
        let store = engine.store();
        let finished = || {
            ops.iter().all(|(_, _, op)| {
                !store
                    .operation(op)
                    .expect("operation")
                    .expect("exists")
                    .status
                    .is_active()
            })
        };
        // A bound so a lost operation fails the test instead of hanging it.
        let deadline = Instant::now() + Duration::from_secs(120);
        while !finished() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
        pool.stop();
        assert!(finished(), "{workers} workers left operations unfinished");

        let calls = calls.lock().unwrap_or_else(|e| e.into_inner());
        let mut by_status: BTreeMap<&str, usize> = BTreeMap::new();
        for (cart, session, op) in &ops {
            let op = store.operation(op).unwrap().unwrap();
            let session = store.session(session).unwrap().unwrap();
            let which = answers[cart];
            assert_eq!(calls.get(&op.id), Some(&1), "operation {} ran twice", op.id);
            assert_eq!(op.attempt, 1, "operation {} was claimed again", op.id);
            assert!(!session.is_processing && !session.is_archived);
            match op.status {
                OperationStatus::Complete => {
                    assert_eq!(which, Answer::Pass);
                    assert_eq!(session.state, Some(SessionState::ConfirmPrice));
                }
                OperationStatus::Error => {
                    assert_ne!(which, Answer::Pass);
                    assert_eq!(session.state, Some(SessionState::Error));
                    assert!(session.is_error);
                }
                other => panic!("operation {} ended {other:?}", op.id),
            }
            *by_status.entry(op.status.as_str()).or_default() += 1;
            // One claim, one completion, in the operation's own history.
            let history = store.history(cart).unwrap();
            let op_moves = |event| {
                history
                    .iter()
                    .filter(|e| e.machine == Machine::Operation && e.record == op.id)
                    .filter(|e| e.event == event)
                    .count()
            };
            assert_eq!(op_moves(Event::Claim), 1);
            assert_eq!(op_moves(Event::Succeed) + op_moves(Event::Fail), 1);
        }
        assert_eq!(calls.len(), ops.len());
        println!("{workers} workers drained {CARTS} carts: {by_status:?}");
    }
}

/// Many carts checked out at once by many threads, each with its own worker steps: records of
/// one cart never leak into another's.
#[test]
fn parallel_checkouts_of_different_carts_do_not_interfere() {
    const CARTS: u64 = 64;
    let mut data = sample::dataset();
    let mut carts = Vec::new();
    for n in 0..CARTS {
        let (cart, items) = sample::bulk_cart(n, 2, 3);
        carts.push(cart.id);
        data.carts.push(cart);
        data.items.extend(items);
    }
    let ran = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&ran);
    let engine = engine_with(
        data,
        Arc::new(move |_: &IntegrationRequest| {
            counter.fetch_add(1, Ordering::Relaxed);
            Ok(Verdict::Passed)
        }),
    );
    let results = race(carts.len(), |k| {
        let cart = carts[k];
        let (session, _) = to_running_inventory(&engine, cart);
        // Any worker step may run another cart's operation; keep going until ours is done.
        loop {
            let stored = engine.store().session(&session).unwrap().unwrap();
            if !stored.is_processing {
                return stored;
            }
            engine.run_next_operation().expect("a worker step");
        }
    });
    assert_eq!(ran.load(Ordering::Relaxed), carts.len());
    for (cart, session) in carts.iter().zip(&results) {
        assert_eq!(session.web_cart_id, *cart);
        assert_eq!(session.state, Some(SessionState::ConfirmPrice));
        let ops = engine.store().operations_of(cart).unwrap();
        assert_eq!(ops.len(), 1);
        assert_eq!(ops[0].status, OperationStatus::Complete);
        assert_eq!(session.background_operation_id, Some(ops[0].id));
    }
}

/// Locks the session's async step `from` for the step after it.
fn lock(engine: &Engine, session: &str, from: SessionState, to: SessionState) {
    execute(
        engine,
        Command::UpdateSession {
            session_id: session.into(),
            next_state: to.as_str().into(),
            exp_current_state: Some(from.as_str().into()),
        },
    );
}

/// Runs an async step: lock, invoke, and let a worker finish it.
fn run_step(engine: &Engine, session: &str, cart: SfId, step: (SessionState, SessionState)) {
    lock(engine, session, step.0, step.1);
    let cart_id = cart.to_string();
    let command = match step.0 {
        SessionState::AuthorizePayment => Command::AuthorizePayment { cart_id },
        SessionState::Inventory => Command::RunStep {
            action: ProviderAction::CheckCartInventory,
            cart_id,
        },
        SessionState::ConfirmPrice => Command::RunStep {
            action: ProviderAction::PriceCart,
            cart_id,
        },
        SessionState::CalculatePromotions => Command::RunStep {
            action: ProviderAction::CalcCartPromotions,
            cart_id,
        },
        SessionState::ShippingCost => Command::RunStep {
            action: ProviderAction::CalcCartShipment,
            cart_id,
        },
        SessionState::Taxes => Command::RunStep {
            action: ProviderAction::CalcCartTaxes,
            cart_id,
        },
        other => panic!("{other} is not a provider step"),
    };
    execute(engine, command);
    engine.run_until_idle().expect("a worker step");
}

/// Walks a checkout to a locked Cart To Order step; returns the session.
fn to_locked_cart_to_order(engine: &Engine, cart: SfId) -> String {
    use SessionState as S;
    let session = to_inventory(engine, cart);
    for step in [
        (S::Inventory, S::ConfirmPrice),
        (S::ConfirmPrice, S::CalculatePromotions),
        (S::CalculatePromotions, S::ShippingCost),
        (S::ShippingCost, S::DeliveryMethod),
    ] {
        run_step(engine, &session, cart, step);
    }
    advance(engine, &session, "Delivery Method", "Taxes");
    run_step(
        engine,
        &session,
        cart,
        (S::Taxes, S::PaymentAndBillingAddress),
    );
    advance(
        engine,
        &session,
        "Payment And Billing Address",
        "Checkout Summary",
    );
    advance(engine, &session, "Checkout Summary", "Cart To Order");
    lock(engine, &session, S::CartToOrder, S::AuthorizePayment);
    session
}

/// Races `THREADS` calls of an order step, half with `runAsync` false, then lets a worker
/// finish; returns the one operation every successful call answered.
fn race_order_step(engine: &Engine, action: &str, input: serde_json::Value, round: usize) -> SfId {
    const THREADS: usize = 16;
    let results = race(THREADS, |k| {
        let mut input = input.clone();
        input["runAsync"] = json!(k % 2 == 0);
        engine.invoke(action, &input, &buyer())
    });
    engine.run_until_idle().expect("a worker step");
    let answered: Vec<&str> = results
        .iter()
        .filter(|r| r.is_success)
        .map(|r| {
            r.output_values.as_ref().expect("outputs")["backgroundOperationId"]
                .as_str()
                .expect("a backgroundOperationId")
        })
        .collect();
    assert!(!answered.is_empty(), "round {round}: {results:?}");
    // A call while the operation is queued or running is refused as in progress; one after
    // it completed finds the session unlocked and is refused as such.
    for refused in results.iter().filter(|r| !r.is_success) {
        let in_progress = if action == "activateOrderAction" {
            ("INVALID_INPUT".to_owned(), 403)
        } else {
            ("ALREADY_IN_PROCESS".to_owned(), 400)
        };
        let unlocked = ("INVALID_OPERATION".to_owned(), 403);
        let error = error_of(refused);
        assert!(
            error == in_progress || error == unlocked,
            "round {round}: {action}: {error:?}"
        );
    }
    assert!(
        answered.iter().all(|op| *op == answered[0]),
        "round {round}: {action} answered several operations: {answered:?}"
    );
    answered[0].parse().expect("an operation ID")
}

/// Many tabs racing `cartToOrderAction`, then `activateOrderAction`, inside their calls and
/// asynchronously: one operation each, one order, activated once, and the operations each
/// claimed and finished once.
#[test]
fn racing_order_steps_make_one_order_and_activate_it_once() {
    let cart = SampleCart::InStock.id();
    let input = json!({"cartId": cart.to_string()});
    // The cart carries its payment method: a priced order is paid for.
    let mut data = sample::dataset();
    for c in data.carts.iter_mut().filter(|c| c.id == cart) {
        c.payment_token = Some(sample::GOOD_TOKEN.into());
    }
    for round in 0..40 {
        let engine = engine_with(data.clone(), passing());
        let session = to_locked_cart_to_order(&engine, cart);
        let store = engine.store();
        let draft = race_order_step(&engine, "cartToOrderAction", input.clone(), round);
        let session_id: SfId = session.parse().expect("a session ID");
        let stored = store.session(&session_id).unwrap().unwrap();
        assert_eq!(stored.state, Some(SessionState::AuthorizePayment));
        let order = stored.order_id.expect("the session has its order");
        assert_eq!(
            store.order(&order).unwrap().unwrap().status,
            OrderStatus::Draft
        );
        use SessionState as S;
        run_step(
            &engine,
            &session,
            cart,
            (S::AuthorizePayment, S::ActivateOrder),
        );
        lock(&engine, &session, S::ActivateOrder, S::OrderConfirmation);
        let mut activate = input.clone();
        activate["orderStatus"] = json!("Activated");
        let activation = race_order_step(&engine, "activateOrderAction", activate, round);

        let stored = store.session(&session_id).unwrap().unwrap();
        assert_eq!(stored.state, Some(S::OrderConfirmation), "round {round}");
        assert_eq!(stored.order_id, Some(order));
        let order = store.order(&order).unwrap().unwrap();
        assert_eq!(order.status, OrderStatus::Activated, "round {round}");
        assert!(order.order_summary_id.is_some());
        let ops = store.operations_of(&cart).unwrap();
        for (name, id) in [
            ("cartToOrderAction", draft),
            ("activateOrderAction", activation),
        ] {
            let of_step: Vec<_> = ops.iter().filter(|o| o.name == name).collect();
            assert_eq!(of_step.len(), 1, "round {round}: {name}: {of_step:?}");
            assert_eq!(of_step[0].id, id);
            assert_eq!(of_step[0].status, OperationStatus::Complete);
            assert_eq!(of_step[0].attempt, 1, "round {round}: claimed again");
        }
        let history = store.history(&cart).unwrap();
        for id in [draft, activation] {
            let moves = |event| {
                history
                    .iter()
                    .filter(|e| e.machine == Machine::Operation && e.record == id)
                    .filter(|e| e.event == event)
                    .count()
            };
            assert_eq!((moves(Event::Claim), moves(Event::Succeed)), (1, 1));
        }
        // Every order of the cart is this one.
        let orders: Vec<SfId> = store
            .sessions_of(&cart)
            .unwrap()
            .iter()
            .filter_map(|s| s.order_id)
            .collect();
        assert_eq!(orders, vec![order.id], "round {round}");
    }
}
