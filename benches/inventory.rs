//! Benchmarks of the Check Cart Inventory step: the pure decision, the engine's shell around
//! it, and the whole background operation on carts of growing size.
//!
//! Run with `cargo bench --bench inventory`; results and the machine they came from are in
//! `docs/performance.md`.

mod common;

use std::hint::black_box;
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::Duration;

use cartflow::ids::SequentialIds;
use cartflow::integrations::{
    IntegrationRequest, Integrations, InventoryProvider, StockTable, Verdict,
};
use cartflow::machine::{
    Command, DecideContext, OperationSettings, Output, ProviderAction, Snapshot, TransitionTable,
    decide,
};
use cartflow::model::{KeyPrefix, SessionState, SfId};
use cartflow::sample::{self, SampleCart};
use cartflow::store::{DataSet, LoadKey};
use cartflow::{Engine, ErrorCode, MemoryStore};
use common::{bulk_world, buyer};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};

/// Cart sizes of the `inventory_operation` group, in lines.
const CART_LINES: [u64; 3] = [1, 500, 2_000];

/// Record numbers for IDs minted while benchmarking, far above those of the prepared worlds
/// (the worlds are built with IDs counted from 1).
const BENCH_IDS_FROM: u64 = 1 << 32;

/// A world prepared once and copied into a fresh engine for every measured iteration.
struct World {
    data: DataSet,
    cart: SfId,
    session: SfId,
}

impl World {
    /// An engine over a copy of the world, with the stock-table provider mapped.
    fn engine(&self) -> Engine {
        engine_over(self.data.clone(), BENCH_IDS_FROM)
    }

    fn check_inventory(&self) -> Command {
        Command::RunStep {
            action: ProviderAction::CheckCartInventory,
            cart_id: self.cart.to_string(),
        }
    }
}

fn engine_over(data: DataSet, first_id: u64) -> Engine {
    engine_and_store(data, first_id).0
}

/// An engine and its store, kept concrete so a prepared world can be copied out of it.
fn engine_and_store(data: DataSet, first_id: u64) -> (Engine, Arc<MemoryStore>) {
    let integrations = Integrations::with_stock_tables(&data.stock);
    let store = Arc::new(MemoryStore::from_dataset(data).expect("a valid data set"));
    let engine = Engine::new(store.clone())
        .with_ids(Arc::new(SequentialIds::starting_at(first_id)))
        .with_integrations(integrations);
    (engine, store)
}

fn request_id(output: Output) -> SfId {
    match output {
        Output::RequestId(id) => id,
        other => panic!("expected a requestId, got {other:?}"),
    }
}

/// The sample world with its session on `cart` started and walked to `Shipping Address`.
fn at_shipping_address(data: DataSet, cart: SfId) -> (Engine, Arc<MemoryStore>, SfId) {
    let (engine, store) = engine_and_store(data, 1);
    let session = request_id(
        engine
            .execute(
                &buyer(),
                Command::StartSession {
                    cart_id: cart.to_string(),
                    initial_state: Some("Start".into()),
                },
            )
            .expect("the checkout starts"),
    );
    engine
        .execute(&buyer(), advance(session, "Start", "Shipping Address"))
        .expect("the screen step advances");
    (engine, store, session)
}

fn advance(session: SfId, from: &str, to: &str) -> Command {
    Command::Advance {
        session_id: session.to_string(),
        state: to.into(),
        exp_current_state: Some(from.into()),
    }
}

/// A world whose `cart` has a session locked at the Inventory step, ready for
/// `checkCartInventoryAction`.
fn locked_inventory(data: DataSet, cart: SfId) -> World {
    let (engine, store, session) = at_shipping_address(data, cart);
    engine
        .execute(&buyer(), advance(session, "Shipping Address", "Inventory"))
        .expect("the screen step advances");
    engine
        .execute(
            &buyer(),
            Command::UpdateSession {
                session_id: session.to_string(),
                next_state: "Confirm Price".into(),
                exp_current_state: Some("Inventory".into()),
            },
        )
        .expect("the Inventory step locks");
    World {
        data: store.to_dataset(),
        cart,
        session,
    }
}

fn decide_benches(c: &mut Criterion) {
    let table = TransitionTable::standard();
    let ids = SequentialIds::starting_at(BENCH_IDS_FROM);
    let ctx = DecideContext {
        table: &table,
        now: chrono::Utc::now(),
        ids: &ids,
        settings: OperationSettings::default(),
    };
    let world = locked_inventory(sample::dataset(), SampleCart::InStock.id());
    let command = world.check_inventory();
    let snapshot = |engine: &Engine| -> Snapshot {
        let mut snapshot = engine
            .store()
            .load(LoadKey::Cart(world.cart))
            .expect("the store reads");
        snapshot.user = engine.store().user(&sample::buyer_id()).expect("read");
        snapshot
    };

    let engine = world.engine();
    let open = snapshot(&engine);
    decide(&ctx, &open, &command).expect("the inventory check is accepted");

    // The same cart once its operation exists: every guard runs and the last one refuses.
    engine
        .execute(&buyer(), command.clone())
        .expect("the inventory check starts");
    let running = snapshot(&engine);
    let refusal = decide(&ctx, &running, &command).expect_err("a second check is refused");
    assert_eq!(refusal.code(), ErrorCode::AlreadyInProcess);

    let mut group = c.benchmark_group("decide");
    group.bench_function("check_cart_inventory", |b| {
        b.iter(|| decide(&ctx, black_box(&open), black_box(&command)))
    });
    group.bench_function("already_in_process", |b| {
        b.iter(|| decide(&ctx, black_box(&running), black_box(&command)))
    });
    group.finish();
}

fn engine_benches(c: &mut Criterion) {
    let locked = locked_inventory(sample::dataset(), SampleCart::InStock.id());
    let (_, store, session) = at_shipping_address(sample::dataset(), SampleCart::InStock.id());
    let screen = World {
        data: store.to_dataset(),
        cart: SampleCart::InStock.id(),
        session,
    };
    let buyer = buyer();

    let mut group = c.benchmark_group("engine");
    // A screen step: load, decide, commit one session write plus its history row.
    group.bench_function("execute_advance", |b| {
        b.iter_batched(
            || screen.engine(),
            |engine| {
                engine
                    .execute(
                        &buyer,
                        advance(screen.session, "Shipping Address", "Inventory"),
                    )
                    .expect("the screen step advances");
                engine
            },
            BatchSize::SmallInput,
        )
    });
    // The command of `decide/check_cart_inventory`, through the shell.
    group.bench_function("execute_check_cart_inventory", |b| {
        b.iter_batched(
            || locked.engine(),
            |engine| {
                engine
                    .execute(&buyer, locked.check_inventory())
                    .expect("the inventory check starts");
                engine
            },
            BatchSize::SmallInput,
        )
    });
    // A refusal writes nothing, so one engine serves every iteration.
    let refusing = locked.engine();
    refusing
        .execute(&buyer, locked.check_inventory())
        .expect("the inventory check starts");
    group.bench_function("execute_already_in_process", |b| {
        b.iter(|| {
            refusing
                .execute(&buyer, locked.check_inventory())
                .expect_err("a second check is refused")
        })
    });
    group.finish();
}

/// Starts the inventory check and runs worker steps until the session has left Inventory.
fn run_inventory_operation(engine: &Engine, world: &World) {
    engine
        .execute(&buyer(), world.check_inventory())
        .expect("the inventory check starts");
    while let Some(report) = engine.run_next_operation().expect("the worker step runs") {
        if report.applied {
            break;
        }
    }
}

fn operation_benches(c: &mut Criterion) {
    let mut group = c.benchmark_group("inventory_operation");
    for lines in CART_LINES {
        let (data, cart) = bulk_world(lines);
        let world = locked_inventory(data, cart);

        // Once outside the measurement: the operation must pass and advance the session.
        let engine = world.engine();
        run_inventory_operation(&engine, &world);
        let session = engine
            .store()
            .session(&world.session)
            .expect("the store reads")
            .expect("the session exists");
        assert_eq!(session.state, Some(SessionState::ConfirmPrice));
        assert!(!session.is_error && !session.is_processing);

        group.throughput(Throughput::Elements(lines));
        group.bench_function(lines.to_string(), |b| {
            b.iter_batched(
                || world.engine(),
                |engine| {
                    run_inventory_operation(&engine, &world);
                    engine
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

/// The built-in stock-table provider alone, on the lines the worker hands it: the part of
/// `inventory_operation` that is the check itself.
fn provider_benches(c: &mut Criterion) {
    let mut group = c.benchmark_group("provider");
    for lines in CART_LINES {
        let (data, cart_id) = bulk_world(lines);
        let table = StockTable::new(data.stock.iter().map(|s| (s.sku.clone(), s.quantity)));
        let cart = data
            .carts
            .iter()
            .find(|c| c.id == cart_id)
            .expect("the bulk cart")
            .clone();
        let items: Vec<_> = data
            .items
            .iter()
            .filter(|i| i.cart_id == cart_id)
            .cloned()
            .collect();
        let request = IntegrationRequest {
            operation_id: SfId::from_number(KeyPrefix::BackgroundOperation, BENCH_IDS_FROM),
            cart,
            items: items.into(),
            order: None,
        };
        let verdict = table.check_inventory(&request).expect("the check runs");
        assert_eq!(verdict, Verdict::Passed);

        group.throughput(Throughput::Elements(lines));
        group.bench_function(format!("stock_table/{lines}"), |b| {
            b.iter(|| table.check_inventory(black_box(&request)))
        });
    }
    group.finish();
}

/// What `call_provider` pays besides the provider itself: spawn a named thread, hand the
/// answer back over a one-slot channel, wait with a timeout.
fn baseline_benches(c: &mut Criterion) {
    let mut group = c.benchmark_group("baseline");
    group.bench_function("provider_thread", |b| {
        b.iter(|| {
            let (tx, rx) = mpsc::sync_channel(1);
            thread::Builder::new()
                .name("bench-provider".into())
                .spawn(move || {
                    let _ = tx.send(black_box(1_u32));
                })
                .expect("a thread starts");
            rx.recv_timeout(Duration::from_secs(120))
                .expect("the thread answers")
        })
    });
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(50)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
}

criterion_group! {
    name = benches;
    config = config();
    targets = decide_benches,
        engine_benches,
        operation_benches,
        provider_benches,
        baseline_benches
}
criterion_main!(benches);
