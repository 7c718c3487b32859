//! Benchmarks of whole checkouts: the flow driver takes fresh copies of the sample in-stock
//! cart from Start to an activated order on the in-memory store, with the sample price,
//! promotion, shipping, tax and payment providers, on one thread and on two threads sharing
//! one engine.
//!
//! Run with `cargo bench --bench checkout`; results and the machine they came from are in
//! `docs/performance.md`.

mod common;

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use cartflow::flow::{BuyerInput, Drive, Waiting, drive};
use cartflow::ids::SequentialIds;
use cartflow::model::SfId;
use cartflow::sample;
use cartflow::store::DataSet;
use cartflow::{Engine, MemoryStore};
use common::buyer_input;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// Carts prepared together in one store: each measured batch checks out this many (the
/// last batch of a sample may be smaller), so the store's size stays the same whatever
/// number of iterations criterion asks for.
const BATCH: u64 = 200;

/// Record numbers of the copied carts and lines, far above the sample's (counted from 1,000).
const CARTS_FROM: u64 = 1 << 32;

/// Record numbers the engine mints (sessions, operations, orders, charge lines), above both.
const MINTED_FROM: u64 = 1 << 40;

/// The sample world plus `n` copies of the in-stock cart (three lines), under fresh IDs.
fn world(n: u64) -> (DataSet, Vec<SfId>) {
    let mut data = sample::dataset();
    let ids = sample::add_in_stock_copies(&mut data, CARTS_FROM, n);
    (data, ids)
}

/// An engine over a fresh in-memory store holding `n` copied carts, and the carts.
fn prepared(n: u64) -> (Engine, Vec<SfId>) {
    let (data, carts) = world(n);
    let integrations = sample::integrations(&data);
    let store = Arc::new(MemoryStore::from_dataset(data).expect("a valid data set"));
    let engine = Engine::new(store)
        .with_ids(Arc::new(SequentialIds::starting_at(MINTED_FROM)))
        .with_integrations(integrations);
    (engine, carts)
}

/// Checks out every cart of `carts`, failing loudly on anything but a completed checkout.
fn check_out(engine: &Engine, actor: &str, input: &BuyerInput, carts: &[SfId]) {
    for cart in carts {
        match drive(engine, actor, cart, input, Waiting::RunInline) {
            Ok(Drive::Complete { .. }) => {}
            other => panic!("cart {cart} did not complete: {other:?}"),
        }
    }
}

/// Times checking out `iters` carts, `BATCH` per store, on `threads` threads sharing each
/// store's engine (every thread drives its own carts). Setup is outside the timing; the
/// threads' start and join are inside it.
fn timed_checkouts(iters: u64, threads: usize) -> Duration {
    let actor = sample::buyer_id().to_string();
    let input = buyer_input();
    let mut total = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let n = left.min(BATCH);
        let (engine, carts) = prepared(n);
        let shares: Vec<Vec<SfId>> = (0..threads)
            .map(|t| carts.iter().skip(t).step_by(threads).copied().collect())
            .collect();
        let started = Instant::now();
        if threads == 1 {
            check_out(&engine, &actor, &input, &carts);
        } else {
            thread::scope(|scope| {
                for share in &shares {
                    let (engine, actor, input) = (&engine, &actor, &input);
                    scope.spawn(move || check_out(engine, actor, input, share));
                }
            });
        }
        total += started.elapsed();
        left -= n;
    }
    total
}

fn checkout_benches(c: &mut Criterion) {
    // Once outside the measurement: a copied cart checks out to an activated order, and so
    // does every cart when two threads share the engine.
    let (engine, carts) = prepared(4);
    check_out(
        &engine,
        &sample::buyer_id().to_string(),
        &buyer_input(),
        &carts,
    );
    timed_checkouts(8, 2);

    let mut group = c.benchmark_group("checkout");
    // One iteration is one checkout, so criterion's elements/s are checkouts per second.
    group.throughput(Throughput::Elements(1));
    for threads in [1, 2] {
        group.bench_function(format!("memory/{threads}_thread"), |b| {
            b.iter_custom(|iters| timed_checkouts(iters, threads))
        });
    }
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(6))
}

criterion_group! {
    name = benches;
    config = config();
    targets = checkout_benches
}
criterion_main!(benches);
