//! Deterministic simulation: many seeded runs of several engines, workers and buyers over one
//! store, with faults injected (see `tests/sim/mod.rs` for what runs and what is checked).
//!
//! - `CARTFLOW_SIM_SEED=<seed>` replays one run exactly and prints its step log.
//! - `CARTFLOW_SIM_STEPS=<n>`: how many steps in all (default 400,000; at least 1,000 seeds).
//! - `CARTFLOW_SIM_STEPS_PER_SEED=<n>`: each run's length (default 400).
//! - `CARTFLOW_SIM_SEEDS=<n>`: how many runs, in place of `CARTFLOW_SIM_STEPS` and its floor of
//!   1,000 seeds (for quick runs, such as each mutant of a mutation test).
//!
//! A failure prints its seed and the shortest prefix of its run that still fails (found by
//! bisection over the run's length: a seed's first `n` steps are the same whatever its
//! length).

mod sim;
mod support;

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use sim::{Backing, Outcome, Settings};

/// The default budget: steps in all, and per seed.
const DEFAULT_STEPS: u64 = 400_000;
const DEFAULT_STEPS_PER_SEED: u64 = 400;

/// What a run of the default budget must have done at least once, or it tested too little.
const EXERCISED: [&str; 14] = [
    "orders activated",
    "provider timed out",
    "provider panicked",
    "provider erred",
    "answered twice",
    "reports discarded",
    "worker killed",
    "heartbeats fenced",
    "leases run out",
    "clock jumped back",
    "store crashed",
    "store failed",
    "answer lost",
    "double click",
];

/// One run in eight is on SQLite; the seed alone says which, so a seed replays on its store.
fn backing_of(seed: u64) -> Backing {
    if seed.is_multiple_of(8) {
        Backing::Sqlite
    } else {
        Backing::Memory
    }
}

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .replace('_', "")
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a whole number, not {value:?}")),
    )
}

/// The `n`th seed of a run of many from `base` (splitmix64, so neighbours differ widely).
fn seed_at(base: u64, n: u64) -> u64 {
    let mut z = base.wrapping_add(n.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn settings(seed: u64, steps: u64, broken_cas: bool) -> Settings {
    Settings {
        seed,
        steps,
        backing: backing_of(seed),
        broken_cas,
    }
}

/// The shortest prefix of `seed`'s run that still fails, and its outcome.
fn shortest_failing(seed: u64, steps: u64, broken_cas: bool) -> (u64, Outcome) {
    let (mut low, mut high) = (1, steps);
    let mut failing = sim::run(settings(seed, steps, broken_cas));
    while low < high {
        let mid = low + (high - low) / 2;
        let outcome = sim::run(settings(seed, mid, broken_cas));
        if outcome.violation.is_some() {
            high = mid;
            failing = outcome;
        } else {
            low = mid + 1;
        }
    }
    (high, failing)
}

fn report_failure(seed: u64, steps: u64, broken_cas: bool) -> String {
    let (shortest, outcome) = shortest_failing(seed, steps, broken_cas);
    let (at, reason) = outcome
        .violation
        .clone()
        .unwrap_or((0, "no longer fails".into()));
    format!(
        "seed {seed} ({:?}) fails after step {at} of {shortest}: {reason}\n\
         replay: CARTFLOW_SIM_SEED={seed} CARTFLOW_SIM_STEPS_PER_SEED={shortest} \
         cargo test --test simulation\nsteps:\n{}",
        backing_of(seed),
        outcome.log.join("\n")
    )
}

/// What many runs did, merged.
#[derive(Default)]
struct Totals {
    seeds: BTreeMap<&'static str, u64>,
    steps: u64,
    tally: BTreeMap<&'static str, u64>,
    failures: Vec<u64>,
}

/// Runs `seeds` seeds from `base`, `per_seed` steps each, on two threads.
fn run_many(base: u64, seeds: u64, per_seed: u64, broken_cas: bool, stop_at_first: bool) -> Totals {
    let next = AtomicU64::new(0);
    let totals = Mutex::new(Totals::default());
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                loop {
                    let n = next.fetch_add(1, Ordering::SeqCst);
                    if n >= seeds {
                        return;
                    }
                    let seed = seed_at(base, n);
                    let outcome = sim::run(settings(seed, per_seed, broken_cas));
                    let mut t = totals.lock().unwrap_or_else(|e| e.into_inner());
                    let store = match backing_of(seed) {
                        Backing::Memory => "memory",
                        Backing::Sqlite => "sqlite",
                    };
                    *t.seeds.entry(store).or_default() += 1;
                    t.steps += outcome.steps;
                    for (what, count) in outcome.tally {
                        *t.tally.entry(what).or_default() += count;
                    }
                    if outcome.violation.is_some() {
                        t.failures.push(seed);
                        if stop_at_first {
                            next.store(seeds, Ordering::SeqCst);
                        }
                    }
                }
            });
        }
    });
    totals.into_inner().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn simulated_deployments_keep_every_invariant() {
    let per_seed = env_u64("CARTFLOW_SIM_STEPS_PER_SEED")
        .unwrap_or(DEFAULT_STEPS_PER_SEED)
        .max(1);
    if let Some(seed) = env_u64("CARTFLOW_SIM_SEED") {
        let outcome = sim::run(settings(seed, per_seed, false));
        println!(
            "seed {seed} ({:?}):\n{}",
            backing_of(seed),
            outcome.log.join("\n")
        );
        if let Some((at, reason)) = outcome.violation {
            panic!("seed {seed} fails after step {at}: {reason}");
        }
        println!("seed {seed}: {} steps, 0 violations", outcome.steps);
        return;
    }
    let seeds = env_u64("CARTFLOW_SIM_SEEDS").map_or_else(
        || (env_u64("CARTFLOW_SIM_STEPS").unwrap_or(DEFAULT_STEPS) / per_seed).max(1_000),
        |seeds| seeds.max(1),
    );
    let steps = seeds * per_seed;
    let base = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    println!("simulation: base {base}, {seeds} seeds of {per_seed} steps");
    let totals = run_many(base, seeds, per_seed, false, true);
    println!(
        "simulation: {} seeds ({:?}), {} steps, {} violations",
        totals.seeds.values().sum::<u64>(),
        totals.seeds,
        totals.steps,
        totals.failures.len()
    );
    println!("simulation: what happened: {:?}", totals.tally);
    if let Some(&seed) = totals.failures.first() {
        panic!("{}", report_failure(seed, per_seed, false));
    }
    assert!(totals.steps >= seeds * per_seed, "the runs stopped early");
    if steps >= DEFAULT_STEPS && per_seed >= DEFAULT_STEPS_PER_SEED {
        let missing: Vec<&str> = EXERCISED
            .iter()
            .copied()
            .filter(|what| totals.tally.get(what).is_none_or(|n| *n == 0))
            .collect();
        assert!(missing.is_empty(), "the runs never exercised {missing:?}");
    }
}

#[test]
fn the_simulation_catches_an_engine_without_compare_and_set() {
    let per_seed = 200;
    let base = 0x5eed;
    let totals = run_many(base, 400, per_seed, true, true);
    let tried = totals.seeds.values().sum::<u64>();
    println!(
        "broken engine: caught by {} of {tried} seeds ({} steps)",
        totals.failures.len(),
        totals.steps
    );
    let Some(&seed) = totals.failures.first() else {
        panic!("{tried} seeds ran an engine without compare-and-set and none failed");
    };
    let (shortest, outcome) = shortest_failing(seed, per_seed, true);
    assert!(outcome.violation.is_some() && shortest <= per_seed);
    println!("{}", report_failure(seed, per_seed, true));
}

#[test]
fn a_seed_replays_exactly() {
    // One seed of each store, twice each: the same steps, answers and faults.
    let memory = (1..)
        .map(|n| seed_at(7, n))
        .find(|s| backing_of(*s) == Backing::Memory);
    let sqlite = (1..)
        .map(|n| seed_at(7, n))
        .find(|s| backing_of(*s) == Backing::Sqlite);
    for seed in [memory, sqlite].into_iter().flatten() {
        let first = sim::run(settings(seed, 300, false));
        let second = sim::run(settings(seed, 300, false));
        assert!(first.log.len() >= 300, "{}", first.log.len());
        assert_eq!(first.log, second.log, "seed {seed} ran differently");
        assert_eq!(first.tally, second.tally);
    }
}
